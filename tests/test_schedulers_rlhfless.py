"""RLHFless mechanisms as units: length prediction, ranked assignment, cut-and-migrate decisions, cost-aware
scaling and locality-aware placement, driven directly with hand-made views, batches and progress snapshots.

End-to-end checks of the same mechanisms (through `simulate`) live in tests/test_schedulers_builtins.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import load_catalog
from sim.perf.roofline import RooflineModel
from sim.schedulers.base import ClusterView, GenerationProgress, Migrate, Release, RolloutBatch, StartCost
from sim.schedulers.testing import cluster_view, generation_progress, rollout_batch
from sim.schedulers.rlhfless import LengthPredictor, Oracle, RLHFless, RLHFlessParams, chunk_ranked, predict_decode_s

CAT = load_catalog()
GPU = CAT.gpu("L40S")
SMALL = CAT.model("qwen2.5-0.5b")


def make_view(nodes: int = 1, gpus_per_node: int = 8, model=SMALL, startup_s: float = 0.0, warm: dict | None = None,
              starts: tuple[float, ...] = (), iterations: int = 1) -> ClusterView:  # fmt: skip
    """A serverless view of a bare cluster at t=0 (sim.schedulers.testing), with memory sharing.

    `starts`: what the platform would charge successive requests to start (then `startup_s` for the rest).
    """

    def start_s(role, gpus, count, node=None):
        known = [StartCost(t, "resident" if t == 0 else "asleep") for t in sorted(starts)]
        return tuple((known + [StartCost(startup_s, "cold")] * count)[:count])

    return cluster_view(
        nodes=nodes, gpus_per_node=gpus_per_node, gpu=GPU, model=model, iterations=iterations, startup_s=startup_s,
        warm=warm or {}, start_s=start_s, gpu_sharing="memory", max_num_seqs=1024, kv_watermark=0.01,
    )  # fmt: skip


def make_batch(prompts: int = 16, group: int = 4, prompt_tokens: int = 100, true_lengths: np.ndarray | None = None) -> RolloutBatch:
    return rollout_batch(prompts=prompts, samples_per_prompt=group, prompt_tokens=prompt_tokens, true_response_tokens=true_lengths)


def scheduler(**params) -> RLHFless:
    params.setdefault("prewarm", False)
    return RLHFless(RLHFlessParams(**params), np.random.default_rng(0))


# ------------------------------------------------------------------------------------------- prediction
def test_ewma_with_alpha_one_is_last_epochs_mean_length():
    p = LengthPredictor(alpha=1.0)
    ids = np.array([7, 9])
    sp = np.array([0, 0, 1, 1])
    p.update(ids, sp, np.array([100.0, 300.0, 50.0, 50.0]))
    np.testing.assert_allclose(p.predict(ids, prior=999.0, first_epoch="running_mean"), [200.0, 50.0])
    p.update(ids, sp, np.array([10.0, 30.0, 70.0, 90.0]))
    np.testing.assert_allclose(p.predict(ids, prior=999.0, first_epoch="running_mean"), [20.0, 80.0])


def test_ewma_with_alpha_half_blends_old_and_new_by_hand():
    p = LengthPredictor(alpha=0.5)
    ids = np.array([3])
    sp = np.array([0, 0])
    p.update(ids, sp, np.array([100.0, 100.0]))  # first observation: taken as is
    assert p.predict(ids, 0.0, "prior")[0] == pytest.approx(100.0)
    p.update(ids, sp, np.array([300.0, 300.0]))  # 0.5*300 + 0.5*100
    assert p.predict(ids, 0.0, "prior")[0] == pytest.approx(200.0)
    p.update(ids, sp, np.array([0.0, 400.0]))  # obs 200: 0.5*200 + 0.5*200
    assert p.predict(ids, 0.0, "prior")[0] == pytest.approx(200.0)
    p.update(ids, sp, np.array([40.0, 40.0]))  # 0.5*40 + 0.5*200
    assert p.predict(ids, 0.0, "prior")[0] == pytest.approx(120.0)


def test_unseen_prompts_get_the_prior_before_any_update_and_the_running_mean_after():
    p = LengthPredictor(alpha=1.0)
    new = np.array([42, 43])
    np.testing.assert_allclose(p.predict(new, prior=123.0, first_epoch="running_mean"), [123.0, 123.0])
    p.update(np.array([1, 2]), np.array([0, 0, 1]), np.array([10.0, 20.0, 60.0]))
    # running mean over every observed sample (not over prompts): (10 + 20 + 60) / 3 = 30
    np.testing.assert_allclose(p.predict(new, prior=123.0, first_epoch="running_mean"), [30.0, 30.0])
    np.testing.assert_allclose(p.predict(new, prior=123.0, first_epoch="prior"), [123.0, 123.0])
    np.testing.assert_allclose(p.predict(np.array([2, 42]), prior=123.0, first_epoch="running_mean"), [60.0, 30.0])


def test_oracle_predicts_the_true_mean_length_of_each_group():
    true = np.array([10, 30, 5, 5, 100, 200], dtype=np.int64)
    batch = make_batch(prompts=3, group=2, true_lengths=true)
    oracle = Oracle(RLHFlessParams(), np.random.default_rng(0))
    np.testing.assert_allclose(oracle.predictions(batch), [20.0, 5.0, 150.0])
    blind = scheduler()  # not an oracle: ignores the truth even if present
    np.testing.assert_allclose(blind.predictions(batch), [200.0, 200.0, 200.0])


# ------------------------------------------------------------------------------------------- assignment
def test_equal_count_puts_the_longest_predictions_in_chunk_zero_in_contiguous_rank_order():
    pred = np.array([50.0, 400.0, 10.0, 300.0, 200.0, 20.0, 100.0, 30.0])
    out = chunk_ranked(pred, np.ones(8), 4, "equal_count")
    # ranks: 400, 300, 200, 100, 50, 30, 20, 10 -> chunks of two
    expected = {1: 0, 3: 0, 4: 1, 6: 1, 0: 2, 7: 2, 5: 3, 2: 3}
    assert out.tolist() == [expected[i] for i in range(8)]


@settings(max_examples=60, deadline=None)
@given(
    pred=st.lists(st.floats(1.0, 5000.0), min_size=1, max_size=40),
    n=st.integers(1, 8),
    mode=st.sampled_from(["equal_count", "equal_work"]),
)
def test_chunks_are_contiguous_in_rank_and_never_out_of_range(pred, n, mode):
    pred = np.array(pred)
    out = chunk_ranked(pred, np.ones(len(pred)), n, mode)
    assert out.min() >= 0 and out.max() <= n - 1
    order = np.argsort(-pred, kind="stable")
    ranked = out[order]
    assert np.all(np.diff(ranked) >= 0)  # longer prediction -> same or lower chunk index
    if mode == "equal_count" and n <= len(pred):
        counts = np.bincount(out, minlength=n)
        assert counts.max() - counts.min() <= 1 and counts.min() >= 1


def test_equal_work_balances_predicted_work_better_than_equal_count_on_a_skewed_batch():
    pred = np.array([1000.0, 10, 10, 10, 10, 10, 10, 10])
    w = np.ones(8)
    work = {}
    for mode in ("equal_count", "equal_work"):
        out = chunk_ranked(pred, w, 2, mode)
        work[mode] = np.bincount(out, weights=pred * w, minlength=2)
    assert work["equal_count"].tolist() == [1030.0, 40.0]
    assert work["equal_work"].tolist() == [1000.0, 70.0]
    assert work["equal_work"].max() < work["equal_count"].max()


def test_equal_work_weights_by_group_size():
    # same predicted length, but prompt 0 has 6 samples and the others 1: its work is 6x
    pred = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    w = np.array([6.0, 1, 1, 1, 1, 1, 1])
    out = chunk_ranked(pred, w, 2, "equal_work")
    assert out.tolist() == [0, 1, 1, 1, 1, 1, 1]


def test_equal_work_keeps_the_longest_prediction_on_actor_zero_and_leaves_no_actor_empty():
    pred = np.array([1000.0, 10, 10, 10, 10, 10, 10, 10])
    out = chunk_ranked(pred, np.ones(8), 3, "equal_work")
    assert out[0] == 0
    assert set(out.tolist()) == {0, 1, 2}


# ------------------------------------------------------------------------------------------- cut-and-migrate
def progress(
    replica: int,
    assigned: tuple,
    done: tuple,
    running: tuple,
    waiting: tuple,
    free_slots: tuple,
    free_kv: tuple,
    unfinished: dict[int, tuple[int, ...]],
    context: int = 100,
    released: tuple | None = None,
    ready: tuple | None = None,
) -> GenerationProgress:
    return generation_progress(
        queues=[unfinished.get(r, ()) for r in range(len(assigned))], replica=replica, assigned=assigned, done=done,
        running=running, waiting=waiting, free_slots=free_slots, free_kv_tokens=free_kv, contexts=context,
        released=released, ready=ready,
    )  # fmt: skip


# replica 0 holds 10 samples; its 3 unfinished are 7, 8, 9; replicas 1 and 2 are running with room
TAIL = {0: (7, 8, 9), 1: (20, 21), 2: (30,)}


def cut_progress(done0: int, free_slots=(0, 2, 5), free_kv=(0, 10_000, 10_000), **kw) -> GenerationProgress:
    return progress(0, (10, 10, 10), (done0, 8, 9), (10 - done0, 2, 1), (0, 0, 0), free_slots, free_kv, TAIL, **kw)


def test_no_cut_below_tau():
    s = scheduler(tau=0.7)
    assert s.on_generation_event(make_view(), cut_progress(done0=6)) == []


def test_cut_at_tau_migrates_every_unfinished_sample_once_then_releases_the_source():
    s = scheduler(tau=0.7)
    actions = s.on_generation_event(make_view(), cut_progress(done0=7))  # 7/10 == tau
    assert isinstance(actions[-1], Release) and actions[-1].replica == 0
    migrates = actions[:-1]
    assert migrates and all(isinstance(a, Migrate) and a.src == 0 and a.dst in (1, 2) for a in migrates)
    moved = [x for a in migrates for x in a.samples]
    assert sorted(moved) == [7, 8, 9] and len(moved) == len(set(moved))
    # the receiver with most capacity goes first: replica 2 has 5 free slots, it takes all three
    assert migrates[0].dst == 2 and migrates[0].samples == (7, 8, 9)


def test_cut_splits_the_tail_over_receivers_by_capacity():
    s = scheduler(tau=0.7)
    actions = s.on_generation_event(make_view(), cut_progress(done0=8, free_slots=(0, 2, 1)))
    assert actions == [Migrate(0, 1, (7, 8)), Migrate(0, 2, (9,)), Release(0)]


def test_receiver_capacity_is_limited_by_free_kv_with_headroom():
    # context 100 x headroom 1.5 = 150 KV tokens per migrated sample: 299 tokens hold 1, 300 hold 2
    s = scheduler(tau=0.7, kv_headroom=1.5)
    assert s.on_generation_event(make_view(), cut_progress(done0=7, free_slots=(0, 9, 9), free_kv=(0, 149, 299))) == []
    s = scheduler(tau=0.7, kv_headroom=1.5)
    actions = s.on_generation_event(make_view(), cut_progress(done0=7, free_slots=(0, 9, 9), free_kv=(0, 150, 300)))
    assert actions == [Migrate(0, 2, (7, 8)), Migrate(0, 1, (9,)), Release(0)]


def test_no_cut_without_enough_receiver_capacity():
    s = scheduler(tau=0.7)
    assert s.on_generation_event(make_view(), cut_progress(done0=7, free_slots=(0, 1, 1))) == []
    # and it retries later: once capacity is there, the cut happens
    actions = s.on_generation_event(make_view(), cut_progress(done0=8, free_slots=(0, 2, 1)))
    assert actions[-1] == Release(0)


@pytest.mark.parametrize(
    "excluded",
    [
        dict(released=(False, True, True)),
        dict(ready=(True, False, False)),
    ],
)
def test_released_or_cold_replicas_do_not_receive(excluded):
    s = scheduler(tau=0.7)
    assert s.on_generation_event(make_view(), cut_progress(done0=7, **excluded)) == []


def test_idle_replicas_do_not_receive():
    s = scheduler(tau=0.7)
    p = progress(0, (10, 10, 10), (7, 10, 10), (3, 0, 0), (0, 0, 0), (0, 9, 9), (0, 10_000, 10_000), TAIL)
    assert s.on_generation_event(make_view(), p) == []


def test_a_replica_already_cut_is_not_cut_again_and_cut_replicas_do_not_receive():
    s = scheduler(tau=0.5)
    first = s.on_generation_event(make_view(), cut_progress(done0=7))
    assert first[-1] == Release(0)
    assert s.on_generation_event(make_view(), cut_progress(done0=7)) == []
    # replica 1 now reaches tau: replica 0 (already cut) is not a receiver, replica 2 is
    p = progress(1, (10, 10, 10), (7, 8, 9), (3, 2, 1), (0, 0, 0), (9, 0, 5), (10_000, 0, 10_000), TAIL)
    assert s.on_generation_event(make_view(), p) == [Migrate(1, 2, (20, 21)), Release(1)]


def test_cut_disabled_never_migrates_and_idle_release_fires_once():
    s = scheduler(cut_and_migrate=False)
    assert s.on_generation_event(make_view(), cut_progress(done0=9)) == []
    idle = progress(1, (10, 10, 10), (5, 10, 9), (5, 0, 1), (0, 0, 0), (0, 9, 9), (0, 1, 1), TAIL)
    assert s.on_generation_event(make_view(), idle) == [Release(1)]
    assert s.on_generation_event(make_view(), idle) == []


def test_generation_plan_resets_cut_state_for_the_next_iteration():
    s = scheduler(tau=0.5, actor_scaling=False, n_max=3)
    assert s.on_generation_event(make_view(), cut_progress(done0=7))[-1] == Release(0)
    s.plan_generation(make_view(), make_batch())
    assert s.on_generation_event(make_view(), cut_progress(done0=7))[-1] == Release(0)


# ------------------------------------------------------------------------------------------- scaling
def set_predictions(s: RLHFless, lengths) -> None:
    for pid, length in enumerate(lengths):
        s.predictor.pred[pid] = float(length)


def test_decode_is_memory_bound_for_the_small_model():
    # precondition of the cost-monotonicity test below
    rep = RooflineModel(GPU).replica(SMALL, 1)
    for b in (1, 8, 64):
        co = rep.decode_coeffs(b)
        assert co.m0 + co.m1 * b * 300 > co.c0 + co.c1 * b * 300


def test_identical_lengths_fewer_actors_cost_less_gpu_seconds():
    s = scheduler()
    view, batch = make_view(), make_batch()
    pred = np.full(16, 200.0)
    sizes = np.full(16, 4.0)
    costs = [s.predict_cost(view, batch, pred, sizes, k, 1)[1] for k in range(1, 8)]
    assert all(b > a for a, b in zip(costs, costs[1:]))
    times = [s.predict_cost(view, batch, pred, sizes, k, 1)[0] for k in range(1, 8)]
    assert all(b <= a for a, b in zip(times, times[1:]))


def test_predict_decode_s_of_one_sequence_is_the_step_sum():
    rep = RooflineModel(GPU).replica(SMALL, 1)
    from sim.perf.base import steps_sum_s

    assert predict_decode_s(rep, np.array([50.0]), np.array([100.0])) == pytest.approx(steps_sum_s(rep.decode_coeffs(1), 1, 100.0, 50))
    # two sequences: batch 2 for 30 steps from context 110; then the short one (10 + 30 tokens) leaves and
    # the long one (100 + 30) goes on alone for 20 more steps
    two = predict_decode_s(rep, np.array([50.0, 30.0]), np.array([100.0, 10.0]))
    by_hand = steps_sum_s(rep.decode_coeffs(2), 2, 110.0, 30) + steps_sum_s(rep.decode_coeffs(1), 1, 130.0, 20)
    assert two == pytest.approx(by_hand)


def test_scaling_charges_each_actor_the_start_up_the_platform_would_charge():
    """Resident actors start at once, sleeping ones pay a wake, new ones a cold start (ClusterView.start_s)."""
    s = scheduler(startup_horizon_steps=1)  # the whole cold start charged to this step
    batch = make_batch()
    pred, sizes = np.full(16, 200.0), np.full(16, 4.0)
    cold = s.predict_cost(make_view(startup_s=10.0), batch, pred, sizes, 4, 1)
    hot = s.predict_cost(make_view(startup_s=10.0, starts=(0.0, 0.0, 0.0, 0.0)), batch, pred, sizes, 4, 1)
    mixed = s.predict_cost(make_view(startup_s=10.0, starts=(0.0, 0.5)), batch, pred, sizes, 4, 1)  # resident, asleep, 2 cold
    assert cold[1] - hot[1] == pytest.approx(40.0)
    assert mixed[1] - hot[1] == pytest.approx(20.5)
    assert cold[0] - hot[0] == pytest.approx(10.0)
    assert mixed[0] - hot[0] == pytest.approx(10.0)  # the slowest actor still waits for a cold start
    # a cold start is one-off: spread over the horizon (None: the rest of the run), a wake recurs
    spread = scheduler(startup_horizon_steps=4).predict_cost(make_view(startup_s=10.0, starts=(0.0, 0.5)), batch, pred, sizes, 4, 1)
    assert spread[1] - hot[1] == pytest.approx(0.5 + 2 * 10.0 / 4)
    # by default, over the steps left in the run (make_view: the last of 1 iteration, so all of it)
    left = scheduler().predict_cost(make_view(startup_s=10.0, starts=(0.0, 0.5)), batch, pred, sizes, 4, 1)
    assert left[1] - hot[1] == pytest.approx(0.5 + 2 * 10.0)
    left = scheduler().predict_cost(make_view(startup_s=10.0, starts=(0.0, 0.5), iterations=5), batch, pred, sizes, 4, 1)
    assert left[1] - hot[1] == pytest.approx(0.5 + 2 * 10.0 / 5)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_scaling_picks_the_argmin_of_its_scores(lam):
    s = scheduler(**{"lambda": lam})
    set_predictions(s, np.linspace(50, 1000, 16))
    s.plan_generation(make_view(startup_s=5.0), make_batch())
    assert s.last_scores
    best = min(s.last_scores.values())
    assert s.last_n == min(k for k, v in s.last_scores.items() if v == best)
    assert set(s.last_scores) == set(range(1, 8))  # 8 GPUs minus the prefill actor's


def test_time_only_picks_the_most_actors_when_more_actors_are_strictly_faster():
    view, batch = make_view(), make_batch()
    s = scheduler(**{"lambda": 1.0}, n_max=8, dedup_prefill=False)
    set_predictions(s, np.full(16, 200.0))
    pred, sizes = np.full(16, 200.0), np.full(16, 4.0)
    times = {k: s.predict_cost(view, batch, pred, sizes, k, 1)[0] for k in range(1, 9)}
    assert times[8] < min(times[k] for k in range(1, 8))  # precondition: 8 actors is the unique fastest
    s.plan_generation(view, batch)
    assert s.last_n == 8


def test_cost_only_picks_fewer_actors_than_time_only():
    view, batch = make_view(), make_batch()
    picks = {}
    for lam in (0.0, 1.0):
        s = scheduler(**{"lambda": lam}, n_max=8, dedup_prefill=False)
        set_predictions(s, np.full(16, 200.0))
        s.plan_generation(view, batch)
        picks[lam] = s.last_n
    assert picks[0.0] == 1  # memory-bound decode: one actor reads the weights once per step
    assert picks[0.0] < picks[1.0]


def test_scaling_off_uses_n_max_and_never_more_actors_than_prompts():
    s = scheduler(actor_scaling=False, n_max=5)
    plan = s.plan_generation(make_view(), make_batch())
    assert s.last_n == 5 and len(plan.replicas) == 5
    s = scheduler(actor_scaling=False)
    plan = s.plan_generation(make_view(), make_batch(prompts=3))
    assert len(plan.replicas) == 3


# ------------------------------------------------------------------------------------------- placement
def test_locality_puts_prefill_and_actor_zero_on_the_learners_node():
    s = scheduler(actor_scaling=False, n_max=6)
    set_predictions(s, np.linspace(1000, 50, 16))  # prompt 0 longest
    plan = s.plan_generation(make_view(nodes=2, gpus_per_node=4), make_batch())
    assert plan.prefill is not None and plan.prefill.node == 0
    assert plan.replicas[0].node == 0
    # prompt 0 (longest prediction) runs on actor 0
    assert plan.assignment[0] == 0
    # no GPU is given twice
    slots = [x for r in plan.replicas for x in r.slots] + list(plan.prefill.slots)
    assert len(slots) == len(set(slots))
    assert [r.node for r in plan.replicas] == [0, 0, 0, 1, 1, 1]


def test_without_dedup_no_gpu_is_reserved_for_a_prefill_actor():
    s = scheduler(actor_scaling=False, dedup_prefill=False)
    plan = s.plan_generation(make_view(nodes=2, gpus_per_node=4), make_batch())
    assert plan.prefill is None and not plan.prefix_dedup
    assert len(plan.replicas) == 8


def test_without_locality_actors_are_spread_round_robin_over_nodes():
    s = scheduler(actor_scaling=False, n_max=2, locality=False)
    plan = s.plan_generation(make_view(nodes=2, gpus_per_node=4), make_batch())
    assert [r.node for r in plan.replicas] == [0, 1]


def test_without_locality_many_actors_alternate_nodes():
    s = scheduler(actor_scaling=False, n_max=6, locality=False)
    plan = s.plan_generation(make_view(nodes=2, gpus_per_node=4), make_batch())
    assert [r.node for r in plan.replicas] == [0, 1, 0, 1, 0, 1]


def test_one_gpu_cluster_gets_a_decode_actor():
    s = scheduler()
    plan = s.plan_generation(make_view(nodes=1, gpus_per_node=1), make_batch(prompts=4))
    assert len(plan.replicas) >= 1
    assert plan.assignment.max() < len(plan.replicas)


def test_queue_slots_turn_an_overfull_actor_into_serial_queues():
    from sim.schedulers.rlhfless import queue_slots

    lengths, prompts = queue_slots(np.array([100.0, 200, 300, 400, 500]), np.array([10.0, 10, 20, 20, 30]), 2)
    np.testing.assert_allclose(lengths, [900, 600])  # queue 0: 100 + 300 + 500; queue 1: 200 + 400
    np.testing.assert_allclose(prompts, [20, 15])
