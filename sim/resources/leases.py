"""How phases get GPUs: one interface over a serverful pool (fixed GPUs) and the serverless platform.

A phase asks `acquire(spec, slots)` (a role's FunctionSpec, sim.resources.roles) and gets an event that succeeds with a `Lease` (the GPUs to
use, and the function instance behind them when serverless). Serverful leases are the exact GPUs the
scheduler named, granted at once; serverless leases are placed by the platform (the scheduler's node is a
preference and the number of GPUs the size) and may wait for a queue and a cold start.

Crash handling lives here, once: `Hold` keeps one piece of work's GPUs across crashes (it asks for a
lease, learns of its crash the moment the platform reports it, and asks again when told to);
`GroupHold` does the same for a multi-node group that runs only when every part is held; `run_work`
runs a fixed amount of work and redoes it on a new instance after a crash. What a crash costs (work
lost, retries counted, busy time recorded) stays with the phase: the helpers only hold GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import simpy

from sim.resources.roles import FunctionSpec
from sim.recording import Recorder
from sim.resources.pool import GpuPool
from sim.schedulers.views import Slot


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


def by_node(slots: tuple[Slot, ...]) -> list[tuple[Slot, ...]]:
    """Split a GPU group into per-node parts (a function instance, hence a lease, never spans nodes)."""
    parts: dict[int, list[Slot]] = {}
    for s in slots:
        parts.setdefault(s.node, []).append(s)
    return [tuple(p) for p in parts.values()]


def interrupt(process: simpy.Process) -> Callable[[Lease], None]:
    """A crash handler that interrupts `process` ("crash") if it is still running."""
    return lambda _lease: process.interrupt("crash") if process.is_alive else None


class Hold:
    """One piece of work's hold on its GPUs, across crashes.

    `request()` asks the allocator for a lease (at most one request in flight) and returns the event that
    succeeds with it. The crash handler is installed the moment the lease is granted (in the grant's own
    callback, before any process waiting on it resumes), so no crash between grant and use goes unseen.
    On a crash the hold drops the lease, succeeds `crashed` and calls `on_crash(lost_lease)`, which
    decides when to ask again (`request()`). Serverful leases never crash.
    """

    def __init__(
        self,
        alloc: Any,
        spec: FunctionSpec,
        slots: tuple[Slot, ...],
        on_crash: Callable[[Lease], None] | None = None,
        on_grant: Callable[[Lease], None] | None = None,
    ):
        self.alloc, self.spec, self.slots = alloc, spec, tuple(slots)
        self.on_crash, self.on_grant = on_crash, on_grant
        self.lease: Lease | None = None
        self.pending: simpy.Event | None = None  # the request not granted yet
        self._event: simpy.Event | None = None  # the latest request's event
        self.crashes = 0
        self._crashed: simpy.Event | None = None

    @property
    def crashed(self) -> simpy.Event:
        """Succeeds (with the lost lease) when the lease held now, or the next one, crashes."""
        if self._crashed is None or self._crashed.triggered:
            self._crashed = self.alloc.env.event()
        return self._crashed

    def request(self) -> simpy.Event:
        """Ask for a lease unless one is held or being asked for; returns the event that succeeds (or
        succeeded) with the lease, so a process may wait on a request made before it started."""
        if self.pending is not None or self.lease is not None:
            return self._event
        ev = self._event = self.pending = self.alloc.acquire(self.spec, self.slots)
        if ev.triggered:
            self._granted(ev)
        else:
            ev.callbacks.append(self._granted)
        return ev

    def _granted(self, ev: simpy.Event) -> None:
        self.pending = None
        lease = self.lease = ev.value
        self.alloc.on_crash(lease, self._crash)
        if self.on_grant is not None:
            self.on_grant(lease)

    def _crash(self, _instance: Any) -> None:
        lost, self.lease = self.lease, None
        self.crashes += 1
        if self._crashed is not None and not self._crashed.triggered:
            self._crashed.succeed(lost)
        if self.on_crash is not None:
            self.on_crash(lost)

    def ignore_crashes(self) -> None:
        """Keep the lease but stop watching it (work whose loss no longer matters, e.g. a KV send)."""
        if self.lease is not None:
            self.alloc.on_crash(self.lease, None)

    def end(self) -> None:
        """Work done: the lease goes back (to keep-alive when serverless)."""
        if self.lease is not None:
            self.alloc.on_crash(self.lease, None)
            self.alloc.end(self.lease)
            self.lease = None

    def release(self) -> None:
        """The scheduler let the GPUs go: no keep-alive."""
        if self.lease is not None:
            self.alloc.release(self.lease)
            self.lease = None


class GroupHold:
    """A multi-node group (one lease per node part) whose work runs only while every part is held.

    Built inside the process that does the work: it asks for every part at once. A part granted last
    interrupts the waiting process ("ready"); a part that crashes is asked for again at once, and
    interrupts the process ("crash") while the work runs. Only crashed parts are asked for again, so a
    part that crashes while another is still starting is replaced, never leaked.
    """

    def __init__(self, env: simpy.Environment, alloc: Any, specs: list[FunctionSpec], parts: list[tuple[Slot, ...]]):
        self.env = env
        self.process = env.active_process
        self.running = False  # set by the work while it runs on the held parts
        self.parts = [
            Hold(alloc, spec, part, on_crash=partial(self._crashed, k), on_grant=partial(self._granted, k))
            for k, (spec, part) in enumerate(zip(specs, parts))
        ]
        for hold in self.parts:
            hold.request()

    @property
    def complete(self) -> bool:
        return all(h.lease is not None for h in self.parts)

    @property
    def leases(self) -> list[Lease]:
        return [h.lease for h in self.parts]  # type: ignore[misc]

    def _may_interrupt(self) -> bool:
        return self.process.is_alive and self.env.active_process is not self.process

    def _granted(self, _k: int, _lease: Lease) -> None:
        if self.complete and not self.running and self._may_interrupt():
            self.process.interrupt("ready")

    def _crashed(self, k: int, _lease: Lease) -> None:
        self.parts[k].request()
        if self.running and self._may_interrupt():
            self.process.interrupt("crash")

    def wait(self) -> Iterator:
        """Wait until every part is held (returns at once if they are)."""
        while not self.complete:
            try:
                yield self.env.event()  # never succeeds: the last grant interrupts
            except simpy.Interrupt:
                pass

    def end(self) -> None:
        for hold in self.parts:
            hold.end()


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
    hold = Hold(alloc, spec, slots, on_crash=interrupt(env.active_process))
    while True:
        lease = yield hold.request()
        start = env.now
        try:
            if duration_s > 0:
                yield env.timeout(duration_s)
        except simpy.Interrupt:
            rec.busy(iteration, phase, spec.role, lease.slots, start, env.now, lease.owner)
            rec.count(iteration, phase, retries=1.0)
            continue
        hold.ignore_crashes()
        rec.busy(iteration, phase, spec.role, lease.slots, start, env.now, lease.owner)
        hold.end()
        return lease
