"""One day of a source's feature table scored with its promoted models and written to its scored table:
the body of ``scored_events`` and ``scored_transactions`` (and of the benchmarks), the same for both
sources; what differs between them is on ``Source``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline.detection.config import DetectionConfig
from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.scoring import ECOD, IF, LOF, score_batches
from bankanom_pipeline.detection.sources import Source
from bankanom_pipeline.transactions.scoring import evidence, top_features
from bankanom_pipeline.warehouse.frames import read_batches, replace_partition

SCORE_COLUMNS = ["if_score", "lof_score", "ensemble_score", "if_flag", "lof_flag", "is_anomaly"]
ECOD_COLUMNS = ["ecod_score", "ecod_flag"]  # a source whose config has an ECOD detector


class NothingToScore(ValueError):
    """The day has no feature rows: the pipeline has not reached the features yet."""


@dataclass(frozen=True)
class ScoredDay:
    rows: int  # written to the scored table
    stored: int  # the scored table's rows for the day, read back
    features_rows: int  # the feature table's rows for the day
    flagged: int
    if_flagged: int
    lof_flagged: int
    if_version: str
    lof_version: str


def score_frames(
    source: Source, frames: Iterable[pl.DataFrame], detectors: dict[str, Detector], config: DetectionConfig
) -> pl.DataFrame:
    """The ``source.scored_columns`` of every row with its scores (and, with ``source.explain_flagged``,
    the top deviating features of each anomalous row).

    With ``source.scored_order``, ``frames`` may come in any order: they are sorted here (a fifth of
    the CPU of DuckDB sorting the wide rows it reads) and scored in batches of ``chunk_rows`` of that
    order, the batches an ordered read gave (a LOF score's last bit depends on the row's place in its
    batch)."""
    columns = list(source.scored_columns)
    if not source.scored_order:
        return score_batches(frames, detectors, config, columns)
    ordered = pl.concat([f for f in frames if f.height]).sort(list(source.scored_order))
    batches = ordered.iter_slices(config.scoring.chunk_rows)
    features = [f for f in features_read(source, detectors, config) if f not in columns]
    scored = score_batches(batches, detectors, config, columns + features)
    out = scored.select(*columns, *SCORE_COLUMNS, *(c for c in ECOD_COLUMNS if c in scored.columns))
    if not source.explain_flagged:
        return out
    flagged = np.flatnonzero(scored["is_anomaly"].to_numpy())
    top = pl.DataFrame({"_row": pl.Series(flagged, dtype=pl.UInt32)}).with_columns(
        top_features(scored[flagged], detectors)
    )
    if ECOD in detectors:
        top = top.with_columns(evidence(scored[flagged], detectors))
    return out.with_row_index("_row").join(top, on="_row", how="left", maintain_order="left").drop("_row")


def features_read(source: Source, detectors: dict[str, Detector], config: DetectionConfig) -> list[str]:
    """The feature columns (of ``config.feature_names``, in its order) that scoring with ``detectors``
    and the stored explanations read: what ``score_frames`` needs beside ``source.scored_columns``. A
    day's other features are neither read from the feature table nor sorted (8 of the transactions'
    26)."""
    read = {f for d in detectors.values() for f in d.frame_columns()}
    if source.explain_flagged:  # top_features and evidence: ECOD's space, or else the forest's
        read |= set(detectors[ECOD if ECOD in detectors else IF].space.names)
    return [f for f in config.feature_names if f in read]


def score_partition(
    con: duckdb.DuckDBPyConnection, source: Source, day: str, detectors: dict[str, Detector]
) -> ScoredDay:
    """Replace day ``day`` of ``source.scored_table`` with the day's feature rows scored by ``detectors``
    (read in batches: the whole partition as one frame grew with the day, 11.2 GiB at 4M events)."""
    config = source.config
    table = source.scored_table
    features_rows = con.execute(
        f"SELECT count(*) FROM {source.features_table} WHERE partition_date = ?", [day]
    ).fetchone()[0]
    if features_rows == 0:
        raise NothingToScore(
            f"{source.features_table} has no rows for {day}: run the pipeline up to features first"
        )
    selected = ", ".join(dict.fromkeys([*source.scored_columns, *features_read(source, detectors, config)]))
    batches = read_batches(
        con,
        f"SELECT {selected} FROM {source.features_table} WHERE partition_date = ?",
        [day],
        config.scoring.chunk_rows,
    )
    frame = score_frames(source, batches, detectors, config).with_columns(
        if_version=pl.lit(detectors[IF].version), lof_version=pl.lit(detectors[LOF].version)
    )
    if config.ecod is not None:
        frame = frame.with_columns(ecod_version=pl.lit(detectors[ECOD].version))
        _add_missing_columns(con, table, frame)
    rows = replace_partition(con, table, frame, day)
    stored = con.execute(f"SELECT count(*) FROM {table} WHERE partition_date = ?", [day]).fetchone()[0]
    return ScoredDay(
        rows=rows,
        stored=stored,
        features_rows=features_rows,
        flagged=int(frame["is_anomaly"].sum()),
        if_flagged=int(frame["if_flag"].sum()),
        lof_flagged=int(frame["lof_flag"].sum()),
        if_version=detectors[IF].version,
        lof_version=detectors[LOF].version,
    )


def _add_missing_columns(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """A scored table written before the source had an ECOD detector gains its columns (NULL for the
    days scored before), so that a day scored now can be inserted by name."""
    have = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
    }
    if not have:
        return  # replace_partition creates it from the frame
    types = {
        "ecod_score": "DOUBLE",
        "ecod_flag": "BOOLEAN",
        "ecod_version": "VARCHAR",
        "evidence": "STRUCT(feature VARCHAR, rarity DOUBLE, value DOUBLE)[]",
    }
    for column in frame.columns:
        if column not in have and column in types:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {types[column]}")
