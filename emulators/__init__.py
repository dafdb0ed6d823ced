"""Local stand-ins for Google Cloud services, run as real subprocesses on 127.0.0.1."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free right now on 127.0.0.1 (another process may still take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
