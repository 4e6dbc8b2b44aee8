"""The few project calls the benchmarks make, for whichever source tree is on ``PYTHONPATH``.

``compare.py`` runs a benchmark under two commits alternately (today's code and an older one); the
scripts come from this folder, the measured code from the tree, and some calls were renamed between
the two (the warehouse's connection, validation's Great Expectations argument, the scored id columns,
``normal_values``' module). Each helper uses the present form when the tree has it, the older one
otherwise, so both trees do the same work.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path


def tree_tag() -> str:
    """The name of the tree being measured (set by compare.py), to keep each tree's built data apart:
    a warehouse built by one commit's code is not the other's."""
    return os.environ.get("BANKANOM_BENCH_TREE", "default")


def connect(database: Path):
    try:
        from bankanom_pipeline.warehouse.store import EmbeddedWarehouse
    except ImportError:  # before the warehouse store
        from bankanom_pipeline.warehouse.resource import connect as old_connect

        return old_connect(database)
    return EmbeddedWarehouse(database).connect()


def validate(con, day: dt.date) -> None:
    from bankanom_pipeline.generator.config import load_config
    from bankanom_pipeline.validation.logs import validate_partition

    sources = load_config().service_sources
    try:
        from bankanom_pipeline.defs.validation.gx import GX
    except ImportError:  # before validation took its Great Expectations loader as an argument
        validate_partition(con, day, sources)
        return
    validate_partition(con, day, sources, GX)


def can_publish() -> bool:
    try:
        from bankanom_pipeline.warehouse import published  # noqa: F401
    except ImportError:
        return False
    return True


def publish(con, folder: Path) -> None:
    if not can_publish():
        raise SystemExit(
            "this tree has no published tables (bankanom_pipeline.warehouse.published): use --publish off"
        )
    from bankanom_pipeline.warehouse import published

    published.attach(con, folder)


def scored_id_columns() -> list[str]:
    try:
        from bankanom_pipeline.detection.sources import LOGS

        return list(LOGS.scored_columns)
    except (ImportError, AttributeError):  # before the sources held them
        from bankanom_pipeline.detection.assets import SCORED_ID_COLUMNS

        return list(SCORED_ID_COLUMNS)


def normal_values(space) -> list[float]:
    try:
        from bankanom_pipeline.detection.explain import normal_values as values
    except ImportError:  # before explain was a module of its own
        from bankanom_pipeline.detection.incidents import normal_values as values
    return values(space)


def features_through(con, day: dt.date, target: str = "features_events") -> None:
    """Materialize ``target`` and the SQL models it needs for ``day``, in build order (the project
    also holds transaction models, whose tables a log day lacks)."""
    from bankanom_pipeline.sqlmodels.runner import Project

    project = Project()
    needed, pending = set(), [target]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending += project.models[name].refs
    for name in project.order:
        if name in needed:
            project.materialize(con, name, day if project.models[name].partitioned else None)
