"""Text from plans, workloads, stores and child processes, made safe to print.

Such text is data: it is never read as rich markup (``[/]`` in a metric's regex is text, not a closing tag)
and never reaches a terminal as control characters (``ESC [2J`` clears a screen, ``ESC ]52;…`` writes the
clipboard, a C1 ``CSI`` does the same on some terminals, bidi overrides reorder what is shown). Control
characters other than tab and line feed become a visible ``\\xNN`` (``\\u202e`` for a bidi override).

Every console nearmetal makes is a ``SafeConsole``: whatever string it renders has its control characters
made visible first, and a string that is not valid markup is printed as it is instead of raising
``MarkupError``. Code that puts data into a markup string still escapes it (``plain``): a console someone
else made (a notebook's) has no such net.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape

# C0 controls except tab and line feed, DEL, C1 controls, and the Unicode bidi embeddings/overrides/isolates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def strip_controls(text: object) -> str:
    """``text`` as a string with every control character shown as ``\\xNN`` (tab and line feed kept)."""
    return _CONTROL.sub(_visible, str(text))


def one_line_text(text: object) -> str:
    """``strip_controls`` and line breaks shown as ``\\n`` too: for a value inside one line."""
    return strip_controls(str(text).replace("\r", "\\r").replace("\n", "\\n"))


def plain(text: object) -> str:
    """Data to put into a rich markup string: control characters made visible, markup escaped."""
    return escape(strip_controls(text))


class SafeConsole(Console):
    """A rich console whose rendered strings never carry raw control characters, and whose markup errors
    (data that looks like a tag) fall back to the string as plain text."""

    def render_str(self, text: str, *args: Any, **kwargs: Any) -> Any:
        text = strip_controls(text)
        try:
            return super().render_str(text, *args, **kwargs)
        except MarkupError:
            return super().render_str(text, *args, **{**kwargs, "markup": False})
