"""Early-exit decoding in the latency model (design.md section 2; docs/early_exit.md).

The operating point (an exit policy at a set of allowed exit layers) comes from a measured profile:
an explicit `threshold`, or the most aggressive measured threshold whose mismatch (the share of tokens
whose exit-layer prediction differs from the full model's) stays within `max_mismatch`; a budget of 0,
or one that no measured threshold meets, gives the oracle `stable` exit.

A batched decode step runs its layers until the deepest token of the batch has exited, so the
layer-proportional part of a step (block weights read, block FLOPs, KV reads, per-layer overheads) is
scaled by the expected maximum exit depth over b tokens,

    g(b) = E[max exit layer] / L = sum_{l<L} (1 - F(l)^b) / L,

computed exactly from the operating point's exit CDF F (on the allowed exit layers). On top come the exit
checks (one at every allowed exit layer the batch reaches: an exit classifier, or a full LM-head
evaluation) and, with `kv_fill: state_copy`, the K/V projections of the layers every token skipped (so
later tokens can attend to them). Prefill and training are unaffected. Because g(b) depends only on the
batch size, a step is still max(compute line, memory line) + overhead in the context, and the engine's
analytic advance stays exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.catalog import ModelSpec
from sim.errors import EarlyExitError  # noqa: F401 (re-exported)
from sim.probe.profile import load_profile
from sim.probe.profile_model import ExitProfile, OperatingPoint, ProfileError, expected_max_depth_fraction

#: candidate exits about every L/8 layers (../shared/research/early_exit.md section 7 item 7)
CANDIDATE_EXITS = 8


@dataclass(frozen=True)
class ExitFactors:
    """Per batch size: the fraction of the layer stack a step runs, checks made, and KV-fill fraction."""

    depth_fraction: float  # g(b)
    checks: float  # expected exit checks per step
    fill_fraction: float  # of a layer stack's K/V projections, for the layers nobody ran


@dataclass(frozen=True)
class Choice:
    """The operating point used, how it was chosen, and what the run must say about it."""

    point: OperatingPoint
    how: str  # "budget" | "oracle" | "fallback" | "explicit"
    warnings: tuple[str, ...] = ()  # shown once by the CLI and kept in summary.json


def default_exit_every(n_layers: int) -> int:
    """Exits about every L/8 layers: k = round(L/8), at least 1."""
    return max(1, int(round(n_layers / CANDIDATE_EXITS)))


def exit_layers(n_layers: int, exit_every: int) -> tuple[int, ...]:
    """Allowed exits: every k-th layer and the last one (1-based profile layers)."""
    return tuple(sorted(set(range(exit_every, n_layers + 1, exit_every)) | {n_layers}))


def most_aggressive(points: list[OperatingPoint], budget: float) -> OperatingPoint | None:
    """The point with the smallest mean exit depth among those whose mismatch is within the budget.

    Ties go to the smaller mismatch, then to the measure and threshold, so the choice is deterministic.
    """
    ok = [p for p in points if p.mismatch <= budget + 1e-12]
    if not ok:
        return None
    return min(ok, key=lambda p: (p.mean_exit_fraction, p.mismatch, p.policy, p.threshold))


def choose(profile: ExitProfile, policy: str | None, threshold: float | None, max_mismatch: float, layers: tuple[int, ...]) -> Choice:
    """Pick the operating point of early_exit (docs/early_exit.md, "Choosing the operating point")."""
    if policy == "stable":
        return Choice(profile.operating_point("stable", None, layers), "explicit")
    if threshold is not None:
        assert policy is not None  # the config refuses a threshold without a measure
        try:
            point = profile.operating_point(policy, threshold, layers)
        except KeyError:
            known = ", ".join(f"{t:g}" for t in sorted(profile.threshold_exits.get(policy, {}))) or "none"
            raise EarlyExitError(
                f"early_exit.threshold: {threshold:g} is not in the profile's {policy!r} grid ({profile.path}); measured thresholds: {known}"
            ) from None
        warnings: tuple[str, ...] = ()
        if point.mismatch > max_mismatch:
            warnings = (
                f"early_exit: {point.label} gives a mismatch of {point.mismatch:.1%} on {profile.model}, above "
                f"max_mismatch {max_mismatch:.1%}: that share of the rollout tokens differ from what the full-depth "
                "policy would emit (off-policy for the trainer)",
            )
        return Choice(point, "explicit", warnings)
    if max_mismatch <= 0:
        return Choice(profile.operating_point("stable", None, layers), "oracle")
    measures = [policy] if policy is not None else sorted(profile.threshold_exits)
    points = profile.threshold_operating_points(layers, measures)
    best = most_aggressive(points, max_mismatch)
    if best is not None:
        return Choice(best, "budget")
    lowest = min(points, key=lambda p: (p.mismatch, p.mean_exit_fraction), default=None)
    detail = f"; the lowest is {lowest.mismatch:.1%} ({lowest.label})" if lowest is not None else ""
    warning = (
        f"early_exit: no measured {' or '.join(measures)} threshold of {profile.model} keeps the mismatch within "
        f"max_mismatch {max_mismatch:.1%}{detail}; using the oracle stable exit instead, an upper bound on the "
        "gain that no deployable confidence rule reaches"
    )
    return Choice(profile.operating_point("stable", None, layers), "fallback", (warning,))


def same_model(profile: ExitProfile, model: ModelSpec) -> bool:
    """Whether the profile was measured on the simulated model (same layer count and matching names)."""
    if profile.n_layers != model.layers:
        return False

    def norm(name: str) -> str:
        return re.sub(r"[^a-z0-9]", "", name.lower())

    a, b = norm(profile.model), norm(model.name)
    return bool(a) and bool(b) and (a in b or b in a)


class EarlyExit:
    """An operating point's exit CDF on the allowed exit layers, and its costs on the simulated model."""

    def __init__(self, profile: ExitProfile, model: ModelSpec, choice: Choice | OperatingPoint, kv_fill: str = "state_copy", check: str = "classifier"):
        self.profile = profile
        self.choice = choice if isinstance(choice, Choice) else Choice(choice, "explicit")
        point = self.choice.point
        self.point = point
        self.check = check
        # parameters read and multiplied by one check: the unembedding, or a d -> 1 exit classifier
        self.check_params = float(model.vocab_size * model.hidden_size) if check == "lm_head" else float(model.hidden_size)
        self.policy = point.policy
        self.kv_fill = kv_fill
        self.allowed = list(point.exit_layers)
        self.cdf = np.asarray(point.cdf, dtype=float)
        # K/V projections as a share of a block's parameters (what state copying recomputes)
        h, kv = model.hidden_size, model.kv_heads * model.head_dim
        self.kv_share = 2.0 * h * kv / max(model.layer_params, 1.0)
        self._cache: dict[int, ExitFactors] = {}

    @property
    def mismatch(self) -> float:
        return self.point.mismatch

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

    def depth_sums(self, steps_by_batch: dict[int, int]) -> tuple[float, float]:
        """(sum over steps of g(b), sum over steps of b * g(b)) for a count of decode steps per batch size."""
        per_step = per_token = 0.0
        for b, k in steps_by_batch.items():
            g = self.factors(b).depth_fraction
            per_step += k * g
            per_token += k * b * g
        return per_step, per_token

    def describe(self, model: ModelSpec) -> dict[str, Any]:
        """The operating point and the profile, as summary.json keys (docs/metrics.md, early_exit_*)."""
        p, pt = self.profile, self.point
        mapping = (
            f"depth fraction: an exit after profile layer l of {p.n_layers} runs l/{p.n_layers} of "
            f"{model.name}'s {model.layers} layers"
        )
        return {
            "early_exit_policy": pt.policy,
            "early_exit_threshold": pt.threshold,
            "early_exit_chosen_by": self.choice.how,
            "early_exit_max_mismatch": None,  # filled in by the caller (the config's budget)
            "early_exit_mismatch_fraction": pt.mismatch,
            "early_exit_mean_exit_fraction": pt.mean_exit_fraction,
            "early_exit_exit_layers": ",".join(str(c) for c in pt.exit_layers),
            "early_exit_check": self.check,
            "early_exit_profile_model": p.model,
            "early_exit_profile_layers": p.n_layers,
            "early_exit_layer_mapping": mapping,
        }


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
    """The early-exit model of an `early_exit:` section for the simulated actor (raises EarlyExitError)."""
    path = resolve_path(cfg.profile, base_dir)
    if not path.exists():
        raise EarlyExitError(f"early_exit.profile: no such file {path}")
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        raise EarlyExitError(f"early_exit.profile: {exc}") from None
    every = cfg.exit_every if cfg.exit_every is not None else default_exit_every(profile.n_layers)
    if every > profile.n_layers:
        raise EarlyExitError(f"early_exit.exit_every: {every} exceeds the profile's {profile.n_layers} layers")
    layers = exit_layers(profile.n_layers, every)
    try:
        choice = choose(profile, cfg.policy, cfg.threshold, cfg.max_mismatch, layers)
    except ProfileError as exc:
        raise EarlyExitError(
            f"early_exit: {exc} (or allow every layer with exit_every: 1, or use policy: stable)"
        ) from None
    if not same_model(profile, model):
        warning = (
            f"early_exit: the profile was measured on {profile.model} ({profile.n_layers} layers) and is applied "
            f"to {model.name} ({model.layers} layers) by depth fraction (an exit after profile layer l runs "
            f"l/{profile.n_layers} of the stack); its mismatch is {profile.model}'s"
        )
        choice = Choice(choice.point, choice.how, choice.warnings + (warning,))
    return EarlyExit(profile, model, choice, cfg.kv_fill, cfg.check)
