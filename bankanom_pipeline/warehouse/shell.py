"""``bankanom sql``: a SQL shell over the published tables (pip's duckdb has no CLI binary of its own)."""

from __future__ import annotations

import duckdb

from bankanom_pipeline.warehouse import published

MAX_ROWS = 40  # rows printed per result (DuckDB's box renderer shows the first and last ones)
HELP = ".tables lists the tables, .quit leaves; end a statement with ';'"


def run(con: duckdb.DuckDBPyConnection, text: str, max_rows: int = MAX_ROWS) -> None:
    """Run each statement of ``text`` in order, printing each result as a table; raises the first error."""
    for statement in duckdb.extract_statements(text):
        published.refresh(con)  # tables published since the last statement
        result = con.sql(statement)
        if result is not None:
            result.show(max_rows=max_rows)


def interactive(con: duckdb.DuckDBPyConnection, max_rows: int = MAX_ROWS) -> None:
    """Read statements from the terminal until ``.quit`` or end of input; an error is printed, not fatal."""
    import readline  # noqa: F401  (line editing and history for input())

    print(f"bankanom sql: {HELP}")
    buffer: list[str] = []
    while True:
        try:
            line = input("   ...> " if buffer else "bankanom> ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print()
            buffer.clear()
            continue
        command = line.strip()
        if not buffer and command in (".quit", ".exit"):
            return
        if not buffer and command == ".tables":
            line = "SHOW TABLES;"
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        text, buffer = "\n".join(buffer), []
        try:
            run(con, text, max_rows)
        except duckdb.Error as error:
            print(f"Error: {error}")
