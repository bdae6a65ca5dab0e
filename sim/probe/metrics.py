"""From per-token logit-lens statistics to an exit profile (pure numpy, no torch).

:class:`TokenStats` holds, for every scored token position and every layer 1..L, the numbers
the torch side (:mod:`sim.probe.lens`) computed from the lens logits. :func:`build_profile`
turns them into the JSON document described in ``docs/early_exit.md``; every quantity is
defined in :data:`DEFINITIONS`, which is written into each profile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.probe.profile_model import expected_max_depth_fraction

__all__ = [
    "ALPHA",
    "BATCH_SIZES",
    "DEFINITIONS",
    "LEVEL_DIGITS",
    "MARGIN_THRESHOLDS",
    "MAX_PROB_THRESHOLDS",
    "TokenStats",
    "build_profile",
    "eas_score",
    "exit_cdf",
    "stable_exit_layers",
    "threshold_exit_layers",
    "thr_key",
    "token_block",
]

ALPHA = 0.5
# The grids reach close to 1 because the logit lens of small post-trained models is confidently wrong
# in its early layers: only thresholds near 1 keep the mismatch within a few percent (docs/early_exit.md).
MAX_PROB_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
MARGIN_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
#: characters of the per-position level strings in the profile's ``tokens`` block (level = index)
LEVEL_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

DEFINITIONS: dict[str, str] = {
    "layers": (
        "Layers are numbered l = 1..L (L = n_layers = number of decoder blocks); layer l means "
        "the raw output (residual stream) of block l. Per-layer lists have L entries, index l-1."
    ),
    "lens": (
        "logit lens: logits_l = lm_head(final_norm(h_l)) with the model's own final norm and "
        "unembedding, computed in float32 on each block's raw output h_l (captured by forward "
        "hooks). At l = L this reproduces the model's logits (checked on every run). "
        "p_l = softmax(logits_l). 'final' means layer L."
    ),
    "tokens": (
        "Every next-token position of the text counts once: positions 0..n_tokens-2 (each has a "
        "known next token), n_positions = n_tokens - 1 of them, weighted equally. Long texts are "
        "cut into windows of settings.window tokens advancing by settings.stride; a position is "
        "scored in the first window whose end passes it, so after the first window every scored "
        "position sees at least window - stride tokens of context. The comparison is with the "
        "model's own final-layer prediction, not with the true next token."
    ),
    "top1_agreement": (
        "per_layer.top1_agreement[l-1] = fraction of positions where argmax logits_l == argmax logits_L."
    ),
    "similarity": (
        "per_layer.similarity[l-1] = S_l = mean over positions of cos(c_l, c_L), where "
        "c = logits - mean(logits) over the vocabulary (cosine of mean-centred logits). "
        "This is the recommended definition and the one EAS uses. Two alternatives are reported "
        "only under alt_similarity (never compare EAS values across definitions)."
    ),
    "alt_similarity.softmax_prob_cosine": (
        "mean over positions of cos(p_l, p_L) (cosine of softmax probabilities); its 'eas' uses "
        "the same formula as the main eas."
    ),
    "alt_similarity.raw_logit_cosine": (
        "mean over positions of cos(logits_l, logits_L) (cosine of raw, uncentred logits); often "
        "negative for intermediate layers because their logits share a common offset; its 'eas' "
        "clips S at 0 like the main eas."
    ),
    "kl": "per_layer.kl[l-1] = mean over positions of KL(p_L || p_l) in nats (final distribution first).",
    "stable_exit_layer": (
        "per position: the smallest layer e such that argmax logits_k == argmax logits_L for every "
        "k in e..L (the prediction has settled for good; an oracle, exact-match exit). e = L when "
        "layer L-1 disagrees."
    ),
    "stable_exit_cdf": (
        "F(l) = fraction of positions whose stable-exit layer is <= l, for l = 1..L; F(L) = 1."
    ),
    "mean_stable_exit_fraction": "mean over positions of stable-exit layer / L (= expected_max_depth_fraction at b = 1).",
    "expected_max_depth_fraction": (
        "for batch size b: E[max of b iid stable-exit layers] / L = sum_{l=0}^{L-1} (1 - F(l)^b) / L "
        "with F(0) = 0 (a static batch runs until its slowest token has settled)."
    ),
    "threshold_exits": (
        "confidence-threshold exits: for measure m and threshold t, a position exits at the first "
        "layer l in 1..L with m_l >= t, or at L if none. m = max_prob: max_v p_l(v); m = margin: "
        "p_l(top-1) - p_l(top-2). cdf[l-1] = fraction of positions exiting at layer <= l; "
        "error_rate = fraction of positions whose top-1 at the exit layer differs from the final "
        "top-1 (these are not oracle exits; the error is the off-policy error of sampling there). "
        "Threshold keys are the thresholds formatted with %g."
    ),
    "eas": (
        "Early-exit Adaptability Score (reconstruction of arXiv 2603.23701, whose exact choices are "
        "not public): EAS = (1/L) sum_{l=1}^{L} max(S_l, 0)^alpha * w_l^(1-alpha), w_l = (L-l)/L "
        "(fraction of layers skipped by exiting after layer l), alpha = settings.alpha (0.5), "
        "S_l = per_layer.similarity. All L layers enter the mean, so layer L adds a zero term."
    ),
    "next_token_accuracy": (
        "per_layer.next_token_accuracy[l-1] = fraction of positions where argmax logits_l equals the "
        "true next token of the text (a sanity check of the model, not used by any exit metric)."
    ),
    "synthetic": "false: measured by sim.probe on a real model and text; true: made up, see 'synthetic_method'.",
    "tokens": (
        "per-position data from which any set of allowed exit layers can be evaluated exactly: "
        "tokens.top1_agrees[i] is a string of L characters, character l-1 is '1' when argmax logits_l == "
        "argmax logits_L at position i, else '0'; tokens.levels.<measure>[i] is a string of L characters, "
        "character l-1 is the number of thresholds t of tokens.thresholds.<measure> (ascending) with "
        "m_l >= t, written as one digit of 0-9a-z. So position i passes threshold number k (1-based) at "
        "layer l exactly when its level there is >= k."
    ),
}


@dataclass(frozen=True)
class TokenStats:
    """Per-position, per-layer lens statistics; every array has shape (n_positions, L).

    Column l-1 is layer l; column L-1 is the final layer (the reference).
    """

    top1: np.ndarray  # int, argmax of the lens logits
    max_prob: np.ndarray  # max softmax probability
    margin: np.ndarray  # top-1 minus top-2 probability
    sim_centered: np.ndarray  # cos of mean-centred logits with the final layer's
    sim_prob: np.ndarray  # cos of softmax probabilities
    sim_raw: np.ndarray  # cos of raw logits
    kl: np.ndarray  # KL(p_L || p_l), nats
    targets: np.ndarray | None = None  # (n_positions,) true next token ids, if known

    @property
    def n_positions(self) -> int:
        return int(self.top1.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.top1.shape[1])

    def select(self, mask: np.ndarray) -> TokenStats:
        """The statistics of a subset of positions (boolean mask or index array)."""
        fields = ("top1", "max_prob", "margin", "sim_centered", "sim_prob", "sim_raw", "kl")
        kw: dict[str, Any] = {f: getattr(self, f)[mask] for f in fields}
        kw["targets"] = None if self.targets is None else self.targets[mask]
        return TokenStats(**kw)

    @staticmethod
    def concatenate(parts: Sequence[TokenStats]) -> TokenStats:
        if not parts:
            raise ValueError("no token statistics to concatenate")
        fields = ("top1", "max_prob", "margin", "sim_centered", "sim_prob", "sim_raw", "kl")
        kw: dict[str, Any] = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
        if all(p.targets is not None for p in parts):
            kw["targets"] = np.concatenate([p.targets for p in parts])  # type: ignore[misc]
        return TokenStats(**kw)


# --------------------------------------------------------------------------- per token


def stable_exit_layers(top1: np.ndarray) -> np.ndarray:
    """Per position, the 1-based layer from which top-1 equals the final top-1 at every later layer."""
    top1 = np.asarray(top1)
    n_layers = top1.shape[1]
    disagree = top1 != top1[:, -1:]
    any_dis = disagree.any(axis=1)
    last_dis = n_layers - 1 - np.argmax(disagree[:, ::-1], axis=1)  # 0-based index of last disagreement
    return np.where(any_dis, last_dis + 2, 1).astype(np.int64)


def threshold_exit_layers(measure: np.ndarray, threshold: float) -> np.ndarray:
    """Per position, the first 1-based layer with ``measure >= threshold`` (L if none)."""
    hit = np.asarray(measure) >= threshold
    hit[:, -1] = True  # the final layer always exits
    return (np.argmax(hit, axis=1) + 1).astype(np.int64)


def exit_cdf(exit_layers: np.ndarray, n_layers: int) -> np.ndarray:
    """F(l) = fraction of positions with exit layer <= l, l = 1..L (last element exactly 1)."""
    exit_layers = np.asarray(exit_layers, dtype=np.int64)
    if exit_layers.size == 0:
        raise ValueError("no positions")
    if exit_layers.min() < 1 or exit_layers.max() > n_layers:
        raise ValueError("exit layers must lie in 1..L")
    counts = np.bincount(exit_layers, minlength=n_layers + 1)[1:]
    cdf = np.cumsum(counts) / exit_layers.size
    cdf[-1] = 1.0
    return cdf


def eas_score(similarity: Sequence[float] | np.ndarray, alpha: float = ALPHA) -> float:
    """EAS = mean over l = 1..L of max(S_l, 0)^alpha * ((L - l)/L)^(1 - alpha)."""
    s = np.clip(np.asarray(similarity, dtype=float), 0.0, None)
    n_layers = s.size
    w = (n_layers - np.arange(1, n_layers + 1)) / n_layers
    return float(np.mean(s**alpha * w ** (1.0 - alpha)))


def thr_key(threshold: float) -> str:
    return f"{threshold:g}"


def token_block(stats: TokenStats, grids: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """The profile's ``tokens`` block (see ``DEFINITIONS['tokens']``): agreement bits and threshold levels."""
    agree = stats.top1 == stats.top1[:, -1:]
    block: dict[str, Any] = {
        "thresholds": {m: sorted(float(t) for t in set(grid)) for m, grid in grids.items()},
        "top1_agrees": ["".join("1" if a else "0" for a in row) for row in agree],
        "levels": {},
    }
    for measure, thresholds in block["thresholds"].items():
        if len(thresholds) >= len(LEVEL_DIGITS):
            raise ValueError(f"at most {len(LEVEL_DIGITS) - 1} {measure} thresholds fit the profile's level encoding")
        values = getattr(stats, measure)
        # level = number of thresholds t <= m, i.e. of thresholds the measure passes (m >= t)
        levels = np.searchsorted(np.asarray(thresholds), values, side="right")
        block["levels"][measure] = ["".join(LEVEL_DIGITS[v] for v in row) for row in levels]
    return block


# --------------------------------------------------------------------------- the profile


def _floats(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values]


def build_profile(
    stats: TokenStats,
    *,
    model: str,
    text: str,
    n_tokens: int,
    settings: Mapping[str, Any],
    alpha: float = ALPHA,
    max_prob_thresholds: Sequence[float] = MAX_PROB_THRESHOLDS,
    margin_thresholds: Sequence[float] = MARGIN_THRESHOLDS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Aggregate per-token statistics into a profile document (see :data:`DEFINITIONS`)."""
    n_layers = stats.n_layers
    if stats.n_positions < 1:
        raise ValueError("no scored positions")
    final = stats.top1[:, -1:]
    agree = (stats.top1 == final).mean(axis=0)
    sim_c = stats.sim_centered.mean(axis=0)
    sim_p = stats.sim_prob.mean(axis=0)
    sim_r = stats.sim_raw.mean(axis=0)
    kl = stats.kl.mean(axis=0)

    stable = stable_exit_layers(stats.top1)
    stable_cdf = exit_cdf(stable, n_layers)

    rows = np.arange(stats.n_positions)
    threshold_exits: dict[str, dict[str, Any]] = {}
    for measure_name, measure, grid in (
        ("max_prob", stats.max_prob, max_prob_thresholds),
        ("margin", stats.margin, margin_thresholds),
    ):
        table: dict[str, Any] = {}
        for thr in grid:
            layers = threshold_exit_layers(measure, thr)
            cdf = exit_cdf(layers, n_layers)
            wrong = stats.top1[rows, layers - 1] != stats.top1[:, -1]
            table[thr_key(thr)] = {
                "cdf": _floats(cdf),
                "error_rate": float(wrong.mean()),
                "mean_exit_fraction": float(layers.mean() / n_layers),
            }
        threshold_exits[measure_name] = table

    per_layer: dict[str, Any] = {
        "top1_agreement": _floats(agree),
        "similarity": _floats(sim_c),
        "kl": _floats(kl),
        "mean_max_prob": _floats(stats.max_prob.mean(axis=0)),
        "mean_margin": _floats(stats.margin.mean(axis=0)),
    }
    if stats.targets is not None:
        per_layer["next_token_accuracy"] = _floats((stats.top1 == stats.targets[:, None]).mean(axis=0))

    hist = np.bincount(stable, minlength=n_layers + 1)[1:]
    tokens = token_block(stats, {"max_prob": max_prob_thresholds, "margin": margin_thresholds})
    doc: dict[str, Any] = {
        "model": model,
        "n_layers": int(n_layers),
        "text": text,
        "n_tokens": int(n_tokens),
        "n_positions": int(stats.n_positions),
        "synthetic": False,
        "settings": {**settings, "alpha": float(alpha)},
        "definitions": dict(DEFINITIONS),
        "per_layer": per_layer,
        "alt_similarity": {
            "softmax_prob_cosine": {"per_layer": _floats(sim_p), "eas": eas_score(sim_p, alpha)},
            "raw_logit_cosine": {"per_layer": _floats(sim_r), "eas": eas_score(sim_r, alpha)},
        },
        "stable_exit_cdf": _floats(stable_cdf),
        "stable_exit_histogram": [int(c) for c in hist],
        "threshold_exits": threshold_exits,
        "eas": eas_score(sim_c, alpha),
        "mean_stable_exit_fraction": expected_max_depth_fraction(stable_cdf, 1),
        "expected_max_depth_fraction": {
            str(int(b)): expected_max_depth_fraction(stable_cdf, int(b)) for b in batch_sizes
        },
        "tokens": tokens,
    }
    if extra:
        doc.update(extra)
    return doc
