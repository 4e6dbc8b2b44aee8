"""Validate one daily partition of ``raw_transactions`` into ``validated_transactions`` and
``quarantine_transactions``, with the rules of ``transaction_rules.yaml`` (the log rules' engine).

Every raw row ends in exactly one place: validated, quarantined with every rule it broke, or quarantined
as a duplicate: of an earlier row of the partition with the same TransactionID, or of a transaction an
earlier partition already validated (a file delivered twice on different days is not counted twice).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd

from bankanom_pipeline.validation import quarantine
from bankanom_pipeline.validation.declared import (
    LENGTH_SUFFIX,
    PATTERNS,
    TRANSACTION_RULES,
    build_checks,
    load_rules,
)
from bankanom_pipeline.validation.quarantine import RuleEngine, ValidationCounts
from bankanom_pipeline.validation.rules import Outcome
from bankanom_pipeline.warehouse.frames import rewriting

RULES_PATH = TRANSACTION_RULES
TEXT_COLUMNS = (
    "transaction_id",
    "account_id",
    "transaction_amount",
    "transaction_date",
    "transaction_type",
    "location",
    "device_id",
    "ip_address",
    "merchant_id",
    "channel",
    "customer_age",
    "customer_occupation",
    "transaction_duration",
    "login_attempts",
    "account_balance",
    "previous_transaction_date",
)


# a time only where the text matches the declared pattern (the API's too): DuckDB's cast alone also
# takes a bare date, or a zone it then drops
def _date(text: str) -> str:
    return (
        f"CASE WHEN regexp_full_match({text}, '{PATTERNS['date_time_pattern']}') "
        f"THEN coalesce(try_strptime({text}, '%Y-%m-%d %H:%M:%S'), try_cast({text} AS TIMESTAMP)) END"
    )


# only finite numbers are numbers: "NaN", "inf" and "1e309" (which overflows) cast to non-finite doubles
_NUMBER = "CASE WHEN isfinite(try_cast({0} AS DOUBLE)) THEN try_cast({0} AS DOUBLE) END"
_WHOLE = "try_cast(try_cast({0} AS DOUBLE) AS INTEGER)"  # "81" and "81.0" are 81; "81.5" is not whole
_LENGTH_CHECKED = ("transaction_id", "account_id", "location", "device_id", "merchant_id")

TYPED_SQL = f"""
CREATE OR REPLACE TEMP TABLE _typed_tx AS
WITH files AS (
    -- idx orders rows by (file, line) without sorting them: the file's rank in the high bits
    SELECT source_file, row_number() OVER (ORDER BY source_file) << 40 AS base
    FROM (SELECT DISTINCT source_file FROM raw_transactions WHERE partition_date = $day)
), cleaned AS (
    SELECT (f.base + r.line_no)::BIGINT AS idx, r.source_file, r.line_no, r.extra,
        {", ".join(f"nullif(trim(r.{c}), '') AS {c}" for c in TEXT_COLUMNS)}
    FROM raw_transactions r JOIN files f ON f.source_file = r.source_file
    WHERE r.partition_date = $day
), firsts AS (
    -- each id's first line: a hash aggregate (of the BIGINT idx: half the cost of a (file, line)
    -- struct), where a window over the ids sorted every (wide) row
    SELECT transaction_id, min(idx) AS first_idx
    FROM cleaned WHERE transaction_id IS NOT NULL GROUP BY transaction_id
)
SELECT
    -- a row without an id is invalid (required_fields_present), never a duplicate: without the guard
    -- NULL IN (...) is NULL (row lost)
    c.transaction_id IS NOT NULL AND (
        c.idx > d.first_idx
        OR c.transaction_id IN (
            SELECT transaction_id FROM validated_transactions WHERE partition_date < $day
        )
    ) AS is_duplicate,
    c.*,
    {_NUMBER.format("c.transaction_amount")} AS amount,
    {_date("c.transaction_date")} AS ts,
    {_date("c.previous_transaction_date")} AS previous_ts,
    CASE WHEN c.previous_transaction_date IS NOT NULL AND {_date("c.previous_transaction_date")} IS NULL
        THEN 'unparseable: ' || c.previous_transaction_date END AS previous_date_problem,
    CASE WHEN try_cast(c.customer_age AS DOUBLE) = {_WHOLE.format("c.customer_age")}
        THEN {_WHOLE.format("c.customer_age")} END AS customer_age_n,
    CASE WHEN try_cast(c.transaction_duration AS DOUBLE) = {_WHOLE.format("c.transaction_duration")}
        THEN {_WHOLE.format("c.transaction_duration")} END AS duration_s,
    CASE WHEN try_cast(c.login_attempts AS DOUBLE) = {_WHOLE.format("c.login_attempts")}
        THEN {_WHOLE.format("c.login_attempts")} END AS login_attempts_n,
    {_NUMBER.format("c.account_balance")} AS balance,
    {", ".join(f"length(c.{name}) AS {name}{LENGTH_SUFFIX}" for name in _LENGTH_CHECKED)}
FROM cleaned c
LEFT JOIN firsts d ON d.transaction_id = c.transaction_id
"""
# The whole numbers go to GX as BIGINT: GX checks a range vectorised only for int64/float64 columns and
# calls a Python function per value for any other dtype (an INTEGER column without nulls is int32).
RULE_COLUMNS = (
    "idx, transaction_id, account_id, transaction_amount, transaction_date, transaction_type, location, "
    "device_id, ip_address, merchant_id, channel, customer_age, customer_occupation, transaction_duration, "
    "login_attempts, account_balance, amount, ts, previous_date_problem, customer_age_n::BIGINT AS customer_age_n, "
    "duration_s::BIGINT AS duration_s, login_attempts_n::BIGINT AS login_attempts_n, balance"
)
# the lengths are a frame of their own, as for logs (validation/logs.py says why)
_LENGTHS = (
    f"SELECT idx, {', '.join(f'{name}{LENGTH_SUFFIX}' for name in _LENGTH_CHECKED)} "
    "FROM _typed_tx WHERE NOT is_duplicate"
)
_RECORD = ", ".join(f"t.{c}" for c in TEXT_COLUMNS)


# text columns the rules only check for being given: handed over as pd.ArrowDtype columns, which GX
# gets as the fact (present or not, ``gx._gx_view``), not a million distinct values (which its batch
# fingerprint, turned off in ``gx.load_gx``, would hash)
_PRESENCE_ONLY = {
    "transaction_id",
    "account_id",
    "transaction_amount",
    "transaction_date",
    "location",
    "device_id",
    "merchant_id",
    "customer_age",
    "transaction_duration",
    "login_attempts",
    "account_balance",
}


def _frame(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The typed rows GX checks: text only checked for being given as Arrow-backed columns (no Python
    object per value), the rest as plain pandas types for GX's value comparisons."""
    table = con.execute(f"SELECT {RULE_COLUMNS} FROM _typed_tx WHERE NOT is_duplicate").to_arrow_table()
    arrow_backed = _PRESENCE_ONLY
    return pd.DataFrame(
        {
            name: pd.Series(pd.arrays.ArrowExtensionArray(table[name]), name=name)
            if name in arrow_backed
            else table[name].to_pandas()
            for name in table.column_names
        }
    )


# columns of validated_transactions that are NOT NULL: the rules require each (a row missing one is
# broken whatever else it holds), so the rows written before GX has run leave those out
_REQUIRED = [
    "transaction_id",
    "account_id",
    "amount",
    "ts",
    "transaction_type",
    "location",
    "device_id",
    "ip_address",
    "merchant_id",
    "channel",
    "customer_age_n",
    "customer_occupation",
    "duration_s",
    "login_attempts_n",
    "balance",
]
_VALIDATED = f"""
INSERT INTO validated_transactions
SELECT $day, t.transaction_id, t.account_id, t.amount, t.ts, t.transaction_type,
    t.location, t.device_id, t.ip_address, t.merchant_id, t.channel, t.customer_age_n,
    t.customer_occupation, t.duration_s, t.login_attempts_n, t.balance, t.previous_ts,
    t.extra, t.source_file, t.line_no
FROM _typed_tx t
WHERE NOT t.is_duplicate AND {" AND ".join(f"t.{c} IS NOT NULL" for c in _REQUIRED)}
ORDER BY t.idx
"""
# (source_file, line_no) is a raw row's key: one validated row each
_DROP_BROKEN = """
DELETE FROM validated_transactions v
USING (SELECT t.source_file, t.line_no FROM _typed_tx t SEMI JOIN _broken b USING (idx)) x
WHERE v.partition_date = $day AND v.source_file = x.source_file AND v.line_no = x.line_no
"""
_QUARANTINE = f"""
INSERT INTO quarantine_transactions
SELECT $day, t.source_file, t.line_no, t.transaction_id,
    CASE WHEN t.is_duplicate THEN ['duplicate_transaction_id'] ELSE b.rules END,
    CASE WHEN t.is_duplicate THEN 'duplicate' ELSE 'invalid' END,
    to_json(struct_pack({_RECORD})),
    now()
FROM _typed_tx t LEFT JOIN _broken b USING (idx)
WHERE t.is_duplicate OR b.idx IS NOT NULL
ORDER BY t.idx
"""


def validate_partition(
    con: duckdb.DuckDBPyConnection, day: dt.date | str, engine: RuleEngine
) -> tuple[ValidationCounts, list[Outcome]]:
    """Replace partition ``day`` of validated_transactions and quarantine_transactions (one transaction),
    and check that raw = validated + quarantined + duplicates. ``engine`` evaluates the rules (GX in
    the pipeline)."""
    day = dt.date.fromisoformat(str(day))
    tables = dict(
        raw="raw_transactions", validated="validated_transactions", quarantine="quarantine_transactions"
    )
    return quarantine.validate_partition(
        con,
        day,
        typed=(TYPED_SQL, "_typed_tx"),
        frames=lambda con: {
            "transactions": _frame(con),
            "lengths": con.execute(_LENGTHS).to_arrow_table().to_pandas(),
        },
        checks=build_checks(load_rules(RULES_PATH), {}, "transactions"),
        engine=engine,
        tables=tables,
        written=(tables["validated"], tables["quarantine"]),
        # every candidate row is written while GX runs (written after it, they waited seconds a
        # million); the few GX finds broken are deleted again and quarantined with the rest
        while_checking=(_VALIDATED,),
        after_checking=(_DROP_BROKEN, _QUARANTINE),
    )


def load_labels(con: duckdb.DuckDBPyConnection, files: list[Path], day: dt.date | str) -> tuple[int, int]:
    """Replace partition ``day`` of transaction_labels with the labels files of synthetic deliveries
    (TransactionID, is_fraud, pattern, instance_id). Evaluation only: never read by features. A
    TransactionID labelled twice keeps its first row (by file name) and is counted: returns (rows
    kept, repeated rows left out)."""
    day = dt.date.fromisoformat(str(day))
    read = 0
    with rewriting(con, "transaction_labels", day=day):
        if files:
            con.execute(
                """CREATE OR REPLACE TEMP TABLE _labels AS
                   SELECT * FROM read_csv($files, header = true, filename = true, columns = {
                       'TransactionID': 'VARCHAR', 'is_fraud': 'BOOLEAN',
                       'pattern': 'VARCHAR', 'instance_id': 'VARCHAR'})""",
                {"files": [str(f) for f in files]},
            )
            read = con.execute("SELECT count(*) FROM _labels").fetchone()[0]
            con.execute(
                """INSERT INTO transaction_labels
                   SELECT $day, TransactionID, is_fraud, pattern, instance_id FROM _labels
                   QUALIFY row_number() OVER (PARTITION BY TransactionID ORDER BY filename) = 1""",
                {"day": day},
            )
            con.execute("DROP TABLE _labels")
    kept = con.execute(
        "SELECT count(*) FROM transaction_labels WHERE partition_date = $day", {"day": day}
    ).fetchone()[0]
    return kept, read - kept
