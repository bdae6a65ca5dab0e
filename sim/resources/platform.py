"""The serverless platform: function instances on GPUs, their cold starts, sleep, wake, keep-alive and bill.

An instance is `loading -> busy <-> idle -> (asleep <-> loading) -> released` (or crashed). How instances
hold GPUs is `platform.gpu_sharing`:
- `exclusive` (hosted functions, Modal- or RunPod-like): an instance owns whole GPUs of one node;
- `memory` (self-hosted, as the RLHFless testbed: Ray actors with fractional GPUs, vLLM sleep mode,
  FSDP offload): several instances of the job are resident on a GPU while their memory fits, only one
  computes at a time (a work request claims its GPUs' compute), and an idle one is put to sleep (its
  state copied to host DRAM, KV dropped) when another needs the room, or released when the host is full
  too, least recently used first.
A request is served, in this order, by a resident idle instance (at once), a pre-warm still loading, a
sleeping instance (a wake: `wake_s` + the state back over PCIe; no container, no engine init, no storage
read), or a cold start (container + storage read into host DRAM + copy to the GPUs + engine init); else
it waits in a FIFO queue. Concurrent loads on a node share its storage, network and PCIe links
(`sim.hardware.transfers`); concurrent reads of the same weights on one node are one read. Every state change is
one instance event: nothing here runs per decode step.

This module is the facade that sequences those transitions; its parts are `sim.resources.instances`
(the records), `sim.resources.residency` (GPU memory and host DRAM), `sim.resources.starts` (loads and
their estimates), `sim.resources.prewarm` (timed and pending pre-warms) and `sim.resources.billing`.
"""

from __future__ import annotations

import simpy

from sim.resources.billing import BilledInterval, InstanceRecord, serverless_records
from sim.resources.instances import Instance, Request
from sim.resources.prewarm import Prewarms
from sim.resources.residency import DRAM_CACHE_FRACTION, GpuLedger, HostMemory
from sim.resources.roles import FunctionSpec
from sim.resources.starts import Loader, TrainedWeights, published_key
from sim.schedulers.views import Slot, StartCost

__all__ = ["DRAM_CACHE_FRACTION", "Instance", "ServerlessPlatform"]


class ServerlessPlatform:
    """Places, starts, keeps, sleeps, wakes, bills and (optionally) crashes function instances."""

    def __init__(self, env, cluster, cfg, rng):
        self.env, self.cluster, self.cfg, self.rng = env, cluster, cfg, rng
        self.shared = cfg.gpu_sharing == "memory"
        self.ledger = GpuLedger(cluster, self.shared)
        self.host = HostMemory(cluster.nodes, cluster.gpu.host_memory_bytes * DRAM_CACHE_FRACTION)
        self.weights = TrainedWeights()
        self.loader = Loader(env, cluster, cfg, self.host, self.weights, on_loaded=self._ready, on_refreshed=self._deliver)
        self.prewarm_requests = Prewarms(env, self.shared, serve=self._serve, expire=self._expire)
        self.instances: list[Instance] = []
        self.queue: list[Request] = []  # work requests waiting for GPUs (FIFO)
        self.keep_alive_s = cfg.keep_alive_s  # a scheduler may retune both (GenerationPlan)
        self.sleep_idle = cfg.sleep_idle
        self.version = 0  # bumped whenever placement state changes (views cache on it)
        self.failures = self.prewarms = self.wakes = self.sleeps = 0
        self.wasted_gpu_s = self.queue_wait_s = self.cold_start_time_s = 0.0
        self._draining = self._redrain = False

    @property
    def wake_time_s(self) -> float:
        return self.loader.wake_time_s

    def footprint(self, spec: FunctionSpec) -> float:
        """GPU bytes per GPU an instance of `spec` holds: its own need, or the whole GPU when exclusive."""
        return self.ledger.footprint(spec)

    # ------------------------------------------------------------------ requests
    def acquire(self, spec: FunctionSpec, node: int | None = None, slots: tuple[Slot, ...] = ()) -> simpy.Event:
        """An event that succeeds with an Instance ready to compute (reused, woken or cold-started)."""
        self.ledger.check_fits(spec)
        req = Request(self.env.event(), spec, node, tuple(slots), self.env.now)
        if not self._serve(req):
            self.queue.append(req)
        return req.event

    def prewarm(self, spec: FunctionSpec, node: int | None = None, slots: tuple[Slot, ...] = (), after_s: float = 0.0) -> None:
        """Have an instance of `spec` resident (loaded or woken) for a later request, starting `after_s` from now.

        With memory sharing it loads as soon as its memory fits (beside work that is computing) and waits
        for room until the keep-alive would have expired; with exclusive GPUs it is skipped when no GPU is
        free. It never takes a GPU's memory from an instance that is starting or computing.
        """
        self.ledger.check_fits(spec)
        asked_s = self.env.now + after_s
        req = Request(None, spec, node, tuple(slots), asked_s, deadline_s=asked_s + max(self.keep_alive_s, 0.0))
        self.prewarm_requests.schedule(req, after_s)

    def _matches(self, req: Request, states: tuple[str, ...]) -> list[Instance]:
        spec = req.spec
        found = [
            i for i in self.instances
            if i.state in states and i.serves(spec)
            and not i.claimed and (req.work or (not i.reserved and (req.node is None or i.node == req.node)))
        ]  # fmt: skip
        pref = set(req.slots)
        # pre-warmed for this request first, then on the asked GPUs, on the asked node, anywhere
        return sorted(found, key=lambda i: (not i.reserved, not pref.issuperset(i.slots), i.node != req.node, i.idle_since))

    def _serve(self, req: Request) -> bool:
        work = req.work
        for inst in self._matches(req, ("idle",)):
            if not work:
                self.prewarm_requests.reserve_idle(inst, self.keep_alive_s)
                return True
            if self.ledger.compute_free(inst.slots, inst):
                self._grant(inst, req)
                return True
        for inst in self._matches(req, ("loading",)):
            if not work:
                inst.reserved = True
                return True
            if self.ledger.compute_free(inst.slots, inst):
                self._claim(inst, req)
                return True
        sleepers = self._matches(req, ("asleep",))
        for inst in sleepers:
            if self._wake(inst, req):
                return True
        if sleepers and not work and self.shared:
            return False  # a pre-warm waits for its sleeper's GPUs rather than cold-starting a second copy
        return self._cold_start(req)

    def _claim(self, inst: Instance, req: Request) -> None:
        inst.claimed, inst.reserved, inst.waiting = True, False, req
        self.ledger.claim(inst)
        self.version += 1
        self.prewarm_requests.cancel_one(req.spec)

    def _grant(self, inst: Instance, req: Request) -> None:
        """Hand a resident instance to a work request (after a refresh if its trained weights are stale)."""
        self._claim(inst, req)
        inst.state = "busy"
        inst.token += 1
        if self.weights.stale(inst):
            inst.state = "loading"
            self.env.process(self.loader.refresh(inst))
        else:
            self._deliver(inst)

    def _deliver(self, inst: Instance) -> None:
        req, inst.waiting = inst.waiting, None
        inst.state = "busy"
        if req is not None:
            req.event.succeed(inst)

    # ------------------------------------------------------------------ room on GPUs
    def _make_room(self, victims: list[Instance]) -> float:
        """Put victims away (sleep with memory sharing, else release); returns when their GPU memory is free."""
        free_at = self.env.now
        for v in victims:
            if self.shared and self.keep_alive_s > 0:
                free_at = max(free_at, self._sleep(v))
            else:
                self.release(v)
        return free_at

    def _occupy(self, inst: Instance, slots: tuple[Slot, ...]) -> None:
        self.ledger.occupy(inst, slots, self.env.now)
        self.version += 1

    def _vacate(self, inst: Instance) -> None:
        self.ledger.vacate(inst, self.env.now)
        self.version += 1

    # ------------------------------------------------------------------ starts
    def _cold_start(self, req: Request) -> bool:
        found = self.ledger.find_gpus(req, req.node)
        if found is None:
            return False
        slots, victims = found
        free_at = self._make_room(victims)
        spec, now = req.spec, self.env.now
        inst = Instance(f"{spec.role}-{len(self.instances)}", spec, slots, req.asked_s, placed_s=now)
        self.instances.append(inst)
        self._occupy(inst, slots)
        if req.work:
            self.queue_wait_s += now - req.asked_s
            self._claim(inst, req)
        else:
            inst.reserved = True
            self.prewarms += 1
        self.env.process(self.loader.cold(inst, free_at))
        return True

    def _wake(self, inst: Instance, req: Request) -> bool:
        """A sleeping instance comes back: on its own GPUs (memory sharing) or free ones of its node."""
        work = req.work
        if self.shared:
            if work and not self.ledger.compute_free(inst.slots):
                return False
            victims = self.ledger.victims(inst.slots, self.footprint(inst.spec), work, exclude=inst)
            if victims is None:
                return False
            slots = inst.slots
        else:
            found = self.ledger.find_gpus(Request(req.event, inst.spec, inst.node, inst.slots, req.asked_s), inst.node, only_node=True)
            if found is None:
                return False
            slots, victims = found
        free_at = self._make_room(victims)
        self.host.pinned[inst.node] -= inst.spec.wake_bytes
        inst.state = "loading"
        self._occupy(inst, slots)
        inst.wakes += 1
        self.wakes += 1
        if work:
            self._claim(inst, req)
        else:
            inst.reserved = True
        self.env.process(self.loader.wake(inst, free_at))
        return True

    def _ready(self, inst: Instance) -> None:
        if inst.state == "released":
            return
        now = self.env.now
        inst.periods[-1][2] = now
        if inst.ready_s != inst.ready_s:  # first start
            inst.ready_s = now
            if inst.cold_start:
                self.cold_start_time_s += now - inst.placed_s
            if self.cfg.failures.mtbf_s:
                ttf = float(self.rng.exponential(self.cfg.failures.mtbf_s))
                self.env.timeout(ttf).callbacks.append(lambda _e, i=inst: self._crash(i))
        if inst.claimed:
            if self.weights.stale(inst):  # weights were published while it loaded
                self.env.process(self.loader.refresh(inst))
            else:
                self._deliver(inst)
        else:
            self._idle(inst, sleep=False)

    # ------------------------------------------------------------------ work, idleness, sleep
    def begin(self, inst: Instance) -> None:
        if inst.busy_since is None:
            inst.busy_since = self.env.now
        inst.state = "busy"

    def _stop_busy(self, inst: Instance) -> None:
        if inst.busy_since is not None:
            inst.busy_s += self.env.now - inst.busy_since
            inst.work.append((inst.busy_since, self.env.now))
            inst.busy_since = None

    def end(self, inst: Instance) -> None:
        """Work finished: the instance stays resident (or sleeps) and is released after keep-alive unless reused."""
        self._stop_busy(inst)
        inst.on_crash = None
        if inst.spec.kind == "trainer":
            self.weights.trained.add(inst.spec.key)
        if inst.state != "released":
            self._idle(inst, sleep=self.sleep_idle)

    def retire(self, inst: Instance) -> None:
        """The scheduler let the function go: it stops computing and billing now (asleep if it may sleep)."""
        self._stop_busy(inst)
        inst.on_crash = None
        if inst.state == "released":
            return
        if self.shared or self.sleep_idle:
            self._idle(inst, sleep=True)
        else:
            self.release(inst)

    def _idle(self, inst: Instance, sleep: bool) -> None:
        inst.state = "idle"
        inst.claimed, inst.waiting = False, None
        self.ledger.unclaim(inst)
        inst.idle_since = self.env.now
        inst.token += 1
        self.version += 1
        keep = self.keep_alive_s
        if keep <= 0:
            self.release(inst)
            return
        token = inst.token
        self.env.timeout(keep).callbacks.append(lambda _e, i=inst, t=token: self._expire(i, t))
        if sleep and not inst.reserved:
            self._sleep(inst)
        self._drain()

    def _sleep(self, inst: Instance) -> float:
        """Copy an idle instance's state to host DRAM and free its GPU memory; returns when the copy is done.

        When the host has no room even after dropping cached weights and older sleepers, it is released.
        """
        if inst.state != "idle":
            return self.env.now
        nbytes = inst.spec.wake_bytes
        if not self.host.make_room(inst.node, nbytes, lambda: self._sleepers(inst.node, inst), self.release):
            self.release(inst)
            return self.env.now
        self.host.pinned[inst.node] += nbytes
        self._vacate(inst)
        inst.state = "asleep"
        self.sleeps += 1
        self._drain()
        return self.env.now + nbytes / (inst.gpus * self.cluster.host_bw)

    def _sleepers(self, node: int, keep: Instance) -> list[Instance]:
        """Sleeping instances on `node` other than `keep`, least recently used first."""
        return sorted((i for i in self.instances if i.state == "asleep" and i.node == node and i is not keep), key=lambda i: i.idle_since)

    def _expire(self, inst: Instance, token: int) -> None:
        if inst.state in ("idle", "asleep") and inst.token == token:
            self.release(inst)

    def release(self, inst: Instance) -> None:
        if inst.state == "released":
            return
        self._stop_busy(inst)
        if inst.state == "asleep":
            self.host.pinned[inst.node] -= inst.spec.wake_bytes
        else:
            self._vacate(inst)
        if inst.spec.kind == "trainer" and inst.spec.key in self.weights.trained and not inst.crashed:
            self.host.store(inst.node, inst.spec.key, inst.spec.load_bytes, 0)  # its state is checkpointed to host
        inst.state = "released"
        inst.released_s = self.env.now
        inst.claimed = inst.reserved = False
        orphan, inst.waiting = inst.waiting, None
        self.version += 1
        if orphan is not None:  # it was starting for a request (and crashed): the request goes back in line
            self.queue.insert(0, orphan)
        self._drain()

    def _crash(self, inst: Instance) -> None:
        if inst.state == "released" or inst.crashed:
            return
        inst.crashed = True
        self.failures += 1
        handler = inst.on_crash
        if inst.busy_since is not None:
            self.wasted_gpu_s += (self.env.now - inst.busy_since) * inst.gpus
        self.release(inst)
        if handler is not None:
            handler(inst)

    def _drain(self) -> None:
        """Retry queued requests (FIFO) and pending pre-warms after a change that may have made room."""
        if self._draining:
            self._redrain = True
            return
        self._draining = True
        try:
            while True:
                self._redrain = False
                waiting, self.queue = self.queue, []
                for req in waiting:
                    if not self._serve(req):
                        self.queue.append(req)
                self.prewarm_requests.retry()
                if not self._redrain:
                    break
        finally:
            self._draining = False

    def shutdown(self) -> None:
        """The job is over: every instance still alive is released now."""
        self.prewarm_requests.clear()
        for inst in list(self.instances):
            self.release(inst)

    # ------------------------------------------------------------------ trained weights
    def publish(self, tracks: str, model, node: int, nbytes: float) -> None:
        """A trainer wrote new `tracks` weights of `model` to its node's host DRAM: later loads fetch them there."""
        version = self.weights.publish(tracks, node)
        key = published_key(tracks, model.name)
        self.host.drop_elsewhere(key, node)  # older copies are stale
        self.host.store(node, key, nbytes, version)

    def push(self, tracks: str) -> list[Instance]:
        """The trainer pushes the new weights to the resident idle instances that serve them; returns them."""
        ver = self.weights.versions.get(tracks, 0)
        out = [i for i in self.instances if i.state == "idle" and i.spec.tracks == tracks]
        for i in out:
            i.version = ver
        return out

    # ------------------------------------------------------------------ what schedulers may read
    def start_estimates_s(self, spec: FunctionSpec, count: int, node: int | None = None) -> tuple[StartCost, ...]:
        """What each of `count` new requests of `spec` would cost to start if asked now, cheapest first: 0 s for
        a resident idle instance, a wake for a sleeping one, a cold start for the rest (without contention)."""
        return self.loader.estimates(spec, count, node, self.instances)

    def free_slots(self) -> tuple[Slot, ...]:
        """GPUs a new work request could compute on now: not claimed (memory sharing), or empty (exclusive)."""
        return self.ledger.free_slots()

    def warm_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.instances:
            if inst.state == "idle":
                counts[inst.role] = counts.get(inst.role, 0) + 1
        return counts

    def resident_bytes(self) -> dict[Slot, float]:
        return dict(self.ledger.used)

    # ------------------------------------------------------------------ records
    def records(self, billing) -> tuple[list[InstanceRecord], list[BilledInterval]]:
        """Instance rows and the billed intervals (per instance when exclusive, per GPU when shared)."""
        return serverless_records(self.instances, billing, self.shared)

    def residency(self) -> list[tuple[str, tuple[Slot, ...], float, float, float]]:
        """(instance, GPUs, bytes per GPU, start, end) of every resident period (memory checks, plots)."""
        return [
            (i.instance_id, slots, self.footprint(i.spec), start, end if end == end else i.released_s)
            for i in self.instances
            for slots, start, _ready, end in i.periods
        ]
