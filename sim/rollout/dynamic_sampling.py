"""DAPO's dynamic sampling: generation rounds until a step holds enough groups whose rewards are not all equal.

A step's first round draws `oversample x prompts_per_iteration` prompts: the next prompts of the dataset's
epoch stream, so a dynamic-sampling run moves through its epochs faster than a plain one. Each round is
rolled out (real generation work, the workload's lengths) and scored; each group is then filtered out
with probability `filtered_fraction`, independently, from a stream of its own keyed by (step, round), so
the filter depends on the seed only, never on the scheduler or the timing. Later rounds draw the next
prompts again: a whole generation batch (`refill: batch`, verl's recipe) or the shortfall divided by the
keep rate seen so far in the run (`refill: shortfall`). Once enough groups are kept, the first
`prompts_per_iteration` of them, in draw order, form the training batch and the surplus is dropped
(verl's `batch[:traj_bsz]`). A step that reaches `max_rounds` trains on what it kept.

Deliberately left out: which groups are filtered does not depend on the prompt or its lengths (in real
runs all-wrong groups run long and all-correct ones short), and filtered groups are not remembered across
epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.errors import WorkloadError
from sim.workload.base import RolloutSamples, Workload
from sim.workload.dataset import DatasetWorkload

if TYPE_CHECKING:  # pragma: no cover
    from sim.config.models import DynamicSamplingConfig


@dataclass(frozen=True)
class SamplingStep:
    """The generation rounds of one training step and which of their groups train."""

    rounds: tuple[RolloutSamples, ...]
    passed: tuple[np.ndarray, ...]  # per round, per prompt: rewards not all equal (survives the filter)
    used: tuple[np.ndarray, ...]  # per round, per prompt: in the training batch (passed, within the first P kept)
    short: bool  # max_rounds reached before the batch was full

    @property
    def groups_drawn(self) -> int:
        return int(sum(len(p) for p in self.passed))

    @property
    def groups_filtered(self) -> int:
        return int(sum(int((~p).sum()) for p in self.passed))


class DynamicSampler:
    """Plans each step's rounds; steps must be asked for in order (0, 1, 2, ...), as the run does."""

    def __init__(self, workload: Workload, cfg: "DynamicSamplingConfig", prompts_per_step: int, rng: np.random.Generator):
        if not isinstance(workload, DatasetWorkload):
            raise WorkloadError("workload.dynamic_sampling: needs a dataset workload (a trace cannot draw more prompts)")
        self.workload = workload
        self.cfg = cfg
        self.prompts_per_step = int(prompts_per_step)
        self.batch_prompts = max(1, math.ceil(cfg.oversample * prompts_per_step - 1e-9))
        pool = workload.pool_size
        if self.batch_prompts > pool:
            raise WorkloadError(
                f"dataset {workload.params.name}: workload.dynamic_sampling.oversample: a generation round of "
                f"{self.batch_prompts} prompts ({cfg.oversample:g} x {prompts_per_step}) exceeds the pool of {pool} prompts; "
                "one round would hold a prompt twice"
            )
        self._entropy = [int(x) for x in rng.integers(0, 2**63 - 1, size=4, dtype=np.int64)]
        self._position = 0
        self._drawn = self._passed = 0  # groups drawn and kept by the steps before this one
        self._next = 0
        self._last: tuple[int, SamplingStep] | None = None

    def _filter(self, step: int, round: int, groups: int) -> np.ndarray:
        """Per group: True when it survives (its rewards are not all equal)."""
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self._entropy, spawn_key=(step, round))))
        return g.random(groups) >= self.cfg.filtered_fraction

    def _round_size(self, round: int, shortfall: int, drawn: int, passed: int) -> int:
        """A later round under `refill: shortfall`: the shortfall over the keep rate seen so far in the run
        (the run-wide rate: a step's own first round alone would be a noisy estimate, biased upward by 1/rate)."""
        drawn, passed = drawn + self._drawn, passed + self._passed
        if round == 0 or self.cfg.refill == "batch" or passed == 0:
            return self.batch_prompts
        return min(self.workload.pool_size, max(shortfall, math.ceil(shortfall * drawn / passed - 1e-9)))

    def step(self, i: int) -> SamplingStep:
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        if i != self._next:
            raise RuntimeError(f"dynamic sampling: step {i} asked for, the next step is {self._next}")
        P = self.prompts_per_step
        rounds, passed_by_round = [], []
        drawn = passed = 0
        while True:
            r = len(rounds)
            count = self._round_size(r, P - passed, drawn, passed)
            samples = self.workload.draw(i, r, self._position, count)
            self._position += count
            ok = self._filter(i, r, count)
            rounds.append(samples)
            passed_by_round.append(ok)
            drawn += count
            passed += int(ok.sum())
            if passed >= P or (self.cfg.max_rounds and len(rounds) >= self.cfg.max_rounds):
                break
        used, room = [], P
        for ok in passed_by_round:
            take = ok & (np.cumsum(ok) <= room)
            room -= int(take.sum())
            used.append(take)
        out = SamplingStep(tuple(rounds), tuple(passed_by_round), tuple(used), short=passed < P)
        self._drawn += drawn
        self._passed += passed
        self._next = i + 1
        self._last = (i, out)
        return out
