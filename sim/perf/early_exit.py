"""Early-exit decoding in the latency model (design.md section 2; docs/early_exit.md).

A batched decode step runs its layers until the deepest token of the batch has exited, so the
layer-proportional part of a step (block weights read, block FLOPs, KV reads, per-layer overheads) is
scaled by the expected maximum exit depth over b tokens,

    g(b) = E[max exit layer] / L = sum_{l<L} (1 - F(l)^b) / L,

computed exactly from the profile's exit CDF F (rounded up to the layers where an exit is allowed). On
top come the exit checks (an LM-head evaluation at every allowed exit layer the batch reaches: vocab x
hidden weights and FLOPs) and, with `kv_fill: state_copy`, the K/V projections of the layers every
token skipped (so later tokens can attend to them). Prefill and training are unaffected. Because g(b)
depends only on the batch size, a step is still max(compute line, memory line) + overhead in the
context, and the engine's analytic advance stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.catalog import ModelSpec
from sim.probe.profile import ExitProfile, ProfileError, expected_max_depth_fraction, load_profile


class EarlyExitError(ValueError):
    """An early-exit setting the profile cannot support; names the file and the setting."""


@dataclass(frozen=True)
class ExitFactors:
    """Per batch size: the fraction of the layer stack a step runs, checks made, and KV-fill fraction."""

    depth_fraction: float  # g(b)
    checks: float  # expected LM-head evaluations per step
    fill_fraction: float  # of a layer stack's K/V projections, for the layers nobody ran


class EarlyExit:
    """The exit CDF chosen by policy/threshold, restricted to allowed exit layers, and its costs."""

    def __init__(
        self, profile: ExitProfile, model: ModelSpec, policy: str, threshold: float, exit_every: int, kv_fill: str,
        check: str = "lm_head",
    ):
        self.profile = profile
        # parameters read and multiplied by one check: the unembedding, or a d -> 1 exit classifier
        self.check_params = float(model.vocab_size * model.hidden_size) if check == "lm_head" else float(model.hidden_size)
        self.policy = policy
        self.kv_fill = kv_fill
        cdf = self._pick_cdf(profile, policy, threshold)
        L = profile.n_layers
        allowed = set(range(exit_every, L + 1, exit_every)) | {L}
        self.allowed = sorted(allowed)
        # a token that could exit at l waits for the next allowed layer >= l
        rounded = np.zeros(L)
        for l_ in range(1, L + 1):
            rounded[l_ - 1] = cdf[l_ - 1] if l_ in allowed else (rounded[l_ - 2] if l_ > 1 else 0.0)
        rounded[-1] = 1.0
        self.cdf = rounded
        # K/V projections as a share of a block's parameters (what state copying recomputes)
        h, kv = model.hidden_size, model.kv_heads * model.head_dim
        self.kv_share = 2.0 * h * kv / max(model.layer_params, 1.0)
        self._cache: dict[int, ExitFactors] = {}

    @staticmethod
    def _pick_cdf(profile: ExitProfile, policy: str, threshold: float) -> np.ndarray:
        if policy == "stable":
            return np.asarray(profile.stable_exit_cdf, dtype=float)
        table = profile.threshold_exits.get(policy, {})
        for thr, entry in table.items():
            if abs(float(thr) - threshold) < 1e-9:
                return np.asarray(entry.cdf, dtype=float)
        known = ", ".join(f"{t:g}" for t in sorted(table)) or "none"
        raise EarlyExitError(
            f"early_exit.threshold: {threshold:g} is not in the profile's {policy!r} grid ({profile.path}); measured thresholds: {known}"
        )

    def factors(self, batch: int) -> ExitFactors:
        f = self._cache.get(batch)
        if f is None:
            L = self.profile.n_layers
            g = expected_max_depth_fraction(self.cdf, batch)
            below = {l_: (self.cdf[l_ - 2] if l_ > 1 else 0.0) for l_ in self.allowed}
            # the check at allowed layer c < L runs if some token is still going at c: P(max exit >= c)
            checks = sum(1.0 - below[c] ** batch for c in self.allowed if c < L)
            fill = (1.0 - g) * self.kv_share if self.kv_fill == "state_copy" else 0.0
            f = self._cache[batch] = ExitFactors(g, checks, fill)
        return f


def resolve_path(path: str, base_dir: Path) -> Path:
    """An input path as written: absolute, relative to the experiment file, or to the working directory."""
    p = Path(path)
    if p.is_absolute():
        return p
    for root in (base_dir, Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / p).exists():
            return root / p
    return base_dir / p


def build_early_exit(cfg, model: ModelSpec, base_dir: Path) -> EarlyExit:
    path = resolve_path(cfg.profile, base_dir)
    if not path.exists():
        raise EarlyExitError(f"early_exit.profile: no such file {path}")
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        raise EarlyExitError(f"early_exit.profile: {exc}") from None
    if cfg.exit_every > profile.n_layers:
        raise EarlyExitError(f"early_exit.exit_every: {cfg.exit_every} exceeds the profile's {profile.n_layers} layers")
    return EarlyExit(profile, model, cfg.policy, cfg.threshold, cfg.exit_every, cfg.kv_fill, cfg.check)
