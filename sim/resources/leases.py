"""How phases get GPUs: one interface over a serverful pool (fixed GPUs) and the serverless platform.

A phase asks `acquire(spec, slots)` (a role's FunctionSpec, sim.resources.roles) and gets an event that succeeds with a `Lease` (the GPUs to
use, and the function instance behind them when serverless). Serverful leases are the exact GPUs the
scheduler named, granted at once; serverless leases are placed by the platform (the scheduler's node is a
preference and the number of GPUs the size) and may wait for a queue and a cold start.
`run_work` runs a piece of work on a lease and, when the instance crashes, retries it on a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import simpy

from sim.resources.roles import FunctionSpec
from sim.recording import GpuPool, Recorder
from sim.schedulers.base import Slot


@dataclass
class Lease:
    slots: tuple[Slot, ...]
    instance: Any = None  # sim.resources.platform.Instance when serverless

    @property
    def node(self) -> int:
        return self.slots[0].node

    @property
    def owner(self) -> str:
        """The instance that does the work (serverless), for per-instance busy time; "" when serverful."""
        return self.instance.instance_id if self.instance is not None else ""


class ServerfulAllocator:
    """The fixed GPU pool: leases are the requested GPUs, checked against double booking."""

    serverless = False

    def __init__(self, env: simpy.Environment, pool: GpuPool):
        self.env = env
        self.pool = pool

    def acquire(self, spec: FunctionSpec, slots: tuple[Slot, ...]) -> simpy.Event:
        self.pool.acquire(slots, spec.role)
        ev = self.env.event()
        ev.succeed(Lease(tuple(slots)))
        return ev

    def begin(self, lease: Lease) -> None:
        pass

    def end(self, lease: Lease) -> None:
        self.pool.release(lease.slots)

    def on_crash(self, lease: Lease, handler: Callable[[Any], None] | None) -> None:
        pass

    def release(self, lease: Lease) -> None:
        self.pool.release(lease.slots)


class ServerlessAllocator:
    """Function instances from the platform; a lease's GPUs are those of its instance."""

    serverless = True

    def __init__(self, env: simpy.Environment, platform: Any):
        self.env = env
        self.platform = platform

    def acquire(self, spec: FunctionSpec, slots: tuple[Slot, ...]) -> simpy.Event:
        node = slots[0].node if slots else None
        inner = self.platform.acquire(spec, node, tuple(slots))
        ev = self.env.event()

        def granted(e: simpy.Event) -> None:
            inst = e.value
            self.platform.begin(inst)
            ev.succeed(Lease(inst.slots, inst))

        if inner.triggered:
            granted(inner)
        else:
            inner.callbacks.append(granted)
        return ev

    def begin(self, lease: Lease) -> None:
        self.platform.begin(lease.instance)

    def end(self, lease: Lease) -> None:
        self.platform.end(lease.instance)

    def on_crash(self, lease: Lease, handler: Callable[[Any], None] | None) -> None:
        lease.instance.on_crash = handler

    def release(self, lease: Lease) -> None:
        self.platform.retire(lease.instance)


def run_work(
    env: simpy.Environment,
    alloc: Any,
    rec: Recorder,
    iteration: int,
    phase: str,
    spec: FunctionSpec,
    slots: tuple[Slot, ...],
    duration_s: float,
) -> Iterator:
    """Acquire, run `duration_s` of work, release to keep-alive; on a crash, start over on a new instance."""
    while True:
        lease = yield alloc.acquire(spec, slots)
        me = env.active_process
        alloc.on_crash(lease, lambda _inst, p=me: p.interrupt("crash") if p.is_alive else None)
        start = env.now
        try:
            if duration_s > 0:
                yield env.timeout(duration_s)
        except simpy.Interrupt:
            rec.busy(iteration, phase, spec.role, lease.slots, start, env.now, lease.owner)
            rec.count(iteration, phase, retries=1.0)
            continue
        alloc.on_crash(lease, None)
        rec.busy(iteration, phase, spec.role, lease.slots, start, env.now, lease.owner)
        alloc.end(lease)
        return lease
