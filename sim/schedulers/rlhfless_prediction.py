"""RLHFless's predictions (arXiv 2602.22718): per-prompt response lengths, their ranking into decode actors,
and the decode time of an actor from predicted lengths and the performance model.

Pure functions and one small stateful predictor, used by sim/schedulers/rlhfless.py for prompt
assignment and actor scaling. Left out: any placement or timing decision (the scheduler's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.perf.base import steps_sum_s


class LengthPredictor:
    """Per-prompt EWMA of the mean response length of its samples, with a fallback for unseen prompts."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.pred: dict[int, float] = {}
        self.observed_sum = 0.0
        self.observed_n = 0

    def predict(self, prompt_ids: np.ndarray, prior: float, first_epoch: str) -> np.ndarray:
        fallback = self.observed_sum / self.observed_n if (first_epoch == "running_mean" and self.observed_n) else prior
        return np.array([self.pred.get(int(p), fallback) for p in prompt_ids], dtype=np.float64)

    def update(self, prompt_ids: np.ndarray, sample_prompt: np.ndarray, lengths: np.ndarray) -> None:
        sums = np.bincount(sample_prompt, weights=lengths, minlength=len(prompt_ids))
        counts = np.bincount(sample_prompt, minlength=len(prompt_ids))
        a = self.alpha
        for pid, s, c in zip(prompt_ids.tolist(), sums.tolist(), counts.tolist()):
            if c == 0:
                continue
            obs = s / c
            old = self.pred.get(pid)
            self.pred[pid] = obs if old is None else a * obs + (1 - a) * old
        self.observed_sum += float(lengths.sum())
        self.observed_n += int(len(lengths))


def chunk_ranked(pred: np.ndarray, weights: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Actor index per prompt: prompts ranked by predicted length (longest first) cut into n chunks."""
    order = np.argsort(-pred, kind="stable")
    out = np.empty(len(pred), dtype=np.int64)
    if mode == "equal_work":
        work = (pred * weights)[order]
        before = np.cumsum(work) - work
        total = float(work.sum())
        ideal = np.minimum(before * n // max(total, 1e-12), n - 1).astype(np.int64)
        # contiguous chunks with none empty (when there are at least n prompts): never skip a chunk,
        # and leave enough prompts for the chunks still to come
        count = len(order)
        idx = np.empty(count, dtype=np.int64)
        prev = -1
        for i in range(count):
            lo = max(prev, n - (count - i))  # the chunks after this one need a prompt each
            hi = min(prev + 1, n - 1)
            prev = idx[i] = min(max(int(ideal[i]), lo, 0), hi)
    else:
        idx = (np.arange(len(order)) * n) // max(len(order), 1)
    out[order] = idx
    return out


def predict_decode_s(rep: Any, lengths: np.ndarray, prompt_tokens: np.ndarray) -> float:
    """Time for one replica to decode samples of these (predicted) lengths, all admitted at once."""
    if len(lengths) == 0:
        return 0.0
    L = np.maximum(np.rint(lengths).astype(np.int64), 1)
    order = np.argsort(L, kind="stable")
    L, P = L[order], prompt_tokens[order]
    values, starts = np.unique(L, return_index=True)
    ends = np.append(starts[1:], len(L))
    b = len(L)
    ctx = float(P.sum())
    prev = 0
    total = 0.0
    for v, s, e in zip(values.tolist(), starts.tolist(), ends.tolist()):
        k = v - prev
        total += steps_sum_s(rep.decode_coeffs(b), b, ctx, k)
        ctx += b * k - float(P[s:e].sum()) - v * (e - s)
        b -= e - s
        prev = v
    return total


def queue_slots(lengths: np.ndarray, prompts: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences dealt in order to `slots` serial queues: each queue acts as one long sequence."""
    idx = np.arange(len(lengths)) % slots
    return (
        np.bincount(idx, weights=lengths, minlength=slots),
        np.bincount(idx, weights=prompts, minlength=slots) / np.maximum(np.bincount(idx, minlength=slots), 1),
    )
