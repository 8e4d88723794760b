"""Helpers the network workloads share."""

from __future__ import annotations

import socket


def free_tcp_port() -> int:
    """A TCP port free on the host's loopback now (a server on the host, or in a fresh namespace where every
    port is free, can listen on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
