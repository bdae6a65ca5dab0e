"""The logit lens in torch: hooks on decoder blocks, fp32 lens logits, per-token statistics.

``logits_l = lm_head(final_norm(h_l))`` where ``h_l`` is the raw output of decoder block l,
captured with forward hooks (``output_hidden_states`` is not trusted: in HF models its last
entry already has the final norm applied). All lens math is float32. Supported layouts:

* GPT-2 style: ``model.transformer.h`` (blocks), ``model.transformer.ln_f``, ``model.lm_head``
* Llama family (Llama, Mistral, Qwen2/3, SmolLM, ...): ``model.model.layers``,
  ``model.model.norm``, ``model.lm_head``

Anything else raises :class:`~sim.probe.errors.UnsupportedArchitecture`. Every run checks on
its first batch that the lens at layer L reproduces the model's own logits.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sim.probe.errors import ProbeError, TextTooShort, UnsupportedArchitecture
from sim.probe.metrics import TokenStats

__all__ = [
    "LensParts",
    "Window",
    "capture_blocks",
    "lens_logits_all_layers",
    "lens_parts",
    "plan_windows",
    "run_lens",
]


@dataclass
class LensParts:
    arch: str  # "gpt2" or "llama"
    blocks: Sequence[torch.nn.Module]
    final_norm: torch.nn.Module
    lm_head: torch.nn.Module

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def lens_parts(model: torch.nn.Module) -> LensParts:
    """Find the decoder blocks, final norm and unembedding, or raise UnsupportedArchitecture."""
    lm_head = getattr(model, "lm_head", None)
    transformer = getattr(model, "transformer", None)
    inner = getattr(model, "model", None)
    if (
        isinstance(lm_head, torch.nn.Module)
        and transformer is not None
        and isinstance(getattr(transformer, "h", None), torch.nn.ModuleList)
        and isinstance(getattr(transformer, "ln_f", None), torch.nn.Module)
    ):
        return LensParts("gpt2", list(transformer.h), transformer.ln_f, lm_head)
    if (
        isinstance(lm_head, torch.nn.Module)
        and inner is not None
        and isinstance(getattr(inner, "layers", None), torch.nn.ModuleList)
        and isinstance(getattr(inner, "norm", None), torch.nn.Module)
    ):
        return LensParts("llama", list(inner.layers), inner.norm, lm_head)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "?")
    raise UnsupportedArchitecture(
        f"unsupported architecture {type(model).__name__} (model_type={model_type}): the logit "
        "lens knows GPT-2 style (transformer.h, transformer.ln_f, lm_head) and Llama-family style "
        "(model.layers, model.norm, lm_head) models"
    )


@contextmanager
def capture_blocks(parts: LensParts) -> Iterator[list[torch.Tensor | None]]:
    """Register forward hooks storing each block's raw output; yields the list (index l-1)."""
    store: list[torch.Tensor | None] = [None] * parts.n_layers

    def make_hook(i: int) -> Any:
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            h = output[0] if isinstance(output, (tuple, list)) else output
            store[i] = h.detach()

        return hook

    handles = [block.register_forward_hook(make_hook(i)) for i, block in enumerate(parts.blocks)]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


class _Fp32Lens:
    """final_norm + lm_head in float32 (copies only when the model is not already fp32)."""

    def __init__(self, parts: LensParts) -> None:
        norm = parts.final_norm
        if any(p.dtype != torch.float32 for p in norm.parameters()):
            norm = copy.deepcopy(norm).float()
        self.norm = norm
        self.weight = parts.lm_head.weight.detach().float()
        bias = getattr(parts.lm_head, "bias", None)
        self.bias = None if bias is None else bias.detach().float()

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(h.float()).float()
        return F.linear(x, self.weight, self.bias)


def lens_logits_all_layers(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lens logits of every layer, model logits) for a small batch: shapes (L, B, T, V), (B, T, V).

    Meant for tests and small inputs (it materialises all L layers' vocabulary logits).
    """
    parts = lens_parts(model)
    lens = _Fp32Lens(parts)
    with torch.inference_mode(), capture_blocks(parts) as store:
        out = model(input_ids=input_ids, use_cache=False)
        layers = torch.stack([lens(h) for h in store])  # type: ignore[arg-type]
    return layers, out.logits.float()


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    start: int  # first token of the window (inclusive)
    end: int  # last token + 1
    score_from: int  # first position scored in this window (absolute)
    score_to: int  # last scored position + 1 (absolute)


def plan_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """Cover positions 0..n_tokens-2 exactly once with windows of ``window`` tokens, step ``stride``."""
    if window < 2:
        raise ProbeError(f"window must be >= 2 tokens, got {window}")
    if not 1 <= stride <= window:
        raise ProbeError(f"stride must be in 1..window ({window}), got {stride}")
    if n_tokens < 2:
        raise TextTooShort(f"need at least 2 tokens, got {n_tokens}")
    last = n_tokens - 1  # positions 0..last-1 are scored
    plans: list[Window] = []
    start, scored = 0, 0
    while scored < last:
        end = min(start + window, n_tokens)
        hi = min(end, last)
        if hi > scored:
            plans.append(Window(start, end, scored, hi))
            scored = hi
        start += stride
    return plans


# --------------------------------------------------------------------------- statistics


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two (P, V) tensors (one fused reduction, no (P, V) temporary)."""
    return torch.einsum("pv,pv->p", a, b)


def _cos(a: torch.Tensor, b: torch.Tensor, b_norm: torch.Tensor) -> torch.Tensor:
    a_norm = torch.linalg.vector_norm(a, dim=-1)
    return (_dot(a, b) / (a_norm * b_norm).clamp_min(1e-30)).clamp(-1.0, 1.0)


def _chunk_stats(lens: _Fp32Lens, hs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Statistics for P positions: ``hs[l]`` is (P, d) for layer l+1. Returns (P, L) tensors.

    All in float32. KL(p_L || p_l) = sum p_L log p_L - sum p_L log p_l (two row dot products).
    """
    n_layers = len(hs)
    z_final = lens(hs[-1])
    logp_final = F.log_softmax(z_final, dim=-1)
    p_final = F.softmax(z_final, dim=-1)
    zc_final = z_final - z_final.mean(dim=-1, keepdim=True)
    norms_final = {
        "c": torch.linalg.vector_norm(zc_final, dim=-1),
        "p": torch.linalg.vector_norm(p_final, dim=-1),
        "r": torch.linalg.vector_norm(z_final, dim=-1),
    }
    neg_entropy_final = _dot(p_final, logp_final)
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in
                                           ("top1", "max_prob", "margin", "sim_centered", "sim_prob", "sim_raw", "kl")}
    for layer in range(n_layers):
        last = layer == n_layers - 1
        z = z_final if last else lens(hs[layer])
        logp = logp_final if last else F.log_softmax(z, dim=-1)
        p = p_final if last else F.softmax(z, dim=-1)
        top2 = torch.topk(logp, k=2, dim=-1)
        probs2 = top2.values.exp()
        cols["top1"].append(top2.indices[:, 0])
        cols["max_prob"].append(probs2[:, 0])
        cols["margin"].append(probs2[:, 0] - probs2[:, 1])
        cols["sim_centered"].append(_cos(z - z.mean(dim=-1, keepdim=True), zc_final, norms_final["c"]))
        cols["sim_prob"].append(_cos(p, p_final, norms_final["p"]))
        cols["sim_raw"].append(_cos(z, z_final, norms_final["r"]))
        if last:
            cols["kl"].append(torch.zeros(z.shape[0], dtype=z.dtype, device=z.device))
        else:
            cols["kl"].append((neg_entropy_final - _dot(p_final, logp)).clamp_min(0.0))
    return {k: torch.stack(v, dim=1) for k, v in cols.items()}


def _check_reproduces(lens_final: torch.Tensor, model_logits: torch.Tensor, model_dtype: torch.dtype) -> None:
    if model_dtype == torch.float32:
        scale = float(model_logits.abs().max().clamp_min(1.0))
        diff = float((lens_final - model_logits).abs().max())
        if diff > 1e-3 * scale:
            raise UnsupportedArchitecture(
                f"the lens does not reproduce the model's logits at the last layer (max |diff| {diff:.3g}); "
                "the model probably post-processes logits (e.g. soft-capping) and is not supported"
            )
    else:  # half precision: the model's own logits are rounded; compare predictions
        agree = float((lens_final.argmax(-1) == model_logits.argmax(-1)).float().mean())
        if agree < 0.98:
            raise UnsupportedArchitecture(
                f"the lens does not reproduce the model's predictions at the last layer (top-1 agreement {agree:.3f})"
            )


def run_lens(
    model: torch.nn.Module,
    token_ids: Sequence[int],
    *,
    window: int,
    stride: int,
    batch_size: int = 1,
    chunk: int = 128,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> TokenStats:
    """Run the logit lens over a token sequence; statistics for positions 0..n-2, layers 1..L."""
    parts = lens_parts(model)
    if batch_size < 1:
        raise ProbeError(f"batch size must be >= 1, got {batch_size}")
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    n_tokens = int(ids.numel())
    plans = plan_windows(n_tokens, window, stride)
    if device is None:
        device = next(model.parameters()).device
    model_dtype = next(model.parameters()).dtype
    lens = _Fp32Lens(parts)

    # group windows of equal length so they can share one forward pass
    groups: list[list[Window]] = []
    for w in plans:
        if groups and len(groups[-1]) < batch_size and (groups[-1][0].end - groups[-1][0].start) == (w.end - w.start):
            groups[-1].append(w)
        else:
            groups.append([w])

    from tqdm.auto import tqdm

    results: list[dict[str, np.ndarray]] = []
    checked = False
    bar = tqdm(total=n_tokens - 1, unit="tok", desc="logit lens", disable=None if progress else True, leave=False)
    try:
        with torch.inference_mode(), capture_blocks(parts) as store:
            for group in groups:
                batch = torch.stack([ids[w.start:w.end] for w in group]).to(device)
                out = model(input_ids=batch, use_cache=False)
                hidden = list(store)
                if any(h is None for h in hidden):
                    raise UnsupportedArchitecture("a decoder block produced no output through its forward hook")
                for b, w in enumerate(group):
                    lo, hi = w.score_from - w.start, w.score_to - w.start
                    if not checked:
                        _check_reproduces(lens(hidden[-1][b, lo:hi]), out.logits[b, lo:hi].float(), model_dtype)
                        checked = True
                    for c0 in range(lo, hi, chunk):
                        c1 = min(c0 + chunk, hi)
                        hs = [h[b, c0:c1] for h in hidden]  # type: ignore[index]
                        stats = _chunk_stats(lens, hs)
                        results.append({k: v.cpu().numpy() for k, v in stats.items()})
                        bar.update(c1 - c0)
                del out, hidden
                for i in range(len(store)):
                    store[i] = None
    finally:
        bar.close()

    merged = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
    targets = ids[1:].numpy().astype(np.int64)
    return TokenStats(
        top1=merged["top1"].astype(np.int64),
        max_prob=merged["max_prob"].astype(np.float64),
        margin=merged["margin"].astype(np.float64),
        sim_centered=merged["sim_centered"].astype(np.float64),
        sim_prob=merged["sim_prob"].astype(np.float64),
        sim_raw=merged["sim_raw"].astype(np.float64),
        kl=merged["kl"].astype(np.float64),
        targets=targets,
    )
