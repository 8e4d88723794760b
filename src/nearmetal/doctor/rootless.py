"""What a rootless platform needs from this host, for the user nearmetal's rootless rows run as (yourself, or
as root the user ``NEARMETAL_ROOTLESS_USER`` or sudo's user names): subordinate id ranges, setuid
``newuidmap``/``newgidmap``, unprivileged user namespaces (tried, not only read), ``/dev/fuse``, and a delegated
cgroup v2 subtree (without one, no rootless trial can have a CPU quota or cpuset). Each finding says the fix.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

from nearmetal.doctor.base import Finding, check
from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd

LESSON_ROOTLESS = (
    "seeds 000 and 001: Usernetes and rootless CI builds run without root — user namespaces mapped from "
    "/etc/subuid by newuidmap, slirp4netns-style networking, fuse-overlayfs or overlay in a user namespace, "
    "and no cgroup control unless systemd delegates a cgroup v2 subtree to the user"
)
CGROUP = Path("/sys/fs/cgroup")


def rootless_user() -> str | None:
    """The user the rootless checks are about: yourself, or as root the one rootless rows would run as."""
    if os.geteuid() != 0:
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            return None
    from nearmetal.layers.rootless import ROOTLESS_USER_ENV

    return os.environ.get(ROOTLESS_USER_ENV) or os.environ.get("SUDO_USER") or None


NO_USER_EVIDENCE = "nearmetal runs as root and neither NEARMETAL_ROOTLESS_USER nor SUDO_USER names a user"


@check("rootless-subids", inspects="/etc/subuid, /etc/subgid", explains=("failure",))
def check_subids() -> list[Finding]:
    from nearmetal.host.userns import subid_range

    user = rootless_user()
    if user is None:
        return [
            Finding(
                "rootless-subids",
                "info",
                "no rootless user to check",
                evidence=NO_USER_EVIDENCE,
                fix="NEARMETAL_ROOTLESS_USER=NAME nearmetal doctor --check rootless-subids",
                lesson=LESSON_ROOTLESS,
            )
        ]
    ranges = {f: subid_range(user, Path(f)) for f in ("/etc/subuid", "/etc/subgid")}
    missing = [f for f, r in ranges.items() if r is None]
    evidence = "; ".join(f"{f}: {f'{r[0]}+{r[1]}' if r else 'none'}" for f, r in ranges.items())
    if missing:
        return [
            Finding(
                "rootless-subids",
                "warning",
                f"user {user} has no subordinate id range in {' and '.join(missing)}: its user namespaces map "
                "only itself (rootless buildah/podman cannot own files as other users; the rootless layer "
                "falls back to mapping: self)",
                evidence=evidence,
                fix=f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} (as root; "
                "ranges must not overlap other users')",
                lesson=LESSON_ROOTLESS,
            )
        ]
    small = [f for f, r in ranges.items() if r is not None and r[1] < 65536]
    return [
        Finding(
            "rootless-subids",
            "warning" if small else "ok",
            f"user {user} has subordinate ranges"
            + (f" smaller than 65536 in {', '.join(small)} (images with high uids fail)" if small else ""),
            evidence=evidence,
            fix="give it 65536 ids: usermod --add-subuids START-END" if small else "",
            lesson=LESSON_ROOTLESS,
        )
    ]


def _setuid_or_caps(path: Path) -> str | None:
    """How the helper may map other ids: 'setuid root', 'file capabilities', or None."""
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return "setuid root"
    try:
        if os.getxattr(path, "security.capability"):
            return "file capabilities"
    except OSError:
        pass
    return None


@check(
    "rootless-newuidmap", inspects="newuidmap, newgidmap (mode, security.capability)", explains=("failure",)
)
def check_newuidmap() -> list[Finding]:
    problems, evidence = [], []
    for tool in ("newuidmap", "newgidmap"):
        found = shutil.which(tool) or next(
            (str(d / tool) for d in (Path("/usr/bin"), Path("/usr/sbin")) if (d / tool).exists()), None
        )
        if found is None:
            problems.append(f"{tool} is not installed")
            continue
        how = _setuid_or_caps(Path(found))
        evidence.append(f"{found}: {how or 'neither setuid nor file capabilities'}")
        if how is None:
            problems.append(f"{found} is neither setuid root nor has file capabilities")
    if problems:
        return [
            Finding(
                "rootless-newuidmap",
                "warning",
                "; ".join(problems) + ": a user cannot map its subordinate ids (rootless builds fail)",
                evidence="; ".join(evidence),
                fix="apt-get install -y uidmap (it installs them setuid root), or chmod u+s "
                "/usr/bin/newuidmap /usr/bin/newgidmap",
                lesson=LESSON_ROOTLESS,
            )
        ]
    return [
        Finding(
            "rootless-newuidmap",
            "ok",
            "newuidmap and newgidmap can map subordinate ids",
            evidence="; ".join(evidence),
            lesson=LESSON_ROOTLESS,
        )
    ]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _try_userns(user: str | None) -> tuple[bool, str]:
    """Make a user namespace as ``user`` (as root: through setpriv) and report what happened."""
    argv = ["unshare", "--user", "--map-root-user", "--", "true"]
    if os.geteuid() == 0:
        if user is None:
            return True, "not tried (no rootless user)"
        argv = ["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--reset-env", "--", *argv]
    try:
        proc = hostcmd.run(argv, 20)
    except NearmetalError as exc:
        return False, f"{' '.join(argv[-5:])}: {exc}"
    said = (proc.stderr or proc.stdout).strip().splitlines()
    return proc.returncode == 0, f"unshare --user --map-root-user as {user or 'this user'}: " + (
        "worked" if proc.returncode == 0 else f"failed: {said[-1] if said else proc.returncode}"
    )


@check(
    "rootless-userns",
    inspects="/proc/sys/user/max_user_namespaces, /proc/sys/kernel/unprivileged_userns_clone, "
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns, unshare --user as the rootless user",
    explains=("failure",),
)
def check_unprivileged_userns() -> list[Finding]:
    values = {
        key: _read(Path("/proc/sys") / key.replace(".", "/"))
        for key in (
            "user.max_user_namespaces",
            "kernel.unprivileged_userns_clone",
            "kernel.apparmor_restrict_unprivileged_userns",
        )
    }
    evidence = [f"{k}={v}" for k, v in values.items() if v is not None]
    fixes = []
    if values["user.max_user_namespaces"] == "0":
        fixes.append("sysctl -w user.max_user_namespaces=15000")
    if values["kernel.unprivileged_userns_clone"] == "0":
        fixes.append("sysctl -w kernel.unprivileged_userns_clone=1")
    if values["kernel.apparmor_restrict_unprivileged_userns"] == "1":
        fixes.append(
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for unshare)"
        )
    worked, tried = _try_userns(rootless_user())
    evidence.append(tried)
    if fixes or not worked:
        return [
            Finding(
                "rootless-userns",
                "warning",
                "an ordinary user cannot make a user namespace here: no rootless trial can run",
                evidence="; ".join(evidence),
                fix="; ".join(fixes) + " (persist in /etc/sysctl.d/)" if fixes else "see the unshare error",
                lesson=LESSON_ROOTLESS,
            )
        ]
    return [
        Finding(
            "rootless-userns",
            "ok",
            "unprivileged user namespaces work",
            evidence="; ".join(evidence),
            lesson=LESSON_ROOTLESS,
        )
    ]


@check("rootless-fuse", inspects="/dev/fuse (type, mode), fusermount3", explains=("failure", "io"))
def check_dev_fuse() -> list[Finding]:
    try:
        st = os.stat("/dev/fuse")
    except OSError as exc:
        return [
            Finding(
                "rootless-fuse",
                "warning",
                "/dev/fuse is missing: fuse-overlayfs and bindfs cannot mount (rootless storage falls back to vfs)",
                evidence=str(exc),
                fix="modprobe fuse (in a container: --device /dev/fuse)",
                lesson=LESSON_ROOTLESS,
            )
        ]
    mode = stat.S_IMODE(st.st_mode)
    evidence = (
        f"/dev/fuse: {'character device' if stat.S_ISCHR(st.st_mode) else 'not a device'}, mode {mode:o}"
    )
    if not stat.S_ISCHR(st.st_mode) or mode & 0o006 != 0o006:
        return [
            Finding(
                "rootless-fuse",
                "warning",
                "/dev/fuse is not readable and writable by every user: rootless FUSE mounts fail",
                evidence=evidence,
                fix="chmod 0666 /dev/fuse (udev's default)",
                lesson=LESSON_ROOTLESS,
            )
        ]
    return [
        Finding(
            "rootless-fuse",
            "ok",
            "/dev/fuse is usable by ordinary users",
            evidence=evidence,
            lesson=LESSON_ROOTLESS,
        )
    ]


@check(
    "rootless-cgroup",
    inspects="/sys/fs/cgroup (cgroup.controllers), the user's user@UID.service cgroup (owner, "
    "cgroup.subtree_control)",
    explains=("cpu", "failure"),
)
def check_cgroup_delegation() -> list[Finding]:
    user = rootless_user()
    unified = (CGROUP / "cgroup.controllers").exists()
    if not unified:
        return [
            Finding(
                "rootless-cgroup",
                "warning",
                "cgroup v1 (or hybrid): no cgroup can be delegated to an ordinary user safely, so a rootless "
                "trial cannot have a CPU quota or cpuset (the cpu-quota and cpuset layers are refused "
                "with the rootless layer)",
                evidence=f"{CGROUP / 'cgroup.controllers'} does not exist (the unified hierarchy is not mounted "
                "there)",
                fix="boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2) and delegate the user's "
                "subtree (systemd does for user@.service: Delegate=yes)",
                lesson=LESSON_ROOTLESS,
            )
        ]
    if user is None:
        return [
            Finding(
                "rootless-cgroup",
                "info",
                "cgroup v2; no rootless user to check",
                evidence=NO_USER_EVIDENCE,
                lesson=LESSON_ROOTLESS,
            )
        ]
    uid = pwd.getpwnam(user).pw_uid
    service = CGROUP / "user.slice" / f"user-{uid}.slice" / f"user@{uid}.service"
    try:
        owner = service.stat().st_uid
        controllers = _read(service / "cgroup.subtree_control") or _read(service / "cgroup.controllers") or ""
    except OSError:
        return [
            Finding(
                "rootless-cgroup",
                "warning",
                f"cgroup v2, but no cgroup is delegated to {user}: rootless trials get no CPU quota or cpuset",
                evidence=f"{service} does not exist (no systemd user session for {user})",
                fix=f"loginctl enable-linger {user} (systemd starts user@{uid}.service with Delegate=yes)",
                lesson=LESSON_ROOTLESS,
            )
        ]
    delegated = owner == uid and "cpu" in controllers.split()
    return [
        Finding(
            "rootless-cgroup",
            "ok" if delegated else "warning",
            f"cgroup v2 subtree delegated to {user}" + ("" if delegated else " without the cpu controller"),
            evidence=f"{service}: owner uid {owner}, controllers: {controllers or 'none'}",
            fix=""
            if delegated
            else "systemctl edit user@.service: [Service] Delegate=cpu cpuset io memory pids",
            lesson=LESSON_ROOTLESS,
        )
    ]
