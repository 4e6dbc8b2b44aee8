"""Countries, regions, coordinates and IP ranges of the mock world.

Each country owns distinct first IP octets, so an address maps back to one country; features use the
coordinates to measure travel distance between a user's consecutive locations.
"""

from __future__ import annotations

import zlib

# code -> (first octets, {region suffix: (lat, lon)})
COUNTRIES: dict[str, tuple[tuple[int, ...], dict[str, tuple[float, float]]]] = {
    "US": ((23, 34, 44, 52, 63, 98), {"CA": (36.8, -119.4), "NY": (40.7, -74.0), "TX": (31.0, -99.9)}),
    "VN": ((14, 27, 42, 113, 171), {"HN": (21.0, 105.8), "SG": (10.8, 106.6)}),
    "SG": ((8, 13, 101, 165), {"01": (1.35, 103.8)}),
    "JP": ((60, 106, 126, 133), {"13": (35.7, 139.7), "27": (34.7, 135.5)}),
    "GB": ((2, 51, 81, 86), {"LND": (51.5, -0.1), "MAN": (53.5, -2.2)}),
    "DE": ((46, 78, 84, 91), {"BE": (52.5, 13.4), "BY": (48.1, 11.6)}),
    "FR": ((37, 62, 80, 90), {"IDF": (48.9, 2.35), "ARA": (45.8, 4.8)}),
    "RU": ((77, 95, 178, 188), {"MOW": (55.8, 37.6), "SPE": (59.9, 30.3)}),
    "CN": ((36, 58, 111, 220), {"BJ": (39.9, 116.4), "SH": (31.2, 121.5)}),
    "IR": ((5, 89, 185), {"TEH": (35.7, 51.4)}),
    "KP": ((175,), {"PY": (39.0, 125.8)}),
    "SY": ((82, 94), {"DI": (33.5, 36.3)}),
    "BR": ((177, 179, 189), {"SP": (-23.5, -46.6)}),
    "NG": ((41, 105, 197), {"LA": (6.5, 3.4)}),
    "UA": ((176, 193, 194), {"KY": (50.4, 30.5)}),
}
# Countries outside the bank's footprint that attackers and proxies come from, unless a scenario names some.
ATTACK_COUNTRIES = ("RU", "CN", "IR", "KP", "SY", "BR", "NG", "UA")


def first_octets(code: str) -> tuple[int, ...]:
    if code in COUNTRIES:
        return COUNTRIES[code][0]
    # A country the table does not know still gets a stable range of its own.
    return (150 + zlib.crc32(code.encode()) % 20,)


def regions(code: str) -> list[str]:
    if code in COUNTRIES:
        return [f"{code}-{suffix}" for suffix in COUNTRIES[code][1]]
    return [f"{code}-01"]


def coordinates(geo: str) -> tuple[float, float] | None:
    """Latitude and longitude of a ``CC-REGION`` code, or None when unknown."""
    code, _, suffix = geo.partition("-")
    entry = COUNTRIES.get(code)
    if entry is None:
        return None
    return entry[1].get(suffix) or next(iter(entry[1].values()))


def geo_table() -> list[tuple[str, str, float, float]]:
    """(geo code, country, lat, lon) rows, for a DuckDB lookup table."""
    return [
        (f"{code}-{suffix}", code, lat, lon)
        for code, (_, table) in COUNTRIES.items()
        for suffix, (lat, lon) in table.items()
    ]
