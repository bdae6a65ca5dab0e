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
one instance event: nothing here runs per decode step. Billing: sim.resources.billing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import simpy

from sim.resources.billing import BilledInterval, InstanceRecord, exclusive_intervals, shared_intervals
from sim.hardware.memory import InfeasibleError
from sim.resources.roles import FunctionSpec
from sim.schedulers.base import Slot, StartCost
from sim.hardware.transfers import TransferPool

DRAM_CACHE_FRACTION = 0.8  # share of a node's host DRAM usable for cached weights and sleepers (assumption, docs/model.md)
_EPS_BYTES = 1.0


class Instance:
    """One function instance: a role's spec on GPUs of one node, with its resident periods."""

    __slots__ = (
        "instance_id", "spec", "slots", "state", "requested_s", "placed_s", "ready_s", "released_s", "cold_start",
        "tier", "load_s", "busy_s", "busy_since", "periods", "idle_since", "token", "on_crash", "crashed", "version",
        "wakes", "claimed", "reserved", "waiting", "work",
    )  # fmt: skip

    def __init__(self, instance_id: str, spec: FunctionSpec, slots: tuple[Slot, ...], requested_s: float):
        self.instance_id, self.spec, self.slots = instance_id, spec, slots
        self.state = "loading"
        self.requested_s = self.placed_s = requested_s
        self.ready_s = self.released_s = float("nan")
        self.cold_start = True
        self.tier = ""
        self.load_s = 0.0
        self.busy_s = 0.0
        self.busy_since: float | None = None
        self.periods: list[list] = []  # [slots, start, ready, end] per resident period
        self.idle_since = 0.0
        self.token = 0  # bumped at every idle period (keep-alive timers check it)
        self.on_crash = None
        self.crashed = False
        self.version = 0  # version of the trained weights it holds (spec.tracks)
        self.wakes = 0
        self.claimed = False  # requested for work: it computes once ready
        self.reserved = False  # chosen by a pre-warm for a later request
        self.waiting: _Request | None = None  # the work request it will serve when ready
        self.work: list[tuple[float, float]] = []  # busy intervals (billing charges a shared GPU to its worker)

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def model(self) -> str:
        return self.spec.key

    @property
    def node(self) -> int:
        return self.slots[0].node

    @property
    def gpus(self) -> int:
        return len(self.slots)


@dataclass
class _Request:
    event: simpy.Event | None  # None: a pre-warm
    spec: FunctionSpec
    node: int | None
    slots: tuple[Slot, ...]
    asked_s: float
    deadline_s: float = float("inf")


class ServerlessPlatform:
    """Places, starts, keeps, sleeps, wakes, bills and (optionally) crashes function instances."""

    def __init__(self, env, cluster, cfg, rng):
        self.env, self.cluster, self.cfg, self.rng = env, cluster, cfg, rng
        self.shared = cfg.gpu_sharing == "memory"
        self.capacity = cluster.gpu.memory_bytes
        self.slots = [Slot(n, g) for n in range(cluster.nodes) for g in range(cluster.gpus_per_node)]
        self.used = {s: 0.0 for s in self.slots}  # resident bytes per GPU
        self.residents: dict[Slot, list[Instance]] = {s: [] for s in self.slots}
        self.claims: dict[Slot, Instance | None] = {s: None for s in self.slots}  # who computes (or will)
        self.instances: list[Instance] = []
        self.queue: list[_Request] = []
        self.pending: list[_Request] = []  # pre-warms waiting for room
        self.scheduled: list[_Request] = []  # pre-warms waiting for their start time
        self.host_budget = cluster.gpu.host_memory_bytes * DRAM_CACHE_FRACTION
        self.pinned = {n: 0.0 for n in range(cluster.nodes)}  # host bytes of sleeping instances
        self.dram: dict[int, OrderedDict[str, tuple[float, int]]] = {n: OrderedDict() for n in range(cluster.nodes)}
        self.reads: dict[tuple[int, str, int], tuple[simpy.Event, float]] = {}  # storage reads in flight
        self.trained: set[str] = set()  # trainer keys whose optimizer state exists (they have trained)
        self.versions: dict[str, int] = {}  # trained weights ("actor", "critic") -> version
        self.sources: dict[str, int] = {}  # trained weights -> node whose host DRAM holds the newest copy
        self.pool = TransferPool(env, self._link_bandwidth)
        self.keep_alive_s = cfg.keep_alive_s  # a scheduler may retune both (GenerationPlan)
        self.sleep_idle = cfg.sleep_idle
        self.version = 0  # bumped whenever placement state changes (views cache on it)
        self.failures = self.prewarms = self.wakes = self.sleeps = 0
        self.wasted_gpu_s = self.queue_wait_s = self.cold_start_time_s = self.wake_time_s = 0.0
        self._draining = self._redrain = False

    # ------------------------------------------------------------------ links and bytes
    def _link_bandwidth(self, link) -> float:
        kind = link[0]
        if kind == "pcie":
            return self.cluster.host_bw
        if kind == "nic":
            return self.cluster.inter_bw
        if kind == "ssd":
            return self.cfg.storage.ssd_bytes_per_s
        return self.cfg.storage.remote_bytes_per_s

    def _pcie(self, slots: tuple[Slot, ...]) -> dict:
        return {("pcie", s.node, s.gpu): 1.0 / len(slots) for s in slots}

    def footprint(self, spec: FunctionSpec) -> float:
        """GPU bytes per GPU an instance of `spec` holds: its own need, or the whole GPU when exclusive."""
        return spec.resident_bytes_per_gpu if self.shared else self.capacity

    def _stale(self, inst: Instance) -> bool:
        t = inst.spec.tracks
        return t is not None and inst.version < self.versions.get(t, 0)

    # ------------------------------------------------------------------ requests
    def _check_fits(self, spec: FunctionSpec) -> None:
        if spec.gpus < 1 or spec.gpus > self.cluster.gpus_per_node:
            raise ValueError(f"{spec.role}: an instance needs 1..{self.cluster.gpus_per_node} GPUs of one node, asked for {spec.gpus}")
        if spec.resident_bytes_per_gpu > self.capacity:
            raise InfeasibleError(
                f"{spec.role}: an instance of {spec.model.name} on {spec.gpus} GPU(s) needs {spec.resident_bytes_per_gpu / 1e9:.1f} GB "
                f"per GPU, but a {self.cluster.gpu.name} has {self.capacity / 1e9:.1f} GB; give the role more GPUs (a larger FSDP group) "
                f"or use GPUs with more memory"
            )

    def acquire(self, spec: FunctionSpec, node: int | None = None, slots: tuple[Slot, ...] = ()) -> simpy.Event:
        """An event that succeeds with an Instance ready to compute (reused, woken or cold-started)."""
        self._check_fits(spec)
        req = _Request(self.env.event(), spec, node, tuple(slots), self.env.now)
        if not self._serve(req):
            self.queue.append(req)
        return req.event

    def prewarm(self, spec: FunctionSpec, node: int | None = None, slots: tuple[Slot, ...] = (), after_s: float = 0.0) -> None:
        """Have an instance of `spec` resident (loaded or woken) for a later request, starting `after_s` from now.

        With memory sharing it loads as soon as its memory fits (beside work that is computing) and waits
        for room until the keep-alive would have expired; with exclusive GPUs it is skipped when no GPU is
        free. It never takes a GPU's memory from an instance that is starting or computing.
        """
        self._check_fits(spec)
        req = _Request(None, spec, node, tuple(slots), self.env.now + after_s)
        req.deadline_s = req.asked_s + max(self.keep_alive_s, 0.0)

        def fire(_e=None) -> None:
            if req not in self.scheduled:
                return  # its phase began first: the work requests took care of it
            self.scheduled.remove(req)
            if not self._serve(req) and self.shared:
                self.pending.append(req)

        self.scheduled.append(req)
        if after_s > 0:
            self.env.timeout(after_s).callbacks.append(fire)
        else:
            fire()

    def _matches(self, req: _Request, states: tuple[str, ...]) -> list[Instance]:
        spec = req.spec
        found = [
            i for i in self.instances
            if i.state in states and i.spec.role == spec.role and i.spec.key == spec.key and i.gpus == spec.gpus
            and not i.claimed and (req.event is not None or (not i.reserved and (req.node is None or i.node == req.node)))
        ]  # fmt: skip
        pref = set(req.slots)
        # pre-warmed for this request first, then on the asked GPUs, on the asked node, anywhere
        return sorted(found, key=lambda i: (not i.reserved, not pref.issuperset(i.slots), i.node != req.node, i.idle_since))

    def _compute_free(self, slots: tuple[Slot, ...], inst: Instance | None = None) -> bool:
        return all(self.claims[s] is None or self.claims[s] is inst for s in slots)

    def _serve(self, req: _Request) -> bool:
        work = req.event is not None
        for inst in self._matches(req, ("idle",)):
            if not work:
                self._reserve_idle(inst)
                return True
            if self._compute_free(inst.slots, inst):
                self._grant(inst, req)
                return True
        for inst in self._matches(req, ("loading",)):
            if not work:
                inst.reserved = True
                return True
            if self._compute_free(inst.slots, inst):
                self._claim(inst, req)
                return True
        sleepers = self._matches(req, ("asleep",))
        for inst in sleepers:
            if self._wake(inst, req):
                return True
        if sleepers and not work and self.shared:
            return False  # a pre-warm waits for its sleeper's GPUs rather than cold-starting a second copy
        return self._cold_start(req)

    def _reserve_idle(self, inst: Instance) -> None:
        """A pre-warm keeps a resident idle instance for its request: its keep-alive starts over."""
        inst.reserved = True
        inst.token += 1
        token = inst.token
        if self.keep_alive_s > 0:
            self.env.timeout(self.keep_alive_s).callbacks.append(lambda _e, i=inst, t=token: self._expire(i, t))

    def _claim(self, inst: Instance, req: _Request) -> None:
        inst.claimed, inst.reserved, inst.waiting = True, False, req
        for s in inst.slots:
            self.claims[s] = inst
        self.version += 1
        self._drop_pending(req.spec)

    def _grant(self, inst: Instance, req: _Request) -> None:
        """Hand a resident instance to a work request (after a refresh if its trained weights are stale)."""
        self._claim(inst, req)
        inst.state = "busy"
        inst.token += 1
        if self._stale(inst):
            inst.state = "loading"
            self.env.process(self._refresh(inst))
        else:
            self._deliver(inst)

    def _deliver(self, inst: Instance) -> None:
        req, inst.waiting = inst.waiting, None
        inst.state = "busy"
        if req is not None:
            req.event.succeed(inst)

    def _drop_pending(self, spec: FunctionSpec) -> None:
        """A work request was served: one pre-warm still waiting for the same function is no longer needed."""
        for queue in (self.pending, self.scheduled):
            for k, p in enumerate(queue):
                if p.spec.role == spec.role and p.spec.key == spec.key and p.spec.gpus == spec.gpus:
                    del queue[k]
                    return

    # ------------------------------------------------------------------ room on GPUs
    def _victim_ok(self, inst: Instance, work: bool) -> bool:
        return inst.state == "idle" and not inst.claimed and (work or not inst.reserved)

    def _victims(self, slots: tuple[Slot, ...], need: float, work: bool, exclude: Instance | None = None) -> list[Instance] | None:
        """Idle instances to put away (least recently used first) so that `need` bytes fit on each GPU."""
        free = {s: self.capacity - self.used[s] for s in slots}
        chosen: list[Instance] = []
        for s in slots:
            if free[s] >= need - _EPS_BYTES:
                continue
            for v in sorted(self.residents[s], key=lambda i: i.idle_since):
                if v is exclude or v in chosen or not self._victim_ok(v, work):
                    continue
                chosen.append(v)
                for t in v.slots:
                    if t in free:
                        free[t] += self.footprint(v.spec)
                if free[s] >= need - _EPS_BYTES:
                    break
            if free[s] < need - _EPS_BYTES:
                return None
        return chosen

    def _find_gpus(self, req: _Request, node: int | None, only_node: bool = False) -> tuple[tuple[Slot, ...], list[Instance]] | None:
        """GPUs on one node (the asked one first, then the nearest) where `req` fits, and what must make room."""
        spec, work = req.spec, req.event is not None
        need = self.footprint(spec)
        pref = set(req.slots)
        if only_node or (not work and node is not None):  # a pre-warm goes where it was asked, or nowhere
            nodes = [node if node is not None else 0]
        else:
            nodes = self.cluster.nodes_by_distance(node if node is not None else 0)
        for n in nodes:
            cands = []
            for g in range(self.cluster.gpus_per_node):
                s = Slot(n, g)
                if (work or not self.shared) and self.claims[s] is not None:
                    continue
                free = self.capacity - self.used[s]
                if free >= need - _EPS_BYTES:
                    cands.append((s not in pref, 0, -free, g, s))
                elif work or self.shared:  # exclusive pre-warms never evict
                    room = free + sum(self.footprint(v.spec) for v in self.residents[s] if self._victim_ok(v, work))
                    if room >= need - _EPS_BYTES:
                        cands.append((s not in pref, 1, -free, g, s))
            if len(cands) < spec.gpus:
                continue
            chosen = tuple(sorted((c[4] for c in sorted(cands)[: spec.gpus]), key=lambda s: s.gpu))
            victims = self._victims(chosen, need, work)
            if victims is not None:
                return chosen, victims
        return None

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
        inst.slots = slots
        fp = self.footprint(inst.spec)
        for s in slots:
            self.used[s] += fp
            self.residents[s].append(inst)
        inst.periods.append([slots, self.env.now, float("nan"), float("nan")])
        self.version += 1

    def _vacate(self, inst: Instance) -> None:
        fp = self.footprint(inst.spec)
        for s in inst.slots:
            self.used[s] -= fp
            self.residents[s].remove(inst)
            if self.claims[s] is inst:
                self.claims[s] = None
        inst.periods[-1][3] = self.env.now
        self.version += 1

    # ------------------------------------------------------------------ starts
    def _cold_start(self, req: _Request) -> bool:
        found = self._find_gpus(req, req.node)
        if found is None:
            return False
        slots, victims = found
        free_at = self._make_room(victims)
        spec, now = req.spec, self.env.now
        inst = Instance(f"{spec.role}-{len(self.instances)}", spec, slots, req.asked_s)
        inst.placed_s = now
        self.instances.append(inst)
        self._occupy(inst, slots)
        if req.event is not None:
            self.queue_wait_s += now - req.asked_s
            self._claim(inst, req)
        else:
            inst.reserved = True
            self.prewarms += 1
        self.env.process(self._load_cold(inst, free_at))
        return True

    def _load_cold(self, inst: Instance, free_at: float):
        """container -> storage (or network) into host DRAM -> host to GPUs -> engine init."""
        cs, spec = self.cfg.cold_start, inst.spec
        nbytes = self._cold_bytes(spec)
        if cs.container_s > 0:
            yield self.env.timeout(cs.container_s)
        t0 = self.env.now
        inst.version = self.versions.get(spec.tracks, 0) if spec.tracks else 0
        inst.tier, read = self._read_to_host(inst.node, spec, nbytes)
        if read is not None:
            yield read
        if free_at > self.env.now:  # the memory of instances put to sleep for it is being copied out
            yield self.env.timeout(free_at - self.env.now)
        yield self.pool.start(nbytes, self._pcie(inst.slots))
        inst.load_s = self.env.now - t0
        if cs.engine_init_s > 0:
            yield self.env.timeout(cs.engine_init_s)
        self._ready(inst)

    def _cold_bytes(self, spec: FunctionSpec) -> float:
        """A trainer restores its optimizer state once it has trained; before that it reads the checkpoint."""
        return spec.load_bytes if (spec.kind != "trainer" or spec.key in self.trained) else spec.first_load_bytes

    def _source(self, spec: FunctionSpec) -> tuple[str, int]:
        """(host-cache key, version) of what a cold start of `spec` reads: trained weights published by a
        trainer, a trainer's own state, or else the model's checkpoint (shared by every role that starts
        from it, e.g. the reference and the first actor weights)."""
        ver = self.versions.get(spec.tracks, 0) if spec.tracks else 0
        if ver > 0:
            return f"{spec.tracks}@{spec.model.name}", ver
        if spec.kind == "trainer" and spec.key in self.trained:
            return spec.key, 0
        return spec.model.name, 0

    def _read_to_host(self, node: int, spec: FunctionSpec, nbytes: float) -> tuple[str, simpy.Event | None]:
        """Where a cold start finds its bytes, and the read into this node's host DRAM (None: already there).

        The node's cache holds what was loaded or published there; trained weights newer than the
        storage copy come from the node they were published to; concurrent reads of one key are one read.
        """
        key, ver = self._source(spec)
        entry = self.dram[node].get(key)
        if entry is not None and entry[1] == ver and entry[0] >= nbytes - _EPS_BYTES:
            self.dram[node].move_to_end(key)
            return "dram", None
        src = self.sources.get(spec.tracks) if ver > 0 and spec.tracks else None
        if src == node or (src is None and self.cfg.cold_start.weights_from == "dram"):
            self._cache(node, key, nbytes, ver)
            return "dram", None
        if src is not None:
            # the trainer's new weights spread as a pipelined broadcast (as NCCL's ring or tree broadcast):
            # each node's own receive link is the bottleneck, not the publisher's
            tier, usage = f"node{src}", {("nic", node): 1.0}
        else:
            tier = self.cfg.cold_start.weights_from
            usage = {(tier, node): 1.0}
        k = (node, key, ver)
        inflight = self.reads.get(k)
        if inflight is not None and inflight[1] >= nbytes - _EPS_BYTES:
            return tier, inflight[0]
        ev = self.pool.start(nbytes, usage)
        self.reads[k] = (ev, nbytes)

        def done(_e) -> None:
            if self.reads.get(k, (None,))[0] is ev:
                del self.reads[k]
            self._cache(node, key, nbytes, ver)

        ev.callbacks.append(done)
        return tier, ev

    def _wake(self, inst: Instance, req: _Request) -> bool:
        """A sleeping instance comes back: on its own GPUs (memory sharing) or free ones of its node."""
        work = req.event is not None
        if self.shared:
            if work and not self._compute_free(inst.slots):
                return False
            victims = self._victims(inst.slots, self.footprint(inst.spec), work, exclude=inst)
            if victims is None:
                return False
            slots = inst.slots
        else:
            found = self._find_gpus(_Request(req.event, inst.spec, inst.node, inst.slots, req.asked_s), inst.node, only_node=True)
            if found is None:
                return False
            slots, victims = found
        free_at = self._make_room(victims)
        self.pinned[inst.node] -= inst.spec.wake_bytes
        inst.state = "loading"
        self._occupy(inst, slots)
        inst.wakes += 1
        self.wakes += 1
        if work:
            self._claim(inst, req)
        else:
            inst.reserved = True
        self.env.process(self._load_wake(inst, free_at))
        return True

    def _load_wake(self, inst: Instance, free_at: float):
        """wake_s, then the state back from host DRAM (newer trained weights fetched first if published elsewhere)."""
        spec = inst.spec
        if self.cfg.wake_s > 0:
            yield self.env.timeout(self.cfg.wake_s)
        t0 = self.env.now
        inst.tier = "sleep"
        if self._stale(inst):  # newer trained weights: from this node's host memory, or fetched once per node
            inst.version = self.versions[spec.tracks]  # type: ignore[index]
            tier, read = self._read_to_host(inst.node, spec, spec.wake_bytes)
            if tier != "dram":
                inst.tier = f"sleep+{tier}"
            if read is not None:
                yield read
        if free_at > self.env.now:
            yield self.env.timeout(free_at - self.env.now)
        yield self.pool.start(spec.wake_bytes, self._pcie(inst.slots))
        inst.load_s = self.env.now - t0
        self.wake_time_s += self.env.now - inst.periods[-1][1]
        self._ready(inst)

    def _refresh(self, inst: Instance):
        """A resident instance whose trained weights are stale fetches the newest before it computes."""
        spec = inst.spec
        inst.version = self.versions[spec.tracks]  # type: ignore[index]
        _tier, read = self._read_to_host(inst.node, spec, spec.wake_bytes)
        if read is not None:
            yield read
        yield self.pool.start(spec.wake_bytes, self._pcie(inst.slots))
        if inst.state != "released":
            self._deliver(inst)

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
            if self._stale(inst):  # weights were published while it loaded
                self.env.process(self._refresh(inst))
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
            self.trained.add(inst.spec.key)
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
        for s in inst.slots:
            if self.claims[s] is inst:
                self.claims[s] = None
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
        if not self._host_room(inst.node, nbytes, inst):
            self.release(inst)
            return self.env.now
        self.pinned[inst.node] += nbytes
        self._vacate(inst)
        inst.state = "asleep"
        self.sleeps += 1
        self._drain()
        return self.env.now + nbytes / (inst.gpus * self.cluster.host_bw)

    def _host_room(self, node: int, nbytes: float, keep: Instance) -> bool:
        if nbytes > self.host_budget:
            return False
        cache = self.dram[node]
        while cache and self.pinned[node] + sum(b for b, _ in cache.values()) + nbytes > self.host_budget:
            cache.popitem(last=False)
        if self.pinned[node] + nbytes <= self.host_budget:
            return True
        sleepers = sorted((i for i in self.instances if i.state == "asleep" and i.node == node and i is not keep), key=lambda i: i.idle_since)
        for old in sleepers:
            self.release(old)
            if self.pinned[node] + nbytes <= self.host_budget:
                return True
        return False

    def _cache(self, node: int, key: str, nbytes: float, version: int) -> None:
        cache = self.dram[node]
        cache.pop(key, None)
        cache[key] = (nbytes, version)
        room = self.host_budget - self.pinned[node]
        while sum(b for b, _ in cache.values()) > room and len(cache) > 1:
            cache.popitem(last=False)

    def _expire(self, inst: Instance, token: int) -> None:
        if inst.state in ("idle", "asleep") and inst.token == token:
            self.release(inst)

    def release(self, inst: Instance) -> None:
        if inst.state == "released":
            return
        self._stop_busy(inst)
        if inst.state == "asleep":
            self.pinned[inst.node] -= inst.spec.wake_bytes
        else:
            self._vacate(inst)
        if inst.spec.kind == "trainer" and inst.spec.key in self.trained and not inst.crashed:
            self._cache(inst.node, inst.spec.key, inst.spec.load_bytes, 0)  # its state is checkpointed to host
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
                pending, self.pending = self.pending, []
                for req in pending:
                    if req.deadline_s >= self.env.now and not self._serve(req):
                        self.pending.append(req)
                if not self._redrain:
                    break
        finally:
            self._draining = False

    def shutdown(self) -> None:
        """The job is over: every instance still alive is released now."""
        self.pending.clear()
        self.scheduled.clear()
        for inst in list(self.instances):
            self.release(inst)

    # ------------------------------------------------------------------ trained weights
    def publish(self, tracks: str, model, node: int, nbytes: float) -> None:
        """A trainer wrote new `tracks` weights of `model` to its node's host DRAM: later loads fetch them there."""
        self.versions[tracks] = self.versions.get(tracks, 0) + 1
        self.sources[tracks] = node
        key = f"{tracks}@{model.name}"
        for n, cache in self.dram.items():  # older copies are stale
            if n != node:
                cache.pop(key, None)
        self._cache(node, key, nbytes, self.versions[tracks])

    def push(self, tracks: str) -> list[Instance]:
        """The trainer pushes the new weights to the resident idle instances that serve them; returns them."""
        ver = self.versions.get(tracks, 0)
        out = [i for i in self.instances if i.state == "idle" and i.spec.tracks == tracks]
        for i in out:
            i.version = ver
        return out

    # ------------------------------------------------------------------ what schedulers may read
    def start_estimates_s(self, spec: FunctionSpec, count: int, node: int | None = None) -> tuple[StartCost, ...]:
        """What each of `count` new requests of `spec` would cost to start if asked now, cheapest first: 0 s for
        a resident idle instance, a wake for a sleeping one, a cold start for the rest (without contention)."""
        host = self.cluster.host_bw * spec.gpus
        options = []
        for i in self.instances:
            if i.spec.role != spec.role or i.spec.key != spec.key or i.gpus != spec.gpus or i.claimed:
                continue
            refresh = spec.wake_bytes / host if self._stale(i) else 0.0
            if i.state in ("idle", "loading"):
                options.append(StartCost(refresh, "resident"))
            elif i.state == "asleep":
                options.append(StartCost(self.cfg.wake_s + spec.wake_bytes / host + refresh, "asleep"))
        options.sort(key=lambda c: c.seconds)
        cs = self.cfg.cold_start
        n = node if node is not None else 0
        nbytes = self._cold_bytes(spec)
        key, ver = self._source(spec)
        entry = self.dram[n].get(key)
        read = 0.0
        if not (entry is not None and entry[1] == ver) and cs.weights_from != "dram":
            src = self.sources.get(spec.tracks) if (spec.tracks and ver > 0) else None
            if src is None:
                read = nbytes / self._link_bandwidth((cs.weights_from,))
            elif src != n:
                read = nbytes / self.cluster.inter_bw
        cold = StartCost(cs.container_s + read + nbytes / host + cs.engine_init_s, "cold")
        return tuple((options + [cold] * count)[:count])

    def free_slots(self) -> tuple[Slot, ...]:
        """GPUs a new work request could compute on now: not claimed (memory sharing), or empty (exclusive)."""
        if self.shared:
            return tuple(s for s in self.slots if self.claims[s] is None)
        return tuple(s for s in self.slots if not self.residents[s])

    def warm_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.instances:
            if inst.state == "idle":
                counts[inst.role] = counts.get(inst.role, 0) + 1
        return counts

    def resident_bytes(self) -> dict[Slot, float]:
        return dict(self.used)

    # ------------------------------------------------------------------ records
    def records(self, billing) -> tuple[list[InstanceRecord], list[BilledInterval]]:
        """Instance rows and the billed intervals (per instance when exclusive, per GPU when shared)."""
        periods = []
        for idx, inst in enumerate(self.instances):
            for slots, start, ready, end in inst.periods:
                end = end if end == end else inst.released_s
                bill_from = start if billing.bill_cold_start else (ready if ready == ready else end)
                periods.append((idx, slots, bill_from, end))
        if self.shared:
            intervals, owed = shared_intervals(periods, billing, {k: i.work for k, i in enumerate(self.instances)})
        else:
            intervals, owed = exclusive_intervals(periods, billing)
        by_owner: dict[int, list] = {}
        for p in periods:
            by_owner.setdefault(p[0], []).append(p)
        out = []
        for idx, inst in enumerate(self.instances):
            mine = by_owner.get(idx, [])
            ready = inst.ready_s if inst.ready_s == inst.ready_s else inst.released_s
            out.append(
                InstanceRecord(
                    inst.instance_id, inst.role, inst.slots, inst.requested_s, ready, inst.released_s,
                    mine[0][2] if mine else inst.released_s, cold_start=inst.cold_start,
                    queued_s=inst.placed_s - inst.requested_s, load_tier=inst.tier, crashed=inst.crashed,
                    wakes=inst.wakes, resident_s=sum(p[3] - p[2] for p in mine), billed_gpu_s=owed.get(idx, 0.0),
                )  # fmt: skip
            )
        return out, intervals

    def residency(self) -> list[tuple[str, tuple[Slot, ...], float, float, float]]:
        """(instance, GPUs, bytes per GPU, start, end) of every resident period (memory checks, plots)."""
        return [
            (i.instance_id, slots, self.footprint(i.spec), start, end if end == end else i.released_s)
            for i in self.instances
            for slots, start, _ready, end in i.periods
        ]
