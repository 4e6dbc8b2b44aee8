"""API keys, and rate limits per key and per client address."""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from fastapi import HTTPException, status
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

API_KEY_HEADER = "X-API-Key"


class KeyChecker:
    """Accepts a request whose X-API-Key is one of the configured keys. Every key is compared, each in
    constant time, so the time taken says nothing about how close a guess was or which key matched."""

    def __init__(self, keys: list[str], setting: str = "BANKANOM_API_KEYS", required: bool = True):
        if required and not keys:
            raise ValueError(f"no API keys configured: set {setting} (comma-separated)")
        self._keys = [k.encode() for k in keys]

    def known_ids(self) -> set[str]:
        """The ids ``identify`` returns, one per configured key (a console session names one)."""
        return {_key_id(key) for key in self._keys}

    def match(self, presented: str | None) -> str | None:
        """A stable, non-secret id of the matching key (for rate limits and logs); None if none matches."""
        candidate = (presented or "").encode()
        matched = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key):
                matched = key
        return None if presented is None or matched is None else _key_id(matched)

    def identify(self, presented: str | None) -> str:
        """``match``, or 401."""
        key_id = self.match(presented)
        if key_id is None:
            raise unauthorized()
        return key_id


def unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=f"missing or invalid API key (header {API_KEY_HEADER})",
        headers={"WWW-Authenticate": "ApiKey"},
    )


def forbidden(what: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=what)


# what a key may do: the JSON API and the console (BANKANOM_API_KEYS), or POST /events, the online
# state's one writer (BANKANOM_INGEST_KEYS); a key in both lists may do both
READ, INGEST = "read", "ingest"


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def key_id(key: str) -> str:
    """A key's stable, non-secret id (the first 12 hex digits of its sha256): what logs, console sessions
    and BANKANOM_ANALYSTS name a key by."""
    return _key_id(key.encode())


class RateLimiter:
    """A moving-window limit per identity (the ``limits`` library, in memory: per server process). The
    API keys, the console's login form and failed API keys per client address each have one."""

    def __init__(self, limit: str, what: str = "rate limit"):
        self.item: RateLimitItem = parse(limit)
        self.what = what
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, identity: str) -> None:
        """Count one hit; 429 when it is over the limit."""
        if not self._limiter.hit(self.item, identity):
            raise self.exceeded(identity)

    def hit(self, identity: str) -> None:
        """Count one hit, refused or not."""
        self._limiter.hit(self.item, identity)

    def over(self, identity: str) -> bool:
        """Whether the next hit would be refused (counts nothing)."""
        return not self._limiter.test(self.item, identity)

    def exceeded(self, identity: str) -> HTTPException:
        stats = self._limiter.get_window_stats(self.item, identity)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{self.what} exceeded ({self.item}); retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
