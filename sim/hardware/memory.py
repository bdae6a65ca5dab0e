"""GPU memory needs of each kind of work, and the feasibility check that refuses configs that cannot run.

Generation: weights / tp + an engine reserve, the rest of the engine's memory fraction is KV cache.
Training (FSDP, mixed-precision Adam): 16 bytes per parameter sharded over the group (fp32 master
weights, gradients and two moments), two layers of gathered bf16 weights, and activations of one
micro-batch (with full activation checkpointing: each layer's input, 2*h bytes per token per layer,
plus one layer's working set, ~34*h bytes per token, Korthikanti et al. 2022, arXiv 2205.05198) and its
logits (bf16). A config that does not fit is refused unless offloading is enabled.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.catalog import GpuSpec, ModelSpec
from sim.errors import InfeasibleError  # noqa: F401 (re-exported)

#: CUDA context, CUDA graphs, sampler buffers of an inference engine (assumption; vLLM profiles
#: ~1-2 GB outside weights and KV on 7B-class models; docs/model.md)
ENGINE_RESERVE_BYTES = 1.5e9
#: prefill activations an engine keeps room for: max_num_batched_tokens (vLLM/verl default 8192)
ENGINE_BATCHED_TOKENS = 8192
ADAM_BYTES_PER_PARAM = 16.0
#: what restoring a trainer reads: fp32 master weights and two fp32 Adam moments; bf16 weights are cast
#: from the master copy and gradients are recomputed (ZeRO, Rajbhandari et al. 2020, arXiv 1910.02054:
#: 2 + 2 + 12 bytes per parameter, of which the 12 are optimizer state)
CHECKPOINT_BYTES_PER_PARAM = 12.0


@dataclass(frozen=True)
class MemoryNeed:
    phase: str
    need_bytes: float
    capacity_bytes: float
    detail: str

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.capacity_bytes

    def error(self) -> InfeasibleError:
        return InfeasibleError(
            f"{self.phase}: needs {self.need_bytes / 1e9:.1f} GB per GPU but has {self.capacity_bytes / 1e9:.1f} GB ({self.detail})"
        )


def engine_activation_bytes(model: ModelSpec) -> float:
    return ENGINE_BATCHED_TOKENS * (4 * model.hidden_size + 2 * model.mlp_active_width) * 2.0


def kv_capacity_tokens(model: ModelSpec, gpu: GpuSpec, tp: int, memory_fraction: float) -> int:
    """KV-cache tokens a replica of tp GPUs holds under its engine memory fraction (<= 0 if weights do not fit)."""
    budget = tp * gpu.memory_bytes * memory_fraction
    free = budget - model.weight_bytes - tp * (ENGINE_RESERVE_BYTES + engine_activation_bytes(model) / tp)
    return int(free // model.kv_bytes_per_token)


def fsdp_state_bytes(model: ModelSpec, n_gpus: int) -> float:
    return ADAM_BYTES_PER_PARAM * model.params / n_gpus


def forward_peak_bytes(model: ModelSpec, n_gpus: int, micro_batch_tokens: int, vocab_logits: bool = True) -> float:
    """Peak bytes on one GPU of a forward-only FSDP pass (log-probs, values, reward) over n_gpus.

    Its shard of the bf16 weights, two gathered layers, one layer's activations of a micro-batch (no
    backward: nothing is kept across layers) and the output: full-vocabulary logits for log-probs, one
    value per token for a critic or reward head.
    """
    shard = model.weight_bytes / n_gpus
    gathered = 2 * model.layer_params * model.bytes_per_param
    activations = micro_batch_tokens * 34.0 * model.hidden_size
    logits = micro_batch_tokens * (model.vocab_size if vocab_logits else 1) * 2.0
    return shard + gathered + activations + logits


def training_peak_bytes(model: ModelSpec, n_gpus: int, micro_batch_tokens: int, checkpointing: bool, offload: bool) -> float:
    """Peak bytes on one GPU while training `model` with FSDP over n_gpus."""
    state = 0.0 if offload else fsdp_state_bytes(model, n_gpus)
    gathered = 2 * model.layer_params * model.bytes_per_param
    h = model.hidden_size
    per_token_layer = 2.0 * h if checkpointing else 34.0 * h
    activations = micro_batch_tokens * (per_token_layer * model.layers + 34.0 * h)
    logits = micro_batch_tokens * model.vocab_size * 2.0
    return state + gathered + activations + logits


def check_generation(model: ModelSpec, gpu: GpuSpec, tp: int, memory_fraction: float, min_tokens: int, resident_bytes: float = 0.0) -> MemoryNeed:
    """Generation needs weights + a KV cache holding at least one full sequence, next to anything resident."""
    capacity = gpu.memory_bytes
    per_gpu_engine = memory_fraction * gpu.memory_bytes
    kv_tokens = kv_capacity_tokens(model, gpu, tp, memory_fraction)
    if kv_tokens < min_tokens:
        shortfall = (min_tokens - kv_tokens) * model.kv_bytes_per_token / tp
        return MemoryNeed(
            "generation",
            per_gpu_engine + shortfall + resident_bytes,
            capacity,
            f"{model.name} weights {model.weight_bytes / 1e9:.1f} GB over tp={tp} plus KV for {min_tokens} tokens "
            f"do not fit in gpu_memory_utilization={memory_fraction:g} of {gpu.name}",
        )
    return MemoryNeed(
        "generation",
        per_gpu_engine + resident_bytes,
        capacity,
        f"engine {memory_fraction:g} of {gpu.memory_bytes / 1e9:.0f} GB plus {resident_bytes / 1e9:.1f} GB of resident training state",
    )


def check_training(model: ModelSpec, gpu: GpuSpec, n_gpus: int, micro_batch_tokens: int, checkpointing: bool, offload: bool, extra_bytes: float = 0.0) -> MemoryNeed:
    need = training_peak_bytes(model, n_gpus, micro_batch_tokens, checkpointing, offload) + extra_bytes
    return MemoryNeed(
        "training",
        need,
        gpu.memory_bytes,
        f"{model.name} FSDP over {n_gpus} GPUs: {'offloaded' if offload else f'{fsdp_state_bytes(model, n_gpus) / 1e9:.1f} GB'} of "
        f"params/grads/Adam states + activations of {micro_batch_tokens} tokens; set training.offload: true to move states to host memory",
    )
