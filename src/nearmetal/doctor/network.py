"""Network facts that break CI jobs and tests in pods (seed 001, GitLab runners on Kubernetes): ping
without NET_RAW, and an IPv6-only pod network where servers on 127.0.0.1 fail."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from pathlib import Path

import psutil

from nearmetal.doctor.base import Finding, check

LESSON_PING = (
    "seed 001 (GitLab runners on Kubernetes): ping was unavailable and jobs failed, because pods do not get "
    "the NET_RAW capability nor the network sysctls by default"
)
LESSON_IPV6 = (
    "seed 001 (GitLab runners on Kubernetes): the new runners' pods had mainly IPv6 addresses and their own "
    "network; test suites that ran small web servers on 127.0.0.1 failed, while the old Docker runners used "
    "the host's network"
)
CAP_NET_RAW = 13


def effective_capabilities(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _try_socket(kind: int) -> int | None:
    """None when an ICMP socket of this kind can be opened, else the errno."""
    try:
        sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
    except OSError as exc:
        return exc.errno
    sock.close()
    return None


@check(
    "ping",
    inspects="CapEff in /proc/self/status (CAP_NET_RAW); socket(AF_INET, SOCK_RAW|SOCK_DGRAM, "
    "IPPROTO_ICMP); /proc/sys/net/ipv4/ping_group_range",
    explains=("failure", "network"),
)
def check_ping(proc: Path = Path("/proc")) -> list[Finding]:
    try:
        caps = effective_capabilities((proc / "self" / "status").read_text())
    except OSError:
        caps = 0
    has_net_raw = bool(caps >> CAP_NET_RAW & 1)
    raw = _try_socket(socket.SOCK_RAW)
    dgram = _try_socket(socket.SOCK_DGRAM)
    try:
        group_range = (proc / "sys" / "net" / "ipv4" / "ping_group_range").read_text().split()
    except OSError:
        group_range = []
    evidence = (
        f"CAP_NET_RAW {'present' if has_net_raw else 'absent'} (CapEff {caps:#x}); raw ICMP socket: "
        f"{'ok' if raw is None else errno.errorcode.get(raw, raw)}; unprivileged ICMP socket: "
        f"{'ok' if dgram is None else errno.errorcode.get(dgram, dgram)}; ping_group_range "
        f"{' '.join(group_range) or '?'}"
    )
    if raw is None or dgram is None:
        how = "raw ICMP sockets (NET_RAW)" if raw is None else "unprivileged ICMP sockets (ping_group_range)"
        return [
            Finding("ping", "ok", f"ping can work here through {how}", evidence=evidence, lesson=LESSON_PING)
        ]
    return [
        Finding(
            "ping",
            "warning",
            "ping cannot work here: no NET_RAW capability and this group is outside ping_group_range",
            evidence=evidence,
            fix='Pod: securityContext.sysctls [{name: net.ipv4.ping_group_range, value: "0 2147483647"}] (a '
            "safe sysctl) or capabilities.add: [NET_RAW]; host: sysctl -w net.ipv4.ping_group_range='0 "
            "2147483647'; in tests prefer a TCP connect to the service over ping",
            lesson=LESSON_PING,
        )
    ]


def _can_bind(family: int, address: str) -> int | None:
    try:
        with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
            sock.bind((address, 0))
            sock.listen(1)
            port = sock.getsockname()[1]
            with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as client:
                client.settimeout(2)
                client.connect((address, port))
    except OSError as exc:
        return exc.errno or -1
    return None


def _global_addresses() -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for name, addrs in psutil.net_if_addrs().items():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(addr.address.split("%")[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local:
                continue
            (v4 if ip.version == 4 else v6).append(f"{name} {ip}")
    return v4, v6


def _localhost_families() -> list[str]:
    try:
        infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return [str(info[4][0]) for info in infos]


@check(
    "ipv6-only",
    inspects="bind+connect on 127.0.0.1 and ::1; interface addresses (netlink via psutil); "
    "getaddrinfo('localhost')",
    explains=("failure", "network"),
)
def check_ipv6_only() -> list[Finding]:
    v4_loop = _can_bind(socket.AF_INET, "127.0.0.1")
    v6_loop = _can_bind(socket.AF_INET6, "::1") if socket.has_ipv6 else errno.EAFNOSUPPORT
    v4, v6 = _global_addresses()
    localhost = _localhost_families()
    evidence = (
        f"127.0.0.1: {'ok' if v4_loop is None else errno.errorcode.get(v4_loop, v4_loop)}; ::1: "
        f"{'ok' if v6_loop is None else errno.errorcode.get(v6_loop, v6_loop)}; global IPv4: "
        f"{', '.join(v4) or 'none'}; global IPv6: {', '.join(v6) or 'none'}; localhost → "
        f"{', '.join(localhost) or 'unresolved'}"
    )
    if v4_loop is not None:
        return [
            Finding(
                "ipv6-only",
                "critical",
                "servers on 127.0.0.1 fail here: the IPv4 loopback address cannot be bound or reached",
                evidence=evidence,
                fix="bind test servers to 'localhost' or '::1' (or '::' with dual stack) and let clients resolve "
                "localhost; or add the address: ip addr add 127.0.0.1/8 dev lo",
                lesson=LESSON_IPV6,
            )
        ]
    if v6 and not v4:
        return [
            Finding(
                "ipv6-only",
                "warning",
                "IPv6-only network: IPv4 literals and IPv4-only clients cannot reach anything off this host",
                evidence=evidence,
                fix="use host names, not IPv4 literals; make servers listen on '::' (dual stack); a client "
                "that resolves localhost to ::1 does not reach a server bound only to 127.0.0.1",
                lesson=LESSON_IPV6,
            )
        ]
    return [
        Finding(
            "ipv6-only",
            "ok",
            "IPv4 loopback works" + (" and the host has IPv4 addresses" if v4 else ""),
            evidence=evidence,
            lesson=LESSON_IPV6,
        )
    ]
