"""What every HTML report shares: the page shell and style, plotly figures styled with the shared template,
figure divs written without importing plotly (sim/output/plotly_json.py), plotly.js itself, and small helpers.

HTML output is deterministic: fixed div ids, no timestamps. The figures themselves live in report.py (one
run) and experiment_report.py (sweeps and comparisons).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from sim.output import plotly_json

if TYPE_CHECKING:
    import plotly.graph_objects as go


TEMPLATE = plotly_json.TEMPLATE_NAME
LEGEND = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1}  # above the plot, clear of axis titles
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{padding:2px 10px;border-bottom:1px solid #ddd}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}h2{margin-top:1.5em}.note{color:#666}"
)


def page_html(title: str, head: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n{head}\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def new_figure() -> go.Figure:
    """A plotly figure with an empty template (instead of plotly's default, validated and copied into every figure):
    `styled` gives it TEMPLATE for users and PNG export; `figures_html` writes TEMPLATE's JSON into each page."""
    import plotly.graph_objects as go

    return go.Figure(layout={"template": {}})


def styled(figs: dict[str, go.Figure]) -> dict[str, go.Figure]:
    for fig in figs.values():
        fig.update_layout(template=TEMPLATE)
    return figs


def specs_html(specs: dict[str, dict[str, Any]]) -> str:
    """Figure dicts (no template) as the divs plotly.io.to_html writes for them styled with TEMPLATE."""
    parts = []
    for name, spec in specs.items():
        layout = {"template": plotly_json.shared_template()}  # first, where a styled plotly figure has it (only serialised)
        layout.update((k, v) for k, v in spec["layout"].items() if k != "template")
        fig = {"data": spec["data"], "layout": layout}
        parts.append(plotly_json.figure_div(fig, f"fig-{name}", {"displaylogo": False}))
    return "\n".join(parts)


def figures_html(figs: dict[str, go.Figure]) -> str:
    return specs_html({name: fig.to_dict() for name, fig in figs.items()})


def plotly_js() -> str:
    """plotly.js, read from the installed plotly's package data (plotly.offline.get_plotlyjs, without the import)."""
    path = plotly_json.plotly_js_path()
    if path is not None:
        return path.read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs  # pragma: no cover - a plotly without package_data/plotly.min.js

    return get_plotlyjs()


def plotly_js_bytes() -> bytes:
    """plotly_js() as UTF-8 bytes (what the experiment folder's plotly.min.js holds): the file's own bytes when they
    need no newline translation, so that 4.8 MB are not decoded and encoded again on every run."""
    path = plotly_json.plotly_js_path()
    if path is not None:
        data = path.read_bytes()
        if b"\r" not in data:
            return data
    return plotly_js().encode("utf-8")


def as_number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def series_color(i: int) -> str:
    palette = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC", "#EECA3B"]
    return palette[i % len(palette)]
