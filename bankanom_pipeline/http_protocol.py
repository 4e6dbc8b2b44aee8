"""uvicorn's httptools HTTP/1.1 protocol sending an answer's head with its body, for the API and the live
stream (``bankanom api``, ``bankanom stream``: ``uvicorn.Config(http=CoalescingHttpToolsProtocol)``).

uvicorn writes a response's head and its body to the socket separately, so each answer is two send
calls and can wake the peer (the load generator, the API awaiting ``/peek``) twice. Here the head waits
for the body's first write and leaves with it, at once: an answer is not held back to the end of the
event loop's pass (under a backlog that pass runs every queued request's work first). On the two
virtual cores the benchmark runs on, every wake-up costs both processes CPU: one fewer per answer leaves
the API's single event-loop thread more room at 300 requests a second, where its queue sets the paced
p99.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """A transport that sends an answer's head with the write that follows it (the body, or its first
    part) instead of on its own; everything else is the real transport's. The head is not held past the
    event loop's current pass (an answer whose body comes later, a stream of parts), nor past ``close``;
    every other write goes out at once, after anything held, in order. ``abort`` drops what is held."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data.startswith(b"HTTP/1.1 "):  # uvicorn writes an answer's head in one piece
            self._held = data
            self._loop.call_soon(self._send)
            return
        if data:
            self._transport.write(data)

    def writelines(self, chunks) -> None:
        for data in chunks:
            self.write(data)

    def _send(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(data)

    def write_eof(self) -> None:
        self._send()
        self._transport.write_eof()

    def close(self) -> None:
        self._send()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))
