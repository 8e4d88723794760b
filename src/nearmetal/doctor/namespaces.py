"""User namespaces: in use here or not, and available or not (seed 001: rootless image builds with
``hostUsers: false``; GitLab runners isolated with UserNamespacesStatelessPodsSupport)."""

from __future__ import annotations

from pathlib import Path

from nearmetal.doctor.base import Finding, check

LESSON_USERNS = (
    "seed 001: Kubernetes 1.33 enables user namespaces by default; with hostUsers: false a pod's root is an "
    "unprivileged high uid on the host, which is what lets buildah/podman and buildkit build images in "
    "pods without being root on the node, and what isolated CERN's GitLab runners from their hosts"
)
FULL_RANGE = 4294967295


def parse_id_map(text: str) -> list[tuple[int, int, int]]:
    """Lines of /proc/<pid>/uid_map: (id inside, id outside, count)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def in_user_namespace(uid_map: list[tuple[int, int, int]]) -> bool:
    return uid_map != [(0, 0, FULL_RANGE)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


@check(
    "user-namespaces",
    inspects="/proc/self/uid_map, /proc/self/gid_map, /proc/sys/user/max_user_namespaces, "
    "/proc/sys/kernel/unprivileged_userns_clone",
    explains=("failure", "io"),
)
def check_user_namespaces(proc: Path = Path("/proc")) -> list[Finding]:
    uid_map_text = _read(proc / "self" / "uid_map")
    if uid_map_text is None:
        return [Finding("user-namespaces", "info", "cannot read /proc/self/uid_map", lesson=LESSON_USERNS)]
    uid_map = parse_id_map(uid_map_text)
    gid_map = parse_id_map(_read(proc / "self" / "gid_map") or "")
    if in_user_namespace(uid_map):
        mapping = "; ".join(
            f"uid {inside}-{inside + count - 1} → host {outside}-{outside + count - 1}"
            for inside, outside, count in uid_map
        )
        root_outside = next((o for i, o, c in uid_map if i <= 0 < i + c), None)
        title = "running in a user namespace (hostUsers: false, rootless container or unshare -U)"
        if root_outside is not None:
            title += f": root here is uid {root_outside} on the host"
        return [
            Finding(
                "user-namespaces",
                "info",
                title,
                evidence=f"uid_map: {mapping}; gid_map: {len(gid_map)} range(s)",
                fix="expected for rootless builds; if a tool fails here: mounting most filesystems, loading "
                "modules, writing host sysctls and raising hard rlimits need the host's root, and files of "
                "unmapped ids show as nobody/nogroup",
                lesson=LESSON_USERNS,
            )
        ]
    max_ns = _read(proc / "sys" / "user" / "max_user_namespaces")
    unprivileged = _read(proc / "sys" / "kernel" / "unprivileged_userns_clone")
    evidence = f"uid_map is the identity (0 0 {FULL_RANGE}); max_user_namespaces={max_ns or '?'}"
    if unprivileged is not None:
        evidence += f"; unprivileged_userns_clone={unprivileged}"
    if max_ns == "0":
        return [
            Finding(
                "user-namespaces",
                "warning",
                "user namespaces are disabled on this kernel: rootless builds and hostUsers: false pods fail",
                evidence=evidence,
                fix="sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/)",
                lesson=LESSON_USERNS,
            )
        ]
    if unprivileged == "0":
        return [
            Finding(
                "user-namespaces",
                "info",
                "not in a user namespace; unprivileged users cannot create one (rootless buildah/podman "
                "need it)",
                evidence=evidence,
                fix="sysctl -w kernel.unprivileged_userns_clone=1, or run builds in pods with hostUsers: false",
                lesson=LESSON_USERNS,
            )
        ]
    return [
        Finding(
            "user-namespaces",
            "ok",
            "not in a user namespace; user namespaces are available (hostUsers: false pods and rootless "
            "builds can run)",
            evidence=evidence,
            lesson=LESSON_USERNS,
        )
    ]
