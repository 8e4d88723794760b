"""Paths root can trust: the one rule every path nearmetal touches on the host goes through (issue 26).

A path is a sequence of lookups, and between a check and a use another user can change any directory along it
that they can write (a symlink swapped in, a directory exchanged with ``renameat2(RENAME_EXCHANGE)``). So:

- directories of nearmetal's own state (locks, staging) are made or verified with :func:`private_dir`: owned by
  this process's user, mode 0700 (0711 where another user must only pass through), not a link, and every
  directory above owned by root or this user and writable by nobody else (a sticky world-writable one such as
  /tmp is allowed on the way, but what lies in it must then be owned by root or this user);
- paths are walked one component at a time with directory descriptors (``openat`` with ``O_NOFOLLOW``;
  ``openat2`` with ``RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`` where the kernel has it), so no link is ever
  followed: :func:`open_dir`, :func:`mkdir_beneath`, :func:`open_beneath` (regular files only, ``O_NONBLOCK``
  so a FIFO cannot hang the open);
- a mount is removed by what was mounted (:func:`unmount`): reached without following links, its mount ID
  compared with the one mountinfo listed, and unmounted through its descriptor.

A leaf module: standard library only, so every other module can use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
from pathlib import Path

from nearmetal.errors import NearmetalError  # a leaf too (no imports)

O_PATH = getattr(os, "O_PATH", 0o10000000)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
# openat2(2): linux/openat2.h
_SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64 (new syscalls share one table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class UnsafePathError(NearmetalError):
    """A path another user controls (or that changed under us): refused, one line naming it and its owner."""


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _trusted_uids() -> tuple[int, ...]:
    return (0, os.geteuid())


def others_can_write(st: os.stat_result) -> bool:
    """Writable by a group or everyone (ACLs aside: their mask shows in the group bits)."""
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _is_sticky_shared(st: os.stat_result) -> bool:
    return bool(st.st_mode & stat.S_ISVTX) and others_can_write(st)


def _check_step(path: str, st: os.stat_result, parent_sticky: bool) -> None:
    """A directory on the way to (or at) where root writes: owned by root or this user, writable by nobody else
    unless sticky (/tmp); below a sticky one, owned by root or this user (else its owner can swap it)."""
    if st.st_uid not in _trusted_uids():
        why = "in a directory everyone can write" if parent_sticky else "on the way"
        raise UnsafePathError(
            f"{path} is owned by {_owner(st.st_uid)}, not by root or this user ({why}): another user could "
            "redirect what nearmetal writes there; refused",
            fix="use a directory that only root or you own and can write",
        )
    if others_can_write(st) and not st.st_mode & stat.S_ISVTX:
        raise UnsafePathError(
            f"{path} (owner {_owner(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):o}) can be written by other "
            "users, who could swap what nearmetal writes below it for a link; refused",
            fix=f"chmod go-w {path}, or use another directory",
        )


def _components(path: str | os.PathLike[str]) -> list[str]:
    text = os.fspath(path)
    if not text.startswith("/"):
        text = os.path.join(os.getcwd(), text)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"{text} has a '..' component; give the path without it")
    return parts


def open_dir(
    path: str | os.PathLike[str],
    *,
    create_mode: int | None = None,
    check: bool = True,
    flags: int = DIR_FLAGS,
) -> int:
    """A descriptor of the directory ``path``, reached from / one component at a time without following any
    link (a link on the way: ``UnsafePathError``). ``check``: every directory on the way must be one only root
    or this user can change (:func:`_check_step`). ``create_mode``: missing directories are made with it."""
    parts = _components(path)
    fd = os.open("/", flags)
    walked = ""
    try:
        st = os.fstat(fd)
        sticky = False
        for name in parts:
            if check:
                _check_step(walked or "/", st, sticky)
            sticky = _is_sticky_shared(st)
            walked += "/" + name
            try:
                nxt = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, create_mode, dir_fd=fd)
                nxt = os.open(name, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        f"{walked} is not a directory (a symbolic link or a file); nearmetal does not follow "
                        "links on the way to what it writes; refused",
                        fix="give the real directory's path",
                    ) from None
                raise
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
        if check:
            _check_step(walked or "/", st, sticky)
        return fd
    except BaseException:
        os.close(fd)
        raise


def private_dir(path: str | os.PathLike[str], mode: int = 0o700, *, check_parents: bool = True) -> int:
    """Create or verify the directory ``path`` as this user's own: owned by the effective uid, ``mode`` (0700,
    or 0711 where another user must only pass through), not a link, every directory above safe
    (:func:`open_dir`). Returns its descriptor. One line naming the path and its owner otherwise."""
    parts = _components(path)
    name = parts[-1] if parts else ""
    parent = "/" + "/".join(parts[:-1])
    full = "/" + "/".join(parts)
    pfd = open_dir(parent, create_mode=0o755, check=check_parents)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=pfd)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(
                    f"{full} is a symbolic link or a file, not a directory nearmetal made; refused",
                    fix=f"remove {full} (check who made it)",
                ) from None
            raise
    finally:
        os.close(pfd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePathError(
            f"{full} is owned by {_owner(st.st_uid)}, not by {_owner(os.geteuid())}: another user made it "
            "first; refused",
            fix=f"remove {full} (check who made it and why)",
        )
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def check_tree(path: str | os.PathLike[str], *, create_mode: int | None = None) -> None:
    """Raise ``UnsafePathError`` unless ``path`` and every directory above it can be changed only by root
    or this user (missing directories are made with ``create_mode`` when given)."""
    os.close(open_dir(path, create_mode=create_mode))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works: bool | None = None


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """``openat2(2)``; ``OSError(ENOSYS)`` where the kernel lacks it."""
    global _openat2_works
    if _openat2_works is False:
        raise OSError(errno.ENOSYS, "openat2")
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, resolve)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:
            _openat2_works = False  # seccomp filters answer EPERM or ENOSYS
        raise OSError(err, os.strerror(err), path)
    _openat2_works = True
    return int(fd)


def _relparts(relpath: str | os.PathLike[str]) -> list[str]:
    text = os.fspath(relpath)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if text.startswith("/") or ".." in parts or not parts:
        raise UnsafePathError(f"{text!r} is not a path beneath a directory")
    return parts


def _open_rel(dirfd: int, relpath: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """Open ``relpath`` beneath ``dirfd`` following no link: openat2 when the kernel has it, else a walk."""
    parts = _relparts(relpath)
    with _suppress_nosys():
        return openat2(dirfd, "/".join(parts), flags, mode, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    fd = dirfd
    try:
        for name in parts[:-1]:
            nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            if fd != dirfd:
                os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)
    finally:
        if fd != dirfd:
            os.close(fd)


class _suppress_nosys:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return isinstance(exc, OSError) and exc.errno == errno.ENOSYS


def mkdir_beneath(dirfd: int, relpath: str | os.PathLike[str], mode: int = 0o700) -> int:
    """Make (or open) the directory ``relpath`` beneath ``dirfd``, component by component, following no
    link; its descriptor."""
    fd = dirfd
    try:
        for name in _relparts(relpath):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=fd)
            try:
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        f"{relpath} has a link or a file where a directory belongs"
                    ) from None
                raise
            if fd != dirfd:
                os.close(fd)
            fd = nxt
        out, fd = fd, dirfd
        return out
    finally:
        if fd != dirfd:
            os.close(fd)


def open_beneath(
    dirfd: int, relpath: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o600
) -> int:
    """A regular file beneath ``dirfd`` (``O_NOFOLLOW|O_CLOEXEC``, no link anywhere on the way), opened
    ``O_NONBLOCK`` so a FIFO cannot hang the open, the flag then cleared. Anything but a regular file:
    ``UnsafePathError``."""
    try:
        fd = _open_rel(dirfd, relpath, flags | FILE_FLAGS, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
            raise UnsafePathError(f"{relpath} is reached through a link; refused") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePathError(f"{relpath} is not a regular file; refused")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A regular file at ``path`` whose last component is no link (``O_NOFOLLOW|O_NONBLOCK``): for files in a
    directory already verified (:func:`private_dir`)."""
    fd = os.open(path, flags | FILE_FLAGS, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file; refused")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def nofollow_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open`: a link at the last component is refused (``ELOOP``), never written
    through; for files in a directory already verified."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


# --- mounts ------------------------------------------------------------------------------------------------


def mount_id_of_fd(fd: int) -> int | None:
    """The ID (as in mountinfo) of the mount ``fd`` lies in."""
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("mnt_id:"):
            return int(line.split()[1])
    return None


def _mount_listed(mount_id: int) -> bool:
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return True
    return any(line.split(" ", 1)[0] == str(mount_id) for line in text.splitlines())


def open_path_nofollow(path: str | os.PathLike[str]) -> int:
    """An ``O_PATH`` descriptor of ``path``, reached from / one component at a time, following no link (not
    even the last component: a link there is refused)."""
    parts = _components(path)
    fd = os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            flags = O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
            try:
                nxt = os.open(name, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        f"{'/' + '/'.join(parts[: i + 1])} is a link or a file on the way to {path}; refused"
                    ) from None
                raise
            os.close(fd)
            fd = nxt
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise UnsafePathError(f"{path} is a symbolic link; refused")
        return fd
    except BaseException:
        os.close(fd)
        raise


def unmount(mount_point: str, mount_id: int | None = None, *, lazy: bool = False) -> None:
    """Unmount the mount at ``mount_point`` — the one mountinfo listed with ``mount_id`` when given — so that a
    directory swapped for a link on the way can never redirect the unmount to another mount: the directory
    above it is reached without following a link and held by a descriptor, the mount's ID checked through
    that descriptor, and ``umount2(/proc/self/fd/N/NAME, UMOUNT_NOFOLLOW)`` unmounts what is at NAME in
    exactly that directory (a mounted-on name cannot be renamed away). ``UnsafePathError`` when the path no
    longer leads to that mount (left alone); ``OSError`` from umount2 (EBUSY …) otherwise."""
    parts = _components(mount_point)
    if not parts:
        raise UnsafePathError("nearmetal never unmounts /")
    pfd = open_path_nofollow("/" + "/".join(parts[:-1]))
    try:
        try:
            fd = os.open(parts[-1], O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        except FileNotFoundError:
            raise UnsafePathError(f"{mount_point} is gone") from None
        except OSError as exc:
            # a FUSE mount whose daemon died (ENOTCONN) cannot be looked into: the directory above it was
            # reached without a link, and NAME in it is its mount point
            if exc.errno not in (errno.ENOTCONN, errno.EIO):
                raise
            fd = -1
        found = mount_id
        if fd >= 0:
            try:
                # (a link opened O_PATH lies in its directory's mount: the IDs differ, refused below)
                with contextlib.suppress(OSError):  # fstat of a dead FUSE mount: ENOTCONN
                    if stat.S_ISLNK(os.fstat(fd).st_mode):
                        raise UnsafePathError(f"{mount_point} is a symbolic link now; left alone")
                found = mount_id_of_fd(fd)
            finally:
                os.close(fd)
        if mount_id is not None and found != mount_id:
            if not _mount_listed(mount_id):
                return  # unmounted meanwhile (a FUSE daemon's auto_unmount helper)
            raise UnsafePathError(
                f"{mount_point} no longer leads to the mount nearmetal found there (mount {mount_id}, now "
                f"{found}): something changed the path; left alone"
            )
        libc = _libc()
        target = os.fsencode(f"/proc/self/fd/{pfd}/{parts[-1]}")
        rc = libc.umount2(target, (MNT_DETACH if lazy else 0) | UMOUNT_NOFOLLOW)
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), mount_point)
    finally:
        os.close(pfd)


def unmount_path(mount_point: str, mount_id: int | None = None) -> bool:
    """:func:`unmount`, lazily when the mount stays busy; False when it was refused or failed."""
    for lazy in (False, True):
        try:
            unmount(mount_point, mount_id, lazy=lazy)
            return True
        except UnsafePathError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EBUSY,):
                return False
    return False


def unlink_beneath(dirfd: int, name: str) -> None:
    """Remove the entry ``name`` (a file or a link, never what a link points to) of the directory ``dirfd``."""
    if "/" in name or name in ("", ".", ".."):
        raise UnsafePathError(f"{name!r} is not a name in a directory")
    os.unlink(name, dir_fd=dirfd)


def remove_entry(dirfd: int, name: str) -> None:
    """Remove ``name`` beneath ``dirfd`` whatever it is — a link or a file unlinked (never followed), a
    directory removed with everything in it without crossing a link or a mount (``shutil.rmtree`` on a
    descriptor walks with ``O_NOFOLLOW``)."""
    import shutil

    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        unlink_beneath(dirfd, name)
        return
    shutil.rmtree(name, dir_fd=dirfd)


__all__ = [
    "UnsafePathError",
    "check_tree",
    "mkdir_beneath",
    "mount_id_of_fd",
    "open_beneath",
    "open_dir",
    "open_path_nofollow",
    "open_regular",
    "openat2",
    "private_dir",
    "remove_entry",
    "unmount",
]
