"""The Celery executor's configuration, shared by runs (which submit steps) and workers (which run them):
both must agree on broker, backend, queue and task settings, so both build them here."""

from __future__ import annotations

import os

from bankanom_pipeline import settings


def config_source() -> dict:
    """Celery settings beyond dagster-celery's defaults."""
    return {
        # A step's message is acknowledged when the step ends, not when a worker takes it: a worker that
        # dies mid-step leaves it unacknowledged, and the broker hands it to another worker once the
        # visibility timeout passes. It must exceed the longest step (default one hour).
        "task_acks_late": True,
        # A step whose process dies (the OOM killer, a crash) goes straight back to the queue as well.
        # Reported as a failure instead, dagster-celery stops submitting steps but waits for the run's
        # remaining branches forever (seen in tests/test_distributed.py): redelivery is what recovers.
        # The price: a step that kills its process every time comes back every time.
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # a worker holds only the step it runs
        "broker_transport_options": {
            "visibility_timeout": int(os.environ.get("BANKANOM_CELERY_VISIBILITY_TIMEOUT", "3600")),
            # a worker looks for messages past their visibility timeout every unacked_restore_interval
            # (10 s) times unacked_restore_throttle seconds: by kombu's default throttle of 10, a dead
            # worker's step waited up to 100 s beyond the timeout (93 s in tests/test_distributed.py);
            # every 10 s instead, one Redis query each
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "task_default_queue": "dagster",
    }


def executor_config() -> dict:
    return {
        "broker": settings.celery_broker(),
        "backend": settings.celery_backend(),
        "config_source": config_source(),
    }


def check_broker(timeout: float = 3.0) -> None:
    import redis

    for setting, url in (
        ("BANKANOM_CELERY_BROKER", settings.celery_broker()),
        ("BANKANOM_CELERY_BACKEND", settings.celery_backend()),
    ):
        if not url.startswith(("redis://", "rediss://")):
            raise settings.SettingError(f"{setting}={url!r}: only Redis (redis:// or rediss://) is supported")
        try:
            redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
        except redis.RedisError as error:
            raise settings.SettingError(f"{setting}={url!r} is unreachable: {error}") from None
