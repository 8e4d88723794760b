"""Network namespaces, links and user-mode network stacks on this host, by iproute2 argv.

Small functions with one job each, shared by the network layers (``layers/netns.py``, ``layers/usernet.py``)
and by anything else that needs a few namespaces joined by links (issue 13's "clusters"). Every call runs
``ip``/``bridge``/``tc`` from an argv list with a timeout; failures raise :class:`HostNetError` with the
command and its stderr. Only namespaces nearmetal creates are changed, plus loopback.

Names: a namespace's name is a file name under ``/run/netns`` and may be long, so it carries the full
``nearmetal-<run>-<trial>-…`` host name. An interface name is limited to 15 characters (IFNAMSIZ), so links
get a short name (``nm`` + a digest of the host name + a role letter) and their ``ifalias`` holds the full
host name, which is what ``nearmetal cleanup`` matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd
from nearmetal.host.mountinfo import unmount_below
from nearmetal.host.procstat import read_stat

NETNS_DIR = Path("/run/netns")
IFNAMSIZ = 15
IP_TIMEOUT_S = 20.0


class HostNetError(NearmetalError):
    """An ip/tc/bridge command failed; the message names the command and what it printed."""


def _run(argv: list[str], timeout: float = IP_TIMEOUT_S, check: bool = True) -> str:
    """stdout of an iproute2 command; with ``check``, a failure is an error naming the command."""
    proc = hostcmd.run(
        argv, timeout, check=check, error=HostNetError, install_fix="apt-get install -y iproute2"
    )
    return proc.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """``ip [-n NETNS] ARGS…``; returns stdout."""
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return _run([*prefix, *args], check=check)


def ip_json(*args: str, netns: str | None = None, timeout: float = 10) -> list[dict[str, Any]]:
    """``ip [-n NETNS] -j ARGS…`` parsed; [] when ip is missing, fails to answer in time or prints no JSON
    list (evidence for a check, never a reason to fail)."""
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    out = hostcmd.output([*prefix, "-j", *args], timeout)
    try:
        found = json.loads(out or "[]")
    except json.JSONDecodeError:
        return []
    return found if isinstance(found, list) else []


def short_ifname(host_name: str, role: str) -> str:
    """A ≤15-character interface name that still tells runs apart: ``nm`` + 10 hex digits of the host
    name's digest + a role tag (``s``, ``c``, ``x``…)."""
    digest = hashlib.sha256(host_name.encode()).hexdigest()[:10]
    name = f"nm{digest}{role}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface role tag {role!r} is too long for IFNAMSIZ")
    return name


# --- namespaces --------------------------------------------------------------------------------------


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_netns(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def add_netns(name: str, loopback_up: bool = True) -> None:
    """Create a named network namespace (the first one bind-mounts /run/netns) with loopback up."""
    from nearmetal.host.userns import in_user_namespace

    if in_user_namespace():
        # a rootless trial (nearmetal.host.userns): `ip netns add` would switch back to the host's network
        # namespace afterwards, which a user namespace's root may not (setns: EPERM); util-linux binds the new
        # namespace to the file without leaving this one
        path = NETNS_DIR / name
        path.touch(exist_ok=False)
        try:
            _run(["unshare", f"--net={path}", "true"])
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    else:
        ip("netns", "add", name)
    if loopback_up:
        try:
            ip("link", "set", "lo", "up", netns=name)
        except BaseException:
            # the caller records the namespace only once this returns: a half-made one is removed here,
            # or nothing would tear it down (found by tests/integration/test_exit_paths.py's setup faults)
            delete_netns(name)
            raise


def delete_netns(name: str) -> None:
    """Remove a namespace; its links go with it (a veth's peer too). Idempotent."""
    if netns_exists(name):
        ip("netns", "delete", name, check=False)
    if netns_exists(name):  # a stale mount point left by a killed `ip netns add`
        with contextlib.suppress(OSError):
            unmount_below(NETNS_DIR / name)
            (NETNS_DIR / name).unlink()


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is this one (``ip netns pids``)."""
    out = ip("netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def netns_exec_argv(name: str) -> list[str]:
    """The argv prefix that runs a program in a namespace (``ip netns exec`` execs it: same pid)."""
    return ["ip", "netns", "exec", name]


# --- links -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    ifname: str
    alias: str
    kind: str
    netns: str | None


def set_sysctl(netns: str, key: str, value: str) -> None:
    """Write a per-namespace sysctl (``net.ipv4.tcp_wmem``…) inside a named network namespace."""
    _run([*netns_exec_argv(netns), "sysctl", "-q", "-w", f"{key}={value}"])


def add_veth_pair(
    name_a: str, netns_a: str, name_b: str, netns_b: str, alias: str, mtu: int | None = None
) -> None:
    """A veth pair created directly inside two namespaces (never visible in the host namespace)."""
    mtu_args = ["mtu", str(mtu)] if mtu else []
    ip(
        "link", "add", name_a, "netns", netns_a, *mtu_args,
        "type", "veth", "peer", "name", name_b, "netns", netns_b, *mtu_args,
    )  # fmt: skip
    ip("link", "set", name_a, "alias", alias, netns=netns_a)
    ip("link", "set", name_b, "alias", alias, netns=netns_b)


def add_address(netns: str | None, ifname: str, cidr: str) -> None:
    ip("addr", "add", cidr, "dev", ifname, netns=netns)


def link_up(netns: str | None, ifname: str) -> None:
    ip("link", "set", ifname, "up", netns=netns)


def set_mtu(netns: str | None, ifname: str, mtu: int) -> None:
    ip("link", "set", ifname, "mtu", str(mtu), netns=netns)


def delete_link(netns: str | None, ifname: str) -> None:
    ip("link", "delete", ifname, netns=netns, check=False)


def list_links(netns: str | None = None) -> list[Link]:
    out = ip("-j", "-d", "link", "show", netns=netns, check=False)
    try:
        rows = json.loads(out or "[]")
    except json.JSONDecodeError:
        return []
    return [
        Link(
            row.get("ifname", ""),
            row.get("ifalias", ""),
            (row.get("linkinfo") or {}).get("info_kind", ""),
            netns,
        )
        for row in rows
    ]


def link_stats(netns: str | None, ifname: str) -> dict[str, int]:
    """rx/tx bytes and packets of an interface."""
    out = ip("-j", "-s", "link", "show", ifname, netns=netns)
    row = json.loads(out)[0]
    stats = row.get("stats64") or row.get("stats") or {}
    rx, tx = stats.get("rx", {}), stats.get("tx", {})
    return {
        "rx_bytes": int(rx.get("bytes", 0)),
        "rx_packets": int(rx.get("packets", 0)),
        "tx_bytes": int(tx.get("bytes", 0)),
        "tx_packets": int(tx.get("packets", 0)),
    }


def add_netem(
    netns: str | None, ifname: str, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0
) -> None:
    """``tc qdisc add … netem``: delay (with jitter) and loss on packets leaving the interface."""
    args = ["tc"] + (["-n", netns] if netns else []) + ["qdisc", "add", "dev", ifname, "root", "netem"]
    if delay_ms or jitter_ms:
        args += ["delay", f"{delay_ms:g}ms"] + ([f"{jitter_ms:g}ms"] if jitter_ms else [])
    if loss_pct:
        args += ["loss", f"{loss_pct:g}%"]
    _run_netem(args)


def _run_netem(args: list[str]) -> None:
    try:
        _run(args)
    except HostNetError as exc:
        if "qdisc kind is unknown" in exc.message:
            raise HostNetError(
                "this kernel has no netem qdisc (sch_netem), so delay/jitter/loss cannot be added",
                fix="modprobe sch_netem (package linux-modules-extra / the distribution kernel), or drop "
                "delay_ms, jitter_ms and loss_pct from the layer (netns, clusters) or the netem fault",
            ) from None
        raise


def link_down(netns: str | None, ifname: str) -> None:
    ip("link", "set", ifname, "down", netns=netns)


def root_qdisc(netns: str | None, ifname: str) -> dict[str, Any]:
    """The root qdisc of an interface as ``tc -j`` reports it ({} when it cannot be read)."""
    args = ["tc", "-j"] + (["-n", netns] if netns else []) + ["qdisc", "show", "dev", ifname, "root"]
    try:
        rows = json.loads(_run(args, check=False) or "[]")
    except json.JSONDecodeError:
        return {}
    return next((row for row in rows if row.get("root")), rows[0] if rows else {})


def replace_netem(
    netns: str | None, ifname: str, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0
) -> None:
    """``tc qdisc replace … root netem``: set (or change) delay/jitter/loss on a live interface."""
    args = ["tc"] + (["-n", netns] if netns else []) + ["qdisc", "replace", "dev", ifname, "root", "netem"]
    if delay_ms or jitter_ms:
        args += ["delay", f"{delay_ms:g}ms"] + ([f"{jitter_ms:g}ms"] if jitter_ms else [])
    if loss_pct:
        args += ["loss", f"{loss_pct:g}%"]
    _run_netem(args)


def delete_root_qdisc(netns: str | None, ifname: str) -> None:
    """Back to the interface's default qdisc. Idempotent."""
    args = ["tc"] + (["-n", netns] if netns else []) + ["qdisc", "del", "dev", ifname, "root"]
    _run(args, check=False)


def add_vxlan(
    netns: str,
    ifname: str,
    vni: int,
    underlay: str,
    listen_port: int,
    remote: str,
    remote_port: int,
    alias: str,
    mtu: int | None = None,
) -> None:
    """A VXLAN device that sends every frame to ``remote:remote_port`` (one static FDB entry, no learning)
    and listens on ``listen_port``: an overlay whose UDP can cross a user-mode stack's port forwarding,
    the way flannel's VXLAN crosses slirp4netns/pasta in Usernetes."""
    ip(
        "link", "add", ifname, "type", "vxlan", "id", str(vni), "dstport", str(listen_port),
        "dev", underlay, "nolearning", netns=netns,
    )  # fmt: skip
    _run(
        ["bridge", "-n", netns, "fdb", "append", "00:00:00:00:00:00", "dev", ifname,
         "dst", remote, "port", str(remote_port)]
    )  # fmt: skip
    ip("link", "set", ifname, "alias", alias, netns=netns)
    if mtu:
        set_mtu(netns, ifname, mtu)


def wait_until_up(netns: str | None, ifname: str, timeout_s: float = 10.0) -> None:
    """Wait until a link's operational state is UP (a veth end is up only once its peer is, a moment after
    ``ip link set up``; a program that lists usable interfaces before then, like UCX, skips it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = ip("-j", "link", "show", "dev", ifname, netns=netns, check=False)
        with contextlib.suppress(json.JSONDecodeError, IndexError, KeyError):
            row = json.loads(out or "[]")[0]
            if row.get("operstate") == "UP" or (
                row.get("operstate") == "UNKNOWN" and "LOWER_UP" in row.get("flags", [])
            ):
                return
        time.sleep(0.01)
    raise HostNetError(f"{ifname} in namespace {netns} did not come up within {timeout_s:g}s")


def wait_for_address(netns: str, ifname: str, timeout_s: float = 10.0) -> str:
    """Wait until an interface in a namespace has an IPv4 address (a user-mode stack configured it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = ip("-j", "-4", "addr", "show", "dev", ifname, netns=netns, check=False)
        with contextlib.suppress(json.JSONDecodeError, IndexError, KeyError):
            infos = json.loads(out or "[]")[0]["addr_info"]
            if infos:
                return str(infos[0]["local"])
        time.sleep(0.02)
    raise HostNetError(f"{ifname} in namespace {netns} got no address within {timeout_s:g}s")


# --- processes (user-mode stacks) ---------------------------------------------------------------------


def api_socket_path(netns: str) -> Path:
    """Where a user-mode stack serving ``netns`` keeps its control socket: a short name under /run, since a
    Unix socket path must fit sockaddr_un (108 bytes)."""
    from nearmetal.host.userns import in_user_namespace

    # a rootless trial (nearmetal.host.userns) cannot write /run; its /run/netns is a tmpfs of its own
    base = NETNS_DIR if in_user_namespace() else Path("/run")
    return base / f"{short_ifname(netns, 'a')}.sock"


def processes_with(needle: str, programs: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process whose command line contains ``needle`` (and, when given, whose
    argv[0] ends with one of ``programs``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not raw:
            continue
        argv = raw.rstrip(b"\0").split(b"\0")
        cmdline = " ".join(a.decode(errors="replace") for a in argv)
        if needle not in cmdline:
            continue
        if programs and not os.path.basename(argv[0].decode(errors="replace")).startswith(programs):
            continue
        found.append((int(entry.name), cmdline))
    return found


def stop_pid(pid: int, grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after the grace period; reaps it when it is our child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if _is_zombie(pid):
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _is_zombie(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is not None and stat.state == "Z"
