"""RLHFuse (sim/schedulers/rlhfuse.py): where the global cut happens, which replicas keep the tail, and the
fluid arithmetic of fused inference, each computed here independently of the code under test.

The cut decisions are driven with hand-made progress snapshots (sim.schedulers.testing); the fusion
arithmetic through `simulate` on a trace whose long tail is known, read back from the run's activities and
completion times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import experiment
from sim.schedulers.base import Migrate, Release
from sim.schedulers.rlhfuse import RLHFuse
from sim.schedulers.testing import cluster_view, generation_progress, inference_work, scheduler
from sim.simulation import simulate

# ------------------------------------------------------------------------------------------- the cut
# four replicas of 25 samples each (100 in all); unfinished samples per replica listed
TAIL = [(0, 1, 2, 3, 4), (25, 26), (50, 51, 52), ()]


def tail_progress(unfinished=TAIL, free_slots=(10, 10, 10, 10), free_kv=(10**6,) * 4, context: int = 100):
    done = [25 - len(q) for q in unfinished]
    return generation_progress(queues=unfinished, done=done, free_slots=free_slots, free_kv_tokens=free_kv, contexts=context)


def test_no_cut_while_more_than_the_threshold_of_the_batch_is_unfinished():
    # 10 of 100 unfinished; a threshold of 0.09 needs 9 or fewer
    assert scheduler(RLHFuse, migration_threshold=0.09).on_generation_event(cluster_view(), tail_progress()) == []


def test_at_the_threshold_the_tail_moves_onto_the_most_loaded_replica_and_the_others_are_released():
    actions = scheduler(RLHFuse, migration_threshold=0.1).on_generation_event(cluster_view(), tail_progress())
    # load order (running + waiting): replica 0 (5), 2 (3), 1 (2); replica 3 holds nothing and is left alone
    # one receiver suffices: 5 unfinished samples to move, replica 0 has 10 free slots and ample KV
    assert actions == [Migrate(2, 0, (50, 51, 52)), Release(2), Migrate(1, 0, (25, 26)), Release(1)]


def test_the_tail_grows_until_its_free_slots_and_kv_hold_every_moving_sample():
    # replica 0 can take 2 more sequences: tail {0} cannot hold 5 samples; tail {0, 2} must hold replica 1's 2
    actions = scheduler(RLHFuse).on_generation_event(cluster_view(), tail_progress(free_slots=(2, 1, 1, 10)))
    assert actions == [Migrate(1, 0, (25, 26)), Release(1)]
    # KV: need = kv_headroom x mean context of the moving samples = 1.5 x 100 = 150 tokens per sample
    kv = (299, 10**6, 10**6, 10**6)  # replica 0 fits 1 (299 // 150), so tail {0} fails; {0, 2} holds 2 with 1 + 10
    actions = scheduler(RLHFuse).on_generation_event(cluster_view(), tail_progress(free_kv=kv))
    assert actions == [Migrate(1, 0, (25,)), Migrate(1, 2, (26,)), Release(1)]


def test_no_split_fits_so_nothing_moves_and_the_cut_is_retried_later():
    sched = scheduler(RLHFuse)
    assert sched.on_generation_event(cluster_view(), tail_progress(free_slots=(0, 0, 0, 0))) == []
    assert sched.on_generation_event(cluster_view(), tail_progress())[-1] == Release(1)  # a later completion


def test_one_cut_per_iteration_and_never_below_min_tail_replicas():
    sched = scheduler(RLHFuse)
    assert sched.on_generation_event(cluster_view(iteration=0), tail_progress()) != []
    assert sched.on_generation_event(cluster_view(iteration=0), tail_progress()) == []
    assert sched.on_generation_event(cluster_view(iteration=1), tail_progress()) != []
    # three live replicas and a minimum of three: nothing to release
    assert scheduler(RLHFuse, min_tail_replicas=3).on_generation_event(cluster_view(), tail_progress()) == []


def test_every_unfinished_sample_moves_at_most_once_and_receivers_are_never_released():
    actions = scheduler(RLHFuse).on_generation_event(cluster_view(), tail_progress(free_slots=(1, 1, 2, 10)))
    moved = [s for a in actions if isinstance(a, Migrate) for s in a.samples]
    released = {a.replica for a in actions if isinstance(a, Release)}
    assert len(moved) == len(set(moved))
    assert not released & {a.dst for a in actions if isinstance(a, Migrate)}
    assert {s for r in released for s in TAIL[r]} == set(moved)  # a released replica's samples all move


def test_inference_plan_fuses_only_when_asked():
    view, work = cluster_view(deployment="serverful"), inference_work()
    assert scheduler(RLHFuse).plan_inference(view, work).fuse_with_generation
    assert not scheduler(RLHFuse, fuse_inference=False).plan_inference(view, work).fuse_with_generation


# ------------------------------------------------------------------------------------------- fused inference
def long_tail_trace(path: Path, long_tokens: int) -> Path:
    """8 prompts x 4 samples on 4 replicas of 8 (verl's contiguous chunks): 3 of `long_tokens` (samples 1, 9, 17:
    replicas 0, 1, 2), 21 of 40 beside them, and replica 3's 8 of 20, which run out before the cut."""
    rows = ["iteration,prompt_id,sample_id,prompt_tokens,response_tokens"]
    for k in range(32):
        rows.append(f"0,{k // 4},{k % 4},200,{long_tokens if k in (1, 9, 17) else 20 if k >= 24 else 40}")
    path.write_text("\n".join(rows) + "\n")
    return path


def run(trace: Path, fuse: bool):
    cfg = experiment({
        "name": "fuse", "seed": 0, "iterations": 1, "model": "qwen2.5-0.5b",
        "workload": {"trace": str(trace), "samples_per_prompt": 4, "max_response_tokens": 2048},
        "cluster": {"nodes": 1, "gpus_per_node": 4, "gpu": "L40S"},
        "scheduler": {"name": "rlhfuse", "params": {"tp": 1, "fuse_inference": fuse}},
    })  # fmt: skip
    return simulate(cfg)


def gpus(slots: str) -> int:
    return len(slots.split(";"))  # activities name their GPUs as "n0g0;n0g1"


def gpu_s(rows) -> float:
    return sum(gpus(a["slots"]) * (a["end_s"] - a["start_s"]) for a in rows)


@pytest.mark.parametrize("long_tokens, binding", [(1500, "early work"), (60, "freed GPU-s")])
def test_fused_inference_takes_min_of_the_early_work_and_the_freed_gpu_seconds_off_inference(tmp_path, long_tokens, binding):
    """A long tail frees more GPU-seconds than the finished samples' inference needs (that work binds); a short
    one frees fewer (the freed GPU-seconds bind)."""
    trace = long_tail_trace(tmp_path / "trace.csv", long_tokens)
    plain, fused = run(trace, fuse=False), run(trace, fuse=True)
    np.testing.assert_array_equal(plain.completion_s[0], fused.completion_s[0])  # fusion changes nothing before inference
    done = np.sort(fused.completion_s[0])
    rollout = [a for a in fused.activities if a["role"] == "rollout"]
    gen_end = float(done[-1])
    # the cut: once 3 of 32 (<= 10%) are unfinished, i.e. when the 29th sample finishes. The replicas still
    # computing then, but not to the end, were released (each at its next step boundary); a replica whose
    # work ran out before the cut simply idles (serverful: nothing is freed)
    t_cut = float(done[28])
    last = {}
    for a in rollout:
        last[a["slots"]] = max(last.get(a["slots"], 0.0), a["end_s"])
    freed = {slots: t for slots, t in last.items() if t_cut - 1e-9 <= t < gen_end - 1e-9}
    assert len(freed) == 2  # the long samples of replicas 1 and 2 moved onto replica 0
    share_done = float(np.sum(done <= min(freed.values()) + 1e-9)) / len(done)
    freed_gpu_s = sum(gpus(slots) * (gen_end - t) for slots, t in freed.items())
    work_gpu_s = gpu_s([a for a in plain.activities if a["phase"] == "inference"])
    expected = min(work_gpu_s * share_done, freed_gpu_s)
    assert 0 < expected < work_gpu_s
    assert (work_gpu_s * share_done < freed_gpu_s) == (binding == "early work")

    early = [a for a in fused.activities if a["role"] == "fused_inference"]
    assert gpu_s(early) == pytest.approx(expected, rel=1e-9)
    assert all(a["phase"] == "generation" and a["slots"] in freed for a in early)
    # the work done early is taken off the inference phase: total inference work is conserved
    left = gpu_s([a for a in fused.activities if a["phase"] == "inference"])
    assert left + gpu_s(early) == pytest.approx(work_gpu_s, rel=1e-9)
    assert fused.summary["mean_iteration_s"] < plain.summary["mean_iteration_s"]
