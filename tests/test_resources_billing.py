"""Billing rules on their own: rounding, exclusive periods, the union of a shared GPU's periods billed once and
split among its instances, and the instance rows of a serverless run."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from sim.catalog import load_catalog
from sim.config import BillingConfig
from sim.resources.billing import billed_seconds, exclusive_intervals, serverless_records, shared_intervals
from sim.resources.instances import Instance
from sim.resources.roles import RoleBook
from sim.schedulers.base import Slot

CAT = load_catalog()
GPU = CAT.gpu("L40S")
MODEL = CAT.model("qwen2.5-0.5b")
BOOK = RoleBook(GPU, MODEL, MODEL, MODEL, MODEL, 8192, True, False)
EXACT = BillingConfig(granularity_s=1e-9, minimum_s=0.0)
G0, G1 = Slot(0, 0), Slot(0, 1)


def test_billed_seconds_round_up_to_the_granularity_and_at_least_the_minimum():
    b = BillingConfig(granularity_s=60.0, minimum_s=120.0)
    assert billed_seconds(1.0, b) == 120.0
    assert billed_seconds(121.0, b) == 180.0
    assert billed_seconds(180.0, b) == 180.0
    assert billed_seconds(0.0, b) == 120.0


def test_exclusive_periods_are_billed_each_on_its_own_per_gpu():
    b = BillingConfig(granularity_s=10.0, minimum_s=0.0)
    intervals, owed = exclusive_intervals([(0, (G0, G1), 0.0, 15.0), (1, (G0,), 5.0, 10.0), (0, (G0, G1), 20.0, 21.0)], b)
    assert [(i.gpus, i.start_s, i.end_s) for i in intervals] == [(2, 0.0, 15.0), (1, 5.0, 10.0), (2, 20.0, 21.0)]
    assert owed == {0: 2 * 20.0 + 2 * 10.0, 1: 10.0}


def test_a_shared_gpu_is_billed_once_over_the_union_of_its_residents_periods():
    periods = [(0, (G0,), 0.0, 10.0), (1, (G0,), 5.0, 15.0), (2, (G0,), 20.0, 25.0), (3, (G1,), 0.0, 4.0)]
    intervals, owed = shared_intervals(periods, EXACT)
    assert sorted((i.start_s, i.end_s) for i in intervals) == [(0.0, 4.0), (0.0, 15.0), (20.0, 25.0)]
    assert all(i.gpus == 1 for i in intervals)
    # overlap [5, 10) split equally; alone otherwise
    assert owed[0] == pytest.approx(5.0 + 2.5)
    assert owed[1] == pytest.approx(2.5 + 5.0)
    assert owed[2] == pytest.approx(5.0) and owed[3] == pytest.approx(4.0)


def test_the_instance_computing_on_a_shared_gpu_pays_for_it_while_it_computes():
    periods = [(0, (G0,), 0.0, 10.0), (1, (G0,), 0.0, 10.0)]
    _, owed = shared_intervals(periods, EXACT, busy={1: [(2.0, 6.0)]})
    assert owed[1] == pytest.approx(4.0 + 3.0)  # its work, plus half of the 6 s nobody computed
    assert owed[0] == pytest.approx(3.0)


def test_a_zero_length_stay_on_a_shared_gpu_still_owes_the_minimum():
    _, owed = shared_intervals([(0, (G0,), 3.0, 3.0), (1, (G0,), 3.0, 3.0)], BillingConfig(granularity_s=1.0, minimum_s=10.0))
    assert owed == {0: 5.0, 1: 5.0}


def union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from([(G0,), (G1,), (G0, G1)]), st.floats(0, 100), st.floats(0, 50)), min_size=1, max_size=12),
    st.sampled_from([1.0, 7.0, 60.0]),
)
def test_each_gpu_is_billed_over_the_union_of_its_periods_and_the_instances_shares_add_up_to_the_bill(raw, granularity):
    billing = BillingConfig(granularity_s=granularity, minimum_s=0.0)
    periods = [(owner, slots, start, start + length) for owner, slots, start, length in raw]
    intervals, owed = shared_intervals(periods, billing)
    expected = [span for slot in (G0, G1) for span in union([(p[2], p[3]) for p in periods if slot in p[1]])]
    assert [(i.start_s, i.end_s) for i in intervals] == expected
    assert all(i.gpus == 1 for i in intervals)
    assert sum(owed.values()) == pytest.approx(sum(billed_seconds(i.end_s - i.start_s, billing) for i in intervals))


def instance(idx: int, slots, periods, released_s: float, ready_s: float, work=()) -> Instance:
    inst = Instance(f"rollout-{idx}", BOOK.spec("rollout", len(slots)), tuple(slots), requested_s=periods[0][1] - 1.0, placed_s=periods[0][1])
    inst.periods = [list(p) for p in periods]
    inst.released_s, inst.ready_s = released_s, ready_s
    inst.work = list(work)
    return inst


def test_serverless_rows_bill_from_placement_or_from_ready_and_an_open_period_ends_at_release():
    nan = float("nan")
    a = instance(0, (G0,), [((G0,), 0.0, 20.0, 50.0), ((G0,), 100.0, 101.0, nan)], released_s=130.0, ready_s=20.0)
    for bill_cold_start, billed in ((True, 50.0 + 30.0), (False, 30.0 + 29.0)):
        rows, intervals = serverless_records([a], BillingConfig(bill_cold_start=bill_cold_start), shared=False)
        assert rows[0].billed_gpu_s == pytest.approx(billed)
        assert rows[0].resident_s == pytest.approx(billed)
        assert rows[0].queued_s == pytest.approx(1.0) and rows[0].ready_s == 20.0
        assert intervals[-1].end_s == 130.0


def test_serverless_rows_on_shared_gpus_add_up_to_the_bill_and_charge_the_worker():
    a = instance(0, (G0,), [((G0,), 0.0, 1.0, 10.0)], released_s=10.0, ready_s=1.0, work=[(1.0, 9.0)])
    b = instance(1, (G0,), [((G0,), 0.0, 1.0, 10.0)], released_s=10.0, ready_s=1.0)
    rows, intervals = serverless_records([a, b], BillingConfig(), shared=True)
    assert len(intervals) == 1 and (intervals[0].start_s, intervals[0].end_s) == (0.0, 10.0)
    assert rows[0].billed_gpu_s == pytest.approx(8.0 + 1.0)
    assert rows[1].billed_gpu_s == pytest.approx(1.0)
