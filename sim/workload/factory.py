"""Building the run's workload from its config (trace replay or the dataset model), and the
`python -m sim.workload DATASET --out FILE` command that exports a sampled workload as a trace CSV.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from sim.errors import WorkloadError
from sim.workload.base import Workload
from sim.workload.dataset import DatasetWorkload
from sim.workload.entries import _number, parse_dataset
from sim.workload.trace import read_trace, write_trace

if TYPE_CHECKING:  # pragma: no cover
    from sim.config.models import WorkloadConfig


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
    from sim.config.models import WorkloadConfig

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
