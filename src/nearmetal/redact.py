"""Keeping secrets out of what nearmetal stores, prints and publishes.

Environment variables are captured only through an allow-list, and even those pass through here: a value
whose *name* looks secret (TOKEN, SECRET, PASSWORD, KEY, …) is replaced whole; credentials inside values
(``postgresql://user:pw@host``, ``?token=…``, well-known token shapes) are cut out. The same functions clean
store URLs before they are printed and plan text before a report shows it.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSW(?:OR)?D|PASSPHRASE|PWD$|KEY|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|SIGNATURE|CERT",
    re.IGNORECASE,
)
# NAME_PWD would match the PWD rule, but PWD/OLDPWD (the working directory) are not secrets
NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})

# scheme://user:password@host → scheme://user:<redacted>@host
URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):(?P<secret>[^@/\s]*)@")
# scheme://longtoken@host (a token in the user part, as git remotes often carry)
URL_TOKEN_USER = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<secret>[A-Za-z0-9_\-]{20,})@")
# name=value pairs in query strings, argv and shell-like text whose name looks secret
SECRET_ASSIGNMENT = re.compile(
    r"(?P<head>\b[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|credential|signature|sig)[A-Za-z0-9_.-]*=)(?P<secret>(?!<redacted>)[^&\s\"',\]}]+)",
    re.IGNORECASE,
)
# "Authorization: Bearer xyz"
BEARER = re.compile(
    r"(?P<head>\b(?:Bearer|Basic|token)\s+)(?P<secret>[A-Za-z0-9._~+/=-]{12,})", re.IGNORECASE
)
# token formats that are secrets wherever they appear
TOKEN_SHAPES = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[0-9A-Z]{16}|sk-[A-Za-z0-9_\-]{20,}|hf_[A-Za-z0-9]{30,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)
# a command-line flag whose name looks secret and the value after it: `--password X`, `--api-key=X`, and in a
# YAML flow list `"--password", "X"`
SECRET_FLAG_NAME = (
    r"--?[A-Za-z0-9_-]*(?:passw(?:or)?d|passphrase|token|secret|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"credential)s?"
)
SECRET_FLAG = re.compile(
    rf"(?P<head>(?<![\w-]){SECRET_FLAG_NAME}(?:\s+|=|[\"']\s*,\s*[\"']?|\s*,\s*[\"']?))"
    r"(?P<secret>(?!<redacted>)[^\s\"',\]}]+)",
    re.IGNORECASE,
)
SECRET_FLAG_ALONE = re.compile(rf"^{SECRET_FLAG_NAME}$", re.IGNORECASE)
# `KEY: value` inside a YAML flow mapping (`env: {GITHUB_TOKEN: ghp_…, A: b}`)
FLOW_PAIR = re.compile(
    r"(?P<head>[{,]\s*[\"']?(?P<key>[A-Za-z0-9_.-]+)[\"']?\s*:\s+)"
    r"(?P<secret>\"(?:[^\"\\]|\\.)*\"|'(?:[^']|'')*'|[^,}\]\s][^,}\]]*?)(?=\s*[,}\]]|\s*$)"
)
# a YAML block-list item: `- value`
LIST_ITEM = re.compile(r"^(?P<head>\s*-\s+)(?P<value>.*?)\s*$")
# a YAML or INI line whose key looks secret: `password: hunter2`, `API_KEY = abc`
SECRET_KEY_LINE = re.compile(
    r"^(?P<head>\s*-?\s*[\"']?(?P<key>[A-Za-z0-9_.-]+)[\"']?\s*[:=]\s*)(?P<secret>\S.*?)\s*$"
)


def is_secret_name(name: str) -> bool:
    return name.upper() not in NOT_SECRET_NAMES and bool(SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """Cut credentials out of free text: URLs with passwords, secret-named assignments, token shapes."""
    text = URL_CREDENTIALS.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    text = URL_TOKEN_USER.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    text = SECRET_ASSIGNMENT.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = BEARER.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = SECRET_FLAG.sub(lambda m: f"{m['head']}{REDACTED}", text)
    return TOKEN_SHAPES.sub(REDACTED, text)


def redact_data(value: Any) -> Any:
    """A JSON-like value (a workload's parameters, a layer's configuration) as nearmetal may store it: values
    under secret-looking keys replaced whole, the value after a secret-looking flag in a list of arguments
    (``["--password", "X"]``) replaced, credentials inside strings cut out."""
    if isinstance(value, dict):
        return {
            k: REDACTED if is_secret_name(str(k)) and v not in (None, "") else redact_data(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for i, item in enumerate(value):
            before = value[i - 1] if i else None
            secret = isinstance(before, str) and bool(SECRET_FLAG_ALONE.match(before))
            out.append(REDACTED if secret and isinstance(item, str) else redact_data(item))
        return out
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_value(name: str, value: str) -> str:
    """An environment variable's value as nearmetal may store it."""
    if is_secret_name(name):
        return REDACTED
    return redact_text(value)


def redact_url(url: str) -> str:
    """A database URL without its password (``postgresql+psycopg://user:<redacted>@host/db``)."""
    return redact_text(url)


def _flow_pairs(body: str) -> str:
    return FLOW_PAIR.sub(lambda m: f"{m['head']}{REDACTED}" if is_secret_name(m["key"]) else m.group(0), body)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def redact_config_text(text: str) -> str:
    """Plan YAML (or any key: value text) with secret-named keys' values (block or flow style, block scalars
    included), the value after a secret-looking flag, and inline credentials removed."""
    lines = []
    block_indent: int | None = None  # inside a `password: |` block scalar: its lines go
    flag_before = False  # the previous line was a list item `- --password`
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        if block_indent is not None:
            if not body.strip() or _indent(body) > block_indent:
                lines.append((" " * _indent(body) + REDACTED if body.strip() else body) + ending)
                continue
            block_indent = None
        match = SECRET_KEY_LINE.match(body)
        item = LIST_ITEM.match(body)
        if match and is_secret_name(match["key"]):
            if match["secret"].startswith(("|", ">")):
                block_indent = _indent(body)
            elif not match["secret"].startswith(("{", "[")):
                body = f"{match['head']}{REDACTED}"
        elif flag_before and item and item["value"] and not item["value"].startswith(("{", "[")):
            body = f"{item['head']}{REDACTED}"
        flag_before = bool(item and SECRET_FLAG_ALONE.match(item["value"].strip("\"'")))
        lines.append(redact_text(_flow_pairs(body)) + ending)
    return "".join(lines)
