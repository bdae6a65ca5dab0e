"""Generate the measured tables of docs/model.md from the simulator and the shipped calibration data.

Each table sits between `<!-- BEGIN gen_model_tables: NAME -->` and `<!-- END gen_model_tables: NAME -->`:

- `roofline_bare`: the bandwidth roofline alone (efficiency 1, no overheads) against published batch-1 vLLM speeds;
- `decode_fit`: the least-squares fit of the decode efficiency and overheads (bench/fit_decode_overheads.py);
- `decode_table`: the shipped defaults against the same speeds, fitted rows and held-out long inputs;
- `admission`: KV admission on current tokens (vLLM) against reserving `max_response_tokens` (verl, 1 x 8 L40S);
- `phase_shares`: verl's phase shares of the step in four settings, to compare with published breakdowns.

    .venv/bin/python docs/gen_model_tables.py           # rewrite the tables
    .venv/bin/python docs/gen_model_tables.py --check   # exit 1 if any is out of date

`tests/test_docs_tables.py` runs the check, so the page cannot drift from the model.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import ROOT, main, md_table  # noqa: E402

PAGE = ROOT / "docs" / "model.md"

#: the admission comparison: verl, Qwen2.5-7B, 1 x 8 L40S, 128 prompts x 8 samples, one iteration
ADMISSION_BASE: dict[str, Any] = {
    "name": "admission", "seed": 3, "iterations": 1, "model": "qwen2.5-7b",
    "workload": {"prompts_per_iteration": 128, "samples_per_prompt": 8},
    "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "L40S"}, "platform": {"kind": "serverful"}, "scheduler": {"name": "verl"},
}  # fmt: skip
ADMISSION_CASES = (("LiveCodeBench", "livecodebench", 4096), ("MATH", "math", 2048), ("GSM8K", "gsm8k", 2048))

#: the phase-share settings: verl, Qwen2.5-7B, 2 nodes x 8 GPUs, 2 iterations
SHARES_BASE: dict[str, Any] = {
    "name": "shares", "seed": 0, "iterations": 2, "model": "qwen2.5-7b",
    "cluster": {"nodes": 2, "gpus_per_node": 8, "gpu": "L40S"}, "platform": {"kind": "serverful"}, "scheduler": {"name": "verl"},
}  # fmt: skip


def _long_cot() -> dict[str, Any]:
    """The MATH entry with a 4,000-token response median: a long chain-of-thought shape."""
    from sim.catalog import load_catalog

    entry = copy.deepcopy(dict(load_catalog().dataset("math")))
    entry["response_tokens"] = {**entry["response_tokens"], "median": 4000}
    return {k: v for k, v in entry.items() if k != "by_model"}


SHARES_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("PPO, Qwen2.5-7B, GSM8K, 512 prompts x 1, max 512 tokens, L40S",
     {"workload": {"dataset": "gsm8k", "algorithm": "ppo", "prompts_per_iteration": 512, "samples_per_prompt": 1, "max_response_tokens": 512}}),
    ("GRPO, Qwen2.5-7B, GSM8K, 128 x 8, max 2,048, L40S",
     {"workload": {"dataset": "gsm8k", "prompts_per_iteration": 128, "samples_per_prompt": 8, "max_response_tokens": 2048}}),
    ("GRPO, Qwen2.5-7B, LiveCodeBench, 128 x 8, max 8,192, L40S",
     {"workload": {"dataset": "livecodebench", "prompts_per_iteration": 128, "samples_per_prompt": 8, "max_response_tokens": 8192}}),
    ("GRPO, Qwen2.5-7B, long CoT (MATH shape, median 4,000 tokens), 128 x 8, max 16,384, H100-SXM",
     {"workload": {"dataset": "long_cot", "prompts_per_iteration": 128, "samples_per_prompt": 8, "max_response_tokens": 16384},
      "cluster": {"gpu": "H100-SXM"}}),
)  # fmt: skip
SHARE_PHASES = ("generation", "inference", "training", "weight_sync")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    from sim.config.loading import validate
    from sim.simulation import simulate

    return simulate(validate(raw, "docs/gen_model_tables.py"), ROOT).summary


def admission_table() -> str:
    rows = []
    for label, dataset, cap in ADMISSION_CASES:
        base = _merge(ADMISSION_BASE, {"workload": {"dataset": dataset, "max_response_tokens": cap}})
        current = _summary(base)
        reserved = _summary(_merge(base, {"engine": {"admission": "reserve_max"}}))
        gen_c, gen_r = current["phases"]["generation"], reserved["phases"]["generation"]
        for name, s, gen in (("current", current, f"{gen_c:.1f}"), ("reserve_max", reserved, f"{gen_r:.1f} ({gen_r / gen_c - 1:+.0%})")):
            rows.append([f"{label}, {cap:,}", name, str(s["peak_decode_batch"]), f"{s['mean_decode_batch']:.1f}", gen, f"{s['preemptions']}"])
    head = ["workload, max response", "admission", "peak batch per replica", "mean decode batch", "generation (s)", "preemptions"]
    return md_table(head, rows)


def phase_shares_table() -> str:
    """Shares of the steady step (start-up left out: it is paid once per run, not per step)."""
    rows = []
    for label, over in SHARES_CASES:
        raw = _merge(SHARES_BASE, over)
        if raw["workload"]["dataset"] == "long_cot":
            raw["workload"]["dataset"] = _long_cot()
        s = _summary(raw)
        step = sum(s["phases"].get(p, 0.0) for p in SHARE_PHASES)
        shares = [f"{s['phases'].get(p, 0.0) / step:.0%}" for p in SHARE_PHASES]
        rows.append([label, f"{s['steady_mean_iteration_s']:.0f}", *shares, f"{s['startup_s']:.0f}", f"{s['utilization']:.0%}"])
    head = ["setting", "steady step (s)", "generation", "inference", "training", "weight sync", "start-up (s)", "utilization (run)"]
    return md_table(head, rows)


def _fit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_fit_decode_overheads", ROOT / "bench" / "fit_decode_overheads.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def roofline_bare_table() -> str:
    fit = _fit_module()
    bare = fit.RooflineParams(hbm_efficiency=1.0, step_overhead_s=0, layer_overhead_s=0, allreduce_latency_s=0)
    rows = []
    for key, tp, v in fit.PUBLISHED:
        if tp != 1:
            continue
        pred = fit.predicted_tok_s(bare, key, tp)
        rows.append([key, str(tp), f"{v:.1f}", f"{pred:.1f}", f"{pred / v:.2f}×"])
    return md_table(["model", "GPUs", "published tok/s", "bare roofline tok/s", "factor"], rows)


def decode_fit_line() -> str:
    p = _fit_module().fit()
    return (
        f"- **Result.** `hbm_efficiency={p.hbm_efficiency:.4f} step_overhead_s={p.step_overhead_s:.6f}\n"
        f"  layer_overhead_s={p.layer_overhead_s:.7f} allreduce_latency_s={p.allreduce_latency_s:.7f}`.\n"
    )


def decode_table() -> str:
    fit = _fit_module()
    return fit.table(fit.RooflineParams()) + "\n"


BLOCKS = {
    "roofline_bare": roofline_bare_table, "decode_fit": decode_fit_line, "decode_table": decode_table,
    "admission": admission_table, "phase_shares": phase_shares_table,
}  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(main(__file__, {PAGE: BLOCKS}, doc=__doc__))
