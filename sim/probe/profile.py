"""Early-exit profiles: reading and strictly checking the JSON files in ``traces/exit_profiles/``.

Pure json + numpy (never imports torch), so the simulator can use it without the ``probe``
extra. A profile is written by ``python -m sim.probe``; its schema and every definition are in
``docs/early_exit.md`` and in the file's own ``definitions`` block. The data model and the exact batch
formula live in profile_model.py and are re-exported here (``from sim.probe.profile import ...``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from sim.probe.profile_model import (
    _CONSISTENCY_ATOL,
    PER_LAYER_KEYS,
    REQUIRED_KEYS,
    THRESHOLD_MEASURES,
    ExitProfile,
    OperatingPoint,
    ProfileError,
    ThresholdExit,
    TokenData,
    _frozen,
    check_cdf,
    expected_max_depth_fraction,
    rounded_cdf,
)

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
    "rounded_cdf",
]


# --------------------------------------------------------------------------- loading



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
