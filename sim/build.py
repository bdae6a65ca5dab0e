"""Build one run's objects from its config, each complete in its constructor: models and GPU from the
catalog, the random streams, the scheduler, the workload, the cluster, the performance model, the GPU
pool or serverless platform and their leases, all held by one `RunContext` (sim/context.py).

Nothing is started here (no SimPy process runs until sim/simulation.py runs the environment), and no
input is checked that the config's own validation checks already (sim/config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simpy
from pydantic import ValidationError

from sim.catalog import Catalog, CatalogError, GpuSpec, ModelSpec, gpu_from_mapping, model_from_mapping
from sim.config import ConfigError, ExperimentConfig, format_validation_error
from sim.context import RunContext
from sim.errors import NotImplementedYet
from sim.hardware.cluster import Cluster
from sim.perf import build_perf
from sim.recipes import Recipe
from sim.recording import Recorder
from sim.resources.leases import ServerfulAllocator, ServerlessAllocator
from sim.resources.platform import ServerlessPlatform
from sim.resources.pool import GpuPool
from sim.resources.roles import RoleBook
from sim.schedulers.base import Scheduler
from sim.schedulers.views import Slot
from sim.schedulers.registry import resolve
from sim.workload import Workload, make_workload


@dataclass(frozen=True)
class Run:
    """A built run: its context, the scheduler that plans it, the workload it draws from, its GPUs."""

    ctx: RunContext
    scheduler: Scheduler
    workload: Workload
    slots: tuple[Slot, ...]
    catalog: Catalog
    base_dir: Path


def resolve_model(spec: str | dict[str, Any] | None, catalog: Catalog, field_path: str) -> ModelSpec | None:
    """A model field: a catalog name, or an inline mapping of models.yaml fields (optionally `name`)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return catalog.model(spec)
    name = str(spec.get("name", field_path))
    entry = {k: v for k, v in spec.items() if k != "name"}
    try:
        return model_from_mapping(name, entry, where=f"{field_path} (inline model)")
    except Exception as exc:
        raise ConfigError(f"{field_path}: {exc}") from None


def resolve_gpu(spec: str | dict[str, Any], catalog: Catalog) -> GpuSpec:
    """`cluster.gpu`: a catalog name, or an inline mapping of gpus.yaml fields (optionally `name`, `base`)."""
    if isinstance(spec, str):
        return catalog.gpu(spec)
    try:
        return gpu_from_mapping(spec, catalog, where="cluster.gpu")
    except CatalogError as exc:
        raise ConfigError(str(exc)) from None


def make_scheduler(cfg: ExperimentConfig, rng: np.random.Generator, file: str = "experiment") -> Scheduler:
    """The registered scheduler `scheduler.name` with its validated `scheduler.params`."""
    cls = resolve(cfg.scheduler.name, f"{file}: scheduler.name")  # unknown names and broken plug-ins: ConfigError
    try:
        params = cls.Params.model_validate(cfg.scheduler.params)
    except ValidationError as exc:
        msg = format_validation_error(exc, file)
        raise ConfigError(msg.replace(f"{file}: ", f"{file}: scheduler.params.")) from None
    return cls(params, rng)


def deployment_of(cfg: ExperimentConfig, scheduler: Scheduler) -> str:
    return cfg.platform.kind if scheduler.deployment == "either" else scheduler.deployment


def check_implemented(cfg: ExperimentConfig, deployment: str) -> None:
    if cfg.early_exit is not None and cfg.early_exit.enabled and cfg.perf.model != "roofline":
        raise NotImplementedYet("early_exit: works with perf.model roofline only (a measured table has no per-layer split)")


def build(cfg: ExperimentConfig, base_dir: Path, catalog: Catalog) -> Run:
    """Every object of one run, built in dependency order from the config and its seed."""
    gpu = resolve_gpu(cfg.cluster.gpu, catalog)
    actor = resolve_model(cfg.model, catalog, "model")
    assert actor is not None
    recipe = Recipe.from_config(cfg)
    critic = resolve_model(cfg.critic, catalog, "critic_model") if recipe.critic else None
    reward = resolve_model(cfg.reward_model, catalog, "reward_model")
    reference = actor if recipe.reference else None  # the frozen initial policy: the actor's architecture

    root = np.random.default_rng(cfg.seed)
    # independent streams; the fourth draws dynamic sampling's group filter (spawning four leaves the first
    # three as they were when there were three)
    workload_rng, scheduler_rng, platform_rng, sampling_rng = root.spawn(4)
    scheduler = make_scheduler(cfg, scheduler_rng)
    deployment = deployment_of(cfg, scheduler)
    check_implemented(cfg, deployment)

    dataset = None
    if cfg.workload.dataset is not None:
        dataset = catalog.dataset(cfg.workload.dataset) if isinstance(cfg.workload.dataset, str) else cfg.workload.dataset
    trace = Path(cfg.workload.trace) if cfg.workload.trace else None
    workload = make_workload(cfg.workload, dataset, trace, workload_rng, base_dir, model=actor.name)
    sampler = None
    if recipe.dynamic_sampling:
        from sim.rollout.dynamic_sampling import DynamicSampler

        sampler = DynamicSampler(workload, cfg.workload.dynamic_sampling, cfg.workload.prompts_per_iteration, sampling_rng)

    gpus_per_node = cfg.cluster.gpus_per_node or gpu.gpus_per_node
    early_exit = None
    if cfg.early_exit is not None and cfg.early_exit.enabled:
        from sim.perf.early_exit import build_early_exit

        early_exit = build_early_exit(cfg.early_exit, actor, base_dir)
    perf = build_perf(cfg.perf, gpu, base_dir, early_exit)
    cluster = Cluster(
        gpu,
        cfg.cluster.nodes,
        gpus_per_node,
        cfg.cluster.intra_node_bandwidth_bytes_per_s,
        cfg.cluster.inter_node_bandwidth_bytes_per_s,
        network_efficiency=perf.params.network_efficiency,
    )
    slots = tuple(Slot(n, g) for n in range(cluster.nodes) for g in range(gpus_per_node))
    env = simpy.Environment()
    tcfg = cfg.training
    roles = RoleBook(gpu, actor, reference, critic, reward, tcfg.micro_batch_tokens, tcfg.activation_checkpointing, tcfg.offload)
    pool = GpuPool(list(slots))
    platform = ServerlessPlatform(env, cluster, cfg.platform, platform_rng) if deployment == "serverless" else None
    alloc = ServerlessAllocator(env, platform) if platform is not None else ServerfulAllocator(env, pool)
    ctx = RunContext(
        env=env, cfg=cfg, cluster=cluster, gpu=gpu, actor=actor, critic=critic, reference=reference, reward=reward,
        perf=perf, pool=pool, recorder=Recorder(), deployment=deployment, rng=platform_rng, roles=roles, alloc=alloc,
        recipe=recipe, platform=platform, sampler=sampler,
    )  # fmt: skip
    return Run(ctx, scheduler, workload, slots, catalog, base_dir)
