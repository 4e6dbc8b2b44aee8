"""Look-up tables of short texts (numbers, clock times, IPv4 halves) as inline views, and numbers as
pieces. Built once per process: every entry fits inline, so they need no buffer and any pool can use them.

Numbers must read exactly as polars casts them to strings (the format the generator has always written):
integers in plain decimal, floats as their shortest round-trip form, which for a value rounded to d
decimals below 1e9 is its decimal digits with trailing zeros dropped ("0.25", "100.0").
"""

from __future__ import annotations

from functools import cache

import numpy as np
import polars as pl

from bankanom_pipeline.generator.pieces import (
    EMPTY,
    decimal_views,
    fixed_digits,
    inline,
    inline_matrix,
    join_inline,
)

TABLE = 100_000  # numbers below this are one table look-up
SAFE_FLOAT = 1e9  # below this the decimal digits of a rounded float are its shortest form


@cache
def uint_table() -> np.ndarray:
    return decimal_views(np.arange(TABLE))


@cache
def padded_table(width: int) -> np.ndarray:
    return decimal_views(np.arange(10**width), width)


@cache
def fraction_table(decimals: int) -> np.ndarray:
    """'.5', '.25', '.0' for the fractional part f / 10**decimals."""
    texts = [f".{f:0{decimals}d}".rstrip("0").ljust(2, "0").encode() for f in range(10**decimals)]
    return inline(texts)


@cache
def float_table(decimals: int) -> np.ndarray:
    """Text of k / 10**decimals for k below TABLE."""
    k = np.arange(TABLE)
    return join_inline(uint_table()[k // 10**decimals], fraction_table(decimals)[k % 10**decimals])


@cache
def clock_table() -> np.ndarray:
    """'HH:MM:SS' for each second of a day."""
    second = np.arange(86_400)
    chars = np.full((86_400, 8), ord(":"), np.uint8)
    for column, value in ((0, second // 3600), (3, second // 60 % 60), (6, second % 60)):
        chars[:, column : column + 2] = fixed_digits(value, 2)
    return inline_matrix(chars, np.full(86_400, 8))


@cache
def millis_table() -> np.ndarray:
    """'.mmmZ' for each millisecond of a second."""
    chars = np.full((1000, 5), ord("."), np.uint8)
    chars[:, 1:4] = fixed_digits(np.arange(1000), 3)
    chars[:, 4] = ord("Z")
    return inline_matrix(chars, np.full(1000, 5))


@cache
def ip_tables(quoted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Views of the upper ('a.b.') and lower ('c.d') halves of an IPv4 address, by 16-bit value;
    ``quoted`` adds the JSON string's opening and closing quotes."""
    octet = decimal_views(np.arange(256))
    high, low = np.arange(65_536) >> 8, np.arange(65_536) & 255
    dot = inline([b"."])[0]
    quote = inline([b'"'])[0] if quoted else EMPTY
    upper = join_inline(quote, octet[high], dot, octet[low], dot)
    lower = join_inline(octet[high], dot, octet[low], quote)
    return upper, lower


def uint_pieces(values: np.ndarray) -> list[np.ndarray] | None:
    """Non-negative integers in decimal as one or two pieces a row; None when out of the tables' range."""
    values = np.asarray(values, np.int64)
    if not len(values):
        return [np.empty(0, EMPTY.dtype)]
    low, high = values.min(), values.max()
    if low < 0 or high >= TABLE * TABLE:
        return None
    table = uint_table()
    if high < TABLE:
        return [table[values]]
    high, low = np.divmod(values, TABLE)
    big = high > 0
    return [np.where(big, table[high], EMPTY), np.where(big, padded_table(5)[low], table[low])]


def float_pieces(values: np.ndarray, decimals: int) -> list[np.ndarray] | None:
    """Floats already rounded to ``decimals`` as pieces; None when outside the exactly handled range."""
    if not len(values):
        return [np.empty(0, EMPTY.dtype)]
    low, high = values.min(), values.max()
    if not (low >= 0 and high < SAFE_FLOAT):  # also false for NaN
        return None
    scaled = np.rint(values * 10**decimals).astype(np.int64)
    if high * 10**decimals < TABLE - 1:
        return [float_table(decimals)[scaled]]
    whole, fraction = np.divmod(scaled, 10**decimals)
    return [*uint_pieces(whole), fraction_table(decimals)[fraction]]


def polars_text(values: np.ndarray, integer: bool, decimals: int | None) -> list[bytes]:
    """The general (slow) path: the texts polars gives, for values the tables do not cover."""
    series = pl.Series(values, dtype=pl.Float64)
    series = series.cast(pl.Int64) if integer else series.round(decimals) if decimals is not None else series
    return [t.encode() for t in series.cast(pl.String).to_list()]
