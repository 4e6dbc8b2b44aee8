"""The API bench's load generator (bench/api_bench.py): its paced scenario reports the client's own
event-loop lag beside the latencies, so a stall of the load generator is told apart from the server's."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from api_bench import http_request, paced

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        writer.close()


async def _paced(stall_s: float) -> dict:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def stall():  # the client's own loop blocked, as a full collection of its heap does
        await asyncio.sleep(0.3)
        time.sleep(stall_s)

    async with server:
        stalled = asyncio.create_task(stall())
        result = await paced(f"http://127.0.0.1:{port}", 4, 1.0, 200, http_request("GET", "/"))
        await stalled
    return result


def test_paced_reports_the_clients_own_loop_lag():
    quiet = asyncio.run(_paced(0.0))
    stalled = asyncio.run(_paced(0.08))
    for result in (quiet, stalled):
        assert result["requests"] == 200 and result["errors"] == 0 and result["unsent"] == 0
    # the requests due during the stall are sent late: the client's lag explains the p99, not the server
    assert stalled["client_lag_max_ms"] >= 70
    assert stalled["p99_ms"] >= 50
    assert quiet["client_lag_max_ms"] < stalled["client_lag_max_ms"]
