"""Validate one daily partition of ``raw_logs`` into ``validated_logs`` and ``quarantine_logs``.

Every raw row ends in exactly one place: validated, quarantined (with every rule it broke) or
quarantined as a duplicate of an earlier row with the same ``event_id``. The ground truth
(``anomaly_details``) is not carried over: it lives in ``log_labels`` for evaluation only.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pyarrow as pa

from bankanom_pipeline.metrics_catalogue import METRICS
from bankanom_pipeline.validation import quarantine
from bankanom_pipeline.validation.declared import LENGTH_SUFFIX, PATTERNS, Check, build_checks, load_rules
from bankanom_pipeline.validation.quarantine import RuleEngine, ValidationCounts
from bankanom_pipeline.validation.rules import Outcome, presence_checked
from bankanom_pipeline.warehouse.frames import rewriting

# texts whose length a rule bounds (log_rules.yaml's <name>_length columns)
_LENGTH_CHECKED = ("event_id", "source_service", "correlation_id", "user_id", "geo_location", "message")
_METRIC_STRUCT = "{" + ",".join(f'"{name}":"DOUBLE"' for name in METRICS) + "}"
_METRIC_NAMES = "|".join(METRICS)
# A known metric whose value does not start like a JSON number (a string, true/false, an object...). A
# non-finite literal (NaN, nan, Infinity, inf: N, n, I, i; -NaN, -inf start like a number) is metrics_finite's
_NOT_NUMERIC = rf'"({_METRIC_NAMES})"\s*:\s*[^-0-9\sNnIi]'
_NOT_NUMERIC_NULL_OK = rf'"({_METRIC_NAMES})"\s*:\s*null'
# Any value, known or not, that does not start like a number: a superset of the rows _NOT_NUMERIC matches
_NOT_A_NUMBER = r":\s*[^-0-9\s]"
# metrics_finite: any value under any key (nested too) that is a non-finite number, in any spelling DuckDB
# reads (NaN, -NaN, nan, Infinity, -inf, ...: validation/json_numbers.py), or beyond a double (1e309). The
# cheap test first, on the whole object: a non-finite literal after ':', ',' or '[', or a number with a
# 3-digit exponent or 309 digits; then, on the few objects it matches, each top-level value with its
# strings blanked (so that "nan" in a text is not read) is searched for a literal or an infinite number
_MAYBE_NON_FINITE = r"(?i)[:,\[]\s*-?(nan|inf)|[eE]\+?[0-9]{3}|[0-9]{309}"
_STRING = r'"(?:[^"\\]|\\.)*"'
_NON_FINITE_VALUE = f"""(regexp_matches(regexp_replace(e.value, '{_STRING}', '""', 'g'), '(?i)nan|inf')
    OR coalesce(list_bool_or(list_transform(
        regexp_extract_all(regexp_replace(e.value, '{_STRING}', '""', 'g'), '-?[0-9][0-9.eE+-]*'),
        x -> isinf(TRY_CAST(x AS DOUBLE)))), false))"""

TYPED_SQL = f"""
CREATE OR REPLACE TEMP TABLE _typed AS
WITH raw AS (
    SELECT (row_number() OVER () - 1)::BIGINT AS idx, *  -- raw_logs keeps file order
    FROM raw_logs WHERE partition_date = $day
), repeated AS (
    -- the first line of each event_id that occurs more than once; the others are its duplicates.
    -- Grouping finds the few repeated ids far cheaper than numbering every row within its event_id, and
    -- idx is file order, (source_file, line_no): as a plain integer its minimum costs half the pair's
    SELECT event_id, min(idx) AS first_idx
    FROM raw GROUP BY event_id HAVING count(*) > 1
)
SELECT
    idx,
    coalesce(idx <> d.first_idx, false) AS is_duplicate,
    r.source_file, r.line_no,  -- the raw row's key: the text the rules do not compare stays in raw_logs
    r.event_id IS NOT NULL AS has_event_id, "timestamp" IS NOT NULL AS has_timestamp,
    message IS NOT NULL AS has_message,
    -- as validated_logs reads it, where it has the declared form (the API's: utc_time alone also reads a
    -- bare date or a zone name, which the API's parser does not)
    CASE WHEN regexp_full_match("timestamp", '{PATTERNS["timestamp_pattern"]}') THEN utc_time("timestamp") END AS ts,
    source_service, log_level, ip_address,
    {", ".join(f"length(r.{name}) AS {name}{LENGTH_SUFFIX}" for name in _LENGTH_CHECKED)},
    CASE
        WHEN metrics IS NULL THEN NULL
        WHEN NOT starts_with(ltrim(metrics::VARCHAR), '{{') THEN 'metrics is not a JSON object'
        -- the cheap test first: does any value start like something other than a number?
        WHEN regexp_matches(metrics::VARCHAR, '{_NOT_A_NUMBER}') AND regexp_matches(regexp_replace(metrics::VARCHAR, '{_NOT_NUMERIC_NULL_OK}', '', 'g'), '{_NOT_NUMERIC}')
            THEN 'not numeric: ' || array_to_string(list_distinct(regexp_extract_all(
                regexp_replace(metrics::VARCHAR, '{_NOT_NUMERIC_NULL_OK}', '', 'g'), '{_NOT_NUMERIC}', 1)), ', ')
    END AS metrics_problem,
    CASE WHEN starts_with(ltrim(metrics::VARCHAR), '{{') AND regexp_matches(metrics::VARCHAR, '{_MAYBE_NON_FINITE}')
        THEN nullif(array_to_string(list_transform(list_filter(
            map_entries(TRY(from_json(metrics, '"MAP(VARCHAR, JSON)"'))), e -> {_NON_FINITE_VALUE}), e -> e.key), ', '), '')
    END AS metrics_non_finite,
    CASE WHEN starts_with(ltrim(metrics::VARCHAR), '{{') THEN from_json(metrics, '{_METRIC_STRUCT}') END AS m
FROM raw r LEFT JOIN repeated d USING (event_id)
"""
_UNBOUNDED = "1.7976931348623157e308"  # the largest double: every finite value is within it
_METRIC_ENUM = "ENUM(" + ", ".join(f"'{name}'" for name in METRICS) + ")"
_UNPIVOT = " UNION ALL ".join(
    # an ENUM arrives in pandas as a categorical: not one Python string per row for ~3 rows per event.
    # NaN (-NaN in the JSON; unsigned NaN is "not numeric") is read as +infinity: no range holds it (as
    # NaN, GX counted it failing and the pandas cross-check, for which NaN is missing, passing: the run
    # stopped). ±infinity (1e309 too) is beyond every range as it is, the largest double standing for
    # "unbounded above".
    f"SELECT idx, '{m.name}'::{_METRIC_ENUM} AS metric, "
    f"CASE WHEN isnan(m.{m.name}) THEN 'Infinity'::DOUBLE ELSE m.{m.name} END AS value, "
    f"{m.lower}::DOUBLE AS lower, {_UNBOUNDED if m.upper is None else m.upper}::DOUBLE AS upper FROM _typed "
    f"WHERE NOT is_duplicate AND m.{m.name} IS NOT NULL"
    for m in METRICS.values()
)
RULE_COLUMNS = ("idx", "event_id", "timestamp", "ts", "source_service", "log_level", "message", "ip_address", "metrics_problem", "metrics_non_finite")  # fmt: skip
# The lengths are a frame of their own: GX filters the whole frame of a check by the rows it applies to,
# so every column added to "events" makes each of its checks slower
_LENGTHS = (
    f"SELECT idx, {', '.join(f'{name}{LENGTH_SUFFIX}' for name in _LENGTH_CHECKED)} "
    "FROM _typed WHERE NOT is_duplicate ORDER BY idx"
)
# Text that _typed carries only as the fact that it is there (has_<name>); the text itself is read from
# raw_logs where a rule compares it or the quarantine keeps it, instead of copying every id and message
# into _typed.
_RAW_TEXT = {"event_id", "timestamp", "message"}
_RAW_ROW = (
    "JOIN raw_logs r ON r.partition_date = $day AND r.source_file = t.source_file AND r.line_no = t.line_no"
)


def _rule_frames(
    con: duckdb.DuckDBPyConnection, day: dt.date, checks: list[Check]
) -> dict[str, pd.DataFrame]:
    """The typed rows, and their known metrics in long form (one row per event and metric)."""
    # A column the checks only test for nulls leaves DuckDB as that fact (true, or null): a million ids
    # and messages are not copied out to be reduced to it (``rules._gx_view``) in pandas.
    present = presence_checked([c for c in checks if c.frame == "events"])
    columns, join = [], ""
    for name in RULE_COLUMNS:
        if name in present:
            fact = f"t.has_{name}" if name in _RAW_TEXT else f't."{name}" IS NOT NULL'
            columns.append(f'CASE WHEN {fact} THEN true END AS "{name}"')
        elif name in _RAW_TEXT:
            columns.append(f'r."{name}"')
            join = _RAW_ROW
        else:
            columns.append(f't."{name}"')
    # in file order, so that GX's examples are the first failing lines of the day
    events = con.execute(
        f"SELECT {', '.join(columns)} FROM _typed t {join} WHERE NOT t.is_duplicate ORDER BY t.idx",
        {"day": day} if join else {},
    ).to_arrow_table()
    # through Arrow: DuckDB's own .df() of the ~3 rows per event is slower
    return {
        "events": _to_pandas(events),
        "metrics": con.execute(_UNPIVOT).to_arrow_table().to_pandas(),
        "lengths": con.execute(_LENGTHS).to_arrow_table().to_pandas(),
    }


def _to_pandas(table) -> pd.DataFrame:
    """Text and flags as Arrow-backed columns (no Python object per value; GX and the cross-check give
    the same results on them), times and numbers as plain pandas types for GX's comparisons.
    (Categoricals would be cheaper still, but GX 1.24 miscounts nulls on them: our cross-check caught it.)"""
    columns = {}
    for name in table.column_names:
        column = table[name]
        if (
            pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)
            or pa.types.is_boolean(column.type)
        ):
            columns[name] = pd.Series(pd.arrays.ArrowExtensionArray(column), name=name)
        else:
            columns[name] = column.to_pandas()
    return pd.DataFrame(columns)


_QUARANTINE = f"""
INSERT INTO quarantine_logs
SELECT $day, t.source_file, t.line_no, r.event_id,
    CASE WHEN t.is_duplicate THEN ['duplicate_event_id'] ELSE b.rules END,
    CASE WHEN t.is_duplicate THEN 'duplicate' ELSE 'invalid' END,
    to_json(struct_pack(r."timestamp", r.source_service, r.log_level, r.message, r.user_id,
        r.ip_address, r.metrics, t.metrics_problem, t.metrics_non_finite)),
    now()
FROM _typed t LEFT JOIN _broken b USING (idx) {_RAW_ROW}
WHERE t.is_duplicate OR b.idx IS NOT NULL
ORDER BY t.idx
"""
# validated_logs shows the day's raw rows from now on, less the quarantined ones (schema.sql)
_MARK = """
INSERT INTO validated_partitions
SELECT $day, (SELECT max(ingested_at) FROM raw_logs WHERE partition_date = $day), now()
"""


def validate_partition(
    con: duckdb.DuckDBPyConnection, day: dt.date | str, service_sources: list[str], engine: RuleEngine
) -> tuple[ValidationCounts, list[Outcome]]:
    """Replace partition ``day`` of quarantine_logs and mark the day's raw load validated (one
    transaction), so that validated_logs shows its other rows; check that
    raw = validated + quarantined + duplicates. ``engine`` evaluates the rules (GX in the pipeline)."""
    day = dt.date.fromisoformat(str(day))
    start = pd.Timestamp(day.isoformat(), tz="UTC")
    params = {
        "partition_start": start,
        "partition_end": start + pd.Timedelta(days=1),
        "service_sources": list(service_sources),
    }
    checks = build_checks(load_rules(), params)
    return quarantine.validate_partition(
        con,
        day,
        typed=(TYPED_SQL, "_typed"),
        frames=lambda typed: _rule_frames(typed, day, checks),
        checks=checks,
        engine=engine,
        tables=dict(raw="raw_logs", validated="validated_logs", quarantine="quarantine_logs"),
        # validated_logs is a view of the raw rows: nothing to copy while GX runs
        written=("quarantine_logs", "validated_partitions"),
        after_checking=(_QUARANTINE, _MARK),
    )


LABELS_SQL = """
INSERT INTO log_labels
SELECT $day, event_id,
    coalesce(json_extract(anomaly_details, '$.is_anomaly')::BOOLEAN, false),
    json_extract_string(anomaly_details, '$.anomaly_id'),
    json_extract_string(anomaly_details, '$.anomaly_name'),
    coalesce(json_extract_string(anomaly_details, '$.instance_id'),
             json_extract_string(anomaly_details, '$.anomaly_name')),
    json_extract_string(anomaly_details, '$.category'),
    json_extract_string(anomaly_details, '$.severity'),
    json_extract_string(anomaly_details, '$.correlation_event')
FROM raw_logs
WHERE partition_date = $day
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY source_file, line_no) = 1
"""


def write_labels(con: duckdb.DuckDBPyConnection, day: dt.date | str) -> int:
    """Ground truth per event (first occurrence of each event_id), for evaluation only."""
    day = dt.date.fromisoformat(str(day))
    with rewriting(con, "log_labels", day=day):
        con.execute(LABELS_SQL, {"day": day})
    return con.execute(
        "SELECT count(*) FROM log_labels WHERE partition_date = $day", {"day": day}
    ).fetchone()[0]
