"""How a serverless instance gets its bytes onto its GPUs: cold starts, wakes, refreshes, and their estimates.

A cold start is container start + the read into the node's host DRAM (from its cache, another node's
published weights, or storage) + the copy to the GPUs over PCIe + engine init; a wake is `wake_s` + the
state back over PCIe; a refresh fetches newer trained weights for a resident instance. Concurrent loads
share the node's links (`sim.hardware.transfers`) and concurrent reads of one key on a node are one read.
`TrainedWeights` tracks which trained weights are newest and where. Which instance starts, and when, is
the platform's (`sim.resources.platform`); what is resident where is `sim.resources.residency`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import simpy

from sim.resources.instances import Instance
from sim.resources.residency import EPS_BYTES, HostMemory
from sim.resources.roles import FunctionSpec
from sim.schedulers.views import Slot, StartCost
from sim.hardware.transfers import TransferPool


def published_key(tracks: str, model_name: str) -> str:
    """Host-cache key of trained weights `tracks` ("actor", "critic") of a model."""
    return f"{tracks}@{model_name}"


class TrainedWeights:
    """Versions of the trained weights, the node holding the newest copy, and which trainers have trained."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}  # trained weights ("actor", "critic") -> version
        self.sources: dict[str, int] = {}  # trained weights -> node whose host DRAM holds the newest copy
        self.trained: set[str] = set()  # trainer keys whose optimizer state exists (they have trained)

    def publish(self, tracks: str, node: int) -> int:
        """A new version of `tracks` is on `node`; returns its version."""
        self.versions[tracks] = self.versions.get(tracks, 0) + 1
        self.sources[tracks] = node
        return self.versions[tracks]

    def current(self, spec: FunctionSpec) -> int:
        """The version of the trained weights `spec` serves (0: the checkpoint, or none tracked)."""
        return self.versions.get(spec.tracks, 0) if spec.tracks else 0

    def stale(self, inst: Instance) -> bool:
        t = inst.spec.tracks
        return t is not None and inst.version < self.versions.get(t, 0)

    def cold_bytes(self, spec: FunctionSpec) -> float:
        """A trainer restores its optimizer state once it has trained; before that it reads the checkpoint."""
        return spec.load_bytes if (spec.kind != "trainer" or spec.key in self.trained) else spec.first_load_bytes

    def source(self, spec: FunctionSpec) -> tuple[str, int]:
        """(host-cache key, version) of what a cold start of `spec` reads: trained weights published by a
        trainer, a trainer's own state, or else the model's checkpoint (shared by every role that starts
        from it, e.g. the reference and the first actor weights)."""
        ver = self.current(spec)
        if ver > 0:
            return published_key(spec.tracks, spec.model.name), ver  # type: ignore[arg-type]
        if spec.kind == "trainer" and spec.key in self.trained:
            return spec.key, 0
        return spec.model.name, 0


class Loader:
    """Runs loads as SimPy processes over the cluster's shared links; `on_loaded(inst)` when a cold start or
    wake is done, `on_refreshed(inst)` when a resident instance has fetched newer weights."""

    def __init__(
        self, env: simpy.Environment, cluster, cfg, host: HostMemory, weights: TrainedWeights,
        on_loaded: Callable[[Instance], None], on_refreshed: Callable[[Instance], None],
    ):  # fmt: skip
        self.env, self.cluster, self.cfg = env, cluster, cfg
        self.host, self.weights = host, weights
        self.on_loaded, self.on_refreshed = on_loaded, on_refreshed
        self.pool = TransferPool(env, self.link_bandwidth)
        self.reads: dict[tuple[int, str, int], tuple[simpy.Event, float]] = {}  # storage reads in flight
        self.wake_time_s = 0.0  # total time of wakes, from the start of each to ready

    def link_bandwidth(self, link) -> float:
        kind = link[0]
        if kind == "pcie":
            return self.cluster.host_bw
        if kind == "nic":
            return self.cluster.inter_bw
        if kind == "ssd":
            return self.cfg.storage.ssd_bytes_per_s
        return self.cfg.storage.remote_bytes_per_s

    @staticmethod
    def pcie(slots: tuple[Slot, ...]) -> dict:
        return {("pcie", s.node, s.gpu): 1.0 / len(slots) for s in slots}

    def cold(self, inst: Instance, free_at: float):
        """container -> storage (or network) into host DRAM -> host to GPUs -> engine init."""
        cs, spec = self.cfg.cold_start, inst.spec
        nbytes = self.weights.cold_bytes(spec)
        if cs.container_s > 0:
            yield self.env.timeout(cs.container_s)
        t0 = self.env.now
        inst.version = self.weights.current(spec)
        inst.tier, read = self.read_to_host(inst.node, spec, nbytes)
        if read is not None:
            yield read
        if free_at > self.env.now:  # the memory of instances put to sleep for it is being copied out
            yield self.env.timeout(free_at - self.env.now)
        yield self.pool.start(nbytes, self.pcie(inst.slots))
        inst.load_s = self.env.now - t0
        if cs.engine_init_s > 0:
            yield self.env.timeout(cs.engine_init_s)
        self.on_loaded(inst)

    def wake(self, inst: Instance, free_at: float):
        """wake_s, then the state back from host DRAM (newer trained weights fetched first if published elsewhere)."""
        spec = inst.spec
        if self.cfg.wake_s > 0:
            yield self.env.timeout(self.cfg.wake_s)
        t0 = self.env.now
        inst.tier = "sleep"
        if self.weights.stale(inst):  # newer trained weights: from this node's host memory, or fetched once per node
            inst.version = self.weights.versions[spec.tracks]  # type: ignore[index]
            tier, read = self.read_to_host(inst.node, spec, spec.wake_bytes)
            if tier != "dram":
                inst.tier = f"sleep+{tier}"
            if read is not None:
                yield read
        if free_at > self.env.now:
            yield self.env.timeout(free_at - self.env.now)
        yield self.pool.start(spec.wake_bytes, self.pcie(inst.slots))
        inst.load_s = self.env.now - t0
        self.wake_time_s += self.env.now - inst.periods[-1][1]
        self.on_loaded(inst)

    def refresh(self, inst: Instance):
        """A resident instance whose trained weights are stale fetches the newest before it computes."""
        spec = inst.spec
        inst.version = self.weights.versions[spec.tracks]  # type: ignore[index]
        _tier, read = self.read_to_host(inst.node, spec, spec.wake_bytes)
        if read is not None:
            yield read
        yield self.pool.start(spec.wake_bytes, self.pcie(inst.slots))
        if inst.state != "released":
            self.on_refreshed(inst)

    def read_to_host(self, node: int, spec: FunctionSpec, nbytes: float) -> tuple[str, simpy.Event | None]:
        """Where a load finds its bytes, and the read into this node's host DRAM (None: already there).

        The node's cache holds what was loaded or published there; trained weights newer than the
        storage copy come from the node they were published to; concurrent reads of one key are one read.
        """
        key, ver = self.weights.source(spec)
        if self.host.holds(node, key, ver, nbytes):
            self.host.touch(node, key)
            return "dram", None
        src = self.weights.sources.get(spec.tracks) if ver > 0 and spec.tracks else None
        if src == node or (src is None and self.cfg.cold_start.weights_from == "dram"):
            self.host.store(node, key, nbytes, ver)
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
        if inflight is not None and inflight[1] >= nbytes - EPS_BYTES:
            return tier, inflight[0]
        ev = self.pool.start(nbytes, usage)
        self.reads[k] = (ev, nbytes)

        def done(_e) -> None:
            if self.reads.get(k, (None,))[0] is ev:
                del self.reads[k]
            self.host.store(node, key, nbytes, ver)

        ev.callbacks.append(done)
        return tier, ev

    def estimates(self, spec: FunctionSpec, count: int, node: int | None, instances: Iterable[Instance]) -> tuple[StartCost, ...]:
        """What each of `count` new requests of `spec` would cost to start if asked now, cheapest first: 0 s for
        a resident idle instance, a wake for a sleeping one, a cold start for the rest (without contention)."""
        host = self.cluster.host_bw * spec.gpus
        options = []
        for i in instances:
            if not i.serves(spec) or i.claimed:
                continue
            refresh = spec.wake_bytes / host if self.weights.stale(i) else 0.0
            if i.state in ("idle", "loading"):
                options.append(StartCost(refresh, "resident"))
            elif i.state == "asleep":
                options.append(StartCost(self.cfg.wake_s + spec.wake_bytes / host + refresh, "asleep"))
        options.sort(key=lambda c: c.seconds)
        cs = self.cfg.cold_start
        n = node if node is not None else 0
        nbytes = self.weights.cold_bytes(spec)
        key, ver = self.weights.source(spec)
        read = 0.0
        if not self.host.holds(n, key, ver) and cs.weights_from != "dram":
            src = self.weights.sources.get(spec.tracks) if (spec.tracks and ver > 0) else None
            if src is None:
                read = nbytes / self.link_bandwidth((cs.weights_from,))
            elif src != n:
                read = nbytes / self.cluster.inter_bw
        cold = StartCost(cs.container_s + read + nbytes / host + cs.engine_init_s, "cold")
        return tuple((options + [cold] * count)[:count])
