"""``bankanom stream``: score the live stream as it arrives (docs/live.md)."""

from __future__ import annotations

import os
from typing import Annotated
from urllib.parse import urlsplit

import typer


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"{name}={value!r} is not a number") from None


def stream(
    source: Annotated[
        str,
        typer.Option(
            help="Where events come from: mock:http://HOST:PORT (the mock server's GET /stream), "
            "redis://HOST:PORT/DB[?stream=bankanom:logs&group=bankanom-stream], or none (only events "
            "posted to the API's POST /events)."
        ),
    ] = "mock:http://127.0.0.1:8000",
    port: Annotated[
        int | None,
        typer.Option(help="Port of the internal service (loopback); default: BANKANOM_STREAM_URL's port."),
    ] = None,
    checkpoint_events: Annotated[
        int,
        typer.Option(
            help="Accepted events between two engine checkpoints: a restart folds in at most this many "
            "again (~10k a CPU-second), and each checkpoint pauses ingest while it is written."
        ),
    ] = 200_000,
    max_events: Annotated[
        int, typer.Option(help="Most lines fetched (and held in memory) at once: one batch, one commit.")
    ] = 1000,
    retention_days: Annotated[
        int,
        typer.Option(
            min=1,
            help="Days of event time the live store keeps, today's included (~0.7 GB a default day); "
            "the warehouse holds the history.",
        ),
    ] = 2,
) -> None:
    """Consume events as they are emitted, score each with the online engine and the promoted models,
    group anomalies into live incidents and commit the results with the source's offset to the live store
    (BANKANOM_LIVE_DIR, data/live). The one owner of the online state: the API forwards POST /events and
    POST /predict (context) to its internal service. Restartable at any point, kill -9 included."""
    import logging

    from bankanom_pipeline import settings
    from bankanom_pipeline.live.scorer import LiveScorer, LiveStateError
    from bankanom_pipeline.live.service import serve
    from bankanom_pipeline.live.sources import SourceError, open_source

    if checkpoint_events < 1 or max_events < 1:
        raise typer.BadParameter("--checkpoint-events and --max-events must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = urlsplit(settings.stream_url())
    host = url.hostname or "127.0.0.1"
    port = port if port is not None else (url.port or 8090)
    try:
        opened = open_source(source)
    except SourceError as error:
        raise typer.BadParameter(str(error), param_hint="--source") from None
    try:
        scorer = LiveScorer(
            settings.live_dir(),
            settings.models_dir(),
            settings.snapshots_dir(),
            checkpoint_events=checkpoint_events,
            max_future_s=_env_float("BANKANOM_ONLINE_MAX_FUTURE_S", 300.0),
            incidents=_incidents(),
            retention_days=retention_days,
        )
    except LiveStateError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(serve(scorer, opened, host, port, settings.stream_key(), max_events))


def _incidents():
    """The live incidents the scorer keeps (None until bankanom_pipeline.live.incidents exists)."""
    from importlib.util import find_spec

    if find_spec("bankanom_pipeline.live.incidents") is None:
        return None
    from bankanom_pipeline.live.incidents import LiveIncidents

    # the root-cause passes of large groups off the batches: a pass of a group of 200,000 events held
    # the commit of every event behind it for 1.5 s of CPU (docs/live.md#lag-and-latency)
    return LiveIncidents(background=True)
