"""Pure ASGI middleware in front of every route: the API-key gate and the security headers.

The gate exists because FastAPI reads and parses a request's body before it runs the route's
dependencies: checked in a dependency, a key came too late to spare the server a 200 MB body. Here it
is checked on the headers alone, before anything reads the body. (The body's size is capped by
FastAPI's own ``max_body_size``, which counts the bytes as they stream.)
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bankanom_api.security import (
    API_KEY_HEADER,
    INGEST,
    READ,
    KeyChecker,
    RateLimiter,
    matching,
    unauthorized,
)

# Nothing inline and nothing from elsewhere: the console is server-rendered HTML with one stylesheet
# of its own and no script; a JSON answer needs nothing at all.
POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# /docs and /redoc are FastAPI's pages: Swagger UI and ReDoc from their CDN, started by an inline script
DOCS_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class KeyGate:
    """Requests to any path but the public ones need a valid ``X-API-Key``, checked before the body is
    read. Failed checks are counted per client address: over ``failures``' limit, that address gets 429
    for every request needing a key, a right one included (or a guess that hits would still get through).
    A valid key then counts against its own rate limit, also before the body is read."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyChecker,
        ingest_keys: KeyChecker,
        per_key: RateLimiter,
        failures: RateLimiter,
        public_paths: frozenset[str],
        public_prefix: str,
    ):
        self.app, self.per_key, self.failures = app, per_key, failures
        self.keys, self.ingest_keys = keys.keys, ingest_keys.keys
        self.public_paths, self.public_prefix = public_paths, public_prefix
        self.header = API_KEY_HEADER.lower().encode()  # ASGI servers give header names in lower case

    def public(self, path: str) -> bool:
        prefix = self.public_prefix
        return path in self.public_paths or path == prefix or path.startswith(prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            identity, scopes = self.authenticate(scope)
        except HTTPException as refused:
            answer = JSONResponse({"detail": refused.detail}, refused.status_code, headers=refused.headers)
            await answer(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["api_key_id"], state["api_key_scopes"] = identity, scopes  # request.state.api_key_*
        await self.app(scope, receive, send)

    def authenticate(self, scope: Scope) -> tuple[str, frozenset[str]]:
        """The key's id and what it may do (``security.READ``, ``security.INGEST``); the routes check
        the scope they need."""
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if self.failures.over(address):
            raise self.failures.exceeded(address)
        presented = next((value for name, value in scope["headers"] if name == self.header), None)
        # the header's text, as Starlette's Headers reads it (latin-1), compared as the keys are stored
        candidate = b"" if presented is None else presented.decode("latin-1").encode()
        reader, ingester = matching(candidate, self.keys), matching(candidate, self.ingest_keys)
        identity = None if presented is None else reader or ingester
        if identity is None:
            self.failures.hit(address)
            raise unauthorized()
        self.per_key.check(identity)
        return identity, frozenset({READ} if reader else ()) | frozenset({INGEST} if ingester else ())


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class SecurityHeaders:
    """Adds the security headers to every response; the app's own pages keep a header they set."""

    def __init__(self, app: ASGIApp, docs_paths: frozenset[str]):
        self.app, self.docs_paths = app, docs_paths
        # encoded once: the headers of an answer, and of FastAPI's documentation pages
        self.headers = _raw({**HEADERS, "Content-Security-Policy": POLICY})
        self.docs_headers = _raw({**HEADERS, "Content-Security-Policy": DOCS_POLICY})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.docs_headers if scope["path"] in self.docs_paths else self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message["headers"] = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in added if header[0] not in present)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def docs_paths(app: FastAPI) -> frozenset[str]:
    """FastAPI's documentation pages (they get ``DOCS_POLICY``)."""
    return frozenset(p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p)


class HardenedFastAPI(FastAPI):
    """FastAPI with ``SecurityHeaders`` outside its whole middleware stack, so that the answers sent
    from outside the user middleware (a 500 from the error handler, a 413 of the body limit) carry the
    headers too."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), docs_paths(self))
