"""The Celery app the workers run: ``celery -A bankanom_pipeline.defs.celery_app worker -Q dagster``.

dagster-celery's own ``dagster_celery.app`` reads a broker host from its defaults (RabbitMQ); this one
uses the deployment's Redis URLs and task settings, the same ones the runs submit with. Its step task
is dagster-celery's, run inside the step fence (``fence.py``): one execution per step attempt."""

from __future__ import annotations

import json

import celery
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import unpack_value
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from bankanom_pipeline import settings
from bankanom_pipeline.distributed.celery import config_source
from bankanom_pipeline.distributed.fence import StepFence


def step_attempt(args: ExecuteStepArgs) -> str:
    """``run id/step key/retry count``: what one execution may run (a Dagster step retry is a new attempt)."""
    steps = sorted(args.step_keys_to_execute or [])
    retries = args.known_state.previous_retry_attempts if args.known_state else {}
    return f"{args.run_id}/{','.join(steps)}/{max((retries.get(s, 0) for s in steps), default=0)}"


class FencedStep(celery.Task):
    def __call__(self, execute_step_args_packed: dict, executable_dict: dict) -> list[str]:
        args = unpack_value(execute_step_args_packed, as_type=ExecuteStepArgs)
        execute = super().__call__

        def run() -> str:
            return json.dumps(execute(execute_step_args_packed, executable_dict))

        result, _ = StepFence.from_settings().run(step_attempt(args), run)
        return json.loads(result)


app = make_app(
    {
        "broker": settings.celery_broker(),
        "backend": settings.celery_backend(),
        "config_source": config_source(),
    }
)
execute_plan = create_task(app, base=FencedStep)
