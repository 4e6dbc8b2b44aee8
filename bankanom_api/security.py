"""API keys, and rate limits per key and per client address."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import deque

from fastapi import HTTPException, status
from limits import RateLimitItem, parse

API_KEY_HEADER = "X-API-Key"


class KeyChecker:
    """Accepts a request whose X-API-Key is one of the configured keys. Every key is compared, each in
    constant time, so the time taken says nothing about how close a guess was or which key matched."""

    def __init__(self, keys: list[str], setting: str = "BANKANOM_API_KEYS", required: bool = True):
        if required and not keys:
            raise ValueError(f"no API keys configured: set {setting} (comma-separated)")
        # each key with its id, hashed once here rather than on every request
        self.keys: list[tuple[bytes, str]] = [(k.encode(), _key_id(k.encode())) for k in keys]

    def known_ids(self) -> set[str]:
        """The ids ``identify`` returns, one per configured key (a console session names one)."""
        return {identity for _, identity in self.keys}

    def match(self, presented: str | None) -> str | None:
        """A stable, non-secret id of the matching key (for rate limits and logs); None if none matches."""
        return None if presented is None else matching(presented.encode(), self.keys)

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


def matching(candidate: bytes, keys: list[tuple[bytes, str]]) -> str | None:
    """The id of the key ``candidate`` is, comparing it with every key in constant time (the time taken
    does not depend on which key matched, or how close a guess came)."""
    matched = None
    for key, identity in keys:
        if hmac.compare_digest(candidate, key):
            matched = identity
    return matched


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def key_id(key: str) -> str:
    """A key's stable, non-secret id (the first 12 hex digits of its sha256): what logs, console sessions
    and BANKANOM_ANALYSTS name a key by."""
    return _key_id(key.encode())


class RateLimiter:
    """A moving-window limit per identity, in memory (per server process): at most ``limit``'s amount of
    hits within any window of its length. The API keys, the console's login form and failed API keys per
    client address each have one. ``limits`` parses the limit ("1000/second"); the window is counted
    here, a deque of hit times per identity, because ``limits``' in-memory storage started a timer thread
    to expire entries on most calls (5% of a one-event /predict's CPU) and locked per key."""

    def __init__(self, limit: str, what: str = "rate limit"):
        self.item: RateLimitItem = parse(limit)
        self.what = what
        self._amount, self._seconds = self.item.amount, float(self.item.get_expiry())
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # the console's routes run in the thread pool
        self._swept = time.monotonic()

    def _window(self, identity: str, now: float) -> deque[float]:
        """The identity's hits within the window ending ``now``, oldest first (under the lock)."""
        hits = self._hits.get(identity)
        if hits is None:
            hits = self._hits[identity] = deque()
        start = now - self._seconds
        while hits and hits[0] < start:
            hits.popleft()
        return hits

    def _acquire(self, identity: str) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._swept > self._seconds:  # forget identities idle for a whole window
                self._swept = now
                self._hits = {i: h for i, h in self._hits.items() if h and h[-1] >= now - self._seconds}
            hits = self._window(identity, now)
            if len(hits) >= self._amount:
                return False
            hits.append(now)
            return True

    def check(self, identity: str) -> None:
        """Count one hit; 429 when it is over the limit (a refused hit is not counted)."""
        if not self._acquire(identity):
            raise self.exceeded(identity)

    def hit(self, identity: str) -> None:
        """Count one hit unless the window is full already."""
        self._acquire(identity)

    def over(self, identity: str) -> bool:
        """Whether the next hit would be refused (counts nothing)."""
        if identity not in self._hits:  # the usual case of the failure limit: never failed
            return False
        with self._lock:
            return len(self._window(identity, time.monotonic())) >= self._amount

    def exceeded(self, identity: str) -> HTTPException:
        with self._lock:
            now = time.monotonic()
            hits = self._window(identity, now)
            reset = (hits[0] if hits else now) + self._seconds
        retry_after = max(1, math.ceil(reset - now))
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{self.what} exceeded ({self.item}); retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
