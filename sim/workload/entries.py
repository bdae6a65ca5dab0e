"""A dataset's length model as written in workloads/datasets.yaml (or inline): parsed and checked strictly.

Every field is named in its error; `by_model` overrides (the lengths are the policy's) are merged over the
entry before parsing. Sampling from the parsed parameters lives in dataset.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from sim.errors import WorkloadError
from sim.yaml_io import deep_merge


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
        merged = deep_merge(base, override)
        model_params = _parse_entry(name, merged, f"{where} (by_model {key})")
        if key == model:
            chosen = model_params
    return chosen



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
