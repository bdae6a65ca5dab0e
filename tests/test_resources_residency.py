"""The residency books on their own: the GPU memory ledger (capacity, placement, LRU sleep victims, claims)
and each node's host-DRAM budget (cached weights give way first, then the oldest sleepers)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import simpy
from hypothesis import given, settings, strategies as st

from sim.catalog import load_catalog
from sim.hardware.cluster import Cluster
from sim.hardware.memory import InfeasibleError
from sim.resources.instances import Instance, Request
from sim.resources.residency import EPS_BYTES, GpuLedger, HostMemory
from sim.resources.roles import RoleBook
from sim.schedulers.base import Slot

CAT = load_catalog()
GPU = CAT.gpu("L40S")
MODEL = CAT.model("qwen2.5-0.5b")
CAP = GPU.memory_bytes
BOOK = RoleBook(GPU, MODEL, MODEL, MODEL, MODEL, 8192, True, False)


def spec(fraction: float, gpus: int = 1, role: str = "rollout"):
    """A real FunctionSpec whose footprint is `fraction` of the GPU's memory."""
    return dataclasses.replace(BOOK.spec(role, gpus), resident_bytes_per_gpu=fraction * CAP)


def ledger(shared: bool = True, nodes: int = 1, gpus: int = 2) -> GpuLedger:
    return GpuLedger(Cluster(GPU, nodes, gpus), shared)


IDS = itertools.count()


def resident(led: GpuLedger, fraction: float, slots, idle_since: float, state: str = "idle") -> Instance:
    inst = Instance(f"i{next(IDS)}", spec(fraction, len(slots)), tuple(slots), 0.0)
    led.occupy(inst, tuple(slots), 0.0)
    inst.state, inst.idle_since = state, idle_since
    return inst


def work(fraction: float, gpus: int = 1, slots=()) -> Request:
    return Request(simpy.Environment().event(), spec(fraction, gpus), 0, tuple(slots), 0.0)


def prewarm(fraction: float, gpus: int = 1) -> Request:
    return Request(None, spec(fraction, gpus), 0, (), 0.0)


# ------------------------------------------------------------------------------- GPU ledger
def test_victims_are_the_least_recently_used_idle_instances_and_only_as_many_as_needed():
    led = ledger()
    g0 = Slot(0, 0)
    newest = resident(led, 0.3, [g0], idle_since=30.0)
    oldest = resident(led, 0.3, [g0], idle_since=10.0)
    middle = resident(led, 0.3, [g0], idle_since=20.0)
    # 0.1 free: 0.35 needs one victim, 0.55 two, 0.95 all three
    assert led.victims((g0,), 0.35 * CAP, work=True) == [oldest]
    assert led.victims((g0,), 0.55 * CAP, work=True) == [oldest, middle]
    assert led.victims((g0,), 0.95 * CAP, work=True) == [oldest, middle, newest]
    assert led.victims((g0,), 0.05 * CAP, work=True) == []


def test_busy_claimed_and_starting_instances_never_make_room_and_a_prewarm_keeps_its_own():
    led = ledger()
    g0 = Slot(0, 0)
    resident(led, 0.4, [g0], idle_since=0.0, state="busy")
    kept = resident(led, 0.4, [g0], idle_since=1.0)
    kept.reserved = True  # chosen by a pre-warm
    assert led.victims((g0,), 0.5 * CAP, work=False) is None  # a pre-warm may not take another pre-warm's instance
    assert led.victims((g0,), 0.5 * CAP, work=True) == [kept]  # work may
    kept.claimed = True
    assert led.victims((g0,), 0.5 * CAP, work=True) is None
    resident(led, 0.15, [Slot(0, 1)], idle_since=0.0, state="loading")
    assert led.victims((Slot(0, 1),), 0.9 * CAP, work=True) is None


def test_a_victim_on_two_gpus_frees_room_on_both():
    led = ledger()
    g0, g1 = Slot(0, 0), Slot(0, 1)
    wide = resident(led, 0.7, [g0, g1], idle_since=5.0)
    assert led.victims((g0, g1), 0.6 * CAP, work=True) == [wide]


def test_find_gpus_takes_free_gpus_before_evicting_and_the_asked_gpu_first():
    led = ledger(gpus=3)
    resident(led, 0.8, [Slot(0, 0)], idle_since=0.0)
    slots, victims = led.find_gpus(work(0.5), node=0)
    assert victims == [] and slots == (Slot(0, 1),)  # emptiest free GPU, lowest index on a tie
    slots, victims = led.find_gpus(work(0.5, slots=(Slot(0, 2),)), node=0)
    assert slots == (Slot(0, 2),)
    slots, victims = led.find_gpus(work(0.5, gpus=3), node=0)  # all three: one must make room
    assert slots == (Slot(0, 0), Slot(0, 1), Slot(0, 2)) and [v.slots for v in victims] == [(Slot(0, 0),)]


def test_claimed_gpus_are_skipped_for_work_but_a_shared_prewarm_may_load_beside_work():
    led = ledger(gpus=1)
    busy = resident(led, 0.3, [Slot(0, 0)], idle_since=0.0, state="busy")
    led.claim(busy)
    assert led.find_gpus(work(0.3), node=0) is None
    assert led.find_gpus(prewarm(0.3), node=0) == ((Slot(0, 0),), [])
    assert led.free_slots() == ()
    led.unclaim(busy)
    assert led.free_slots() == (Slot(0, 0),)


def test_exclusive_gpus_hold_the_whole_gpu_and_an_exclusive_prewarm_never_evicts():
    led = ledger(shared=False, gpus=1)
    assert led.footprint(spec(0.1)) == CAP
    resident(led, 0.1, [Slot(0, 0)], idle_since=0.0)
    assert led.free_slots() == ()
    assert led.find_gpus(prewarm(0.1), node=0) is None
    slots, victims = led.find_gpus(work(0.1), node=0)
    assert slots == (Slot(0, 0),) and len(victims) == 1


def test_a_function_too_big_for_its_gpu_or_node_is_refused():
    led = ledger(gpus=2)
    with pytest.raises(InfeasibleError, match="GB per GPU"):
        led.check_fits(spec(1.2))
    with pytest.raises(ValueError, match="1..2 GPUs"):
        led.check_fits(spec(0.1, gpus=3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["place", "release"]), st.floats(0.05, 1.0), st.sampled_from([1, 2])), min_size=1, max_size=40))
def test_placing_with_the_chosen_victims_put_away_never_overfills_a_gpu(ops):
    """Whatever the sequence of requests, doing what the ledger chose keeps every GPU within its memory and
    the books consistent (used = sum of residents' footprints)."""
    led = ledger(gpus=2)
    live: list[Instance] = []
    for k, (op, fraction, gpus) in enumerate(ops):
        if op == "release" and live:
            victim = live.pop(0)
            led.vacate(victim, float(k))
            continue
        found = led.find_gpus(work(fraction, gpus), node=0)
        if found is None:
            continue
        slots, victims = found
        for v in victims:
            assert v.state == "idle"
            led.vacate(v, float(k))
            live.remove(v)
        inst = Instance(f"i{k}", spec(fraction, gpus), slots, float(k))
        led.occupy(inst, slots, float(k))
        inst.state, inst.idle_since = "idle", float(k)
        live.append(inst)
        for s in led.slots:
            assert led.used[s] <= CAP + EPS_BYTES
            assert abs(led.used[s] - sum(led.footprint(i.spec) for i in led.residents[s])) < 1.0


# ------------------------------------------------------------------------------- host DRAM
def test_host_memory_drops_cached_weights_before_releasing_any_sleeper():
    host = HostMemory(1, budget_bytes=100.0)
    host.pinned[0] = 40.0
    host.store(0, "old", 30.0, 0)
    host.store(0, "new", 20.0, 0)
    released = []
    assert host.make_room(0, 35.0, lambda: ["sleeper"], released.append)
    assert released == [] and list(host.cache[0]) == ["new"]  # the least recently used entry went first


def test_host_memory_releases_the_oldest_sleepers_until_it_fits():
    host = HostMemory(1, budget_bytes=100.0)
    host.pinned[0] = 90.0  # three sleepers of 30 bytes each
    released = []

    def release(name):
        released.append(name)
        host.pinned[0] -= 30.0

    assert host.make_room(0, 45.0, lambda: ["oldest", "middle", "newest"], release)
    assert released == ["oldest", "middle"]


def test_host_memory_refuses_what_can_never_fit_or_what_releasing_every_sleeper_does_not_make_room_for():
    host = HostMemory(1, budget_bytes=100.0)
    released = []
    assert not host.make_room(0, 101.0, lambda: ["a"], released.append)
    assert released == []  # refused before touching anything
    host.pinned[0] = 90.0
    assert not host.make_room(0, 20.0, lambda: [], released.append)


def test_the_cache_keeps_the_newest_entry_and_gives_way_to_sleepers():
    host = HostMemory(2, budget_bytes=100.0)
    host.store(0, "a", 40.0, 0)
    host.store(0, "b", 40.0, 0)
    host.touch(0, "a")  # a was used: b is now the least recently used
    host.pinned[0] = 30.0
    host.store(0, "c", 20.0, 0)
    assert list(host.cache[0]) == ["a", "c"]
    host.store(0, "huge", 500.0, 0)  # bigger than the budget: still kept alone, the newest
    assert list(host.cache[0]) == ["huge"]


def test_holds_checks_version_and_size_and_a_publish_elsewhere_drops_stale_copies():
    host = HostMemory(2, budget_bytes=100.0)
    host.store(0, "w", 10.0, 1)
    host.store(1, "w", 10.0, 1)
    assert host.holds(0, "w", 1) and host.holds(0, "w", 1, 10.0)
    assert not host.holds(0, "w", 2)
    assert not host.holds(0, "w", 1, 20.0)
    host.drop_elsewhere("w", node=1)
    assert not host.holds(0, "w", 1) and host.holds(1, "w", 1)
