"""Load one daily partition of landing JSONL files into ``raw_logs`` (no Dagster here).

Raw is a faithful record of what arrived: every line either lands in ``raw_logs`` (one row per JSON
object that has the required fields, duplicates included; de-duplication is validation's job) or in
``raw_logs_rejected`` with its file, line number, text and reason. Parsing runs inside DuckDB, vectorised.
"""

from __future__ import annotations

import datetime as dt
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from bankanom_pipeline.warehouse.frames import rewriting

REQUIRED_FIELDS = ("timestamp", "source_service", "log_level", "event_id", "message")
OPTIONAL_FIELDS = ("correlation_id", "user_id", "ip_address", "geo_location")
JSON_FIELDS = ("anomaly_details", "metrics")
KNOWN_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS + JSON_FIELDS
_SCAN_BYTES = 64 << 20


@dataclass
class IngestCounts:
    files: int = 0
    lines_read: int = 0
    loaded: int = 0
    rejected: int = 0
    duplicate_event_ids: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    # each file read (relative to the landing root) -> its signature when read: what the landing sensor
    # compares the zone against, so that files loaded outside it (bankanom demo, run) are not loaded again
    landing_files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def landing_files(folder: Path) -> list[Path]:
    """Complete files of a partition folder; hidden names are files still being written."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.jsonl") if not p.name.startswith("."))


def signature(path: Path) -> str:
    """Size and modification time: a re-delivered file (same name, new content) has a new one."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def relative_name(path: Path, root: Path) -> str:
    """The file's name in raw_logs.source_file: relative to the landing logs root."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def file_lines(path: Path, name: str) -> pa.Table:
    """The lines of one file as Arrow strings sliced straight out of its bytes (no per-line Python)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data += b"\n"  # a last line without its newline is still a line
    # newlines found a slice at a time: a mask of the whole file is a byte per byte (~540 MB for one
    # 6-hour file of a 4M-event day, and two files are read at once)
    view = np.frombuffer(data, dtype=np.uint8)
    starts = range(0, len(view), _SCAN_BYTES)
    ends = np.concatenate(
        [np.flatnonzero(view[i : i + _SCAN_BYTES] == 10) + (i + 1) for i in starts] or [np.empty(0, np.int64)]
    )
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    n = len(ends)
    lines = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        lines.validate(full=True)  # UTF-8 checked by Arrow: no copy of the file as one Python str
        ok = np.ones(n, dtype=bool)
    except pa.ArrowInvalid:  # rare: decode line by line and flag the bad ones
        texts, flags = [], []
        for start, end in itertools.pairwise(offsets):
            chunk = data[start:end]
            try:
                texts.append(chunk.decode("utf-8"))
                flags.append(True)
            except UnicodeDecodeError:
                texts.append(chunk.decode("utf-8", errors="backslashreplace"))
                flags.append(False)
        lines, ok = pa.array(texts, pa.large_string()), np.asarray(flags, dtype=bool)
    return pa.table(
        {
            "source_file": pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), [name]),
            "line_no": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "line": lines,
            "utf8_ok": pa.array(ok),
        }
    )


def read_lines(files: list[Path], root: Path) -> pa.Table:
    # a file's reading, newline scan and UTF-8 check let go of the GIL: two files at a time
    with ThreadPoolExecutor(2) as pool:
        tables = list(pool.map(lambda path: file_lines(path, relative_name(path, root)), files))
    if not tables:
        return pa.table(
            {
                "source_file": pa.array([], pa.string()),
                "line_no": pa.array([], pa.int64()),
                "line": pa.array([], pa.large_string()),
                "utf8_ok": pa.array([], pa.bool_()),
            }
        )
    return pa.concat_tables(tables, promote_options="permissive")


_DROP_KNOWN = "{" + ",".join(f'"{name}":null' for name in KNOWN_FIELDS) + "}"
_STRUCT = (
    "{"
    + ",".join(f'"{name}":"{"JSON" if name in JSON_FIELDS else "VARCHAR"}"' for name in KNOWN_FIELDS)
    + "}"
)
_KNOWN_LIST = "[" + ", ".join(f"'{name}'" for name in KNOWN_FIELDS) + "]"
# The keys, in order, of a line written by the generator (and the mock server): a line whose key list
# is exactly this has no unknown field, and comparing two lists costs half what the exact membership
# test does. Any other line takes the exact test.
_USUAL_KEYS = (
    "timestamp", "source_service", "log_level", "event_id", "correlation_id", "user_id", "ip_address",
    "geo_location", "message", "anomaly_details", "metrics",
)  # fmt: skip
assert set(_USUAL_KEYS) == set(KNOWN_FIELDS)
_USUAL_LIST = "[" + ", ".join(f"'{name}'" for name in _USUAL_KEYS) + "]"
_MISSING_LIST = (
    "[" + ", ".join(f"CASE WHEN f.{name} IS NULL THEN '{name}' END" for name in REQUIRED_FIELDS) + "]"
)

# One JSON parse into a struct (TRY: a malformed line gives NULL instead of failing the statement),
# one for the key list (to keep unknown fields); json_valid and json_type only run on the few lines the
# struct did not come out of (CASE evaluates a branch only on the rows that reach it).
# Materialised: parsed inline in the INSERT, the `reject_reason IS NULL` filter is pushed below the
# projection that parses, and from_json is then inlined once per required field it tests.
PARSE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _parsed AS
WITH parsed AS (
    -- lines keep their trailing newline (sliced straight from the file); JSON parsing ignores it
    SELECT source_file, line_no, line, utf8_ok,
        CASE WHEN utf8_ok THEN TRY(from_json(line, '{_STRUCT}')) END AS f
    FROM _landing_lines
), checked AS (
    -- f in its own step: referred to by alias in the same SELECT, the parse was inlined twice
    SELECT source_file, line_no, line, f,
        CASE
            WHEN NOT utf8_ok THEN 'invalid UTF-8'
            WHEN f IS NOT NULL AND line[1] = '{{' THEN NULL
            WHEN NOT json_valid(line) THEN
                CASE WHEN trim(line, ' ' || chr(9) || chr(10) || chr(13)) = '' THEN 'empty line'
                     ELSE 'malformed JSON' END
            WHEN json_type(line) <> 'OBJECT' THEN 'not a JSON object'
        END AS early_reason
    FROM parsed
), keyed AS (
    SELECT *,
        CASE WHEN early_reason IS NULL THEN
            CASE WHEN json_keys(line) = {_USUAL_LIST} THEN false
                 -- a built-in list test: a lambda per key cost more than parsing the line
                 ELSE NOT list_has_all({_KNOWN_LIST}, json_keys(line)) END
        END AS has_extra
    FROM checked
)
SELECT source_file, line_no, reject_reason,
    CASE WHEN reject_reason IS NOT NULL THEN rtrim(line, chr(10) || chr(13)) END AS line,  -- kept only where rejected
    f.*,
    CASE WHEN has_extra THEN json_merge_patch(line, '{_DROP_KNOWN}') END AS extra
FROM (
    SELECT *, coalesce(early_reason, CASE WHEN len(missing) > 0
        THEN 'missing required field(s): ' || array_to_string(missing, ', ') END) AS reject_reason
    FROM (
        SELECT *, CASE WHEN early_reason IS NULL THEN list_filter(
            {_MISSING_LIST}, name -> name IS NOT NULL) ELSE [] END AS missing
        FROM keyed
    )
)
"""

INSERT_SQL = """
INSERT INTO raw_logs
SELECT ?::DATE, source_file, line_no, event_id, timestamp, source_service, log_level, message,
    correlation_id, user_id, ip_address, geo_location,
    CASE WHEN anomaly_details::VARCHAR = 'null' THEN NULL ELSE anomaly_details END,
    CASE WHEN metrics::VARCHAR = 'null' THEN NULL ELSE metrics END,
    extra,
    now()
FROM _parsed WHERE reject_reason IS NULL  -- file order is kept: DuckDB preserves insertion order
"""

REJECT_SQL = """
INSERT INTO raw_logs_rejected
SELECT ?::DATE, source_file, line_no, line, reject_reason, now()
FROM _parsed WHERE reject_reason IS NOT NULL
ORDER BY source_file, line_no
"""


def load_partition(con: duckdb.DuckDBPyConnection, landing_logs: Path, day: dt.date | str) -> IngestCounts:
    """Replace partition ``day`` of raw_logs and raw_logs_rejected with the files in its landing folder.

    Delete-then-insert in one transaction: a re-run yields the same rows, never duplicates.
    """
    day = dt.date.fromisoformat(str(day))
    files = landing_files(landing_logs / day.isoformat())
    # signed before reading: a file re-delivered while being read then looks changed, and is read again
    signed = {relative_name(path, landing_logs): signature(path) for path in files}
    lines = read_lines(files, landing_logs)
    counts = IngestCounts(files=len(files), lines_read=lines.num_rows, landing_files=signed)
    con.execute("SET enable_progress_bar = false")
    con.register("_landing_lines", lines)
    try:
        con.execute(PARSE_SQL)
        with rewriting(con, "raw_logs", "raw_logs_rejected", day=day):
            con.execute(INSERT_SQL, [day])
            con.execute(REJECT_SQL, [day])
        counts.loaded = con.execute(
            "SELECT count(*) FROM raw_logs WHERE partition_date = ?", [day]
        ).fetchone()[0]
        reasons = con.execute(
            "SELECT reason, count(*) FROM raw_logs_rejected WHERE partition_date = ? GROUP BY ALL ORDER BY 2 DESC",
            [day],
        ).fetchall()
        counts.rejected_by_reason = dict(reasons)
        counts.rejected = sum(counts.rejected_by_reason.values())
        counts.duplicate_event_ids = con.execute(
            "SELECT count(*) - count(DISTINCT event_id) FROM raw_logs WHERE partition_date = ?", [day]
        ).fetchone()[0]
    finally:
        con.unregister("_landing_lines")
        con.execute("DROP TABLE IF EXISTS _parsed")
    if counts.loaded + counts.rejected != counts.lines_read:
        raise RuntimeError(f"raw_logs {day}: counts do not reconcile: {counts.as_dict()}")
    return counts
