"""API keys and per-key rate limits."""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from fastapi import HTTPException, Request, status
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

API_KEY_HEADER = "X-API-Key"


class KeyChecker:
    """Accepts a request whose X-API-Key is one of the configured keys. Every key is compared, each in
    constant time, so the time taken says nothing about how close a guess was or which key matched."""

    def __init__(self, keys: list[str]):
        if not keys:
            raise ValueError("no API keys configured: set BANKANOM_API_KEYS (comma-separated)")
        self._keys = [k.encode() for k in keys]

    def known_ids(self) -> set[str]:
        """The ids ``identify`` returns, one per configured key (a console session names one)."""
        return {_key_id(key) for key in self._keys}

    def identify(self, presented: str | None) -> str:
        """A stable, non-secret id of the matching key (for rate limits and logs); 401 otherwise."""
        candidate = (presented or "").encode()
        matched = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key):
                matched = key
        if presented is None or matched is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=f"missing or invalid API key (header {API_KEY_HEADER})",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        return _key_id(matched)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


class RateLimiter:
    """A moving-window limit per API key (the ``limits`` library, in memory: per server process)."""

    def __init__(self, limit: str):
        self.item: RateLimitItem = parse(limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, identity: str) -> None:
        if self._limiter.hit(self.item, identity):
            return
        stats = self._limiter.get_window_stats(self.item, identity)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit exceeded ({self.item}); retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def guard(keys: KeyChecker, limiter: RateLimiter):
    """The dependency every route but /health carries. Async on purpose: it only compares strings and
    counts, and a sync dependency would cost a thread-pool round trip per request."""

    async def dependency(request: Request) -> str:
        identity = keys.identify(request.headers.get(API_KEY_HEADER))
        limiter.check(identity)
        request.state.api_key_id = identity
        return identity

    return dependency
