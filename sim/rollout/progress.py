"""The `GenerationProgress` snapshot a rollout phase hands its scheduler after completions.

The per-replica counts are copied at once (O(replicas)). The per-sample detail (each replica's unfinished
samples, their contexts) would cost O(samples) at every completion, so `LiveDetail` reads the live
replicas while the scheduler is being called, when nothing can change, and `freeze()` copies the values if
the scheduler still holds the detail (through the snapshot, a bound method of it, or the detail itself)
once its call returns (sim/rollout/phase.py `_consult`). Either way
the scheduler sees the values of one instant. Left out: anything that changes the phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.schedulers.views import GenerationProgress, ProgressDetail

if TYPE_CHECKING:
    from sim.rollout.replica import Replica, SeqTable


class LiveDetail(ProgressDetail):
    """Each replica's unfinished samples and their contexts, read from the live replicas until `freeze()`."""

    __slots__ = ("_reps", "_n", "_backlog", "_table", "__weakref__")  # (the phase asks whether it is still held)

    def __init__(self, replicas: "list[Replica | None]", backlog: dict[int, list[int]], table: "SeqTable"):
        super().__init__()
        # the phase's own list, not a copy: nothing changes it before freeze() or the end of the call
        self._reps: "list[Replica | None] | None" = replicas
        self._n = len(replicas)
        self._backlog, self._table = backlog, table

    def queue(self, replica: int) -> tuple[int, ...]:
        reps = self._reps
        if reps is None:
            return super().queue(replica)
        if not 0 <= replica < self._n:
            return ()
        rep = reps[replica]
        return (*rep.running, *rep.waiting) if rep is not None else tuple(self._backlog.get(replica, ()))

    def context(self, sample: int) -> int:
        reps = self._reps
        if reps is None:
            return super().context(sample)
        table = self._table
        r = table.replica_of[sample]
        rep = reps[r] if 0 <= r < self._n else None
        return table.prompt_tokens[sample] + (rep.generated_now(sample) if rep is not None else table.generated[sample])

    def freeze(self) -> None:
        """Copy the values now and let go of the replicas (before the phase changes anything)."""
        if self._reps is None:
            return
        queues = tuple(self.queue(r) for r in range(self._n))
        contexts = {s: self.context(s) for q in queues for s in q}
        self._reps, self._backlog, self._table = None, {}, None  # type: ignore[assignment]
        self._queues, self._contexts = queues, contexts


__all__ = ["GenerationProgress", "LiveDetail"]
