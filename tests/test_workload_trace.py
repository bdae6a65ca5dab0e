"""Tests for sim/workload/trace.py: trace replay and export, and their errors (file, line and column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import WorkloadConfig
from sim.workload import WorkloadError, make_workload, read_trace, write_trace
from sim.workload import main as workload_main

from workload_helpers import ROOT, build, same, check_shapes


# ---------------------------------------------------------------------------------------------- traces

HEADER = "iteration,prompt_id,sample_id,prompt_tokens,response_tokens\n"


def trace_cfg(trace: str = "t.csv", **kw: Any) -> WorkloadConfig:
    return WorkloadConfig(trace=trace, **kw)


def test_trace_round_trip(tmp_path: Path) -> None:
    w = build(prompts_per_iteration=16, samples_per_prompt=4, dataset_prompts=40)
    path = write_trace(w, 6, tmp_path / "sub" / "rt.csv")
    r = read_trace(path, max_prompt_tokens=w.max_prompt_tokens, max_response_tokens=w.max_response_tokens, template_tokens=25)
    assert r.num_iterations == 6
    assert all(same(w.iteration(i), r.iteration(i)) for i in range(6))
    assert [r.iteration(i).epoch for i in range(6)] == [0, 0, 0, 1, 1, 2]
    # without the epoch column the epoch is inferred from how often the first prompt was seen before
    lines = path.read_text().splitlines()
    stripped = "\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n"
    (tmp_path / "noepoch.csv").write_text(stripped)
    r2 = read_trace(tmp_path / "noepoch.csv", max_prompt_tokens=1024, max_response_tokens=2048, template_tokens=25)
    assert all(same(w.iteration(i), r2.iteration(i)) for i in range(6))


def test_example_trace_is_reproducible(tmp_path: Path) -> None:
    """traces/example_gsm8k_trace.csv is what docs/workload.md says: the gsm8k model, seed 0."""
    assert workload_main(
        ["gsm8k", "--out", str(tmp_path / "x.csv"), "--iterations", "3", "--prompts", "16", "--samples", "4",
         "--dataset-prompts", "32", "--seed", "0"]
    ) == 0
    assert (tmp_path / "x.csv").read_text() == (ROOT / "traces" / "example_gsm8k_trace.csv").read_text()
    w = make_workload(trace_cfg("traces/example_gsm8k_trace.csv"), None, None, np.random.default_rng(0), ROOT)
    assert w.num_iterations == 3 and w.iteration(2).response_tokens.size == 64


def test_trace_replay_details(tmp_path: Path) -> None:
    text = HEADER + "\n".join(
        [
            "0,7,1,30,50",  # rows out of order: samples get sorted, prompts keep first-appearance order
            "0,3,0,20,5000",  # above the cap: clipped to 100
            "0,7,0,30,40",
            "0,7,2,30,60",
            "1,7,0,30,45",  # prompt ids recur across iterations
            "",
        ]
    )
    (tmp_path / "t.csv").write_text(text + "\n")
    w = make_workload(trace_cfg(max_response_tokens=100), None, "t.csv", np.random.default_rng(0), tmp_path)
    s = w.iteration(0)
    assert s.prompt_ids.tolist() == [7, 3]
    assert s.prompt_tokens.tolist() == [30, 20]
    assert s.sample_prompt.tolist() == [0, 0, 0, 1]
    assert s.sample_ids.tolist() == [0, 1, 2, 0]
    assert s.response_tokens.tolist() == [40, 50, 60, 100]
    assert (s.epoch, w.iteration(1).epoch) == (0, 1)
    assert w.truncated_fraction(0) == 0.25
    assert w.default_response_tokens == pytest.approx((40 + 50 + 60 + 100 + 45) / 5)
    with pytest.raises(WorkloadError, match="has 2 iterations"):
        w.iteration(2)
    abs_path = make_workload(trace_cfg(), None, tmp_path / "t.csv", np.random.default_rng(0), Path("/nonexistent"))
    assert same(abs_path.iteration(1), w.iteration(1))


def test_trace_columns_in_any_order(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("response_tokens,epoch,sample_id,prompt_tokens,prompt_id,iteration\n20,4,0,10,3,0\n25,4,1,10,3,0\n")
    s = read_trace(tmp_path / "t.csv", max_prompt_tokens=100, max_response_tokens=100).iteration(0)
    assert (s.epoch, s.prompt_ids.tolist(), s.prompt_tokens.tolist(), s.response_tokens.tolist()) == (4, [3], [10], [20, 25])


def test_empty_and_missing_trace(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text(HEADER)
    with pytest.raises(WorkloadError, match="empty.csv.*no rows"):
        make_workload(trace_cfg(), None, "empty.csv", np.random.default_rng(0), tmp_path)
    with pytest.raises(WorkloadError, match="nope.csv"):
        make_workload(trace_cfg(), None, "nope.csv", np.random.default_rng(0), tmp_path)


BAD_TRACES = [
    ("empty file", "", 1, "iteration"),
    ("missing column", "iteration,prompt_id,sample_id,prompt_tokens\n0,0,0,10\n", 1, "response_tokens"),
    ("unknown column", HEADER.strip() + ",reward\n0,0,0,10,20,1\n", 1, "reward"),
    ("no header", "0,0,0,10,20\n", 1, "0"),
    ("short row", HEADER + "0,0,0,10,20\n0,1,0,10\n", 3, "response_tokens"),
    ("long row", HEADER + "0,0,0,10,20\n0,1,0,10,20,7\n", 3, "#6"),
    ("duplicate column", HEADER.strip() + ",prompt_id\n0,0,0,10,20,1\n", 1, "prompt_id"),
    ("non-integer", HEADER + "0,0,0,10,20\n0,1,0,10,20.5\n", 3, "response_tokens"),
    ("empty value", HEADER + "0,0,,10,20\n", 2, "sample_id"),
    ("zero response", HEADER + "0,0,0,10,20\n0,1,0,10,0\n", 3, "response_tokens"),
    ("negative prompt", HEADER + "0,0,0,-10,20\n", 2, "prompt_tokens"),
    ("negative iteration", HEADER + "-1,0,0,10,20\n", 2, "iteration"),
    ("duplicate key", HEADER + "0,0,0,10,20\n0,0,1,10,20\n0,0,0,10,25\n", 4, "sample_id"),
    ("prompt tokens differ", HEADER + "0,0,0,10,20\n0,0,1,11,20\n", 3, "prompt_tokens"),
    ("sample id gap", HEADER + "0,0,0,10,20\n0,0,2,10,20\n", 3, "sample_id"),
    ("sample ids from 1", HEADER + "0,0,1,10,20\n0,0,2,10,20\n", 2, "sample_id"),
    ("prompt too long", HEADER + "0,0,0,10,20\n0,1,0,2000,20\n", 3, "prompt_tokens"),
    ("iteration gap", HEADER + "0,0,0,10,20\n2,0,0,10,20\n", 3, "iteration"),
    ("iterations from 1", HEADER + "1,0,0,10,20\n", 2, "iteration"),
    ("bad epoch", HEADER.strip() + ",epoch\n0,0,0,10,20,x\n", 2, "epoch"),
]


@pytest.mark.parametrize(("case", "text", "line", "column"), BAD_TRACES, ids=[c[0] for c in BAD_TRACES])
def test_bad_trace_errors_name_file_line_column(tmp_path: Path, case: str, text: str, line: int, column: str) -> None:
    path = tmp_path / "bad_trace.csv"
    path.write_text(text)
    with pytest.raises(WorkloadError) as exc:
        make_workload(trace_cfg(), None, "bad_trace.csv", np.random.default_rng(0), tmp_path)
    msg = str(exc.value)
    assert "bad_trace.csv" in msg and f"line {line}," in msg and f"column {column!r}" in msg, msg


def test_trace_template_tokens(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(HEADER + "0,0,0,30,20\n")
    w = make_workload(trace_cfg(), {"template_tokens": 25}, "t.csv", np.random.default_rng(0), tmp_path)
    assert w.iteration(0).template_tokens == 25
    assert make_workload(trace_cfg(), None, "t.csv", np.random.default_rng(0), tmp_path).iteration(0).template_tokens == 0
    with pytest.raises(WorkloadError, match="line 2, column 'prompt_tokens'"):
        make_workload(trace_cfg(), {"template_tokens": 30}, "t.csv", np.random.default_rng(0), tmp_path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=5), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_property_trace_with_varying_group_sizes(tmp_path_factory, groups, seed) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for it, sizes in enumerate(groups):
        pids = rng.choice(20, size=len(sizes), replace=False)
        for pid, size in zip(pids, sizes):
            pt = int(rng.integers(1, 100))
            rows += [(it, int(pid), k, pt, int(rng.integers(1, 300))) for k in range(size)]
    order = rng.permutation(len(rows))
    path = tmp_path_factory.mktemp("tr") / "t.csv"
    path.write_text(HEADER + "".join(",".join(map(str, rows[j])) + "\n" for j in order))
    w = read_trace(path, max_prompt_tokens=100, max_response_tokens=200)
    assert w.num_iterations == len(groups)
    for it, sizes in enumerate(groups):
        s = w.iteration(it)
        check_shapes(s, 200)
        assert sorted(np.bincount(s.sample_prompt).tolist()) == sorted(sizes)
    again = read_trace(write_trace(w, len(groups), path.with_name("u.csv")), max_prompt_tokens=100, max_response_tokens=200)
    assert all(same(w.iteration(k), again.iteration(k)) for k in range(len(groups)))
