"""One run's lifecycle: build (catalog, models, scheduler, workload, cluster) -> run (SimPy) -> collect (tables).

`simulate(cfg)` is a pure function of the config and its seed: one `numpy.random.Generator` is made from
the seed and split into independent streams for the workload, the scheduler, the platform and dynamic
sampling's group filter, so the same workload is drawn whatever the scheduler (runs under `compare` see
identical lengths and filter the same groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import simpy
from pydantic import ValidationError

from sim.catalog import Catalog, CatalogError, GpuSpec, ModelSpec, gpu_from_mapping, load_catalog, model_from_mapping
from sim.errors import NotImplementedYet  # noqa: F401 (re-exported)
from sim.hardware.cluster import Cluster
from sim.config import ConfigError, ExperimentConfig, format_validation_error
from sim.metrics import build_tables, summarize
from sim.perf import build_perf
from sim.resources.leases import ServerfulAllocator, ServerlessAllocator
from sim.resources.billing import lifetime_intervals, serverful_instances
from sim.resources.platform import ServerlessPlatform
from sim.recipes import Recipe
from sim.phases.iteration import run_iteration, run_startup
from sim.resources.roles import RoleBook
from sim.recording import GpuPool, Recorder, RunContext
from sim.schedulers.base import ClusterView, Scheduler, Slot, StartCost
from sim.schedulers.registry import resolve
from sim.workload import make_workload


@dataclass
class RunResult:
    summary: dict[str, Any]
    iterations: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    completion_s: list[np.ndarray] = field(default_factory=list)
    generated: list[np.ndarray] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)  # busy intervals: for Gantt charts
    #: serverless: (instance, GPUs, bytes per GPU, start, end) of every period an instance held GPU memory
    residency: list[tuple[str, tuple[Slot, ...], float, float, float]] = field(default_factory=list)


def resolve_model(spec: str | dict[str, Any] | None, catalog: Catalog, field_path: str) -> ModelSpec | None:
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


def simulate(
    cfg: ExperimentConfig,
    base_dir: Path | str = ".",
    catalog: Catalog | None = None,
    run_id: str | None = None,
    on_iteration: Callable[[int], None] | None = None,
) -> RunResult:
    """Build, run and collect one experiment config (no `compare`/`sweep` expansion here)."""
    base_dir = Path(base_dir)
    catalog = catalog or load_catalog()
    gpu = resolve_gpu(cfg.cluster.gpu, catalog)
    actor = resolve_model(cfg.model, catalog, "model")
    recipe = Recipe.from_config(cfg)
    algorithm = cfg.workload.algorithm
    critic = resolve_model(cfg.critic, catalog, "critic_model") if recipe.critic else None
    reward = resolve_model(cfg.reward_model, catalog, "reward_model")
    assert actor is not None
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
    perf = build_perf(cfg.perf, gpu, base_dir)
    if cfg.early_exit is not None and cfg.early_exit.enabled:
        from sim.perf.early_exit import build_early_exit

        perf.early_exit = build_early_exit(cfg.early_exit, actor, base_dir)
        perf.early_exit_model = actor.name
    cluster = Cluster(
        gpu,
        cfg.cluster.nodes,
        gpus_per_node,
        cfg.cluster.intra_node_bandwidth_bytes_per_s,
        cfg.cluster.inter_node_bandwidth_bytes_per_s,
        network_efficiency=perf.params.network_efficiency,
    )
    slots = [Slot(n, g) for n in range(cluster.nodes) for g in range(gpus_per_node)]
    env = simpy.Environment()
    rec = Recorder()
    tcfg = cfg.training
    roles = RoleBook(gpu, actor, reference, critic, reward, tcfg.micro_batch_tokens, tcfg.activation_checkpointing, tcfg.offload)
    pool = GpuPool(slots)
    platform = ServerlessPlatform(env, cluster, cfg.platform, platform_rng) if deployment == "serverless" else None
    alloc = ServerlessAllocator(env, platform) if platform is not None else ServerfulAllocator(env, pool)
    ctx = RunContext(
        env=env, cfg=cfg, cluster=cluster, gpu=gpu, actor=actor, critic=critic, reference=reference, reward=reward,
        perf=perf, pool=pool, recorder=rec, deployment=deployment, rng=platform_rng, roles=roles, alloc=alloc,
        recipe=recipe, platform=platform, sampler=sampler,
    )  # fmt: skip

    from sim.hardware.memory import kv_capacity_tokens

    def kv_tokens(tp: int, fraction: float) -> int:
        return kv_capacity_tokens(actor, gpu, tp, fraction)

    cache: dict[str, Any] = {"key": None}

    def platform_state() -> tuple[tuple[Slot, ...], dict[str, int]]:
        key = platform.version if platform is not None else None
        if platform is None:
            return ctx.pool.free(), {}
        if cache["key"] != key:
            cache["key"], cache["free"], cache["warm"] = key, platform.free_slots(), platform.warm_counts()
        return cache["free"], cache["warm"]

    def start_s(role: str, gpus: int, count: int, node: int | None = None) -> tuple[StartCost, ...]:
        if platform is None:
            return (StartCost(0.0, "resident"),) * count
        return platform.start_estimates_s(roles.spec(role, gpus), count, node)

    def view_at(i: int) -> ClusterView:
        free, warm = platform_state()
        return ClusterView(
            now_s=env.now, iteration=i, iterations=cfg.iterations, nodes=cluster.nodes, gpus_per_node=gpus_per_node, gpu=gpu, actor=actor,
            critic=critic, reference=reference, reward=reward, algorithm=algorithm, deployment=deployment,  # type: ignore[arg-type]
            free_slots=free, max_num_seqs=cfg.engine.max_num_seqs, kv_watermark=cfg.engine.kv_watermark,
            kv_capacity_tokens=kv_tokens, transfer_s=cluster.gpu_transfer_s, nodes_by_distance=cluster.nodes_by_distance,
            perf=perf,
            startup_s=(cfg.platform.cold_start.container_s + cfg.platform.cold_start.engine_init_s) if platform else 0.0,
            warm=warm, gpu_sharing=cfg.platform.gpu_sharing if platform else "exclusive", start_s=start_s,
            inference_roles=recipe.inference_roles, trained_models=recipe.trained_models, dynamic_sampling=recipe.dynamic_sampling,
        )  # fmt: skip

    def driver():
        if platform is None:
            yield from run_startup(ctx)  # a serverful job loads its models and starts its engines first
        for i in range(cfg.iterations):
            yield from run_iteration(ctx, scheduler, workload, i, view_at)
            if on_iteration is not None:
                on_iteration(i)
        if platform is not None:
            platform.shutdown()  # the job is over: its functions are torn down, keep-alive or not

    env.run(until=env.process(driver()))

    if platform is not None:
        instances, billed = platform.records(cfg.platform.billing)
    else:
        instances = serverful_instances(slots, env.now)
        billed = lifetime_intervals(instances)
    price = price_per_gpu_hour(cfg, gpu)
    rows, inst_rows = build_tables(rec, instances, cfg.platform.billing, price / 3600.0, billed, by_owner=platform is not None)
    meta = {
        "name": cfg.name, "run_id": run_id or cfg.scheduler.name, "scheduler": cfg.scheduler.name, "deployment": deployment,
        "seed": cfg.seed, "iterations": cfg.iterations, "model": actor.name, "gpu": gpu.name, "gpus": len(slots),
        "price_usd_per_gpu_hour": price,
    }  # fmt: skip
    summary = summarize(rows, inst_rows, meta, rec)
    summary["recipe"] = recipe.describe()
    summary.update(platform_summary(platform, rec))
    if getattr(perf, "early_exit", None) is not None:
        from sim.output.early_exit_report import early_exit_summary

        summary.update(early_exit_summary(cfg, perf.early_exit, actor, rec, summary, base_dir, catalog))
    residency = platform.residency() if platform is not None else []
    return RunResult(summary, rows, inst_rows, rec.completion_s, rec.generated, activity_rows(rec), residency)


def price_per_gpu_hour(cfg: ExperimentConfig, gpu) -> float:
    """Explicit price, else the platform's (preset's) price for this GPU, else the catalog's on-demand price."""
    if cfg.platform.price_usd_per_gpu_hour is not None:
        return cfg.platform.price_usd_per_gpu_hour
    return cfg.platform.prices_usd_per_gpu_hour.get(gpu.name, gpu.price_usd_per_gpu_hour)


def platform_summary(platform, rec: Recorder) -> dict[str, Any]:
    """Serverless extras: start-up seconds, wakes and sleeps, queueing delay, failures and wasted GPU-seconds."""
    gen = [c for (_, phase), c in rec.counters.items() if phase == "generation"]
    lost_tokens = sum(c.get("lost_tokens", 0.0) for c in gen)
    retries = sum(c.get("retries", 0.0) for c in rec.counters.values())
    if platform is None:
        return {"cold_start_s": 0.0, "wakes": 0, "wake_s": 0.0, "sleeps": 0, "prewarms": 0, "queueing_s": 0.0, "failures": 0,
                "wasted_gpu_s": 0.0, "lost_tokens": 0, "retries": 0}  # fmt: skip
    return {
        "cold_start_s": platform.cold_start_time_s,
        "wakes": platform.wakes,
        "wake_s": platform.wake_time_s,
        "sleeps": platform.sleeps,
        "prewarms": platform.prewarms,
        "queueing_s": platform.queue_wait_s,
        "failures": platform.failures,
        "wasted_gpu_s": platform.wasted_gpu_s,
        "lost_tokens": int(lost_tokens),
        "retries": int(retries),
    }


def activity_rows(rec: Recorder) -> list[dict[str, Any]]:
    """Busy intervals as rows: iteration, phase, role, slots ("n0g1;n0g2"), start_s, end_s."""
    return [
        {
            "iteration": a.iteration,
            "phase": a.phase,
            "role": a.role,
            "slots": ";".join(f"n{s.node}g{s.gpu}" for s in a.slots),
            "start_s": float(a.start_s),
            "end_s": float(a.end_s),
            "instance_id": a.owner,
        }
        for a in rec.activities
    ]
