"""What a scheduler decides for a phase: where replicas, inference roles and trainers run (frozen plans).

A plan is plain data; the mechanism (sim/rollout/phase.py, sim/phases/iteration.py) checks it and carries
it out. Left out: anything about how the plan is executed (timing, billing, crash handling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sim.schedulers.views import Slot


@dataclass(frozen=True)
class ReplicaSpec:
    """A generation replica: tp GPUs on one node."""

    slots: tuple[Slot, ...]
    gpu_memory_utilization: float = 0.9  # vLLM's default (EngineArgs.gpu_memory_utilization)

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
    prewarm: tuple[Prewarm, ...] = ()
    #: serverless only: keep idle functions of this run warm this long from now on (None: platform default)
    keep_alive_s: float | None = None
    #: serverless only: from now on put functions to sleep as soon as they are idle (True) or keep them
    #: resident until their memory is needed (False); None: the platform's `sleep_idle`
    sleep_idle: bool | None = None
    #: inference that starts on each finished sample: every role placed here takes its GPUs now and is fed
    #: samples as they finish (plan_inference is then not called this iteration). Its GPUs must not be
    #: the rollout replicas'.
    streaming_inference: InferencePlan | None = None


@dataclass(frozen=True)
class TrainingPlan:
    groups: dict[str, tuple[Slot, ...]]  # model -> its FSDP group
    sequential: bool = True  # critic then actor on the same GPUs (verl) or concurrently
    #: the rollout engines share the trainer's GPUs (hybrid engine): weight sync is an in-place reshard
    colocated_rollout: bool = False
    #: fixed cost per iteration of switching trainer <-> rollout mode (colocated engines only)
    mode_switch_s: float = 0.0
    #: functions to start when training starts, for the next iteration (serverless only)
    prewarm: tuple[Prewarm, ...] = ()
