"""One self-contained HTML file per run: plan, environment, loss tables with intervals, and plots.

plotly's JavaScript is embedded (no CDN), so the file opens offline and can be attached to an issue or a
mail as it is. Figures come from the builders in ``report/figures`` (``FIGURES``); this module only draws
their specs with plotly.
"""

from __future__ import annotations

import datetime
import functools
import html
import json
import time
from pathlib import Path
from typing import Any

from nearmetal.api import Results
from nearmetal.redact import redact_config_text, redact_text
from nearmetal.report.assemble import assemble
from nearmetal.report.figures import FigureProblem, FigureSpec, Series, build_figures
from nearmetal.report.tables import (
    Table,
)

REPORT_NAME = "report.html"
CONTENDED_GREY = "#bdbdbd"
TEMPLATE = "plotly_white"


def _error_y(series: Series) -> dict[str, Any] | None:
    if series.low is None or series.high is None:
        return None
    plus = [
        None if h is None or y is None else max(0.0, h - y)
        for y, h in zip(series.y, series.high, strict=True)
    ]
    minus = [
        None if lo is None or y is None else max(0.0, y - lo)
        for y, lo in zip(series.y, series.low, strict=True)
    ]
    if all(v is None for v in plus + minus):
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": plus,
        "arrayminus": minus,
        "thickness": 1.5,
        "width": 6,
    }


def plotly_trace(series: Series) -> dict[str, Any]:
    """A plotly trace (as plain JSON) for one series."""
    color = series.color
    trace: dict[str, Any] = {"name": series.name, "x": list(series.x), "y": list(series.y)}
    if series.text is not None:
        trace["text"] = list(series.text)
        trace["hovertemplate"] = "%{text}<extra></extra>"
    if series.kind == "bar":
        trace.update(type="bar", marker={"color": color} if color else {})
        if series.hatched:  # contended cells: grey, hatched
            trace["marker"] = {
                "color": [CONTENDED_GREY if h else (color or "#636efa") for h in series.hatched],
                "pattern": {"shape": ["/" if h else "" for h in series.hatched], "fgcolor": "#555"},
            }
        if series.text is not None:
            trace["textposition"] = "none"  # the text is for hovering, not printed over the bar
        if (err := _error_y(series)) is not None:
            trace["error_y"] = err
    elif series.kind in ("line", "scatter"):
        trace.update(type="scatter", mode="lines+markers" if series.kind == "line" else "markers")
        if color:
            trace["marker"] = {"color": color, "size": 7}
            trace["line"] = {"color": color}
        if series.dashed:
            trace.setdefault("line", {})["dash"] = "dash"
        if (err := _error_y(series)) is not None:
            trace["error_y"] = err
    elif series.kind == "box":
        # every value drawn beside its box, so a single outlier is as visible as the spread
        trace.update(type="box", boxpoints="all", jitter=0.35, pointpos=0, boxmean=True)
        if color:
            trace["marker"] = {"color": color, "size": 6, "opacity": 0.8}
            trace["line"] = {"color": color}
    else:
        raise ValueError(f"series {series.name!r}: unknown kind {series.kind!r}")
    return trace


def plotly_figure(spec: FigureSpec) -> dict[str, Any]:
    """A plotly figure (``{"data", "layout"}``) for a spec; validated by plotly's own figure class."""
    import plotly.graph_objects as go

    xaxis: dict[str, Any] = {"title": {"text": spec.x_label}, "type": spec.x_type, "automargin": True}
    if spec.x_ticks:
        xaxis.update(
            tickmode="array", tickvals=[t[0] for t in spec.x_ticks], ticktext=[t[1] for t in spec.x_ticks]
        )
    yaxis: dict[str, Any] = {"title": {"text": spec.y_label}, "type": spec.y_type, "automargin": True}
    if spec.y_type == "log":
        yaxis["dtick"] = "D2"  # 1, 2, 5 per decade: readable without a label at every minor tick
    if spec.hlines and spec.y_type == "linear":
        yaxis["zeroline"] = True
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for band in spec.bands:
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": band.x0,
                "x1": band.x1,
                "y0": 0,
                "y1": 1,
                "fillcolor": band.color,
                "line": {"width": 0},
                "layer": "below",
            }
        )
        if band.label:
            annotations.append(
                {
                    "x": band.x0,
                    "xref": "x",
                    "y": 1,
                    "yref": "paper",
                    "text": band.label,
                    "showarrow": False,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "font": {"size": 11},
                }
            )
    for line in spec.hlines:
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "yref": "y",
                "y0": line.y,
                "y1": line.y,
                "line": {"color": "#444", "width": 1, "dash": "dot"},
            }
        )
        if line.label:
            annotations.append(
                {
                    "x": 1,
                    "xref": "paper",
                    "y": line.y,
                    "yref": "y",
                    "text": line.label,
                    "showarrow": False,
                    "xanchor": "right",
                    "yanchor": "bottom",
                    "font": {"size": 11},
                }
            )
    has_box = any(s.kind == "box" for s in spec.series)
    layout: dict[str, Any] = {
        "title": {"text": spec.title, "x": 0.01, "xanchor": "left"},
        "xaxis": xaxis,
        "yaxis": yaxis,
        "height": 420,
        "margin": {"l": 70, "r": 20, "t": 60, "b": 60},
        "legend": {"orientation": "h", "y": -0.2},
        "shapes": shapes,
        "annotations": annotations,
        "barmode": "group" if spec.grouped else "overlay",
        "hovermode": "closest",
    }
    if has_box:
        layout["boxmode"] = "group" if spec.grouped else "overlay"
    # validated by plotly (a misspelt property raises here, not silently in the browser); the template is
    # the same for every figure, so the page sets it once (see RENDER_SCRIPT) and it is left out here
    figure = go.Figure(data=[plotly_trace(s) for s in spec.series], layout=layout, skip_invalid=False)
    out: dict[str, Any] = figure.to_plotly_json()
    out["layout"].pop("template", None)
    return out


def _template() -> dict[str, Any]:
    import plotly.io

    template: dict[str, Any] = plotly.io.templates[TEMPLATE].to_plotly_json()
    return template


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _json_for_script(value: Any) -> str:
    """JSON that is safe inside <script>: no '</script>' or HTML comment can close it early."""
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table_html(table: Table) -> str:
    head = "".join(
        f'<th class="{"l" if i in (0, len(table.headers) - 1) else "r"}">{_e(h)}</th>'
        for i, h in enumerate(table.headers)
    )
    body = []
    for row, sig in zip(table.rows, table.significance or [None] * len(table.rows), strict=True):
        cls = ' class="loss"' if sig and not row[-1].endswith("gain") else (' class="gain"' if sig else "")
        cells = "".join(
            f'<td class="{"l" if i in (0, len(row) - 1) else "r"}">{_e(c)}</td>' for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in table.notes)
    if table.findings:
        items = "".join(f"<li>{_e(f)}</li>" for f in table.findings)
        notes += f'<div class="causes">Possible causes found by <code>nearmetal doctor</code>:<ul>{items}</ul></div>'

    return (
        f'<h3>{_e(table.title)}</h3><table class="loss-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>{notes}"
    )


def _figure_html(spec: FigureSpec, index: int) -> str:
    caption = f"<figcaption>{_e(spec.caption)}</figcaption>" if spec.caption else ""
    return (
        f'<figure id="{_e(spec.slug)}" data-builder="{_e(spec.builder)}">'
        f'<div class="plot" id="plot-{index}"></div>{caption}</figure>'
    )


STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-alt: #f6f8fa; --loss: #b42318; --gain: #067647; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif;
       color: var(--fg); margin: 0 auto; max-width: 1180px; padding: 24px 28px 60px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { border-bottom: 1px solid var(--line); padding-bottom: 4px;
       margin-top: 2.2em; } h3 { font-size: 1.05em; margin: 1.6em 0 .4em; }
.description { color: var(--muted); max-width: 70em; }
dl.header { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 14px 0; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 8px 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 4px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); } th { background: var(--bg-alt); }
td.r, th.r { text-align: right; } td.l, th.l { text-align: left; }
td.r, td:first-child { white-space: nowrap; }  /* "+2.2% [-13.0, +18.7]" reads as one figure */
tr.loss td { color: var(--loss); font-weight: 600; } tr.gain td { color: var(--gain); font-weight: 600; }
.note { color: var(--muted); font-size: .88em; margin: 2px 0 8px; }
figure { margin: 18px 0 26px; } figcaption { color: var(--muted); font-size: .88em; }
.plot { width: 100%; min-height: 420px; }
pre { background: var(--bg-alt); padding: 12px; overflow: auto; font-size: .88em; border-radius: 6px; }
table.env td:first-child { font-family: ui-monospace, monospace; white-space: nowrap; }
table.env td { vertical-align: top; word-break: break-word; }
.problem { color: var(--loss); }
.causes { border-left: 3px solid #e69f00; padding: 2px 10px; margin: 6px 0 10px; font-size: .92em; }
footer { margin-top: 3em; color: var(--muted); font-size: .85em; }
@media print { .plot { break-inside: avoid; } nav { display: none; } }
"""

RENDER_SCRIPT = """
(function () {
  var figures = JSON.parse(document.getElementById("nearmetal-figures").textContent);
  var template = JSON.parse(document.getElementById("nearmetal-template").textContent);
  var config = {responsive: true, displaylogo: false, typesetMath: false,
                toImageButtonOptions: {format: "png", scale: 2}};
  figures.forEach(function (fig, i) {
    var el = document.getElementById("plot-" + i);
    fig.layout.template = template;
    Plotly.newPlot(el, fig.data, fig.layout, config);
  });
  document.body.setAttribute("data-plots-rendered", String(figures.length));
})();
"""


def html_report(
    results: Results, figures: list[FigureSpec] | None = None, plotly_src: str | None = None
) -> str:
    """The report as one HTML document (a few MB: plotly's JavaScript is inside, unless ``plotly_src`` names
    where a site keeps its one copy)."""
    problems: list[FigureProblem] = []
    if figures is None:
        figures, problems = build_figures(results)
    run = results.run
    content = assemble(results, failure_limit=50)
    workloads = content.workloads
    plots: list[dict[str, Any]] = []
    parts: list[str] = []

    def add_figures(specs: list[FigureSpec]) -> None:
        for spec in specs:
            try:
                plots.append(plotly_figure(spec))
            except Exception as exc:  # a malformed spec from some builder costs that figure only
                problems.append(FigureProblem(spec.builder or spec.key, f"{spec.key}: {exc}"))
                continue
            parts.append(_figure_html(spec, len(plots) - 1))

    toc = [("results", "Results")]
    parts.append('<section id="results"><h2>Results</h2>')
    for section in content.sections:
        anchor = f"workload-{section.workload}" if section.workload else "study-tables"
        parts.append(f'<section class="workload" id="{_e(anchor)}"><h2>{_e(section.title)}</h2>')
        parts.extend(_table_html(table) for table in section.tables)
        if section.workload:
            add_figures([f for f in figures if f.section == section.workload])
        parts.append("</section>")
    parts.append("</section>")
    if content.energy:
        toc.append(("energy", "Energy"))
        parts.append(f'<section id="energy">{_table_html(content.energy)}</section>')
    if content.variance:
        toc.append(("variation", "Variation"))
        parts.append('<section id="variation"><h2>Levels of variation</h2>')
        parts.extend(_table_html(table) for table in content.variance)
        parts.append("</section>")
    leftover = [f for f in figures if f.section not in workloads]
    if leftover:
        toc.append(("run-figures", "Run"))
        parts.append('<section id="run-figures"><h2>Run</h2>')
        add_figures(leftover)
        parts.append("</section>")
    if content.failures:
        toc.append(("failures", "Failed trials"))
        items = "".join(f"<li>{_e(redact_text(f))}</li>" for f in content.failures)
        parts.append(
            '<section id="failures"><h2>Failed trials</h2><p class="note">kept in the store, left out of '
            f"the statistics</p><ul>{items}</ul></section>"
        )
    if content.other_findings:
        toc.append(("findings", "Doctor"))
        items = "".join(f"<li>{_e(f)}</li>" for f in content.other_findings)
        parts.append(f'<section id="findings"><h2>Other doctor findings</h2><ul>{items}</ul></section>')
    if problems:
        items = "".join(f'<li class="problem">{_e(p.builder)}: {_e(p.error)}</li>' for p in problems)
        parts.append(f'<section id="figure-problems"><h2>Figures not drawn</h2><ul>{items}</ul></section>')
    toc.append(("environment", "Environment"))
    env_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in content.environment.items())
    parts.append(
        '<section id="environment"><h2>Environment</h2><table class="env"><tbody>'
        f"{env_rows}</tbody></table></section>"
    )
    toc.append(("plan", "Plan"))
    parts.append(
        f'<section id="plan"><h2>Plan</h2><p class="note">{_e(run.plan_source)} · sha256 {_e(run.plan_hash[:16])}'
        f"</p><pre>{_e(redact_config_text(run.plan_text))}</pre></section>"
    )

    from markupsafe import Markup

    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return render_page(
        "report.html.j2",
        title=f"nearmetal · {run.name} · {run.id}",
        plots=plots,
        plotly_src=plotly_src,
        run=run,
        header=[(k, redact_text(v)) for k, v in content.header],
        toc=toc,
        body=Markup("".join(parts)),  # built above, every value escaped by _e
        generated=generated,
    )


def render_page(name: str, plots: list[dict[str, Any]], plotly_src: str | None, **values: Any) -> str:
    """A page from its Jinja2 template (``report/templates``; values escaped by the template engine): plotly's
    JavaScript inline (a self-contained file) or, with ``plotly_src``, from that relative URL (a site shares
    one copy); the figures and plotly's template as JSON that is safe inside <script>."""
    from markupsafe import Markup

    from nearmetal import __version__

    page: str = (
        _templates()
        .get_template(name)
        .render(
            version=__version__,
            style=Markup(STYLE),
            plotly_src=plotly_src,
            plotly_js=Markup(_plotly_js()) if plotly_src is None else "",
            figures_json=Markup(_json_for_script(plots)),
            template_json=Markup(_json_for_script(_template())),
            render_script=Markup(RENDER_SCRIPT),
            plots=len(plots),
            **values,
        )
    )
    return page + "\n"


@functools.cache
def _templates() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("nearmetal.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


PLOTLY_JS_NAME = "plotly.min.js"


def write_plotly_js(directory: Path) -> Path:
    """plotly's JavaScript as one file (a site's pages share it instead of each embedding 4.6 MB)."""
    path = directory / PLOTLY_JS_NAME
    text = _plotly_js()
    if not path.is_file() or path.stat().st_size != len(text.encode()):
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def write_html_report(results: Results, path: str | Path, plotly_src: str | None = None) -> Path:
    """Write the report; the file is replaced atomically so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = html_report(results, plotly_src=plotly_src)
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["REPORT_NAME", "html_report", "plotly_figure", "plotly_trace", "write_html_report"]
