"""HTML reports of runs and experiments (plotly), and their figures as PNG (kaleido, the `plots` extra).

A run's `report.html` shows its phase timeline, a Gantt chart of its instances and of each GPU's busy
intervals (activities.csv), and cost and utilisation per iteration. It loads plotly.js from the shared
`../plotly.min.js` of its experiment folder (4.8 MB once, instead of once per run: a run folder copied
alone needs that file beside it). The experiment's `report.html` (sweeps and comparisons) embeds
plotly.js and opens offline on its own: cost against time per scheduler, speedup and cost reduction
against each baseline, and one line chart along each swept parameter.

Figures are built from plain rows (the same dicts the CSV files hold), so a report can be rebuilt from
a run folder (`load_run`). HTML output is deterministic: fixed div ids, no timestamps. A run's figures
are plotly figure dicts written without importing plotly (sim/output/plotly_json.py: every run writes a report,
and plotly's import and figure objects cost more than a small simulation), the same bytes plotly would
write; `run_figures` turns them into plotly figures for users and PNG export. The experiment's figures
are plotly figures (only sweeps and comparisons have them).
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.output import plotly_json

if TYPE_CHECKING:
    import plotly.graph_objects as go

PHASE_COLORS = {"startup": "#BAB0AC", "generation": "#4C78A8", "inference": "#F58518", "training": "#54A24B", "weight_sync": "#B279A2"}
MAX_GANTT_BARS = 20_000  # GPU busy bars drawn at most (later iterations are left out beyond that)
TEMPLATE = plotly_json.TEMPLATE_NAME
LEGEND = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1}  # above the plot, clear of axis titles
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{padding:2px 10px;border-bottom:1px solid #ddd}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}h2{margin-top:1.5em}.note{color:#666}"
)
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
    return _styled(figs)


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
    body = f"<table>{table}{phases}{_early_exit_rows(summary)}</table>" + _early_exit_warnings(summary) + _specs_html(run_figure_specs(iterations, instances, activities))
    if not activities:
        body += "<p class='note'>No activities.csv rows: the GPU busy-interval chart is left out.</p>"
    head = f'<script src="{html.escape(plotly_js)}"></script>'
    missing = (
        f"<p id='no-plotly' class='note' hidden>The charts need {html.escape(plotly_js)} (the experiment folder's "
        "plotly.min.js): keep this run folder inside its experiment folder.</p>"
        "<script>if (typeof Plotly === 'undefined') document.getElementById('no-plotly').hidden = false;</script>"
    )
    return _page(title, head, missing + body)


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
    return "-" if _number(value) is None else fmt.format(float(value))


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """summary, iterations, instances and activities of a written run folder (activities may be absent)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    tables = []
    for name in ("iterations.csv", "instances.csv", "activities.csv"):
        path = run_dir / name
        tables.append(_read_rows(path) if path.is_file() else [])
    return summary, tables[0], tables[1], tables[2]


# ---------------------------------------------------------------------------------------- experiment


def experiment_figures(rows: list[dict[str, Any]], sweep_keys: list[str]) -> dict[str, go.Figure]:
    """cost_vs_time (every run), speedup and cost_reduction (per baseline), and sweep_<key> line charts."""
    return _styled(_experiment_figures(rows, sweep_keys))


def _experiment_figures(rows: list[dict[str, Any]], sweep_keys: list[str]) -> dict[str, go.Figure]:
    ok = [r for r in rows if r.get("status") == "ok"]
    figs = {"cost_vs_time": cost_vs_time(ok)}
    baselines = list(dict.fromkeys(k.split(".")[1] for r in ok for k in r if k.startswith("compare.") and k.endswith(".speedup")))
    if baselines:
        figs["speedup"] = ratio_bars(ok, baselines, "speedup", "Speedup against the baseline (baseline mean iteration / this)", "speedup (x)")
        figs["cost_reduction"] = ratio_bars(ok, baselines, "cost_reduction", "Cost reduction against the baseline (1 - cost / baseline cost)", "cost reduction")
    for key in sweep_keys:
        figs[f"sweep_{key}"] = along_parameter(ok, key, [k for k in sweep_keys if k != key])
    ee = [r for r in ok if _number(r.get("early_exit_mismatch_fraction")) is not None and _number(r.get("early_exit_generation_time_saved_fraction")) is not None]
    if ee:
        figs["early_exit"] = early_exit_tradeoff(ee, sweep_keys)
    return figs


def early_exit_tradeoff(rows: list[dict[str, Any]], sweep_keys: list[str]) -> go.Figure:
    """Generation time saved against token mismatch: one line per value of the swept keys outside early_exit.*

    (e.g. one per batch cap) through the confidence-threshold operating points the sweep chose, and a star
    for the oracle stable exit (docs/early_exit.md).
    """
    import plotly.graph_objects as go

    others = [k for k in sweep_keys if not k.startswith("early_exit.")]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r[k]}" for k in others if _present(r.get(k))) or str(r.get("scheduler"))
        groups.setdefault(label, []).append(r)
    fig = go.Figure()
    hover = "%{text}<br>mismatch %{x:.2%}, generation time saved %{y:.1%}<extra>"
    for i, (label, mine) in enumerate(groups.items()):
        mine = sorted(mine, key=lambda r: (_number(r["early_exit_mismatch_fraction"]), _number(r["early_exit_generation_time_saved_fraction"])))
        # confidence thresholds form the curve; the oracle stable exit is a separate mark (not deployable)
        for oracle in (False, True):
            part = [r for r in mine if _present(r.get("early_exit_threshold")) != oracle]
            if not part:
                continue
            text = ["stable (oracle)" if oracle else f"{r.get('early_exit_policy')} >= {r.get('early_exit_threshold')}" for r in part]
            fig.add_trace(
                go.Scatter(
                    name=label + (" (oracle stable exit)" if oracle else ""), legendgroup=label, showlegend=not oracle,
                    x=[_number(r["early_exit_mismatch_fraction"]) for r in part],
                    y=[_number(r["early_exit_generation_time_saved_fraction"]) for r in part],
                    mode="markers" if oracle else "lines+markers", text=text, line={"color": _color(i)},
                    marker={"symbol": "star", "size": 12} if oracle else {}, hovertemplate=hover + html.escape(label) + "</extra>",
                )
            )  # fmt: skip
    fig.add_hline(y=0, line_dash="dot", line_color="#888")
    fig.update_layout(
        title="Early exit: generation time saved against token mismatch (off-policy tokens)",
        xaxis_title="token mismatch (share of generated tokens that differ from the full-depth prediction)",
        yaxis_title="generation time saved", template=TEMPLATE, height=450, xaxis_tickformat=".0%", yaxis_tickformat=".0%",
        legend={"x": 1.02, "y": 1, "xanchor": "left", "title": {"text": "star: oracle stable exit"}},
    )  # fmt: skip
    return fig


def cost_vs_time(rows: list[dict[str, Any]]) -> go.Figure:
    import plotly.graph_objects as go

    fig = _figure()
    for scheduler in dict.fromkeys(r["scheduler"] for r in rows):
        mine = [r for r in rows if r["scheduler"] == scheduler]
        fig.add_trace(
            go.Scatter(
                name=scheduler, mode="markers", x=[r["mean_iteration_s"] for r in mine], y=[r["total_cost_usd"] for r in mine],
                text=[r["run_id"] for r in mine], marker_size=10,
                hovertemplate="%{text}<br>%{x:.2f} s/iteration, %{y:.3f} USD<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title="Cost against iteration time, per scheduler", xaxis_title="mean iteration time (s)",
        yaxis_title="total cost (USD)", height=450, showlegend=True, legend=LEGEND,
    )  # fmt: skip
    return fig


def ratio_bars(rows: list[dict[str, Any]], baselines: list[str], metric: str, title: str, axis: str) -> go.Figure:
    import plotly.graph_objects as go

    fig = _figure()
    for base in baselines:
        key = f"compare.{base}.{metric}"
        mine = [r for r in rows if _number(r.get(key)) is not None]
        fig.add_trace(go.Bar(name=f"vs {base}", x=[r["run_id"] for r in mine], y=[_number(r[key]) for r in mine]))
    fig.update_layout(
        title=title, yaxis_title=axis, height=450, barmode="group", showlegend=True, legend=LEGEND,
        yaxis_tickformat=".0%" if metric == "cost_reduction" else None,
    )  # fmt: skip
    return fig


def along_parameter(rows: list[dict[str, Any]], key: str, others: list[str]) -> go.Figure:
    """Iteration time and cost along one swept key: a line per scheduler and value of the other keys.

    A comparison run that does not depend on the key (a `scheduler.*` key) is a dashed horizontal line.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean iteration time (s)", "total cost (USD)"), figure=_figure())
    swept = [r for r in rows if _present(r.get(key))]
    xs = _ordered(r[key] for r in swept)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        label = ", ".join([str(r["scheduler"]), *(f"{o}={r[o]}" for o in others if _present(r.get(o)))])
        if not _present(r.get(key)):
            label += " (not swept)"
        groups.setdefault(label, []).append(r)
    for i, (label, mine) in enumerate(groups.items()):
        flat = not _present(mine[0].get(key))
        for col, metric in ((1, "mean_iteration_s"), (2, "total_cost_usd")):
            if flat:
                x, y = [xs[0], xs[-1]] if xs else [], [mine[0][metric]] * (2 if xs else 0)
            else:
                by_x = {_key(r[key]): r for r in mine}
                x = [v for v in xs if _key(v) in by_x]
                y = [by_x[_key(v)][metric] for v in x]
            fig.add_trace(
                go.Scatter(
                    name=label, legendgroup=label, showlegend=col == 1, x=x, y=y, mode="lines" if flat else "lines+markers",
                    line={"dash": "dash" if flat else "solid", "color": _color(i)},
                ),
                row=1, col=col,
            )  # fmt: skip
    fig.update_xaxes(title_text=key)
    fig.update_layout(title=f"Along {key}", height=450)
    return fig


def experiment_report_html(name: str, rows: list[dict[str, Any]], sweep_keys: list[str]) -> str:
    """The experiment's report.html: self-contained (plotly.js embedded), opens offline."""
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    body = f"<p>{len(rows)} runs: {len(ok)} ok, {len(failed)} failed. Every run's own report is its folder's report.html.</p>"
    body += _runs_table(rows, sweep_keys)
    if ok:
        body += _figures_html(_experiment_figures(rows, sweep_keys))
    return _page(f"{name}: experiment report", f'<script type="text/javascript">{plotly_js()}</script>', body)


def _runs_table(rows: list[dict[str, Any]], sweep_keys: list[str]) -> str:
    head = ["run", *sweep_keys, "status", "mean iteration (s)", "total cost (USD)", "utilization", "error"]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        ok = r.get("status") == "ok"
        cells = [
            f"<td><a href='{html.escape(str(r['run_id']))}/report.html'>{html.escape(str(r['run_id']))}</a></td>" if ok
            else f"<td>{html.escape(str(r['run_id']))}</td>",
            *(f"<td class='n'>{html.escape(str(r.get(k, '')) if _present(r.get(k)) else '')}</td>" for k in sweep_keys),
            f"<td>{html.escape(str(r.get('status')))}</td>",
            f"<td class='n'>{r['mean_iteration_s']:.2f}</td>" if ok else "<td></td>",
            f"<td class='n'>{r['total_cost_usd']:.3f}</td>" if ok else "<td></td>",
            f"<td class='n'>{r['utilization']:.1%}</td>" if ok else "<td></td>",
            f"<td>{html.escape(str(r.get('error') or ''))}</td>",
        ]  # fmt: skip
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


# ------------------------------------------------------------------------------------------ PNG export


def export_png(exp_dir: Path, run_ids: list[str], rows: list[dict[str, Any]], sweep_keys: list[str]) -> list[Path]:
    """Write every figure as PNG under DIR/<name>/png/ in one kaleido batch (needs the `plots` extra and Chromium)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise RuntimeError("--png needs kaleido: pip install 'rlhf-sim[plots]' (and Chromium: apt-get install chromium)") from None
    import plotly.io as pio

    png_dir = exp_dir / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    figs: list[go.Figure] = []
    paths: list[Path] = []
    if len(rows) > 1:
        for name, fig in experiment_figures(rows, sweep_keys).items():
            figs.append(fig)
            paths.append(png_dir / f"experiment__{name}.png")
    for run_id in run_ids:
        for name, fig in run_figures(*load_run(exp_dir / run_id)).items():
            figs.append(fig)
            paths.append(png_dir / f"{run_id}__{name}.png")
    pio.write_images(figs, paths, width=1100)
    return paths


# ------------------------------------------------------------------------------------------- helpers


def _page(title: str, head: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n{head}\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _figure() -> go.Figure:
    """A plotly figure with an empty template (instead of plotly's default, validated and copied into every figure):
    `_styled` gives it TEMPLATE for users and PNG export; `_figures_html` writes TEMPLATE's JSON into each page."""
    import plotly.graph_objects as go

    return go.Figure(layout={"template": {}})


def _styled(figs: dict[str, go.Figure]) -> dict[str, go.Figure]:
    for fig in figs.values():
        fig.update_layout(template=TEMPLATE)
    return figs


def _specs_html(specs: dict[str, dict[str, Any]]) -> str:
    """Figure dicts (no template) as the divs plotly.io.to_html writes for them styled with TEMPLATE."""
    parts = []
    for name, spec in specs.items():
        layout = {"template": plotly_json.shared_template()}  # first, where a styled plotly figure has it (only serialised)
        layout.update((k, v) for k, v in spec["layout"].items() if k != "template")
        fig = {"data": spec["data"], "layout": layout}
        parts.append(plotly_json.figure_div(fig, f"fig-{name}", {"displaylogo": False}))
    return "\n".join(parts)


def _figures_html(figs: dict[str, go.Figure]) -> str:
    return _specs_html({name: fig.to_dict() for name, fig in figs.items()})


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


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def _present(value: Any) -> bool:
    return value is not None and value != "" and not (isinstance(value, float) and value != value)


def _key(value: Any) -> str:
    return repr(value)


def _ordered(values: Any) -> list[Any]:
    """Distinct values, numerically sorted when all are numbers, else in first-seen order."""
    seen = {_key(v): v for v in values}
    vals = list(seen.values())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return sorted(vals)
    return vals


def _color(i: int) -> str:
    palette = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC", "#EECA3B"]
    return palette[i % len(palette)]
