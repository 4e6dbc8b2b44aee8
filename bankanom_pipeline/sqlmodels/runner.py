"""A small dbt-like runner for ``dbt_like_sql/`` (no Dagster here).

A model is one ``.sql`` file holding a ``select``. It names its inputs with ``{{ ref('model') }}`` and
``{{ source('raw', 'table') }}`` and its materialization with ``{{ config(...) }}``:

- ``materialized``: ``table`` (default) or ``view``;
- ``partitioned``: ``true`` for daily models; their SQL selects one day using ``{{ partition_date }}``
  (plus ``{{ lookback_start }}`` for models that need history) and the runner replaces that day with
  delete-then-insert in one transaction, so re-runs are idempotent;
- ``lookback_days``: how many earlier days ``{{ lookback_start }}`` reaches back (default 0);
- ``compression``: for partitioned tables, ``{column: method}`` pinning DuckDB's storage compression of columns
  (``fsst``, ``dictionary``, ...). Unpinned, DuckDB tries every method on every text column of every
  row group it writes, which cost more than computing some models; a pin applies when the runner
  creates the table;
- ``follows_upstream``: ``true`` for daily models that rebuild on their own when an upstream partition
  changes (a late file for day D-1 must reach day D's lookback models); the pipeline's assets give
  such a model the automation condition their own scores and incidents have.

CSV files under ``seeds/`` are loaded as tables and can be ``ref``'d like models. The runner resolves
refs, orders models by their dependencies and refuses cycles and unknown refs with a clear error.
"""

from __future__ import annotations

import datetime as dt
import graphlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import jinja2

from bankanom_pipeline.settings import sql_root
from bankanom_pipeline.warehouse.frames import replace_table, rewriting, table_exists

SQL_ROOT = sql_root()


class SqlModelError(ValueError):
    """A model that cannot be built as written; the message names the file."""


@dataclass
class Model:
    name: str
    path: Path
    group: str
    refs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    materialized: str = "table"
    partitioned: bool = False
    lookback_days: int = 0
    follows_upstream: bool = False
    compression: dict[str, str] = field(default_factory=dict)
    is_seed: bool = False

    @property
    def description(self) -> str:
        """The model's leading ``--`` comment lines."""
        if self.is_seed:
            return f"Seed table loaded from {self.path.name}."
        lines = []
        for line in self.path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("--"):
                lines.append(stripped.removeprefix("--").strip())
            elif stripped and not stripped.startswith("{{"):
                break
        return " ".join(lines)


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


class Project:
    def __init__(self, root: Path = SQL_ROOT):
        self.root = root
        self.models: dict[str, Model] = {}
        for path in sorted(root.rglob("*.csv")):
            self._add(Model(path.stem, path, "seeds", is_seed=True))
        for path in sorted(root.rglob("*.sql")):
            self._add(self._parse(path))
        self.order = self._sort()

    def _add(self, model: Model) -> None:
        if model.name in self.models:
            other = self.models[model.name].path
            raise SqlModelError(f"two models are named {model.name!r}: {other} and {model.path}")
        self.models[model.name] = model

    def _parse(self, path: Path) -> Model:
        group = path.parent.name if path.parent != self.root else "models"
        model = Model(path.stem, path, group)

        def ref(name: str) -> str:
            model.refs.append(name)
            return name

        def source(schema: str, table: str) -> str:
            model.sources.append((schema, table))
            return table

        def config(
            materialized: str = "table",
            partitioned: bool = False,
            lookback_days: int = 0,
            compression: dict[str, str] | None = None,
            follows_upstream: bool = False,
        ) -> str:
            if materialized not in ("table", "view"):
                raise SqlModelError(f"{path}: materialized must be 'table' or 'view', got {materialized!r}")
            if partitioned and materialized != "table":
                raise SqlModelError(f"{path}: a partitioned model must be materialized as a table")
            if compression and not partitioned:
                raise SqlModelError(f"{path}: compression pins apply to partitioned tables only")
            model.materialized, model.partitioned, model.lookback_days = (
                materialized,
                partitioned,
                lookback_days,
            )
            if follows_upstream and not partitioned:
                raise SqlModelError(f"{path}: only a partitioned model follows its upstream partitions")
            model.compression = dict(compression or {})
            model.follows_upstream = follows_upstream
            return ""

        try:
            _ENV.from_string(path.read_text()).render(
                ref=ref, source=source, config=config, **_partition_vars(dt.date(2000, 1, 1), 0)
            )
        except jinja2.TemplateError as error:
            raise SqlModelError(f"{path}: {error}") from None
        return model

    def _sort(self) -> list[str]:
        graph = {}
        for model in self.models.values():
            unknown = [r for r in model.refs if r not in self.models]
            if unknown:
                known = ", ".join(sorted(self.models))
                raise SqlModelError(f"{model.path}: unknown ref(s) {unknown}; known models: {known}")
            graph[model.name] = set(model.refs)
        try:
            return list(graph and graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as error:
            cycle = " -> ".join(error.args[1])
            raise SqlModelError(f"dependency cycle between SQL models: {cycle}") from None

    def render(self, name: str, day: dt.date | str | None = None) -> str:
        model = self.models[name]
        if model.partitioned and day is None:
            raise SqlModelError(f"{name} is partitioned: give the partition date")
        day = dt.date.fromisoformat(str(day)) if day is not None else dt.date(2000, 1, 1)
        return _ENV.from_string(model.path.read_text()).render(
            ref=lambda n: n,
            source=lambda _s, t: t,
            config=lambda **_: "",
            **_partition_vars(day, model.lookback_days),
        )

    def materialize(self, con: duckdb.DuckDBPyConnection, name: str, day: dt.date | str | None = None) -> int:
        """Build one model (one partition of a partitioned model); returns its row count (for that day)."""
        model = self.models[name]
        if model.is_seed:
            replace_table(con, name, "SELECT * FROM read_csv(?, header = true)", [str(model.path)])
            return con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        for ref in model.refs:  # seeds are static: load them the first time something needs them
            seed = self.models[ref]
            if seed.is_seed and not table_exists(con, ref):
                self.materialize(con, ref)
        sql = self.render(name, day)
        if model.materialized == "view":
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
            return con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        if not model.partitioned:
            replace_table(con, name, sql)
            return con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        day = dt.date.fromisoformat(str(day))
        # The new rows go straight into the table (no staging copy: writing a wide partition twice cost
        # as much as computing it); the checks run inside the transaction and roll it back on failure.
        query = f"SELECT * FROM (\n{sql}\n)"
        columns = con.execute(f"DESCRIBE {query}").fetchall()
        if "partition_date" not in [c[0] for c in columns]:
            raise SqlModelError(f"{model.path}: a partitioned model must select partition_date")
        con.execute(self._table_ddl(model, columns))
        self._check_columns(con, name, columns)
        with rewriting(con, name, day=day):
            inserted = con.execute(f'INSERT INTO "{name}" BY NAME {query}').fetchone()[0]
            rows = con.execute(f'SELECT count(*) FROM "{name}" WHERE partition_date = ?', [day]).fetchone()[0]
            if inserted != rows:
                raise SqlModelError(f"{model.path}: {inserted - rows} rows fall outside partition {day}")
        return rows

    @staticmethod
    def _table_ddl(model: Model, columns: list[tuple]) -> str:
        """The model's table, if missing, with the columns its query DESCRIBEs and its compression pins."""
        unknown = sorted(set(model.compression) - {c[0] for c in columns})
        if unknown:
            raise SqlModelError(
                f"{model.path}: compression names column(s) the model does not select: {unknown}"
            )
        definitions = []
        for column, column_type, *_ in columns:
            method = model.compression.get(column)
            pin = f" USING COMPRESSION {method}" if method else ""
            definitions.append(f'"{column}" {column_type}{pin}')
        return f'CREATE TABLE IF NOT EXISTS "{model.name}" ({", ".join(definitions)})'

    def _check_columns(self, con, name: str, new: list[tuple]) -> None:
        old = con.execute(f'DESCRIBE "{name}"').fetchall()
        if [(c[0], c[1]) for c in new] != [(c[0], c[1]) for c in old]:
            raise SqlModelError(
                f"{self.models[name].path}: its columns changed since table {name} was created; "
                f"drop the table (DROP TABLE {name}) and rebuild its partitions"
            )


def _partition_vars(day: dt.date, lookback_days: int) -> dict[str, str]:
    return {
        "partition_date": day.isoformat(),
        "partition_end": (day + dt.timedelta(days=1)).isoformat(),
        "lookback_start": (day - dt.timedelta(days=lookback_days)).isoformat(),
    }
