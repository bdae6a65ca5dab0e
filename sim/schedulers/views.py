"""What a scheduler reads: frozen snapshots of the cluster, the batch, the rollout's progress and the work.

Every view is a frozen dataclass of values taken at one instant; none holds a SimPy object or a live
reference into the mechanism, so a scheduler (or its unit test, `sim.schedulers.testing`) can keep one and
read it later. The few callables on `ClusterView` are pure functions bound by the mechanism. Left out: any
way to change the simulation; decisions go back as plans and actions (plans.py, actions.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from sim.catalog import GpuSpec, ModelSpec


@dataclass(frozen=True)
class Slot:
    """One GPU: (node, index on the node)."""

    node: int
    gpu: int


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


class ProgressDetail:
    """The per-sample part of a `GenerationProgress`, as values: each replica's unfinished samples (running
    ones first, in admission order, then queued ones) and the context tokens of at least every unfinished
    sample. Built by `sim.schedulers.testing.generation_progress`; the mechanism's subclass reads the live
    replicas while the scheduler is being called and copies these values if the scheduler keeps the snapshot.
    """

    __slots__ = ("_queues", "_contexts")

    def __init__(self, queues: Sequence[Sequence[int]] = (), contexts: Mapping[int, int] | None = None):
        self._queues: tuple[tuple[int, ...], ...] = tuple(tuple(q) for q in queues)
        self._contexts: Mapping[int, int] = {} if contexts is None else contexts

    def queue(self, replica: int) -> tuple[int, ...]:
        return self._queues[replica] if 0 <= replica < len(self._queues) else ()

    def context(self, sample: int) -> int:
        return self._contexts[sample]


@dataclass(frozen=True)
class GenerationProgress:
    """Passed to `on_generation_event` after completions: per-replica counts and who just finished.

    A snapshot: every field, `unfinished(r)` and `context_tokens(s)` give the values of the instant it was
    taken, however long a scheduler keeps it. (The per-sample detail costs O(samples) to copy, so the
    mechanism copies it only when the scheduler keeps the snapshot past its call; sim/rollout/progress.py.)
    """

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
    detail: ProgressDetail = field(default_factory=ProgressDetail, repr=False, compare=False)

    def unfinished(self, replica: int) -> tuple[int, ...]:
        """The unfinished sample ids on `replica` (running first, then queued); () for an unknown index."""
        return self.detail.queue(replica)

    def context_tokens(self, sample: int) -> int:
        """A sample's prompt plus the tokens it has generated so far (defined for every unfinished sample)."""
        return self.detail.context(sample)


@dataclass(frozen=True)
class InferenceWork:
    iteration: int
    roles: tuple[str, ...]  # the recipe's, e.g. ("actor_logprob", "reference", "critic", "reward"); never empty
    prompt_tokens: np.ndarray  # per sample
    response_tokens: np.ndarray  # per sample


@dataclass(frozen=True)
class TrainingWork:
    iteration: int
    models: tuple[str, ...]  # "actor", and "critic" for PPO (ClusterView.trained_models)
    tokens: int
    attention_pairs: float
    ppo_epochs: int
    mini_batches: int


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
