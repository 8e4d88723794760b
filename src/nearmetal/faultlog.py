"""The file in a trial's directory where the fault layer records what it did and when (one JSON object a
line: ``{"time": epoch seconds, "kind": "fault-injected" | "fault-healed" | …, "detail": {...}}``), so the
workload's parser can align its request log with the faults without knowing which layer made them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAULTS_FILE = "faults.jsonl"


def append(trial_dir: Path, event: dict[str, Any]) -> None:
    with open(trial_dir / FAULTS_FILE, "a") as f:
        f.write(json.dumps(event, default=str) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    """The events of a faults file; lines that are not JSON objects (a write cut short) are skipped."""
    events = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "time" in event and "kind" in event:
            events.append(event)
    return events
