"""A free loopback port for a server this process starts (the simulated analyst's API, tests, benchmarks)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
