"""Reports (sim/output/report.py, experiment_report.py): what a run's and an experiment's report.html hold, that they render in a headless
browser without console errors, and PNG export.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sim.output.experiment_report import experiment_figures
from sim.output.report import load_run, run_figures, run_report_html
from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-point sweep of the quickstart (1 iteration): two run reports and an experiment report."""
    tmp = tmp_path_factory.mktemp("report")
    raw = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    raw.update(name="rep", iterations=2, sweep={"cluster.nodes": [1, 2]})
    path = tmp / "rep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main([str(path), "--out", str(tmp / "out"), "--workers", "1", "--quiet"]) == 0
    return tmp / "out" / "rep"


def scripts(page: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page)


def test_run_report_loads_the_shared_plotly_js_and_holds_every_figure(sweep_dir: Path) -> None:
    page = (sweep_dir / "verl__cluster.nodes=2" / "report.html").read_text()
    assert scripts(page) == ["../plotly.min.js"]  # one shared copy per experiment, not 4.8 MB per run
    assert len(page) < 500_000
    for div in ("fig-timeline", "fig-instances", "fig-gpus", "fig-cost"):
        assert f'id="{div}"' in page
    assert "n1g7" in page  # the GPU Gantt has a row per GPU of both nodes
    assert (sweep_dir / "plotly.min.js").stat().st_size > 1_000_000
    from plotly.offline import get_plotlyjs

    assert (sweep_dir / "plotly.min.js").read_bytes() == get_plotlyjs().encode("utf-8")  # plotly's own, as UTF-8


def test_gpu_gantt_uses_activities_when_present(sweep_dir: Path) -> None:
    summary, iterations, instances, activities = load_run(sweep_dir / "verl__cluster.nodes=1")
    assert activities and {"iteration", "phase", "role", "slots", "start_s", "end_s"} <= set(activities[0])
    figs = run_figures(summary, iterations, instances, activities)
    assert list(figs) == ["timeline", "instances", "gpus", "cost"]
    bars = sum(len(t.y) for t in figs["gpus"].data)
    assert bars == sum(len(str(a["slots"]).split(";")) for a in activities)
    assert {t.name for t in figs["gpus"].data} == {a["phase"] for a in activities}
    # without activities (an older run folder) the report still builds, without the GPU chart
    assert "gpus" not in run_figures(summary, iterations, instances, [])
    page = run_report_html(summary, iterations, instances, [])
    assert 'id="fig-gpus"' not in page and "No activities.csv rows" in page


def test_run_report_is_deterministic(sweep_dir: Path) -> None:
    run = load_run(sweep_dir / "verl__cluster.nodes=1")
    assert run_report_html(*run) == run_report_html(*run)


def test_experiment_report_is_self_contained_with_its_charts(sweep_dir: Path) -> None:
    page = (sweep_dir / "report.html").read_text()
    assert scripts(page) == []  # plotly.js embedded: opens offline, copied alone
    assert len(page) > 1_000_000
    for div in ("fig-cost_vs_time", "fig-sweep_cluster.nodes"):
        assert f'id="{div}"' in page
    assert "verl__cluster.nodes=2/report.html" in page  # links to each run's report


def test_experiment_figures_have_ratio_bars_and_a_line_per_parameter() -> None:
    rows = [
        {"run_id": "a__n=1", "status": "ok", "scheduler": "a", "n": 1, "mean_iteration_s": 10.0, "total_cost_usd": 1.0,
         "compare.b.speedup": 2.0, "compare.b.cost_reduction": 0.5},
        {"run_id": "b__n=1", "status": "ok", "scheduler": "b", "n": 1, "mean_iteration_s": 20.0, "total_cost_usd": 2.0},
        {"run_id": "a__n=2", "status": "ok", "scheduler": "a", "n": 2, "mean_iteration_s": 6.0, "total_cost_usd": 1.2,
         "compare.b.speedup": 2.5, "compare.b.cost_reduction": 0.4},
        {"run_id": "b__n=2", "status": "failed", "scheduler": "b", "n": 2, "error": "x"},
    ]  # fmt: skip
    figs = experiment_figures(rows, ["n"])
    assert list(figs) == ["cost_vs_time", "speedup", "cost_reduction", "sweep_n"]
    assert list(figs["speedup"].data[0].y) == [2.0, 2.5] and figs["speedup"].data[0].name == "vs b"
    lines = {t.name: list(t.y) for t in figs["sweep_n"].data if t.showlegend}
    assert lines == {"a": [10.0, 6.0], "b": [20.0]}


def browser_or_skip() -> str:
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must apt-get install chromium")
    pytest.skip(f"{CHROMIUM} is not installed")


def render(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the console messages, from headless Chromium with no network."""
    browser = browser_or_skip()
    profile = tmp_path / f"profile-{page.parent.name}"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.parametrize("which, figures", [("verl__cluster.nodes=2/report.html", 4), ("report.html", 2)])
def test_reports_render_in_headless_chromium(sweep_dir: Path, tmp_path: Path, which: str, figures: int) -> None:
    dom, console = render(sweep_dir / which, tmp_path)
    assert console == []  # no JavaScript error or warning
    rendered = dom.count('class="main-svg"')
    assert rendered >= 2 * figures, rendered  # plotly draws two main-svg layers per rendered figure
    if which != "report.html":
        assert re.search(r'<p id="no-plotly" class="note" hidden', dom)  # plotly.min.js was found: no note


def test_a_run_folder_copied_alone_says_what_it_misses(sweep_dir: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone" / "run"
    shutil.copytree(sweep_dir / "verl__cluster.nodes=1", alone)
    dom, _ = render(alone / "report.html", tmp_path)
    assert re.search(r'<p id="no-plotly" class="note">', dom), "the missing-plotly note is shown"


def test_png_export(tmp_path: Path) -> None:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("kaleido (the plots extra) is not installed in CI")
        pytest.skip("kaleido is not installed")
    browser_or_skip()
    out = tmp_path / "out"
    assert main([str(ROOT / "experiments" / "quickstart.yaml"), "--out", str(out), "--set", "iterations=1", "--png", "--quiet"]) == 0
    pngs = sorted(p.name for p in (out / "quickstart" / "png").iterdir())
    assert pngs == ["verl__cost.png", "verl__gpus.png", "verl__instances.png", "verl__timeline.png"]
    for name in pngs:
        assert (out / "quickstart" / "png" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
