"""The API's client of the stream scorer's internal service (``bankanom stream``): the one owner of the
online engine's state. ``POST /events`` is forwarded to its ``/ingest`` and ``POST /predict`` with
context to its ``/peek``, so every API worker reads and feeds the same state and none keeps a copy.

One pooled ``httpx.Client`` per app (keep-alive connections, shared by the thread pool's requests), a
short connect timeout: a stream that is not running answers at once with a refused connection, one
that hangs costs at most ``timeout`` seconds, and either way the route answers 503 naming the URL.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import HTTPException, status

log = logging.getLogger("bankanom_api")

KEY_HEADER = "X-Stream-Key"


class StreamUnavailable(HTTPException):
    """503: the stream's service is not reachable, or answered something the API cannot pass on."""

    def __init__(self, detail: str):
        super().__init__(status.HTTP_503_SERVICE_UNAVAILABLE, detail)


class StreamClient:
    def __init__(self, url: str, key: str | None, timeout: float, connect_timeout: float = 1.0):
        import httpx  # lazy: a heavy import the Dagster code location must not pay for

        self.url = url.rstrip("/")
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=self.url,
            headers={KEY_HEADER: key} if key else {},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def close(self) -> None:
        self._client.close()

    @property
    def down(self) -> str:
        return f"no live stream at {self.url}: start bankanom stream"

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        if self._client.is_closed:  # a request still running as the app stops
            raise StreamUnavailable(
                f"this API process is stopping: the live stream at {self.url} is not asked"
            )
        try:
            response = self._client.request(
                method,
                path,
                content=None if body is None else orjson.dumps(body),
                headers={"content-type": "application/json"} if body is not None else None,
            )
        except self._httpx.TimeoutException:
            raise StreamUnavailable(f"the live stream at {self.url} did not answer in time") from None
        except self._httpx.HTTPError as error:
            log.warning("stream service %s unreachable: %s", self.url, error)
            raise StreamUnavailable(self.down) from None
        if response.status_code in (401, 403):
            raise StreamUnavailable(
                f"the live stream at {self.url} refused this API's key: BANKANOM_STREAM_KEY must be the "
                "stream's"
            )
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = response.text
        return response.status_code, answer

    def ingest(self, events: list[dict]) -> dict:
        """The stream's ``/ingest`` answer: committed to the live store before it returns."""
        code, answer = self._call("POST", "/ingest", {"events": events})
        if code != 200:
            raise self._unexpected("/ingest", code, answer)
        return answer

    def peek(self, events: list[dict]) -> dict:
        """``{"feature_set_version", "columns", "features"}``; the stream's 409 (too late) and 422 (an
        event it refuses) are passed on with their detail."""
        code, answer = self._call("POST", "/peek", {"events": events})
        if code in (409, 422) and isinstance(answer, dict) and "detail" in answer:
            raise HTTPException(code, answer["detail"])
        if code != 200:
            raise self._unexpected("/peek", code, answer)
        return answer

    def status(self) -> dict:
        code, answer = self._call("GET", "/status")
        if code != 200:
            raise self._unexpected("/status", code, answer)
        return answer

    def _unexpected(self, path: str, code: int, answer: Any) -> StreamUnavailable:
        log.error("stream service %s%s answered %d: %.500s", self.url, path, code, answer)
        detail = answer.get("detail") if isinstance(answer, dict) else answer
        return StreamUnavailable(f"the live stream at {self.url} answered {code} to {path}: {detail}")
