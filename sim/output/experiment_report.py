"""An experiment's HTML report (sweeps and comparisons) and PNG export of every figure (kaleido, the `plots` extra).

The experiment's `report.html` embeds plotly.js and opens offline on its own: cost against time per
scheduler, speedup and cost reduction against each baseline, the early-exit trade-off, and one line chart
along each swept parameter, then a table of the runs. Its figures are plotly figures (only sweeps and
comparisons have them). One run's report lives in report.py.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.output.report import load_run, run_figures
from sim.output.report_page import LEGEND, TEMPLATE, as_number, figures_html, new_figure, page_html, plotly_js, series_color, styled

if TYPE_CHECKING:
    import plotly.graph_objects as go


def experiment_figures(rows: list[dict[str, Any]], sweep_keys: list[str]) -> dict[str, go.Figure]:
    """cost_vs_time (every run), speedup and cost_reduction (per baseline), and sweep_<key> line charts."""
    return styled(_experiment_figures(rows, sweep_keys))


def _experiment_figures(rows: list[dict[str, Any]], sweep_keys: list[str]) -> dict[str, go.Figure]:
    ok = [r for r in rows if r.get("status") == "ok"]
    figs = {"cost_vs_time": cost_vs_time(ok)}
    baselines = list(dict.fromkeys(k.split(".")[1] for r in ok for k in r if k.startswith("compare.") and k.endswith(".speedup")))
    if baselines:
        figs["speedup"] = ratio_bars(ok, baselines, "speedup", "Speedup against the baseline (baseline mean iteration / this)", "speedup (x)")
        figs["cost_reduction"] = ratio_bars(ok, baselines, "cost_reduction", "Cost reduction against the baseline (1 - cost / baseline cost)", "cost reduction")
    for key in sweep_keys:
        figs[f"sweep_{key}"] = along_parameter(ok, key, [k for k in sweep_keys if k != key])
    ee = [r for r in ok if as_number(r.get("early_exit_mismatch_fraction")) is not None and as_number(r.get("early_exit_generation_time_saved_fraction")) is not None]
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
        mine = sorted(mine, key=lambda r: (as_number(r["early_exit_mismatch_fraction"]), as_number(r["early_exit_generation_time_saved_fraction"])))
        # confidence thresholds form the curve; the oracle stable exit is a separate mark (not deployable)
        for oracle in (False, True):
            part = [r for r in mine if _present(r.get("early_exit_threshold")) != oracle]
            if not part:
                continue
            text = ["stable (oracle)" if oracle else f"{r.get('early_exit_policy')} >= {r.get('early_exit_threshold')}" for r in part]
            fig.add_trace(
                go.Scatter(
                    name=label + (" (oracle stable exit)" if oracle else ""), legendgroup=label, showlegend=not oracle,
                    x=[as_number(r["early_exit_mismatch_fraction"]) for r in part],
                    y=[as_number(r["early_exit_generation_time_saved_fraction"]) for r in part],
                    mode="markers" if oracle else "lines+markers", text=text, line={"color": series_color(i)},
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

    fig = new_figure()
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

    fig = new_figure()
    for base in baselines:
        key = f"compare.{base}.{metric}"
        mine = [r for r in rows if as_number(r.get(key)) is not None]
        fig.add_trace(go.Bar(name=f"vs {base}", x=[r["run_id"] for r in mine], y=[as_number(r[key]) for r in mine]))
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

    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean iteration time (s)", "total cost (USD)"), figure=new_figure())
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
                    line={"dash": "dash" if flat else "solid", "color": series_color(i)},
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
        body += figures_html(_experiment_figures(rows, sweep_keys))
    return page_html(f"{name}: experiment report", f'<script type="text/javascript">{plotly_js()}</script>', body)


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
