"""Lengths sampled from a dataset's fitted distributions (docs/workload.md).

A pool of prompts is walked epoch by epoch in a seeded, per-epoch shuffled order. Each prompt has a fixed
prompt length and a fixed latent log-length offset; a prompt's response lengths in one epoch share a
per-epoch offset, and the samples of a group differ by a small within-group noise. Lengths follow a
per-epoch trend and are truncated at `max_response_tokens`. A share of samples "run away" (a repetition
loop that never emits EOS) and run to the cap; runaways concentrate on prompts whose length offset is
high, so they persist from epoch to epoch like the lengths do. Left out: any dependence on the scheduler.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from statistics import NormalDist

import numpy as np

from sim.errors import WorkloadError
from sim.workload.base import RolloutSamples, Workload, _check_index, _freeze
from sim.workload.entries import DatasetParams


# Stream labels for SeedSequence spawn keys: every random quantity has its own stream, so iteration i
# can be produced in any order and the first N prompts do not depend on the pool size.
_S_QUESTION, _S_OFFSET, _S_EPOCH, _S_ITER, _S_RUNAWAY = 0, 1, 2, 3, 4
_CACHE = 8


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


class DatasetWorkload(Workload):
    """Lengths sampled from a dataset's fitted distributions (model in docs/workload.md)."""

    def __init__(
        self,
        params: DatasetParams,
        *,
        prompts_per_iteration: int,
        group_size: int,
        max_prompt_tokens: int,
        max_response_tokens: int,
        rng: np.random.Generator,
        dataset_prompts: int | None = None,
    ):
        where = f"dataset {params.name}"
        pool = params.num_prompts if dataset_prompts is None else dataset_prompts
        if pool > params.num_prompts:
            raise WorkloadError(f"{where}: workload.dataset_prompts ({pool}) exceeds the dataset's {params.num_prompts} prompts")
        if prompts_per_iteration > pool:
            raise WorkloadError(
                f"{where}: workload.prompts_per_iteration ({prompts_per_iteration}) exceeds the pool of {pool} prompts; "
                "one iteration would hold a prompt twice"
            )
        fixed = params.template_tokens + params.suffix_tokens
        if fixed + 1 > max_prompt_tokens:
            raise WorkloadError(
                f"{where}: template_tokens + suffix_tokens ({fixed}) leave no room for a question under "
                f"workload.max_prompt_tokens ({max_prompt_tokens})"
            )
        if group_size < 1 or prompts_per_iteration < 1 or max_response_tokens < 1:
            raise WorkloadError(f"{where}: prompts_per_iteration, group_size and max_response_tokens must be >= 1")
        self.params = params
        self.prompts_per_iteration = int(prompts_per_iteration)
        self.group_size = int(group_size)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.max_response_tokens = int(max_response_tokens)
        self.pool_size = int(pool)
        # All randomness derives from this entropy; the caller's generator is consumed only here.
        self._entropy = [int(x) for x in rng.integers(0, 2**63 - 1, size=4, dtype=np.int64)]

        q = self._stream(_S_QUESTION).lognormal(math.log(params.prompt_median_tokens), params.prompt_sigma, pool)
        q = np.maximum(np.rint(np.minimum(q, 1e12)), 1.0)
        self.prompt_lengths = np.minimum(fixed + q, max_prompt_tokens).astype(np.int64)
        self.prompt_offsets = self._stream(_S_OFFSET).normal(0.0, params.sigma_prompt, pool)
        _freeze(self.prompt_lengths, self.prompt_offsets)
        self._mu = math.log(params.response_median_tokens)
        self._log_trend = math.log1p(params.response_trend_per_epoch)
        self._log_cap = math.log(self.max_response_tokens) + 1.0
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._iterations: OrderedDict[int, RolloutSamples] = OrderedDict()
        self._boundaries: dict[int, tuple[int, int]] = {}  # epoch -> repair of the draw that straddles its start

    def _stream(self, *key: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self._entropy, spawn_key=key)))

    def epoch_order(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch e's prompt order (a permutation of 0..pool-1) and its per-prompt offsets eps (indexed by prompt id).

        An iteration that straddles epochs e-1 and e must not hold a prompt twice, so epoch e's shuffled order
        is repaired: its first prompts skip those that end epoch e-1 in the same iteration (they come right
        after). This makes epoch e depend on epoch e-1's order, so orders are built in sequence (and cached).
        """
        hit = self._epochs.get(e)
        if hit is not None:
            self._epochs.move_to_end(e)
            return hit
        k = e
        while k > 0 and k - 1 not in self._epochs:
            k -= 1
        prev = self._epochs[k - 1][0] if k > 0 else None
        for j in range(k, e + 1):
            result = self._make_epoch(j, prev)
            self._epochs[j] = result
            if len(self._epochs) > _CACHE:
                self._epochs.popitem(last=False)
            prev = result[0]
        return result

    def _make_epoch(self, e: int, prev: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        N = self.pool_size
        g = self._stream(_S_EPOCH, e)
        order = g.permutation(N).astype(np.int64)
        eps = g.normal(0.0, self.params.sigma_epoch, N)
        tail, head_len = self._boundary(e)
        if prev is not None and tail and head_len:
            clash = np.isin(order, prev[N - tail :])
            head = order[~clash][:head_len]  # N - tail >= head_len prompts are free, as P <= N
            order = np.concatenate((head, order[~np.isin(order, head)]))
        _freeze(order, eps)
        return order, eps

    def _boundary(self, e: int) -> tuple[int, int]:
        """(prompts of epoch e-1, prompts of epoch e) in the draw that straddles the start of epoch e: an
        iteration of P prompts by default, or what `draw` registered for a generation round."""
        if e in self._boundaries:
            return self._boundaries[e]
        tail = (e * self.pool_size) % self.prompts_per_iteration
        return tail, self.prompts_per_iteration - tail

    def _register_boundary(self, e: int, value: tuple[int, int]) -> None:
        if self._boundary(e) == value and e in self._boundaries:
            return
        changed = self._boundary(e) != value
        self._boundaries[e] = value
        if changed:  # epochs built with another repair are rebuilt on demand
            for k in [k for k in self._epochs if k >= e]:
                del self._epochs[k]
            self._iterations.clear()

    def epochs_done(self, i: int) -> float:
        """Training progress at the start of iteration i, in epochs of the prompt pool (drives the trend)."""
        return i * self.prompts_per_iteration / self.pool_size

    def iteration(self, i: int) -> RolloutSamples:
        i = _check_index(i)
        hit = self._iterations.get(i)
        if hit is not None:
            self._iterations.move_to_end(i)
            return hit
        out = self._sample(i, (i,), i * self.prompts_per_iteration, self.prompts_per_iteration)
        self._iterations[i] = out
        if len(self._iterations) > _CACHE:
            self._iterations.popitem(last=False)
        return out

    def draw(self, step: int, round: int, start: int, count: int) -> RolloutSamples:
        """Generation round `round` of training step `step`: the `count` prompts at positions start.. of the
        epoch stream (a dynamic-sampling step reads further into the stream than `iteration` does).

        Round 0 of step i draws the noise `iteration(i)` draws; later rounds draw fresh noise. The length
        trend follows the training step, not the prompts drawn: lengths grow with policy updates. A round
        never holds a prompt twice (count <= pool); draws must cover the stream in order, so that each
        epoch boundary's repair is known before the epoch is built.
        """
        step, start = _check_index(step), _check_index(start)
        N = self.pool_size
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= N:
            raise WorkloadError(f"dataset {self.params.name}: a generation round of {count} prompts must be 1..{N} (the prompt pool)")
        boundary = (start // N + 1) * N
        if start + count >= boundary:
            self._register_boundary(boundary // N, (boundary - start, start + count - boundary))
        return self._sample(step, (step,) if round == 0 else (step, int(round)), start, int(count))

    def _sample(self, i: int, key: tuple[int, ...], start: int, P: int) -> RolloutSamples:
        """P prompts from stream position `start`, lengths for training step i, noise streams keyed by `key`."""
        n, N = self.group_size, self.pool_size
        first_epoch = start // N
        pos = start + np.arange(P, dtype=np.int64)
        epoch_of = pos // N
        slot = pos - epoch_of * N
        prompt_ids = np.empty(P, dtype=np.int64)
        eps = np.empty(P)
        for e in range(first_epoch, int(epoch_of[-1]) + 1):  # P <= N, so at most two epochs
            order, e_eps = self.epoch_order(e)
            m = epoch_of == e
            ids = order[slot[m]]
            prompt_ids[m] = ids
            eps[m] = e_eps[ids]
        offset = self.prompt_offsets[prompt_ids] + eps
        loc = self._mu + self.epochs_done(i) * self._log_trend + offset
        log_len = np.repeat(loc, n)
        if self.params.sigma_sample > 0:
            log_len += self.params.sigma_sample * self._stream(_S_ITER, *key).standard_normal(P * n)
        lengths = np.rint(np.exp(np.minimum(log_len, self._log_cap)))
        response = np.clip(lengths, 1, self.max_response_tokens).astype(np.int64)
        runaway = self.runaway_probability(i)
        if runaway > 0:
            response[self._runaways(key, offset, runaway)] = self.max_response_tokens
        prompt_tokens = self.prompt_lengths[prompt_ids]
        sample_prompt = np.repeat(np.arange(P, dtype=np.int64), n)
        sample_ids = np.tile(np.arange(n, dtype=np.int64), P)
        _freeze(prompt_ids, prompt_tokens, sample_prompt, sample_ids, response)
        return RolloutSamples(
            iteration=i,
            epoch=int(first_epoch),
            prompt_ids=prompt_ids,
            prompt_tokens=prompt_tokens,
            template_tokens=self.params.template_tokens,
            sample_prompt=sample_prompt,
            sample_ids=sample_ids,
            response_tokens=response,
        )

    def runaway_probability(self, i: int) -> float:
        """Share of iteration i's samples that run away (to the cap): the entry's probability, trended per epoch."""
        p = self.params.runaway_probability
        if p == 0.0 or self.params.runaway_trend_per_epoch == 0.0:
            return p
        return min(p * (1.0 + self.params.runaway_trend_per_epoch) ** self.epochs_done(i), 1.0)

    def _runaways(self, key: tuple[int, ...], offset: np.ndarray, p: float) -> np.ndarray:
        """Which samples run away: a latent sqrt(r) w_p + sqrt(1 - r) v above the (1 - p) quantile.

        w_p is the prompt's standardised length offset (a_p + eps_{p,e}), so runaways concentrate on prompts
        that run long and persist across epochs as much as those offsets do; v is fresh per sample.
        """
        r = self.params.runaway_prompt_correlation
        spread = math.hypot(self.params.sigma_prompt, self.params.sigma_epoch)
        latent = self._stream(_S_RUNAWAY, *key).standard_normal(offset.size * self.group_size)
        if r > 0 and spread > 0:
            latent = math.sqrt(1.0 - r) * latent + math.sqrt(r) * np.repeat(offset / spread, self.group_size)
        return latent > NormalDist().inv_cdf(1.0 - p)

    @property
    def default_response_tokens(self) -> float:
        """E[clip(L, 1, cap)] for the untrended model: the dataset-level mean a predictor may assume at first.

        The lognormal bulk's capped mean, with the runaway share at the cap (to first order: runaways fall on
        prompts with longer bulk lengths, which this leaves out).
        """
        s, cap, mu = self.params.response_sigma, float(self.max_response_tokens), self._mu
        if s == 0.0:
            bulk = min(max(math.exp(mu), 1.0), cap)
        else:
            lo, hi = (0.0 - mu) / s, (math.log(cap) - mu) / s  # standardised log(1) and log(cap)
            body = math.exp(mu + s * s / 2) * (_normal_cdf(hi - s) - _normal_cdf(lo - s))
            bulk = _normal_cdf(lo) + body + cap * (1.0 - _normal_cdf(hi))
        p = self.params.runaway_probability
        return (1.0 - p) * bulk + p * cap
