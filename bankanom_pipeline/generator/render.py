"""Render generated frames as JSON log lines, column-wise (no per-line Python), which is what makes the
generator fast: strings are assembled by polars and UUIDs are hex-encoded with numpy."""

from __future__ import annotations

import json
import string

import numpy as np
import polars as pl
import pyarrow as pa

from bankanom_pipeline.generator.config import MockConfig
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.placeholders import ACTIONS, CHANNELS, ENDPOINTS, PLACEHOLDERS, TOPICS
from bankanom_pipeline.metrics_catalogue import METRICS

_DASHES = (8, 13, 18, 23)
NORMAL_DETAILS = json.dumps(
    {
        "is_anomaly": False,
        "anomaly_id": None,
        "anomaly_type": None,
        "anomaly_name": None,
        "category": None,
        "severity": None,
        "confidence": None,
    },
    separators=(",", ":"),
)


_HEX_PAIRS = np.asarray([int.from_bytes(f"{i:02x}".encode(), "little") for i in range(256)], dtype="<u2")


def uuid4_strings(hi: np.ndarray, lo: np.ndarray) -> pl.Series:
    """Format pairs of 64-bit integers as RFC 4122 version-4 UUID strings."""
    n = len(hi)
    raw = np.empty((n, 16), dtype=np.uint8)
    raw[:, :8] = hi.astype(">u8").view(np.uint8).reshape(n, 8)
    raw[:, 8:] = lo.astype(">u8").view(np.uint8).reshape(n, 8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = _HEX_PAIRS[raw].view(np.uint8)  # (n, 32) ASCII hex digits
    text = np.empty((n, 36), dtype=np.uint8)
    text[:, list(_DASHES)] = ord("-")
    for (a, b), (c, d) in zip(((0, 8), (9, 13), (14, 18), (19, 23), (24, 36)), _HEX_SPANS, strict=True):
        text[:, a:b] = hexed[:, c:d]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int64)
    array = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))
    return pl.Series(array)


_HEX_SPANS = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))


def _mix(key: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64: spreads a 64-bit key over 64 well-mixed bits (for deterministic ids from keys)."""
    with np.errstate(over="ignore"):
        z = key.astype(np.uint64) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uuid_from_keys(keys: np.ndarray) -> pl.Series:
    return uuid4_strings(_mix(keys, 0x9E3779B97F4A7C15), _mix(keys, 0x632BE59BD9B4E019))


def _quoted(expr: pl.Expr) -> pl.Expr:
    """A JSON string literal, or null when the value is missing."""
    return pl.concat_str([pl.lit('"'), expr, pl.lit('"')]).fill_null(pl.lit("null"))


def _escaped(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)


def _pick(options: tuple[str, ...] | list[str], column: str = "r1", shift: int = 0) -> pl.Expr:
    index = (pl.col(column) // (1 << shift)) % len(options)
    return index.replace_strict(dict(enumerate(options)), return_dtype=pl.String)


def _metric_text(name: str) -> pl.Expr:
    column = pl.col(f"m_{name}")
    metric = METRICS[name]
    if metric.integer:
        return column.cast(pl.Int64).cast(pl.String)
    return column.round(metric.decimals).cast(pl.String)


def _placeholder(name: str, services: list[str]) -> pl.Expr:
    metric = PLACEHOLDERS[name]
    if metric is not None:
        return _metric_text(metric)
    digits = pl.col("r1") % 10_000_000_000
    return {
        "user_id": pl.col("user_id"),
        "ip_address": pl.col("ip_address"),
        "transaction_id": pl.concat_str([pl.lit("TXN-"), digits.cast(pl.String).str.zfill(10)]),
        "order_id": pl.concat_str([pl.lit("ORD-"), (digits % 100_000_000).cast(pl.String).str.zfill(8)]),
        "session_id": pl.concat_str([pl.lit("SES-"), digits.cast(pl.String).str.zfill(10)]),
        "customer_id": pl.concat_str([pl.lit("CUS-"), (digits % 1_000_000).cast(pl.String).str.zfill(6)]),
        "cache_key": pl.concat_str([pl.lit("acct:"), (digits % 100_000).cast(pl.String), pl.lit(":balance")]),
        "endpoint": _pick(ENDPOINTS, shift=40),
        "channel": _pick(CHANNELS, shift=44),
        "service_name": _pick(services, shift=46),
        "action": _pick(ACTIONS, shift=50),
        "topic": _pick(TOPICS, shift=54),
        "payload": pl.col("payload"),
        "country": pl.col("geo").str.slice(0, 2),
        "correlation_event": pl.col("correlation_event"),
    }[name]


def _row_texts(frame: pl.DataFrame, templates: list[str], services: list[str]) -> pl.DataFrame:
    """Message and metrics object of each row, rendered per (template, metrics present) group so that
    each group formats only the placeholders and metrics it has."""
    metric_names = [c[2:] for c in frame.columns if c.startswith("m_")]
    present = (
        pl.sum_horizontal(
            [
                pl.col(f"m_{name}").is_not_null().cast(pl.Int64) * (1 << i)
                for i, name in enumerate(metric_names)
            ]
        )
        if metric_names
        else pl.lit(0)
    )
    parts = []
    needed = ["row", "template", "r1", "user_id", "ip_address", "geo", "payload", "correlation_event"]
    keyed = frame.select(
        *[c for c in needed if c in frame.columns], pl.col("^m_.*$"), present.alias("_present")
    )
    keyed = keyed.sort("template", "_present")
    bounds = keyed.select(pl.struct("template", "_present").rle_id().alias("g"))["g"].to_numpy()
    starts = np.flatnonzero(np.diff(bounds, prepend=-1))
    ends = np.append(starts[1:], keyed.height)
    for start, end in zip(starts, ends, strict=True):
        rows = keyed.slice(start, end - start)
        code, mask = int(rows["template"][0]), int(rows["_present"][0])
        pieces: list[pl.Expr] = []
        for literal, name, _, _ in string.Formatter().parse(templates[code]):
            if literal:
                pieces.append(pl.lit(literal))
            if name is not None:
                pieces.append(_placeholder(name, services).fill_null("unknown"))
        message = pl.concat_str(pieces) if pieces else pl.lit("")
        fields = [
            pl.concat_str([pl.lit(f'"{name}":'), _metric_text(name)])
            for i, name in enumerate(metric_names)
            if mask & (1 << i)
        ]
        body = pl.concat_str(fields, separator=",") if fields else pl.lit("")
        metrics = pl.concat_str([pl.lit("{"), body, pl.lit("}")])
        parts.append(rows.select("row", message.alias("message"), metrics.alias("metrics_json")))
    texts = pl.concat(parts)
    return texts.select(pl.all().gather(texts["row"].arg_sort()))


def _ip_text() -> pl.Expr:
    ip = pl.col("ip").cast(pl.Int64)
    octets = [((ip // (1 << shift)) % 256).cast(pl.String) for shift in (24, 16, 8, 0)]
    return pl.when(ip > 0).then(pl.concat_str(octets, separator="."))


def _user_text() -> pl.Expr:
    user = pl.col("user")
    return (
        pl.when(user >= 0)
        .then(pl.concat_str([pl.lit("USR-"), (user + 1).cast(pl.String).str.zfill(5)]))
        .when(user == -2)
        .then(pl.lit("svc-reporting"))
    )


def _anomaly_details(frame: pl.DataFrame, config: MockConfig, generator: Generator) -> pl.Series:
    """The anomaly_details object: a constant for normal lines, rendered only for anomalous ones."""
    details = pl.Series("details", [NORMAL_DETAILS], dtype=pl.String).gather([0] * frame.height)
    if "scenario" not in frame.columns:
        return details
    anomalous = frame.filter(pl.col("scenario") >= 0)
    if anomalous.height == 0:
        return details
    codes = generator.vocab["text"].index
    anomalous = anomalous.with_columns(
        _decode(anomalous, "correlation_event", generator.vocab["text"].values),
        instance_id=uuid_from_keys(anomalous["instance_uid"].to_numpy()),
    )
    prefixes = {}
    scenarios = [s for s in config.anomaly_scenarios if s.id in codes]
    for s in scenarios:
        head = json.dumps(
            {"is_anomaly": True, "anomaly_id": s.id, "anomaly_type": s.type}, separators=(",", ":")
        )[:-1]
        prefixes[codes[s.id]] = f'{head},"anomaly_name":{json.dumps(s.base_name)[:-1]} (#'
    tails = {
        codes[s.id]: json.dumps({"category": s.category, "severity": s.severity}, separators=(",", ":"))[1:-1]
        for s in scenarios
    }
    scenario = pl.col("scenario")
    rendered = pl.concat_str(
        [
            scenario.replace_strict(prefixes, default=None, return_dtype=pl.String),
            pl.col("instance_no").cast(pl.String),
            pl.lit(')",'),
            scenario.replace_strict(tails, default=None, return_dtype=pl.String),
            pl.lit(',"confidence":'),
            pl.col("confidence").cast(pl.String),
            pl.lit(',"instance_id":"'),
            pl.col("instance_id"),
            pl.lit('","correlation_event":'),
            _quoted(pl.col("correlation_event")),
            pl.lit("}"),
        ]
    )
    return details.scatter(anomalous["row"], anomalous.select(rendered).to_series())


def _decode(frame: pl.DataFrame, column: str, vocabulary: list[str]) -> pl.Series:
    codes = frame[column]
    if codes.dtype == pl.Null:
        return pl.Series(column, [None] * frame.height, dtype=pl.String)
    index = pl.select(pl.when(codes >= 0).then(codes)).to_series()
    return pl.Series(vocabulary, dtype=pl.String).gather(index).alias(column)


def to_json_lines(frame: pl.DataFrame, generator: Generator) -> pl.Series:
    """One compact JSON object per row, in the log format the generator documents."""
    config, vocab = generator.config, generator.vocab
    n = frame.height
    rng = np.random.default_rng([config.seed, n, int(frame["ts"][0]) if n else 0])
    if "scenario" in frame.columns:
        frame = frame.with_columns(pl.col("scenario", "payload", "correlation_event").fill_null(-1))
        frame = frame.with_columns(_decode(frame, "payload", vocab["text"].values))
    else:
        frame = frame.with_columns(payload=pl.lit(None, pl.String))
    frame = frame.with_row_index("row").with_columns(
        _decode(frame, "service", vocab["service"].values),
        _decode(frame, "level", vocab["level"].values),
        _decode(frame, "geo", vocab["geo"].values),
        _user_text().alias("user_id"),
        _ip_text().alias("ip_address"),
        event_id=uuid4_strings(rng.integers(0, 2**63, n, np.int64), rng.integers(0, 2**63, n, np.int64)),
        correlation_id=uuid_from_keys(frame["corr"].to_numpy()),
    )
    texts = _row_texts(frame, vocab["template"].values, list(config.service_sources))
    frame = frame.with_columns(
        message=texts["message"],
        metrics_json=texts["metrics_json"],
        details=_anomaly_details(frame, config, generator),
    )
    timestamp = pl.from_epoch("ts", time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    line = pl.concat_str(
        [
            pl.lit('{"timestamp":"'),
            timestamp,
            pl.lit('","source_service":"'),
            pl.col("service"),
            pl.lit('","log_level":"'),
            pl.col("level"),
            pl.lit('","event_id":"'),
            pl.col("event_id"),
            pl.lit('","correlation_id":'),
            _quoted(pl.col("correlation_id")),
            pl.lit(',"user_id":'),
            _quoted(pl.col("user_id")),
            pl.lit(',"ip_address":'),
            _quoted(pl.col("ip_address")),
            pl.lit(',"geo_location":'),
            _quoted(pl.col("geo")),
            pl.lit(',"message":"'),
            _escaped(pl.col("message")),
            pl.lit('","anomaly_details":'),
            pl.col("details"),
            pl.lit(',"metrics":'),
            pl.col("metrics_json"),
            pl.lit("}"),
        ]
    )
    return frame.select(line.alias("line"))["line"]
