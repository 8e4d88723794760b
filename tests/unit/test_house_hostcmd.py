"""One way to run a host program, one way to unmount (issue 32 item 4), checked on the source with ``ast``.

- Only ``nearmetal/host/hostcmd.py`` imports :mod:`subprocess` (or names it): every other module runs a
  host program through ``hostcmd.run``/``output``/``version``/``probe``/``start`` (argv list, timeout,
  errors that name the program). Nowhere ``os.system``, ``os.popen``, ``os.spawn*``, ``os.exec*``,
  ``os.posix_spawn*``, ``pty.spawn`` or ``asyncio.create_subprocess_*``.
- No command line starting with ``umount`` or ``fusermount`` outside ``host/mountinfo.py`` and
  ``host/safefs.py``: a run's mount is removed by what was mounted (``safefs.unmount``, mount-ID checked),
  a user's FUSE mount through ``mountinfo.unmount_fuse``.

A module that must break a rule goes in an allow-list below with a one-line reason. The scan parses only
the modules whose text has a word some rule needs (``MAY_BREAK``: ~25 of ~200; well under a second); the
checker, that filter included, also runs on synthetic sources, so a rule that stopped matching fails here.
"""

from __future__ import annotations

import ast
import re
import time

import pytest
from conftest import REPO

SRC = REPO / "src"

# module (path under src/) → why it may use subprocess directly
SUBPROCESS_ALLOWED: dict[str, str] = {
    "nearmetal/host/hostcmd.py": "the one host-command helper: everything else runs programs through it",
}
# module → why it may build an umount/fusermount command line
UNMOUNT_ALLOWED: dict[str, str] = {
    "nearmetal/host/mountinfo.py": "unmount_fuse: a user's FUSE mount, which only the setuid fusermount may remove",
    "nearmetal/host/safefs.py": "unmount: umount2 by mount ID through a descriptor (no argv, but its home)",
}

FORBIDDEN_CALLS = {
    "os": ("system", "popen", "spawn", "execl", "execv", "posix_spawn"),
    "pty": ("spawn",),
    "asyncio": ("create_subprocess_",),
}
UNMOUNT_PROGRAMS = ("umount", "fusermount")
# every rule needs one of these words in the text: a module without any is not parsed (~1 in 8 has one);
# plain substrings first (fast), then as words
WORDS = ("subprocess", "system", "popen", "spawn", "execl", "execv", "umount", "fusermount")
MAY_BREAK = re.compile(r"subprocess|\bsystem\b|\bpopen\b|spawn|\bexec[lv]|umount|fusermount")


def _forbidden(module: str, name: str) -> bool:
    return any(name == p or name.startswith(p) for p in FORBIDDEN_CALLS.get(module, ()))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def problems_in(source: str, where: str) -> list[str]:
    """What in ``source`` (the text of ``where``, a path under src/) breaks the two rules."""
    if not any(word in source for word in WORDS) or not MAY_BREAK.search(source):
        return []
    tree = ast.parse(source, where)
    may_subprocess = where in SUBPROCESS_ALLOWED
    may_unmount = where in UNMOUNT_ALLOWED
    aliases: dict[str, str] = {}  # local name → the module it is (import os as o)
    found: list[str] = []

    def say(node: ast.AST, what: str) -> None:
        found.append(f"{where}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
                if alias.name.split(".")[0] == "subprocess" and not may_subprocess:
                    say(node, "imports subprocess (run host programs through nearmetal.host.hostcmd)")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module == "subprocess" and not may_subprocess:
                say(node, "imports from subprocess (run host programs through nearmetal.host.hostcmd)")
            for alias in node.names:
                if _forbidden(module, alias.name):
                    say(node, f"imports {module}.{alias.name}")
        elif isinstance(node, ast.Name) and node.id == "subprocess" and not may_subprocess:
            say(node, "names subprocess")
        elif isinstance(node, ast.Attribute) and node.attr == "subprocess" and not may_subprocess:
            say(node, f"reaches subprocess through {_dotted(node)}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                module = aliases.get(func.value.id, func.value.id)
                if _forbidden(module, func.attr):
                    say(node, f"calls {module}.{func.attr}")
            name = _dotted(func)
            if name in ("__import__", "importlib.import_module") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and first.value == "subprocess" and not may_subprocess:
                    say(node, "imports subprocess by name")
        elif isinstance(node, ast.List | ast.Tuple) and node.elts and not may_unmount:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                program = first.value.strip().split(" ", 1)[0].rsplit("/", 1)[-1]
                if program.startswith(UNMOUNT_PROGRAMS):
                    say(node, f"builds a {program!r} command line (unmount through nearmetal.host.mountinfo)")
    return found


def test_every_host_program_goes_through_hostcmd_and_every_unmount_through_one_helper() -> None:
    started = time.perf_counter()
    files = sorted((SRC / "nearmetal").rglob("*.py"))
    problems = []
    for path in files:
        problems += problems_in(path.read_text(), path.relative_to(SRC).as_posix())
    assert not problems, "\n".join(problems)
    assert len(files) > 150  # the scan saw the package
    # the allow-lists name modules that exist (a moved module must take its exception along or lose it)
    for where in (*SUBPROCESS_ALLOWED, *UNMOUNT_ALLOWED):
        assert (SRC / where).is_file(), where
    print(f"scanned {len(files)} modules in {time.perf_counter() - started:.2f}s")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import subprocess\nsubprocess.run(['ls'], timeout=5)\n", "imports subprocess"),
        ("import subprocess as sp\n", "imports subprocess"),
        ("from subprocess import Popen\n", "imports from subprocess"),
        ("from nearmetal.host import hostcmd\nhostcmd.subprocess.run(['ls'])\n", "reaches subprocess"),
        ("import importlib\nimportlib.import_module('subprocess')\n", "imports subprocess by name"),
        ("import os\nos.system('ls')\n", "calls os.system"),
        ("import os as o\no.popen('ls')\n", "calls os.popen"),
        ("import os.path\nos.execvp('ls', ['ls'])\n", "calls os.execvp"),
        ("import os\nos.posix_spawnp('ls', ['ls'], {})\n", "calls os.posix_spawnp"),
        ("from os import system\n", "imports os.system"),
        ("import asyncio\nasyncio.create_subprocess_exec('ls')\n", "calls asyncio.create_subprocess_exec"),
        ("import pty\npty.spawn(['sh'])\n", "calls pty.spawn"),
        ("hostcmd.run(['umount', '-l', point], 10)\n", "builds a 'umount' command line"),
        ("ARGV = ('/bin/umount', '--lazy')\n", "builds a 'umount' command line"),
        ("hostcmd.run(['fusermount3', '-uz', point], 10)\n", "builds a 'fusermount3' command line"),
        ("hostcmd.run(['umount -l /x'], 10)\n", "builds a 'umount' command line"),
    ],
)
def test_the_checker_catches_a_raw_call(source: str, expected: str) -> None:
    found = problems_in(source, "nearmetal/layers/example.py")
    assert any(expected in p for p in found), found


def test_the_checker_passes_what_the_rules_allow() -> None:
    clean = (
        "from nearmetal.host import hostcmd\n"
        "proc = hostcmd.run(['mount', '-t', 'tmpfs', 'x', '/mnt'], 10, check=True)\n"
        "daemon: hostcmd.Process | None = hostcmd.start(['bindfs', '-f', 'a', 'b'], new_session=True)\n"
        "import os.path\nos.kill(1, 0)\n"
        "PROGRAMS = ('fuse-overlayfs', 'fusermount')\n"  # a name in a list, not a command line
    )
    assert problems_in(clean, "nearmetal/layers/example.py") == []
    # the helpers themselves may do what they exist for
    assert problems_in("import subprocess\nsubprocess.run(['ls'])\n", "nearmetal/host/hostcmd.py") == []
    assert problems_in("x = ['fusermount3', '-u', p]\n", "nearmetal/host/mountinfo.py") == []
    # …and only that
    assert problems_in("import os\nos.system('ls')\n", "nearmetal/host/hostcmd.py")
    assert problems_in("import subprocess\n", "nearmetal/host/mountinfo.py")
