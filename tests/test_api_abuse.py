"""The API against abuse: the key is checked before a body is read, bodies are capped on every route,
failed keys are throttled per client address, and every response carries the security headers.

The fast tests use Starlette's TestClient; what only a real server shows (a body that is never read,
a chunked body cut at the cap, the server's memory) runs over uvicorn and raw sockets."""

from __future__ import annotations

import re
import select
import socket
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import HTTPException
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

from bankanom_api import security
from bankanom_api.security import RateLimiter
from tests.api_server import api_client, running_api

KEY = "abuse-key"
H = {"X-API-Key": KEY}
TEMPLATES = Path(__file__).resolve().parent.parent / "bankanom_api" / "console_templates"


def app_for(tmp_path: Path, **settings) -> TestClient:
    return api_client(tmp_path, KEY, **settings)


CAP = 4 * 2**20  # the served API's body cap (BANKANOM_API_MAX_BODY_BYTES), well under the 200 MB sent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real uvicorn server for the module's end-to-end tests: nothing published, a 4 MiB body cap."""
    root = tmp_path_factory.mktemp("abuse-server")
    data = root / "data"
    data.mkdir()
    with running_api(data, KEY, root / "api.log", BANKANOM_API_MAX_BODY_BYTES=str(CAP)) as url:
        yield url


# -- failed keys ----------------------------------------------------------------------------------------


def test_failed_keys_are_throttled_per_client_address_with_retry_after(tmp_path):
    with app_for(tmp_path, auth_failure_limit="5/minute") as client:
        codes = [client.get("/models", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(8)]
        assert codes == [401] * 5 + [429] * 3
        # once over the limit the address is refused whatever it sends: a right guess teaches nothing
        throttled = client.post("/predict", headers=H, json={"events": []})
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert "authentication" in throttled.json()["detail"]
        assert client.get("/health").status_code == 200  # needs no key, so nothing to throttle
    # another address has its own budget (a fresh client from 203.0.113.9 on the same app)
    other = TestClient(client.app, client=("203.0.113.9", 50000))
    assert other.get("/models", headers={"X-API-Key": "guess"}).status_code == 401
    assert other.get("/ready", headers=H).status_code == 503  # authenticated; nothing published yet


def test_a_valid_key_is_not_counted_as_a_failure(tmp_path):
    with app_for(tmp_path, auth_failure_limit="3/minute") as client:
        assert {client.get("/ready", headers=H).status_code for _ in range(10)} == {503}
        assert [client.get("/ready").status_code for _ in range(4)] == [401, 401, 401, 429]


class Clock:
    """``time.monotonic`` for security.py, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_limit_is_a_moving_window_per_identity(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(security.time, "monotonic", clock)
    limiter = RateLimiter("3/minute")
    for step in (0, 10, 20):  # hits at 1000, 1010, 1020
        clock.now = 1000.0 + step
        limiter.check("a")
    assert limiter.over("a") and not limiter.over("b")
    with pytest.raises(HTTPException) as refused:
        limiter.check("a")  # refused, and not counted
    # the oldest hit (1000) leaves the window at 1060: 40 s from 1020
    assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "40"}
    limiter.check("b")  # another identity has its own window
    clock.now = 1059.9
    assert limiter.over("a")
    clock.now = 1060.0  # a hit exactly one window old still counts
    assert limiter.over("a")
    clock.now = 1060.1
    assert not limiter.over("a")  # over() counts nothing: still room for one
    limiter.check("a")
    assert limiter.over("a")
    limiter.hit("a")  # over the limit: not counted either, so the window frees at 1070.0
    clock.now = 1070.05
    limiter.check("a")
    # identities idle for a whole window are forgotten at the next hit after one
    clock.now = 1200.0
    limiter.hit("c")
    assert set(limiter._hits) == {"c"}


def test_a_header_the_app_sets_itself_is_kept_and_sent_once(tmp_path):
    with app_for(tmp_path) as client:
        client.app.add_api_route(
            "/framed", lambda: PlainTextResponse("x", headers={"X-Frame-Options": "SAMEORIGIN"})
        )
        response = client.get("/framed", headers=H)
        assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
        assert response.headers.get_list("x-content-type-options") == ["nosniff"]


# -- body size ------------------------------------------------------------------------------------------


def test_bodies_over_the_cap_are_refused_with_413_on_every_route(tmp_path):
    cap = 100_000
    big = b'{"events": [' + b" " * cap + b"]}"
    with app_for(tmp_path, max_body_bytes=cap) as client:
        for method, path in [
            ("POST", "/predict"),
            ("POST", "/models/predict"),
            ("GET", "/ready"),
            ("POST", "/console/login"),
        ]:
            response = client.request(
                method, path, headers={**H, "content-type": "application/json"}, content=big
            )
            assert response.status_code == 413, (path, response.status_code, response.text[:200])

        # a chunked body (no Content-Length) is counted as it streams
        def chunks():
            for _ in range(20):
                yield b" " * 10_000

        streamed = client.post(
            "/predict", headers={**H, "content-type": "application/json"}, content=chunks()
        )
        assert streamed.status_code == 413
        # under the cap, the route answers as before
        small = client.post("/predict", headers=H, json={"events": []})
        assert small.status_code not in (413, 401, 429)


# -- headers --------------------------------------------------------------------------------------------

HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _policy(response: httpx.Response) -> dict[str, list[str]]:
    directives = [d.strip().split() for d in response.headers["content-security-policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


def test_every_response_carries_the_security_headers(tmp_path):
    with app_for(tmp_path, max_body_bytes=1000) as client:
        responses = {
            "health": client.get("/health"),
            "401": client.get("/models"),
            "404": client.get("/nowhere", headers=H),
            "413": client.post("/predict", headers=H, content=b"x" * 2000),
            "503": client.get("/scores/latest", headers=H),
            "console login": client.get("/console/login"),
            "console css": client.get("/console/static/console.css"),
        }
        client.app.add_api_route("/boom", lambda: 1 / 0)
        responses["500"] = client.get("/boom", headers=H)
        for name, response in responses.items():
            for header, value in HEADERS.items():
                assert response.headers.get(header) == value, (name, header, response.headers)
            policy = _policy(response)
            assert policy["default-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"], name
        assert responses["500"].status_code == 500 and responses["413"].status_code == 413
        page = _policy(responses["console login"])
        # the console's own stylesheet and forms, nothing inline, nothing from elsewhere
        assert page["style-src"] == ["'self'"] and page["form-action"] == ["'self'"]
        assert "script-src" not in page  # no script at all: default-src 'none' applies


def test_the_console_templates_have_nothing_inline_the_policy_would_block():
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"\sstyle\s*=|<style|<script|\son[a-z]+\s*=|javascript:", text), template.name


class _Sources(HTMLParser):
    """The external URLs a page loads, by the policy directive that governs each."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.found.append(("script-src", a["src"]))
        elif tag == "link" and a.get("href"):
            self.found.append(("style-src" if a.get("rel") == "stylesheet" else "img-src", a["href"]))


def test_the_api_docs_pages_may_load_what_they_need(tmp_path):
    """/docs and /redoc load Swagger UI / ReDoc from their CDN with an inline bootstrap script: they get a
    policy of their own that allows those sources (and still no framing)."""
    with app_for(tmp_path) as client:
        for path in ("/docs", "/redoc"):
            response = client.get(path)
            assert response.status_code == 200
            policy = _policy(response)
            assert policy["frame-ancestors"] == ["'none'"] and "'unsafe-inline'" in policy["script-src"]
            sources = _Sources()
            sources.feed(response.text)
            assert sources.found, path
            for directive, url in sources.found:
                assert "https://" + url.split("/")[2] in policy[directive], (path, url, policy)


@pytest.mark.e2e
def test_the_console_renders_under_its_policy_in_chromium(server):
    """The console, logged in, in headless Chromium: no Content-Security-Policy violation reported, the
    stylesheet applied."""
    from playwright.sync_api import sync_playwright

    from tests.test_console import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        messages: list[str] = []
        page.on("console", lambda m: messages.append(m.text))
        page.goto(f"{server}/console/login")
        page.fill("input[name=api_key]", KEY)
        page.click("button[type=submit]")
        page.wait_for_url("**/console/incidents")
        for path in ("/console/incidents", "/console/transactions", "/console/predict", "/console/models"):
            page.goto(server + path)
            header = page.locator("header")
            assert header.evaluate("e => getComputedStyle(e).display") == "flex", path
        browser.close()
    violations = [m for m in messages if "Content Security Policy" in m]
    assert violations == []


# -- over a real server ---------------------------------------------------------------------------------


def _server_process(url: str) -> psutil.Process:
    port = url.rsplit(":", 1)[1]
    for child in psutil.Process().children(recursive=True):
        if port in child.cmdline():
            return child
    raise AssertionError(f"no server process on port {port}")


def _rss(process: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def _post_head(url: str, path: str, headers: dict[str, str]) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _status(sock: socket.socket, timeout: float) -> int | None:
    """The response's status code, or None if none came within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(4096)
    except TimeoutError:
        return None
    return int(head.split(b" ", 2)[1]) if head else None


def _stream(sock: socket.socket, total: int, chunk: int = 1 << 20) -> tuple[int, int | None, float]:
    """Send ``total`` bytes as HTTP chunks, stopping when the server answers or closes; returns the bytes
    sent, the status code and the seconds until the answer."""
    began, sent, status = time.perf_counter(), 0, None
    block = memoryview(f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n")
    offset = 0  # into block: a send may take part of it
    while sent < total:
        readable, _, _ = select.select([sock], [sock], [], 10)
        if readable:
            head = sock.recv(4096)
            status = int(head.split(b" ", 2)[1]) if head else None
            break
        try:
            offset += sock.send(block[offset:])
        except OSError:  # the server answered and closed
            break
        if offset == len(block):
            sent, offset = sent + chunk, 0
    if status is None:
        if sent >= total:
            sock.sendall(b"0\r\n\r\n")
        status = _status(sock, 60)
    return sent, status, time.perf_counter() - began


BODY = 200 * 2**20  # the 200 MB


@pytest.mark.e2e
def test_a_keyless_body_is_refused_before_it_is_read(server):
    """POST /predict without a key announcing 200 MB, or streaming it chunked: 401 at once, with the
    body never read (the client has sent only the headers and a little)."""
    process = _server_process(server)
    before = _rss(process)
    announced = _post_head(server, "/predict", {"Content-Length": str(BODY)})
    announced.sendall(b'{"events": [')
    assert _status(announced, 5) in (401, 413)
    announced.close()
    chunked = _post_head(server, "/predict", {"Transfer-Encoding": "chunked"})
    sent, status, seconds = _stream(chunked, BODY)
    chunked.close()
    grown = _rss(process) - before
    print(
        f"keyless 200 MB: {status} after {seconds:.3f} s, {sent / 2**20:.0f} MiB sent, RSS +{grown / 2**20:.1f} MiB"
    )
    assert status == 401 and seconds < 5 and sent < 32 * 2**20
    assert grown < 32 * 2**20
    assert httpx.get(f"{server}/ready", headers=H).status_code == 503  # still serving


@pytest.mark.e2e
def test_a_streamed_body_with_a_key_is_cut_at_the_cap(server):
    """With a valid key, 200 MB streamed chunked (no Content-Length) to /predict is answered 413 once the
    server has read past BANKANOM_API_MAX_BODY_BYTES; the server's memory grows by about the cap, not
    by the body."""
    process = _server_process(server)
    before = _rss(process)
    sock = _post_head(server, "/predict", {**H, "Transfer-Encoding": "chunked"})
    sent, status, seconds = _stream(sock, BODY)
    sock.close()
    grown = _rss(process) - before
    print(
        f"keyed 200 MB chunked: {status} after {seconds:.3f} s, {sent / 2**20:.0f} MiB sent, RSS +{grown / 2**20:.1f} MiB"
    )
    assert status == 413 and sent < 64 * 2**20
    assert grown < 64 * 2**20
    # and announced with Content-Length: refused before reading
    announced = _post_head(server, "/predict", {**H, "Content-Length": str(BODY)})
    assert _status(announced, 5) == 413
    announced.close()
