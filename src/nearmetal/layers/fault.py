"""Faults injected into a running trial at a time offset, optionally healed later: the chaos experiment as a
layer (seed 001: "enabling regular experiments triggering failures across the fleet").

Actions:
- ``kill``: signal the target's processes (SIGKILL by default; ``signal: TERM`` for a polite stop). Healed by
  starting them again (targets that can: a cluster's replicas, the load balancer).
- ``scale-to-zero``: SIGTERM every replica of a cluster, SIGKILL what is left after ``grace_s`` (a deployment
  scaled to 0 replicas); healed by starting them again (scaled back up).
- ``pause``: move the target's processes into a freezer cgroup of their own and freeze it (``docker pause``);
  healed by thawing it.
- ``link-down``: set one end of a veth pair down (a cut cable); healed by setting it up.
- ``netem``: ``tc netem`` delay/jitter/loss on both ends of a link; healed by removing it (restoring a delay
  the topology had).
- ``kill-fuse``: SIGKILL the FUSE daemon serving a mount (the trial's test directory, or ``path``): the mount
  stays in the table and every access fails with ENOTCONN (seed 001's severed CVMFS mounts). Healed by a
  remount (lazy unmount, then the daemon's own command line again), after ``heal_after_s`` or found by a
  ``watchdog`` that probes the mount every ``scan_interval_s`` with doctor's severed-mount probe — the sidecar
  cvmfs-csi runs. doctor's ``fuse-severed`` check runs on the mount right after the kill; its finding is
  recorded as an event.

Targets: what a topology layer registered (``cluster:c1``, ``backend:c1-0``, ``lb``, ``link:c1``,
``link:client``; see ``layers/clusters.py``), ``role:<role>`` (the trial's own processes of that role, e.g.
``role:server``; found by an environment tag the layer adds), and ``mount`` (the trial's test directory, or
``path``; an absolute path outside the run must be allowed with ``--allow-path``, like every path a plan
changes).

The clock starts when the measured process starts (the layer wraps it with a one-line shell that touches a
marker file, so any workload works); every injection and healing is recorded with its exact time in the
events table and in ``faults.jsonl`` in the trial's directory (what the workload's parser aligns its request
log with). Teardown undoes whatever is still in effect (thaw, link up, netem off, a remounted daemon
stopped) on every exit path; a frozen freezer cgroup a killed run left is thawed by ``nearmetal cleanup``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from nearmetal import faultlog
from nearmetal.errors import NearmetalError, PrivilegeError
from nearmetal.host import hostcmd, hostnet
from nearmetal.host.freezer import Freezer
from nearmetal.host.mountinfo import unmount_fuse
from nearmetal.host.mountprobe import stat_with_timeout
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.layers.fusekill import (
    FAULT_COMMAND_TIMEOUT_S,
    MountTarget,
    daemon_state,
    fuse_mount,
    severed_findings,
    start_daemon,
    wait_mounted,
)
from nearmetal.layers.targets import FaultTarget, pids_with_env
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec, Requirement

Action = Literal["kill", "pause", "link-down", "netem", "scale-to-zero", "kill-fuse"]
TAG_ENV = "NEARMETAL_FAULT_TAG"
MAIN_STARTED = ".nearmetal-main-started"
# touches the marker, then runs the process itself (argv passed as positional arguments, never in the script)
_MARK_START = ': > "$0" && exec "$@"'
TARGET_PATTERN = r"^(lb|mount|(cluster|backend|link|role):[A-Za-z0-9_.-]+)$"
JOIN_TIMEOUT_S = 60.0
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT, "QUIT": signal.SIGQUIT}


class FaultConfig(LayerConfig):
    layer: Literal["fault"] = "fault"
    action: Action = Field(description="what to break")
    target: str = Field(
        "",
        pattern=r"^$|" + TARGET_PATTERN,
        description="cluster:<c>, backend:<c>-<j>, lb, link:<c>, link:client, role:<role>, mount (the "
        "trial's test directory, or path)",
    )
    at_s: float = Field(5.0, ge=0, le=3600, description="seconds after the measured process started")
    heal_after_s: float | None = Field(
        None, gt=0, le=3600, description="undo the fault this long after injecting it (default: never)"
    )
    heal: Literal["after", "watchdog"] = Field(
        "after",
        description="kill-fuse: 'watchdog' remounts when a probe every scan_interval_s finds the mount "
        "severed (the CSI driver's sidecar) instead of after heal_after_s",
    )
    scan_interval_s: float = Field(1.0, gt=0, le=600, description="watchdog: time between probes")
    signal: Literal["KILL", "TERM", "INT", "QUIT"] | None = Field(
        None, description="kill: the signal (default KILL); scale-to-zero sends TERM"
    )
    grace_s: float = Field(5.0, ge=0, le=600, description="scale-to-zero: SIGKILL after this long")
    delay_ms: float = Field(0.0, ge=0, le=60_000, description="netem delay on each end")
    jitter_ms: float = Field(0.0, ge=0, le=60_000)
    loss_pct: float = Field(0.0, ge=0, le=100)
    path: str | None = Field(
        None,
        description="kill-fuse: the mount point whose daemon is killed and remounted (default: the trial's "
        "test directory); elsewhere only with --allow-path",
        json_schema_extra={"nearmetal_path": "writes"},
    )
    if_missing: Literal["error", "caveat"] = Field(
        "error",
        description="when the fault cannot be injected (the workload ended first, the target is gone): fail "
        "the trial, or keep it with a caveat",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FaultConfig:
        if not self.target:
            if self.action != "kill-fuse":
                raise ValueError(
                    f"action {self.action} needs a target (e.g. cluster:c1, link:c1, role:server)"
                )
            self.target = "mount"
        kind = self.target.split(":", 1)[0]
        allowed = {
            "kill": {"cluster", "backend", "lb", "role"},
            "scale-to-zero": {"cluster", "backend", "lb"},
            "pause": {"cluster", "backend", "lb", "role"},
            "link-down": {"link"},
            "netem": {"link"},
            "kill-fuse": {"mount"},
        }[self.action]
        if kind not in allowed:
            raise ValueError(
                f"action {self.action} cannot aim at {self.target!r}: use a target of kind "
                + ", ".join(sorted(allowed))
            )
        if self.action == "netem" and not (self.delay_ms or self.jitter_ms or self.loss_pct):
            raise ValueError("action netem needs delay_ms, jitter_ms or loss_pct")
        if self.heal == "watchdog" and self.action != "kill-fuse":
            raise ValueError("heal: watchdog is for kill-fuse (it probes a mount); use heal_after_s")
        if self.heal == "watchdog" and self.heal_after_s is not None:
            raise ValueError("heal: watchdog remounts when it finds the mount severed; drop heal_after_s")
        if kind == "role" and self.action == "kill" and self.heal_after_s is not None:
            raise ValueError(
                f"{self.target} processes cannot be started again by nearmetal: drop heal_after_s (or aim at "
                "a clusters layer's cluster:/backend: target)"
            )
        if self.signal is not None and self.action not in ("kill", "scale-to-zero"):
            raise ValueError(f"signal applies to kill and scale-to-zero, not {self.action}")
        return self

    @property
    def signal_number(self) -> int:
        if self.action == "scale-to-zero":
            return SIGNALS[self.signal or "TERM"]
        return SIGNALS[self.signal or "KILL"]

    @property
    def fault_id(self) -> str:
        return f"{self.action}:{self.target}@{self.at_s:g}s"


class RoleTarget(FaultTarget):
    """The trial's own processes of one role, found by the environment tag the fault layer gave them."""

    def __init__(self, role: str, tag: str) -> None:
        self.name = f"role:{role}"
        self.tag = tag
        self.description = f"the trial's {role} processes"

    def pids(self) -> list[int]:
        return pids_with_env(TAG_ENV, self.tag)


@register_layer
class FaultLayer(Layer[FaultConfig]):
    kind = "fault"
    family = "resilience"
    Config = FaultConfig
    description = (
        "inject a fault at a time offset (kill, pause, link down, netem, scale to zero, kill a FUSE daemon)"
    )
    needs_root = True

    def __init__(self, config: FaultConfig) -> None:
        super().__init__(config)
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.marker: Path | None = None
        self.tag = ""
        self.target: FaultTarget | None = None
        self.main_started_at: float | None = None
        self.injected_at: float | None = None
        self.healed_at: float | None = None
        self.problem: str | None = None
        # what is still in effect, for teardown
        self.freezer: Freezer | None = None
        self.links_down: list[tuple[str | None, str]] = []
        self.netem_on: list[tuple[str | None, str, dict[str, Any]]] = []
        self.killed_mount: dict[str, Any] | None = None
        self.remounted: hostcmd.Process[bytes] | None = None

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        # the generic exit-path tests run it around a bare command: pause that command at once, thaw it soon
        return {
            "layer": "fault",
            "action": "pause",
            "target": "role:main",
            "at_s": 0.0,
            "heal_after_s": 0.2,
            "if_missing": "caveat",
        }

    def requires(self) -> list[Requirement]:
        if self.config.action in ("link-down", "netem"):
            return [
                Requirement(
                    "tc" if self.config.action == "netem" else "ip", "iproute2", purpose="the fault layer"
                )
            ]
        if self.config.action == "kill-fuse":
            return [Requirement("fusermount", "fuse3", purpose="remounting a severed FUSE mount")]
        return []

    # --- set-up ------------------------------------------------------------------------------------------
    def setup(self, ctx: TrialContext) -> None:
        if not ctx.is_root:
            raise PrivilegeError("the fault layer signals, freezes and unplugs host objects and needs root")
        kind, _, rest = self.config.target.partition(":")
        if kind == "role":
            self.tag = ctx.host_name(self.kind, rest)
            self.target = RoleTarget(rest, self.tag)
        elif kind != "mount":
            self.target = ctx.targets.get(self.config.target)
            if self.target is None:
                known = ", ".join(sorted(ctx.targets)) or "none"
                raise NearmetalError(
                    f"fault target {self.config.target!r} is not in this trial (targets here: {known})",
                    fix="list the clusters layer before the fault layer in the variant, and name one of its "
                    "clusters (cluster:<name>, backend:<name>-<j>, link:<name>, lb)",
                )
            restarts = self.config.heal_after_s is not None and self.config.action in (
                "kill",
                "scale-to-zero",
            )
            if restarts and not self.target.can_restart:
                raise NearmetalError(f"target {self.target.name} cannot be started again: drop heal_after_s")
        self.marker = ctx.trial_dir / MAIN_STARTED
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()
        self.thread = threading.Thread(
            target=self._schedule, args=(ctx,), name="nearmetal-fault", daemon=True
        )
        self.thread.start()
        ctx.placement.setdefault("faults", []).append(
            {"id": self.config.fault_id, **self.config.model_dump(exclude={"layer"}, exclude_none=True)}
        )

    def _mountpoint(self, ctx: TrialContext) -> str:
        path = self.config.path or str(
            ctx.endpoints.get("test_dir_host") or ctx.endpoints.get("test_dir") or ""
        )
        if self.config.path and not os.path.isabs(path):
            path = str(ctx.trial_dir / path)
        if not path:
            raise NearmetalError(
                "kill-fuse has no mount to aim at: no filesystem layer set a test directory",
                fix="put a FUSE layer (bindfs, fuse-overlayfs) in the variant, or give the fault a path",
            )
        return os.path.realpath(path)

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        role = self.config.target.split(":", 1)[1] if self.config.target.startswith("role:") else None
        if role is not None and process.role == role:
            process.env[TAG_ENV] = self.tag
        if process.role == "main" and self.marker is not None:
            process.argv = ["/bin/sh", "-c", _MARK_START, str(self.marker), *process.argv]
        return process

    # --- the schedule (a thread of its own) ----------------------------------------------------------------
    def _event(self, ctx: TrialContext, kind: str, detail: dict[str, Any], at: float | None = None) -> None:
        event = {
            "time": at if at is not None else time.time(),
            "kind": kind,
            "detail": {
                "id": self.config.fault_id,
                "action": self.config.action,
                "target": self.config.target,
                **detail,
            },
        }
        with self.lock:
            ctx.events.append(event)
            faultlog.append(ctx.trial_dir, event)

    def _schedule(self, ctx: TrialContext) -> None:
        try:
            assert self.marker is not None
            while not self.marker.exists():
                if self.stop.wait(0.005):
                    return
            self.main_started_at = self.marker.stat().st_mtime
            due = self.main_started_at + self.config.at_s
            if self.stop.wait(max(0.0, due - time.time())):
                return
            self._inject(ctx, due)
            if self.problem or self.injected_at is None:
                return
            if self.config.heal == "watchdog":
                self._watchdog(ctx)
            elif self.config.heal_after_s is not None:
                heal_due = self.injected_at + self.config.heal_after_s
                if self.stop.wait(max(0.0, heal_due - time.time())):
                    return
                self._heal(ctx, reason="after")
        except Exception as exc:  # recorded; collect() turns it into the trial's error
            self.problem = f"{type(exc).__name__}: {exc}"
            self._event(ctx, "fault-error", {"error": self.problem})

    def _inject(self, ctx: TrialContext, due: float) -> None:
        action = self.config.action
        detail: dict[str, Any] = {"scheduled_at": due}
        if action == "kill-fuse":
            self.target = MountTarget(self._mountpoint(ctx))
        assert self.target is not None
        if action in ("kill", "scale-to-zero", "pause", "kill-fuse"):
            pids = self.target.pids()
            if not pids:
                self.problem = f"{self.target.name} had no running process at {self.config.at_s:g}s"
                self._event(ctx, "fault-error", {"error": self.problem})
                return
        started = time.time()
        if action in ("kill", "scale-to-zero"):
            detail["pids"] = self.target.signal(self.config.signal_number)
            detail["signal"] = signal.Signals(self.config.signal_number).name
            self.injected_at = started
            self._event(ctx, "fault-injected", detail, at=started)
            if action == "scale-to-zero":
                gone = self.target.wait_gone(self.config.grace_s)
                if not gone:
                    self.target.signal(signal.SIGKILL)
                    self.target.wait_gone(5.0)
                self._event(
                    ctx, "scaled-to-zero", {"drained_s": round(time.time() - started, 6), "killed": not gone}
                )
        elif action == "pause":
            self.freezer = Freezer(ctx.host_name(self.kind, "freezer"))
            detail["pids"] = self.freezer.freeze(self.target.pids())
            detail["frozen_after_ms"] = round((time.time() - started) * 1000, 3)
            self.injected_at = started
            self._event(ctx, "fault-injected", detail, at=started)
        elif action == "link-down":
            end = self.target.links()[0]
            hostnet.link_down(*end)
            self.links_down.append(end)
            detail["link"] = {"netns": end[0], "ifname": end[1]}
            self.injected_at = started
            self._event(ctx, "fault-injected", detail, at=started)
        elif action == "netem":
            for ns, ifname in self.target.links():
                before = hostnet.root_qdisc(ns, ifname)
                hostnet.replace_netem(
                    ns, ifname, self.config.delay_ms, self.config.jitter_ms, self.config.loss_pct
                )
                self.netem_on.append((ns, ifname, before))
            detail.update(
                delay_ms=self.config.delay_ms, jitter_ms=self.config.jitter_ms, loss_pct=self.config.loss_pct
            )
            self.injected_at = started
            self._event(ctx, "fault-injected", detail, at=started)
        elif action == "kill-fuse":
            self._kill_fuse(ctx, detail)

    def _kill_fuse(self, ctx: TrialContext, detail: dict[str, Any]) -> None:
        assert isinstance(self.target, MountTarget)
        mountpoint = self.target.mountpoint
        if fuse_mount(mountpoint) is None:
            self.problem = f"{mountpoint} is not a FUSE mount at {self.config.at_s:g}s"
            self._event(ctx, "fault-error", {"error": self.problem})
            return
        pids = self.target.pids()
        daemon = pids[0]
        saved = daemon_state(daemon)
        argv = saved["argv"]
        started = time.time()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, self.config.signal_number)
        self.killed_mount = {"mountpoint": mountpoint, **saved}
        self.injected_at = started
        detail.update(
            mountpoint=mountpoint,
            pids=pids,
            daemon=" ".join(a.decode(errors="replace") for a in argv),
            signal=signal.Signals(self.config.signal_number).name,
        )
        self._event(ctx, "fault-injected", detail, at=started)
        threading.Thread(
            target=self._doctor, args=(ctx, mountpoint), name="nearmetal-fault-doctor", daemon=True
        ).start()

    def _doctor(self, ctx: TrialContext, mountpoint: str) -> None:
        """doctor's severed-mount check, on this mount only, once the daemon is gone."""
        checked, findings = severed_findings(mountpoint, ctx.trial_dir)
        for finding in findings:
            self._event(
                ctx,
                "doctor-finding",
                {**finding.to_dict(), "checked_after_s": round(checked - (self.injected_at or checked), 6)},
                at=checked,
            )

    def _watchdog(self, ctx: TrialContext) -> None:
        """Probe the mount every scan_interval_s with doctor's probe; remount when it is severed."""
        assert isinstance(self.target, MountTarget)
        while not self.stop.wait(self.config.scan_interval_s):
            outcome = stat_with_timeout(self.target.mountpoint, min(2.0, self.config.scan_interval_s))
            if outcome == errno.ENOTCONN:
                self._event(ctx, "watchdog-found-severed", {"mountpoint": self.target.mountpoint})
                self._heal(ctx, reason="watchdog")
                return

    def _heal(self, ctx: TrialContext, reason: str) -> None:
        action = self.config.action
        assert self.target is not None
        started = time.time()
        detail: dict[str, Any] = {"reason": reason}
        if action in ("kill", "scale-to-zero"):
            self.target.restart()
            detail["pids"] = self.target.pids()
        elif action == "pause" and self.freezer is not None:
            self.freezer.thaw()
        elif action == "link-down":
            for end in self.links_down:
                hostnet.link_up(*end)
            self.links_down = []
        elif action == "netem":
            self._netem_off()
        elif action == "kill-fuse":
            detail["pid"] = self._remount(ctx)
        detail["took_s"] = round(time.time() - started, 6)
        # the fault is over when the healing took effect (a restarted replica listens, a mount answers)
        self.healed_at = time.time() if action in ("kill", "scale-to-zero", "kill-fuse") else started
        self._event(ctx, "fault-healed", detail, at=self.healed_at)
        if action == "pause" and self.freezer is not None:
            self.freezer.remove()
            self.freezer = None

    def _netem_off(self) -> None:
        for ns, ifname, before in self.netem_on:
            hostnet.delete_root_qdisc(ns, ifname)
            options = before.get("options") or {}
            if before.get("kind") == "netem":
                delay = options.get("delay") or {}
                hostnet.replace_netem(
                    ns,
                    ifname,
                    float(delay.get("delay", 0.0)) * 1000,
                    float(delay.get("jitter", 0.0)) * 1000,
                    float(options.get("loss-random", {}).get("loss", 0.0)) * 100,
                )
        self.netem_on = []

    def _remount(self, ctx: TrialContext) -> int:
        """Lazy-unmount the severed mount and start its daemon again with its own command line."""
        assert self.killed_mount is not None
        mountpoint = self.killed_mount["mountpoint"]
        # as root by what was mounted, never through a link swapped in on the way (issue 26)
        unmount_fuse(mountpoint, lazy=True, timeout=FAULT_COMMAND_TIMEOUT_S)
        self.remounted = start_daemon(self.killed_mount, ctx.trial_dir / "fault-remount.log")
        wait_mounted(mountpoint, self.remounted)
        return self.remounted.pid

    # --- after the trial ---------------------------------------------------------------------------------
    def collect(self, ctx: TrialContext) -> list[Metric]:
        # the measured process has ended: a fault not injected by now never met the load
        if self.injected_at is None:
            self.stop.set()
            if self.thread is not None:
                self.thread.join(JOIN_TIMEOUT_S)
        if self.injected_at is None or self.problem:
            if self.problem:
                reason = self.problem
            elif self.main_started_at is None:
                reason = "the measured process never started"
            else:
                ran = time.time() - self.main_started_at
                reason = f"the workload ended {ran:.1f}s after it started, before the fault at {self.config.at_s:g}s"
            message = f"fault {self.config.fault_id} was not injected: {reason}"
            if self.config.if_missing == "caveat" and self.injected_at is None:
                ctx.caveats.append(message)
                return []
            raise NearmetalError(
                message, fix="make the load run longer (duration_s) or inject the fault earlier (at_s)"
            )
        metrics = []
        if self.main_started_at is not None:
            lag = self.injected_at - (self.main_started_at + self.config.at_s)
            metrics.append(Metric("fault_lag_ms", lag * 1000, "ms", "lower", source="layer:fault"))
        if self.config.heal_after_s is not None and self.healed_at is None:
            ctx.caveats.append(f"fault {self.config.fault_id} was healed only after the load ended")
        return metrics

    def teardown(self, ctx: TrialContext) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(JOIN_TIMEOUT_S)
            self.thread = None
        undone = []
        if self.freezer is not None:
            self.freezer.remove()
            self.freezer = None
            undone.append("thawed")
        if self.links_down:
            for end in self.links_down:
                with contextlib.suppress(hostnet.HostNetError):
                    hostnet.link_up(*end)
            self.links_down = []
            undone.append("link up")
        if self.netem_on:
            with contextlib.suppress(hostnet.HostNetError):
                self._netem_off()
            undone.append("netem removed")
        if self.remounted is not None:
            mountpoint = self.killed_mount["mountpoint"] if self.killed_mount else ""
            if mountpoint and fuse_mount(mountpoint) is not None:
                unmount_fuse(mountpoint, timeout=FAULT_COMMAND_TIMEOUT_S)
            hostcmd.stop(self.remounted)
            self.remounted = None
            undone.append("remounted daemon stopped")
        if undone:
            self._event(ctx, "fault-undone", {"undone": undone})
