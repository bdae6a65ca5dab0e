"""Prompt and response lengths for each iteration: sampled from a dataset's fitted distributions, or replayed from a trace.

Dataset model (docs/workload.md): a pool of prompts is walked epoch by epoch in a seeded, per-epoch
shuffled order. Each prompt has a fixed prompt length and a fixed latent log-length offset; a prompt's
response lengths in one epoch share a per-epoch offset, and the samples of a group differ by a small
within-group noise. Lengths follow a per-epoch trend and are truncated at `max_response_tokens`. A share
of samples "run away" (a repetition loop that never emits EOS) and run to the cap; runaways concentrate
on prompts whose length offset is high, so they persist from epoch to epoch like the lengths do.
An entry may carry per-model overrides (`by_model`), since the lengths are the policy's.

Trace replay (docs/workload.md): a CSV of (iteration, prompt_id, sample_id, prompt_tokens,
response_tokens) rows is validated strictly and replayed iteration by iteration.

Deliberately left out: token contents, rewards, correctness, and any dependence of lengths on the
scheduler: the same config and seed give the same lengths whatever the scheduler does.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import math
from collections import OrderedDict
from statistics import NormalDist
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from sim.errors import WorkloadError  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from sim.config import WorkloadConfig


@dataclass(frozen=True)
class RolloutSamples:
    """One iteration's rollout work. Prompts are indexed 0..P-1, samples 0..S-1 (S = sum of group sizes).

    Samples of one prompt are contiguous and in sample_id order.
    """

    iteration: int
    epoch: int
    prompt_ids: np.ndarray  # int64[P], dataset-level ids: the same prompt keeps its id across epochs
    prompt_tokens: np.ndarray  # int64[P], includes the shared template
    template_tokens: int  # leading tokens shared by every prompt (chat template + instruction)
    sample_prompt: np.ndarray  # int64[S], index into the prompt arrays
    sample_ids: np.ndarray  # int64[S], 0..n-1 within its prompt
    response_tokens: np.ndarray  # int64[S], >= 1 and <= max_response_tokens


class Workload:
    """Produces RolloutSamples for iteration i (0-based); a pure function of config, catalog entry and seed."""

    max_prompt_tokens: int
    max_response_tokens: int

    def iteration(self, i: int) -> RolloutSamples:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def default_response_tokens(self) -> float:  # pragma: no cover - interface
        """The prior mean response length a length predictor may use before it has history."""
        raise NotImplementedError

    @property
    def num_iterations(self) -> int | None:
        """How many iterations this workload can produce; None when unbounded (a dataset)."""
        return None

    def truncated_fraction(self, i: int) -> float:
        """Fraction of iteration i's samples whose response stopped at max_response_tokens (the cap)."""
        samples = self.iteration(i)
        return float(np.count_nonzero(samples.response_tokens >= self.max_response_tokens) / samples.response_tokens.size)


# ---------------------------------------------------------------------------------------------- dataset entries

_TOP_FIELDS = {
    "num_prompts",
    "template_tokens",
    "suffix_tokens",
    "prompt_tokens",
    "response_tokens",
    "response_trend_per_epoch",
    "runaway",
    "by_model",
    "source",
    "sources",
    "notes",
}
_PROMPT_FIELDS = ("median", "sigma")
_RESPONSE_FIELDS = ("median", "sigma_prompt", "sigma_epoch", "sigma_sample")
_RUNAWAY_FIELDS = ("probability", "prompt_correlation", "trend_per_epoch")
#: what a `by_model` override may change: the response model (the prompts are the dataset's)
_BY_MODEL_FIELDS = ("response_tokens", "response_trend_per_epoch", "runaway", "source", "sources", "notes")


@dataclass(frozen=True)
class DatasetParams:
    """One validated datasets.yaml entry (or inline mapping); token counts are Qwen2.5-tokenizer-like."""

    name: str
    num_prompts: int
    template_tokens: int  # shared leading prefix: chat template (+ a leading instruction)
    suffix_tokens: int  # fixed per-prompt tokens after the question: a trailing instruction, assistant header
    prompt_median_tokens: float  # question part, lognormal
    prompt_sigma: float
    response_median_tokens: float  # exp(mu) of the response log-length at the start of training
    sigma_prompt: float
    sigma_epoch: float
    sigma_sample: float
    response_trend_per_epoch: float = 0.0
    runaway_probability: float = 0.0  # share of samples that never stop: they run to max_response_tokens
    runaway_prompt_correlation: float = 0.0  # r: share of the runaway latent that is the prompt's length offset
    runaway_trend_per_epoch: float = 0.0  # the probability scales by (1 + x) per epoch

    @property
    def response_sigma(self) -> float:
        """Total standard deviation of a sample's log response length (before truncation)."""
        return math.sqrt(self.sigma_prompt**2 + self.sigma_epoch**2 + self.sigma_sample**2)


def _number(where: str, field: str, value: Any, *, integer: bool, minimum: float, strict: bool = False) -> float:
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(float(value))):
        kind = "an integer" if integer else "a finite number"
        raise WorkloadError(f"{where}: field {field}: expected {kind}, got {value!r}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise WorkloadError(f"{where}: field {field}: must be {op} {minimum:g} (got {value!r})")
    return value


def parse_dataset(name: str, entry: Any, model: str | None = None) -> DatasetParams:
    """Validate a datasets.yaml entry or an inline `workload.dataset` mapping; errors name the dataset and field.

    `model` (the actor's catalog name) selects the entry's `by_model` override, if it has one for it; every
    override is validated whichever model runs.
    """
    where = f"dataset {name}"
    if not isinstance(entry, Mapping):
        raise WorkloadError(f"{where}: expected a mapping of fields, got {type(entry).__name__}")
    unknown = sorted(set(map(str, entry)) - _TOP_FIELDS)
    if unknown:
        raise WorkloadError(f"{where}: unknown field(s) {unknown}; expected: {', '.join(sorted(_TOP_FIELDS))}")
    overrides = entry.get("by_model", {})
    if not isinstance(overrides, Mapping):
        raise WorkloadError(f"{where}: field by_model: expected a mapping of model names to partial entries, got {overrides!r}")
    base = {k: v for k, v in entry.items() if k != "by_model"}
    params = _parse_entry(name, base, where)
    chosen = params
    for key, override in overrides.items():
        at = f"{where}: field by_model.{key}"
        if not isinstance(override, Mapping):
            raise WorkloadError(f"{at}: expected a mapping with any of {', '.join(_BY_MODEL_FIELDS)}, got {override!r}")
        extra = sorted(set(map(str, override)) - set(_BY_MODEL_FIELDS))
        if extra:
            raise WorkloadError(f"{at}: unknown field(s) {extra}; a per-model override may set: {', '.join(_BY_MODEL_FIELDS)}")
        merged = _merge(base, override)
        model_params = _parse_entry(name, merged, f"{where} (by_model {key})")
        if key == model:
            chosen = model_params
    return chosen


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_entry(name: str, entry: Mapping[str, Any], where: str) -> DatasetParams:
    for req in ("num_prompts", "template_tokens", "prompt_tokens", "response_tokens"):
        if req not in entry:
            raise WorkloadError(f"{where}: field {req}: required field is missing")

    def sub(key: str, names: Sequence[str]) -> dict[str, Any]:
        block = entry[key]
        if not isinstance(block, Mapping):
            raise WorkloadError(f"{where}: field {key}: expected a mapping with {', '.join(names)}, got {block!r}")
        extra = sorted(set(map(str, block)) - set(names))
        if extra:
            raise WorkloadError(f"{where}: field {key}: unknown field(s) {extra}; expected: {', '.join(names)}")
        for n in names:
            if n not in block:
                raise WorkloadError(f"{where}: field {key}.{n}: required field is missing")
        return dict(block)

    prompt = sub("prompt_tokens", _PROMPT_FIELDS)
    resp = sub("response_tokens", _RESPONSE_FIELDS)
    trend = entry.get("response_trend_per_epoch", 0.0)
    _number(where, "response_trend_per_epoch", trend, integer=False, minimum=-1.0, strict=True)
    runaway = entry.get("runaway", {}) or {}
    if not isinstance(runaway, Mapping):
        raise WorkloadError(f"{where}: field runaway: expected a mapping with {', '.join(_RUNAWAY_FIELDS)}, got {runaway!r}")
    extra = sorted(set(map(str, runaway)) - set(_RUNAWAY_FIELDS))
    if extra:
        raise WorkloadError(f"{where}: field runaway: unknown field(s) {extra}; expected: {', '.join(_RUNAWAY_FIELDS)}")
    p_run = _number(where, "runaway.probability", runaway.get("probability", 0.0), integer=False, minimum=0)
    if p_run >= 1:
        raise WorkloadError(f"{where}: field runaway.probability: must be < 1 (got {p_run!r})")
    r_run = _number(where, "runaway.prompt_correlation", runaway.get("prompt_correlation", 0.0), integer=False, minimum=0)
    if r_run > 1:
        raise WorkloadError(f"{where}: field runaway.prompt_correlation: must be <= 1 (got {r_run!r})")
    t_run = _number(where, "runaway.trend_per_epoch", runaway.get("trend_per_epoch", 0.0), integer=False, minimum=-1.0, strict=True)
    return DatasetParams(
        name=name,
        num_prompts=int(_number(where, "num_prompts", entry["num_prompts"], integer=True, minimum=1)),
        template_tokens=int(_number(where, "template_tokens", entry["template_tokens"], integer=True, minimum=0)),
        suffix_tokens=int(_number(where, "suffix_tokens", entry.get("suffix_tokens", 0), integer=True, minimum=0)),
        prompt_median_tokens=float(_number(where, "prompt_tokens.median", prompt["median"], integer=False, minimum=0, strict=True)),
        prompt_sigma=float(_number(where, "prompt_tokens.sigma", prompt["sigma"], integer=False, minimum=0)),
        response_median_tokens=float(_number(where, "response_tokens.median", resp["median"], integer=False, minimum=0, strict=True)),
        sigma_prompt=float(_number(where, "response_tokens.sigma_prompt", resp["sigma_prompt"], integer=False, minimum=0)),
        sigma_epoch=float(_number(where, "response_tokens.sigma_epoch", resp["sigma_epoch"], integer=False, minimum=0)),
        sigma_sample=float(_number(where, "response_tokens.sigma_sample", resp["sigma_sample"], integer=False, minimum=0)),
        response_trend_per_epoch=float(trend),
        runaway_probability=float(p_run),
        runaway_prompt_correlation=float(r_run),
        runaway_trend_per_epoch=float(t_run),
    )


# ---------------------------------------------------------------------------------------------- sampled workload

# Stream labels for SeedSequence spawn keys: every random quantity has its own stream, so iteration i
# can be produced in any order and the first N prompts do not depend on the pool size.
_S_QUESTION, _S_OFFSET, _S_EPOCH, _S_ITER, _S_RUNAWAY = 0, 1, 2, 3, 4
_CACHE = 8


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


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


def _check_index(i: int) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
        raise WorkloadError(f"iteration index must be an integer >= 0, got {i!r}")
    return int(i)


# ---------------------------------------------------------------------------------------------- trace replay

TRACE_COLUMNS = ("iteration", "prompt_id", "sample_id", "prompt_tokens", "response_tokens")
OPTIONAL_TRACE_COLUMNS = ("epoch",)


class TraceWorkload(Workload):
    """Replays a validated trace: iteration i of the run is trace iteration i."""

    def __init__(self, path: Path, iterations: list[RolloutSamples], max_prompt_tokens: int, max_response_tokens: int):
        self.path = path
        self._iterations = iterations
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.max_response_tokens = int(max_response_tokens)
        total = sum(int(s.response_tokens.sum()) for s in iterations)
        count = sum(int(s.response_tokens.size) for s in iterations)
        self._default = total / count

    @property
    def num_iterations(self) -> int:
        return len(self._iterations)

    def iteration(self, i: int) -> RolloutSamples:
        i = _check_index(i)
        if i >= len(self._iterations):
            raise WorkloadError(
                f"{self.path}: the trace has {len(self._iterations)} iterations (0..{len(self._iterations) - 1}); "
                f"iteration {i} was requested (lower `iterations` or use a longer trace)"
            )
        return self._iterations[i]

    @property
    def default_response_tokens(self) -> float:
        """Mean (capped) response length over the whole trace."""
        return self._default


def _trace_error(path: Path, line: int, column: str, message: str) -> WorkloadError:
    return WorkloadError(f"{path}: line {line}, column {column!r}: {message}")


def _parse_ints(path: Path, name: str, values: list[str], lines: np.ndarray) -> np.ndarray:
    try:
        return np.array(values).astype(np.int64)
    except (ValueError, OverflowError):
        pass
    parsed = []
    for text, line in zip(values, lines):
        try:
            v = int(text)
        except ValueError:
            raise _trace_error(path, int(line), name, f"expected an integer, got {text!r}") from None
        if not -(2**63) <= v < 2**63:
            raise _trace_error(path, int(line), name, f"integer out of range: {text!r}")
        parsed.append(v)
    return np.array(parsed, dtype=np.int64)


def read_trace(path: Path | str, *, max_prompt_tokens: int, max_response_tokens: int, template_tokens: int = 0) -> TraceWorkload:
    """Read and validate a trace CSV (format in docs/workload.md); every error names file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such trace file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise WorkloadError(f"{path}: not a text file") from None
    physical = text.splitlines()
    try:
        header = next(csv.reader(physical[:1]), None)
    except csv.Error as exc:
        raise WorkloadError(f"{path}: line 1: malformed CSV header: {exc}") from None
    header = _check_header(path, header)
    fast = _read_clean(physical, len(header))
    if fast is not None:
        data, lines = fast
    else:
        data, lines = _read_slow(path, text, header)
    if lines.size == 0:
        raise _trace_error(path, 2, TRACE_COLUMNS[0], "the trace has a header but no rows")
    cols = {h: data[:, j] for j, h in enumerate(header)} if isinstance(data, np.ndarray) else data
    return _build_trace(path, cols, lines, max_prompt_tokens, max_response_tokens, template_tokens)


def _check_header(path: Path, header: list[str] | None) -> list[str]:
    if not header:
        raise _trace_error(path, 1, TRACE_COLUMNS[0], f"empty file: expected the header {','.join(TRACE_COLUMNS)}")
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise _trace_error(path, 1, h, "column appears twice in the header")
        seen.add(h)
        if h not in TRACE_COLUMNS and h not in OPTIONAL_TRACE_COLUMNS:
            raise _trace_error(
                path, 1, h, f"unknown column; expected {','.join(TRACE_COLUMNS)} and optionally {','.join(OPTIONAL_TRACE_COLUMNS)}"
            )
    for req in TRACE_COLUMNS:
        if req not in seen:
            raise _trace_error(path, 1, req, f"missing column in the header (got {','.join(header)})")
    return header


def _read_clean(physical: list[str], width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path for a clean file (plain integers, no blank lines): the int64 table and its line numbers, else None."""
    body = physical[1:]
    if not body or not all(body):
        return None
    try:
        table = np.loadtxt(body, delimiter=",", dtype=np.int64, comments=None, ndmin=2)
    except ValueError:
        return None
    if table.shape != (len(body), width):
        return None
    return table, np.arange(2, len(body) + 2, dtype=np.int64)


def _read_slow(path: Path, text: str, header: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Row-by-row parse that finds the first bad line and column."""
    width = len(header)
    cols: list[list[str]] = [[] for _ in header]
    line_list: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        next(reader)
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                col = header[len(row)] if len(row) < width else f"#{width + 1}"
                what = "missing value" if len(row) < width else f"extra value {row[width]!r} beyond the header's {width} columns"
                raise _trace_error(path, reader.line_num, col, what)
            for c, v in zip(cols, row):
                c.append(v)
            line_list.append(reader.line_num)
    except csv.Error as exc:
        raise WorkloadError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
    lines = np.asarray(line_list, dtype=np.int64)
    return {h: _parse_ints(path, h, c, lines) for h, c in zip(header, cols)}, lines


def _first(mask: np.ndarray, lines: np.ndarray) -> int:
    """Index of the earliest-line row among those where mask holds."""
    idx = np.flatnonzero(mask)
    return int(idx[np.argmin(lines[idx])])


def _build_trace(
    path: Path, d: dict[str, np.ndarray], lines: np.ndarray, max_prompt: int, max_response: int, template: int
) -> TraceWorkload:
    it, pid, sid, pt, rt = (d[c] for c in TRACE_COLUMNS)
    ep = d.get("epoch")
    checks: list[tuple[str, np.ndarray, str]] = [
        ("iteration", it < 0, "must be >= 0"),
        ("prompt_id", pid < 0, "must be >= 0"),
        ("sample_id", sid < 0, "must be >= 0"),
        ("prompt_tokens", pt < 1, "must be a positive number of tokens"),
        ("response_tokens", rt < 1, "must be a positive number of tokens"),
        ("prompt_tokens", pt > max_prompt, f"exceeds workload.max_prompt_tokens ({max_prompt})"),
        ("prompt_tokens", pt <= template, f"must exceed the template's {template} tokens"),
    ]
    if ep is not None:
        checks.append(("epoch", ep < 0, "must be >= 0"))
    for col, bad, what in checks:
        if bad.any():
            k = _first(bad, lines)
            raise _trace_error(path, int(lines[k]), col, f"{what} (got {int(d[col][k])})")

    # Sort by (iteration, prompt_id, sample_id); lexsort is stable, so ties keep file order.
    order = np.lexsort((sid, pid, it))
    s_it, s_pid, s_sid, s_pt, s_line = it[order], pid[order], sid[order], pt[order], lines[order]
    same_prompt = np.r_[False, (s_it[1:] == s_it[:-1]) & (s_pid[1:] == s_pid[:-1])]
    dup = same_prompt & np.r_[False, s_sid[1:] == s_sid[:-1]]
    if dup.any():
        k = _first(dup, s_line)
        j = k - 1
        raise _trace_error(
            path, int(s_line[k]), "sample_id",
            f"duplicate (iteration, prompt_id, sample_id) = ({s_it[k]}, {s_pid[k]}, {s_sid[k]}); first at line {s_line[j]}",
        )
    group_start = np.flatnonzero(~same_prompt)
    group_of = np.cumsum(~same_prompt) - 1
    head = group_start[group_of]
    differs = s_pt != s_pt[head]
    if differs.any():
        k = _first(differs, s_line)
        h = head[k]
        raise _trace_error(
            path, int(s_line[k]), "prompt_tokens",
            f"prompt {s_pid[k]} in iteration {s_it[k]} has prompt_tokens {s_pt[k]} here but {s_pt[h]} at line {s_line[h]}; "
            "all samples of a prompt share its prompt",
        )
    rank = np.arange(s_sid.size) - head
    gap = s_sid != rank
    if gap.any():
        k = _first(gap, s_line)
        g = group_of[k]
        end = group_start[g + 1] if g + 1 < group_start.size else s_sid.size
        ids = s_sid[group_start[g]:end]
        shown = ", ".join(map(str, ids[:10])) + (", ..." if ids.size > 10 else "")
        raise _trace_error(
            path, int(s_line[k]), "sample_id",
            f"sample ids of prompt {s_pid[k]} in iteration {s_it[k]} must be 0..{ids.size - 1} without gaps (found {shown})",
        )
    iters = np.unique(it)
    K = iters.size
    if iters[-1] != K - 1:
        missing = int(np.flatnonzero(iters != np.arange(K))[0])
        k = _first(it > missing, lines)
        raise _trace_error(
            path, int(lines[k]), "iteration",
            f"iteration values must be 0..K-1 without gaps; iteration {missing} is missing (found {it[k]} here)",
        )

    # Final order: by iteration, prompts in order of first appearance in the file, samples by sample_id.
    first_row = np.minimum.reduceat(order, group_start)  # earliest file index of each (iteration, prompt) group
    final = np.lexsort((s_sid, first_row[group_of], s_it))
    f_it, f_pid, f_sid, f_pt = s_it[final], s_pid[final], s_sid[final], s_pt[final]
    f_rt = np.minimum(rt[order][final], max_response)
    f_ep = ep[order][final] if ep is not None else None
    new_prompt = np.r_[True, (f_it[1:] != f_it[:-1]) | (f_pid[1:] != f_pid[:-1])]
    p_index = np.flatnonzero(new_prompt)
    p_it = f_it[p_index]
    # When no epoch column: a prompt's epoch = how many earlier iterations held it (each epoch holds it once).
    p_pid = f_pid[p_index]
    occ_order = np.lexsort((p_it, p_pid))
    occ_new = np.r_[True, p_pid[occ_order][1:] != p_pid[occ_order][:-1]]
    occ_head = np.flatnonzero(occ_new)[np.cumsum(occ_new) - 1]
    occurrence = np.empty(p_pid.size, dtype=np.int64)
    occurrence[occ_order] = np.arange(p_pid.size) - occ_head

    row_bounds = np.searchsorted(f_it, np.arange(K + 1))
    prompt_bounds = np.searchsorted(p_it, np.arange(K + 1))
    samples: list[RolloutSamples] = []
    for i in range(K):
        r0, r1 = row_bounds[i], row_bounds[i + 1]
        q0, q1 = prompt_bounds[i], prompt_bounds[i + 1]
        starts = p_index[q0:q1] - r0
        counts = np.diff(np.r_[starts, r1 - r0])
        arrays = (
            p_pid[q0:q1].copy(),
            f_pt[p_index[q0:q1]].copy(),
            np.repeat(np.arange(q1 - q0, dtype=np.int64), counts),
            f_sid[r0:r1].copy(),
            f_rt[r0:r1].copy(),
        )
        _freeze(*arrays)
        epoch = int(f_ep[r0]) if f_ep is not None else int(occurrence[q0])
        samples.append(RolloutSamples(i, epoch, arrays[0], arrays[1], template, arrays[2], arrays[3], arrays[4]))
    return TraceWorkload(path, samples, max_prompt, max_response)


def write_trace(workload: Workload, iterations: int, path: Path | str) -> Path:
    """Export iterations 0..iterations-1 of any workload to the trace CSV format (with an `epoch` column)."""
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise WorkloadError(f"write_trace: iterations must be an integer >= 1, got {iterations!r}")
    path = Path(path)
    blocks = []
    for i in range(int(iterations)):
        s = workload.iteration(i)
        sp = s.sample_prompt
        n = sp.size
        blocks.append(
            np.column_stack(
                (np.full(n, i), s.prompt_ids[sp], s.sample_ids, s.prompt_tokens[sp], s.response_tokens, np.full(n, s.epoch))
            )
        )
    import pandas as pd  # only for writing: keeps `import sim.workload` light

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(np.concatenate(blocks).astype(np.int64), columns=[*TRACE_COLUMNS, "epoch"])
    table.to_csv(path, index=False, lineterminator="\n")
    return path


# ---------------------------------------------------------------------------------------------- factory


def make_workload(
    cfg: "WorkloadConfig",
    dataset: dict[str, Any] | None,
    trace_path: Path | str | None,
    rng: np.random.Generator,
    base_dir: Path,
    model: str | None = None,
) -> Workload:
    """Build the run's workload: trace replay when a trace is given, else the dataset model.

    `dataset` is the datasets.yaml entry or inline mapping (looked up by the caller; when None and
    `cfg.dataset` is a name it is read from workloads/datasets.yaml). With a trace, `dataset` may carry
    `template_tokens` (default 0). `model` is the actor's catalog name: it selects the entry's `by_model`
    override. `rng` is consumed only here (at construction).
    """
    trace = trace_path if trace_path is not None else cfg.trace
    if trace is not None:
        p = Path(trace)
        if not p.is_absolute():
            p = Path(base_dir) / p
        template = 0
        if dataset is not None:
            if not isinstance(dataset, Mapping):
                raise WorkloadError(f"trace workload: expected a mapping with template_tokens, got {dataset!r}")
            template = int(_number("trace workload", "template_tokens", dataset.get("template_tokens", 0), integer=True, minimum=0))
        return read_trace(p, max_prompt_tokens=cfg.max_prompt_tokens, max_response_tokens=cfg.max_response_tokens, template_tokens=template)
    if isinstance(cfg.dataset, str):
        name = repr(cfg.dataset)
    else:
        name = "(inline workload.dataset)"
    if dataset is None:
        if isinstance(cfg.dataset, dict):
            dataset = cfg.dataset
        elif isinstance(cfg.dataset, str):
            from sim.catalog import CatalogError, load_catalog

            try:
                dataset = load_catalog().dataset(cfg.dataset)
            except CatalogError as exc:
                raise WorkloadError(str(exc)) from None
        else:
            raise WorkloadError("workload: neither a dataset nor a trace was given")
    params = parse_dataset(name, dataset, model)
    return DatasetWorkload(
        params,
        prompts_per_iteration=cfg.prompts_per_iteration,
        group_size=cfg.group_size,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_response_tokens=cfg.max_response_tokens,
        dataset_prompts=cfg.dataset_prompts,
        rng=rng,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m sim.workload DATASET --out FILE`: export a sampled workload as a trace CSV."""
    from sim.config import WorkloadConfig

    ap = argparse.ArgumentParser(prog="python -m sim.workload", description=main.__doc__)
    ap.add_argument("dataset", help="a key of workloads/datasets.yaml")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt")
    ap.add_argument("--dataset-prompts", type=int, default=None)
    ap.add_argument("--max-prompt-tokens", type=int, default=1024)
    ap.add_argument("--max-response-tokens", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0, help="seeds np.random.default_rng(seed), used by the workload only")
    ap.add_argument("--model", default=None, help="the actor's catalog name: selects the dataset's by_model override")
    a = ap.parse_args(argv)
    cfg = WorkloadConfig(
        dataset=a.dataset,
        prompts_per_iteration=a.prompts,
        samples_per_prompt=a.samples,
        dataset_prompts=a.dataset_prompts,
        max_prompt_tokens=a.max_prompt_tokens,
        max_response_tokens=a.max_response_tokens,
    )
    try:
        w = make_workload(cfg, None, None, np.random.default_rng(a.seed), Path.cwd(), model=a.model)
        write_trace(w, a.iterations, a.out)
    except WorkloadError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
