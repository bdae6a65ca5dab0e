"""sim/output/plotly_json.py: figure dicts written as plotly.io.to_html writes them, without importing plotly."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from sim.output import plotly_json
from sim.output.report import LEGEND, run_figure_specs


def test_the_template_file_is_what_the_installed_plotly_writes() -> None:
    """If this fails after a plotly upgrade: python -m sim.output.plotly_json (reports then change bytes, not meaning)."""
    assert json.dumps(plotly_json.template()) == json.dumps(plotly_json.plotly_template())
    assert plotly_json.main(["--check"]) == 0


@pytest.mark.parametrize(
    "fig",
    [
        {"data": [{"x": [1.0, math.nan], "y": ["a</b>", "c>d"], "customdata": [[1, math.inf]], "type": "bar"}], "layout": {"height": 300}},
        {"data": [], "layout": {"title": {"text": "NaN and Infinity in a title"}, "width": 640.5}},
        {"data": [{"y": [-math.inf], "name": "é \u2014 \"quoted\"", "type": "scatter"}], "layout": {}},
    ],
)
def test_a_figure_div_has_plotlys_bytes(fig: dict) -> None:
    fig = {"data": fig["data"], "layout": {"template": plotly_json.template(), **fig["layout"]}}
    expected = pio.to_html(fig, validate=False, full_html=False, include_plotlyjs=False, div_id="fig-t", config={"displaylogo": False})
    assert plotly_json.figure_div(fig, "fig-t", {"displaylogo": False}) == expected


def rows() -> tuple[list, list, list]:
    iterations = [
        {"iteration": i, "phase": p, "start_s": 10.0 * i + j, "end_s": 10.0 * i + j + 0.5, "cost_usd": 0.1 * j, "idle_gpu_s": 2.0,
         "busy_gpu_s": 3.0, "billed_gpu_s": 4.0}
        for i in range(2) for j, p in enumerate(["generation", "inference", "training", "weight_sync", "custom"])
    ]  # fmt: skip
    instances = [{"instance_id": f"i{k}", "role": "rollout", "requested_s": 0.0, "ready_s": 1.0 + k, "released_s": 9.0, "gpus": 2,
                  "busy_s": 5.0, "billed_s": 9.0} for k in range(3)]  # fmt: skip
    activities = [{"iteration": 0, "phase": "generation", "role": "rollout", "slots": "n0g0;n0g1", "start_s": 0.0, "end_s": 1.5},
                  {"iteration": 1, "phase": "custom", "role": "x", "slots": "n1g0", "start_s": 2.0, "end_s": 3.0}]  # fmt: skip
    return iterations, instances, activities


def test_run_figure_dicts_are_what_plotly_validates_them_to() -> None:
    """Each dict equals plotly's validated figure of it (values and types; plotly keeps its own key order)."""
    specs = run_figure_specs(*rows())
    assert list(specs) == ["timeline", "instances", "gpus", "cost"]
    for name, spec in specs.items():
        validated = go.Figure(spec).to_dict()
        validated["layout"].pop("template", None)
        assert validated == spec, name
    assert specs["timeline"]["layout"]["legend"] == LEGEND
    assert "marker" not in specs["timeline"]["data"][-1]  # a phase without a colour: plotly's own colours


def test_a_run_report_needs_no_plotly_import() -> None:
    code = (
        "import sys, json; from sim.output.report import run_report_html; "
        "page = run_report_html({'name': 'n', 'run_id': 'r', 'phases': {}}, [], [], []); "
        "print(json.dumps(['plotly' in sys.modules, page.count('Plotly.newPlot(')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, 3]
