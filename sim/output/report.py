"""A run's HTML report (plotly): its figures as figure dicts, the page, and `load_run` to rebuild it from a run folder.

A run's `report.html` shows its phase timeline, a Gantt chart of its instances and of each GPU's busy
intervals (activities.csv), and cost and utilisation per iteration. It loads plotly.js from the shared
`../plotly.min.js` of its experiment folder (4.8 MB once, instead of once per run: a run folder copied
alone needs that file beside it).

Figures are built from plain rows (the same dicts the CSV files hold), so a report can be rebuilt from
a run folder (`load_run`). A run's figures are plotly figure dicts written without importing plotly
(sim/output/plotly_json.py: every run writes a report, and plotly's import and figure objects cost more
than a small simulation), the same bytes plotly would write; `run_figures` turns them into plotly figures
for users and PNG export. The experiment's report and PNG export live in experiment_report.py.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.output.report_page import LEGEND, as_number, page_html, specs_html, styled

if TYPE_CHECKING:
    import plotly.graph_objects as go

PHASE_COLORS = {"startup": "#BAB0AC", "generation": "#4C78A8", "inference": "#F58518", "training": "#54A24B", "weight_sync": "#B279A2"}
MAX_GANTT_BARS = 20_000  # GPU busy bars drawn at most (later iterations are left out beyond that)
RUN_METRICS = [
    ("scheduler", "scheduler", "{}"), ("deployment", "deployment", "{}"), ("GPUs", "gpus", "{}"),
    ("mean iteration (s)", "mean_iteration_s", "{:.2f}"), ("total time (s)", "total_time_s", "{:.1f}"),
    ("total cost (USD)", "total_cost_usd", "{:.2f}"), ("billed GPU-s", "billed_gpu_s", "{:,.0f}"),
    ("busy GPU-s", "busy_gpu_s", "{:,.0f}"), ("utilization", "utilization", "{:.1%}"),
    ("tokens generated", "tokens_generated", "{:,}"), ("USD per 1M tokens", "cost_per_million_tokens_usd", "{:.3f}"),
    ("cold starts", "cold_starts", "{:,}"),
]  # fmt: skip


# ------------------------------------------------------------------------------------------ one run


def run_figures(
    summary: dict[str, Any], iterations: list[dict[str, Any]], instances: list[dict[str, Any]], activities: list[dict[str, Any]]
) -> dict[str, go.Figure]:
    """The run report's figures as plotly figures (styled with TEMPLATE), by name: timeline, instances, gpus
    (when activities exist), cost."""
    import plotly.graph_objects as go

    figs = {name: go.Figure(spec) for name, spec in run_figure_specs(iterations, instances, activities).items()}
    return styled(figs)


def run_figure_specs(
    iterations: list[dict[str, Any]], instances: list[dict[str, Any]], activities: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The run report's figures as plotly figure dicts (data and layout, no template), by name.

    Each dict holds what plotly's validated figure holds, in the order plotly writes it, so the report
    (written without importing plotly: sim/output/plotly_json.py) has the bytes plotly would write.
    """
    figs = {"timeline": phase_timeline(iterations), "instances": instance_gantt(instances)}
    if activities:
        figs["gpus"] = gpu_gantt(activities)
    figs["cost"] = cost_and_utilization(iterations)
    return figs


def _bars(name: str, color: str | None, y: list[Any], base: list[float], x: list[float], customdata: list[list[Any]], hover: str) -> dict[str, Any]:
    """A horizontal bar trace as plotly writes it (properties in plotly's order; no marker without a colour)."""
    trace: dict[str, Any] = {"base": base, "customdata": customdata, "hovertemplate": hover}
    if color is not None:
        trace["marker"] = {"color": color}
    trace.update(name=name, orientation="h", x=x, y=y, type="bar")
    return trace


def _gantt_layout(title: str, height: int, yaxis: dict[str, Any]) -> dict[str, Any]:
    return {"yaxis": yaxis, "legend": dict(LEGEND), "title": {"text": title}, "barmode": "overlay", "xaxis": {"title": {"text": "time (s)"}}, "height": height}


def phase_timeline(iterations: list[dict[str, Any]]) -> dict[str, Any]:
    """A Gantt of phase windows: one row per iteration, one bar per phase from its start to its end."""
    data = []
    for phase in _phases(iterations):
        rows = [r for r in iterations if r["phase"] == phase]
        data.append(
            _bars(
                phase, PHASE_COLORS.get(phase), [f"iteration {r['iteration']}" for r in rows], [float(r["start_s"]) for r in rows],
                [float(r["end_s"]) - float(r["start_s"]) for r in rows], [[float(r["cost_usd"]), float(r["idle_gpu_s"])] for r in rows],
                f"{phase}<br>%{{base:.1f}} s + %{{x:.2f}} s<br>cost %{{customdata[0]:.3f}} USD, idle %{{customdata[1]:.0f}} GPU-s<extra></extra>",
            )
        )  # fmt: skip
    n = len({r["iteration"] for r in iterations})
    return {"data": data, "layout": _gantt_layout("Phase timeline", 160 + 28 * n, {"autorange": "reversed"})}


def instance_gantt(instances: list[dict[str, Any]]) -> dict[str, Any]:
    """Each instance's lifetime: cold start (requested to ready) and held (ready to released)."""
    labels = [f"{r['instance_id']} ({r['role']})" for r in instances]
    segments = [("cold start", "requested_s", "ready_s", "#BAB0AC"), ("held", "ready_s", "released_s", "#9ECAE9")]
    data = [
        _bars(
            name, color, list(labels), [float(r[start]) for r in instances], [float(r[end]) - float(r[start]) for r in instances],
            [[int(r["gpus"]), float(r["busy_s"]), float(r["billed_s"])] for r in instances],
            "%{y}: " + name + " %{base:.1f} s + %{x:.1f} s<br>%{customdata[0]} GPU(s), busy %{customdata[1]:.1f} s, billed %{customdata[2]:.0f} s<extra></extra>",
        )
        for name, start, end, color in segments
    ]  # fmt: skip
    return {"data": data, "layout": _gantt_layout("Instances", 160 + 18 * len(instances), {"autorange": "reversed"})}


def gpu_gantt(activities: list[dict[str, Any]]) -> dict[str, Any]:
    """Each GPU's busy intervals (one bar per activity and GPU), coloured by phase."""
    bars: list[tuple[str, dict[str, Any]]] = []
    iterations_shown = None
    for a in activities:
        slots = str(a["slots"]).split(";")
        if len(bars) + len(slots) > MAX_GANTT_BARS:
            iterations_shown = int(a["iteration"])
            break
        bars.extend((slot, a) for slot in slots)
    gpus = sorted({slot for slot, _ in bars}, key=_slot_key)
    data = []
    for phase in _phases(activities):
        mine = [(slot, a) for slot, a in bars if a["phase"] == phase]
        data.append(
            _bars(
                phase, PHASE_COLORS.get(phase), [slot for slot, _ in mine], [float(a["start_s"]) for _, a in mine],
                [float(a["end_s"]) - float(a["start_s"]) for _, a in mine], [[a["role"], int(a["iteration"])] for _, a in mine],
                "%{y}: %{customdata[0]} (iteration %{customdata[1]})<br>%{base:.2f} s + %{x:.2f} s<extra></extra>",
            )
        )  # fmt: skip
    title = "GPU busy intervals" + (f" (iterations before {iterations_shown} only)" if iterations_shown is not None else "")
    yaxis = {"autorange": "reversed", "categoryorder": "array", "categoryarray": gpus}
    return {"data": data, "layout": _gantt_layout(title, 160 + 18 * len(gpus), yaxis)}


def cost_and_utilization(iterations: list[dict[str, Any]]) -> dict[str, Any]:
    """Cost per iteration (bars, stacked by phase) and utilisation = busy / billed GPU-s (line, right axis)."""
    its = sorted({int(r["iteration"]) for r in iterations})
    data: list[dict[str, Any]] = []
    for phase in _phases(iterations):
        cost = {int(r["iteration"]): float(r["cost_usd"]) for r in iterations if r["phase"] == phase}
        bar: dict[str, Any] = {"marker": {"color": PHASE_COLORS[phase]}} if phase in PHASE_COLORS else {}
        data.append({**bar, "name": f"cost: {phase}", "x": list(its), "y": [cost.get(i, 0.0) for i in its], "type": "bar"})
    util = []
    for i in its:
        busy = sum(float(r["busy_gpu_s"]) for r in iterations if int(r["iteration"]) == i)
        billed = sum(float(r["billed_gpu_s"]) for r in iterations if int(r["iteration"]) == i)
        util.append(busy / billed if billed > 0 else 0.0)
    data.append(
        {"line": {"color": "#222"}, "mode": "lines+markers", "name": "utilization", "x": list(its), "y": util, "type": "scatter", "xaxis": "x", "yaxis": "y2"}
    )
    layout = {
        # plotly.subplots.make_subplots(specs=[[{"secondary_y": True}]]) lays out these axes
        "xaxis": {"anchor": "y", "domain": [0.0, 0.94], "title": {"text": "iteration"}, "dtick": 1},
        "yaxis": {"anchor": "x", "domain": [0.0, 1.0], "title": {"text": "cost (USD)"}},
        "yaxis2": {"anchor": "x", "overlaying": "y", "side": "right", "title": {"text": "utilization"}, "tickformat": ".0%", "range": [0, 1.05]},
        "legend": dict(LEGEND), "title": {"text": "Cost and utilization per iteration"}, "barmode": "stack", "height": 380,
    }  # fmt: skip
    return {"data": data, "layout": layout}


def run_report_html(
    summary: dict[str, Any],
    iterations: list[dict[str, Any]],
    instances: list[dict[str, Any]],
    activities: list[dict[str, Any]],
    plotly_js: str = "../plotly.min.js",
) -> str:
    """A run's report.html; plotly.js is loaded from `plotly_js` (relative to the report)."""
    title = f"{summary['name']} / {summary['run_id']}"
    table = "".join(
        f"<tr><th>{html.escape(label)}</th><td class='n'>{html.escape(fmt.format(summary[key]))}</td></tr>"
        for label, key, fmt in RUN_METRICS
        if key in summary
    )
    phases = "".join(f"<tr><th>{html.escape(p)} (s/iteration)</th><td class='n'>{v:.2f}</td></tr>" for p, v in summary.get("phases", {}).items())
    body = f"<table>{table}{phases}{_early_exit_rows(summary)}</table>" + _early_exit_warnings(summary) + specs_html(run_figure_specs(iterations, instances, activities))
    if not activities:
        body += "<p class='note'>No activities.csv rows: the GPU busy-interval chart is left out.</p>"
    head = f'<script src="{html.escape(plotly_js)}"></script>'
    missing = (
        f"<p id='no-plotly' class='note' hidden>The charts need {html.escape(plotly_js)} (the experiment folder's "
        "plotly.min.js): keep this run folder inside its experiment folder.</p>"
        "<script>if (typeof Plotly === 'undefined') document.getElementById('no-plotly').hidden = false;</script>"
    )
    return page_html(title, head, missing + body)


def _early_exit_rows(summary: dict[str, Any]) -> str:
    """The early-exit lines of a run's table (docs/metrics.md, early_exit_*), or nothing when it is off."""
    if "early_exit_mismatch_fraction" not in summary:
        return ""
    thr = summary.get("early_exit_threshold")
    point = "stable (oracle)" if thr is None else f"{summary['early_exit_policy']} >= {thr:g}"
    rows = [
        ("early exit: operating point", f"{point}, chosen by {summary.get('early_exit_chosen_by')}"),
        ("early exit: allowed exit layers (profile)", str(summary.get("early_exit_exit_layers"))),
        ("early exit: token mismatch", _fmt(summary.get("early_exit_mismatch_fraction"), "{:.2%}")),
        ("early exit: error budget (max_mismatch)", _fmt(summary.get("early_exit_max_mismatch"), "{:.2%}")),
        ("early exit: depth per decode step (layers run / L)", _fmt(summary.get("early_exit_depth_fraction_per_step"), "{:.3f}")),
        ("early exit: depth per generated token", _fmt(summary.get("early_exit_depth_fraction_per_token"), "{:.3f}")),
        ("early exit: generation time saved", _fmt(summary.get("early_exit_generation_time_saved_fraction"), "{:.1%}")),
        ("early exit: generation at full depth (s/iteration)", _fmt(summary.get("early_exit_full_depth_generation_s"), "{:.2f}")),
        ("early exit: profile", f"{summary.get('early_exit_profile_model')} ({summary.get('early_exit_profile_layers')} layers); {summary.get('early_exit_layer_mapping')}"),
    ]  # fmt: skip
    return "".join(f"<tr><th>{html.escape(k)}</th><td class='n'>{html.escape(v)}</td></tr>" for k, v in rows)


def _early_exit_warnings(summary: dict[str, Any]) -> str:
    warnings = summary.get("early_exit_warnings") or []
    return "".join(f"<p class='note'>warning: {html.escape(str(w))}</p>" for w in warnings)


def _fmt(value: Any, fmt: str) -> str:
    return "-" if as_number(value) is None else fmt.format(float(value))


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """summary, iterations, instances and activities of a written run folder (activities may be absent)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    tables = []
    for name in ("iterations.csv", "instances.csv", "activities.csv"):
        path = run_dir / name
        tables.append(_read_rows(path) if path.is_file() else [])
    return summary, tables[0], tables[1], tables[2]


def _phases(rows: list[dict[str, Any]]) -> list[str]:
    found = list(dict.fromkeys(str(r["phase"]) for r in rows))
    return [p for p in PHASE_COLORS if p in found] + [p for p in found if p not in PHASE_COLORS]


def _slot_key(slot: str) -> tuple[int, int, str]:
    node, _, gpu = slot.removeprefix("n").partition("g")
    return (int(node), int(gpu), slot) if node.isdigit() and gpu.isdigit() else (1 << 30, 0, slot)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _parse(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)
