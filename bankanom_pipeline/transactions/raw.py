"""Load one daily partition of landing transaction CSVs into ``raw_transactions`` (no Dagster here).

The layout is the public "bank transactions for fraud detection" CSV (see ``COLUMNS``). Raw is a faithful
record of what arrived: every data line of every file either lands in ``raw_transactions`` (one row per
line whose fields match the header, duplicates included; typing and de-duplication are validation's job)
or in ``raw_transactions_rejected`` with its file, line number, text and reason. Nothing is dropped:
lines read = loaded + rejected, per partition.

Lines are sliced straight out of the file's bytes (as for logs) and split into columns by polars; only
lines holding a quote character go through Python's ``csv`` module (quoted commas). A record whose quoted field spans lines is
not supported: its pieces are rejected with the field count they have.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from bankanom_pipeline.ingest.raw_logs import file_lines
from bankanom_pipeline.warehouse.frames import arrow_for_insert, rewriting

# CSV header -> warehouse column, in the layout's order
COLUMNS = {
    "TransactionID": "transaction_id",
    "AccountID": "account_id",
    "TransactionAmount": "transaction_amount",
    "TransactionDate": "transaction_date",
    "TransactionType": "transaction_type",
    "Location": "location",
    "DeviceID": "device_id",
    "IP Address": "ip_address",
    "MerchantID": "merchant_id",
    "Channel": "channel",
    "CustomerAge": "customer_age",
    "CustomerOccupation": "customer_occupation",
    "TransactionDuration": "transaction_duration",
    "LoginAttempts": "login_attempts",
    "AccountBalance": "account_balance",
    "PreviousTransactionDate": "previous_transaction_date",
}
# other spellings seen in copies of the dataset
ALIASES = {"IPAddress": "IP Address"}
LABELS_SUFFIX = ".labels.csv"  # ground truth of synthetic files: transaction_labels, never raw


@dataclass
class IngestCounts:
    files: int = 0
    lines_read: int = 0  # data lines (headers not counted)
    loaded: int = 0
    rejected: int = 0
    duplicate_transaction_ids: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def landing_files(folder: Path) -> list[Path]:
    """Complete transaction CSVs of a partition folder (hidden names are still being written; labels
    files are ground truth, loaded by transaction_labels)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.glob("*.csv") if not p.name.startswith(".") and not p.name.endswith(LABELS_SUFFIX)
    )


def labels_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{LABELS_SUFFIX}") if not p.name.startswith("."))


def _fields(text: pl.Series, width: int) -> pl.DataFrame:
    """Each line's field count and its first ``width`` fields as columns f1..f<width> (null past the
    end). Plain lines split on commas in polars; the few holding a quote go through ``csv``."""
    split = text.str.split(",")
    quoted = text.str.contains('"', literal=True).arg_true()
    if len(quoted):
        parsed = pl.DataFrame(
            {
                "row": quoted,
                "parsed": pl.Series(
                    [next(csv.reader([text[i]]), []) for i in quoted], dtype=pl.List(pl.String)
                ),
            }
        )
        split = (
            pl.DataFrame({"split": split})
            .with_row_index("row")
            .join(parsed, on="row", how="left", maintain_order="left")
            .select(pl.coalesce("parsed", "split"))
            .to_series()
        )
    return pl.DataFrame(
        {"n_fields": split.list.len()}
        | {f"f{k}": split.list.get(k - 1, null_on_oob=True) for k in range(1, width + 1)}
    )


def _header(first: str) -> tuple[list[str], str | None]:
    """The file's column names (aliases resolved), and why its lines cannot be read (None: they can)."""
    names = [ALIASES.get(n.strip(), n.strip()) for n in next(csv.reader([first.lstrip("\ufeff")]), [])]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        return names, "missing column(s): " + ", ".join(missing)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        return names, "header names columns twice: " + ", ".join(duplicated)
    return names, None


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _insert_sql(names: list[str], file_problem: str | None) -> tuple[str, str]:
    """INSERTs of one file's lines into raw_transactions and raw_transactions_rejected."""
    expected = len(names)
    position = {name: i + 1 for i, name in enumerate(names)}
    if file_problem is None:
        values = ", ".join(f"f{position[c]} AS {col}" for c, col in COLUMNS.items())
        extras = [n for n in names if n not in COLUMNS]
    else:
        values = ", ".join(f"NULL AS {col}" for col in COLUMNS.values())
        extras = []
    extra = (
        "json_object(" + ", ".join(f"{_sql_text(n)}, f{position[n]}" for n in extras) + ")"
        if extras
        else "NULL::JSON"
    )
    problem = _sql_text(file_problem) if file_problem else "NULL"
    reason = f"""CASE
            WHEN NOT utf8_ok THEN 'invalid UTF-8'
            -- a blank line is one field: the CASE trims only those lines, not every line
            WHEN n_fields = 1 AND trim(line) = '' THEN 'empty line'
            WHEN {problem} IS NOT NULL THEN {problem}
            WHEN n_fields <> {expected} THEN 'expected {expected} fields, found ' || n_fields
        END"""
    checked = f"SELECT *, {reason} AS reason FROM _file_lines"
    # no ORDER BY: the lines are registered in file order and DuckDB keeps a scan's order in what it
    # inserts (preserve_insertion_order), so sorting the wide rows again would only cost CPU
    loaded = f"""INSERT INTO raw_transactions
        SELECT $day, source_file, line_no, {values}, {extra}, now()
        FROM ({checked}) WHERE reason IS NULL"""
    rejected = f"""INSERT INTO raw_transactions_rejected
        SELECT $day, source_file, line_no, line, reason, now()
        FROM ({checked}) WHERE reason IS NOT NULL"""
    return loaded, rejected


def _file_table(path: Path, name: str) -> tuple[pa.Table, list[str], str | None]:
    sliced = file_lines(path, name)
    # in polars: on every core, and the split below reads the same series
    lines = pl.Series("line", sliced["line"].combine_chunks()).str.strip_chars_end("\r\n")
    ok = sliced["utf8_ok"].to_numpy()
    if len(lines) == 0:
        return pa.table({"line": pa.array([], pa.large_string())}), [], None
    names, problem = _header(lines[0])
    body = lines.slice(1)
    table = pa.table(
        {
            "source_file": pa.DictionaryArray.from_arrays(np.zeros(len(body), dtype=np.int32), [name]),
            "line_no": pa.array(np.arange(2, len(lines) + 1, dtype=np.int64)),
            "line": body.to_arrow(),
            "utf8_ok": pa.array(ok[1:]),
        }
    )
    fields = _fields(body, max(len(names), 1)).to_arrow()
    for column in fields.column_names:
        table = table.append_column(column, fields[column])
    return table, names, problem


def load_partition(con: duckdb.DuckDBPyConnection, landing_root: Path, day: dt.date | str) -> IngestCounts:
    """Replace partition ``day`` of raw_transactions and raw_transactions_rejected with the CSVs in its
    landing folder (``landing_root/<day>/``). Delete-then-insert in one transaction: idempotent."""
    day = dt.date.fromisoformat(str(day))
    files = landing_files(landing_root / day.isoformat())
    counts = IngestCounts(files=len(files))
    con.execute("SET enable_progress_bar = false")
    with rewriting(con, "raw_transactions", "raw_transactions_rejected", day=day):
        for path in files:
            name = str(path.relative_to(landing_root)) if path.is_relative_to(landing_root) else str(path)
            lines, names, problem = _file_table(path, name)
            counts.lines_read += lines.num_rows
            if lines.num_rows == 0:
                continue
            con.register("_file_lines", arrow_for_insert(lines))
            try:
                for sql in _insert_sql(names, problem):
                    con.execute(sql, {"day": day})
            finally:
                con.unregister("_file_lines")
    counts.loaded = con.execute(
        "SELECT count(*) FROM raw_transactions WHERE partition_date = $day", {"day": day}
    ).fetchone()[0]
    counts.rejected_by_reason = dict(
        con.execute(
            "SELECT reason, count(*) FROM raw_transactions_rejected WHERE partition_date = $day "
            "GROUP BY ALL ORDER BY 2 DESC, 1",
            {"day": day},
        ).fetchall()
    )
    counts.rejected = sum(counts.rejected_by_reason.values())
    counts.duplicate_transaction_ids = con.execute(
        "SELECT count(nullif(trim(transaction_id), '')) - count(DISTINCT nullif(trim(transaction_id), '')) "
        "FROM raw_transactions WHERE partition_date = $day",  # rows without an id are no one's duplicate
        {"day": day},
    ).fetchone()[0]
    if counts.loaded + counts.rejected != counts.lines_read:
        raise RuntimeError(f"raw_transactions {day}: counts do not reconcile: {counts.as_dict()}")
    return counts
