"""The API's settings, from environment variables (read once, when the app is built)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bankanom_pipeline import settings as pipeline_settings


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@dataclass(frozen=True)
class ApiSettings:
    api_keys: list[str]  # BANKANOM_API_KEYS, comma-separated; required
    models_dir: Path = field(default_factory=pipeline_settings.models_dir)
    snapshots_dir: Path = field(default_factory=pipeline_settings.snapshots_dir)
    # per API key, `limits` notation ("20/second", "1000/minute"): one client scoring single events in a
    # closed loop reaches a few hundred requests a second, which the default lets through
    rate_limit: str = "1000/second"
    # BANKANOM_INGEST_KEYS, comma-separated: the only keys POST /events (the online state's writer) accepts;
    # none: ingestion is closed
    ingest_keys: list[str] = field(default_factory=list)
    # the stream scorer (bankanom stream): its internal service, which owns the online state (POST /events
    # and /predict with context are forwarded to it), and its live store, read here read-only
    stream_url: str = field(default_factory=pipeline_settings.stream_url)
    stream_key: str | None = field(default_factory=pipeline_settings.stream_key)
    # seconds a forwarded request may take (an ingest of a full batch is scored and committed first); the
    # connection itself gets one second: a stream that is not running refuses it at once
    stream_timeout_s: float = 10.0
    live_dir: Path = field(default_factory=pipeline_settings.live_dir)
    max_batch: int = 10_000  # events per POST /predict; more is refused with 413
    # bytes of any request body (counted as it streams, Content-Length or not); more is refused with 413
    max_body_bytes: int = 16 * 2**20
    # failed API-key checks per client address; over it, every request needing a key gets 429
    auth_failure_limit: str = "20/minute"
    reload_seconds: float = 1.0  # how often the pointers to models and snapshots are checked
    cors_origins: list[str] = field(default_factory=list)  # none: CORS closed
    # the analyst console (/console)
    feedback_db: Path = field(default_factory=pipeline_settings.feedback_path)
    alerts_db: Path = field(default_factory=pipeline_settings.alerts_path)
    console_secret: str = ""  # signs session cookies; empty: derived from the API keys
    login_rate_limit: str = "10/minute"  # console login attempts per client address

    @classmethod
    def from_env(cls) -> ApiSettings:
        env = os.environ
        return cls(
            api_keys=_list(env.get("BANKANOM_API_KEYS")),
            rate_limit=env.get("BANKANOM_API_RATE_LIMIT", cls.rate_limit),
            ingest_keys=_list(env.get("BANKANOM_INGEST_KEYS")),
            stream_timeout_s=float(env.get("BANKANOM_STREAM_TIMEOUT_S", cls.stream_timeout_s)),
            max_batch=int(env.get("BANKANOM_API_MAX_BATCH", cls.max_batch)),
            max_body_bytes=int(env.get("BANKANOM_API_MAX_BODY_BYTES", cls.max_body_bytes)),
            auth_failure_limit=env.get("BANKANOM_API_AUTH_FAILURE_LIMIT", cls.auth_failure_limit),
            reload_seconds=float(env.get("BANKANOM_API_RELOAD_SECONDS", cls.reload_seconds)),
            cors_origins=_list(env.get("BANKANOM_API_CORS_ORIGINS")),
            console_secret=env.get("BANKANOM_CONSOLE_SECRET", ""),
            login_rate_limit=env.get("BANKANOM_CONSOLE_LOGIN_LIMIT", cls.login_rate_limit),
        )
