"""The feature models run on a batch of events in an in-memory DuckDB (no warehouse, no Dagster).

The API's ``POST /predict`` computes features with exactly the SQL the pipeline materializes
(``dbt_like_sql/``): the models ``features_events`` depends on are rendered into one query of CTEs
and run over the batch, treated as one partition. So "the same events give the same features" holds
by construction, not by keeping two implementations in step. Context features (a user's last hour, an
IP's last ten minutes, how rare a template is) see only the batch: send the recent window along with
the events you want scored when that context matters.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading

import duckdb
import polars as pl

from bankanom_pipeline.sqlmodels.runner import Project

TARGET = "features_events"
SOURCE = "validated_logs"
# validated_logs' columns the feature models read, with their warehouse types
SOURCE_SCHEMA = {
    "partition_date": pl.Date,
    "event_id": pl.String,
    "ts": pl.Datetime("us"),
    "source_service": pl.String,
    "log_level": pl.String,
    "message": pl.String,
    "correlation_id": pl.String,
    "user_id": pl.String,
    "ip_address": pl.String,
    "geo_location": pl.String,
    "metrics": pl.String,  # a JSON object as text
}


class FeatureBuilder:
    """Builds a feature model's rows (``features_events`` by default) for a batch of rows shaped like its
    source table. Thread-safe: each thread gets its own DuckDB connection (a connection runs one query at
    a time)."""

    def __init__(
        self,
        project: Project | None = None,
        target: str = TARGET,
        source: str = SOURCE,
        schema: dict[str, pl.DataType] | None = None,
        order: str = "ts, event_id",
    ):
        self.project = project or Project()
        self.target, self.source, self.order = target, source, order
        self.schema = schema or SOURCE_SCHEMA
        self._chain = self._upstream(target)
        self._local = threading.local()

    def _upstream(self, name: str) -> list[str]:
        needed, stack = set(), [name]
        while stack:
            model = self.project.models[stack.pop()]
            if model.name not in needed:
                needed.add(model.name)
                stack.extend(model.refs)
        return [n for n in self.project.order if n in needed]

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one builder per process; rendering costs ~10 ms)
    def _query(self, day: dt.date) -> str:
        ctes = [
            f'"{name}" AS (\n{self.project.render(name, day)}\n)'
            for name in self._chain
            if not self.project.models[name].is_seed
        ]
        body = ",\n".join(ctes)
        return f'WITH {body}\nSELECT * FROM "{self.target}" ORDER BY {self.order}'

    def _connection(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect(":memory:")
            con.execute("SET threads = 1")  # batches are small; the server's threads run requests in parallel
            for name in self._chain:
                if self.project.models[name].is_seed:
                    self.project.materialize(con, name)
            self._local.con = con
        return con

    def features(self, events: pl.DataFrame) -> pl.DataFrame:
        """``features_events`` for ``events`` (columns of SOURCE_SCHEMA but partition_date), in the order
        of ``ts`` then ``event_id``. The batch is one partition, dated by its first event."""
        if events.is_empty():
            raise ValueError("no events to build features for")
        day = events["ts"].min().date()
        return self.build(events.with_columns(pl.lit(day).alias("partition_date")), day)

    def build(self, rows: pl.DataFrame, day: dt.date) -> pl.DataFrame:
        """The target's rows of partition ``day``, computed over ``rows`` (the source table's columns,
        partition_date included: rows of earlier partitions are history the model may look back on)."""
        frame = rows.select(list(self.schema)).cast(self.schema)
        con = self._connection()
        con.register(self.source, frame.to_arrow())
        try:
            return con.execute(self._query(day)).pl()
        finally:
            con.unregister(self.source)
