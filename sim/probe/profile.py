"""Early-exit profiles: the JSON files in ``traces/exit_profiles/`` and the exact batch formula.

Pure json + numpy (never imports torch), so the simulator can use it without the ``probe``
extra. A profile is written by ``python -m sim.probe``; its schema and every definition are in
``docs/early_exit.md`` and in the file's own ``definitions`` block.

Layers are numbered 1..L. ``stable_exit_cdf[l-1]`` is F(l) = P(exit layer <= l), so the last
element is 1.0. For a static batch that waits for its slowest token, the expected executed depth
is E[max of b iid exit layers] = sum_{l=0}^{L-1} (1 - F(l)^b), with F(0) = 0.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "ExitProfile",
    "OperatingPoint",
    "ProfileError",
    "ThresholdExit",
    "TokenData",
    "REQUIRED_KEYS",
    "THRESHOLD_MEASURES",
    "check_cdf",
    "expected_max_depth_fraction",
    "load_profile",
    "profile_from_dict",
]

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


# --------------------------------------------------------------------------- loading


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=float)
    arr.setflags(write=False)
    return arr


def _readonly(values: Any) -> np.ndarray:
    arr = np.array(values, dtype=float)
    arr.setflags(write=False)
    return arr


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_profile(path: str | os.PathLike[str]) -> ExitProfile:
    """Read and validate a profile JSON file. Raises :class:`ProfileError` naming file and key."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise ProfileError(f"{name}: no such profile file") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{name}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ProfileError(f"{name}: cannot read ({exc})") from None
    return profile_from_dict(doc, source=name)


def profile_from_dict(doc: Any, *, source: str = "<profile>") -> ExitProfile:
    """Validate an already-parsed profile document (see :func:`load_profile`)."""

    def fail(key: str, msg: str) -> ProfileError:
        return ProfileError(f"{source}: key '{key}': {msg}")

    if not isinstance(doc, dict):
        raise ProfileError(f"{source}: top level must be a JSON object, got {type(doc).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise ProfileError(f"{source}: missing key(s) {', '.join(repr(k) for k in missing)}")

    for key in ("model", "text"):
        if not isinstance(doc[key], str) or not doc[key]:
            raise fail(key, "must be a non-empty string")
    n_layers = doc["n_layers"]
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise fail("n_layers", f"must be an integer >= 1, got {n_layers!r}")
    n_tokens = doc["n_tokens"]
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise fail("n_tokens", f"must be an integer >= 1, got {n_tokens!r}")
    if not isinstance(doc["synthetic"], bool):
        raise fail("synthetic", f"must be true or false, got {doc['synthetic']!r}")
    for key in ("settings", "definitions"):
        if not isinstance(doc[key], dict):
            raise fail(key, "must be a JSON object")

    per_layer = doc["per_layer"]
    if not isinstance(per_layer, dict):
        raise fail("per_layer", "must be a JSON object")
    layer_arrays: dict[str, np.ndarray] = {}
    for key in PER_LAYER_KEYS:
        full = f"per_layer.{key}"
        if key not in per_layer:
            raise fail(full, "missing")
        values = per_layer[key]
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise fail(full, "must be a list of finite numbers")
        if len(values) != n_layers:
            raise fail(full, f"has {len(values)} entries, expected n_layers = {n_layers}")
        layer_arrays[key] = _readonly(values)
    if np.any(layer_arrays["top1_agreement"] < 0) or np.any(layer_arrays["top1_agreement"] > 1):
        raise fail("per_layer.top1_agreement", "values must lie in [0, 1]")

    def cdf_of(key: str, values: Any) -> np.ndarray:
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise fail(key, "must be a list of finite numbers")
        try:
            arr = check_cdf(values, n_layers=n_layers, what="cdf")
        except ValueError as exc:
            raise fail(key, str(exc).removeprefix("cdf: ")) from None
        arr.setflags(write=False)
        return arr

    stable = cdf_of("stable_exit_cdf", doc["stable_exit_cdf"])

    thr_doc = doc["threshold_exits"]
    if not isinstance(thr_doc, dict):
        raise fail("threshold_exits", "must be a JSON object")
    thresholds: dict[str, Mapping[float, ThresholdExit]] = {}
    for measure in THRESHOLD_MEASURES:
        if measure not in thr_doc:
            raise fail(f"threshold_exits.{measure}", "missing")
    for measure, table in thr_doc.items():
        base = f"threshold_exits.{measure}"
        if not isinstance(table, dict):
            raise fail(base, "must be a JSON object mapping threshold -> {cdf, error_rate}")
        entries: dict[float, ThresholdExit] = {}
        for thr_key, entry in table.items():
            key = f"{base}.{thr_key}"
            try:
                thr = float(thr_key)
            except ValueError:
                raise fail(key, "threshold key is not a number") from None
            if not isinstance(entry, dict) or "cdf" not in entry or "error_rate" not in entry:
                raise fail(key, "must be an object with 'cdf' and 'error_rate'")
            cdf = cdf_of(f"{key}.cdf", entry["cdf"])
            err = entry["error_rate"]
            if not _is_number(err) or not 0.0 <= err <= 1.0:
                raise fail(f"{key}.error_rate", f"must be a number in [0, 1], got {err!r}")
            entries[thr] = ThresholdExit(measure=measure, threshold=thr, cdf=cdf, error_rate=float(err))
        thresholds[measure] = MappingProxyType(dict(sorted(entries.items())))

    eas = doc["eas"]
    if not _is_number(eas) or not 0.0 <= eas <= 1.0:
        raise fail("eas", f"must be a number in [0, 1], got {eas!r}")

    mean_frac = doc["mean_stable_exit_fraction"]
    if not _is_number(mean_frac):
        raise fail("mean_stable_exit_fraction", f"must be a finite number, got {mean_frac!r}")
    expected_mean = expected_max_depth_fraction(stable, 1)
    if abs(mean_frac - expected_mean) > _CONSISTENCY_ATOL:
        raise fail(
            "mean_stable_exit_fraction",
            f"{mean_frac!r} disagrees with stable_exit_cdf (which gives {expected_mean!r})",
        )

    emd_doc = doc["expected_max_depth_fraction"]
    if not isinstance(emd_doc, dict) or not emd_doc:
        raise fail("expected_max_depth_fraction", "must be a non-empty JSON object batch -> fraction")
    emd: dict[int, float] = {}
    for b_key, value in emd_doc.items():
        key = f"expected_max_depth_fraction.{b_key}"
        try:
            b = int(b_key)
        except ValueError:
            raise fail(key, "batch key is not an integer") from None
        if b < 1 or str(b) != b_key.strip():
            raise fail(key, "batch key must be an integer >= 1")
        if not _is_number(value):
            raise fail(key, f"must be a finite number, got {value!r}")
        exact = expected_max_depth_fraction(stable, b)
        if abs(value - exact) > _CONSISTENCY_ATOL:
            raise fail(key, f"{value!r} disagrees with stable_exit_cdf (which gives {exact!r})")
        emd[b] = float(value)

    tokens = _token_data(doc.get("tokens"), n_layers, stable, thresholds, fail) if "tokens" in doc else None

    return ExitProfile(
        path=None if source == "<profile>" else source,
        model=doc["model"],
        n_layers=n_layers,
        text=doc["text"],
        n_tokens=n_tokens,
        synthetic=doc["synthetic"],
        settings=MappingProxyType(doc["settings"]),
        definitions=MappingProxyType(doc["definitions"]),
        top1_agreement=layer_arrays["top1_agreement"],
        similarity=layer_arrays["similarity"],
        kl=layer_arrays["kl"],
        stable_exit_cdf=stable,
        threshold_exits=MappingProxyType(thresholds),
        eas=float(eas),
        mean_stable_exit_fraction=float(mean_frac),
        expected_max_depth=MappingProxyType(dict(sorted(emd.items()))),
        raw=MappingProxyType(doc),
        tokens=tokens,
    )


_LEVEL_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _decode_strings(values: Any, n_layers: int, alphabet: str, key: str, fail: Any) -> np.ndarray:
    """A list of equal-length strings over ``alphabet`` -> uint8 array (P, L) of the characters' indices."""
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise fail(key, "must be a non-empty list of strings")
    bad = next((i for i, v in enumerate(values) if len(v) != n_layers), None)
    if bad is not None:
        raise fail(key, f"entry {bad} has {len(values[bad])} characters, expected n_layers = {n_layers}")
    raw = np.frombuffer("".join(values).encode("ascii", "replace"), dtype=np.uint8).reshape(len(values), n_layers)
    lut = np.full(256, 255, dtype=np.uint8)
    for i, ch in enumerate(alphabet):
        lut[ord(ch)] = i
    out = lut[raw]
    if (out == 255).any():
        raise fail(key, f"characters must be among {alphabet!r}")
    return out


def _token_data(doc: Any, n_layers: int, stable: np.ndarray, thresholds: Mapping[str, Mapping[float, ThresholdExit]], fail: Any) -> TokenData:
    """Decode and check the ``tokens`` block against the stored aggregates (they must agree exactly)."""
    if not isinstance(doc, dict) or not all(k in doc for k in ("thresholds", "top1_agrees", "levels")):
        raise fail("tokens", "must be an object with 'thresholds', 'top1_agrees' and 'levels'")
    agrees = _decode_strings(doc["top1_agrees"], n_layers, "01", "tokens.top1_agrees", fail).astype(bool)
    n = agrees.shape[0]
    if not agrees[:, -1].all():
        raise fail("tokens.top1_agrees", "the last layer must agree with itself ('1' as the last character)")
    disagree = ~agrees
    last = np.where(disagree.any(axis=1), n_layers - 1 - np.argmax(disagree[:, ::-1], axis=1) + 1, 0) + 1
    recomputed = np.cumsum(np.bincount(last, minlength=n_layers + 1)[1:]) / n
    if np.max(np.abs(recomputed - stable)) > _CONSISTENCY_ATOL:
        raise fail("tokens.top1_agrees", "disagrees with stable_exit_cdf")
    grids: dict[str, np.ndarray] = {}
    levels: dict[str, np.ndarray] = {}
    for measure, grid in (doc["thresholds"] or {}).items():
        key = f"tokens.thresholds.{measure}"
        if measure not in thresholds:
            raise fail(key, "no such measure under threshold_exits")
        if not isinstance(grid, list) or not all(_is_number(t) for t in grid) or list(grid) != sorted(grid):
            raise fail(key, "must be an ascending list of numbers")
        if sorted(float(t) for t in thresholds[measure]) != [float(t) for t in grid]:
            raise fail(key, f"must list the thresholds of threshold_exits.{measure}")
        if len(grid) >= len(_LEVEL_DIGITS):
            raise fail(key, f"at most {len(_LEVEL_DIGITS) - 1} thresholds fit the level encoding")
        lv = _decode_strings((doc["levels"] or {}).get(measure), n_layers, _LEVEL_DIGITS[: len(grid) + 1],
                             f"tokens.levels.{measure}", fail)  # fmt: skip
        if lv.shape[0] != n:
            raise fail(f"tokens.levels.{measure}", f"has {lv.shape[0]} positions, tokens.top1_agrees has {n}")
        grids[measure], levels[measure] = _frozen(np.asarray(grid, dtype=float)), lv
    data = TokenData(agrees=agrees, thresholds=MappingProxyType(grids), levels=MappingProxyType(levels))
    every = tuple(range(1, n_layers + 1))
    for measure, table in thresholds.items():
        if measure not in grids:
            continue
        for thr, entry in table.items():
            exit_layer, wrong = data.threshold_exits(measure, thr, every)
            cdf = np.cumsum(np.bincount(exit_layer, minlength=n_layers + 1)[1:]) / n
            if np.max(np.abs(cdf - entry.cdf)) > _CONSISTENCY_ATOL or abs(float(wrong.mean()) - entry.error_rate) > _CONSISTENCY_ATOL:
                raise fail(f"tokens.levels.{measure}", f"disagrees with threshold_exits.{measure}.{thr:g}")
    return data
