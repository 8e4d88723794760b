"""Issue 26, case 12: what a plan asks for beyond its workloads is said, and network reach by the runner
needs --allow-network on the command line."""

from __future__ import annotations

import pytest

from nearmetal.errors import NearmetalError, PlanError
from nearmetal.plan.load import parse_plan_text
from nearmetal.reach import check_network, plan_powers

BASE = "name: p\nworkloads:\n  w: {kind: command, params: {argv: [/bin/true]}}\nvariants:\n  a: []\n"


@pytest.mark.parametrize(
    "url",
    ["file:///etc/shadow", "ftp://example.org/x", "gopher://h/", "http://", "unix:///run/x.sock", "//host/x"],
)
def test_a_prometheus_url_that_is_not_http_is_refused_at_load(url: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan_text(BASE + f"energy: {{prometheus_url: {url!r}}}\n", "p.yaml")
    (problem,) = info.value.problems
    assert "energy.prometheus_url" in problem and "http:// or https://" in problem


def test_network_reach_needs_allow_network() -> None:
    loaded = parse_plan_text(BASE + "energy: {prometheus_url: 'http://prometheus:9090'}\n", "p.yaml")
    with pytest.raises(NearmetalError) as info:
        check_network(loaded, allow_network=False)
    assert "http://prometheus:9090" in info.value.message and "--allow-network" in (info.value.fix or "")
    check_network(loaded, allow_network=True)
    assert any("network: energy.prometheus_url" in p for p in plan_powers(loaded))
    # without the kepler source the URL is never fetched: nothing to allow
    quiet = parse_plan_text(
        BASE + "energy: {prometheus_url: 'https://p:9090', sources: [rapl, estimated]}\n", "p.yaml"
    )
    check_network(quiet, allow_network=False)


def test_the_powers_a_plan_asks_for_are_listed() -> None:
    text = (
        "name: p\nworkloads:\n  w: {kind: command, params: {argv: [/bin/true]}}\n"
        "variants:\n  a: []\n"
        "  pod: [{layer: pod, privileged: true, capabilities_add: [SYS_ADMIN, NET_ADMIN], host_users: true,\n"
        "         volumes: [{name: root, mount_path: /host, type: hostPath, path: /},\n"
        "                   {name: ro, mount_path: /data, type: hostPath, path: /srv, read_only: true}]}]\n"
        "kubernetes: {image: 'evil.example/x:latest', service_account: admin}\n"
        "slurm: {sbatch_args: ['--uid=0', '--output=/etc/cron.d/x', '-D', '--reservation=maint']}\n"
        "energy: {prometheus_url: 'http://prometheus:9090'}\n"
    )
    powers = plan_powers(parse_plan_text(text, "p.yaml"))
    joined = "\n".join(powers)
    for expected in (
        "a privileged pod",
        "added capabilities SYS_ADMIN, NET_ADMIN",
        "the node's user namespace",
        "hostPath / of the node, read-write",
        "hostPath /srv of the node, read-only",
        "the container image evil.example/x:latest",
        "the service account admin",
        "sbatch --uid=0: runs the job as another user",
        "sbatch --output=/etc/cron.d/x: chooses where the job's stdout is written",
        "sbatch -D: chooses the job's working directory",
        "network: energy.prometheus_url",
    ):
        assert expected in joined, joined
    assert "--reservation" not in joined


def test_a_plain_plan_asks_for_nothing() -> None:
    assert plan_powers(parse_plan_text(BASE, "p.yaml")) == []
