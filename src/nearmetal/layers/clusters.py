"""N "clusters" of service replicas behind a load balancer, on one host: seed 001's active-active pair
(Cilium Cluster Mesh: one global service, pods in two clusters answering "Hello from Cluster 00x").

Every cluster is a network namespace with its replicas (the built-in ``nearmetal.tools.httpserver`` or
nginx), joined to the load balancer's namespace by a veth pair of its own; the load balancer (HAProxy, or
nginx) spreads requests over every replica of every cluster, with or without health checks; the trial's
processes (the measured client) run in a third namespace behind another veth pair. Addresses come from the
benchmarking range 198.18.0.0/15: client link 198.18.0.0/30 (balancer .1, client .2), cluster *i*'s link
198.18.i.0/30 (balancer .1, cluster .2; replica *j* listens on port 8081 + j). ``ctx.endpoints["service_url"]``
tells the workload where the service is. ``delay_ms`` puts netem delay on a cluster's link (a remote cluster).

Fault targets registered in ``ctx.targets``: ``cluster:<c>`` (all replicas of a cluster: kill, pause,
scale to zero and back), ``backend:<c>-<j>`` (one replica), ``lb``, ``link:<c>`` and ``link:client``. The
balancer's stderr is read line by line and stamped with the time, so its view (a server marked DOWN by its
health checks) lands in the events table beside the faults.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from nearmetal.errors import PrivilegeError
from nearmetal.host import hostnet
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.layers.targets import FaultTarget, ManagedProcess
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec, Requirement

LB_PORT = 8080
BACKEND_PORT = 8081
CLIENT_LB_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
NAME_PATTERN = r"^[a-z][a-z0-9]{0,7}$"
# HAProxy (-db) and nginx (error_log stderr) say when a server changes state
LB_STATE_PATTERNS = (
    (re.compile(r"Server \S+/(?P<server>\S+) is DOWN"), "lb-server-down"),
    (re.compile(r"Server \S+/(?P<server>\S+) is UP"), "lb-server-up"),
    (
        re.compile(r"upstream server temporarily disabled.*upstream: \"http://(?P<server>[0-9.:]+)"),
        "lb-server-down",
    ),
)


class ClustersConfig(LayerConfig):
    layer: Literal["clusters"] = "clusters"
    clusters: list[str] = Field(
        default_factory=lambda: ["c1", "c2"],
        min_length=1,
        max_length=8,
        description="cluster names (fault targets cluster:<name>, link:<name>)",
    )
    replicas: int = Field(1, ge=1, le=8, description="service replicas per cluster")
    server: Literal["builtin", "nginx"] = Field(
        "builtin", description="what a replica runs: nearmetal's small HTTP server, or nginx"
    )
    balancer: Literal["haproxy", "nginx"] = Field("haproxy", description="the load balancer")
    health_checks: bool = Field(
        True,
        description="HAProxy: active HTTP checks of /healthz; nginx: passive (max_fails, retry on the next "
        "server)",
    )
    check_interval_ms: int = Field(200, ge=10, le=60_000, description="HAProxy: time between checks")
    fall: int = Field(2, ge=1, le=100, description="HAProxy: failed checks before a server is DOWN")
    rise: int = Field(2, ge=1, le=100, description="HAProxy: passed checks before it is UP again")
    retries: int = Field(3, ge=0, le=20, description="HAProxy: connection retries (its default is 3)")
    redispatch: bool = Field(False, description="HAProxy: retry a failed connection on another server")
    balance: Literal["roundrobin", "leastconn", "first", "random"] = "roundrobin"
    connect_timeout_ms: int = Field(500, ge=1, le=60_000)
    server_timeout_ms: int = Field(2000, ge=1, le=600_000)
    fail_timeout_s: float = Field(
        2.0, gt=0, le=3600, description="nginx balancer: how long a failed server is skipped"
    )
    delay_ms: dict[str, float] = Field(
        default_factory=dict, description="netem delay on a cluster's link, e.g. {c2: 5} (a remote cluster)"
    )
    python: str = Field(
        default_factory=lambda: sys.executable, description="Python that runs the built-in server"
    )

    @field_validator("clusters")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(NAME_PATTERN, name) or name in ("client", "lb"):
                raise ValueError(
                    f"cluster name {name!r}: use 1-8 lower-case letters and digits, starting with a letter "
                    "(not 'client' or 'lb')"
                )
        if len(set(names)) != len(names):
            raise ValueError("cluster names must differ")
        return names

    @model_validator(mode="after")
    def _delays(self) -> ClustersConfig:
        unknown = sorted(set(self.delay_ms) - set(self.clusters))
        if unknown:
            raise ValueError(f"delay_ms names unknown clusters {unknown}: clusters are {self.clusters}")
        return self


class ClusterTarget(FaultTarget):
    """Every replica of one cluster (or one replica): killing them is a crash, SIGTERM then restart is a
    deployment scaled to zero and back."""

    def __init__(self, name: str, replicas: list[ManagedProcess], description: str) -> None:
        self.name = name
        self.replicas = replicas
        self.description = description
        self.lock = threading.Lock()

    def pids(self) -> list[int]:
        return sorted(pid for r in self.replicas for pid in r.pids())

    def signal(self, sig: int) -> list[int]:
        pids = self.pids()
        for replica in self.replicas:
            replica.signal_group(sig)
        return pids

    def wait_gone(self, timeout_s: float) -> bool:
        gone = super().wait_gone(timeout_s)
        for replica in self.replicas:
            replica.reap()
        return gone

    @property
    def can_restart(self) -> bool:
        return True

    def restart(self) -> None:
        with self.lock:
            for replica in self.replicas:
                replica.reap()
                if not replica.running():
                    replica.start()


class LinkTarget(FaultTarget):
    def __init__(self, name: str, ends: list[tuple[str | None, str]], description: str) -> None:
        self.name = name
        self.ends = ends
        self.description = description

    def links(self) -> list[tuple[str | None, str]]:
        return list(self.ends)


@register_layer
class ClustersLayer(Layer[ClustersConfig]):
    kind = "clusters"
    family = "resilience"
    Config = ClustersConfig
    description = (
        "N clusters of service replicas in network namespaces behind a load balancer (HAProxy/nginx)"
    )
    needs_root = True

    def __init__(self, config: ClustersConfig) -> None:
        super().__init__(config)
        self.namespaces: list[str] = []
        self.client_ns = ""
        self.lb_ns = ""
        self.replicas: dict[str, list[ManagedProcess]] = {}
        self.balancer: ManagedProcess | None = None
        self.work_dir: Path | None = None
        self.lb_events: list[tuple[float, str, str, str]] = []  # (time, kind, server, line)
        self.backend_names: dict[str, str] = {}  # address:port -> replica name (nginx logs addresses)

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "clusters", "clusters": ["c1", "c2"]}

    def requires(self) -> list[Requirement]:
        reqs = [Requirement("ip", "iproute2", purpose="network namespaces and veth pairs")]
        if self.config.delay_ms:
            reqs.append(Requirement("tc", "iproute2", purpose="netem delay on a cluster's link"))
        if self.config.balancer == "haproxy":
            reqs.append(Requirement("haproxy", "haproxy", purpose="the clusters layer's load balancer"))
        if self.config.balancer == "nginx" or self.config.server == "nginx":
            reqs.append(Requirement("nginx", "nginx-light", purpose="the clusters layer's nginx"))
        return reqs

    # --- set-up ------------------------------------------------------------------------------------------
    def setup(self, ctx: TrialContext) -> None:
        if not ctx.is_root:
            raise PrivilegeError(
                "the clusters layer creates network namespaces and needs root", fix="run as root"
            )
        self.work_dir = ctx.trial_dir / "clusters"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.client_ns = ctx.host_name(self.kind, "client")
        self.lb_ns = ctx.host_name(self.kind, "lb")
        for name in (
            self.lb_ns,
            self.client_ns,
            *(ctx.host_name(self.kind, c) for c in self.config.clusters),
        ):
            hostnet.add_netns(name)
            self.namespaces.append(name)
        client_if = self._link(ctx, "client", self.client_ns, CLIENT_LB_ADDRESS, CLIENT_ADDRESS)
        ctx.targets["link:client"] = LinkTarget(
            "link:client", [(self.lb_ns, client_if), (self.client_ns, client_if)], "the client's link"
        )
        backends: list[tuple[str, str, int]] = []  # (replica name, address, port)
        for index, cluster in enumerate(self.config.clusters, start=1):
            ns = ctx.host_name(self.kind, cluster)
            ifname = self._link(ctx, cluster, ns, f"198.18.{index}.1", f"198.18.{index}.2")
            delay = self.config.delay_ms.get(cluster)
            if delay:
                for end_ns in (self.lb_ns, ns):
                    hostnet.add_netem(end_ns, ifname, delay_ms=delay)
            ctx.targets[f"link:{cluster}"] = LinkTarget(
                f"link:{cluster}", [(ns, ifname), (self.lb_ns, ifname)], f"cluster {cluster}'s link"
            )
            self.replicas[cluster] = []
            for j in range(self.config.replicas):
                replica = self._replica(ns, cluster, j, f"198.18.{index}.2", BACKEND_PORT + j)
                self.replicas[cluster].append(replica)
                replica.start()
                backends.append((replica.name, f"198.18.{index}.2", BACKEND_PORT + j))
                ctx.targets[f"backend:{replica.name}"] = ClusterTarget(
                    f"backend:{replica.name}", [replica], f"replica {replica.name}"
                )
            ctx.targets[f"cluster:{cluster}"] = ClusterTarget(
                f"cluster:{cluster}", self.replicas[cluster], f"every replica of cluster {cluster}"
            )
        self.backend_names = {f"{a}:{p}": n for n, a, p in backends}
        self.balancer = self._balancer(backends)
        self.balancer.start()
        ctx.targets["lb"] = ClusterTarget(
            "lb", [self.balancer], f"the load balancer ({self.config.balancer})"
        )
        ctx.endpoints["service_url"] = f"http://{CLIENT_LB_ADDRESS}:{LB_PORT}/"
        ctx.endpoints["server_host"] = CLIENT_LB_ADDRESS
        ctx.placement["clusters"] = {
            "client_netns": self.client_ns,
            "lb_netns": self.lb_ns,
            "balancer": self.config.balancer,
            "health_checks": self.config.health_checks,
            "service_url": ctx.endpoints["service_url"],
            "backends": [{"name": n, "address": a, "port": p} for n, a, p in backends],
            "targets": sorted(ctx.targets),
        }

    def _link(self, ctx: TrialContext, role: str, ns: str, lb_address: str, address: str) -> str:
        alias = ctx.host_name(self.kind, "link", role)
        ifname = hostnet.short_ifname(alias, "k")
        hostnet.add_veth_pair(ifname, self.lb_ns, ifname, ns, alias)
        hostnet.add_address(self.lb_ns, ifname, f"{lb_address}/30")
        hostnet.add_address(ns, ifname, f"{address}/30")
        hostnet.link_up(self.lb_ns, ifname)
        hostnet.link_up(ns, ifname)
        return ifname

    def _replica(self, ns: str, cluster: str, j: int, address: str, port: int) -> ManagedProcess:
        assert self.work_dir is not None
        name = f"{cluster}-{j}"
        if self.config.server == "nginx":
            prefix = self.work_dir / name
            conf = nginx_backend_conf(prefix, name, cluster, address, port)
            argv = nginx_argv(prefix, conf)
        else:
            argv = [
                self.config.python, "-m", "nearmetal.tools.httpserver",
                "--listen", f"{address}:{port}", "--name", name, "--cluster", cluster,
            ]  # fmt: skip
        return ManagedProcess(
            name=name,
            argv=[*hostnet.netns_exec_argv(ns), *argv],
            log_dir=self.work_dir,
            port=port,
            env={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        )

    def _balancer(self, backends: list[tuple[str, str, int]]) -> ManagedProcess:
        assert self.work_dir is not None
        if self.config.balancer == "haproxy":
            conf = self.work_dir / "haproxy.cfg"
            conf.write_text(haproxy_conf(self.config, backends))
            argv = ["haproxy", "-db", "-f", str(conf)]
        else:
            prefix = self.work_dir / "balancer"
            conf = nginx_balancer_conf(prefix, self.config, backends)
            argv = nginx_argv(prefix, conf)
        process = ManagedProcess(
            name=f"balancer-{self.config.balancer}",
            argv=[*hostnet.netns_exec_argv(self.lb_ns), *argv],
            log_dir=self.work_dir,
            port=LB_PORT,
            stamp_stderr=True,
        )
        process.on_line = self._lb_line
        return process

    def _lb_line(self, when: float, line: str) -> None:
        for pattern, kind in LB_STATE_PATTERNS:
            match = pattern.search(line)
            if match:
                server = self.backend_names.get(match.group("server"), match.group("server"))
                self.lb_events.append((when, kind, server, line.strip()[:300]))

    # --- trial -------------------------------------------------------------------------------------------
    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        from nearmetal.layers.netns import place

        return place(process, {"*": hostnet.netns_exec_argv(self.client_ns)})

    def collect(self, ctx: TrialContext) -> list[Metric]:
        for when, kind, server, line in self.lb_events:
            ctx.add_event(kind, {"server": server, "balancer": self.config.balancer, "line": line}, at=when)
        self.lb_events = []
        with contextlib.suppress(hostnet.HostNetError, IndexError, KeyError, ValueError):
            ifname = ctx.targets["link:client"].links()[1][1]
            ctx.placement["clusters"]["client_link"] = hostnet.link_stats(self.client_ns, ifname)
        restarts = {r.name: r.starts - 1 for rs in self.replicas.values() for r in rs if r.starts > 1}
        if restarts:
            ctx.placement.setdefault("clusters", {})["restarts"] = restarts
        return []

    def teardown(self, ctx: TrialContext) -> None:
        if self.balancer is not None:
            self.balancer.stop(grace_s=1.0)
            self.balancer = None
        for replicas in self.replicas.values():
            for replica in replicas:
                replica.stop(grace_s=1.0)
        self.replicas = {}
        for name in reversed(self.namespaces):
            for pid in hostnet.netns_pids(name):
                hostnet.stop_pid(pid, grace_s=1.0)
            hostnet.delete_netns(name)
        self.namespaces = [n for n in self.namespaces if hostnet.netns_exists(n)]
        for key in [k for k, t in ctx.targets.items() if isinstance(t, ClusterTarget | LinkTarget)]:
            del ctx.targets[key]


# --- configurations -----------------------------------------------------------------------------------


def haproxy_conf(config: ClustersConfig, backends: list[tuple[str, str, int]]) -> str:
    check = ""
    lines = [
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        f"    timeout connect {config.connect_timeout_ms}ms",
        "    timeout client 30s",
        f"    timeout server {config.server_timeout_ms}ms",
        f"    retries {config.retries}",
    ]
    if config.redispatch:
        lines.append("    option redispatch 1")
    lines += [
        "frontend service",
        f"    bind {CLIENT_LB_ADDRESS}:{LB_PORT}",
        "    default_backend clusters",
        "backend clusters",
        f"    balance {config.balance}",
    ]
    if config.health_checks:
        lines += ["    option httpchk GET /healthz", "    http-check expect status 200"]
        check = f" check inter {config.check_interval_ms}ms fall {config.fall} rise {config.rise}"
    for name, address, port in backends:
        lines.append(f"    server {name} {address}:{port}{check}")
    return "\n".join(lines) + "\n"


def _nginx_common(prefix: Path) -> list[str]:
    for sub in ("tmp", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return [
        "daemon off;",
        "worker_processes 1;",
        f"pid {prefix / 'nginx.pid'};",
        "error_log stderr notice;",
        "events { worker_connections 4096; }",
    ]


def _nginx_http(prefix: Path) -> list[str]:
    tmp = prefix / "tmp"
    return [
        "    access_log off;",
        f"    client_body_temp_path {tmp}/body;",
        f"    proxy_temp_path {tmp}/proxy;",
        f"    fastcgi_temp_path {tmp}/fastcgi;",
        f"    uwsgi_temp_path {tmp}/uwsgi;",
        f"    scgi_temp_path {tmp}/scgi;",
    ]


def nginx_backend_conf(prefix: Path, name: str, cluster: str, address: str, port: int) -> Path:
    lines = [*_nginx_common(prefix), "http {", *_nginx_http(prefix)]
    lines += [
        "    server {",
        f"        listen {address}:{port};",
        "        default_type text/plain;",
        '        location /healthz { return 200 "ok\\n"; }',
        f"        location / {{ add_header X-Served-By {name} always; "
        f'return 200 "Hello from cluster {cluster} ({name})\\n"; }}',
        "    }",
        "}",
    ]
    conf = prefix / "nginx.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def nginx_balancer_conf(prefix: Path, config: ClustersConfig, backends: list[tuple[str, str, int]]) -> Path:
    lines = [*_nginx_common(prefix), "http {", *_nginx_http(prefix), "    upstream clusters {"]
    if config.balance == "leastconn":
        lines.append("        least_conn;")
    elif config.balance == "random":
        lines.append("        random;")
    for _, address, port in backends:
        if config.health_checks:
            lines.append(
                f"        server {address}:{port} max_fails=1 fail_timeout={config.fail_timeout_s:g}s;"
            )
        else:
            lines.append(f"        server {address}:{port} max_fails=0;")
    lines += [
        "        keepalive 32;",
        "    }",
        "    server {",
        f"        listen {CLIENT_LB_ADDRESS}:{LB_PORT};",
        "        location / {",
        "            proxy_pass http://clusters;",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        f"            proxy_connect_timeout {config.connect_timeout_ms}ms;",
        f"            proxy_read_timeout {config.server_timeout_ms}ms;",
        f"            proxy_send_timeout {config.server_timeout_ms}ms;",
    ]
    if config.health_checks:
        lines += ["            proxy_next_upstream error timeout http_502 http_503;",
                  f"            proxy_next_upstream_tries {max(2, config.retries)};"]  # fmt: skip
    else:
        lines.append("            proxy_next_upstream off;")
    lines += ["        }", "    }", "}"]
    conf = prefix / "nginx.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def nginx_argv(prefix: Path, conf: Path) -> list[str]:
    return ["nginx", "-p", str(prefix), "-e", "stderr", "-c", str(conf)]
