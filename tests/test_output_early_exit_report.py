"""Early exit as a user sees it: the CLI's table and its warnings (once each), report.html, runs.csv, the glossary."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from sim.output.early_exit_report import KEYS
from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "traces" / "exit_profiles" / "smollm2-135m-instruct.json"


def experiment(tmp_path: Path, early_exit: dict, sweep: dict | None = None) -> Path:
    raw = {
        "name": "ee_cli",
        "iterations": 1,
        "model": "qwen2.5-0.5b",
        "workload": {"dataset": "gsm8k", "prompts_per_iteration": 8, "samples_per_prompt": 2, "max_response_tokens": 256},
        "cluster": {"nodes": 1, "gpus_per_node": 1, "gpu": "H100-SXM"},
        "platform": {"kind": "serverful"},
        "scheduler": {"name": "verl"},
        "early_exit": {"profile": str(PROFILE), **early_exit},
    }
    if sweep:
        raw["sweep"] = sweep
    path = tmp_path / "ee.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """A 2 x 2 sweep (batch cap x budget, one budget below every measured mismatch), run by the CLI."""
    tmp = tmp_path_factory.mktemp("ee_cli")
    path = experiment(tmp, {}, {"engine.max_num_seqs": [1, 64], "early_exit.max_mismatch": [0.001, 0.05]})
    out = tmp / "out"
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        status = main([str(path), "--out", str(out), "--workers", "1"])
    return status, std.getvalue(), err.getvalue(), out / "ee_cli"


def test_each_distinct_warning_is_printed_once_for_the_whole_sweep(sweep_run):
    status, _, err, _ = sweep_run
    assert status == 0
    lines = [l for l in err.splitlines() if l.startswith("warning: ")]
    # four runs: all four apply a SmolLM2 profile to qwen2.5-0.5b; two have a budget no threshold meets
    assert sum("measured on SmolLM2" in l for l in lines) == 1
    assert sum("no measured" in l and "stable" in l for l in lines) == 1
    assert len(lines) == len(set(lines)) == 2


def test_runs_csv_and_summaries_carry_the_early_exit_keys(sweep_run):
    _, _, _, exp = sweep_run
    with (exp / "runs.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for key in KEYS:
        assert key in rows[0]
    by = {(r["engine.max_num_seqs"], r["early_exit.max_mismatch"]): r for r in rows}
    assert by[("1", "0.001")]["early_exit_chosen_by"] == "fallback"
    assert by[("1", "0.05")]["early_exit_chosen_by"] == "budget"
    assert float(by[("1", "0.05")]["early_exit_mismatch_fraction"]) <= 0.05
    warnings = json.loads(by[("1", "0.001")]["early_exit_warnings"])  # a list, one JSON cell
    assert any("no measured" in w for w in warnings)
    summary = json.loads(next(exp.glob("*max_mismatch=0.05*")).joinpath("summary.json").read_text())
    assert set(KEYS) <= set(summary)


def test_reports_show_the_price_and_the_trade_off(sweep_run):
    _, _, _, exp = sweep_run
    run_html = next(exp.glob("*max_mismatch=0.05__engine.max_num_seqs=1")).joinpath("report.html").read_text()
    for text in ("early exit: token mismatch", "early exit: generation time saved", "depth per decode step", "SmolLM2-135M-Instruct"):
        assert text in run_html
    assert "warning: early_exit: the profile was measured on SmolLM2" in run_html
    exp_html = (exp / "report.html").read_text()
    assert 'id="fig-early_exit"' in exp_html
    assert "generation time saved against token mismatch" in exp_html


def test_single_run_table_shows_operating_point_mismatch_depth_and_saving(tmp_path, capsys):
    path = experiment(tmp_path, {"policy": "max_prob", "threshold": 0.9})
    assert main([str(path), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    flat = " ".join(out.split())
    for label in ("early exit: operating point", "max_prob >= 0.9 (explicit)", "token mismatch", "depth per decode step", "generation time saved"):
        assert label in flat, label
    assert err.count("above max_mismatch") == 1
    summary = json.loads((tmp_path / "out" / "ee_cli" / "verl" / "summary.json").read_text())
    assert summary["early_exit_mismatch_fraction"] > summary["early_exit_max_mismatch"]
    assert f"{summary['early_exit_mismatch_fraction']:.2%}" in out


def test_quiet_prints_no_warning(tmp_path, capsys):
    path = experiment(tmp_path, {"policy": "max_prob", "threshold": 0.9})
    assert main([str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_every_early_exit_key_is_in_the_glossary():
    glossary = (ROOT / "docs" / "metrics.md").read_text()
    assert [k for k in KEYS if f"`{k}`" not in glossary] == []
