"""The serverful GPU pool: which piece of work holds each GPU of a fixed cluster, refusing double booking.

Serverful leases (sim/resources/leases.py `ServerfulAllocator`) take exactly the GPUs a scheduler names;
this pool is what checks them. It models no queueing and no placement: a request for a held GPU is a
scheduler bug (`DoubleBookingError`, exit 2), never a wait. Serverless GPUs are the platform's
(sim/resources/platform.py).
"""

from __future__ import annotations

from sim.errors import DoubleBookingError
from sim.schedulers.views import Slot


class GpuPool:
    """Which work holds each GPU now; refuses double booking."""

    def __init__(self, slots: list[Slot]):
        self.holder: dict[Slot, str | None] = {s: None for s in slots}
        self._free: tuple[Slot, ...] | None = None

    def acquire(self, slots: tuple[Slot, ...], who: str) -> None:
        for s in slots:
            if s not in self.holder:
                raise DoubleBookingError(f"{who}: GPU {s} does not exist in this cluster")
            if self.holder[s] is not None:
                raise DoubleBookingError(f"{who}: GPU n{s.node}g{s.gpu} is already held by {self.holder[s]}")
        if len(set(slots)) != len(slots):
            raise DoubleBookingError(f"{who}: the same GPU is listed twice")
        for s in slots:
            self.holder[s] = who
        self._free = None

    def release(self, slots: tuple[Slot, ...]) -> None:
        for s in slots:
            self.holder[s] = None
        self._free = None

    def free(self) -> tuple[Slot, ...]:
        if self._free is None:
            self._free = tuple(s for s, h in self.holder.items() if h is None)
        return self._free
