"""Sweeps and comparisons (sim/sweep/driver.py, backends.py, design.md section 8): comparisons within a sweep point, failed runs recorded, resume after Ctrl-C, backends that write identical files, user catalogs in sweeps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sim.config import ConfigError, validate
from sim.cli import main
from sim.schedulers import base
from sim.schedulers.verl import Verl, VerlParams
from sim.sweep import expand

from sweep_helpers import ROOT, write_experiment, read_rows, tree_bytes, run_cli


# ------------------------------------------------------------------------- comparisons in a sweep


class SlowSwitch(Verl):
    """verl with a slower trainer/rollout switch: a second serverful scheduler to compare against."""

    name = "test_slow_switch"

    class Params(VerlParams):
        mode_switch_s: float = 30.0


def test_compare_ratios_are_computed_within_each_sweep_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.metrics import compare_ratios

    monkeypatch.setitem(base._REGISTRY, SlowSwitch.name, SlowSwitch)
    path = write_experiment(
        tmp_path, "cmp", iterations=2, scheduler={"name": SlowSwitch.name}, compare=["verl"],
        sweep={"cluster.nodes": [1, 2], "scheduler.params.mode_switch_s": [10.0, 40.0]},
    )  # fmt: skip
    assert main([str(path), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    exp = tmp_path / "out" / "cmp"
    rows = read_rows(exp / "runs.csv")
    assert [r["run_id"] for r in rows] == [
        "test_slow_switch__cluster.nodes=1__scheduler.params.mode_switch_s=10.0", "verl__cluster.nodes=1",
        "test_slow_switch__cluster.nodes=1__scheduler.params.mode_switch_s=40.0",
        "test_slow_switch__cluster.nodes=2__scheduler.params.mode_switch_s=10.0", "verl__cluster.nodes=2",
        "test_slow_switch__cluster.nodes=2__scheduler.params.mode_switch_s=40.0",
    ]  # fmt: skip
    assert list(rows[0])[:5] == ["run_id", "status", "error", "cluster.nodes", "scheduler.params.mode_switch_s"]
    assert rows[1]["scheduler.params.mode_switch_s"] == ""  # the baseline does not depend on it
    for nodes in (1, 2):
        baseline = json.loads((exp / f"verl__cluster.nodes={nodes}" / "summary.json").read_text())
        assert "compare" not in baseline
        for switch in (10.0, 40.0):
            summary = json.loads((exp / f"test_slow_switch__cluster.nodes={nodes}__scheduler.params.mode_switch_s={switch}" / "summary.json").read_text())
            assert summary["compare"] == {"verl": compare_ratios(summary, baseline)}
    speedups = [float(r["compare.verl.speedup"]) for r in rows if r["scheduler"] == SlowSwitch.name]
    assert speedups[1] < speedups[0] < 1.0 and speedups[3] < speedups[2] < 1.0  # a slower switch: slower than verl
    assert (exp / "report.html").is_file() and (exp / "plotly.min.js").is_file()
    # not a terminal: no progress bar, one plain line per finished run
    err = capsys.readouterr().err
    assert "\x1b[" not in err and len(re.findall(r"^\[\d/6\] ok ", err, flags=re.M)) == 6


# ----------------------------------------------------------------------------------- failed runs


def test_an_infeasible_sweep_point_is_recorded_and_the_others_finish(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path, "infeasible", iterations=1, scheduler={"name": "verl", "params": {"tp": 1}},
                            sweep={"model": ["qwen2.5-3b", "llama-3-70b", "qwen2.5-1.5b"]})  # fmt: skip
    assert main([str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"]) == 1
    exp = tmp_path / "out" / "infeasible"
    rows = read_rows(exp / "runs.csv")
    assert [(r["run_id"], r["status"]) for r in rows] == [
        ("verl__model=qwen2.5-3b", "ok"), ("verl__model=llama-3-70b", "failed"), ("verl__model=qwen2.5-1.5b", "ok"),
    ]  # fmt: skip
    assert "GB" in rows[1]["error"] and "\n" not in rows[1]["error"] and rows[1]["model"] == "llama-3-70b"
    assert rows[0]["error"] == "" and float(rows[0]["mean_iteration_s"]) > 0
    assert sorted(p.name for p in exp.iterdir() if p.is_dir()) == ["verl__model=qwen2.5-1.5b", "verl__model=qwen2.5-3b"]
    err = capsys.readouterr().err
    assert "error: run verl__model=llama-3-70b:" in err and "1 of 3 runs failed" in err and "Traceback" not in err


def test_an_internal_error_in_one_run_is_recorded_with_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sim.simulation

    real = sim.simulation.simulate

    def flaky(cfg, *args, **kwargs):
        if cfg.seed == 1:
            raise RuntimeError("boom")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(sim.simulation, "simulate", flaky)
    path = write_experiment(tmp_path, "flaky", iterations=1, sweep={"seed": [0, 1, 2]})
    assert main([str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"]) == 1
    rows = read_rows(tmp_path / "out" / "flaky" / "runs.csv")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"] and rows[1]["error"] == "RuntimeError: boom"
    assert "internal error: RuntimeError: boom (run verl__seed=1)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume after Ctrl-C


def test_an_interrupted_sweep_resumes_to_the_same_files(tmp_path: Path) -> None:
    """SIGINT after the first run is written, then the same command: identical to one uninterrupted sweep."""
    path = write_experiment(tmp_path, "resume", iterations=60, sweep={"seed": [0, 1, 2, 3, 4, 5]})  # ~1 s per run
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    reference = subprocess.Popen(
        [sys.executable, "-m", "sim.run", str(path), "--out", str(whole), "--quiet", "--workers", "1"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.run", str(path), "--out", str(resumed), "--workers", "1"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    exp = resumed / "resume"
    deadline = time.monotonic() + 60
    while not (exp / "verl__seed=0" / "summary.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    complete = sorted(p.name for p in exp.iterdir() if p.is_dir())
    assert 1 <= len(complete) < 6, complete  # interrupted part-way (if this fails, the runs got too fast)
    assert not [p.name for p in exp.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert [r["run_id"] for r in read_rows(exp / "runs.csv")] == complete  # runs.csv: what is complete
    inode = (exp / "verl__seed=0" / "summary.json").stat().st_ino

    again = run_cli(path, "--out", resumed, "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert f"{len(complete)} of 6 runs already complete" in again.stderr
    assert (exp / "verl__seed=0" / "summary.json").stat().st_ino == inode  # skipped, not rewritten
    assert reference.wait(timeout=120) == 0, reference.stderr.read() if reference.stderr else ""
    assert tree_bytes(resumed) == tree_bytes(whole)
    assert len(read_rows(exp / "runs.csv")) == 6


def test_a_changed_config_reruns_only_the_runs_it_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path, "change", iterations=1, sweep={"cluster.nodes": [1, 2]})
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--quiet", "--workers", "1"]) == 0
    exp = out / "change"
    stamp = {p.name: (p / "config.yaml").stat().st_ino for p in exp.iterdir() if p.is_dir()}
    # a resolved config that differs (another seed) is run again; an equal one is skipped
    (exp / "verl__cluster.nodes=2" / "config.yaml").write_text((exp / "verl__cluster.nodes=2" / "config.yaml").read_text().replace("seed: 0", "seed: 5"))
    assert main([str(path), "--out", str(out), "--workers", "1"]) == 0
    assert (exp / "verl__cluster.nodes=1" / "config.yaml").stat().st_ino == stamp["verl__cluster.nodes=1"]
    assert (exp / "verl__cluster.nodes=2" / "config.yaml").stat().st_ino != stamp["verl__cluster.nodes=2"]
    assert "seed: 0" in (exp / "verl__cluster.nodes=2" / "config.yaml").read_text()
    assert "1 of 2 runs already complete" in capsys.readouterr().err
    assert len(read_rows(exp / "runs.csv")) == 2


# -------------------------------------------------------------------------------------- backends


def require(module: str, what: str) -> None:
    """Skip when an optional extra is missing, except in CI, where it must be installed."""
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed in CI")
        pytest.skip(f"{what} is not installed")


def test_local_pool_in_process_and_ray_write_identical_files(tmp_path: Path) -> None:
    require("ray", "the ray extra (pip install -e '.[ray]')")
    path = write_experiment(tmp_path, "backends", iterations=2, sweep={"cluster.nodes": [1, 2], "seed": [0, 1]})
    outs = {kind: tmp_path / kind for kind in ("one", "pool", "ray")}
    ray_proc = subprocess.Popen(
        [sys.executable, "-m", "sim.run", str(path), "--out", str(outs["ray"]), "--backend", "ray", "--workers", "2", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # sim.sweep sets the loopback env vars
    )  # fmt: skip
    assert main([str(path), "--out", str(outs["one"]), "--workers", "1", "--quiet"]) == 0
    assert main([str(path), "--out", str(outs["pool"]), "--workers", "2", "--quiet"]) == 0
    _, err = ray_proc.communicate(timeout=180)
    assert ray_proc.returncode == 0, err
    trees = {kind: tree_bytes(out) for kind, out in outs.items()}
    assert len(trees["one"]) == 4 * 6 + 3  # 4 runs of 6 files, runs.csv, plotly.min.js, report.html
    assert trees["pool"] == trees["one"] and trees["ray"] == trees["one"]


# ---------------------------------------------------------------------------- bring your own hardware

BYO_GPU = {
    "memory_bytes": 96.0e9, "hbm_bandwidth_bytes_per_s": 1.6e12, "bf16_flops": 500.0e12,
    "intra_node_bandwidth_bytes_per_s": 64.0e9, "inter_node_bandwidth_bytes_per_s": 50.0e9,
    "host_to_gpu_bandwidth_bytes_per_s": 64.0e9, "price_usd_per_gpu_hour": 2.5, "host_memory_bytes": 1.0e12,
    "gpus_per_node": 8, "sources": {"all": "test fixture"},
}  # fmt: skip


def byo_experiment(tmp_path: Path, name: str, catalog_name: str = "mine.yaml") -> Path:
    """A sweep over an inline GPU, a user-catalog GPU and a packaged one (the catalog beside the file)."""
    (tmp_path / catalog_name).write_text(yaml.safe_dump({"gpus": {"X1": BYO_GPU}}))
    inline = {"name": "L40S-cheap", "base": "L40S", "price_usd_per_gpu_hour": 1.0}
    return write_experiment(
        tmp_path, name, iterations=1, catalogs=[catalog_name], model="qwen2.5-0.5b",
        workload={"dataset": "gsm8k", "prompts_per_iteration": 16, "samples_per_prompt": 2},
        sweep={"cluster.gpu": ["X1", inline, "L40S"]},
    )  # fmt: skip


def test_inline_and_user_catalog_gpus_in_a_sweep(tmp_path: Path) -> None:
    path = byo_experiment(tmp_path, "byo")
    assert main([str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"]) == 0
    rows = {r["run_id"]: r for r in read_rows(tmp_path / "out" / "byo" / "runs.csv")}
    assert list(rows) == ["verl__cluster.gpu=X1", "verl__cluster.gpu=L40S-cheap", "verl__cluster.gpu=L40S"]  # inline: by its name
    prices = {k: float(r["price_usd_per_gpu_hour"]) for k, r in rows.items()}
    assert prices == {"verl__cluster.gpu=X1": 2.5, "verl__cluster.gpu=L40S-cheap": 1.0, "verl__cluster.gpu=L40S": 3.766375}
    # L40S-cheap is L40S at another price: same timing, cost in proportion
    cheap, l40s = rows["verl__cluster.gpu=L40S-cheap"], rows["verl__cluster.gpu=L40S"]
    assert cheap["mean_iteration_s"] == l40s["mean_iteration_s"]
    assert float(cheap["total_cost_usd"]) == pytest.approx(float(l40s["total_cost_usd"]) / 3.766375)


def test_a_swept_name_missing_from_the_catalogs_is_refused(tmp_path: Path) -> None:
    path = byo_experiment(tmp_path, "byo")
    raw = yaml.safe_load(path.read_text())
    raw["sweep"] = {"cluster.gpu": ["X1", "X2"]}
    with pytest.raises(ConfigError, match=r"sweep point cluster.gpu=X2: cluster.gpu: unknown name 'X2' \(did you mean 'X1'\?\)"):
        expand(raw, validate(raw, str(path)), str(path))
    raw["sweep"] = {"catalogs": [["mine.yaml"], []]}
    with pytest.raises(ConfigError, match="'catalogs' cannot be swept"):
        expand(raw, validate(raw, str(path)), str(path))


def test_the_catalog_reaches_pool_and_ray_workers(tmp_path: Path) -> None:
    """Workers get the merged catalog with each task: they never read the user's files (here deleted first)."""
    require("ray", "the ray extra (pip install -e '.[ray]')")
    from sim.config import resolve_catalog
    from sim.sweep import run_plan

    path = byo_experiment(tmp_path, "byo")
    raw = yaml.safe_load(path.read_text())
    catalog = resolve_catalog(raw, str(path))
    plan = expand(raw, validate(raw, str(path), catalog), str(path), catalog)
    (tmp_path / "mine.yaml").unlink()
    outs = {}
    for kind, backend, workers in (("one", "local", 1), ("pool", "local", 2), ("ray", "ray", 2)):
        outs[kind] = tmp_path / kind
        outcome = run_plan(plan, outs[kind], base_dir=tmp_path, file=str(path), backend=backend, workers=workers, quiet=True, catalog=catalog)
        assert not outcome.failures, [f.error for f in outcome.failures]
        assert {s["gpu"] for s in outcome.summaries.values()} == {"X1", "L40S-cheap", "L40S"}
    trees = {kind: tree_bytes(out) for kind, out in outs.items()}
    assert trees["pool"] == trees["one"] and trees["ray"] == trees["one"]
