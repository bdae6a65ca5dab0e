"""Where serverless instances are resident: the GPU memory ledger and the host-DRAM budget of each node.

`GpuLedger` knows what is resident on each GPU, which instance computes there (claims), whether a
function fits, which GPUs to place it on and which idle instances must make room (least recently used
first). `HostMemory` holds each node's sleeping instances and its cache of weights within
`DRAM_CACHE_FRACTION` of the node's host memory. Both only keep books and choose; putting an instance to
sleep or releasing it (and what follows) is the platform's (`sim.resources.platform`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from sim.hardware.memory import InfeasibleError
from sim.resources.instances import Instance, Request
from sim.resources.roles import FunctionSpec
from sim.schedulers.views import Slot

DRAM_CACHE_FRACTION = 0.8  # share of a node's host DRAM usable for cached weights and sleepers (assumption, docs/model.md)
EPS_BYTES = 1.0


class GpuLedger:
    """Resident bytes, residents and compute claims per GPU; placement and the choice of sleep victims.

    `shared` (gpu_sharing: memory): an instance holds its own footprint and several share a GPU;
    otherwise (exclusive) an instance's footprint is the whole GPU.
    """

    def __init__(self, cluster, shared: bool):
        self.cluster = cluster
        self.shared = shared
        self.capacity = cluster.gpu.memory_bytes
        self.slots = [Slot(n, g) for n in range(cluster.nodes) for g in range(cluster.gpus_per_node)]
        self.used = {s: 0.0 for s in self.slots}  # resident bytes per GPU
        self.residents: dict[Slot, list[Instance]] = {s: [] for s in self.slots}
        self.claims: dict[Slot, Instance | None] = {s: None for s in self.slots}  # who computes (or will)

    def footprint(self, spec: FunctionSpec) -> float:
        """GPU bytes per GPU an instance of `spec` holds: its own need, or the whole GPU when exclusive."""
        return spec.resident_bytes_per_gpu if self.shared else self.capacity

    def check_fits(self, spec: FunctionSpec) -> None:
        """Refuse a function that can never be placed: too many GPUs for a node, or too big for a GPU."""
        if spec.gpus < 1 or spec.gpus > self.cluster.gpus_per_node:
            raise ValueError(f"{spec.role}: an instance needs 1..{self.cluster.gpus_per_node} GPUs of one node, asked for {spec.gpus}")
        if spec.resident_bytes_per_gpu > self.capacity:
            raise InfeasibleError(
                f"{spec.role}: an instance of {spec.model.name} on {spec.gpus} GPU(s) needs {spec.resident_bytes_per_gpu / 1e9:.1f} GB "
                f"per GPU, but a {self.cluster.gpu.name} has {self.capacity / 1e9:.1f} GB; give the role more GPUs (a larger FSDP group) "
                f"or use GPUs with more memory"
            )

    # ------------------------------------------------------------------ compute claims
    def compute_free(self, slots: tuple[Slot, ...], inst: Instance | None = None) -> bool:
        """No other instance computes (or is about to) on any of `slots`."""
        return all(self.claims[s] is None or self.claims[s] is inst for s in slots)

    def claim(self, inst: Instance) -> None:
        for s in inst.slots:
            self.claims[s] = inst

    def unclaim(self, inst: Instance) -> None:
        for s in inst.slots:
            if self.claims[s] is inst:
                self.claims[s] = None

    # ------------------------------------------------------------------ memory
    @staticmethod
    def victim_ok(inst: Instance, work: bool) -> bool:
        """An idle instance may make room; one kept by a pre-warm only for work."""
        return inst.state == "idle" and not inst.claimed and (work or not inst.reserved)

    def victims(self, slots: tuple[Slot, ...], need: float, work: bool, exclude: Instance | None = None) -> list[Instance] | None:
        """Idle instances to put away (least recently used first) so that `need` bytes fit on each GPU; None: impossible."""
        free = {s: self.capacity - self.used[s] for s in slots}
        chosen: list[Instance] = []
        for s in slots:
            if free[s] >= need - EPS_BYTES:
                continue
            for v in sorted(self.residents[s], key=lambda i: i.idle_since):
                if v is exclude or v in chosen or not self.victim_ok(v, work):
                    continue
                chosen.append(v)
                for t in v.slots:
                    if t in free:
                        free[t] += self.footprint(v.spec)
                if free[s] >= need - EPS_BYTES:
                    break
            if free[s] < need - EPS_BYTES:
                return None
        return chosen

    def find_gpus(self, req: Request, node: int | None, only_node: bool = False) -> tuple[tuple[Slot, ...], list[Instance]] | None:
        """GPUs on one node (the asked one first, then the nearest) where `req` fits, and what must make room.

        On a node, GPUs with room come before GPUs that need victims; the asked GPUs first, then the
        emptiest. A GPU claimed for work is skipped, except by a pre-warm when memory is shared. A pre-warm
        goes only to the node it asked for (node 0 when it asked for none); an exclusive pre-warm never evicts.
        """
        spec, work = req.spec, req.work
        need = self.footprint(spec)
        pref = set(req.slots)
        if only_node or (not work and node is not None):
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
                if free >= need - EPS_BYTES:
                    cands.append((s not in pref, 0, -free, g, s))
                elif work or self.shared:  # exclusive pre-warms never evict
                    room = free + sum(self.footprint(v.spec) for v in self.residents[s] if self.victim_ok(v, work))
                    if room >= need - EPS_BYTES:
                        cands.append((s not in pref, 1, -free, g, s))
            if len(cands) < spec.gpus:
                continue
            chosen = tuple(sorted((c[4] for c in sorted(cands)[: spec.gpus]), key=lambda s: s.gpu))
            victims = self.victims(chosen, need, work)
            if victims is not None:
                return chosen, victims
        return None

    def occupy(self, inst: Instance, slots: tuple[Slot, ...], now: float) -> None:
        """`inst` becomes resident on `slots` from `now`: a new resident period."""
        inst.slots = slots
        fp = self.footprint(inst.spec)
        for s in slots:
            self.used[s] += fp
            self.residents[s].append(inst)
        inst.periods.append([slots, now, float("nan"), float("nan")])

    def vacate(self, inst: Instance, now: float) -> None:
        """`inst` leaves its GPUs at `now` (its claim with it): its resident period ends."""
        fp = self.footprint(inst.spec)
        for s in inst.slots:
            self.used[s] -= fp
            self.residents[s].remove(inst)
            if self.claims[s] is inst:
                self.claims[s] = None
        inst.periods[-1][3] = now

    def free_slots(self) -> tuple[Slot, ...]:
        """GPUs a new work request could compute on now: not claimed (memory sharing), or empty (exclusive)."""
        if self.shared:
            return tuple(s for s in self.slots if self.claims[s] is None)
        return tuple(s for s in self.slots if not self.residents[s])


class HostMemory:
    """Each node's host DRAM for the platform: bytes pinned by sleeping instances and an LRU cache of weights.

    The cache maps a key (a checkpoint, published trained weights, a trainer's state) to (bytes, version);
    it gives way to sleepers. Both live within `budget_bytes` per node.
    """

    def __init__(self, nodes: int, budget_bytes: float):
        self.budget_bytes = budget_bytes
        self.pinned = {n: 0.0 for n in range(nodes)}  # host bytes of sleeping instances
        self.cache: dict[int, OrderedDict[str, tuple[float, int]]] = {n: OrderedDict() for n in range(nodes)}

    def cached_bytes(self, node: int) -> float:
        return sum(b for b, _ in self.cache[node].values())

    def make_room(self, node: int, nbytes: float, oldest_sleepers: Callable[[], Iterable[Instance]], release: Callable[[Instance], None]) -> bool:
        """Room to pin `nbytes` on `node`: drop cached weights (least recently used first), then release the
        oldest sleepers (`release` must unpin them) until it fits; False if it cannot."""
        if nbytes > self.budget_bytes:
            return False
        cache = self.cache[node]
        while cache and self.pinned[node] + self.cached_bytes(node) + nbytes > self.budget_bytes:
            cache.popitem(last=False)
        if self.pinned[node] + nbytes <= self.budget_bytes:
            return True
        for old in oldest_sleepers():
            release(old)
            if self.pinned[node] + nbytes <= self.budget_bytes:
                return True
        return False

    def store(self, node: int, key: str, nbytes: float, version: int) -> None:
        """Cache `key` on `node` as the most recent entry; older entries give way to fit beside the sleepers
        (the newest always stays)."""
        cache = self.cache[node]
        cache.pop(key, None)
        cache[key] = (nbytes, version)
        room = self.budget_bytes - self.pinned[node]
        while sum(b for b, _ in cache.values()) > room and len(cache) > 1:
            cache.popitem(last=False)

    def holds(self, node: int, key: str, version: int, nbytes: float | None = None) -> bool:
        """Whether `node` caches `version` of `key` (with at least `nbytes`, when given). Changes nothing."""
        entry = self.cache[node].get(key)
        return entry is not None and entry[1] == version and (nbytes is None or entry[0] >= nbytes - EPS_BYTES)

    def touch(self, node: int, key: str) -> None:
        """`key` was just used on `node`: it is the last to give way."""
        self.cache[node].move_to_end(key)

    def drop_elsewhere(self, key: str, node: int) -> None:
        """`key` changed on `node`: other nodes' copies are stale."""
        for n, cache in self.cache.items():
            if n != node:
                cache.pop(key, None)
