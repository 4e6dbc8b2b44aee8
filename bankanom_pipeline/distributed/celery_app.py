"""The Celery app the workers run: ``celery -A bankanom_pipeline.distributed.celery_app worker -Q dagster``.

dagster-celery's own ``dagster_celery.app`` reads a broker host from its defaults (RabbitMQ); this one
uses the deployment's Redis URLs and task settings, the same ones the runs submit with."""

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from bankanom_pipeline import settings
from bankanom_pipeline.distributed.celery import config_source

app = make_app(
    {
        "broker": settings.celery_broker(),
        "backend": settings.celery_backend(),
        "config_source": config_source(),
    }
)
execute_plan = create_task(app)
