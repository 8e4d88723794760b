"""Issue 26, case 11 (Markdown): names and values from plans and stores are shown by a Markdown report,
never interpreted by the program that renders it: no HTML, no remote image, no link, no extra table cell,
no terminal escape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nearmetal.api import load_results
from nearmetal.metrics import Metric
from nearmetal.report.markdown import _escape, markdown_report
from nearmetal.store import Store

HOSTILE = {
    "script": "<script>alert(1)</script>",
    "img": '<img src=x onerror="alert(1)">',
    "image": "![t](http://evil.example/p.png)",
    "link": "[click](javascript:alert(1))",
    "pipe": "a | b | c",
    "esc": "x\x1b[2J\x1b]52;c;cHduZWQ=\x07y",
    "code": "`rm -rf /`",
    "refdef": "[95% CI]: http://evil.example/",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_value_is_shown_as_text(name: str) -> None:
    text = _escape(HOSTILE[name], line_start=True)
    assert "<" not in text and ">" not in text and "\x1b" not in text and "\x07" not in text
    assert "](" not in text.replace("\\](", "")
    assert not re.search(r"(?<!\\)\|", text) and not re.search(r"(?<!\\)`", text)
    assert not text.startswith("[")


def test_a_crafted_store_makes_an_inert_markdown_report(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    run_id = "20260101-000000-abcd"
    store.create_run(
        id=run_id,
        name="x",
        description=HOSTILE["refdef"] + " " + HOSTILE["script"],
        plan_text="name: x\n# ```\n# </details><script>alert(2)</script>\n",
        plan_source=HOSTILE["img"],
        plan_hash="0" * 64,
        started_at=1_700_000_000.0,
        info={},
    )
    seq = 0
    for variant, baseline in ((HOSTILE["image"], True), (HOSTILE["script"] + HOSTILE["pipe"], False)):
        for i in range(3):
            seq += 1
            store.add_trial(
                [Metric("wall_s", 1.0 + 0.1 * i + (0 if baseline else 0.5), "s", "lower")],
                run_id=run_id,
                trial_key=f"{seq}",
                cell_id=f"c{int(baseline)}",
                cell_key="k",
                comparison_key="[]",
                workload=HOSTILE["link"],
                kind="command",
                variant=variant,
                is_baseline=baseline,
                params={},
                point={},
                layers=[],
                repeat_index=i,
                is_warmup=False,
                block=i,
                seq=seq,
                status="ok" if i < 2 or baseline else "failed",
                error=None if i < 2 or baseline else HOSTILE["esc"] + HOSTILE["img"],
                started_at=1_700_000_000.0 + seq,
                ended_at=1_700_000_000.5 + seq,
                output_dir="",
                placement={},
                caveats=[],
            )
    store.set_environment(run_id, {HOSTILE["code"]: HOSTILE["esc"] + HOSTILE["image"]})
    text = markdown_report(load_results(run_id, store=store))
    body, _, plan = text.partition("```yaml")
    assert "<script" not in body and "<img" not in body and "&lt;img src=x onerror=" in body
    unescaped = re.sub(r"\\\]\(", "", body)  # "\](" is text: no link or image starts there
    assert "](http" not in unescaped and "](javascript" not in unescaped and "![t\\](http" in body
    assert "\x1b" not in text and "\x07" not in text
    assert "\n[95% CI]:" not in body
    # the fence holds the plan to its end: no line of the plan can close it
    fenced, _, after = plan.partition("\n```\n")
    assert "```" not in fenced and after.strip() == "</details>"
    # every table row has as many cells as its header
    for table in re.findall(r"(?:^\|.*\|$\n?)+", body, flags=re.M):
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.strip().splitlines()}
        assert len(widths) == 1, table
