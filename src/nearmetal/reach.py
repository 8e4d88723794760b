"""What a plan asks for beyond measuring its workloads (issue 26, case 12): the powers it hands to a pod or
a Slurm job, and the network the runner itself would reach. ``nearmetal check`` lists them under "this
plan asks for:" (SECURITY.md explains each); network reach by the runner needs ``--allow-network`` on the
command line, never a plan value alone.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from nearmetal.errors import NearmetalError

# sbatch options that choose who the job runs as, where its files go or what it reads: a plan that sets
# them decides paths and identities on the cluster (sbatch --help; short forms included)
SBATCH_IDENTITY = {
    "--uid": "runs the job as another user",
    "--gid": "runs the job as another group",
    "--output": "chooses where the job's stdout is written",
    "-o": "chooses where the job's stdout is written",
    "--error": "chooses where the job's stderr is written",
    "-e": "chooses where the job's stderr is written",
    "--input": "chooses the file the job reads as stdin",
    "-i": "chooses the file the job reads as stdin",
    "--chdir": "chooses the job's working directory",
    "-D": "chooses the job's working directory",
    "--export": "chooses the job's environment",
    "--export-file": "reads the job's environment from a file",
    "--get-user-env": "loads a user's login environment",
    "--container": "runs the job in an OCI bundle",
    "--container-id": "runs the job in an OCI container",
}

URL_SCHEMES = ("http", "https")


def check_url(value: str) -> str:
    """An http(s) URL with a host; ``file://``, ``ftp://`` and the rest are refused (plan load)."""
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in URL_SCHEMES or not parsed.hostname:
        raise ValueError(
            f"must be an http:// or https:// URL with a host (got scheme {parsed.scheme or 'none'!r}); "
            "file://, ftp:// and other schemes are refused"
        )
    if any(ord(c) < 0x21 or c == "\x7f" for c in value):
        raise ValueError("must not hold spaces or control characters")
    return value


def network_reach(plan: Any) -> list[str]:
    """The URLs the runner itself fetches for this plan (not what its workloads do)."""
    energy = getattr(plan, "energy", None)
    url = getattr(energy, "prometheus_url", None)
    if url and "kepler" in (getattr(energy, "sources", None) or ()):
        return [f"energy.prometheus_url: the runner queries {url} before and after every trial"]
    return []


def check_network(loaded: Any, allow_network: bool) -> None:
    """Refuse, before anything runs, a plan that makes the runner reach the network unless the person
    running nearmetal passed ``--allow-network``."""
    reach = network_reach(loaded.plan)
    if reach and not allow_network:
        raise NearmetalError(
            f"the plan asks the runner to reach the network ({'; '.join(reach)}); nothing was run",
            fix="pass --allow-network if you trust that URL, or drop energy.prometheus_url from the plan "
            "(NEARMETAL_PROMETHEUS_URL in your own environment needs no flag)",
        )


def _sbatch_option(arg: str) -> str:
    return arg.split("=", 1)[0]


def plan_powers(loaded: Any) -> list[str]:
    """One line per power the plan asks for beyond running its workloads as the user running nearmetal:
    privileged pods, hostPath volumes, added capabilities, the host's namespaces, arbitrary images, sbatch
    options that change identity or paths, network reach by the runner."""
    plan = loaded.plan
    out: list[str] = []
    seen: set[str] = set()

    def add(line: str) -> None:
        if line not in seen:
            seen.add(line)
            out.append(line)

    for vname, variant in (getattr(plan, "variants", None) or {}).items():
        for layer in getattr(variant, "layers", ()) or ():
            if getattr(layer, "layer", None) != "pod":
                continue
            where = f"variant {vname} (pod layer)"
            if layer.privileged:
                add(f"a privileged pod: every device and capability of the node ({where})")
            if layer.allow_privilege_escalation:
                add(f"privilege escalation inside the pod (setuid programs) ({where})")
            if layer.capabilities_add:
                add(f"added capabilities {', '.join(layer.capabilities_add)} ({where})")
            if layer.host_users is True:
                add(
                    f"the node's user namespace (host_users: true): root in the pod is root on the node ({where})"
                )
            if layer.run_as_user == 0:
                add(f"runs as root (run_as_user: 0) in the pod ({where})")
            if layer.seccomp == "Unconfined":
                add(f"no seccomp filter (seccomp: Unconfined) ({where})")
            for volume in layer.volumes:
                if volume.type == "hostPath":
                    mode = "read-only" if volume.read_only else "read-write"
                    propagation = (
                        f", mount propagation {volume.mount_propagation}" if volume.mount_propagation else ""
                    )
                    add(f"hostPath {volume.path} of the node, {mode}{propagation} ({where})")
    kubernetes = getattr(plan, "kubernetes", None)
    if kubernetes is not None:
        if kubernetes.image:
            add(
                f"the container image {kubernetes.image} (kubernetes.image): any program it holds runs in the pods"
            )
        if kubernetes.service_account:
            add(f"the service account {kubernetes.service_account} (kubernetes.service_account) in the pods")
    slurm = getattr(plan, "slurm", None)
    for arg in getattr(slurm, "sbatch_args", None) or []:
        why = SBATCH_IDENTITY.get(_sbatch_option(arg))
        if why:
            add(f"sbatch {arg}: {why} (slurm.sbatch_args)")
    for line in network_reach(plan):
        add(f"network: {line} (needs --allow-network)")
    return out
