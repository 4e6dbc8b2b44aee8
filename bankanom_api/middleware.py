"""Pure ASGI middleware in front of every route: the API-key gate and the security headers.

The gate exists because FastAPI reads and parses a request's body before it runs the route's
dependencies: checked in a dependency, a key came too late to spare the server a 200 MB body. Here it
is checked on the headers alone, before anything reads the body. (The body's size is capped by
FastAPI's own ``max_body_size``, which counts the bytes as they stream.)
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bankanom_api.security import API_KEY_HEADER, INGEST, READ, KeyChecker, RateLimiter, unauthorized

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
        self.app, self.keys, self.per_key, self.failures = app, keys, per_key, failures
        self.ingest_keys = ingest_keys
        self.public_paths, self.public_prefix = public_paths, public_prefix

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
        presented = Headers(scope=scope).get(API_KEY_HEADER)
        reader, ingester = self.keys.match(presented), self.ingest_keys.match(presented)
        identity = reader or ingester
        if identity is None:
            self.failures.hit(address)
            raise unauthorized()
        self.per_key.check(identity)
        return identity, frozenset({READ} if reader else ()) | frozenset({INGEST} if ingester else ())


class SecurityHeaders:
    """Adds the security headers to every response; the app's own pages keep a header they set."""

    def __init__(self, app: ASGIApp, docs_paths: frozenset[str]):
        self.app, self.docs_paths = app, docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"] in self.docs_paths else POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in {**HEADERS, "Content-Security-Policy": policy}.items():
                    headers.setdefault(name, value)
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
