"""The customers and staff behind the traffic, with stable habits (home region and IPs, amounts, VPN).

Drawn once from the seed, so every partition generated with one config talks about the same people.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bankanom_pipeline import geo
from bankanom_pipeline.generator.config import MockConfig
from bankanom_pipeline.generator.sampling import Categorical


def by_value(values: np.ndarray):
    """(value, indices holding it) for each distinct string of ``values``, in sorted order of values;
    like looping over ``np.unique(values)`` with masks, without comparing Python objects."""
    distinct, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(distinct)))
    return zip(distinct, np.split(order, bounds[:-1]), strict=True)


def random_ips(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    """One IPv4 address (as uint32) per entry of ``countries`` (country codes), inside its range."""
    out = np.empty(len(countries), dtype=np.uint32)
    for code, rows in by_value(countries):
        octets = np.asarray(geo.first_octets(str(code)), dtype=np.uint32)
        first = octets[rng.integers(0, len(octets), len(rows))]
        rest = rng.integers(1 << 8, 1 << 24, len(rows), dtype=np.uint32)  # avoid x.0.0.y
        out[rows] = (first << 24) | rest
    return out


def random_regions(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    out = np.empty(len(countries), dtype=object)
    for code, rows in by_value(countries):
        options = np.asarray(geo.regions(str(code)), dtype=object)
        out[rows] = options[rng.integers(0, len(options), len(rows))]
    return out


@dataclass(frozen=True)
class Population:
    user_ids: np.ndarray  # str
    activity: np.ndarray  # selection probabilities, sum 1
    country: np.ndarray  # home country code
    region: np.ndarray  # home geo code "US-CA"
    home_ips: np.ndarray  # (users, 2) uint32
    vpn_ip: np.ndarray  # uint32, meaningful for vpn users
    vpn_region: np.ndarray
    is_vpn: np.ndarray  # bool
    is_staff: np.ndarray  # bool
    amount_mu: np.ndarray  # log of the user's typical amount
    amount_sigma: np.ndarray
    normal_countries: np.ndarray  # the bank's footprint
    normal_weights: np.ndarray

    @property
    def size(self) -> int:
        return len(self.user_ids)

    @classmethod
    def build(cls, config: MockConfig) -> Population:
        rng = np.random.default_rng([config.customer_seed, 0xB0B])
        size = config.population.users
        countries = np.asarray([c.code for c in config.geographic_distribution.countries], dtype=object)
        weights = np.asarray([c.weight for c in config.geographic_distribution.countries], dtype=float)
        weights = weights / weights.sum()
        home = countries[rng.choice(len(countries), size, p=weights)]
        vpn_country = countries[rng.choice(len(countries), size, p=weights)]
        activity = rng.lognormal(0.0, 1.0, size)
        is_staff = rng.random(size) < config.population.staff_share
        return cls(
            user_ids=np.asarray([f"USR-{i:05d}" for i in range(1, size + 1)], dtype=object),
            activity=activity / activity.sum(),
            country=home,
            region=random_regions(rng, home),
            home_ips=np.stack([random_ips(rng, home), random_ips(rng, home)], axis=1),
            vpn_ip=random_ips(rng, vpn_country),
            vpn_region=random_regions(rng, vpn_country),
            is_vpn=(rng.random(size) < config.population.vpn_share) & ~is_staff,
            is_staff=is_staff,
            amount_mu=rng.normal(np.log(120.0), 0.7, size),
            amount_sigma=rng.uniform(0.25, 0.6, size),
            normal_countries=countries,
            normal_weights=weights,
        )

    def pick(self, rng: np.random.Generator, n: int, kind: str = "user") -> np.ndarray:
        """Indices of ``n`` users of a kind, weighted by activity."""
        pool, sampler = self._picker(kind)
        return pool[sampler.draw(rng, n)]

    @cached_property
    def _pickers(self) -> dict[str, tuple[np.ndarray, Categorical]]:
        return {}

    def _picker(self, kind: str) -> tuple[np.ndarray, Categorical]:
        """The users of a kind and a sampler of them by activity."""
        if kind not in self._pickers:
            masks = {"user": ~self.is_staff, "vpn_user": self.is_vpn, "staff": self.is_staff}
            if kind not in masks:
                raise ValueError(kind)
            pool = np.flatnonzero(masks[kind])
            if len(pool) == 0:  # a tiny population may have no staff or VPN users
                pool = np.arange(self.size)
            self._pickers[kind] = (pool, Categorical(self.activity[pool] / self.activity[pool].sum()))
        return self._pickers[kind]
