"""Analytic roofline latency model with efficiency factors and per-layer / per-step overheads.

Decode step (design.md section 2), per replica of tensor-parallel degree tp:

    max(FLOPs / (tp * peak * mfu_decode), bytes / (tp * hbm_bw * hbm_efficiency))
      + step_overhead_s + layers * layer_overhead_s + tensor-parallel all-reduces

FLOPs = 2*P*b + 4*layers*heads*head_dim*C (attention over the total context C); bytes = the weights read
once per step + the KV cache of the whole context. The per-layer term stands for kernel launches and
small kernels that a bandwidth roofline leaves out: the batch-1 decode speeds published for Qwen2.5 on an
A100 (../shared/research/calibration.md section 3.3) are only 39-71% of the bandwidth bound, and the gap
grows with the layer count. The default constants below were fitted to those published speeds by
`bench/fit_decode_overheads.py`; docs/model.md shows the fit's error per model.

Prefill and forward-only inference are compute-bound at these lengths; training costs 6*P*T FLOPs
(8*P*T with activation recomputation) plus FSDP collectives, overlapped with compute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sim.catalog import GpuSpec, ModelSpec
from sim.perf.base import StepCoeffs


@dataclass(frozen=True)
class RooflineParams:
    """Efficiency factors; defaults cite their source (docs/model.md, 'Performance model')."""

    # Fitted (least squares in log space) to the Qwen2.5 vLLM batch-1 speeds on an A100-80GB,
    # calibration.md section 3.3 (QwenLM/Qwen2.5 speed_benchmark.rst); see bench/fit_decode_overheads.py.
    # Result: every published speed (0.5B-72B, TP 1/2/4) within 7.3%; the fit puts the whole fixed cost
    # in the per-layer term (the per-step term came out 0).
    hbm_efficiency: float = 0.82
    layer_overhead_s: float = 115e-6
    step_overhead_s: float = 0.0
    allreduce_latency_s: float = 10.4e-6
    # Decode at large batch and prefill are compute-bound; no public per-phase MFU for vLLM was found,
    # so these are assumptions, stated in docs/model.md (prefill kernels reach roughly half of peak).
    mfu_decode: float = 0.5
    mfu_prefill: float = 0.5
    # Training MFU: calibration.md "Suggested default values": 0.35 (range 0.25-0.45; pre-training
    # reaches 0.38-0.43 on H100, RLHF usually lower).
    mfu_train: float = 0.35
    # Achieved fraction of link bandwidth for collectives and transfers (NCCL bus bandwidth is below the
    # link rate); assumption, docs/model.md.
    network_efficiency: float = 0.8

    def with_overrides(self, overrides: dict[str, Any]) -> "RooflineParams":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


class RooflineReplica:
    """Roofline latency of one model on tp GPUs; decode coefficients cached per batch size."""

    __slots__ = (
        "model", "gpu", "tp", "params", "early_exit", "_cache", "_c0_per_seq", "_c1", "_m0", "_m1", "_fixed_s",
        "_ar_bytes_s", "_flops", "_bw",
    )  # fmt: skip

    def __init__(self, model: ModelSpec, gpu: GpuSpec, tp: int, params: RooflineParams, early_exit=None):
        self.model, self.gpu, self.tp, self.params = model, gpu, tp, params
        self.early_exit = early_exit
        self._cache: dict[int, StepCoeffs] = {}
        flops = tp * gpu.bf16_flops * params.mfu_decode
        bw = tp * gpu.hbm_bandwidth_bytes_per_s * params.hbm_efficiency
        self._c0_per_seq = 2.0 * model.active_params / flops
        self._c1 = 4.0 * model.layers * model.heads * model.head_dim / flops
        self._m0 = model.decode_read_bytes / bw
        self._m1 = model.kv_bytes_per_token / bw
        self._flops, self._bw = flops, bw
        self._fixed_s = params.step_overhead_s + model.layers * params.layer_overhead_s
        # two all-reduces of the hidden state per layer across the tp group (ring: 2*(tp-1)/tp of the bytes)
        if tp > 1:
            link = gpu.intra_node_bandwidth_bytes_per_s * params.network_efficiency
            self._fixed_s += 2 * model.layers * params.allreduce_latency_s
            self._ar_bytes_s = 2 * model.layers * 2.0 * (tp - 1) / tp * model.hidden_size * 2.0 / link
        else:
            self._ar_bytes_s = 0.0

    def _weights_read_s(self, batch: int) -> float:
        """Weight bytes read in one step of b sequences: all of them, or for MoE the experts b tokens reach."""
        m = self.model
        if not m.is_moe:
            return self._m0
        unread_experts = m.expert_params * (1.0 - m.expert_fraction_touched(batch)) * m.bytes_per_param
        return self._m0 - unread_experts / self._bw

    def decode_coeffs(self, batch: int) -> StepCoeffs:
        co = self._cache.get(batch)
        if co is None and self.early_exit is not None:
            co = self._cache[batch] = self._early_exit_coeffs(batch)
        if co is None:
            co = StepCoeffs(
                c0=self._c0_per_seq * batch,
                c1=self._c1,
                m0=self._weights_read_s(batch),
                m1=self._m1,
                overhead_s=self._fixed_s + self._ar_bytes_s * batch,
            )
            self._cache[batch] = co
        return co

    def _early_exit_coeffs(self, batch: int) -> StepCoeffs:
        """The step with its layer-proportional parts scaled by the expected deepest exit (sim/perf/early_exit.py)."""
        m, p = self.model, self.params
        f = self.early_exit.factors(batch)
        g, run = f.depth_fraction, f.depth_fraction + f.fill_fraction
        block_params = m.layer_params * m.layers
        head_params = self.early_exit.check_params
        bpp = m.bytes_per_param
        other_read = m.decode_read_bytes - block_params * bpp
        other_params = m.params - block_params
        block_active = block_params - (m.params - m.active_params)  # MoE: the routed experts actually used
        block_read = block_params * bpp - (self._m0 - self._weights_read_s(batch)) * self._bw
        c0 = (2.0 * (other_params + run * block_active) + f.checks * 2.0 * head_params) * batch / self._flops
        m0 = (other_read + run * block_read + f.checks * head_params * bpp) / self._bw
        layers_s = m.layers * p.layer_overhead_s
        check_launch = p.layer_overhead_s if self.early_exit.check_params > m.hidden_size else 0.0
        overhead = p.step_overhead_s + layers_s * g + f.checks * check_launch
        if self.tp > 1:
            overhead += (2 * m.layers * p.allreduce_latency_s + self._ar_bytes_s * batch) * g
        return StepCoeffs(c0=c0, c1=self._c1 * g, m0=m0, m1=self._m1 * g, overhead_s=overhead)

    def prefill_s(self, new_tokens: float, attention_pairs: float) -> float:
        if new_tokens <= 0:
            return 0.0
        m, p = self.model, self.params
        flops = 2.0 * m.active_params * new_tokens + 4.0 * m.layers * m.heads * m.head_dim * attention_pairs
        compute = flops / (self.tp * self.gpu.bf16_flops * p.mfu_prefill)
        memory = m.decode_read_bytes / (self.tp * self.gpu.hbm_bandwidth_bytes_per_s * p.hbm_efficiency)
        return max(compute, memory) + self._fixed_s + self._ar_bytes_s * new_tokens


class RooflineModel:
    """The default performance model: everything from specs and the efficiency factors."""

    name = "roofline"

    def __init__(self, gpu: GpuSpec, params: RooflineParams | None = None, early_exit=None):
        self.gpu = gpu
        self.params = params or RooflineParams()
        self.early_exit = early_exit  # applies to the decode steps of its own model only (the actor)
        self._replicas: dict[tuple[str, int], RooflineReplica] = {}

    def replica(self, model: ModelSpec, tp: int) -> RooflineReplica:
        key = (model.name, tp)
        rep = self._replicas.get(key)
        if rep is None:
            ee = self.early_exit if self.early_exit is not None and model.name == self.early_exit.model_name else None
            rep = self._replicas[key] = RooflineReplica(model, self.gpu, tp, self.params, ee)
        return rep

    def _flops(self, model: ModelSpec, tokens: float, attention_pairs: float) -> float:
        return 2.0 * model.active_params * tokens + 4.0 * model.layers * model.heads * model.head_dim * attention_pairs

    def forward_s(self, model: ModelSpec, tokens: float, attention_pairs: float, n_gpus: int, ring_bandwidth_bytes_per_s: float) -> float:
        """Forward-only pass (log-probs, values, rewards) of FSDP-sharded model over n_gpus, data parallel."""
        if tokens <= 0:
            return 0.0
        compute = self._flops(model, tokens, attention_pairs) / (n_gpus * self.gpu.bf16_flops * self.params.mfu_train)
        gather = self.fsdp_allgather_s(model, n_gpus, ring_bandwidth_bytes_per_s)
        return max(compute, gather)

    def train_step_s(
        self, model: ModelSpec, tokens: float, attention_pairs: float, n_gpus: int, ring_bandwidth_bytes_per_s: float,
        recompute: bool = True,
    ) -> float:
        """One optimizer step (a mini-batch) of FSDP training: fwd+bwd FLOPs vs collectives, plus the Adam update."""
        if tokens <= 0:
            return 0.0
        factor = 4.0 if recompute else 3.0  # forward (1) + backward (2) + recomputed forward (1)
        compute = factor * self._flops(model, tokens, attention_pairs) / (n_gpus * self.gpu.bf16_flops * self.params.mfu_train)
        # all-gather (forward) + all-gather (backward) + reduce-scatter of gradients, each of the bf16 weights
        comm = 3.0 * self.fsdp_allgather_s(model, n_gpus, ring_bandwidth_bytes_per_s)
        # Adam on the fp32 shard: read/write params, grads, two moments (~32 bytes/param), memory-bound
        # (every parameter, experts included)
        adam = 32.0 * model.params / n_gpus / (self.gpu.hbm_bandwidth_bytes_per_s * self.params.hbm_efficiency)
        return max(compute, comm) + adam

    def fsdp_allgather_s(self, model: ModelSpec, n_gpus: int, ring_bandwidth_bytes_per_s: float) -> float:
        if n_gpus <= 1:
            return 0.0
        bw = ring_bandwidth_bytes_per_s * self.params.network_efficiency
        return model.weight_bytes * (n_gpus - 1) / n_gpus / bw
