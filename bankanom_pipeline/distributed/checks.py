"""Deployment settings checked up front, each failure naming its setting, instead of a stack trace deep
inside a run: the executor's (at the code location's load) and the Dagster instance's Postgres;
``bankanom check-deployment`` (cli/deployment.py) runs them with the warehouse's."""

from __future__ import annotations

import os

from bankanom_pipeline import settings


def check_executor() -> str:
    """The executor's name once its settings hold together (the broker answers, the storage suits it)."""
    name = settings.executor()
    if name == "celery":
        if settings.storage_mode() != "lake":
            raise settings.SettingError(
                "BANKANOM_EXECUTOR=celery needs BANKANOM_STORAGE=lake: workers on other machines cannot share "
                "the embedded DuckDB file, and it takes one writer at a time"
            )
        from bankanom_pipeline.distributed.celery import check_broker

        check_broker()
    return name


def check_postgres(timeout: int = 3) -> str | None:
    """The Dagster instance's Postgres (infra/dagster.yaml reads DAGSTER_PG_*), when one is configured."""
    host = os.environ.get("DAGSTER_PG_HOST")
    if not host:
        return None
    import psycopg2

    port = os.environ.get("DAGSTER_PG_PORT", "5432")
    try:
        psycopg2.connect(
            host=host,
            port=int(port),
            user=os.environ.get("DAGSTER_PG_USER", "dagster"),
            password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
            dbname=os.environ.get("DAGSTER_PG_DB", "dagster"),
            connect_timeout=timeout,
        ).close()
    except psycopg2.Error as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise settings.SettingError(
            f"DAGSTER_PG_HOST={host!r} DAGSTER_PG_PORT={port!r}: Postgres is unreachable: {detail}"
        ) from None
    return f"{host}:{port}"
