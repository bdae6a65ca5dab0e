"""The generation engine: analytic advance vs the step-by-step reference, conservation, KV policy, actions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.catalog import load_catalog
from sim.rollout.replica import Replica, SchedulerActionError, SeqTable, landing_delays
from sim.perf.base import StepCoeffs, steps_sum_s
from sim.perf.roofline import RooflineModel


class LinearPerf:
    """A perf model with both roofline regimes reachable at small sizes."""

    tp = 1

    def __init__(self, c0=2e-4, c1=1e-6, m0=1e-3, m1=2e-6, overhead=1e-4, prefill_per_token=1e-5):
        self.args = (c0, c1, m0, m1, overhead)
        self.prefill_per_token = prefill_per_token

    def decode_coeffs(self, batch):
        c0, c1, m0, m1, ov = self.args
        return StepCoeffs(c0 * batch, c1, m0, m1, ov)

    def prefill_s(self, new_tokens, attention_pairs):
        return self.prefill_per_token * new_tokens + 1e-9 * attention_pairs if new_tokens else 0.0


class Listener:
    def __init__(self, watching=True):
        self.completed = []
        self.moved = []
        self.watching = watching

    def on_completed(self, replica, seqs):
        self.completed.extend(seqs)

    def on_migrated_out(self, replica, seqs, kv_tokens, dst):
        self.moved.append((replica.id, dst.id, list(seqs), list(kv_tokens)))
        dst.enqueue(seqs)

    def on_idle(self, replica):
        pass


def run_scenario(prompts, targets, groups, cap, max_seqs, sharing, mode, n_replicas=1, migrate_at=None, perf=None, watching=True, reserve=0):
    env = simpy.Environment()
    table = SeqTable(list(prompts), list(targets), list(groups))
    lis = Listener(watching)
    perf = perf or LinearPerf()
    reps = [
        Replica(env, r, perf, table, cap, lis, max_num_seqs=max_seqs, prefix_sharing=sharing, step_mode=(mode == "step"), reserve_tokens=reserve)
        for r in range(n_replicas)
    ]
    n = len(targets)
    for r, rep in enumerate(reps):
        rep.enqueue([s for s in range(n) if s % n_replicas == r])
    if migrate_at is not None and n_replicas > 1:

        def mover():
            yield env.timeout(migrate_at)
            reps[0].migrate_out(reps[1])

        env.process(mover())
    env.run()
    return table, lis, reps


scenario = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 40), min_size=n, max_size=n),
        st.lists(st.integers(1, 120), min_size=n, max_size=n),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
        st.integers(0, 400),  # extra KV capacity beyond one full sequence: small values force preemption
        st.integers(1, 16),
        st.booleans(),
        st.sampled_from([1, 2]),
        st.one_of(st.none(), st.floats(0.0, 0.2)),
    )
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario)
def test_analytic_and_step_modes_agree_on_every_completion_time(case):
    prompts, targets, groups, extra, max_seqs, sharing, n_rep, migrate_at = case
    cap = max(p + t for p, t in zip(prompts, targets)) + 2 + extra
    a, lis_a, reps_a = run_scenario(prompts, targets, groups, cap, max_seqs, sharing, "analytic", n_rep, migrate_at)
    s, lis_s, reps_s = run_scenario(prompts, targets, groups, cap, max_seqs, sharing, "step", n_rep, migrate_at)
    fa, fs = np.array(a.finish_s), np.array(s.finish_s)
    assert np.all(np.isfinite(fa)) and np.all(np.isfinite(fs))
    np.testing.assert_allclose(fa, fs, rtol=1e-9, atol=0)
    # conservation: every sequence exactly once, with its full length
    assert sorted(lis_a.completed) == list(range(len(targets)))
    assert a.generated == list(targets)
    assert a.preemptions == s.preemptions
    # fewer (or equal) events in analytic mode
    assert sum(r.events for r in reps_a) <= sum(r.events for r in reps_s)


def test_closed_form_step_sum_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        co = StepCoeffs(*rng.uniform(0, 1e-3, 2), *rng.uniform(0, 1e-3, 2), rng.uniform(0, 1e-4))
        co = StepCoeffs(co.c0, co.c1 * rng.choice([0, 1e-2, 1]), co.m0, co.m1 * rng.choice([0, 1e-2, 1]), co.overhead_s)
        b, c, k = int(rng.integers(1, 64)), float(rng.integers(0, 5000)), int(rng.integers(0, 400))
        brute = sum(co.step_s(c + j * b) for j in range(k))
        assert math.isclose(steps_sum_s(co, b, c, k), brute, rel_tol=1e-12, abs_tol=1e-15)


def test_single_sequence_time_is_prefill_plus_its_decode_steps():
    perf = LinearPerf()
    table, _, _ = run_scenario([10], [50], [0], cap=1000, max_seqs=4, sharing=True, mode="analytic", perf=perf)
    expected = perf.prefill_s(10, 10 * 5) + steps_sum_s(perf.decode_coeffs(1), 1, 10, 50)
    assert table.finish_s[0] == pytest.approx(expected, rel=1e-12)


def test_batching_shares_the_weight_read():
    """Eight sequences in one batch finish far sooner than eight in turn (memory-bound decode)."""
    together, _, _ = run_scenario([10] * 8, [100] * 8, list(range(8)), cap=10_000, max_seqs=8, sharing=True, mode="analytic")
    alone, _, _ = run_scenario([10] * 8, [100] * 8, list(range(8)), cap=10_000, max_seqs=1, sharing=True, mode="analytic")
    assert max(together.finish_s) < 0.3 * max(alone.finish_s)


def test_kv_limit_causes_preemption_and_recompute_without_losing_work():
    n = 12
    table, lis, _ = run_scenario([20] * n, [200] * n, list(range(n)), cap=900, max_seqs=64, sharing=False, mode="analytic")
    assert table.preemptions > 0
    assert table.recomputed_tokens > 0
    assert sorted(lis.completed) == list(range(n))
    assert table.generated == [200] * n


def test_admission_does_not_reserve_maximum_length():
    """vLLM admits on current blocks: with capacity for 3 full sequences, more than 3 run at first."""
    env = simpy.Environment()
    table = SeqTable([10] * 10, [300] * 10, list(range(10)))
    rep = Replica(env, 0, LinearPerf(), table, 3 * 310 + 20, Listener(), max_num_seqs=64, prefix_sharing=False)
    rep.enqueue(list(range(10)))
    env.run(until=1e-9)
    assert len(rep.running) > 3


def test_prefix_sharing_prefills_a_group_prompt_once():
    prompts, targets = [100] * 8, [5] * 8
    shared, _, reps_s = run_scenario(prompts, targets, [0] * 8, 10_000, 8, True, "analytic")
    unshared, _, reps_u = run_scenario(prompts, targets, [0] * 8, 10_000, 8, False, "analytic")
    assert reps_s[0].prefill_tokens == 100
    assert reps_u[0].prefill_tokens == 800
    assert max(shared.finish_s) < max(unshared.finish_s)


def test_migration_moves_unfinished_work_with_its_kv_and_conserves_tokens():
    table, lis, reps = run_scenario([10] * 6, [400] * 6, list(range(6)), 100_000, 16, True, "analytic", n_replicas=2, migrate_at=0.05)
    assert lis.moved, "the migration must have happened"
    src, dst, seqs, kv = lis.moved[0]
    assert (src, dst) == (0, 1) and sorted(seqs) == [0, 2, 4]
    assert all(k > 10 for k in kv)  # prompt + tokens generated before the cut
    assert table.generated == [400] * 6
    assert table.migrations == 3
    assert all(table.replica_of[s] == 1 for s in seqs)
    # migrated sequences resumed without recomputation
    assert table.recomputed_tokens == 0


def test_release_with_unfinished_work_is_refused():
    env = simpy.Environment()
    table = SeqTable([10, 10], [100, 100], [0, 1])
    rep = Replica(env, 0, LinearPerf(), table, 1000, Listener())
    rep.enqueue([0, 1])

    def releaser():
        yield env.timeout(0.01)
        rep.release()

    env.process(releaser())
    with pytest.raises(SchedulerActionError, match="unfinished"):
        env.run()


def test_event_count_is_at_most_three_per_sequence_on_a_realistic_batch():
    cat = load_catalog()
    perf = RooflineModel(cat.gpu("H100-SXM")).replica(cat.model("qwen2.5-7b"), 1)
    rng = np.random.default_rng(1)
    n = 512
    targets = np.minimum(rng.lognormal(np.log(300), 0.8, n).astype(int) + 1, 2048).tolist()
    kv_tokens = 200_000
    table, lis, reps = run_scenario([100] * n, targets, [i // 8 for i in range(n)], kv_tokens, 256, True, "analytic", perf=perf)
    assert sorted(lis.completed) == list(range(n))
    assert reps[0].events <= 3 * n
    _, _, reps_step = run_scenario([100] * n, targets, [i // 8 for i in range(n)], kv_tokens, 256, True, "step", perf=perf)
    assert reps_step[0].events > 2 * reps[0].events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario)
def test_an_unwatched_replica_gives_the_same_bits_as_a_watched_one(case):
    """Unwatched, a replica runs its batch on its own clock and yields once; every time must be the same float.

    Unwatched with nothing waiting, it runs the batch down in one pass (Replica._advance_alone): the same
    state changes, times and final state as the watched loop, under either KV policy."""
    prompts, targets, groups, extra, max_seqs, sharing, n_rep, _ = case
    cap = max(p + t for p, t in zip(prompts, targets)) + 2 + extra
    reserve = max(targets) if extra % 3 == 0 else 0  # static reservation (no growth, no preemption) in a third of the cases
    cap += reserve
    for mode in ("analytic", "step"):
        w, lis_w, reps_w = run_scenario(prompts, targets, groups, cap, max_seqs, sharing, mode, n_rep, reserve=reserve)
        u, lis_u, reps_u = run_scenario(prompts, targets, groups, cap, max_seqs, sharing, mode, n_rep, watching=False, reserve=reserve)
        assert u.finish_s == w.finish_s  # exact: the same sums in the same order
        state = lambda r: (r.steps, r.mem, r.ctx, r.batch_steps, r.peak_batch, r.prefill_tokens, r.group_refs, r.unfinished)  # noqa: E731
        assert [state(r) for r in reps_u] == [state(r) for r in reps_w]
        assert (u.generated, u.migrations) == (w.generated, w.migrations)
        if n_rep == 1:  # one replica: completions reported in the same order
            assert lis_u.completed == lis_w.completed
        assert (u.preemptions, u.recomputed_tokens) == (w.preemptions, w.recomputed_tokens)
        assert sorted(lis_u.completed) == sorted(lis_w.completed) == list(range(len(targets)))
        assert [r.events for r in reps_u] == [r.events for r in reps_w]
        assert [r.busy_intervals for r in reps_u] == [r.busy_intervals for r in reps_w]


def test_an_unwatched_replica_refuses_work_mid_batch():
    env = simpy.Environment()
    table = SeqTable([10, 10], [100, 100], [0, 1])
    rep = Replica(env, 0, LinearPerf(), table, 1000, Listener(watching=False))
    rep.enqueue([0])
    env.run(until=1e-6)
    with pytest.raises(SchedulerActionError, match="not watching"):
        rep.enqueue([1])


def clock_after(now: float, delays: list[float]) -> float:
    for d in delays:
        now = now + d  # what SimPy's clock computes for a timeout
    return now


@settings(max_examples=500, deadline=None)
@given(st.floats(0, 1e12), st.floats(0, 1e12))
def test_landing_delays_take_the_clock_exactly_there(now, span):
    when = now + span
    delays = landing_delays(now, when)
    assert len(delays) <= 2 and all(d >= 0 for d in delays)
    assert clock_after(now, delays) == when


def test_landing_from_far_below_needs_a_stop():
    """No single delay takes 26.769436899555554 to 58.806177821802585: every sum rounds to an even neighbour."""
    now, when = 26.769436899555554, 58.806177821802585
    d = when - now
    assert now + d != when and now + math.nextafter(d, 0) != when and now + math.nextafter(d, 99) != when
    assert clock_after(now, landing_delays(now, when)) == when


def test_growth_preempts_the_newest_sequence_and_requeues_it_first():
    """vLLM recompute preemption: when a step would overflow the cache, the most recently admitted goes back
    to the front of the queue, its KV dropped; the others keep running."""
    env = simpy.Environment()
    table = SeqTable([10, 10, 10], [100, 100, 100], [0, 1, 2])
    # all three fit at admission (30 tokens + one step); after 56 steps (198 tokens) the next step overflows
    rep = Replica(env, 0, LinearPerf(), table, 200, Listener(), max_num_seqs=8, prefix_sharing=False)
    rep.enqueue([0, 1, 2])
    while table.preemptions == 0:
        env.step()
    assert list(rep.running) == [0, 1] and list(rep.waiting) == [2]
    assert table.generated[2] == 56 and rep.mem == 2 * (10 + 56)
    env.run()
    assert table.generated == [100, 100, 100] and table.recomputed_tokens >= 56


def test_a_preemption_storm_keeps_the_heap_bounded_and_matches_the_step_reference():
    """Preempted sequences leave stale heap entries; they are compacted, and no completion is lost or doubled."""
    rng = np.random.default_rng(3)
    n = 300
    prompts, targets = rng.integers(5, 30, n).tolist(), rng.integers(20, 400, n).tolist()
    groups = [i // 4 for i in range(n)]
    cap = max(p + t for p, t in zip(prompts, targets)) + 40  # a few sequences at a time: constant preemption
    env = simpy.Environment()
    table = SeqTable(prompts, targets, groups)
    lis = Listener()
    rep = Replica(env, 0, LinearPerf(), table, cap, lis, max_num_seqs=64)
    rep.enqueue(list(range(n)))
    while env.peek() != float("inf"):
        env.step()
        assert len(rep.heap) <= 2 * len(rep.running) + 1
    assert table.preemptions > n
    assert sorted(lis.completed) == list(range(n)) and table.generated == targets
    step, _, _ = run_scenario(prompts, targets, groups, cap, 64, True, "step")
    np.testing.assert_allclose(table.finish_s, step.finish_s, rtol=1e-9, atol=0)
    assert step.preemptions == table.preemptions
