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


@dataclass
class InstanceRecord:
    """One instance lifetime: GPUs held from `requested_s` (billing from `bill_from_s`) to `released_s`."""

    instance_id: str
    role: str
    slots: tuple[Slot, ...]
    requested_s: float
    ready_s: float
    released_s: float
    bill_from_s: float
    cold_start: bool = False

    @property
    def node(self) -> int:
        return self.slots[0].node

    @property
    def gpus(self) -> int:
        return len(self.slots)


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
