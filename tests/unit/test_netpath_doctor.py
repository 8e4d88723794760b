"""doctor: user-mode network detection from recorded `ip -j` output, and the path-vs-CPU-limit attribution
(seed 000: slirp4netns was blamed; the CPU quota was the cause)."""

from __future__ import annotations

from nearmetal.doctor import CHECKS
from nearmetal.doctor.netpath import CellEvidence, attribute, check_user_mode_net

ROUTES_SLIRP = [{"dst": "default", "gateway": "10.0.2.2", "dev": "tap0", "flags": []}]
LINKS_SLIRP = [
    {"ifname": "lo", "linkinfo": None},
    {"ifname": "tap0", "linkinfo": {"info_kind": "tun", "info_data": {"type": "tap", "pi": False}}},
]
ROUTES_HOST = [{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []}]
LINKS_HOST = [{"ifname": "eth0"}]


def test_user_mode_stack_is_recognised_by_its_tap_device() -> None:
    [finding] = check_user_mode_net(ROUTES_SLIRP, LINKS_SLIRP)
    assert finding.severity == "warning"
    assert "tap0" in finding.evidence and "10.0.2.2" in finding.evidence
    assert "net-paths" in finding.fix
    [ok] = check_user_mode_net(ROUTES_HOST, LINKS_HOST)
    assert ok.severity == "ok"
    [none] = check_user_mode_net([], LINKS_HOST)
    assert none.severity == "info"
    assert "user-mode-net" in CHECKS


def cell(variant, layers, loss, throttled=None, rtt=None, significant=True):
    return CellEvidence(
        "mpi", "", variant, tuple(layers), "latency_small_us", loss, significant, throttled, rtt
    )


def test_the_seed_case_quota_not_slirp() -> None:
    cells = [
        cell("loopback", [], None, rtt=30.0),
        cell("slirp4netns", ["slirp4netns"], 0.12, rtt=34.0),
        cell("quota", ["cpu-quota"], 0.45, throttled=71.0),
        cell("slirp-quota", ["slirp4netns", "cpu-quota"], 0.55, throttled=68.0, rtt=50.0),
    ]
    found = {f.title.split(":")[0]: f for f in attribute(cells, {"mpi": 30.0})}
    assert "comes from the network path (slirp4netns" in found["mpi/slirp4netns"].title
    assert "+4.0 µs" in found["mpi/slirp4netns"].evidence
    assert "comes from the CPU limit, not the network" in found["mpi/quota"].title
    assert "throttled in 71%" in found["mpi/quota"].evidence
    both = found["mpi/slirp-quota"]
    # the path alone costs 12%, the quota adds the other 43 points
    assert "path alone (slirp4netns) costs +12%" in both.title and "+43 points" in both.title
    assert both.severity == "critical"
    assert "mpi/loopback" not in found  # the baseline needs no explanation


def test_no_significant_loss_is_not_blamed_on_anything() -> None:
    [finding] = attribute([cell("netns", ["netns"], 0.01, significant=False)])
    assert finding.severity == "ok" and "no significant loss" in finding.title
    # a quota that never throttled does not explain a loss; the path does
    [path] = attribute([cell("netns-quota", ["netns", "cpu-quota"], 0.2, throttled=0.5)])
    assert "network path (netns)" in path.title


def test_a_limit_that_never_bit_is_not_blamed() -> None:
    """Measured here under heavy load: the ranks got less than the quota, so it never throttled."""
    [finding] = attribute([cell("quota", ["cpu-quota"], 0.9, throttled=0.0)])
    assert finding.severity == "info" and "did not bind" in finding.title


def test_path_plus_a_limit_that_never_bit() -> None:
    cells = [cell("netns", ["netns"], 0.2), cell("netns-quota", ["netns", "cpu-quota"], 0.9, throttled=0.0)]
    found = {f.title.split(":")[0]: f for f in attribute(cells)}
    title = found["mpi/netns-quota"].title
    assert "path alone (netns) costs +20%" in title and "+70 points are not throttling" in title
