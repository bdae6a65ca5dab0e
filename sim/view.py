"""The scheduler's view of a run at an instant (`ClusterView`), built from the run's context.

The view is what a scheduler may read: static facts (cluster, models, engine settings, the recipe's
roles) and the free GPUs and warm functions now. The platform's free/warm state is recomputed only when
the platform's `version` changed since the last view. Nothing here changes the run.
"""

from __future__ import annotations

from sim.context import RunContext
from sim.hardware.memory import kv_capacity_tokens
from sim.schedulers.views import ClusterView, Slot, StartCost


class Views:
    """`views(i)`: the ClusterView of iteration i at the current simulated time."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._key: int | None = None
        self._free: tuple[Slot, ...] = ()
        self._warm: dict[str, int] = {}

    def kv_tokens(self, tp: int, fraction: float) -> int:
        return kv_capacity_tokens(self.ctx.actor, self.ctx.gpu, tp, fraction)

    def platform_state(self) -> tuple[tuple[Slot, ...], dict[str, int]]:
        platform = self.ctx.platform
        if platform is None:
            return self.ctx.pool.free(), {}
        if self._key != platform.version:
            self._key, self._free, self._warm = platform.version, platform.free_slots(), platform.warm_counts()
        return self._free, self._warm

    def start_s(self, role: str, gpus: int, count: int, node: int | None = None) -> tuple[StartCost, ...]:
        platform = self.ctx.platform
        if platform is None:
            return (StartCost(0.0, "resident"),) * count
        return platform.start_estimates_s(self.ctx.roles.spec(role, gpus), count, node)

    def __call__(self, i: int) -> ClusterView:
        ctx = self.ctx
        cfg, cluster, platform, recipe = ctx.cfg, ctx.cluster, ctx.platform, ctx.recipe
        free, warm = self.platform_state()
        return ClusterView(
            now_s=ctx.env.now, iteration=i, iterations=cfg.iterations, nodes=cluster.nodes, gpus_per_node=cluster.gpus_per_node,
            gpu=ctx.gpu, actor=ctx.actor, critic=ctx.critic, reference=ctx.reference, reward=ctx.reward,
            algorithm=cfg.workload.algorithm, deployment=ctx.deployment,  # type: ignore[arg-type]
            free_slots=free, max_num_seqs=cfg.engine.max_num_seqs, kv_watermark=cfg.engine.kv_watermark,
            kv_capacity_tokens=self.kv_tokens, transfer_s=cluster.gpu_transfer_s, nodes_by_distance=cluster.nodes_by_distance,
            perf=ctx.perf,
            startup_s=(cfg.platform.cold_start.container_s + cfg.platform.cold_start.engine_init_s) if platform else 0.0,
            warm=warm, gpu_sharing=cfg.platform.gpu_sharing if platform else "exclusive", start_s=self.start_s,
            inference_roles=recipe.inference_roles, trained_models=recipe.trained_models, dynamic_sampling=recipe.dynamic_sampling,
        )  # fmt: skip
