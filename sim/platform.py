"""Where GPUs come from and how they are billed: instance lifetimes and the billing ledger.

Serverful (this module's core part): a fixed set of GPUs is held from the start to the end of the run
and every GPU is billed for the whole wall time, busy or idle, as one instance per GPU. Billing rounds an
instance's billed time up to `billing.granularity_s` and to at least `billing.minimum_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.config import BillingConfig
from sim.schedulers.base import Slot


class _OnSlots:
    """Node and GPU count of something that holds `slots` (whole GPUs of one node)."""

    __slots__ = ()
    slots: tuple[Slot, ...]

    @property
    def node(self) -> int:
        return self.slots[0].node

    @property
    def gpus(self) -> int:
        return len(self.slots)


@dataclass
class InstanceRecord(_OnSlots):
    """One instance lifetime: GPUs held from `requested_s` (billing from `bill_from_s`) to `released_s`."""

    instance_id: str
    role: str
    slots: tuple[Slot, ...]
    requested_s: float
    ready_s: float
    released_s: float
    bill_from_s: float
    cold_start: bool = False
    queued_s: float = 0.0
    load_tier: str = ""
    crashed: bool = False


def billed_seconds(duration_s: float, billing: BillingConfig) -> float:
    """Billed time for one instance lifetime: rounded up to the granularity, at least the minimum."""
    if duration_s <= 0:
        return billing.minimum_s
    units = math.ceil(duration_s / billing.granularity_s - 1e-9)
    return max(billing.minimum_s, units * billing.granularity_s)


def serverful_instances(slots: list[Slot], end_s: float, role: str = "colocated") -> list[InstanceRecord]:
    """Every GPU held for the whole run."""
    return [
        InstanceRecord(f"gpu-n{s.node}g{s.gpu}", role, (s,), 0.0, 0.0, end_s, 0.0, cold_start=False) for s in slots
    ]


# =============================================================================================== serverless
# Lifecycle: requested -> (queued) -> cold_starting -> warm_idle <-> busy -> released (or crashed).

DRAM_CACHE_FRACTION = 0.8  # share of a node's host DRAM usable as a weight cache (assumption, docs/model.md)


class Instance(_OnSlots):
    """One serverless function instance: whole GPUs of one node, one role and model."""

    __slots__ = (
        "instance_id", "role", "model", "slots", "state", "requested_s", "placed_s", "ready_s", "released_s",
        "bill_from_s", "cold_start", "busy_s", "busy_since", "idle_token", "on_crash", "crashed", "load_s", "tier",
    )  # fmt: skip

    def __init__(self, instance_id: str, role: str, model: str, slots: tuple[Slot, ...], requested_s: float):
        self.instance_id, self.role, self.model, self.slots = instance_id, role, model, slots
        self.state = "cold_starting"
        self.requested_s = requested_s
        self.placed_s = requested_s
        self.ready_s = float("nan")
        self.released_s = float("nan")
        self.bill_from_s = requested_s
        self.cold_start = True
        self.busy_s = 0.0
        self.busy_since: float | None = None
        self.idle_token = 0
        self.on_crash = None
        self.crashed = False
        self.load_s = 0.0
        self.tier = ""


class ServerlessPlatform:
    """Places, cold-starts, keeps warm, bills and (optionally) crashes function instances.

    Placement (default policy): a warm idle instance of the same role, model and size is reused, on the
    preferred node if there is one there, else anywhere; otherwise a cold start on the preferred node if
    it has room, else on the nearest node with room; otherwise idle warm instances are evicted (least
    recently used first) to make room; otherwise the request waits in a FIFO queue.
    """

    def __init__(self, env, cluster, cfg, rng, recorder):
        self.env = env
        self.cluster = cluster
        self.cfg = cfg
        self.rng = rng
        self.recorder = recorder
        self.free: dict[int, list[int]] = {n: list(range(cluster.gpus_per_node)) for n in range(cluster.nodes)}
        self.instances: list[Instance] = []
        self.idle: dict[str, Instance] = {}  # instance_id -> warm idle instance (insertion order = LRU)
        self.queue: list[tuple] = []
        self.dram: dict[int, dict[str, float]] = {n: {} for n in range(cluster.nodes)}  # node -> model -> bytes (LRU)
        self.dram_capacity = cluster.gpu.host_memory_bytes * DRAM_CACHE_FRACTION
        self.version = 0  # bumped whenever free GPUs or the warm pool change (views cache on it)
        self.keep_alive_s = cfg.keep_alive_s  # a scheduler may retune it (GenerationPlan.keep_alive_s)
        self.failures = 0
        self.prewarms = 0
        self.wakes = 0
        self.sleepers: list[tuple[str, str, int, int, float]] = []  # (role, model, gpus, node, expires)
        self.wasted_gpu_s = 0.0
        self.queue_wait_s = 0.0
        self.weight_sources: dict[str, int] = {}  # model -> node whose host DRAM holds the newest weights

    # ------------------------------------------------------------------ requests
    def acquire(self, role: str, model, gpus: int, node: int | None = None, load_bytes: float | None = None):
        """An event that succeeds with a ready Instance (warm reuse, or after placement and a cold start)."""
        ev = self.env.event()
        if gpus < 1 or gpus > self.cluster.gpus_per_node:
            raise ValueError(f"{role}: an instance needs 1..{self.cluster.gpus_per_node} GPUs of one node, asked for {gpus}")
        warm = self._warm(role, model.name, gpus, node)
        if warm is not None:
            self.version += 1
            del self.idle[warm.instance_id]
            warm.state = "busy"
            warm.idle_token += 1
            ev.succeed(warm)
            return ev
        request = (ev, role, model, gpus, node, load_bytes, self.env.now)
        if not self._place(request):
            self.queue.append(request)
        return ev

    def prewarm(self, role: str, model, gpus: int, node: int | None = None, load_bytes: float | None = None) -> bool:
        """Start an instance now that waits warm for a later request; skipped (False) if no GPU is free."""
        if self._warm(role, model.name, gpus, node) is not None:
            return False
        if self.cfg.sleep_idle and any(z[0] == role and z[1] == model.name and z[2] == gpus and z[4] > self.env.now for z in self.sleepers):
            return False  # a sleeping instance wakes faster than any pre-warm
        target = next((n for n in self._nodes_for(node) if len(self.free[n]) >= gpus), None)
        if target is None:
            return False
        ev = self.env.event()
        ev.callbacks.append(lambda e: self.end(e.value))  # ready -> warm idle, keep-alive starts
        self.prewarms += 1
        return self._place((ev, role, model, gpus, target, load_bytes, self.env.now))

    def _warm(self, role: str, model: str, gpus: int, node: int | None) -> Instance | None:
        fallback = None
        for inst in self.idle.values():
            if inst.role == role and inst.model == model and inst.gpus == gpus:
                if node is None or inst.node == node:
                    return inst
                fallback = fallback or inst
        return fallback

    def _nodes_for(self, node: int | None) -> list[int]:
        return self.cluster.nodes_by_distance(node if node is not None else 0)

    def _sleeper(self, role: str, model: str, gpus: int, node: int | None) -> int | None:
        """Index of a sleeping instance that matches and whose node has the GPUs free now."""
        now = self.env.now
        self.sleepers = [z for z in self.sleepers if z[4] > now]
        best = None
        for k, (r, m, g, n, _) in enumerate(self.sleepers):
            if r == role and m == model and g == gpus and len(self.free[n]) >= gpus:
                if node is None or n == node:
                    return k
                best = k if best is None else best
        return best

    def _place(self, request) -> bool:
        ev, role, model, gpus, node, load_bytes, asked = request
        sleeping = self._sleeper(role, model.name, gpus, node) if self.cfg.sleep_idle else None
        if sleeping is not None:
            node = self.sleepers.pop(sleeping)[3]
        target = next((n for n in self._nodes_for(node) if len(self.free[n]) >= gpus), None)
        if target is None:
            target = self._evict_for(gpus, node)
            if target is None:
                return False
        self.version += 1
        idx = [self.free[target].pop(0) for _ in range(gpus)]
        slots = tuple(Slot(target, i) for i in idx)
        inst = Instance(f"{role}-{len(self.instances)}", role, model.name, slots, asked)
        inst.placed_s = self.env.now
        self.queue_wait_s += self.env.now - asked
        # billing starts when the instance is placed and its cold start begins (a queued request holds no
        # GPU and is not billed), or when it is ready if cold starts are not billed
        inst.bill_from_s = self.env.now if self.cfg.billing.bill_cold_start else float("nan")
        self.instances.append(inst)
        if sleeping is not None and target == node:  # wake: no container/engine start, weights reloaded
            inst.cold_start = False
            tier, inst.load_s = self.load(target, gpus, model, model.weight_bytes if load_bytes is None else load_bytes)
            inst.tier = "sleep" if tier == "dram" else f"sleep+{tier}"  # its host copy, or newer weights fetched
            duration = self.cfg.wake_s + inst.load_s
            self.wakes += 1
        else:
            duration = self.cold_start_s(inst, model, load_bytes)
        self.env.timeout(duration).callbacks.append(lambda _e, i=inst, m=model, b=load_bytes: self._ready(i, m, b, ev))
        return True

    def _evict_for(self, gpus: int, node: int | None) -> int | None:
        """Release idle warm instances (LRU first) on the best node until `gpus` are free there."""
        for n in self._nodes_for(node):
            victims = [i for i in self.idle.values() if i.node == n]
            if len(self.free[n]) + sum(v.gpus for v in victims) < gpus:
                continue
            for v in victims:
                if len(self.free[n]) >= gpus:
                    break
                self.release(v)
            return n
        return None

    def load(self, node: int, gpus: int, model, nbytes: float) -> tuple[str, float]:
        """(tier, seconds) to bring `nbytes` of `model` to `gpus` GPUs of `node` from the nearest copy.

        The node's DRAM cache holds the newest weights (a publish drops stale copies elsewhere); weights
        published on another node come over the network; otherwise the configured tier.
        """
        cs = self.cfg.cold_start
        source = self.weight_sources.get(model.name)
        per_gpu_pcie = self.cluster.host_bw * gpus
        if model.name in self.dram[node] or source == node or (source is None and cs.weights_from == "dram"):
            return "dram", nbytes / per_gpu_pcie
        if source is not None:  # newest weights sit in another node's DRAM: fetch over the network
            bw = self.cluster.bottleneck_bytes_per_s(("host", source), ("host", node))
            return f"node{source}", nbytes / min(bw, per_gpu_pcie)
        if cs.weights_from == "ssd":
            return "ssd", nbytes / min(self.cfg.storage.ssd_bytes_per_s, per_gpu_pcie)
        return "remote", nbytes / min(self.cfg.storage.remote_bytes_per_s, per_gpu_pcie)

    def cold_start_s(self, inst: Instance, model, load_bytes: float | None) -> float:
        """container + weight load (bytes over the tier's bandwidth) + engine init."""
        nbytes = model.weight_bytes if load_bytes is None else load_bytes
        inst.tier, inst.load_s = self.load(inst.node, inst.gpus, model, nbytes)
        cs = self.cfg.cold_start
        return cs.container_s + inst.load_s + cs.engine_init_s

    def _ready(self, inst: Instance, model, load_bytes, ev) -> None:
        inst.ready_s = self.env.now
        if inst.bill_from_s != inst.bill_from_s:  # NaN: billing starts when ready
            inst.bill_from_s = self.env.now
        inst.state = "busy"
        self._cache(inst.node, model.name, model.weight_bytes if load_bytes is None else load_bytes)
        if self.cfg.failures.mtbf_s:
            ttf = float(self.rng.exponential(self.cfg.failures.mtbf_s))
            self.env.timeout(ttf).callbacks.append(lambda _e, i=inst: self._crash(i))
        ev.succeed(inst)

    def _cache(self, node: int, model: str, nbytes: float) -> None:
        cache = self.dram[node]
        cache.pop(model, None)
        cache[model] = nbytes
        while sum(cache.values()) > self.dram_capacity and len(cache) > 1:
            cache.pop(next(iter(cache)))

    def publish_weights(self, model: str, node: int, nbytes: float) -> None:
        """The trainer wrote new weights to its node's host DRAM: later cold starts fetch them from there."""
        self.weight_sources[model] = node
        for n in self.dram:  # older copies elsewhere are stale
            if n != node:
                self.dram[n].pop(model, None)
        self._cache(node, model, nbytes)

    # ------------------------------------------------------------------ work and idleness
    def begin(self, inst: Instance) -> None:
        if inst.busy_since is None:
            inst.busy_since = self.env.now
        inst.state = "busy"

    def end(self, inst: Instance) -> None:
        """Work finished: the instance goes warm idle and is released after keep_alive_s unless reused."""
        if inst.state == "released":
            return
        if inst.busy_since is not None:
            inst.busy_s += self.env.now - inst.busy_since
            inst.busy_since = None
        inst.on_crash = None
        keep = self.keep_alive_s
        if self.cfg.sleep_idle and keep > 0:  # free the GPUs now; the process sleeps in host memory
            self.sleepers.append((inst.role, inst.model, inst.gpus, inst.node, self.env.now + keep))
            self.release(inst)
            return
        inst.state = "warm_idle"
        self.version += 1
        inst.idle_token += 1
        token = inst.idle_token
        self.idle[inst.instance_id] = inst
        if keep <= 0:
            self.release(inst)
        else:
            self.env.timeout(keep).callbacks.append(lambda _e, i=inst, t=token: self._expire(i, t))

    def retire(self, inst: Instance) -> None:
        """The scheduler released the instance: its GPUs and billing stop now (it sleeps if the platform lets idle instances sleep)."""
        if inst.state == "released":
            return
        if self.cfg.sleep_idle and self.keep_alive_s > 0:
            inst.on_crash = None
            self.sleepers.append((inst.role, inst.model, inst.gpus, inst.node, self.env.now + self.keep_alive_s))
        self.release(inst)

    def _expire(self, inst: Instance, token: int) -> None:
        if inst.state == "warm_idle" and inst.idle_token == token:
            self.release(inst)

    def release(self, inst: Instance) -> None:
        if inst.state == "released":
            return
        if inst.busy_since is not None:
            inst.busy_s += self.env.now - inst.busy_since
            inst.busy_since = None
        inst.state = "released"
        self.version += 1
        inst.released_s = self.env.now
        self.idle.pop(inst.instance_id, None)
        for s in inst.slots:
            self.free[s.node].append(s.gpu)
            self.free[s.node].sort()
        self._drain_queue()

    def _drain_queue(self) -> None:
        waiting, self.queue = self.queue, []
        for req in waiting:
            if not self._place(req):
                self.queue.append(req)

    def _crash(self, inst: Instance) -> None:
        if inst.state in ("released",) or inst.crashed:
            return
        inst.crashed = True
        self.failures += 1
        handler = inst.on_crash
        if inst.busy_since is not None:
            self.wasted_gpu_s += (self.env.now - inst.busy_since) * inst.gpus
        self.release(inst)
        if handler is not None:
            handler(inst)

    def shutdown(self) -> None:
        """The job is over: every instance still alive is released now."""
        for inst in list(self.instances):
            self.release(inst)

    def records(self) -> list[InstanceRecord]:
        out = []
        for inst in self.instances:
            ready = inst.ready_s if inst.ready_s == inst.ready_s else inst.released_s
            bill_from = inst.bill_from_s if inst.bill_from_s == inst.bill_from_s else inst.released_s
            out.append(
                InstanceRecord(
                    inst.instance_id, inst.role, inst.slots, inst.requested_s, ready, inst.released_s, bill_from,
                    cold_start=inst.cold_start, queued_s=inst.placed_s - inst.requested_s, load_tier=inst.tier,
                    crashed=inst.crashed,
                )  # fmt: skip
            )
        return out
