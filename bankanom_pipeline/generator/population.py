"""The customers and staff behind the traffic, with stable habits (home region and IPs, amounts, VPN).

Drawn once from the seed, so every partition generated with one config talks about the same people.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bankanom_pipeline import geo
from bankanom_pipeline.generator.config import MockConfig


def random_ips(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    """One IPv4 address (as uint32) per entry of ``countries`` (country codes), inside its range."""
    out = np.empty(len(countries), dtype=np.uint32)
    for code in np.unique(countries):
        mask = countries == code
        octets = np.asarray(geo.first_octets(str(code)), dtype=np.uint32)
        first = octets[rng.integers(0, len(octets), mask.sum())]
        rest = rng.integers(1 << 8, 1 << 24, mask.sum(), dtype=np.uint32)  # avoid x.0.0.y
        out[mask] = (first << 24) | rest
    return out


def random_regions(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    out = np.empty(len(countries), dtype=object)
    for code in np.unique(countries):
        mask = countries == code
        options = np.asarray(geo.regions(str(code)), dtype=object)
        out[mask] = options[rng.integers(0, len(options), mask.sum())]
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
        rng = np.random.default_rng([config.seed, 0xB0B])
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
        if kind == "user":
            pool = np.flatnonzero(~self.is_staff)
        elif kind == "vpn_user":
            pool = np.flatnonzero(self.is_vpn)
        elif kind == "staff":
            pool = np.flatnonzero(self.is_staff)
        else:
            raise ValueError(kind)
        if len(pool) == 0:  # a tiny population may have no staff or VPN users
            pool = np.arange(self.size)
        p = self.activity[pool] / self.activity[pool].sum()
        return pool[rng.choice(len(pool), n, p=p)]
