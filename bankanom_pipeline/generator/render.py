"""Render generated lines as JSON log lines, column-wise (no per-line Python).

Every line is a run of text pieces (see ``pieces``): a head that all lines share (timestamp, service,
level, event and correlation ids, user, IP, geo) and a tail that depends on the line's group (message
template, anomaly details, the metrics the line carries). Constant text between two fields is one piece,
fields are table look-ups or per-row byte matrices, and one Arrow cast joins all pieces into the output.
"""

from __future__ import annotations

import datetime as dt
import json
import string
import weakref
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from bankanom_pipeline.generator import formats
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.lines import CORE, Block, Lines
from bankanom_pipeline.generator.pieces import EMPTY, VIEW, Pool, lengths_of
from bankanom_pipeline.generator.placeholders import ACTIONS, CHANNELS, ENDPOINTS, PLACEHOLDERS, TOPICS
from bankanom_pipeline.generator.sampling import mix64
from bankanom_pipeline.metrics_catalogue import METRICS

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
).encode()
HEAD = 9  # pieces every line starts with, see Renderer._head
_DAY_MS = 86_400_000
_IDS = b'%s","correlation_id":"%s","user_id":' % (b"-" * 36, b"-" * 36)  # a UUID's dashes stay put
_CORRELATION_AT = _IDS.index(b'","correlation_id"') + len(b'","correlation_id":"')
_ROWS_IN_CACHE = 4096  # rows of a byte matrix written column by column while they fit in L2
_HEX4_AT = (0, 4, 9, 14, 19, 24, 28, 32)  # where each run of 4 hex digits goes in a UUID's text
_HEX4 = (  # 2 bytes (a little-endian uint16) -> their 4 hex digits (4 ASCII bytes as a uint32)
    np.frombuffer(b"0123456789abcdef", np.uint8)[
        np.stack([np.arange(65_536) >> shift & 15 for shift in (4, 0, 12, 8)], axis=1)
    ]
    .view("<u4")
    .ravel()
)
# placeholder -> (prefix, r1 modulus, padded width of the digits) for the id placeholders
_IDS_FROM_R1 = {
    "transaction_id": (b"TXN-", 10**10, 10),
    "session_id": (b"SES-", 10**10, 10),
    "order_id": (b"ORD-", 10**8, 8),
    "customer_id": (b"CUS-", 10**6, 6),
}
_PICKS = {
    "endpoint": (ENDPOINTS, 40),
    "channel": (CHANNELS, 44),
    "action": (ACTIONS, 50),
    "topic": (TOPICS, 54),
}
_UNKNOWN = b"unknown"  # what a placeholder without a value renders as


@dataclass
class Rendered:
    """Rendered lines. ``pieces`` holds each group's lines row after row (cheap to fill, group by group);
    ``start`` and ``count`` tell, for each line in output order, where its pieces are. ``join`` puts the
    pieces in output order and concatenates them: the JSONL bytes, one line per row."""

    pool: Pool
    pieces: np.ndarray
    start: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def prepare(self, run=None, parts: int = 1) -> None:
        """Do the formatting left for later (the ids); see ``Pool.prepare``."""
        self.pool.prepare(*(() if run is None else (run, parts)))

    def join(self, lines: slice = slice(None)) -> pa.Buffer:
        """The bytes of a run of lines (all by default)."""
        start, count = self.start[lines], self.count[lines]
        ends = np.cumsum(count)
        order = np.repeat(start - (ends - count), count)
        order += np.arange(len(order))
        return self.pool.join(self.pieces[order])

    def line_ends(self) -> np.ndarray:
        """Byte offset where each line ends (after its newline) in ``join()``."""
        size = np.concatenate([[0], np.cumsum(lengths_of(self.pieces), dtype=np.int64)])
        return np.cumsum(size[self.start + self.count] - size[self.start])


class Renderer:
    """Renders the lines of one generator (its vocabularies, population and config)."""

    def __init__(self, generator: Generator):
        self.generator = generator
        config = generator.config
        # texts shared by all renders: tables built here, and constant text of tails (see _program)
        self.base = Pool()
        users = [f"USR-{i:05d}".encode() for i in range(1, generator.population.size + 1)]
        # indexed by user index; -1 (no user) and -2 (the service account) wrap to the end
        specials_json, specials_text = [b"null", b'"svc-reporting"'], [_UNKNOWN, b"svc-reporting"]
        self.user_json = self.base.texts(
            [b'"%s","ip_address":' % u for u in users] + [s + b',"ip_address":' for s in specials_json]
        )
        self.user_text = self.base.texts(users + specials_text)
        services, levels = generator.vocab["service"].values, generator.vocab["level"].values
        self.service_level = self.base.texts(
            [
                b'","source_service":"%s","log_level":"%s","event_id":"' % (s.encode(), lv.encode())
                for s in services
                for lv in levels
            ]
        )
        self.n_levels = len(levels)
        picks = {**_PICKS, "service_name": (config.service_sources, 46)}
        self.picks = {
            name: (self.base.texts([_escape(o.encode()) for o in options]), shift)
            for name, (options, shift) in picks.items()
        }
        self.scenarios = {s.id: s for s in config.anomaly_scenarios}
        self.programs: dict[tuple, list] = {}

    # -- public ---------------------------------------------------------------------------------
    def render(self, parts: list[tuple[Block, np.ndarray]], n: int, seed: list[int], exact: bool) -> Rendered:
        """Lines of ``parts`` (blocks and the output position of each of their rows), ``n`` lines in all.
        ``seed`` seeds the event ids. ``exact`` checks metric presence per row instead of trusting that
        a group of lines (template, service, scenario) always carries the same metrics."""
        pool = Pool(self.base)
        rng = np.random.default_rng(seed)
        tables = self._vocab_tables(pool)
        event = rng.integers(0, 2**63, n, np.int64), rng.integers(0, 2**63, n, np.int64)  # in output order
        groups = []
        for block, position in parts:
            groups += self._render_block(pool, tables, block, position, event, exact)
        pool.seal()
        return self._lay_out(pool, n, groups)

    def _render_block(self, pool: Pool, tables: dict, block: Block, position, event, exact: bool) -> list:
        """For each group of a block's lines: output positions, head pieces, the group's slice of the
        head pieces, tail pieces."""
        row_groups, metrics = self._grouped(block, exact)
        if not row_groups:
            return []
        # columns in group order: every group is a slice, so nothing below gathers per group
        order = np.concatenate(row_groups)
        ordered = Block(
            **{name: getattr(block, name)[order] for name in CORE},
            extra={k: v[order] for k, v in block.extra.items()},
        )
        head = self._head(pool, tables, ordered, event[0][position[order]], event[1][position[order]])
        details = self._details(pool, tables, ordered) if ordered.extra else {}
        groups, at = [], 0
        for rows, values in zip(row_groups, metrics, strict=True):
            lines = slice(at, at + len(rows))
            at += len(rows)
            group = ordered.take(lines)
            group.metrics = values
            shared = {name: [piece[lines] for piece in pieces] for name, pieces in details.items()}
            groups.append((position[rows], head, lines, self._tail(pool, tables, group, shared)))
        return groups

    def _grouped(self, block: Block, exact: bool) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
        """The groups of a block's lines that share a tail layout: their rows and metrics (by name)."""
        if block.groups is not None:  # grouped by the generator already
            return [g.rows for g in block.groups], [dict(sorted(g.metrics.items())) for g in block.groups]
        row_groups = self._groups(block, exact)
        names = _metrics_of(block, row_groups)
        return row_groups, [
            {m: block.metrics[m][rows] for m in ms} for rows, ms in zip(row_groups, names, strict=True)
        ]

    def _lay_out(self, pool: Pool, n: int, groups: list) -> Rendered:
        """Each group's lines row after row (a slab), and where each line's pieces are."""
        widths = [HEAD + len(tail) for _, _, _, tail in groups]
        sizes = [len(position) for position, _, _, _ in groups]
        pieces = np.empty(sum(w * s for w, s in zip(widths, sizes, strict=True)), VIEW)
        at = 0
        for (_, head, lines, tail), width, size in zip(groups, widths, sizes, strict=True):
            columns = np.empty((width, size), VIEW)  # filled column by column: contiguous writes
            for j, piece in enumerate(head):
                columns[j] = piece[lines]
            for j, piece in enumerate(tail):
                columns[HEAD + j] = piece
            pieces[at : at + width * size].reshape(size, width)[:] = columns.T
            at += width * size
        # the first piece of each line, by output position
        position = np.concatenate([position for position, _, _, _ in groups])
        count = np.empty(n, np.int64)
        count[position] = np.repeat(widths, sizes)
        first = np.repeat(np.cumsum(np.multiply(widths, sizes)) - np.multiply(widths, sizes), sizes)
        first += np.concatenate([np.arange(size) * width for width, size in zip(widths, sizes, strict=True)])
        start = np.empty(n, np.int64)
        start[position] = first
        return Rendered(pool, pieces, start, count)

    # -- grouping ---------------------------------------------------------------------------------
    def _groups(self, block: Block, exact: bool) -> list[np.ndarray]:
        """Row indices of each group of lines that share a tail layout: template, service, scenario and,
        if ``exact``, the metrics present."""
        n = len(block.ts)
        if n == 0:
            return []
        vocab = self.generator.vocab
        key = block.template.astype(np.int64) * len(vocab["service"].values) + block.service
        if "scenario" in block.extra:
            key = key * (len(vocab["text"].values) + 1) + (block.extra["scenario"] + 1)
            key = key * 2 + (block.extra["correlation_event"] >= 0)
        if exact:
            present = np.zeros(n, np.int64)
            for i, name in enumerate(sorted(block.metrics)):
                present |= (~np.isnan(block.metrics[name])).astype(np.int64) << i
            key = key * (1 << len(block.metrics)) + present
        key = key.astype(np.uint16) if key.max() < 1 << 16 else key  # 16-bit keys sort in linear time
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        return np.split(order, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1)

    # -- head -----------------------------------------------------------------------------------
    def _head(self, pool: Pool, tables: dict, block: Block, event_high, event_low) -> list:
        """{"timestamp":"DAY T | HH:MM:SS | .mmmZ | ","source_service":...,"event_id":" | ids...
        "user_id": | user,"ip_address": | "a.b. | c.d" | ,"geo_location":...,"message":" """
        ts = block.ts
        day = ts // _DAY_MS
        first = int(day.min())
        days = pool.texts(
            [b'{"timestamp":"%sT' % _day_text(d).encode() for d in range(first, int(day.max()) + 1)]
        )
        size = self.generator.population.size
        user = np.where(block.user >= 0, block.user, size - 1 - block.user)
        upper, lower = formats.ip_tables(quoted=True)
        null_ip = block.ip == 0
        return [
            days[day - first],
            formats.clock_table()[ts // 1000 % 86_400],
            formats.millis_table()[ts % 1000],
            self.service_level[block.service * self.n_levels + block.level],
            self._ids(pool, block, event_high, event_low),
            self.user_json[user],
            np.where(null_ip, tables["null"], upper[block.ip >> 16]),
            np.where(null_ip, EMPTY, lower[block.ip & 0xFFFF]),
            tables["geo"][block.geo + 1],
        ]

    def _ids(self, pool: Pool, block: Block, event_high: np.ndarray, event_low: np.ndarray) -> np.ndarray:
        """A piece per line of: event id (random), the text between, correlation id (from the correlation
        key). They are formatted only when the pieces are joined (by the writer's threads)."""
        n, width, corr = len(block.ts), len(_IDS), block.corr

        def fill(buffer: np.ndarray, part: int, parts: int) -> None:
            ids = buffer.reshape(n, width)
            for at in range(n * part // parts, n * (part + 1) // parts, _ROWS_IN_CACHE):
                rows = slice(at, min(at + _ROWS_IN_CACHE, n * (part + 1) // parts))  # a block stays in cache
                ids[rows] = np.frombuffer(_IDS, np.uint8)
                _put_uuid(ids[rows], 0, _uuid_bytes(event_high[rows], event_low[rows]))
                _put_uuid(ids[rows], _CORRELATION_AT, _key_bytes(corr[rows]))

        first_two_bytes = (event_high >> 56 & 0xFF) | (event_high >> 40 & 0xFF00)  # as a little-endian u16
        index = pool.deferred(n * width, fill)
        return pool.views(index, np.arange(0, n * width, width), width, _HEX4[first_two_bytes])

    def _vocab_tables(self, pool: Pool) -> dict:
        """Look-up tables over the vocabularies that grow while generating (index code + 1; 0 is null)."""
        vocab = self.generator.vocab
        geo = [g.encode() for g in vocab["geo"].values]
        text = [t.encode() for t in vocab["text"].values]
        return {
            "null": pool.literal(b"null"),
            "unknown": pool.literal(_UNKNOWN),
            "geo": pool.texts(
                [b',"geo_location":null,"message":"'] + [b',"geo_location":"%s","message":"' % g for g in geo]
            ),
            "country": pool.texts([_UNKNOWN] + [_escape(g[:2]) for g in geo]),
            "text": pool.texts([_UNKNOWN] + [_escape(t) for t in text]),
            "event": pool.texts([b"null}"] + [b'"%s"}' % t for t in text]),
        }

    def _details(self, pool: Pool, tables: dict, block: Block) -> dict[str, list[np.ndarray]]:
        """The fields of anomaly_details, for a block of anomalous lines."""
        extra = block.extra
        return {
            "instance_no": _number_pieces(pool, extra["instance_no"], True, 0),
            # confidence has 2 decimals: rounding it again to 2 changes nothing
            "confidence": _number_pieces(pool, extra["confidence"], False, 2),
            "instance_id": [pool.rows(_uuid_text(_key_bytes(extra["instance_uid"])))],
            "event": [tables["event"][extra["correlation_event"] + 1]],
        }

    # -- tail -----------------------------------------------------------------------------------
    def _tail(self, pool: Pool, tables: dict, group: Block, shared: dict) -> list:
        """Pieces after the head for one group of lines (``group.metrics``: the metrics they carry;
        ``shared``: the anomaly_details fields of anomalous lines)."""
        scenario = int(group.extra["scenario"][0]) if "scenario" in group.extra else -1
        key = (int(group.template[0]), scenario, tuple(group.metrics))
        if key not in self.programs:
            self.programs[key] = self._program(*key)
        pieces = []
        fields = dict(shared)  # a metric may show twice (message and metrics): computed once
        for item in self.programs[key]:
            if isinstance(item, str):
                if item not in fields:
                    fields[item] = self._field(item, pool, tables, group)
                pieces.extend(fields[item])
            else:
                pieces.append(item)
        return pieces

    def _program(self, template: int, scenario: int, metrics: tuple[str, ...]) -> list:
        """The layout of a tail: constant pieces (views in the base pool) and names of fields."""
        program = _Program(self.base)
        text = self.generator.vocab["template"].values[template]
        for literal, name, _, _ in string.Formatter().parse(text):
            program.literal(_escape(literal.encode()))
            if name is None:
                continue
            metric = PLACEHOLDERS[name]
            if metric is not None and metric not in metrics:
                program.literal(_UNKNOWN)
            elif metric is not None:
                program.field(f"metric:{metric}")
            elif name in _IDS_FROM_R1:
                program.literal(_IDS_FROM_R1[name][0])
                program.field(name)
            elif name == "cache_key":
                program.literal(b"acct:")
                program.field(name)
                program.literal(b":balance")
            else:
                program.field(name)
        program.literal(b'","anomaly_details":')
        if scenario < 0:
            program.literal(NORMAL_DETAILS)
        else:
            self._program_details(program, scenario)
        program.literal(b',"metrics":{')
        for i, name in enumerate(metrics):
            program.literal(b'%s"%s":' % (b"," if i else b"", name.encode()))
            program.field(f"metric:{name}")
        program.literal(b"}}\n")
        return program.done()

    def _program_details(self, program: _Program, scenario_code: int) -> None:
        """The anomaly_details object of an anomalous line (see NORMAL_DETAILS for the others)."""
        scenario = self.scenarios[self.generator.vocab["text"].values[scenario_code]]
        head = json.dumps(
            {"is_anomaly": True, "anomaly_id": scenario.id, "anomaly_type": scenario.type},
            separators=(",", ":"),
        )[:-1]
        tail = json.dumps(
            {"category": scenario.category, "severity": scenario.severity}, separators=(",", ":")
        )
        program.literal(f'{head},"anomaly_name":{json.dumps(scenario.base_name)[:-1]} (#'.encode())
        program.field("instance_no")
        program.literal(f')",{tail[1:-1]},"confidence":'.encode())
        program.field("confidence")
        program.literal(b',"instance_id":"')
        program.field("instance_id")
        program.literal(b'","correlation_event":')
        program.field("event")

    def _field(self, name: str, pool: Pool, tables: dict, group: Block) -> list:
        """The pieces of one field of a group's lines."""
        if name.startswith("metric:"):
            return _metric_pieces(pool, name[7:], group.metrics[name[7:]])
        if name in _IDS_FROM_R1:
            _, modulus, width = _IDS_FROM_R1[name]
            high, low = np.divmod(group.r1 % modulus, 10**5)
            return [formats.padded_table(width - 5)[high], formats.padded_table(5)[low]]
        if name == "cache_key":
            return [formats.uint_table()[group.r1 % 100_000]]
        if name in self.picks:
            table, shift = self.picks[name]
            return [table[(group.r1 >> shift) % len(table)]]
        if name == "user_id":
            size = self.generator.population.size
            return [self.user_text[np.where(group.user >= 0, group.user, size - 1 - group.user)]]
        if name == "ip_address":
            upper, lower = formats.ip_tables(quoted=False)
            null = group.ip == 0
            return [
                np.where(null, tables["unknown"], upper[group.ip >> 16]),
                np.where(null, EMPTY, lower[group.ip & 0xFFFF]),
            ]
        if name == "country":
            return [tables["country"][group.geo + 1]]
        # payload and correlation_event: free texts kept as codes into the "text" vocabulary
        codes = group.extra[name] if name in group.extra else np.full(len(group), -1)
        return [tables["text"][codes + 1]]


class _Program:
    """Collects a tail layout, merging constant text up to the next field into one piece."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self.text: list[bytes] = []
        self.items: list = []

    def literal(self, text: bytes) -> None:
        self.text.append(text)

    def field(self, name: str) -> None:
        self._flush()
        self.items.append(name)

    def done(self) -> list:
        self._flush()
        return self.items

    def _flush(self) -> None:
        if self.text:
            self.items.append(self.pool.literal(b"".join(self.text)))
            self.text = []


def _metrics_of(block: Block, row_groups: list[np.ndarray]) -> list[tuple[str, ...]]:
    """The metrics each group of lines carries (those of its first line), in name order."""
    first = np.fromiter((rows[0] for rows in row_groups), np.int64, len(row_groups))
    present = {name: ~np.isnan(values[first]) for name, values in sorted(block.metrics.items())}
    return [tuple(name for name, has in present.items() if has[i]) for i in range(len(row_groups))]


def _metric_pieces(pool: Pool, name: str, values: np.ndarray) -> list:
    metric = METRICS[name]
    return _number_pieces(pool, values, metric.integer, metric.decimals)


def _number_pieces(pool: Pool, values: np.ndarray, integer: bool, decimals: int) -> list:
    """A number column as polars writes it: as Int64 if ``integer``, else rounded to ``decimals``."""
    if integer:
        pieces = formats.uint_pieces(values.astype(np.int64))
    else:
        pieces = formats.float_pieces(values, decimals)
    if pieces is None:  # outside the tables' exact range: let polars format these rows
        pieces = [pool.texts(formats.polars_text(values, integer, decimals))]
    return pieces


def _day_text(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def _escape(text: bytes) -> bytes:
    """What the message gets: backslashes and double quotes escaped, nothing else."""
    return text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def _uuid_bytes(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """16 bytes a row: two 64-bit integers, big-endian."""
    raw = np.empty((len(high), 2), ">u8")
    raw[:, 0], raw[:, 1] = high, low
    return raw.view(np.uint8).reshape(len(high), 16)


def _key_bytes(keys: np.ndarray) -> np.ndarray:
    """The 16 bytes of the UUID derived from each key."""
    return _uuid_bytes(mix64(keys, 0x9E3779B97F4A7C15), mix64(keys, 0x632BE59BD9B4E019))


def _put(matrix: np.ndarray, at: int, values: np.ndarray) -> None:
    """Write fixed-size values (uint32 or uint64 bytes) into each row of a byte matrix at column ``at``
    (any offset, even unaligned): one strided write for all rows."""
    target = np.ndarray((len(matrix),), values.dtype, matrix, offset=at, strides=(matrix.strides[0],))
    target[:] = values


def _put_uuid(matrix: np.ndarray, at: int, raw: np.ndarray) -> None:
    """Write RFC 4122 version-4 UUIDs made from 16 bytes a row into columns at..at+36 of a byte matrix
    whose dashes are already in place."""
    raw = raw.copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = _HEX4[raw.view("<u2")]  # (n, 8): 4 hex digits per 2 bytes
    for column, offset in enumerate(_HEX4_AT):
        _put(matrix, at + offset, hexed[:, column])


def _uuid_text(raw: np.ndarray) -> np.ndarray:
    text = np.full((len(raw), 36), ord("-"), np.uint8)
    _put_uuid(text, 0, raw)
    return text


_RENDERERS: weakref.WeakKeyDictionary[Generator, Renderer] = weakref.WeakKeyDictionary()


def renderer_for(generator: Generator) -> Renderer:
    if generator not in _RENDERERS:
        _RENDERERS[generator] = Renderer(generator)
    return _RENDERERS[generator]


def render_seed(generator: Generator, count: int, first_ts: int) -> list[int]:
    """Seed of the event ids of a run of lines: the config's seed, the number of lines and the first
    line's timestamp."""
    return [generator.config.seed, count, first_ts]


def render_lines(generator: Generator, lines: Lines) -> Rendered:
    """Render generated lines (trusting that lines of one template, service and scenario carry the same
    metrics, which the generator guarantees)."""
    parts = lines.parts()
    first_ts = min((int(block.ts[0]) for block, _ in parts if len(block)), default=0)
    seed = render_seed(generator, len(lines), first_ts)
    return renderer_for(generator).render(parts, len(lines), seed, exact=False)


def to_json_lines(frame: pl.DataFrame, generator: Generator) -> pl.Series:
    """One compact JSON object per row, in the log format the generator documents."""
    if frame.height == 0:
        return pl.Series("line", [], dtype=pl.String)
    block = Block.from_frame(frame)
    parts = [(block, np.arange(frame.height))]
    if block.extra:  # normal and anomalous lines apart, as the generator makes them
        anomalous = block.extra["scenario"] >= 0
        normal = block.take(~anomalous)
        normal.extra = {}
        parts = [(normal, np.flatnonzero(~anomalous)), (block.take(anomalous), np.flatnonzero(anomalous))]
    seed = render_seed(generator, frame.height, int(block.ts[0]))
    rendered = renderer_for(generator).render(parts, frame.height, seed, exact=True)
    ends = rendered.line_ends()
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    array = pa.LargeStringArray.from_buffers(frame.height, pa.py_buffer(offsets), rendered.join())
    return pl.Series("line", array).str.strip_suffix("\n")
