"""Inference that starts on each finished sample (design.md section 5), during generation.

When a GenerationPlan carries `streaming_inference`, its role groups take their GPUs when generation
starts and each finished sample is queued to one group of every role (its assignment, or round-robin).
A group serves its queue in batches: whatever has arrived is processed as one forward pass (its time from
the performance model); new samples wait for the next batch. After the last sample is generated, the
groups drain what is left, and the inference phase ends when every group is done. A crashed instance
redoes the batch in flight on a new one. Work is only recorded, never lost: each sample is processed once
by each role.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import simpy

from sim.context import RunContext
from sim.resources.leases import Hold, interrupt
from sim.schedulers.plans import InferencePlan
from sim.schedulers.views import Slot


class _Group:
    """One FSDP group of one role: a queue of finished samples and the process that serves it."""

    def __init__(self, role: str, slots: tuple[Slot, ...]):
        self.role = role
        self.slots = slots
        self.queue: list[int] = []
        self.wake: simpy.Event | None = None
        self.done_samples = 0


class StreamingInference:
    def __init__(self, ctx: RunContext, iteration: int, plan: InferencePlan, roles: tuple[str, ...], lengths: np.ndarray):
        self.ctx, self.env, self.i = ctx, ctx.env, iteration
        self.lengths = lengths.astype(np.float64)  # prompt + response per sample
        self.closing = False
        planned = {rp.role: rp for rp in plan.roles}
        missing = [r for r in roles if r not in planned]
        if missing:
            raise ValueError(f"streaming inference plan has no placement for role(s) {missing}")
        self.groups: dict[str, list[_Group]] = {}
        self.assignment: dict[str, np.ndarray | None] = {}
        self.procs = []
        for role in roles:
            rp = planned[role]
            model = ctx.roles.model(role)
            self.groups[role] = [_Group(role, tuple(g)) for g in rp.groups]
            self.assignment[role] = None if rp.assignment is None else np.asarray(rp.assignment, dtype=np.int64)
            for g in self.groups[role]:
                self.procs.append(self.env.process(self._serve(g, model, ctx.roles.spec(role, len(g.slots)))))
        self.done = self.env.all_of(self.procs)

    def finished(self, seqs: list[int]) -> None:
        """Samples that just finished generating: queue them to one group of every role."""
        for role, groups in self.groups.items():
            assign = self.assignment[role]
            for s in seqs:
                g = groups[int(assign[s]) if assign is not None else s % len(groups)]
                g.queue.append(s)
                if g.wake is not None and not g.wake.triggered:
                    g.wake.succeed()

    def close(self) -> None:
        """Generation is over: groups drain their queues and stop."""
        self.closing = True
        for groups in self.groups.values():
            for g in groups:
                if g.wake is not None and not g.wake.triggered:
                    g.wake.succeed()

    def _batch_s(self, model, slots: tuple[Slot, ...], batch: list[int]) -> float:
        mine = self.lengths[batch]
        ring = self.ctx.cluster.ring_bandwidth_bytes_per_s(sorted({s.node for s in slots}))
        return self.ctx.perf.forward_s(model, float(mine.sum()), float((mine * mine / 2.0).sum()), len(slots), ring)

    def _next_batch(self, g: _Group) -> Iterator:
        """Wait for queued samples; returns them all, or None once generation is over and the queue empty."""
        while not g.queue:
            if self.closing:
                return None
            g.wake = self.env.event()
            yield g.wake
            g.wake = None
        batch, g.queue = g.queue, []
        return batch

    def _serve(self, g: _Group, model, spec) -> Iterator:
        """One group's process: batches of its queue on its lease; a crash redoes the batch in flight."""
        env, rec = self.env, self.ctx.recorder
        hold = Hold(self.ctx.alloc, spec, g.slots, on_crash=interrupt(env.active_process))
        batch: list[int] | None = []
        while True:
            try:
                if hold.lease is None:
                    yield hold.request()
                if not batch:
                    batch = yield from self._next_batch(g)
                    if batch is None:
                        break
                lease = hold.lease
                start = env.now
                try:
                    yield env.timeout(self._batch_s(model, lease.slots, batch))
                finally:
                    rec.busy(self.i, "inference", g.role, lease.slots, start, env.now, lease.owner)
                g.done_samples += len(batch)
                rec.count(self.i, "inference", **{f"streamed_{g.role}": float(len(batch))})
                batch = []
            except simpy.Interrupt:  # the instance crashed (the hold dropped it): a new one redoes the batch in flight
                g.wake = None
                if batch:
                    rec.count(self.i, "inference", retries=1.0)
        hold.end()
