"""A real YAML language server (the one VS Code's and Neovim's YAML support run) driven over stdio, to see
the diagnostics an editor would show for a document."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

# validation on, and no schemas fetched from the network: only the document's own $schema line counts
SETTINGS = {"validate": True, "schemaStore": {"enable": False}}


def yaml_language_server() -> str | None:
    return os.environ.get("YAML_LANGUAGE_SERVER") or shutil.which("yaml-language-server")


class LanguageServer:
    def __init__(self, program: str) -> None:
        self.proc = subprocess.Popen(
            [program, "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._next = 0
        self.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": {"yaml": SETTINGS}})

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        header = b""
        while b"\r\n\r\n" not in header:
            if time.time() > deadline:
                raise TimeoutError("the language server did not answer in time")
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 1)
                if not chunk:
                    raise RuntimeError("the language server exited")
                header += chunk
        length = next(
            int(line.split(":")[1])
            for line in header.decode().split("\r\n")
            if line.lower().startswith("content-length")
        )
        body = b""
        while len(body) < length:
            body += os.read(fd, length - len(body))
        message: dict[str, Any] = json.loads(body)
        if "id" in message and "method" in message:  # a request of the server's own: answer it
            result: Any = None
            if message["method"] == "workspace/configuration":
                result = [SETTINGS for _ in message["params"]["items"]]
            self._send({"id": message["id"], "result": result})
        return message

    def request(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        self._next += 1
        self._send({"id": self._next, "method": method, "params": params})
        deadline = time.time() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == self._next and "method" not in message:
                return message.get("result")

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"method": method, "params": params})

    def diagnostics(self, path: Path, text: str | None = None, timeout: float = 60) -> list[dict[str, Any]]:
        """What the editor marks in the document (``text``, or the file's own), as published for it."""
        uri = path.resolve().as_uri()
        document = {
            "uri": uri,
            "languageId": "yaml",
            "version": 1,
            "text": text if text is not None else path.read_text(),
        }
        self.notify("textDocument/didOpen", {"textDocument": document})
        deadline = time.time() + timeout
        while True:
            message = self._read(deadline)
            if message.get("method") == "textDocument/publishDiagnostics" and message["params"]["uri"] == uri:
                self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
                found: list[dict[str, Any]] = message["params"]["diagnostics"]
                return found

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
