"""A free TCP port on 127.0.0.1, for local endpoints started by tests and benchmarks."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS just handed out; free unless another process takes it first."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
