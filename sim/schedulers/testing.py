"""Builders of the scheduler views for unit tests, a plug-in's own included: no SimPy, no experiment file.

`cluster_view()` gives the `ClusterView` a run would give at t=0 on a bare cluster (real KV capacity,
topology and performance model from the catalog), `rollout_batch()` a batch, `generation_progress()` a
progress snapshot, `inference_work()`, `training_work()` and `iteration_stats()` the other inputs, each
with defaults you override by keyword; `scheduler()` builds a scheduler from keyword params, and
`registered()` makes a test's scheduler selectable by name for the duration of a `with` block. Left out:
anything that runs the simulation (use `sim.simulation.simulate` for that) and the mechanism's checks of
a plan, which happen when the plan is carried out.

    from sim.schedulers.testing import cluster_view, rollout_batch, scheduler
    plan = scheduler(HalfCluster, rollout_fraction=0.25).plan_generation(cluster_view(nodes=2), rollout_batch())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from sim.schedulers.base import Scheduler
from sim.schedulers.registry import _REGISTRY, problem
from sim.schedulers.views import (
    ClusterView,
    GenerationProgress,
    InferenceWork,
    IterationStats,
    ProgressDetail,
    RolloutBatch,
    Slot,
    StartCost,
    TrainingWork,
)

if TYPE_CHECKING:
    from sim.catalog import GpuSpec, ModelSpec

S = TypeVar("S", bound=Scheduler)


def cluster_view(
    *,
    nodes: int = 1,
    gpus_per_node: int = 8,
    gpu: "str | GpuSpec" = "L40S",
    model: "str | ModelSpec" = "qwen2.5-0.5b",
    deployment: Literal["serverful", "serverless"] = "serverless",
    algorithm: str = "grpo",
    iteration: int = 0,
    iterations: int = 1,
    now_s: float = 0.0,
    free_slots: Sequence[Slot] | None = None,
    start_s: Callable[[str, int, int, int | None], tuple[StartCost, ...]] | Sequence[StartCost] | None = None,
    **fields: Any,
) -> ClusterView:
    """The view of a bare cluster of `nodes` x `gpus_per_node` GPUs running `model` (catalog names or specs).

    `free_slots`: default every GPU. `start_s`: a function as ClusterView has, or the costs of the first
    requests (later ones cost like the last); default: every start resident (free). Any other ClusterView
    field (critic, reward, warm, gpu_sharing, inference_roles, max_num_seqs, learner_node, ...) by keyword.
    Everything else defaults to what a run of an experiment file with default sections gives (`engine`,
    `perf`, and when serverless `platform.gpu_sharing` and the cold start's fixed part as `startup_s`).
    """
    from pathlib import Path

    from sim.catalog import load_catalog
    from sim.config.models import EngineConfig, PerfConfig, PlatformConfig
    from sim.hardware.cluster import Cluster
    from sim.hardware.memory import kv_capacity_tokens
    from sim.perf import build_perf

    catalog = load_catalog()
    gpu_spec = catalog.gpu(gpu) if isinstance(gpu, str) else gpu
    actor = catalog.model(model) if isinstance(model, str) else model
    perf = build_perf(PerfConfig(), gpu_spec, Path("."))  # the experiment file's defaults, as a run builds them
    cluster = Cluster(gpu_spec, nodes, gpus_per_node, network_efficiency=perf.params.network_efficiency)
    engine, platform = EngineConfig(), PlatformConfig()
    every = tuple(Slot(n, g) for n in range(nodes) for g in range(gpus_per_node))
    base: dict[str, Any] = dict(
        now_s=now_s, iteration=iteration, iterations=iterations, nodes=nodes, gpus_per_node=gpus_per_node, gpu=gpu_spec,
        actor=actor, critic=None, reference=actor, reward=None, algorithm=algorithm, deployment=deployment,
        free_slots=every if free_slots is None else tuple(free_slots), max_num_seqs=engine.max_num_seqs,
        kv_watermark=engine.kv_watermark, kv_capacity_tokens=lambda tp, f: kv_capacity_tokens(actor, gpu_spec, tp, f),
        transfer_s=cluster.gpu_transfer_s, nodes_by_distance=cluster.nodes_by_distance, perf=perf,
    )  # fmt: skip
    if deployment == "serverless":  # the platform section's defaults
        base.update(gpu_sharing=platform.gpu_sharing, startup_s=platform.cold_start.container_s + platform.cold_start.engine_init_s)
    if start_s is not None:
        base["start_s"] = start_s if callable(start_s) else _fixed_starts(tuple(start_s))
    base.update(fields)
    return ClusterView(**base)


def _fixed_starts(costs: tuple[StartCost, ...]) -> Callable[..., tuple[StartCost, ...]]:
    if not costs:
        raise ValueError("start_s: give at least one StartCost (or a function)")

    def start_s(role: str, gpus: int, count: int, node: int | None = None) -> tuple[StartCost, ...]:
        return tuple(costs[min(i, len(costs) - 1)] for i in range(count))

    return start_s


def rollout_batch(
    *,
    prompts: int = 16,
    samples_per_prompt: int = 4,
    prompt_tokens: int | Sequence[int] = 100,
    max_response_tokens: int = 1024,
    default_response_tokens: float = 200.0,
    true_response_tokens: Sequence[int] | None = None,
    prompt_ids: Sequence[int] | None = None,
    iteration: int = 0,
    epoch: int = 0,
    template_tokens: int = 0,
    round: int = 0,
) -> RolloutBatch:
    """`prompts` prompts of `samples_per_prompt` adjacent samples each (a GRPO group per prompt)."""
    tokens = np.full(prompts, prompt_tokens, dtype=np.int64) if np.isscalar(prompt_tokens) else np.asarray(prompt_tokens, dtype=np.int64)
    if len(tokens) != prompts:
        raise ValueError(f"prompt_tokens: {len(tokens)} entries for {prompts} prompts")
    truth = None if true_response_tokens is None else np.asarray(true_response_tokens, dtype=np.int64)
    if truth is not None and len(truth) != prompts * samples_per_prompt:
        raise ValueError(f"true_response_tokens: {len(truth)} entries for {prompts * samples_per_prompt} samples")
    return RolloutBatch(
        iteration=iteration, epoch=epoch, prompt_ids=np.arange(prompts) if prompt_ids is None else np.asarray(prompt_ids),
        prompt_tokens=tokens, template_tokens=template_tokens, sample_prompt=np.repeat(np.arange(prompts), samples_per_prompt),
        max_response_tokens=max_response_tokens, default_response_tokens=default_response_tokens, true_response_tokens=truth,
        round=round,
    )  # fmt: skip


class _Uniform(Mapping[int, int]):
    """Every sample has the same context (a test's simplification)."""

    def __init__(self, tokens: int, samples: Sequence[int]):
        self.tokens, self.samples = tokens, tuple(samples)

    def __getitem__(self, sample: int) -> int:
        return self.tokens

    def __iter__(self) -> Iterator[int]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def generation_progress(
    *,
    queues: Sequence[Sequence[int]],
    assigned: Sequence[int] | None = None,
    done: Sequence[int] | None = None,
    running: Sequence[int] | None = None,
    waiting: Sequence[int] | None = None,
    replica: int = 0,
    finished: Sequence[int] = (),
    contexts: int | Mapping[int, int] = 100,
    max_num_seqs: int = 1024,
    free_slots: Sequence[int] | None = None,
    free_kv_tokens: int | Sequence[int] = 1_000_000,
    released: Sequence[bool] | None = None,
    ready: Sequence[bool] | None = None,
    now_s: float = 1.0,
) -> GenerationProgress:
    """A progress snapshot from each replica's unfinished samples (`queues`, running ones first).

    Defaults keep it consistent: every unfinished sample running (`running` = queue length; given a smaller
    `running`, the rest of the queue waits), `assigned` = unfinished + `done`, `done` = 0, `free_slots` = `max_num_seqs` less the
    queue, every replica started and not released. `contexts`: one value for every sample, or per sample.
    """
    k = len(queues)
    q = tuple(tuple(x) for x in queues)
    n_run = [len(x) for x in q] if running is None else list(running)
    n_wait = [max(0, len(x) - r) for x, r in zip(q, n_run)] if waiting is None else list(waiting)
    n_done = [0] * k if done is None else list(done)
    n_assigned = [len(x) + d for x, d in zip(q, n_done)] if assigned is None else list(assigned)
    kv = (free_kv_tokens,) * k if isinstance(free_kv_tokens, int) else tuple(free_kv_tokens)
    lengths = {len(v) for v in (n_run, n_wait, n_done, n_assigned, kv)} | {len(v) for v in (free_slots, released, ready) if v is not None}
    if lengths != {k}:
        raise ValueError(f"per-replica fields must have one entry per replica ({k})")
    ctx = _Uniform(contexts, [s for x in q for s in x]) if isinstance(contexts, int) else contexts
    return GenerationProgress(
        now_s=now_s, replica=replica, finished=tuple(finished), assigned=tuple(n_assigned), done=tuple(n_done),
        running=tuple(n_run), waiting=tuple(n_wait),
        free_slots=tuple(max(0, max_num_seqs - len(x)) for x in q) if free_slots is None else tuple(free_slots),
        released=(False,) * k if released is None else tuple(released), ready=(True,) * k if ready is None else tuple(ready),
        free_kv_tokens=kv, detail=ProgressDetail(q, ctx),
    )  # fmt: skip


def inference_work(
    *, roles: Sequence[str] = ("actor_logprob", "reference"), samples: int = 64, prompt_tokens: int = 100,
    response_tokens: int | Sequence[int] = 200, iteration: int = 0,
) -> InferenceWork:  # fmt: skip
    """The inference phase's work: `samples` samples of the given token counts, for these roles."""
    resp = np.full(samples, response_tokens, dtype=np.int64) if np.isscalar(response_tokens) else np.asarray(response_tokens, dtype=np.int64)
    return InferenceWork(iteration=iteration, roles=tuple(roles), prompt_tokens=np.full(len(resp), prompt_tokens, dtype=np.int64), response_tokens=resp)


def training_work(
    *, models: Sequence[str] = ("actor",), tokens: int = 64 * 300, attention_pairs: float = 64 * 300.0**2 / 2,
    ppo_epochs: int = 1, mini_batches: int = 1, iteration: int = 0,
) -> TrainingWork:  # fmt: skip
    """The training phase's work (defaults: 64 samples of 300 tokens, one epoch, one mini-batch)."""
    return TrainingWork(iteration=iteration, models=tuple(models), tokens=tokens, attention_pairs=attention_pairs, ppo_epochs=ppo_epochs, mini_batches=mini_batches)


def iteration_stats(
    batch: RolloutBatch, response_tokens: Sequence[int], *, duration_s: float = 100.0, phase_s: Mapping[str, float] | None = None,
    rounds: int = 1,
) -> IterationStats:  # fmt: skip
    """What `on_iteration_end` gets after `batch`, with the true lengths revealed."""
    resp = np.asarray(response_tokens, dtype=np.int64)
    if len(resp) != batch.num_samples:
        raise ValueError(f"response_tokens: {len(resp)} entries for {batch.num_samples} samples")
    phases = dict(phase_s) if phase_s is not None else {"generation": 0.6 * duration_s, "inference": 0.1 * duration_s,
                                                         "training": 0.25 * duration_s, "weight_sync": 0.05 * duration_s}  # fmt: skip
    return IterationStats(
        iteration=batch.iteration, epoch=batch.epoch, prompt_ids=batch.prompt_ids, sample_prompt=batch.sample_prompt,
        response_tokens=resp, duration_s=duration_s, phase_s=phases, rounds=rounds,
    )  # fmt: skip


def scheduler(cls: type[S], seed: int = 0, **params: Any) -> S:
    """`cls` with its Params validated from keyword arguments (pydantic errors as the experiment file gets them)."""
    return cls(cls.Params.model_validate(params), np.random.default_rng(seed))


@contextmanager
def registered(*classes: type[Scheduler]) -> Iterator[None]:
    """Make test schedulers selectable by name (`scheduler.name`, `compare`) inside the block, then forget them."""
    saved = {cls.name: _REGISTRY.get(cls.name) for cls in classes}
    for cls in classes:
        reason = problem(cls)
        if reason is not None:
            raise TypeError(f"cannot register {cls.__qualname__}: {reason}")
        _REGISTRY[cls.name] = cls
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                _REGISTRY.pop(name, None)
            else:
                _REGISTRY[name] = old
