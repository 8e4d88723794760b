"""A real headless Chromium, driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no
port, no websocket library). Used to check that an HTML report loads without console errors, that its
plots render, and to take a screenshot of it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the flags /work/.library/env/machines/python.md names: no sandbox as root, no network chatter
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)
    plots_rendered: int = 0
    plot_divs: int = 0
    svg_plots: int = 0
    plot_traces: int = 0
    title: str = ""
    tables: int = 0
    screenshot: Path | None = None
    page_height: int = 0
    remote_requests: list[str] = field(default_factory=list)  # anything not file:, data: or about:


class Chromium:
    def __init__(self, timeout: float = 60.0) -> None:
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="nearmetal-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # the pipe protocol wants the commands on fd 3 and the replies on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3, inheritable=True)
            os.dup2(b, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),  # kept open after wire_fds put the pipes there
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    # protocol -------------------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(
                    f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}"
                )
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for_event(self, method: str, session: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.time() + (timeout or self.timeout)
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # a page ---------------------------------------------------------------------------------------------
    def check_page(self, path: Path, screenshot: Path | None = None, width: int = 1280) -> PageCheck:
        """Open a local HTML file, wait for its plots, collect console errors, optionally screenshot it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self.wait_for_event("Page.loadEventFired", session)
        result = PageCheck()
        deadline = time.time() + self.timeout
        while time.time() < deadline:  # plots are drawn by a script after load
            rendered = self.evaluate(session, "document.body.getAttribute('data-plots-rendered')")
            if rendered is not None:
                result.plots_rendered = int(rendered)
                break
            time.sleep(0.1)
        result.plot_divs = self.evaluate(session, "document.querySelectorAll('div.plot').length")
        result.svg_plots = self.evaluate(  # plots plotly drew (each has <svg class="main-svg"> layers)
            session,
            "Array.from(document.querySelectorAll('div.plot')).filter(e => e.querySelector('svg.main-svg')).length",
        )
        result.plot_traces = self.evaluate(
            session,
            "document.querySelectorAll('div.plot.js-plotly-plot g.trace').length",
        )
        result.title = self.evaluate(session, "document.title")
        result.tables = self.evaluate(session, "document.querySelectorAll('table.loss-table').length")
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                if not url.startswith(("file:", "data:", "about:", "blob:")):
                    result.remote_requests.append(url)
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                result.console_errors.append(
                    details.get("exception", {}).get("description") or details.get("text", "exception")
                )
            elif method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                if params.get("type") in ("error", "assert"):
                    result.console_errors.append(text)
                elif params.get("type") == "warning":
                    result.console_warnings.append(text)
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("level") == "error":
                    result.console_errors.append(
                        f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}"
                    )
                elif entry.get("level") == "warning":
                    result.console_warnings.append(entry.get("text", ""))
        if screenshot is not None:
            metrics = self.send("Page.getLayoutMetrics", session=session)
            height = int(metrics.get("cssContentSize", metrics.get("contentSize", {})).get("height", 900))
            result.page_height = height
            shot = self.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1},
                },
                session=session,
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            result.screenshot = screenshot
        self.send("Target.closeTarget", {"targetId": target})
        return result

    def evaluate(self, session: str, expression: str) -> Any:
        reply = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails'].get('text')}")
        return reply.get("result", {}).get("value")
