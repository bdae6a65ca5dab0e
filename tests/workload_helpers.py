"""Shared by the tests of test_workload_dataset.py, test_workload_trace.py: the base experiments and small helpers they build on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.config import WorkloadConfig
from sim.workload import DatasetWorkload, RolloutSamples, make_workload

ROOT = Path(__file__).resolve().parent.parent
DATASETS = yaml.safe_load((ROOT / "workloads" / "datasets.yaml").read_text())
ARRAYS = ("prompt_ids", "prompt_tokens", "sample_prompt", "sample_ids", "response_tokens")


def build(seed: int = 0, dataset: Any = "gsm8k", **kw: Any) -> DatasetWorkload:
    kw.setdefault("prompts_per_iteration", 16)
    kw.setdefault("samples_per_prompt", 4)
    cfg = WorkloadConfig(dataset=dataset, **kw)
    entry = DATASETS[dataset] if isinstance(dataset, str) else dataset
    w = make_workload(cfg, entry, None, np.random.default_rng(seed), ROOT)
    assert isinstance(w, DatasetWorkload)
    return w


def inline(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "num_prompts": 200,
        "template_tokens": 10,
        "prompt_tokens": {"median": 50, "sigma": 0.3},
        "response_tokens": {"median": 200, "sigma_prompt": 0.3, "sigma_epoch": 0.1, "sigma_sample": 0.1},
    }
    d.update(over)
    return d


def same(a: RolloutSamples, b: RolloutSamples) -> bool:
    return (
        a.iteration == b.iteration
        and a.epoch == b.epoch
        and a.template_tokens == b.template_tokens
        and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ARRAYS)
    )


def group_means(s: RolloutSamples) -> dict[int, float]:
    sums = np.bincount(s.sample_prompt, weights=s.response_tokens)
    counts = np.bincount(s.sample_prompt)
    return dict(zip(s.prompt_ids.tolist(), (sums / counts).tolist()))


def per_epoch_group_means(w: DatasetWorkload, epochs: int) -> list[dict[int, float]]:
    per_iter = w.pool_size // w.prompts_per_iteration
    assert per_iter * w.prompts_per_iteration == w.pool_size
    out = []
    for e in range(epochs):
        m: dict[int, float] = {}
        for i in range(e * per_iter, (e + 1) * per_iter):
            assert w.iteration(i).epoch == e
            m.update(group_means(w.iteration(i)))
        out.append(m)
    return out


def check_shapes(s: RolloutSamples, cap: int) -> None:
    P, S = s.prompt_ids.size, s.response_tokens.size
    assert s.prompt_tokens.size == P and s.sample_prompt.size == S and s.sample_ids.size == S
    assert np.all(np.diff(s.sample_prompt) >= 0) and set(s.sample_prompt.tolist()) == set(range(P))
    counts = np.bincount(s.sample_prompt, minlength=P)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    assert np.array_equal(s.sample_ids, np.arange(S) - np.repeat(starts, counts))
    assert s.response_tokens.min() >= 1 and s.response_tokens.max() <= cap
    assert len(set(s.prompt_ids.tolist())) == P
