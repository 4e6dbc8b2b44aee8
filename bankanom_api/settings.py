"""The API's settings, from environment variables (read once, when the app is built)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bankanom_pipeline import settings as pipeline_settings


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


_NAME = re.compile(r"[A-Za-z0-9 ._@-]{1,64}")
_KEY_ID = re.compile(r"[0-9a-f]{12}")
ANALYSTS_HELP = (
    "BANKANOM_ANALYSTS is comma-separated name=key_id pairs (a key's id: `bankanom key-id`, the key on stdin)"
)


def parse_analysts(value: str | None) -> dict[str, str]:
    """BANKANOM_ANALYSTS (``name=key_id,...``) as {key_id: name}; ValueError saying what is wrong. A
    name is 1-64 of letters, digits, space and ``._@-``; a key id is a key's 12 hex digits
    (``security.key_id``), never the key itself; a key maps to one person only (a person may have
    several keys)."""
    analysts: dict[str, str] = {}
    for pair in _list(value):
        name, sep, key_id = (part.strip() for part in pair.rpartition("="))
        if not sep or not name:
            raise ValueError(f"{ANALYSTS_HELP}: {pair!r} is not name=key_id")
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{ANALYSTS_HELP}: the name {name!r} must be 1-64 letters, digits, spaces or ._@-"
            )
        if not _KEY_ID.fullmatch(key_id):
            raise ValueError(
                f"{ANALYSTS_HELP}: {key_id!r} (for {name!r}) is not a key id, 12 lower-case hex digits"
            )
        if analysts.get(key_id, name) != name:
            raise ValueError(
                f"{ANALYSTS_HELP}: key id {key_id} is mapped to both {analysts[key_id]!r} and {name!r}"
            )
        analysts[key_id] = name
    return analysts


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
    # BANKANOM_ANALYSTS: {key id: the person}; only a key mapped to a person may give feedback
    analysts: dict[str, str] = field(default_factory=dict)

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
            analysts=parse_analysts(env.get("BANKANOM_ANALYSTS")),
        )
