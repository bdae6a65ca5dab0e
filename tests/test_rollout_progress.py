"""The progress snapshot of a rollout phase (sim/rollout/progress.py): `unfinished(r)` and `context_tokens(s)`
give the values of the instant it was taken, whether the scheduler reads them during its call or keeps the
snapshot and reads it after the phase has moved on.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import experiment
from sim.schedulers.rlhfless import RLHFless
from sim.schedulers.testing import registered
from sim.simulation import simulate

LENGTHS = [30 + 17 * k for k in range(16)]  # 4 prompts x 4 samples, all different
PROMPT = 100


def read(progress) -> dict:
    """Everything per-sample a snapshot tells, read now."""
    queues = {r: progress.unfinished(r) for r in range(len(progress.assigned))}
    return {"queues": queues, "contexts": {s: progress.context_tokens(s) for q in queues.values() for s in q}}


class Reads(RLHFless):
    """RLHFless that reads every snapshot during its call (and keeps nothing)."""

    name = "test-reads"
    log: list = []

    def on_generation_event(self, view, progress):
        type(self).log.append(read(progress))
        return super().on_generation_event(view, progress)


class Keeps(RLHFless):
    """RLHFless that keeps every snapshot unread and reads them all after the run."""

    name = "test-keeps"
    log: list = []

    def on_generation_event(self, view, progress):
        type(self).log.append(progress)
        return super().on_generation_event(view, progress)


class KeepsMethods(RLHFless):
    """RLHFless that keeps each snapshot's bound methods, not the snapshot."""

    name = "test-keeps-methods"
    log: list = []

    def on_generation_event(self, view, progress):
        type(self).log.append((len(progress.assigned), progress.unfinished, progress.context_tokens))
        return super().on_generation_event(view, progress)


class KeepsDetail(RLHFless):
    """RLHFless that keeps each snapshot's per-sample `detail` alone."""

    name = "test-keeps-detail"
    log: list = []

    def on_generation_event(self, view, progress):
        detail = progress.detail
        type(self).log.append((len(progress.assigned), detail.queue, detail.context))
        return super().on_generation_event(view, progress)


def read_kept(kept) -> dict:
    """What a kept (replica count, queue of replica, context of sample) triple tells, read now."""
    n, queue, context = kept
    queues = {r: queue(r) for r in range(n)}
    return {"queues": queues, "contexts": {s: context(s) for q in queues.values() for s in q}}


def run(cls, trace):
    cls.log = []
    cfg = experiment({
        "name": "snap", "seed": 0, "iterations": 1, "model": "qwen2.5-0.5b",
        "workload": {"trace": str(trace), "samples_per_prompt": 4, "max_response_tokens": 1024},
        "cluster": {"nodes": 1, "gpus_per_node": 4, "gpu": "L40S"},
        "platform": {"kind": "serverless", "keep_alive_s": 0.0},
        "engine": {"max_num_seqs": 3},
        "scheduler": {"name": cls.name, "params": {"actor_scaling": False, "n_max": 3, "prewarm": False, "tau": 0.5}},
    })  # fmt: skip
    with registered(cls):
        return simulate(cfg), list(cls.log)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "trace.csv"
    rows = ["iteration,prompt_id,sample_id,prompt_tokens,response_tokens"]
    rows += [f"0,{k // 4},{k % 4},{PROMPT},{n}" for k, n in enumerate(LENGTHS)]
    path.write_text("\n".join(rows) + "\n")
    return run(Reads, path), run(Keeps, path), run(KeepsMethods, path), run(KeepsDetail, path)


def test_a_kept_snapshot_reads_later_exactly_as_it_read_during_the_call(runs):
    (during_result, during), (kept_result, kept), *_ = runs
    np.testing.assert_array_equal(during_result.completion_s[0], kept_result.completion_s[0])  # the same run
    assert len(during) == len(kept) > 3
    assert [read(p) for p in kept] == during
    assert len({tuple(map(len, d["queues"].values())) for d in during}) > 1  # the snapshots differ: the phase moved


def test_parts_kept_without_their_snapshot_read_later_as_during_the_call(runs):
    (_, during), _, (_, methods), (_, detail) = runs
    assert len(methods) == len(detail) == len(during)
    assert [read_kept(k) for k in methods] == during
    assert [read_kept(k) for k in detail] == during


def test_snapshot_detail_agrees_with_its_counts(runs):
    _, (_, kept), *_ = runs
    finished: set[int] = set()
    for p in kept:
        finished |= set(p.finished)
        seen: list[int] = []
        for r in range(len(p.assigned)):
            queue = p.unfinished(r)
            assert len(queue) == p.running[r] + p.waiting[r]
            seen += queue
        assert len(seen) == len(set(seen)) and not set(seen) & finished  # one place each; finished ones gone
        for s in seen:
            assert PROMPT <= p.context_tokens(s) < PROMPT + LENGTHS[s]
