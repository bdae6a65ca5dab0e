"""Early-exit profiles' data model (the JSON files in ``traces/exit_profiles/``) and the exact batch formula.

Pure numpy (never imports torch), so the simulator can use it without the ``probe`` extra. The schema and
every definition are in ``docs/early_exit.md`` and in each file's own ``definitions`` block; reading and
checking a file lives in profile.py.

Layers are numbered 1..L. ``stable_exit_cdf[l-1]`` is F(l) = P(exit layer <= l), so the last
element is 1.0. For a static batch that waits for its slowest token, the expected executed depth
is E[max of b iid exit layers] = sum_{l=0}^{L-1} (1 - F(l)^b), with F(0) = 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=float)
    arr.setflags(write=False)
    return arr


#: top-level keys every profile must have
REQUIRED_KEYS = (
    "model",
    "n_layers",
    "text",
    "n_tokens",
    "settings",
    "definitions",
    "synthetic",
    "per_layer",
    "stable_exit_cdf",
    "threshold_exits",
    "eas",
    "mean_stable_exit_fraction",
    "expected_max_depth_fraction",
)
#: lists of length n_layers every profile must have under ``per_layer``
PER_LAYER_KEYS = ("top1_agreement", "similarity", "kl")
#: confidence measures every profile must have under ``threshold_exits``
THRESHOLD_MEASURES = ("max_prob", "margin")

_CDF_ATOL = 1e-9  # tolerance for "ends at 1" and for monotonicity (float round-off)
_CONSISTENCY_ATOL = 1e-6  # stored scalars vs values recomputed from the CDF


class ProfileError(ValueError):
    """An invalid profile file; the message names the file and the offending key."""


# --------------------------------------------------------------------------- the formula


def check_cdf(cdf: Any, *, n_layers: int | None = None, what: str = "cdf") -> np.ndarray:
    """Validate an exit-layer CDF over layers 1..L and return it as a float array.

    Raises ``ValueError`` (message starts with ``what``) unless ``cdf`` is a non-empty 1-D
    sequence of finite numbers in [0, 1], non-decreasing, whose last element is 1.
    """
    try:
        arr = np.asarray(cdf, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not a list of numbers ({exc})") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: must be a non-empty 1-D list, got shape {arr.shape}")
    if n_layers is not None and arr.size != n_layers:
        raise ValueError(f"{what}: has {arr.size} entries, expected n_layers = {n_layers}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: contains a non-finite value")
    if arr.min() < -_CDF_ATOL or arr.max() > 1 + _CDF_ATOL:
        raise ValueError(f"{what}: values must lie in [0, 1]")
    steps = np.diff(arr)
    if steps.size and steps.min() < -_CDF_ATOL:
        i = int(np.argmin(steps))
        raise ValueError(
            f"{what}: not non-decreasing at layer {i + 2} ({arr[i]!r} then {arr[i + 1]!r})"
        )
    if abs(arr[-1] - 1.0) > _CDF_ATOL:
        raise ValueError(f"{what}: last element must be 1.0 (every token exits by layer L), got {arr[-1]!r}")
    return np.clip(arr, 0.0, 1.0)


def expected_max_depth_fraction(cdf: Sequence[float] | np.ndarray, batch: int) -> float:
    """E[max exit layer over ``batch`` iid tokens] / L, exactly, from an exit-layer CDF.

    ``cdf[l-1] = F(l) = P(exit <= l)`` for l = 1..L (last element 1). With F(0) = 0,
    ``E[max] = sum_{l=0}^{L-1} P(max > l) = sum_{l=0}^{L-1} (1 - F(l)**batch)``.
    ``batch = 1`` gives the mean exit fraction; it tends to 1 as the batch grows whenever
    some tokens need every layer.
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)):
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    if batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    arr = check_cdf(cdf)
    n_layers = arr.size
    below = np.concatenate(([0.0], arr[:-1]))  # F(0), F(1), ..., F(L-1)
    return float(np.sum(1.0 - below ** int(batch)) / n_layers)


def rounded_cdf(cdf: Sequence[float] | np.ndarray, exit_layers: Sequence[int]) -> np.ndarray:
    """The CDF of "exit at the first allowed layer >= the layer the token could leave at".

    ``exit_layers`` are the allowed exits (1-based, ascending, the last one L). F'(l) = F(c) for the
    largest allowed c <= l, and 0 below the first allowed layer.
    """
    arr = np.asarray(cdf, dtype=float)
    out = np.zeros_like(arr)
    allowed = set(int(c) for c in exit_layers)
    last = 0.0
    for l_ in range(1, arr.size + 1):
        if l_ in allowed:
            last = float(arr[l_ - 1])
        out[l_ - 1] = last
    out[-1] = 1.0
    return out


# --------------------------------------------------------------------------- the dataclass


@dataclass(frozen=True)
class ThresholdExit:
    """Exit-layer distribution of one confidence-threshold policy."""

    measure: str  # "max_prob" or "margin"
    threshold: float
    cdf: np.ndarray  # F(l), l = 1..L
    error_rate: float  # fraction of tokens whose exit-layer top-1 != final top-1

    @property
    def mean_exit_fraction(self) -> float:
        return expected_max_depth_fraction(self.cdf, 1)

    def expected_max_depth_fraction(self, batch: int) -> float:
        return expected_max_depth_fraction(self.cdf, batch)


@dataclass(frozen=True)
class TokenData:
    """The profile's per-position ``tokens`` block, decoded (see its ``definitions['tokens']``)."""

    agrees: np.ndarray  # bool (P, L): top-1 at layer l equals the final top-1
    thresholds: Mapping[str, np.ndarray]  # measure -> ascending thresholds
    levels: Mapping[str, np.ndarray]  # measure -> uint8 (P, L): thresholds passed at layer l

    @property
    def n_positions(self) -> int:
        return int(self.agrees.shape[0])

    def threshold_exits(self, measure: str, threshold: float, exit_layers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(exit layer, mismatch flag) per position: exit at the first allowed layer whose measure >= threshold."""
        grid = self.thresholds[measure]
        hits = np.flatnonzero(np.abs(grid - threshold) < 1e-9)
        if hits.size == 0:
            raise KeyError(threshold)
        k = int(hits[0]) + 1  # passing threshold number k <=> level >= k
        cols = np.asarray(exit_layers, dtype=np.int64) - 1
        passes = self.levels[measure][:, cols] >= k
        passes[:, -1] = True  # the last layer always exits
        exit_layer = cols[np.argmax(passes, axis=1)] + 1
        wrong = ~self.agrees[np.arange(self.n_positions), exit_layer - 1]
        return exit_layer, wrong


@dataclass(frozen=True)
class OperatingPoint:
    """An exit policy at a set of allowed exit layers: its exit-layer CDF and its mismatch (measured).

    ``mismatch`` is the share of the profile's positions whose top-1 at the exit layer differs from the
    final layer's (0 for the oracle ``stable`` exit, by definition).
    """

    policy: str  # "stable", "max_prob" or "margin"
    threshold: float | None  # None for stable
    exit_layers: tuple[int, ...]  # allowed exits (profile layers, ascending, last = L)
    cdf: np.ndarray  # F(l) = P(exit layer <= l), l = 1..L
    mismatch: float

    @property
    def mean_exit_fraction(self) -> float:
        return expected_max_depth_fraction(self.cdf, 1)

    @property
    def label(self) -> str:
        return "stable" if self.threshold is None else f"{self.policy} >= {self.threshold:g}"


@dataclass(frozen=True)
class ExitProfile:
    """A validated early-exit profile (arrays are read-only, mappings are immutable)."""

    path: str | None
    model: str
    n_layers: int
    text: str
    n_tokens: int
    synthetic: bool
    settings: Mapping[str, Any]
    definitions: Mapping[str, Any]
    top1_agreement: np.ndarray  # per layer 1..L
    similarity: np.ndarray  # per layer 1..L (cosine of mean-centred logits, see definitions)
    kl: np.ndarray  # per layer 1..L, KL(final || layer) in nats
    stable_exit_cdf: np.ndarray  # F(l), l = 1..L
    threshold_exits: Mapping[str, Mapping[float, ThresholdExit]]
    eas: float
    mean_stable_exit_fraction: float
    expected_max_depth: Mapping[int, float]  # the stored expected_max_depth_fraction table
    raw: Mapping[str, Any]  # the whole JSON document
    tokens: TokenData | None = None  # per-position data (profiles written before it have none)

    def operating_point(self, policy: str, threshold: float | None, exit_layers: Sequence[int]) -> OperatingPoint:
        """The exit CDF and mismatch of ``policy`` (at ``threshold``) when exits are allowed at ``exit_layers`` only.

        ``stable`` needs only the CDF (a token exits at the first allowed layer >= its stable-exit layer,
        where its prediction is already final). A threshold policy exits at the first allowed layer whose
        confidence passes the threshold; its mismatch there needs the per-position ``tokens`` block,
        unless every layer is allowed (then the stored ``threshold_exits`` entry is exact).
        Raises ``KeyError`` for a threshold the profile did not measure and ``ProfileError`` when the
        profile lacks the data.
        """
        layers = tuple(sorted(set(int(c) for c in exit_layers) | {self.n_layers}))
        if layers[0] < 1 or layers[-1] > self.n_layers:
            raise ValueError(f"exit layers must lie in 1..{self.n_layers}, got {list(exit_layers)}")
        if policy == "stable":
            return OperatingPoint("stable", None, layers, _frozen(rounded_cdf(self.stable_exit_cdf, layers)), 0.0)
        if threshold is None:
            raise ValueError(f"policy {policy!r} needs a threshold")
        table = self.threshold_exits.get(policy, {})
        entry = next((e for t, e in table.items() if abs(t - threshold) < 1e-9), None)
        if entry is None:
            raise KeyError(threshold)
        if len(layers) == self.n_layers:
            return OperatingPoint(policy, entry.threshold, layers, entry.cdf, entry.error_rate)
        if self.tokens is None or policy not in self.tokens.levels:
            raise ProfileError(
                f"{self.path or '<profile>'}: has no per-position 'tokens' block for {policy!r}, which a threshold "
                "policy needs when exits are allowed at some layers only; re-run python -m sim.probe"
            )
        exit_layer, wrong = self.tokens.threshold_exits(policy, entry.threshold, layers)
        cdf = np.cumsum(np.bincount(exit_layer, minlength=self.n_layers + 1)[1:]) / exit_layer.size
        cdf[-1] = 1.0
        return OperatingPoint(policy, entry.threshold, layers, _frozen(cdf), float(wrong.mean()))

    def threshold_operating_points(self, exit_layers: Sequence[int], measures: Sequence[str] | None = None) -> list[OperatingPoint]:
        """Every measured threshold of ``measures`` (default: all) at the allowed exits."""
        out = []
        for measure in measures or list(self.threshold_exits):
            for thr in self.threshold_exits.get(measure, {}):
                out.append(self.operating_point(measure, thr, exit_layers))
        return out

    def expected_max_depth_fraction(self, batch: int) -> float:
        """E[max stable-exit layer over ``batch`` iid tokens] / L (exact, any batch)."""
        return expected_max_depth_fraction(self.stable_exit_cdf, batch)

    def stable_exit_pmf(self) -> np.ndarray:
        """P(stable-exit layer = l) for l = 1..L."""
        return np.diff(np.concatenate(([0.0], self.stable_exit_cdf)))

    def sample_stable_exit_layers(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Draw iid stable-exit layers (ints in 1..L) from the profile's CDF."""
        u = rng.random(size)
        return np.searchsorted(self.stable_exit_cdf, u, side="right").clip(max=self.n_layers - 1) + 1
