"""uvicorn's httptools HTTP/1.1 protocol with a response's writes sent together, for the API and the live
stream (``bankanom api``, ``bankanom stream``: ``uvicorn.Config(http=CoalescingHttpToolsProtocol)``).

uvicorn writes a response's head and its body to the socket separately, so each answer is two send
calls and can wake the peer (the load generator, the API awaiting ``/peek``) twice. Writes made during
one pass of the event loop are kept and sent as one at the end of it. On the two virtual cores the
benchmark runs on every wake-up costs both processes CPU: one fewer per answer leaves the API's single
event-loop thread more room at 300 requests a second, where its queue sets the paced p99.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """A transport whose ``write`` calls within one event-loop pass reach the socket as one; everything
    else is the real transport's. ``close`` sends what is kept first (as a transport does with its
    buffer); ``abort`` drops it."""

    __slots__ = ("_kept", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._kept: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._kept:
            self._loop.call_soon(self._send)
        self._kept.append(data)

    def writelines(self, chunks) -> None:
        for data in chunks:
            self.write(data)

    def _send(self) -> None:
        if not self._kept:
            return
        data = b"".join(self._kept) if len(self._kept) > 1 else self._kept[0]
        self._kept.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self._send()
        self._transport.write_eof()

    def close(self) -> None:
        self._send()
        self._transport.close()

    def abort(self) -> None:
        self._kept.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._kept))

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))
