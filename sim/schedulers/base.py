"""The scheduler interface (design.md section 5): snapshots in, decisions out, as plain data.

A scheduler never touches SimPy objects. It reads a `ClusterView` and the work at hand and returns plans
and actions; the mechanism (`sim/rollout/phase.py`, `sim/phases/iteration.py`) carries them out and checks them.
Built-in schedulers register with `@register`; third-party ones through the `sim.schedulers`
entry-point group. Each has its own pydantic `Params`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from sim.errors import PlanError  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from sim.catalog import GpuSpec, ModelSpec


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Slot:
    """One GPU: (node, index on the node)."""

    node: int
    gpu: int


# ------------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class StartCost:
    """What starting one function would cost if asked now: seconds until it computes, and how it starts."""

    seconds: float
    kind: Literal["resident", "asleep", "cold"]  # reused at once, woken from host memory, or cold-started


def _no_start_cost(role: str, gpus: int, count: int, node: "int | None" = None) -> tuple[StartCost, ...]:
    return (StartCost(0.0, "resident"),) * count


@dataclass(frozen=True)
class ClusterView:
    """What a scheduler may know about the cluster and the job at one instant (read-only)."""

    now_s: float
    iteration: int
    nodes: int
    gpus_per_node: int
    gpu: "GpuSpec"
    actor: "ModelSpec"
    critic: "ModelSpec | None"
    reference: "ModelSpec | None"  # None when the recipe has no KL term (no reference model)
    reward: "ModelSpec | None"
    algorithm: str
    deployment: Literal["serverful", "serverless"]
    free_slots: tuple[Slot, ...]
    max_num_seqs: int
    kv_watermark: float
    # helpers bound by the mechanism; pure functions of their arguments
    kv_capacity_tokens: Callable[[int, float], int] = field(repr=False, compare=False)  # (tp, memory fraction)
    transfer_s: Callable[[int, int, float], float] = field(repr=False, compare=False)  # (src node, dst node, bytes)
    nodes_by_distance: Callable[[int], list[int]] = field(repr=False, compare=False)
    perf: Any = field(repr=False, compare=False, default=None)  # the run's performance model (for predictions)
    learner_node: int = 0
    #: the run's planned number of iterations (a training job's total steps, as verl's total_training_steps)
    iterations: int = 1
    #: serverless only: fixed start-up of a new function (container + engine init), without the weight load
    startup_s: float = 0.0
    #: serverless only: resident idle instances per role right now
    warm: dict[str, int] = field(default_factory=dict, compare=False)
    #: serverless only: how functions hold GPUs, "exclusive" (whole GPUs) or "memory" (shared memory)
    gpu_sharing: str = "exclusive"
    #: what each of `count` new requests of (role, GPUs per instance) would cost to start if asked now,
    #: cheapest first, preferring `node`: 0 s for a resident instance, a wake for a sleeping one, a cold start
    #: for the rest; what the platform would really charge (all resident when serverful)
    start_s: Callable[[str, int, int, "int | None"], tuple[StartCost, ...]] = field(default=_no_start_cost, repr=False, compare=False)
    #: the recipe's roles (sim/recipes.py): the inference phase's roles in order (what InferenceWork.roles
    #: will hold), and the models trained (TrainingWork.models); pre-warm these, and no others
    inference_roles: tuple[str, ...] = ("actor_logprob", "reference")
    trained_models: tuple[str, ...] = ("actor",)
    #: dynamic sampling (DAPO): generation runs in rounds until enough groups with unequal rewards are kept;
    #: a sample is not known to train until its round is scored, so inference cannot start on each finished
    #: sample (a streaming_inference plan is ignored), and a learned reward scores every round
    #: (plan_inference is called after each round with InferenceWork.roles == ("reward",))
    dynamic_sampling: bool = False

    def slots_on(self, node: int) -> list[Slot]:
        return [s for s in self.free_slots if s.node == node]


@dataclass(frozen=True)
class RolloutBatch:
    """The prompts of one iteration. Response lengths are hidden unless the scheduler is an oracle."""

    iteration: int
    epoch: int
    prompt_ids: np.ndarray
    prompt_tokens: np.ndarray
    template_tokens: int
    sample_prompt: np.ndarray  # per sample: index into the prompt arrays
    max_response_tokens: int
    default_response_tokens: float  # the workload's prior mean response length
    true_response_tokens: np.ndarray | None = None  # only for schedulers with `oracle = True`
    #: generation round of this step (dynamic sampling: 0, 1, ... until the batch is full; always 0 otherwise)
    round: int = 0

    @property
    def num_samples(self) -> int:
        return int(len(self.sample_prompt))


@dataclass(frozen=True)
class ReplicaSpec:
    """A generation replica: tp GPUs on one node."""

    slots: tuple[Slot, ...]
    gpu_memory_utilization: float = 0.9

    @property
    def tp(self) -> int:
        return len(self.slots)

    @property
    def node(self) -> int:
        return self.slots[0].node


@dataclass(frozen=True)
class Prewarm:
    """Have a function instance of `role` loaded for a later phase (serverless), starting `after_s` from now.

    Roles: rollout, prefill, actor_logprob, reference, critic, reward, actor_trainer, critic_trainer.
    The slots give the size, the FSDP group (an instance per node they span) and the preferred GPUs. A
    sleeping instance is woken, a resident one kept; otherwise one is cold-started: with memory sharing as
    soon as its memory fits, with exclusive GPUs only if GPUs are free then.
    """

    role: str
    slots: tuple[Slot, ...]
    after_s: float = 0.0
    gpu_memory_utilization: float | None = None  # engine roles: its memory share (default: the engine's)


@dataclass(frozen=True)
class GenerationPlan:
    replicas: tuple[ReplicaSpec, ...]
    assignment: np.ndarray  # per sample: replica index
    #: deduplicated prefill: a prefill actor (on `prefill`'s GPUs) computes shared prefixes once and ships
    #: their KV to the decode replicas, which then prefill only the rest
    prefix_dedup: bool = False
    prefill: ReplicaSpec | None = None
    #: "prompt": every distinct prompt once (a GRPO group's samples share it wherever they run);
    #: "template": only the leading tokens shared by all prompts
    dedup_scope: Literal["prompt", "template"] = "prompt"
    #: functions to start now for later phases (serverless only; ignored when serverful)
    prewarm: tuple["Prewarm", ...] = ()
    #: serverless only: keep idle functions of this run warm this long from now on (None: platform default)
    keep_alive_s: float | None = None
    #: serverless only: from now on put functions to sleep as soon as they are idle (True) or keep them
    #: resident until their memory is needed (False); None: the platform's `sleep_idle`
    sleep_idle: bool | None = None
    #: inference that starts on each finished sample: every role placed here takes its GPUs now and is fed
    #: samples as they finish (plan_inference is then not called this iteration). Its GPUs must not be
    #: the rollout replicas'.
    streaming_inference: "InferencePlan | None" = None


@dataclass(frozen=True)
class GenerationProgress:
    """Passed to `on_generation_event` after completions: per-replica counts and who just finished."""

    now_s: float
    replica: int  # where the completions happened
    finished: tuple[int, ...]  # sample indices that just finished
    assigned: tuple[int, ...]  # per replica: samples ever assigned
    done: tuple[int, ...]  # per replica: samples finished there
    running: tuple[int, ...]  # per replica: sequences in its batch
    waiting: tuple[int, ...]  # per replica: sequences queued
    free_slots: tuple[int, ...]  # per replica: how many more sequences its batch could take now
    released: tuple[bool, ...]
    ready: tuple[bool, ...] = ()  # per replica: started (its instance is warm); False while cold-starting
    free_kv_tokens: tuple[int, ...] = ()  # per replica: KV tokens it could still admit
    #: unfinished sample ids on a replica, and their current context (prompt + generated) tokens
    unfinished: Callable[[int], tuple[int, ...]] = field(default=lambda r: (), repr=False, compare=False)
    context_tokens: Callable[[int], int] = field(default=lambda s: 0, repr=False, compare=False)


@dataclass(frozen=True)
class Migrate:
    """Move unfinished samples (all if `samples` is None) from one replica to another, with their KV."""

    src: int
    dst: int
    samples: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Release:
    """Stop a replica (it must be empty or emptied by Migrate actions returned before this one)."""

    replica: int


@dataclass(frozen=True)
class ScaleOut:
    """Start a new replica and give it these waiting samples (moved from their replicas' queues)."""

    replica: ReplicaSpec
    samples: tuple[int, ...] = ()


Action = Migrate | Release | ScaleOut


@dataclass(frozen=True)
class InferenceWork:
    iteration: int
    roles: tuple[str, ...]  # the recipe's, e.g. ("actor_logprob", "reference", "critic", "reward"); never empty
    prompt_tokens: np.ndarray  # per sample
    response_tokens: np.ndarray  # per sample


@dataclass(frozen=True)
class RolePlan:
    """Where one inference role runs: data-parallel groups of GPUs (each an FSDP group)."""

    role: str
    groups: tuple[tuple[Slot, ...], ...]
    assignment: np.ndarray | None = None  # per sample: group index; None = split evenly in order


@dataclass(frozen=True)
class InferencePlan:
    roles: tuple[RolePlan, ...]
    sequential: bool = True  # roles one after another (colocated) or all at once (disaggregated)
    #: sample-level fusion (serverful): GPUs of replicas released during generation start inference early
    fuse_with_generation: bool = False


@dataclass(frozen=True)
class TrainingWork:
    iteration: int
    models: tuple[str, ...]  # "actor", and "critic" for PPO (ClusterView.trained_models)
    tokens: int
    attention_pairs: float
    ppo_epochs: int
    mini_batches: int


@dataclass(frozen=True)
class TrainingPlan:
    groups: dict[str, tuple[Slot, ...]]  # model -> its FSDP group
    sequential: bool = True  # critic then actor on the same GPUs (verl) or concurrently
    #: the rollout engines share the trainer's GPUs (hybrid engine): weight sync is an in-place reshard
    colocated_rollout: bool = False
    #: fixed cost per iteration of switching trainer <-> rollout mode (colocated engines only)
    mode_switch_s: float = 0.0
    #: functions to start when training starts, for the next iteration (serverless only)
    prewarm: tuple["Prewarm", ...] = ()


@dataclass(frozen=True)
class IterationStats:
    iteration: int
    epoch: int
    prompt_ids: np.ndarray
    sample_prompt: np.ndarray
    response_tokens: np.ndarray  # what was generated: the truth, revealed after the iteration
    duration_s: float
    phase_s: dict[str, float]
    #: generation rounds the step took (dynamic sampling; 1 otherwise); the arrays above cover every round
    rounds: int = 1


# ------------------------------------------------------------------------------------------- base
class Scheduler:
    """Base class: subclass, set `name`, `deployment`, `Params`, and override the plan methods."""

    name: ClassVar[str] = ""
    #: "serverful" (every GPU billed for the whole run), "serverless", or "either" (platform.kind decides)
    deployment: ClassVar[str] = "either"
    Params: ClassVar[type[BaseModel]] = NoParams
    #: schedulers that set this see the true response lengths in RolloutBatch (upper-bound baselines)
    oracle: ClassVar[bool] = False
    #: set False to skip on_generation_event calls (saves work on the engine's hot path)
    observes_generation: ClassVar[bool] = True

    def __init__(self, params: BaseModel, rng: np.random.Generator):
        self.params = params
        self.rng = rng

    def plan_generation(self, view: ClusterView, batch: RolloutBatch) -> GenerationPlan:
        raise NotImplementedError

    def on_generation_event(self, view: ClusterView, progress: GenerationProgress) -> list[Action]:
        return []

    def plan_inference(self, view: ClusterView, work: InferenceWork) -> InferencePlan:
        raise NotImplementedError

    def plan_training(self, view: ClusterView, work: TrainingWork) -> TrainingPlan:
        raise NotImplementedError

    def on_iteration_end(self, stats: IterationStats) -> None:
        return None


# ------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Scheduler]] = {}
ENTRY_POINT_GROUP = "sim.schedulers"


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator for built-in schedulers."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    _REGISTRY[cls.name] = cls
    return cls


#: each built-in scheduler's module, in the order `available()` lists them (a test checks this against the
#: registry): `lookup` imports only the module of the scheduler asked for
BUILTIN_MODULES = {
    "verl": "sim.schedulers.verl",
    "rlhfless": "sim.schedulers.rlhfless",
    "oracle": "sim.schedulers.rlhfless",
    "rlhfuse": "sim.schedulers.rlhfuse",
    "serverless": "sim.schedulers.serverless",
}


def _load_builtins(name: str | None = None) -> None:
    """Import the built-in schedulers' modules (they register themselves), or only the one of `name`."""
    from importlib import import_module

    for module in dict.fromkeys(BUILTIN_MODULES.values()) if name is None else (BUILTIN_MODULES[name],):
        import_module(module)


def available() -> dict[str, type[Scheduler]]:
    """Built-ins plus plug-ins from the `sim.schedulers` entry-point group (a plug-in may not shadow a built-in)."""
    _load_builtins()
    found = {name: _REGISTRY[name] for name in BUILTIN_MODULES if name in _REGISTRY}
    found.update(_REGISTRY)  # and any registered otherwise (a test's)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in must not break the built-ins
            found.setdefault(ep.name, _broken(ep.name, exc))
            continue
        if isinstance(cls, type) and issubclass(cls, Scheduler):
            found[ep.name] = cls
    return found


def lookup(name: str) -> type[Scheduler] | None:
    """`available().get(name)`, without scanning the installed packages' entry points for a built-in name
    (a plug-in may not shadow one): that scan reads every distribution's metadata, tens of ms per call."""
    if name in BUILTIN_MODULES:
        _load_builtins(name)
    cls = _REGISTRY.get(name)
    return cls if cls is not None else available().get(name)


def _broken(name: str, exc: Exception) -> type[Scheduler]:
    class Broken(Scheduler):
        error = f"plug-in {name!r} failed to load: {exc}"

    Broken.name = name
    return Broken
