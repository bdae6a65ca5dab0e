"""Sweep plans (sim/sweep/plan.py, design.md section 8): grid expansion in the order given, run ids that are safe, unique and stable, and bad sweep values refused naming the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sim.config import ConfigError
from sim.cli import main
from sim.sweep import MAX_RUN_ID_CHARS, format_value, slug

from sweep_helpers import SAFE, quickstart, plan_of, write_experiment


# ------------------------------------------------------------------------------- grid and run ids


def test_grid_is_the_cartesian_product_in_the_order_given_with_safe_unique_ids() -> None:
    plan = plan_of(quickstart(sweep={"cluster.nodes": [2, 1], "seed": [0, 7, 3]}))
    assert plan.sweep_keys == ("cluster.nodes", "seed")
    assert [r.point for r in plan.runs] == [{"cluster.nodes": n, "seed": s} for n in (2, 1) for s in (0, 7, 3)]
    assert [r.run_id for r in plan.runs][:2] == ["verl__cluster.nodes=2__seed=0", "verl__cluster.nodes=2__seed=7"]
    assert [(r.cfg.cluster.nodes, r.cfg.seed) for r in plan.runs] == [(n, s) for n in (2, 1) for s in (0, 7, 3)]
    assert all(r.cfg.sweep == {} for r in plan.runs)  # each run's config is the point itself
    ids = [r.run_id for r in plan.runs]
    assert len(set(ids)) == len(ids) and all(SAFE.match(i) for i in ids)


def test_single_run_and_comparison_ids_are_scheduler_names() -> None:
    assert [r.run_id for r in plan_of(quickstart()).runs] == ["verl"]
    plan = plan_of(quickstart(compare=["rlhfuse", "verl"]))
    assert [r.run_id for r in plan.runs] == ["verl", "rlhfuse"]  # the main scheduler in compare is dropped
    assert plan.runs[0].baselines == ("rlhfuse",) and plan.runs[1].cfg.scheduler.name == "rlhfuse"


def test_comparison_runs_follow_their_point_and_ignore_swept_scheduler_keys() -> None:
    raw = quickstart(
        scheduler={"name": "other", "params": {}}, compare=["verl"],
        sweep={"cluster.nodes": [1, 2], "scheduler.params.lambda": [0.1, 1.0]},
    )  # fmt: skip
    plan = plan_of(raw)
    assert [r.run_id for r in plan.runs] == [
        "other__cluster.nodes=1__scheduler.params.lambda=0.1", "verl__cluster.nodes=1",
        "other__cluster.nodes=1__scheduler.params.lambda=1.0",
        "other__cluster.nodes=2__scheduler.params.lambda=0.1", "verl__cluster.nodes=2",
        "other__cluster.nodes=2__scheduler.params.lambda=1.0",
    ]  # fmt: skip
    by_id = {r.run_id: r for r in plan.runs}
    assert by_id["other__cluster.nodes=2__scheduler.params.lambda=1.0"].baselines == ("verl__cluster.nodes=2",)
    assert by_id["verl__cluster.nodes=1"].cfg.scheduler.params == {} and by_id["verl__cluster.nodes=1"].point == {"cluster.nodes": 1}
    assert by_id["other__cluster.nodes=1__scheduler.params.lambda=1.0"].cfg.scheduler.params == {"lambda": 1.0}


def test_run_ids_are_filesystem_safe_and_long_ones_shortened_deterministically() -> None:
    assert slug("verl", [("workload.trace", "../traces/a b.csv")]) == "verl__workload.trace=..-traces-a-b.csv"
    assert slug("verl", [("x", None), ("y", True), ("z", [1, 2])]) == "verl__x=null__y=true__z=-1,2-"
    long_a = slug("verl", [("platform.cold_start", {"container_s": 5.0, "engine_init_s": 10.0, "weights_from": "remote" * 20})])
    long_b = slug("verl", [("platform.cold_start", {"container_s": 5.0, "engine_init_s": 10.0, "weights_from": "remote" * 21})])
    assert len(long_a) <= MAX_RUN_ID_CHARS and len(long_b) <= MAX_RUN_ID_CHARS
    assert long_a != long_b and SAFE.match(long_a) and SAFE.match(long_b)
    assert long_a == slug("verl", [("platform.cold_start", {"container_s": 5.0, "engine_init_s": 10.0, "weights_from": "remote" * 20})])
    assert format_value(0.5) == "0.5" and format_value("H100-SXM") == "H100-SXM"


def test_colliding_slugs_of_distinct_points_get_distinct_ids() -> None:
    plan = plan_of(quickstart(sweep={"scheduler.params.note": ["a/b", "a-b"]}))
    ids = [r.run_id for r in plan.runs]
    assert ids[0] == "verl__scheduler.params.note=a-b" and ids[1].startswith("verl__scheduler.params.note=a-b__")
    assert len(set(ids)) == 2


@pytest.mark.parametrize(
    "sweep, needles",
    [
        ({"cluster.nodes": [1, 0]}, ["sweep point cluster.nodes=0", "cluster.nodes", "greater than or equal to 1"]),
        ({"cluster.gpu": ["L40S", "L40"]}, ["sweep point cluster.gpu=L40", "cluster.gpu", "unknown name 'L40'"]),
        ({"workload.sample_per_prompt": [4]}, ["workload.sample_per_prompt", "unknown key"]),
        ({"cluster.nodes": []}, ["sweep.cluster.nodes", "non-empty"]),
        ({"seed": [1, 1]}, ["sweep.seed", "more than once"]),
        ({"name": ["a", "b"]}, ["sweep.name", "cannot be swept"]),
    ],
)
def test_bad_sweep_values_are_refused_naming_the_path(sweep: dict[str, list[Any]], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        plan_of(quickstart(sweep=sweep))
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_bad_sweep_value_exits_2_without_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path, "bad", sweep={"scheduler.params.tp": [1, "abc"]})
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: sweep point scheduler.params.tp=abc: scheduler.params.tp:") and "Traceback" not in err
    assert not out.exists()
