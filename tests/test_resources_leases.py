"""The lease helpers (sim/resources/leases.py): a crash drops the lease and the work is retried on a new
one; a multi-node group runs only while every part is held and re-asks only for the part that crashed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import simpy

from sim.recording import Recorder
from sim.resources.leases import GroupHold, Hold, Lease, ServerfulAllocator, by_node, interrupt, run_work
from sim.resources.pool import GpuPool
from sim.schedulers.base import Slot


class CrashingAllocator:
    """The allocator interface of sim.resources.leases with a fixed start time per request and crashes on
    demand (the platform's crash calls the lease's handler the same way)."""

    serverless = True

    def __init__(self, env: simpy.Environment, start_s: dict[int, float] | float = 1.0):
        self.env, self.start_s = env, start_s
        self.requests: list[tuple[float, tuple[Slot, ...]]] = []
        self.ended: list[Lease] = []
        self.handlers: dict[str, object] = {}
        self.count = 0

    def acquire(self, spec, slots):
        self.requests.append((self.env.now, tuple(slots)))
        self.count += 1
        lease = Lease(tuple(slots), SimpleNamespace(instance_id=f"i{self.count}"))
        delay = self.start_s if isinstance(self.start_s, float) else self.start_s[slots[0].node]
        ev = self.env.event()
        self.env.timeout(delay).callbacks.append(lambda _e: ev.succeed(lease))
        return ev

    def on_crash(self, lease, handler):
        self.handlers[lease.owner] = handler

    def end(self, lease):
        self.ended.append(lease)

    def crash(self, owner: str, at_s: float) -> None:
        def fire(_e):
            handler = self.handlers.pop(owner, None)
            if handler is not None:
                handler(None)

        self.env.timeout(at_s - self.env.now).callbacks.append(fire)


SPEC = SimpleNamespace(role="reference")


def test_run_work_redoes_the_whole_piece_on_a_new_lease_after_a_crash():
    env = simpy.Environment()
    alloc, rec = CrashingAllocator(env, 1.0), Recorder()
    proc = env.process(run_work(env, alloc, rec, 0, "inference", SPEC, (Slot(0, 0),), 10.0))
    alloc.crash("i1", at_s=3.0)  # granted at 1, crashes 2 s into its 10 s
    env.run(proc)
    assert env.now == pytest.approx(3.0 + 1.0 + 10.0)  # a new start, then all the work again
    assert [t for t, _ in alloc.requests] == [0.0, 3.0]
    assert [(a.owner, a.start_s, a.end_s) for a in rec.activities] == [("i1", 1.0, 3.0), ("i2", 4.0, 14.0)]
    assert rec.counters[(0, "inference")]["retries"] == 1.0
    assert [lease.owner for lease in alloc.ended] == ["i2"]  # the crashed instance is not handed back
    assert proc.value.owner == "i2"


def test_a_crash_after_the_work_is_done_is_ignored():
    env = simpy.Environment()
    alloc, rec = CrashingAllocator(env, 1.0), Recorder()
    proc = env.process(run_work(env, alloc, rec, 0, "inference", SPEC, (Slot(0, 0),), 2.0))
    alloc.crash("i1", at_s=5.0)
    env.run(proc)
    env.run(until=6.0)
    assert len(alloc.requests) == 1 and "retries" not in rec.counters.get((0, "inference"), {})


def test_hold_exposes_the_crash_asks_once_and_reasks_only_when_told():
    env = simpy.Environment()
    alloc = CrashingAllocator(env, 2.0)
    lost = []
    hold = Hold(alloc, SPEC, (Slot(1, 0),), on_crash=lost.append)
    first = hold.request()
    assert hold.request() is first and len(alloc.requests) == 1  # one request in flight
    crashed = hold.crashed
    env.run(first)
    assert hold.lease is first.value and hold.request() is first  # held: nothing new asked
    alloc.crash("i1", at_s=4.0)
    env.run(crashed)
    assert env.now == 4.0 and crashed.value is first.value and lost == [first.value]
    assert hold.lease is None and hold.crashes == 1 and len(alloc.requests) == 1  # the owner decides when
    second = hold.request()
    env.run(second)
    assert second.value.owner == "i2" and env.now == 6.0
    hold.end()
    assert alloc.ended == [second.value] and hold.lease is None


def test_group_runs_once_every_node_is_held_and_replaces_only_the_crashed_part():
    env = simpy.Environment()
    alloc = CrashingAllocator(env, {0: 1.0, 1: 3.0})  # node 1 starts slower
    parts = by_node((Slot(0, 0), Slot(0, 1), Slot(1, 0), Slot(1, 1)))
    assert parts == [(Slot(0, 0), Slot(0, 1)), (Slot(1, 0), Slot(1, 1))]
    runs: list[tuple[float, float, list[str]]] = []

    def train():
        group = GroupHold(env, alloc, [SPEC, SPEC], parts)
        left = 10.0
        while left > 0:
            yield from group.wait()
            group.running, start = True, env.now
            try:
                yield env.timeout(left)
                left = 0.0
            except simpy.Interrupt:
                left = 10.0  # the step in flight is lost
            group.running = False
            runs.append((start, env.now, [lease.owner for lease in group.leases if lease is not None]))
        group.end()

    proc = env.process(train())
    alloc.crash("i1", at_s=5.0)  # node 0's part, 2 s into the run that started at 3 (when node 1 came up)
    env.run(proc)
    assert runs[0][:2] == (3.0, 5.0)
    # only node 0 is asked for again; the group resumes when it is back (1 s later) with node 1's lease kept
    assert [(t, s[0].node) for t, s in alloc.requests] == [(0.0, 0), (0.0, 1), (5.0, 0)]
    assert runs[1] == (6.0, 16.0, ["i3", "i2"])
    assert sorted(lease.owner for lease in alloc.ended) == ["i2", "i3"]


def test_crash_handler_interrupts_only_a_live_process():
    env = simpy.Environment()
    seen = []

    def work():
        try:
            yield env.timeout(5)
        except simpy.Interrupt as why:
            seen.append((env.now, why.cause))

    proc = env.process(work())
    handler = interrupt(proc)
    env.timeout(2).callbacks.append(lambda _e: handler(None))
    env.run()
    handler(None)  # the process has ended: nothing to interrupt, no error
    assert seen == [(2, "crash")]


def test_serverful_leases_are_the_named_gpus_at_once():
    env = simpy.Environment()
    pool = GpuPool([Slot(0, 0), Slot(0, 1)])
    alloc = ServerfulAllocator(env, pool)
    hold = Hold(alloc, SPEC, (Slot(0, 1),))
    ev = hold.request()
    assert ev.triggered and hold.lease is not None and hold.lease.slots == (Slot(0, 1),)
    assert pool.free() == (Slot(0, 0),)
    hold.end()
    assert pool.free() == (Slot(0, 0), Slot(0, 1))
