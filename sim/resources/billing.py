"""What is billed: instance lifetimes, billed intervals of GPUs, rounding, and sharing a GPU's bill.

Three deployments, one ledger format (`BilledInterval`: GPUs held from `start_s` to `end_s`):
- serverful: every GPU of the cluster is held for the whole run;
- serverless, exclusive GPUs (hosted functions): each instance's resident periods, per instance
  (from placement, or from ready when `billing.bill_cold_start` is off, to sleep or release);
- serverless, memory sharing (self-hosted): a GPU is billed while any of the job's instances holds
  memory on it (resident or starting), counted once however many share it; a GPU whose instances are
  all asleep is not billed. Each billed interval is split among the instances resident in it, in
  proportion to their time there, so that the instances' billed GPU-seconds add up to the bill.
Each billed interval is rounded up to `billing.granularity_s`, and to at least `billing.minimum_s`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sim.config.models import BillingConfig
from sim.resources.instances import Instance, OnSlots
from sim.schedulers.views import Slot


@dataclass
class InstanceRecord(OnSlots):
    """One instance lifetime: requested at `requested_s`, billed from `bill_from_s`, released at `released_s`.

    `billed_gpu_s` is set when the bill is not simply the lifetime (sleeping periods, shared GPUs).
    """

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
    wakes: int = 0
    resident_s: float | None = None  # time holding GPU memory (default: the billed lifetime)
    billed_gpu_s: float | None = None


@dataclass(frozen=True)
class BilledInterval:
    """GPUs held (and billed) together from `start_s` to `end_s`."""

    gpus: int
    start_s: float
    end_s: float


def billed_seconds(duration_s: float, billing: BillingConfig) -> float:
    """Billed time for one billed interval: rounded up to the granularity, at least the minimum."""
    if duration_s <= 0:
        return billing.minimum_s
    units = math.ceil(duration_s / billing.granularity_s - 1e-9)
    return max(billing.minimum_s, units * billing.granularity_s)


def serverful_instances(slots: list[Slot], end_s: float, role: str = "colocated") -> list[InstanceRecord]:
    """Every GPU held for the whole run."""
    return [InstanceRecord(f"gpu-n{s.node}g{s.gpu}", role, (s,), 0.0, 0.0, end_s, 0.0, cold_start=False) for s in slots]


def lifetime_intervals(records: list[InstanceRecord]) -> list[BilledInterval]:
    """One billed interval per instance: from its bill start to its release (serverful GPUs)."""
    return [BilledInterval(r.gpus, r.bill_from_s, r.released_s) for r in records]


def exclusive_intervals(periods: list[tuple[int, tuple[Slot, ...], float, float]], billing: BillingConfig) -> tuple[list[BilledInterval], dict[int, float]]:
    """Exclusive GPUs: each resident period (owner, slots, start, end) is billed on its own.

    Returns the billed intervals and each owner's billed GPU-seconds (rounded).
    """
    intervals, owed = [], defaultdict(float)
    for owner, slots, start, end in periods:
        intervals.append(BilledInterval(len(slots), start, end))
        owed[owner] += billed_seconds(end - start, billing) * len(slots)
    return intervals, dict(owed)


def shared_intervals(
    periods: list[tuple[int, tuple[Slot, ...], float, float]],
    billing: BillingConfig,
    busy: dict[int, list[tuple[float, float]]] | None = None,
) -> tuple[list[BilledInterval], dict[int, float]]:
    """Memory sharing: per GPU, the union of its residents' periods is billed once.

    Each union interval's billed seconds (rounded) are charged to the instance computing on the GPU while
    one is (`busy`: owner -> its work intervals), and otherwise split equally among the instances
    resident then; the interval's rounding is shared in proportion. Returns the billed intervals (one GPU
    each) and each owner's billed GPU-seconds.
    """
    busy = busy or {}
    by_gpu: dict[Slot, list[tuple[float, float, int]]] = defaultdict(list)
    for owner, slots, start, end in periods:
        for s in slots:
            by_gpu[s].append((start, end, owner))
    intervals: list[BilledInterval] = []
    owed: dict[int, float] = defaultdict(float)
    for slot in sorted(by_gpu, key=lambda s: (s.node, s.gpu)):
        spans = sorted(by_gpu[slot])
        group: list[tuple[float, float, int]] = []
        group_end = -math.inf
        for span in spans + [(math.inf, math.inf, -1)]:
            if group and span[0] > group_end:
                _bill_union(group, billing, busy, intervals, owed)
                group, group_end = [], -math.inf
            if span[2] >= 0:
                group.append(span)
                group_end = max(group_end, span[1])
    return intervals, dict(owed)


def _bill_union(
    group: list[tuple[float, float, int]],
    billing: BillingConfig,
    busy: dict[int, list[tuple[float, float]]],
    intervals: list[BilledInterval],
    owed: dict[int, float],
) -> None:
    """Bill one GPU's union interval and split it: the computing instance, else the residents equally."""
    start = min(g[0] for g in group)
    end = max(g[1] for g in group)
    intervals.append(BilledInterval(1, start, end))
    billed = billed_seconds(end - start, billing)
    owners = {o for _, _, o in group}
    edges = {start, end}
    for _, _, o in group:
        edges.update(t for a, b in busy.get(o, ()) for t in (a, b) if start < t < end)
    edges.update(t for s, e, _ in group for t in (s, e))
    shares: dict[int, float] = defaultdict(float)
    points = sorted(edges)
    for a, b in zip(points, points[1:]):
        mid = 0.5 * (a + b)
        here = [o for s, e, o in group if s <= mid < e]
        if not here:
            continue
        working = [o for o in here if any(x <= mid < y for x, y in busy.get(o, ()))]
        payers = working or here
        for o in payers:
            shares[o] += (b - a) / len(payers)
    total = sum(shares.values())
    if total <= 0:  # a zero-length stay still owes the minimum: split it equally
        for o in owners:
            owed[o] += billed / len(owners)
        return
    for o, share in shares.items():
        owed[o] += billed * share / total


def serverless_records(instances: Sequence[Instance], billing: BillingConfig, shared: bool) -> tuple[list[InstanceRecord], list[BilledInterval]]:
    """Instance rows and the billed intervals of a serverless run: per instance when exclusive, per GPU when
    shared. A resident period is billed from its start, or from ready without `billing.bill_cold_start`."""
    periods = []
    for idx, inst in enumerate(instances):
        for slots, start, ready, end in inst.periods:
            end = end if end == end else inst.released_s
            bill_from = start if billing.bill_cold_start else (ready if ready == ready else end)
            periods.append((idx, slots, bill_from, end))
    if shared:
        intervals, owed = shared_intervals(periods, billing, {k: i.work for k, i in enumerate(instances)})
    else:
        intervals, owed = exclusive_intervals(periods, billing)
    by_owner: dict[int, list] = {}
    for p in periods:
        by_owner.setdefault(p[0], []).append(p)
    out = []
    for idx, inst in enumerate(instances):
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
