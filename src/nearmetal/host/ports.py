"""Free loopback ports, for the network workloads' servers and the user-mode network layers' forwards."""

from __future__ import annotations

import socket


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    """A TCP port free on the host's loopback now (a server on the host, or in a fresh namespace where every
    port is free, can listen on it)."""
    return _free_port(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A UDP port free on the host's loopback now."""
    return _free_port(socket.SOCK_DGRAM)
