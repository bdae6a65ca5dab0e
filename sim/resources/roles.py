"""What each RLHF role holds and moves as a function instance: one typed description per role.

A role (rollout, prefill, actor log-prob, reference, reward, critic values, actor and critic trainers) is a
model, a kind of work and a memory footprint. The platform reads a `FunctionSpec` for every cold start
(the bytes it reads from storage), wake (the bytes copied back from host memory), sleep, eviction and
billing; pre-warming asks for the same specs as the work that follows it, so a pre-warmed instance is
exactly the one its phase will use. Footprints come from `sim.hardware.memory`.

Kinds:
- engine (rollout, prefill): a vLLM-like engine that claims `memory_fraction` of each GPU (weights + KV
  pool + reserve) and holds the whole tensor-parallel group's weights;
- forward (actor log-prob, reference, critic values, reward): FSDP forward passes; each GPU holds its
  shard of the bf16 weights plus two gathered layers and one micro-batch's activations;
- trainer (actor, critic): FSDP training state of its shard (sim.hardware.memory.training_peak_bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from sim.catalog import GpuSpec, ModelSpec
from sim.errors import RoleError  # noqa: F401 (re-exported)
from sim.hardware.memory import CHECKPOINT_BYTES_PER_PARAM, forward_peak_bytes, training_peak_bytes

ROLLOUT = "rollout"
PREFILL = "prefill"
ACTOR_LOGPROB = "actor_logprob"
REFERENCE = "reference"
REWARD = "reward"
CRITIC = "critic"
ACTOR_TRAINER = "actor_trainer"
CRITIC_TRAINER = "critic_trainer"

ENGINE_ROLES = (ROLLOUT, PREFILL)
FORWARD_ROLES = (ACTOR_LOGPROB, REFERENCE, CRITIC, REWARD)
TRAINER_ROLES = (ACTOR_TRAINER, CRITIC_TRAINER)
ROLES = ENGINE_ROLES + FORWARD_ROLES + TRAINER_ROLES

Kind = Literal["engine", "forward", "trainer"]


@dataclass(frozen=True)
class FunctionSpec:
    """One function instance of a role: its model, identity, size and the bytes it holds and moves.

    `key` is the warm-pool and host-cache identity (instances are reused only within a role and key);
    `tracks` names the trained weights it serves ("actor" or "critic"), which a weight sync makes stale.
    """

    role: str
    kind: Kind
    model: ModelSpec
    key: str
    gpus: int
    resident_bytes_per_gpu: float  # GPU memory it holds on each of its GPUs while resident
    load_bytes: float  # read from storage (or a host cache) by a cold start, whole instance
    first_load_bytes: float  # the first cold start of the run (a trainer has no optimizer state yet)
    wake_bytes: float  # copied host -> GPU by a wake (and GPU -> host by a sleep), whole instance
    tracks: str | None = None

    @property
    def name(self) -> str:
        """The host-cache identity (kept for code that treats a spec like a model)."""
        return self.key


class RoleBook:
    """Builds the FunctionSpec of every role of one run (models, GPU type and training options fixed)."""

    def __init__(
        self,
        gpu: GpuSpec,
        actor: ModelSpec,
        reference: ModelSpec | None,
        critic: ModelSpec | None,
        reward: ModelSpec | None,
        micro_batch_tokens: int,
        activation_checkpointing: bool,
        offload: bool,
    ):
        self.gpu = gpu
        self.actor, self.reference, self.critic, self.reward = actor, reference, critic, reward
        self.micro_batch_tokens = micro_batch_tokens
        self.checkpointing = activation_checkpointing
        self.offload = offload
        self.spec = lru_cache(maxsize=None)(self._spec)

    def model(self, role: str) -> ModelSpec:
        """The model a role runs; RoleError when this run has none for it."""
        models = {
            ROLLOUT: self.actor, PREFILL: self.actor, ACTOR_LOGPROB: self.actor, ACTOR_TRAINER: self.actor,
            REFERENCE: self.reference, CRITIC: self.critic, CRITIC_TRAINER: self.critic, REWARD: self.reward,
        }  # fmt: skip
        if role not in models:
            raise RoleError(f"unknown function role {role!r}; roles: {', '.join(ROLES)}")
        model = models[role]
        if model is None:
            raise RoleError(f"role {role!r} has no model in this run")
        return model

    def key(self, role: str) -> str:
        """Warm-pool / host-cache identity: roles serving the current actor weights share the actor's."""
        model = self.model(role)
        if role in (ROLLOUT, PREFILL, ACTOR_LOGPROB):
            return model.name
        return f"{model.name}#{role.replace('_trainer', '-train')}"

    def _spec(self, role: str, gpus: int, group_gpus: int | None = None, memory_fraction: float = 0.9) -> FunctionSpec:
        """The spec of an instance of `gpus` GPUs; `group_gpus` is its FSDP group (default: the instance),
        `memory_fraction` the engine's share of each GPU (engine roles only)."""
        model = self.model(role)
        group = max(group_gpus or gpus, gpus)
        share = gpus / group  # this instance's part of a group that spans several nodes
        tracks = "actor" if role in (ROLLOUT, PREFILL, ACTOR_LOGPROB) else ("critic" if role == CRITIC else None)
        if role in ENGINE_ROLES:
            kind: Kind = "engine"
            resident = memory_fraction * self.gpu.memory_bytes
            load = first = wake = model.weight_bytes  # the whole tensor-parallel group's bf16 weights
        elif role in FORWARD_ROLES:
            kind = "forward"
            vocab_logits = role in (ACTOR_LOGPROB, REFERENCE)  # critic and reward heads output one value per token
            resident = forward_peak_bytes(model, group, self.micro_batch_tokens, vocab_logits)
            load = first = wake = model.weight_bytes * share
        else:
            kind = "trainer"
            resident = training_peak_bytes(model, group, self.micro_batch_tokens, self.checkpointing, self.offload)
            # restoring a trainer reads its shard of fp32 master weights and Adam moments; the very first
            # start reads the bf16 checkpoint and builds that state on the GPU
            load = wake = CHECKPOINT_BYTES_PER_PARAM * model.params * share
            first = model.weight_bytes * share
        return FunctionSpec(role, kind, model, self.key(role), gpus, float(resident), float(load), float(first), float(wake), tracks)
