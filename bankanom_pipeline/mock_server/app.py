"""A FastAPI mock log server compatible with the predecessor's control API.

While running, a background thread draws traffic from the same vectorised generator as batch mode, in
short chunks aligned to the wall clock, and appends each line when its timestamp comes due. Lines go to a
hidden ``.part`` file that is renamed into place on rotation, so readers only ever see complete files.
The same lines, numbered, are served by ``GET /stream`` for a live consumer (``bankanom stream``) and, with
a Redis URL, added to a Redis Stream (``stream.py``).
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import orjson
import polars as pl
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from bankanom_pipeline.generator.config import MockConfig
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.render import to_json_lines
from bankanom_pipeline.mock_server.stream import (
    DEFAULT_BUFFER_LINES,
    OffsetAhead,
    OffsetError,
    RedisPublisher,
    StreamBuffer,
)

CHUNK_S = 10
TICK_S = 0.25


def in_event_order(lines: list[str]) -> list[str]:
    """One tick's due lines in the events' own order, ``(timestamp, event_id)``: a tick's lines come from
    several generated blocks (normal traffic, each scenario), and emitted as they come a consumer would
    see a sixth of them late at 1,000 events/s, each placed by the online engine's slower late path.
    Across ticks the order already holds: a tick emits only lines due since the previous one."""
    return sorted(lines, key=lambda line: _order_key(orjson.loads(line)))


def _order_key(event: dict) -> tuple[str, str]:
    return event["timestamp"], event["event_id"]


class Control(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["start", "stop"]
    logs_per_second: float | None = Field(None, gt=0, le=100_000)
    anomaly_rate: float | None = Field(None, ge=0, lt=1)


class Emitter:
    def __init__(
        self,
        config: MockConfig,
        landing_logs: Path,
        rotate_seconds: int,
        recent: int = 1000,
        buffer: StreamBuffer | None = None,
        publisher: RedisPublisher | None = None,
    ):
        self.config = config
        self.landing_logs = landing_logs
        self.rotate_seconds = rotate_seconds
        self.recent: collections.deque[str] = collections.deque(maxlen=recent)
        self.events_emitted = 0
        self.files_published: list[Path] = []
        self.buffer = buffer or StreamBuffer()
        self.publisher = publisher
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generator = Generator(config)
        self._file = None
        self._file_path: Path | None = None
        self._file_opened = 0.0
        self._file_lines = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def reconfigure(self, logs_per_second: float | None, anomaly_rate: float | None) -> None:
        with self._lock:
            update = {}
            if logs_per_second is not None:
                update["log_generation"] = self.config.log_generation.model_copy(
                    update={"logs_per_second": logs_per_second}
                )
            if anomaly_rate is not None:
                update["global_anomaly_rate"] = anomaly_rate
            if update:
                counts = self._generator.instance_counts
                self.config = self.config.model_copy(update=update)
                self._generator = Generator(self.config)
                self._generator.instance_counts = counts  # instance numbers keep counting up

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mock-emitter", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout=10)
        with self._lock:
            self._publish()
            self._thread = None

    def _run(self) -> None:
        generator = self._generator
        stream = generator.stream(int(time.time()), None, CHUNK_S)
        pending = pl.DataFrame()
        generated_until = 0
        while not self._stop.is_set():
            now_ms = int(time.time() * 1000)
            with self._lock:
                if generator is not self._generator:  # reconfigured: restart the stream from now
                    generator = self._generator
                    stream = generator.stream(now_ms // 1000, None, CHUNK_S)
                    pending, generated_until = pl.DataFrame(), 0
            while generated_until <= now_ms:
                chunk_start, frame = next(stream)
                generated_until = (chunk_start + CHUNK_S) * 1000
                pending = frame if pending.is_empty() else pl.concat([pending, frame], how="diagonal_relaxed")
            if not pending.is_empty():
                due = pending.filter(pl.col("ts") <= now_ms)
                pending = pending.filter(pl.col("ts") > now_ms)
                if due.height:
                    self._emit(in_event_order(to_json_lines(due, generator).to_list()), now_ms)
            if self.publisher is not None:
                self.publisher.flush()  # what a Redis outage held back
            with self._lock:
                if self._file is not None and time.time() - self._file_opened >= self.rotate_seconds:
                    self._publish()
            self._stop.wait(TICK_S)

    def _emit(self, lines: list[str], now_ms: int) -> None:
        day = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).strftime("%Y-%m-%d")
        with self._lock:
            if self._file_path is not None and self._file_path.parent.name != day:
                self._publish()  # files never straddle a daily partition
            if self._file is None:
                stamp = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).strftime("%Y%m%dT%H%M%S%f")
                folder = self.landing_logs / day
                folder.mkdir(parents=True, exist_ok=True)
                self._file_path = folder / f"mock-live-{stamp}.jsonl"
                self._file = open(folder / f".{self._file_path.name}.part", "w", encoding="utf-8")  # noqa: SIM115 (kept open across ticks)
                self._file_opened, self._file_lines = time.time(), 0
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
            self._file_lines += len(lines)
            self.events_emitted += len(lines)
            self.recent.extend(lines)
            # numbered only once the line is in its file: a consumer never sees a line the batch run lacks
            emitted_at = time.time()
            first = self.buffer.offset(self.buffer.head + 1)
            self.buffer.append(lines, emitted_at)
            if self.publisher is not None:
                self.publisher.publish(lines, emitted_at, first)

    def _publish(self) -> None:
        if self._file is None or self._file_path is None:
            return
        self._file.close()
        temporary = self._file_path.with_name(f".{self._file_path.name}.part")
        if self._file_lines:
            os.replace(temporary, self._file_path)
            self.files_published.append(self._file_path)
        else:
            temporary.unlink(missing_ok=True)
        self._file, self._file_path = None, None

    def status(self) -> dict:
        with self._lock:
            return {
                "status": "running" if self.running else "stopped",
                "events_emitted": self.events_emitted,
                "files_published": len(self.files_published),
                "logs_per_second": self.config.log_generation.logs_per_second,
                "anomaly_rate": self.config.global_anomaly_rate,
                "burst_simulation": self.config.log_generation.burst_simulation,
                "enabled_scenarios": [s.id for s in self.config.enabled_scenarios],
                "landing_dir": str(self.landing_logs),
                "stream": self.buffer.status(),
                "redis": self.publisher.status() if self.publisher is not None else None,
            }


def create_app(
    config: MockConfig,
    landing_logs: Path,
    auto_start: bool = False,
    rotate_seconds: int = 60,
    stream_buffer: int = DEFAULT_BUFFER_LINES,
    publisher: RedisPublisher | None = None,
) -> FastAPI:
    emitter = Emitter(
        config, landing_logs, rotate_seconds, buffer=StreamBuffer(stream_buffer), publisher=publisher
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if auto_start:
            emitter.start()
        yield
        emitter.stop()
        if publisher is not None:
            publisher.close()

    app = FastAPI(title="bankanom mock log server", version="1.0", lifespan=lifespan)
    app.state.emitter = emitter

    @app.get("/", summary="Generation status")
    def status() -> dict:
        return emitter.status()

    @app.get("/health", summary="Liveness")
    def health() -> dict:
        return {"status": "healthy"}

    @app.post("/control", summary="Start or stop generation; optionally change rate or anomaly rate")
    def control(body: Control) -> dict:
        emitter.reconfigure(body.logs_per_second, body.anomaly_rate)
        if body.action == "start":
            emitter.start()
        else:
            emitter.stop()
        return {
            "message": f"log generation {'started' if body.action == 'start' else 'stopped'}",
            **emitter.status(),
        }

    @app.get("/logs", summary="The most recent emitted log lines, newest last")
    def logs(limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
        import orjson

        return [orjson.loads(line) for line in list(emitter.recent)[-limit:]]

    @app.get(
        "/stream",
        summary="Emitted lines after an offset, numbered, waiting up to `wait` seconds for the first",
        description=(
            "Offsets are `<epoch>:<seq>` (epoch: this server run). Answers `{epoch, head, head_emitted_at, "
            "next, gap, items: [{offset, emitted_at, line}]}`; send `next` as `after` next time. `gap` is "
            "null unless lines were skipped: `unknown_epoch` (an offset from an earlier server run; "
            "`missed` null) or `behind_buffer` (older than the buffer; `missed` counts them). The landing "
            "files hold every line either way. See docs/live-sources.md."
        ),
    )
    def stream(
        after: str | None = Query(
            None, description="The last offset consumed; omit to start at the oldest held"
        ),
        limit: int = Query(1000, ge=1, le=10_000),
        wait: float = Query(0.0, ge=0, le=30),
    ) -> Response:
        import orjson

        try:
            body = emitter.buffer.read(after, limit, wait)
        except OffsetError as error:
            status = 409 if isinstance(error, OffsetAhead) else 422
            detail = [{"loc": ["query", "after"], "msg": str(error), "type": "offset"}]
            raise HTTPException(status, detail=detail) from None
        return Response(orjson.dumps(body), media_type="application/json")

    return app
