"""End-to-end tests of `python -m sim.run` (design.md section 7): files written, determinism, exit codes.

Each test runs the real command in a subprocess from the repository root, as a user would. Bad input
must exit 2 with one message naming the file, the field and what was expected, and no traceback.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from sim.config import load_config

from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = "experiments/quickstart.yaml"
RUN_FILES = ("config.yaml", "iterations.csv", "instances.csv", "summary.json")

SUMMARY_KEYS = [
    "name", "run_id", "scheduler", "seed", "iterations", "mean_iteration_s", "total_time_s", "total_cost_usd",
    "billed_gpu_s", "busy_gpu_s", "idle_gpu_s", "utilization", "tokens_generated", "tokens_per_s",
    "cost_per_million_tokens_usd", "cold_starts", "migrations", "phases", "startup_s", "steady_mean_iteration_s",
    "steady_cost_per_iteration_usd", "steady_billed_gpu_s_per_iteration",
]  # fmt: skip
PHASES = ["generation", "inference", "training", "weight_sync"]
ITERATION_COLUMNS = [
    "iteration", "phase", "start_s", "end_s", "busy_gpu_s", "billed_gpu_s", "idle_gpu_s", "cost_usd",
    "cold_starts", "tokens", "migrations",
]  # fmt: skip
INSTANCE_COLUMNS = [
    "instance_id", "role", "node", "gpus", "requested_s", "ready_s", "released_s", "busy_s", "billed_s", "cold_start",
]  # fmt: skip


def run_all(commands: dict[str, list[str | Path]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run several commands side by side (each is an independent process writing its own folder)."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(run_cli, *args) for key, args in commands.items()}
        return {key: f.result() for key, f in futures.items()}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ a good run


@pytest.fixture(scope="module")
def quickstart_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """The quickstart run twice alike (once --quiet), once with another seed, and with `compare` lists."""
    extras: dict[str, list[str | Path]] = {
        "a": ["--quiet"],
        "b": [],
        "seed1": ["--quiet", "--set", "seed=1"],
        "compare": ["--quiet", "--set", "compare=[verl]"],
        "compare-other": ["--quiet", "--set", "compare=[serverless]", "--set", "iterations=1"],
    }
    outs = {key: tmp_path_factory.mktemp(f"out_{key}") for key in extras}
    procs = run_all({key: [QUICKSTART, "--out", outs[key], *extra] for key, extra in extras.items()})
    return {key: (outs[key], procs[key]) for key in extras}


def test_quickstart_exits_0_and_writes_every_file(quickstart_runs) -> None:
    out, proc = quickstart_runs["a"]
    assert proc.returncode == 0, proc.stderr
    run_dir = out / "quickstart" / "verl"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert (out / "quickstart" / "runs.csv").is_file()
    # written atomically: no temporary files or folders left beside the run
    leftovers = [p for p in (out / "quickstart").rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_quiet_prints_nothing_and_default_prints_the_summary(quickstart_runs) -> None:
    _, quiet = quickstart_runs["a"]
    _, loud = quickstart_runs["b"]
    assert quiet.stdout == ""
    assert loud.returncode == 0, loud.stderr
    assert "mean iteration (s)" in loud.stdout and "verl" in loud.stdout


def test_summary_json_has_every_documented_key(quickstart_runs) -> None:
    out, _ = quickstart_runs["a"]
    summary = json.loads((out / "quickstart" / "verl" / "summary.json").read_text())
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    assert not missing
    assert sorted(summary["phases"]) == sorted(PHASES + ["startup"])
    assert summary["name"] == "quickstart" and summary["run_id"] == "verl" and summary["scheduler"] == "verl"
    assert summary["seed"] == 0 and summary["iterations"] == 3
    assert "compare" not in summary  # only when `compare` is set
    for key in SUMMARY_KEYS:
        if key not in ("name", "run_id", "scheduler", "phases"):
            assert isinstance(summary[key], (int, float)) and summary[key] >= 0, key


def test_iterations_and_instances_csv_columns(quickstart_runs) -> None:
    out, _ = quickstart_runs["a"]
    run_dir = out / "quickstart" / "verl"
    columns, rows = read_csv(run_dir / "iterations.csv")
    assert [c for c in ITERATION_COLUMNS if c not in columns] == []
    # a serverful job starts up (loads its models, starts its engines) before its first iteration
    assert [(int(r["iteration"]), r["phase"]) for r in rows] == [(0, "startup")] + [(i, p) for i in range(3) for p in PHASES]
    columns, rows = read_csv(run_dir / "instances.csv")
    assert [c for c in INSTANCE_COLUMNS if c not in columns] == []
    assert len(rows) == 8  # serverful verl: one instance per GPU of the 1 x 8 L40S node


def test_runs_csv_has_the_summary_scalars(quickstart_runs) -> None:
    out, _ = quickstart_runs["a"]
    summary = json.loads((out / "quickstart" / "verl" / "summary.json").read_text())
    columns, rows = read_csv(out / "quickstart" / "runs.csv")
    assert columns[:2] == ["run_id", "status"]
    assert len(rows) == 1
    row = rows[0]
    assert row["run_id"] == "verl" and row["status"] == "ok"
    for key in ("mean_iteration_s", "total_cost_usd", "billed_gpu_s", "utilization"):
        assert float(row[key]) == summary[key]
    for phase in PHASES:
        assert float(row[f"phases.{phase}"]) == summary["phases"][phase]


def test_written_config_is_the_resolved_config(quickstart_runs) -> None:
    out, _ = quickstart_runs["a"]
    assert load_config(out / "quickstart" / "verl" / "config.yaml") == load_config(ROOT / QUICKSTART)


def test_same_config_twice_gives_identical_bytes(quickstart_runs) -> None:
    (out_a, proc_a), (out_b, proc_b) = quickstart_runs["a"], quickstart_runs["b"]
    assert proc_a.returncode == 0 and proc_b.returncode == 0
    a, b = tree_bytes(out_a), tree_bytes(out_b)
    assert sorted(a) == sorted(b)
    expected = {f"quickstart/verl/{n}" for n in RUN_FILES} | {"quickstart/runs.csv"}
    assert expected <= set(a)
    for name in a:
        assert a[name] == b[name], name


def test_a_quiet_run_imports_only_what_it_needs(tmp_path: Path) -> None:
    """Start-up: networkx (topology paths walk a tree), plotly (run reports are written from figure dicts),
    rich (nothing printed), pandas and scipy are imported where first needed, and a quiet run needs none; nor
    early exit's modules and the other schedulers' when the run uses neither (the quickstart runs verl)."""
    unneeded = ("networkx", "plotly", "rich", "pandas", "scipy", "sim.perf.early_exit", "sim.probe", "sim.perf.table", "sim.schedulers.rlhfless")
    code = (
        "import json, sys; from sim.cli import main; "
        f"code = main([{QUICKSTART!r}, '--out', {str(tmp_path)!r}, '--quiet', '--workers', '1']); "
        f"print(json.dumps([code, sorted(m for m in {unneeded!r} if m in sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0, []]
    assert (tmp_path / "quickstart" / "verl" / "report.html").is_file() and (tmp_path / "quickstart" / "plotly.min.js").is_file()


def test_another_seed_gives_another_run(quickstart_runs) -> None:
    out_a, _ = quickstart_runs["a"]
    out_s, proc = quickstart_runs["seed1"]
    assert proc.returncode == 0, proc.stderr
    rel = Path("quickstart") / "verl" / "iterations.csv"
    assert (out_a / rel).read_bytes() != (out_s / rel).read_bytes()
    assert json.loads((out_s / "quickstart" / "verl" / "summary.json").read_text())["seed"] == 1


def test_compare_with_itself_is_a_no_op(quickstart_runs) -> None:
    out, proc = quickstart_runs["compare"]
    assert proc.returncode == 0, proc.stderr
    _, rows = read_csv(out / "quickstart" / "runs.csv")
    assert [r["run_id"] for r in rows] == ["verl"]
    summary = json.loads((out / "quickstart" / "verl" / "summary.json").read_text())
    assert "compare" not in summary
    out_a, _ = quickstart_runs["a"]
    same = Path("quickstart") / "verl" / "iterations.csv"
    assert (out / same).read_bytes() == (out_a / same).read_bytes()


def test_compare_with_another_scheduler_reports_ratios(quickstart_runs) -> None:
    out, proc = quickstart_runs["compare-other"]
    assert proc.returncode == 0, proc.stderr
    exp = out / "quickstart"
    main = json.loads((exp / "verl" / "summary.json").read_text())
    base = json.loads((exp / "serverless" / "summary.json").read_text())
    assert base["scheduler"] == "serverless" and base["deployment"] == "serverless"
    ratios = main["compare"]["serverless"]
    assert ratios["speedup"] == pytest.approx(base["mean_iteration_s"] / main["mean_iteration_s"])
    assert ratios["cost_reduction"] == pytest.approx(1 - main["total_cost_usd"] / base["total_cost_usd"])
    assert ratios["gpu_s_reduction"] == pytest.approx(1 - main["billed_gpu_s"] / base["billed_gpu_s"])
    assert main["tokens_generated"] == base["tokens_generated"]  # same seed, same workload
    _, rows = read_csv(exp / "runs.csv")
    assert [r["run_id"] for r in rows] == ["verl", "serverless"]
    assert float(rows[0]["compare.serverless.speedup"]) == ratios["speedup"]


# ------------------------------------------------------------------------------------- bad input


def assert_bad_input(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ")
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


# id -> (--set overrides of the quickstart, what stderr must contain besides the experiment file)
BAD_OVERRIDES: dict[str, tuple[list[str], list[str]]] = {
    "unknown-key": (
        ["workload.sample_per_prompt=8"],
        ["workload.sample_per_prompt", "unknown key", "did you mean 'samples_per_prompt'?", "expected one of:"],
    ),
    "wrong-type": (["iterations=abc"], ["iterations:", "integer", "'abc'"]),
    "negative-count": (["workload.prompts_per_iteration=-1"], ["workload.prompts_per_iteration:", "greater than or equal to 1"]),
    "unknown-model": (["model=qwen2.5-7"], ["model:", "unknown model 'qwen2.5-7'", "did you mean 'qwen2.5-7b'?"]),
    "unknown-scheduler": (["scheduler.name=verll"], ["scheduler.name:", "unknown scheduler 'verll'", "available:", "verl"]),
    "unknown-compare": (["compare=[verll]"], ["compare[0]:", "unknown scheduler 'verll'", "verl"]),
    "bad-scheduler-param": (["scheduler.params.tp=abc"], ["scheduler.params.tp:", "integer", "'abc'"]),
    "unknown-scheduler-param": (["scheduler.params.t=2"], ["scheduler.params.t:", "unknown key", "did you mean 'tp'?"]),
    "memory-infeasible": (["model=llama-3-70b", "scheduler.params.tp=1"], ["GB"]),
    "missing-exit-profile": (["early_exit.profile=no_such_profile.json"], ["early_exit.profile", "no such file", "no_such_profile.json"]),
    "unsupported-combination": (
        ["early_exit.profile=x.json", "perf.model=table", "perf.table=../traces/perf/qwen2.5_vllm_a100_speed.csv"],
        ["early_exit", "roofline"],
    ),
    "exit-threshold-without-measure": (
        ["early_exit.profile=../traces/exit_profiles/smollm2-135m-instruct.json", "early_exit.threshold=0.9"],
        ["early_exit.threshold", "needs policy max_prob or margin"],
    ),
    "exit-threshold-not-measured": (
        ["early_exit.profile=../traces/exit_profiles/smollm2-135m-instruct.json", "early_exit.policy=max_prob", "early_exit.threshold=0.75"],
        ["early_exit.threshold", "0.75", "measured thresholds", "0.999"],
    ),
    "exit-budget-out-of-range": (["early_exit.profile=x.json", "early_exit.max_mismatch=1.5"], ["early_exit.max_mismatch", "1"]),
    "set-without-equals": (["cluster.nodes"], ["--set 'cluster.nodes'", "dotted.key=value"]),
    "infinite-duration": (["platform.cold_start.container_s=.inf"], ["platform.cold_start.container_s:", "finite number"]),
    "negative-seed": (["seed=-1"], ["seed:", "greater than or equal to 0", "-1"]),
    "unknown-recipe": (["workload.algorithm=drpo"], ["workload.algorithm:", "'dapo'", "'reinforce_pp'", "'drpo'"]),
    "bad-kl": (["workload.kl=maybe"], ["workload.kl:", "'loss'", "'reward'", "'none'", "'maybe'"]),
    "bad-old-logprob": (["workload.old_logprob=sometimes"], ["workload.old_logprob:", "expected auto, true or false", "'sometimes'"]),
    "dynamic-sampling-groups-of-one": (
        ["workload.algorithm=dapo", "workload.samples_per_prompt=1"],
        ["workload.dynamic_sampling.enabled:", "samples_per_prompt >= 2", "enabled: false"],
    ),
    "dynamic-sampling-round-over-pool": (
        ["workload.algorithm=dapo", "workload.dataset_prompts=200"],
        ["workload.dynamic_sampling.oversample", "384 prompts", "exceeds the pool of 200"],
    ),
    "filtered-fraction-one": (["workload.dynamic_sampling.filtered_fraction=1"], ["workload.dynamic_sampling.filtered_fraction:", "less than 1"]),
    "non-integer-seed": (["seed=0.5"], ["seed:", "valid integer", "0.5"]),
    "repeated-key-in-set": (
        ["cluster={nodes: 1, gpus_per_node: 8, nodes: 2}"],
        ["--set 'cluster={nodes: 1", "key 'nodes' repeats the key at line 1, column 2", "not valid YAML at line 1, column 30"],
    ),
}  # fmt: skip
# the cases run as real subprocesses (the others call sim.cli.main in this process: same code, no startup cost)
SUBPROCESS_CASES = ("unknown-key", "memory-infeasible")


def set_args(overrides: list[str]) -> list[str | Path]:
    args: list[str | Path] = []
    for item in overrides:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str], list[str]]]:
    """The subprocess bad-input cases, run side by side: id -> (out dir, process, needles)."""
    tmp = tmp_path_factory.mktemp("bad")
    cases: dict[str, tuple[list[str | Path], list[str]]] = {}
    for key in SUBPROCESS_CASES:
        overrides, needles = BAD_OVERRIDES[key]
        cases[key] = ([QUICKSTART, *set_args(overrides)], [QUICKSTART, *needles])
    missing = tmp / "nope.yaml"
    cases["missing-file"] = ([missing], [str(missing), "no such file"])
    malformed = tmp / "bad.yaml"
    malformed.write_text("name: x\nseed: [1, 2\niterations: 3\n")
    cases["malformed-yaml"] = ([malformed], [str(malformed), "malformed YAML", "line 3"])
    trace = tmp / "trace.csv"
    trace.write_text("iteration,prompt_id,sample_id,prompt_tokens,response_tokens,epoch\n0,1,0,50,120,0\n0,1,1,50,12x,0\n")
    cases["malformed-trace"] = (
        [QUICKSTART, "--set", f"workload.trace={trace}", "--set", "workload.dataset=null"],
        [QUICKSTART, "workload.trace", str(trace), "line 3", "response_tokens", "12x"],
    )
    catalog = tmp / "my_gpus.yaml"
    catalog.write_text("gpus:\n  X1:\n    base: L40S\n    memory_bytes: 48   # GB, not bytes\n")
    cases["bad-user-catalog"] = ([QUICKSTART, "--catalog", catalog], [QUICKSTART, str(catalog), "gpus.X1.memory_bytes", "the field is in bytes"])
    outs = {key: tmp / f"out_{key}" for key in cases}
    procs = run_all({key: [*args, "--out", outs[key]] for key, (args, _) in cases.items()})
    return {key: (outs[key], procs[key], cases[key][1]) for key in cases}


@pytest.mark.parametrize("case", [*SUBPROCESS_CASES, "missing-file", "malformed-yaml", "malformed-trace", "bad-user-catalog"])
def test_bad_input_exits_2_naming_file_and_field(bad_runs, case: str) -> None:
    out, proc, needles = bad_runs[case]
    assert_bad_input(proc, *needles)
    if case == "memory-infeasible":
        assert "generation" in proc.stderr or "training" in proc.stderr
    assert not out.exists()  # nothing is written for a refused experiment


@pytest.mark.parametrize("case", [c for c in BAD_OVERRIDES if c not in SUBPROCESS_CASES])
def test_bad_input_in_process(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.cli import main

    monkeypatch.chdir(ROOT)
    overrides, needles = BAD_OVERRIDES[case]
    out = tmp_path / "out"
    code = main([QUICKSTART, "--out", str(out), "--workers", "1", *map(str, set_args(overrides))])
    captured = capsys.readouterr()
    assert_bad_input(subprocess.CompletedProcess([], code, captured.out, captured.err), QUICKSTART, *needles)
    assert not out.exists()


# ------------------------------------------------------------------ user catalogs


USER_CATALOG = """
gpus:
  X1:                                   # a GPU the package does not know
    memory_bytes: 96.0e+9
    hbm_bandwidth_bytes_per_s: 1.6e+12
    bf16_flops: 500.0e+12
    intra_node_bandwidth_bytes_per_s: 64.0e+9
    inter_node_bandwidth_bytes_per_s: 50.0e+9
    host_to_gpu_bandwidth_bytes_per_s: 64.0e+9
    price_usd_per_gpu_hour: 2.5
    host_memory_bytes: 1.0e+12
    gpus_per_node: 4
    sources: {all: "test fixture"}
models:
  qwen-half:                            # Qwen2.5-0.5B with half its layers
    base: qwen2.5-0.5b
    layers: 12
    params: 315084160.0   # 12 layers x 14,912,384 + embeddings 136,134,656 + final norm 896
    source: test fixture
"""


def test_user_catalog_adds_a_gpu_and_a_model_that_a_run_uses(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "mine.yaml").write_text(USER_CATALOG)
    experiment = {
        "name": "byo", "iterations": 1, "catalogs": ["cat/mine.yaml"], "model": "qwen-half",
        "workload": {"dataset": "gsm8k", "prompts_per_iteration": 16, "samples_per_prompt": 2},
        "cluster": {"nodes": 1, "gpu": "X1"}, "platform": {"kind": "serverful"}, "scheduler": {"name": "verl"},
    }  # fmt: skip
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    proc = run_cli(path, "--out", tmp_path / "out", "--quiet")  # run from the repository root: paths are the file's
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "byo" / "verl" / "summary.json").read_text())
    assert (summary["gpu"], summary["model"], summary["gpus"], summary["price_usd_per_gpu_hour"]) == ("X1", "qwen-half", 4, 2.5)
    assert yaml.safe_load((tmp_path / "out" / "byo" / "verl" / "config.yaml").read_text())["catalogs"] == ["cat/mine.yaml"]
    # the same catalog given on the command line instead, with an override of a packaged GPU's price
    (tmp_path / "price.yaml").write_text("gpus:\n  X1: {base: X1, price_usd_per_gpu_hour: 5.0}\n")
    proc = run_cli(path, "--out", tmp_path / "out2", "--quiet", "--catalog", tmp_path / "price.yaml")
    assert proc.returncode == 0, proc.stderr
    summary2 = json.loads((tmp_path / "out2" / "byo" / "verl" / "summary.json").read_text())
    assert summary2["price_usd_per_gpu_hour"] == 5.0
    assert summary2["total_cost_usd"] == pytest.approx(2 * summary["total_cost_usd"])
    assert summary2["mean_iteration_s"] == summary["mean_iteration_s"]


def test_an_experiment_file_that_repeats_a_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sim.cli import main

    text = (ROOT / QUICKSTART).read_text()
    path = tmp_path / "dup.yaml"
    path.write_text(text.replace("iterations: 3\n", "iterations: 3\nworkload:\n  dataset: gsm8k\n", 1))  # a second `workload:`
    first = text.splitlines().index("workload:") + 1
    second = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line == "workload:")
    assert second < first  # (the inserted one comes first in the file)
    out = tmp_path / "out"
    code = main([str(path), "--out", str(out), "--workers", "1"])
    captured = capsys.readouterr()
    assert_bad_input(
        subprocess.CompletedProcess([], code, captured.out, captured.err),
        str(path), "malformed YAML", f"line {first + 2}, column 1", f"key 'workload' repeats the key at line {second}, column 1",
    )
    assert not out.exists()


# ------------------------------------------------------------------ exit codes without a subprocess


def test_internal_error_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sim.simulation
    from sim.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(sim.simulation, "simulate", broken)
    assert main([str(ROOT / QUICKSTART), "--out", str(tmp_path), "--quiet", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err


def test_bad_command_line_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sim.cli import main

    path = str(ROOT / QUICKSTART)
    assert main([path, "--out", str(tmp_path), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "--workers" in err and "Traceback" not in err
