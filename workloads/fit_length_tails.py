"""Fit the datasets' response-length bulk and tail to per-step statistics of public RL training logs.

The statistics (per training step: response_length/mean, /max, /min, /clip_ratio) were read from verl's
published console logs; each `Log` below names its repository, file, commit and the steps used. For each
fitted target (a dataset, or a dataset and a model: `by_model`), this script

1. fits the bulk (median and total log-sigma of the lognormal, keeping the entry's epoch and sample
   shares) so that batches of the log's shape (prompts x group size, cap), sampled by `sim.workload`,
   reproduce the log's mean, min/mean and (in steps that did not reach the cap) max/mean;
2. sets the runaway probability (samples that never stop and run to the cap) to the log's capped
   fraction less the bulk's own overflow;
3. derives the runaway prompt correlation from the over-dispersion of the capped counts across steps,
   and the runaway trend from a log that reports both early and late steps;

then writes the fitted values between the `fitted by workloads/fit_length_tails.py` markers of
workloads/datasets.yaml and the comparison table of docs/workload.md (cited figures next to sampled
batches of the same shape). `--check` exits 1 when either file differs from what it would write;
tests/test_workload_dataset.py runs it in check mode.

    .venv/bin/python workloads/fit_length_tails.py           # rewrite both
    .venv/bin/python workloads/fit_length_tails.py --check   # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from sim.workload import DatasetWorkload, parse_dataset  # noqa: E402

DATASETS_PATH = ROOT / "workloads" / "datasets.yaml"
DOC_PATH = ROOT / "docs" / "workload.md"
BEGIN, END = "# fitted by workloads/fit_length_tails.py: begin", "# fitted by workloads/fit_length_tails.py: end"
DOC_BEGIN, DOC_END = "<!-- fit_length_tails: begin -->", "<!-- fit_length_tails: end -->"
SEED = 20261201  # fixed: the fit and the table are pure functions of the cited numbers
VERL_DATA = "eric-haibin-lin/verl-data"


@dataclass(frozen=True)
class Log:
    """Per-step response-length statistics of one public training log (one batch per step)."""

    key: str
    repo: str
    path: str
    commit: str
    dataset: str  # the catalog dataset it informs
    model: str  # the actor, as a models.yaml key
    algorithm: str
    prompts: int  # prompts per step
    group: int  # samples per prompt
    cap: int  # max response tokens
    steps: dict[int, tuple[float, float, float, float | None]]  # step -> (mean, max, min, clip_ratio or None)

    @property
    def samples(self) -> int:
        return self.prompts * self.group

    def column(self, j: int, steps: list[int] | None = None) -> np.ndarray:
        return np.array([self.steps[s][j] for s in (steps or sorted(self.steps))], dtype=float)

    def capped_counts(self, steps: list[int] | None = None) -> np.ndarray:
        """Capped samples per step: clip_ratio x batch, as logged (verl rounds the ratio to 3 decimals)."""
        return np.rint(self.column(3, steps) * self.samples)


LOGS: dict[str, Log] = {
    log.key: log
    for log in [
        Log(
            "gsm8k-qwen2.5-3b", VERL_DATA, "gsm8k/Qwen2.5-3B-bsz64_2-prompt512-resp1024-lorarank32-score0.861.log",
            "bf76dddc4e0119693632a147abab27f303dd2c13", "gsm8k", "qwen2.5-3b", "GRPO, LoRA rank 32",
            64, 5, 1024,
            {1: (300.462, 787, 99, 0.000), 2: (290.350, 640, 128, 0.000), 3: (293.594, 753, 108, 0.000),
             60: (226.800, 448, 74, 0.000), 61: (237.812, 748, 62, 0.000), 62: (237.350, 582, 107, 0.000)},
        ),
        Log(
            "gsm8k-qwen2.5-7b", VERL_DATA, "gsm8k/Qwen2.5-7B-bsz64_8-prompt512-resp1024-lorarank32-score0.934.log",
            "cc499463f18599e4a604e893f20872db68435928", "gsm8k", "qwen2.5-7b", "GRPO, LoRA rank 32",
            64, 5, 1024,
            {61: (277.994, 759, 121, 0.000), 62: (269.503, 699, 125, 0.000), 63: (262.934, 661, 130, 0.000),
             64: (270.356, 779, 140, 0.000)},
        ),
        Log(
            "gsm8k-qwen2.5-0.5b", VERL_DATA, "gsm8k/Qwen2.5-0.5B-bsz64_2-prompt512-resp1024-lorarank32-score0.543.log",
            "bf76dddc4e0119693632a147abab27f303dd2c13", "gsm8k", "qwen2.5-0.5b", "GRPO, LoRA rank 32",
            64, 5, 1024,
            {35: (188.769, 1024, 57, 0.006), 36: (198.869, 1024, 48, 0.003), 37: (204.459, 1024, 42, 0.022),
             38: (213.641, 1024, 54, 0.013)},
        ),
        Log(
            "gsm8k-qwen2.5-0.5b-ppo", VERL_DATA, "gsm8k/Qwen2.5-0.5B-bsz256_2-prompt1024-resp512-0.567.log",
            "6156aef69d7d731911ff9ffcd7b2d18c78055c25", "gsm8k", "qwen2.5-0.5b", "PPO, full fine-tune",
            256, 1, 512,
            {134: (281.344, 512, 110, None), 135: (284.113, 512, 137, None), 136: (278.133, 512, 96, None),
             137: (284.879, 512, 124, None), 138: (282.078, 512, 137, None), 139: (278.465, 512, 120, None),
             140: (281.211, 512, 124, None), 141: (275.930, 512, 108, None), 142: (275.934, 512, 141, None),
             143: (277.230, 512, 128, None), 144: (265.719, 512, 120, None)},
        ),
        Log(
            "gsm8k+math-qwen2-7b", VERL_DATA, "gsm8k/qwen2-7b_math_megatron.log",
            "d9babcbf95ffffe8d25447250cbbdc2ff12cc199", "gsm8k+math", "qwen2-7b", "GRPO, full fine-tune (Megatron)",
            1024, 5, 1024,
            {15: (241.471, 1024, 11, 0.016), 16: (239.096, 1024, 14, 0.009), 17: (236.493, 1024, 22, 0.012),
             18: (230.077, 1024, 12, 0.010), 19: (247.427, 1024, 32, 0.012), 20: (243.588, 1024, 13, 0.014),
             21: (240.558, 1024, 38, 0.012),
             171: (247.593, 1024, 11, 0.000), 172: (232.439, 1024, 23, 0.000), 173: (240.626, 1024, 41, 0.000),
             174: (234.404, 1024, 39, 0.001), 175: (231.243, 1024, 48, 0.000), 176: (238.091, 1024, 34, 0.000),
             177: (231.765, 1024, 52, 0.001), 178: (237.441, 1024, 23, 0.000), 179: (229.280, 1024, 25, 0.000)},
        ),
    ]
}  # fmt: skip

#: verl's GSM8K + MATH example data: 7,473 + 7,500 training prompts, 1,024 per step
MIX_POOL = 7473 + 7500
MIX_EARLY, MIX_LATE = [15, 16, 17, 18, 19, 20, 21], [171, 172, 173, 174, 175, 176, 177, 178, 179]

#: MATH response lengths of an instruct model's CoT (8 samples x 100 problems, estimated tokens): calibration.md 2.3,
#: computed there from github.com/QwenLM/Qwen2.5-Math evaluation/data/eval_rm_maj_example/math_cot_100.jsonl [D]
MATH_COT = {"prompts": 100, "group": 8, "mean": 359.0, "median": 320.0, "p90": 507.0, "p99": 1442.0, "max": 1800.0}

#: fitted targets: (dataset, model or None for the entry's default) -> the log it is fitted to
TARGETS: dict[tuple[str, str | None], str] = {
    ("gsm8k", None): "gsm8k-qwen2.5-3b",
    ("gsm8k", "qwen2.5-7b"): "gsm8k-qwen2.5-7b",
    ("gsm8k", "qwen2.5-0.5b"): "gsm8k-qwen2.5-0.5b",
}
#: datasets without a training log: their runaway block is MATH's (an assumption, docs/workload.md)
ASSUMED_LIKE_MATH = ("gpqa", "livecodebench")
#: rows of the comparison table that no fit used (checks against other shapes of the same model)
CHECKS: dict[str, tuple[str, str | None]] = {"gsm8k-qwen2.5-0.5b-ppo": ("gsm8k", "qwen2.5-0.5b")}

Z90 = 1.2815515655446004  # standard normal 90th percentile
BATCHES = 64  # sampled batches per evaluation (common random numbers: the same seed every time)


# ---------------------------------------------------------------------------------------------- sampling


def sample(entry: dict[str, Any], model: str | None, prompts: int, group: int, cap: int, batches: int, seed: int = SEED) -> np.ndarray:
    """Response lengths of `batches` iterations of the dataset model, shape (batches, prompts x group).

    Both trends are switched off: a log's cited steps are one stage of training, which the fitted values
    describe (the trends then move them from there).
    """
    params = parse_dataset("fit", entry, model)
    params = replace(params, response_trend_per_epoch=0.0, runaway_trend_per_epoch=0.0)
    w = DatasetWorkload(
        params, prompts_per_iteration=prompts, group_size=group, max_prompt_tokens=100_000,
        max_response_tokens=cap, rng=np.random.default_rng(seed),
    )  # fmt: skip
    return np.stack([w.iteration(i).response_tokens for i in range(batches)]).astype(float)


def batch_stats(x: np.ndarray, cap: int) -> dict[str, float]:
    """Mean over batches of: mean, max/mean, min/mean, capped fraction, share of batches that reach the cap."""
    means = x.mean(axis=1)
    reached = x.max(axis=1) >= cap
    below = ~reached
    return {
        "mean": float(means.mean()),
        "max_over_mean": float((x.max(axis=1) / means).mean()),
        "max_over_mean_uncapped": float((x.max(axis=1) / means)[below].mean()) if below.any() else float("nan"),
        "min_over_mean": float((x.min(axis=1) / means).mean()),
        "capped": float((x >= cap).mean()),
        "steps_at_cap": float(reached.mean()),
    }


def cited_stats(log: Log) -> dict[str, float]:
    mean, mx, mn = log.column(0), log.column(1), log.column(2)
    reached = mx >= log.cap
    capped = log.capped_counts().sum() / (log.samples * len(log.steps)) if log.steps[min(log.steps)][3] is not None else float("nan")
    return {
        "mean": float(mean.mean()),
        "max_over_mean": float((mx / mean).mean()),
        "max_over_mean_uncapped": float((mx / mean)[~reached].mean()) if (~reached).any() else float("nan"),
        "min_over_mean": float((mn / mean).mean()),
        "capped": float(capped),
        "steps_at_cap": float(reached.mean()),
    }


# ---------------------------------------------------------------------------------------------- fitting


def with_response(entry: dict[str, Any], median: float, sigma_total: float, runaway: dict[str, float] | None = None) -> dict[str, Any]:
    """The entry with a new bulk (its epoch and sample shares kept) and, optionally, a runaway block."""
    resp = dict(entry["response_tokens"])
    between = sigma_total**2 - resp["sigma_epoch"] ** 2 - resp["sigma_sample"] ** 2
    resp.update(median=median, sigma_prompt=math.sqrt(max(between, 0.0)))
    out = {**entry, "response_tokens": resp}
    if runaway is not None:
        out["runaway"] = runaway
    return out


def fit_bulk(entry: dict[str, Any], log: Log, runaway_p: float) -> tuple[float, float]:
    """Median and total sigma whose sampled batches of the log's shape match its mean, min/mean and max/mean."""
    from scipy.optimize import least_squares

    target = cited_stats(log)
    floor = math.hypot(entry["response_tokens"]["sigma_epoch"], entry["response_tokens"]["sigma_sample"])
    runaway = {**entry.get("runaway", {}), "probability": runaway_p, "trend_per_epoch": 0.0}

    # The rollout phase ends at the batch maximum, so the spread is fitted to max/mean where the log's maximum
    # is below the cap; where it is at the cap (runaways), the maximum says nothing about the bulk and
    # min/mean is used instead. The other ratio is shown next to its cited value in docs/workload.md.
    spread = "max_over_mean" if not math.isnan(target["max_over_mean_uncapped"]) else "min_over_mean"
    cited = target["max_over_mean_uncapped"] if spread == "max_over_mean" else target["min_over_mean"]

    def residuals(x: np.ndarray) -> np.ndarray:
        median, sigma = math.exp(x[0]), floor + math.exp(x[1])
        got = batch_stats(sample(with_response(entry, median, sigma, runaway), None, log.prompts, log.group, log.cap, BATCHES), log.cap)
        return np.array([(got["mean"] - target["mean"]) / target["mean"], (got[spread] - cited) / cited])

    x0 = np.array([math.log(target["mean"]), math.log(0.15)])
    fit = least_squares(residuals, x0, diff_step=1e-3, xtol=1e-8)
    return math.exp(fit.x[0]), floor + math.exp(fit.x[1])


def overflow(median: float, sigma_total: float, cap: int) -> float:
    """P(L > cap) for the lognormal bulk."""
    return 0.5 * math.erfc(math.log(cap / median) / (sigma_total * math.sqrt(2.0)))


def dispersion_correlation(logs: list[tuple[Log, list[int]]]) -> dict[str, float]:
    """Within-group correlation of the runaway indicator from the over-dispersion of capped counts across steps.

    For G groups of n samples with indicator correlation rho, Var(count) = S p (1 - p) (1 + (n - 1) rho). The
    logged ratio is rounded to 0.001, whose variance (S x 0.001)^2 / 12 is removed. Step-to-step drift of p
    (training) also inflates the variance, so rho is an upper bound. Returns rho (pooled, weighted by
    degrees of freedom), p, and the latent correlation r of the threshold model that gives that rho.
    """
    from scipy.optimize import brentq
    from scipy.stats import multivariate_normal, norm

    rhos, weights, ps = [], [], []
    for log, steps in logs:
        counts = log.capped_counts(steps)
        p = counts.mean() / log.samples
        var = counts.var(ddof=1) - (log.samples * 0.001) ** 2 / 12
        d = var / (log.samples * p * (1 - p))
        rhos.append(max((d - 1) / (log.group - 1), 0.0))
        weights.append(len(steps) - 1)
        ps.append(p)
    rho = float(np.average(rhos, weights=weights))
    p = float(np.average(ps, weights=weights))
    t = norm.ppf(1 - p)

    def gap(r: float) -> float:
        both = multivariate_normal(mean=[0, 0], cov=[[1, r], [r, 1]]).cdf([-t, -t])  # P(both above t), by symmetry
        return (both - p * p) / (p * (1 - p)) - rho

    r = brentq(gap, 1e-6, 0.999, xtol=1e-6) if rho > 0 else 0.0
    return {"rho": rho, "p": p, "r": float(r), "rhos": rhos}


def runaway_trend(log: Log, early: list[int], late: list[int], pool: int) -> dict[str, float]:
    """Per-epoch factor of the runaway share between two windows of steps (capped counts from the logged ratio).

    A logged clip_ratio of 0.000 with max = cap means 1 or 2 capped samples of 5,120 (0.000 < 2.56 / 5,120), taken
    as 1.5; 0.001 means 3 to 7, taken as 5 (interval midpoints [D]).
    """
    def count(step: int) -> float:
        ratio = log.steps[step][3]
        exact = ratio * log.samples
        if ratio == 0.0:
            return 1.5 if log.steps[step][1] >= log.cap else 0.0
        if ratio == 0.001:
            return 5.0
        return exact

    p_early = np.mean([count(s) for s in early]) / log.samples
    p_late = np.mean([count(s) for s in late]) / log.samples
    t_early = np.mean(early) * log.prompts / pool
    t_late = np.mean(late) * log.prompts / pool
    trend = math.exp(math.log(p_late / p_early) / (t_late - t_early)) - 1.0
    return {"p_early": float(p_early), "p_late": float(p_late), "epochs_early": float(t_early), "epochs_late": float(t_late), "trend": trend}


def epoch_sigma(entry: dict[str, Any], share: float = 0.70, tokens: float = 50.0) -> float:
    """sigma_epoch such that `share` of a prompt's group-mean changes between epochs are under `tokens` (RLHFless, n = 8).

    The same Monte Carlo as docs/workload.md describes (1,000 prompts, 250 per step, 8 samples, cap 2,048, the
    trend included), holding sigma_prompt^2 + sigma_epoch^2 fixed so that the within-step spread does not move.
    """
    from scipy.optimize import brentq

    resp = entry["response_tokens"]
    between = resp["sigma_prompt"] ** 2 + resp["sigma_epoch"] ** 2

    def gap(sigma_e: float) -> float:
        trial = {**entry, "response_tokens": {**resp, "sigma_epoch": sigma_e, "sigma_prompt": math.sqrt(between - sigma_e**2)}}
        trial.pop("runaway", None)
        params = parse_dataset("fit", trial)
        w = DatasetWorkload(params, prompts_per_iteration=250, group_size=8, max_prompt_tokens=100_000,
                            max_response_tokens=2048, rng=np.random.default_rng(SEED), dataset_prompts=1000)  # fmt: skip
        means = []
        for e in range(2):
            m: dict[int, float] = {}
            for i in range(4 * e, 4 * e + 4):
                s = w.iteration(i)
                sums = np.bincount(s.sample_prompt, weights=s.response_tokens) / np.bincount(s.sample_prompt)
                m.update(zip(s.prompt_ids.tolist(), sums.tolist()))
            means.append(m)
        diffs = np.array([means[1][p] - means[0][p] for p in means[0]])
        return float(np.mean(np.abs(diffs) < tokens)) - share

    return brentq(gap, 0.02, math.sqrt(between) - 1e-3, xtol=1e-4)


def fit_all() -> dict[str, Any]:
    """Every fitted value, and the diagnostics the docs table quotes."""
    catalog = yaml.safe_load(DATASETS_PATH.read_text())
    out: dict[str, Any] = {"entries": {}, "diagnostics": {}}

    disp = dispersion_correlation([(LOGS["gsm8k-qwen2.5-0.5b"], sorted(LOGS["gsm8k-qwen2.5-0.5b"].steps)), (LOGS["gsm8k+math-qwen2-7b"], MIX_EARLY)])
    trend = runaway_trend(LOGS["gsm8k+math-qwen2-7b"], MIX_EARLY, MIX_LATE, MIX_POOL)
    r = round(disp["r"], 2)
    out["diagnostics"].update(dispersion=disp, trend=trend)

    def trend_for(name: str) -> float:
        """The log's per-epoch factor, per epoch of this dataset's pool (as response_trend_per_epoch is)."""
        return round((1.0 + trend["trend"]) ** (catalog[name]["num_prompts"] / MIX_POOL) - 1.0, 4)

    # GSM8K: the default is the RLHFless testbed's model class (Qwen2.5-3B); 7B and 0.5B are by_model overrides.
    gsm8k = {k: v for k, v in catalog["gsm8k"].items() if k != "by_model"}
    fitted: dict[tuple[str, str | None], dict[str, Any]] = {}
    for (dataset, model), key in TARGETS.items():
        log = LOGS[key]
        capped = cited_stats(log)["capped"]
        p = capped
        median, sigma = fit_bulk(gsm8k, log, p)
        for _ in range(3):  # the bulk's own overflow at the cap is not a runaway
            p = max(capped - overflow(median, sigma, log.cap), 0.0)
            median, sigma = fit_bulk(gsm8k, log, p)
        zero_bound = 3.0 / (log.samples * len(log.steps)) if log.capped_counts().sum() == 0 else None  # 95% upper bound
        fitted[(dataset, model)] = {"median": median, "sigma": sigma, "p": p, "p_upper": zero_bound}

    base = fitted[("gsm8k", None)]
    gsm8k_resp = with_response(gsm8k, round(base["median"]), base["sigma"])["response_tokens"]
    sigma_e = epoch_sigma({**gsm8k, "response_tokens": gsm8k_resp})
    between = gsm8k_resp["sigma_prompt"] ** 2 + gsm8k_resp["sigma_epoch"] ** 2
    gsm8k_resp.update(sigma_epoch=round(sigma_e, 2), sigma_prompt=round(math.sqrt(between - round(sigma_e, 2) ** 2), 2))
    out["diagnostics"]["gsm8k_sigma_epoch"] = sigma_e
    entries: dict[str, dict[str, Any]] = {}
    entries["gsm8k"] = {
        "response_tokens": gsm8k_resp,
        "runaway": {"probability": round(base["p"], 4), "prompt_correlation": r, "trend_per_epoch": trend_for("gsm8k")},
        "by_model": {},
    }
    for (dataset, model), f in fitted.items():
        if model is None:
            continue
        s_e, s_s = gsm8k_resp["sigma_epoch"], gsm8k_resp["sigma_sample"]
        override: dict[str, Any] = {
            "response_tokens": {"median": round(f["median"]), "sigma_prompt": round(math.sqrt(max(f["sigma"] ** 2 - s_e**2 - s_s**2, 0.0)), 2)}
        }
        if f["p"] > 0:
            override["runaway"] = {"probability": round(f["p"], 4)}
        entries["gsm8k"]["by_model"][model] = override
    out["fitted"] = fitted

    # MATH: the bulk from the CoT sample's median and p90; the samples beyond the bulk's reach (the top 1%, at
    # p99 and above) run to the generation cap. The trend is the GSM8K+MATH log's.
    math_entry = catalog["math"]
    s_total = math.log(MATH_COT["p90"] / MATH_COT["median"]) / Z90
    s_e, s_s = math_entry["response_tokens"]["sigma_epoch"], math_entry["response_tokens"]["sigma_sample"]
    p_math = 0.01 - overflow(MATH_COT["median"], s_total, int(MATH_COT["p99"]))
    entries["math"] = {
        "response_tokens": {
            "median": round(MATH_COT["median"]), "sigma_prompt": round(math.sqrt(s_total**2 - s_e**2 - s_s**2), 2),
            "sigma_epoch": s_e, "sigma_sample": s_s,
        },
        "runaway": {"probability": round(p_math, 4), "prompt_correlation": r, "trend_per_epoch": trend_for("math")},
    }  # fmt: skip
    out["diagnostics"]["math_sigma_total"] = s_total
    for name in ASSUMED_LIKE_MATH:
        entries[name] = {"runaway": {**entries["math"]["runaway"], "trend_per_epoch": trend_for(name)}}
    out["entries"] = entries
    return out


# ---------------------------------------------------------------------------------------------- output


def _flow(value: Any) -> str:
    """A YAML flow mapping on one line, numbers as written by round()."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(float(value)) if value != int(value) else f"{value:.1f}"
    return str(value)


def fitted_block(entry: dict[str, Any]) -> list[str]:
    lines = [f"  {BEGIN}"]
    for key in ("response_tokens", "runaway"):
        if key in entry:
            lines.append(f"  {key}: {_flow(entry[key])}")
    if entry.get("by_model"):
        lines.append("  by_model:")
        for model, override in entry["by_model"].items():
            lines.append(f"    {model}: {_flow(override)}")
    lines.append(f"  {END}")
    return lines


def render_datasets(entries: dict[str, dict[str, Any]], text: str) -> str:
    """datasets.yaml with each entry's fitted block replaced (or inserted before its `sources:`)."""
    lines = text.splitlines()
    for name, entry in entries.items():
        start = lines.index(f"{name}:")
        stop = next((j for j in range(start + 1, len(lines)) if lines[j] and not lines[j].startswith((" ", "#"))), len(lines))
        block = lines[start:stop]
        if f"  {BEGIN}" in block:
            b, e = block.index(f"  {BEGIN}"), block.index(f"  {END}")
            block[b : e + 1] = fitted_block(entry)
        else:
            owned = {f"  {k}:" for k in ("response_tokens", "runaway", "by_model") if k in entry}
            block = [ln for ln in block if not any(ln.startswith(o) for o in owned)]
            at = block.index("  sources:")
            block[at:at] = fitted_block(entry)
        lines[start:stop] = block
    return "\n".join(lines) + "\n"


def _fmt(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def render_table(result: dict[str, Any], catalog: dict[str, Any]) -> str:
    """The comparison of cited and sampled figures (markdown), for docs/workload.md."""
    rows = [
        "| Dataset (model in the log) | Log (eric-haibin-lin/verl-data, steps) | Shape: prompts × n, cap | Mean: cited / sampled | "
        "max/mean: cited / sampled | min/mean: cited / sampled | Capped: cited / sampled | Steps at the cap: cited / sampled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    plan = [(key, ds, model, "fit") for (ds, model), key in TARGETS.items()] + [(key, ds, model, "check") for key, (ds, model) in CHECKS.items()]
    for key, dataset, model, kind in plan:
        log = LOGS[key]
        entry = catalog[dataset]
        got = batch_stats(sample(entry, model or log.model, log.prompts, log.group, log.cap, 200), log.cap)
        cited = cited_stats(log)
        steps = sorted(log.steps)
        label = f"{dataset} ({log.model}{', default' if model is None else ''})" + (" — check, not fitted" if kind == "check" else "")
        rows.append(
            f"| {label} | `{log.path.split('/')[-1]}` @{log.commit[:8]}, steps {_ranges(steps)} | {log.prompts} × {log.group}, {log.cap} | "
            f"{cited['mean']:.0f} / {got['mean']:.0f} | {_fmt(cited['max_over_mean'])} / {_fmt(got['max_over_mean'])} | "
            f"{_fmt(cited['min_over_mean'])} / {_fmt(got['min_over_mean'])} | {_pct(cited['capped'])} / {_pct(got['capped'])} | "
            f"{cited['steps_at_cap']:.0%} / {got['steps_at_cap']:.0%} |"
        )
    cot = sample(catalog["math"], None, MATH_COT["prompts"], MATH_COT["group"], int(MATH_COT["max"]), 200)
    flat = cot.reshape(200, -1)
    q = {k: float(np.mean([np.quantile(b, v) for b in flat])) for k, v in (("p90", 0.9), ("p99", 0.99))}
    rows.append(
        f"| math (Qwen2.5-Math instruct CoT, not RL; default) | calibration.md 2.3, `math_cot_100.jsonl` (800 samples, one batch) | 100 × 8, 1,800 (est.) | "
        f"{MATH_COT['mean']:.0f} / {flat.mean():.0f} | {MATH_COT['max'] / MATH_COT['mean']:.2f} / {np.mean(flat.max(axis=1) / flat.mean(axis=1)):.2f} | "
        f"p90 {MATH_COT['p90']:.0f} / {q['p90']:.0f}; p99 {MATH_COT['p99']:.0f} / {q['p99']:.0f} (tokens) | "
        f"1% at or above p99 / {_pct(float((flat >= MATH_COT['max']).mean()))} at the cap | — |"
    )
    mix = LOGS["gsm8k+math-qwen2-7b"]
    d, t = result["diagnostics"]["dispersion"], result["diagnostics"]["trend"]
    notes = [
        "",
        f"- Runaway prompt correlation: the capped counts per step vary more than a binomial would (dispersion gives "
        f"a within-group indicator correlation of {d['rhos'][0]:.2f} in the 0.5B log and {d['rhos'][1]:.2f} in the "
        f"GSM8K+MATH log, steps {_ranges(MIX_EARLY)}; pooled {d['rho']:.2f}), which the threshold model gives with a latent "
        f"correlation r = {d['r']:.2f}. Drift of p between steps inflates the dispersion too, so r is an upper bound.",
        f"- Runaway trend: in the GSM8K+MATH log (`{mix.path.split('/')[-1]}`, Qwen2-7B, {mix.prompts} × {mix.group}, cap {mix.cap}) "
        f"the capped share falls from {_pct(t['p_early'])} (steps {_ranges(MIX_EARLY)}, epoch {t['epochs_early']:.1f}) to about "
        f"{_pct(t['p_late'])} (steps {_ranges(MIX_LATE)}, epoch {t['epochs_late']:.1f}): a factor {1 + t['trend']:.2f} per epoch "
        f"of its {MIX_POOL:,} prompts, which each entry stores per epoch of its own pool (`runaway.trend_per_epoch`). "
        f"The maximum stays at the cap in every step.",
        f"- GSM8K sigma_epoch, re-derived for the fitted bulk by the RLHFless criterion (70% of group-mean changes "
        f"under 50 tokens): {result['diagnostics']['gsm8k_sigma_epoch']:.3f}.",
    ]
    for (dataset, model), f in result["fitted"].items():
        if f["p_upper"] is not None:
            notes.append(
                f"- {dataset}{'' if model is None else ' (' + model + ')'}: no capped sample in {LOGS[TARGETS[(dataset, model)]].samples * len(LOGS[TARGETS[(dataset, model)]].steps):,} "
                f"logged samples, so the runaway probability is 0 (95% upper bound {_pct(f['p_upper'])})."
            )
    return "\n".join(rows + notes)


def _ranges(steps: list[int]) -> str:
    """1, 2, 3, 60, 61 -> '1-3, 60-61'."""
    parts, start = [], steps[0]
    for a, b in zip(steps, steps[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}-{a}" if a != start else f"{a}")
            start = b
    return ", ".join(parts)


#: the basis of each dataset's numbers (tags as in calibration.md), for the parameter table
BASIS = {
    "gsm8k": ("[V]", "[D]", "[D] fitted (Qwen2.5-3B log)", "[D] none in 1,920 samples", "[D]"),
    "math": ("[R]", "[D]", "[D] CoT sample median, p90", "[D] CoT sample top 1%", "[A]"),
    "gpqa": ("[S]", "[D from S]", "[A]", "[A] as MATH", "[A]"),
    "livecodebench": ("[S/A]", "[D from S]", "[A]", "[A] as MATH", "[A]"),
}
PARAMS_BEGIN, PARAMS_END = "<!-- fit_length_tails params: begin -->", "<!-- fit_length_tails params: end -->"


def render_params(catalog: dict[str, Any]) -> str:
    """The shipped parameters of every dataset (and its by_model overrides), as datasets.yaml holds them."""
    rows = [
        "| Dataset | Pool | Prompt (template + question + suffix) | Response median / sigma_total (prompt, epoch, sample) | "
        "Runaway probability (prompt correlation, trend per epoch) | Length trend per epoch |",
        "|---|---|---|---|---|---|",
    ]
    for name in BASIS:
        params = parse_dataset(name, catalog[name])
        pool_tag, prompt_tag, resp_tag, run_tag, trend_tag = BASIS[name]
        prompt = catalog[name]["prompt_tokens"]
        rows.append(
            f"| {name} | {params.num_prompts:,} {pool_tag} | {params.template_tokens} + LN({prompt['median']:g}, {prompt['sigma']:g}) + "
            f"{params.suffix_tokens} {prompt_tag} | {_resp(params)} {resp_tag} | {_run(params)} {run_tag} | "
            f"{params.response_trend_per_epoch:+g} {trend_tag} |"
        )
        for model in catalog[name].get("by_model", {}):
            over = parse_dataset(name, catalog[name], model)
            rows.append(f"| {name}, by_model `{model}` | | | {_resp(over)} [D] fitted | {_run(over)} [D] | |")
    return "\n".join(rows)


def _resp(p: Any) -> str:
    return f"{p.response_median_tokens:g} / {p.response_sigma:.2f} ({p.sigma_prompt:g}, {p.sigma_epoch:g}, {p.sigma_sample:g})"


def _run(p: Any) -> str:
    return f"{p.runaway_probability:.2%} ({p.runaway_prompt_correlation:g}, {p.runaway_trend_per_epoch:+g})"


def render_doc(table: str, params: str, text: str) -> str:
    for begin, end, body in ((DOC_BEGIN, DOC_END, table), (PARAMS_BEGIN, PARAMS_END, params)):
        b, e = text.index(begin), text.index(end)
        text = text[: b + len(begin)] + "\n" + body + "\n" + text[e:]
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if datasets.yaml or docs/workload.md is out of date")
    args = ap.parse_args(argv)
    result = fit_all()
    old_yaml = DATASETS_PATH.read_text()
    new_yaml = render_datasets(result["entries"], old_yaml)
    catalog = yaml.safe_load(new_yaml)
    old_doc = DOC_PATH.read_text()
    new_doc = render_doc(render_table(result, catalog), render_params(catalog), old_doc)
    if args.check:
        stale = [p.name for p, old, new in ((DATASETS_PATH, old_yaml, new_yaml), (DOC_PATH, old_doc, new_doc)) if old != new]
        if stale:
            print(f"out of date: {', '.join(stale)}; run: python workloads/fit_length_tails.py", file=sys.stderr)
            return 1
        return 0
    DATASETS_PATH.write_text(new_yaml)
    DOC_PATH.write_text(new_doc)
    print(f"wrote {DATASETS_PATH.relative_to(ROOT)}, {DOC_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
