"""What every latency model gives the simulator, and the exact sums the generation engine relies on.

A decode step of a replica whose batch is fixed (b sequences, total context C tokens) costs

    step_s(C) = max(c0 + c1 * C, m0 + m1 * C) + overhead_s

(a compute line and a memory line; the roofline's two regimes). Each step adds b tokens of context, so
the time of k consecutive steps is a closed-form sum: the engine never loops over steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StepCoeffs:
    """Decode-step time of one batch size as max of two lines in total context, plus overhead."""

    c0: float
    c1: float
    m0: float
    m1: float
    overhead_s: float

    def step_s(self, context_tokens: float) -> float:
        return max(self.c0 + self.c1 * context_tokens, self.m0 + self.m1 * context_tokens) + self.overhead_s


def steps_sum_s(co: StepCoeffs, batch: int, context_tokens: float, k: int) -> float:
    """Exact time of k decode steps at batch b starting from total context C (context grows b per step).

    sum_{j<k} max(c0 + c1*(C + j*b), m0 + m1*(C + j*b)) + k*overhead, split where the two lines cross.
    """
    if k <= 0:
        return 0.0
    b = batch
    c1, m1 = co.c1, co.m1
    # line_x(j) = a_x + s_x * j
    ac = co.c0 + c1 * context_tokens
    sc = c1 * b
    am = co.m0 + m1 * context_tokens
    sm = m1 * b
    da, ds = ac - am, sc - sm  # compute minus memory: da + ds*j
    if ds == 0.0:  # parallel lines: one of them wins at every step
        split = k
        first_is_memory = da < 0
    else:
        split = math.ceil(-da / ds)  # where the lines cross
        if split < 0:
            split = 0
        elif split > k:
            split = k
        first_is_memory = ds > 0  # compute grows faster: memory first, then compute (else the reverse)
    a1, s1, a2, s2 = (am, sm, ac, sc) if first_is_memory else (ac, sc, am, sm)
    # first `split` steps on line 1, remaining on line 2: sum_{j=j0}^{j1-1} (a + s*j) = n*a + s*(j0+j1-1)*n/2
    # with n = j1 - j0 (inline: this runs once per engine event)
    n2 = k - split
    total = (split * a1 + s1 * (split - 1) * split / 2.0 if split > 0 else 0.0) + (
        n2 * a2 + s2 * (split + k - 1) * n2 / 2.0 if n2 > 0 else 0.0
    )
    return total + k * co.overhead_s


def steps_within(co: StepCoeffs, batch: int, context_tokens: float, k_max: int, budget_s: float) -> int:
    """Smallest k in [0, k_max] whose k steps take at least budget_s (the step in flight at that instant)."""
    lo, hi = 0, k_max
    while lo < hi:
        mid = (lo + hi) // 2
        if steps_sum_s(co, batch, context_tokens, mid) >= budget_s:
            hi = mid
        else:
            lo = mid + 1
    return lo


class ReplicaPerf(Protocol):
    """Latency of one generation replica (a model on `tp` GPUs of one type)."""

    tp: int

    def decode_coeffs(self, batch: int) -> StepCoeffs: ...

    def prefill_s(self, new_tokens: float, attention_pairs: float) -> float:
        """Prefill of new_tokens whose attention covers attention_pairs (query, key) pairs in all."""
        ...


class PerfModel(Protocol):
    """Latency of every kind of work; bound to one GPU type, built from the experiment's perf section."""

    early_exit: "object | None"  # the actor's early exit (sim.perf.early_exit.EarlyExit), None when off

    def replica(self, model: "object", tp: int) -> ReplicaPerf: ...

    def forward_s(self, model: "object", tokens: float, attention_pairs: float, n_gpus: int, ring_bandwidth_bytes_per_s: float) -> float: ...

    def train_step_s(
        self, model: "object", tokens: float, attention_pairs: float, n_gpus: int, ring_bandwidth_bytes_per_s: float
    ) -> float: ...
