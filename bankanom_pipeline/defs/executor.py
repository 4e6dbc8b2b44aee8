"""The code location's executor: in process (embedded) or Celery (BANKANOM_EXECUTOR=celery)."""

import dagster as dg

from bankanom_pipeline.distributed.celery import executor_config
from bankanom_pipeline.distributed.checks import check_executor


def celery() -> dg.ExecutorDefinition:
    """Dagster's Celery executor on this deployment's broker (check_executor has pinged it: a wrong URL
    fails at load, naming the setting, not in a run waiting for workers that never answer)."""
    from dagster_celery import celery_executor

    return celery_executor.configured(executor_config(), name="celery")


def executor() -> dg.ExecutorDefinition:
    if check_executor() == "celery":
        return celery()
    # Embedded: steps run in the run's own process. DuckDB writers are serialised by the "duckdb" pool
    # anyway, so the multiprocess executor bought no parallelism, only a Python start-up (~5-10 s of
    # imports: Dagster, GX, scikit-learn) per step.
    return dg.in_process_executor
