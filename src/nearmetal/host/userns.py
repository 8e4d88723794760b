"""User namespaces an ordinary user owns: what a rootless trial runs in.

A rootless platform (rootless Podman, Usernetes) makes a user namespace (``unshare --user``; the user's
subordinate ranges from ``/etc/subuid``/``/etc/subgid`` mapped by the setuid ``newuidmap``/``newgidmap``) with
a mount namespace it owns, and is root there: FUSE and overlay mounts made there are invisible to the host and
vanish with the namespace, network namespaces made there are served by slirp4netns or pasta running as the
user. A rootless trial's child nearmetal runs inside such a namespace (``nearmetal.run.asuser``), so the layers'
own code runs unchanged as the namespace's root.

A leaf module: standard library and nearmetal's error type only.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from nearmetal.errors import NearmetalError

# the uid map of the initial user namespace: every id maps to itself
INITIAL_MAP = ("0", "0", "4294967295")


def subid_range(user: str, path: Path) -> tuple[int, int] | None:
    """(first id, count) of the user's subordinate range in /etc/subuid or /etc/subgid (by name or uid)."""
    try:
        uid = str(pwd.getpwnam(user).pw_uid)
        lines = path.read_text().splitlines()
    except (KeyError, OSError):
        return None
    for line in lines:
        parts = line.strip().split(":")
        valid = len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit()
        if valid and parts[0] in (user, uid) and int(parts[2]) > 0:
            return int(parts[1]), int(parts[2])
    return None


def has_subids(user: str) -> bool:
    return bool(subid_range(user, Path("/etc/subuid")) and subid_range(user, Path("/etc/subgid")))


def current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def uid_map(pid: int | str = "self") -> str:
    try:
        return Path(f"/proc/{pid}/uid_map").read_text()
    except OSError:
        return ""


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the initial one."""
    lines = uid_map().split()
    return bool(lines) and tuple(lines) != INITIAL_MAP


def host_uid(uid_inside: int, map_text: str) -> int | None:
    """The uid on the host of ``uid_inside`` under a /proc/PID/uid_map text."""
    for line in map_text.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            inside, outside, count = map(int, parts)
            if inside <= uid_inside < inside + count:
                return outside + uid_inside - inside
    return None


def unshare_argv(user: str, mapping: str) -> tuple[list[str], str]:
    """The argv prefix that runs a program as root of a new user namespace (with a private mount namespace)
    owned by ``user`` (who runs it), and the mapping chosen. ``mapping``: ``auto`` maps the user's
    subordinate ranges when it has them, ``subids`` insists on them, ``self`` maps only the user."""
    if mapping == "subids" and not has_subids(user):
        raise NearmetalError(
            f"user {user} has no subordinate id range in /etc/subuid and /etc/subgid",
            fix=f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} (as root); "
            "nearmetal doctor --check rootless-subids",
        )
    chosen = "subids" if mapping in ("auto", "subids") and has_subids(user) else "self"
    argv = ["unshare", "--user", "--mount", "--propagation", "private", "--map-root-user"]
    if chosen == "subids":
        # newuidmap/newgidmap map the ranges of /etc/subuid and /etc/subgid too (util-linux ≥ 2.38)
        argv.append("--map-auto")
    return [*argv, "--"], chosen
