"""Run every RLHFless paper setting and regenerate docs/reproduction.md (each published number beside ours).

    python experiments/paper/reproduce.py [--out results/paper] [--workers 2] [--doc docs/reproduction.md]

Runs experiments/paper/{testbed_grpo,testbed_ppo,ablation (5 variants),sensitivity,large_scale}.yaml
through `python -m sim.run` (finished runs are reused: delete --out to start over), reads their runs.csv
files and writes the document. Published figures come from ../shared/research/rlhfless.md section 6.2
(their confidence tags are kept). Nothing here is tuned to a paper number.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

ABLATION = {
    "none": dict(dedup_prefill=False, prompt_assignment=False, actor_scaling=False, cut_and_migrate=False),
    "+dedup prefill": dict(dedup_prefill=True, prompt_assignment=False, actor_scaling=False, cut_and_migrate=False),
    "+prompt assignment": dict(dedup_prefill=True, prompt_assignment=True, actor_scaling=False, cut_and_migrate=True),
    "+actor scaling": dict(dedup_prefill=True, prompt_assignment=True, actor_scaling=True, cut_and_migrate=False),
    "full": dict(dedup_prefill=True, prompt_assignment=True, actor_scaling=True, cut_and_migrate=True),
    "full + streaming inference": dict(
        dedup_prefill=True, prompt_assignment=True, actor_scaling=True, cut_and_migrate=True, stream_inference=True
    ),
}


def ablation_slug(label: str) -> str:
    return "ablation_" + label.strip("+").replace(" + ", "_").replace(" ", "_")


def run(file: Path, out: Path, workers: int, extra: list[str] | None = None) -> None:
    from sim.run import main

    args = [str(file), "--out", str(out), "--quiet", "--workers", str(workers)]
    for item in extra or []:
        args += ["--set", item]
    rc = main(args)
    if rc != 0:
        raise SystemExit(f"{file.name} {' '.join(extra or [])}: exit {rc}")


def load(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name / "runs.csv")


def pct(x: float) -> str:
    return f"{x:+.1%}" if pd.notna(x) else "n/a"


def ratio(x: float) -> str:
    return f"{x:.2f}x" if pd.notna(x) else "n/a"


def pair_table(df: pd.DataFrame, main: str, base: str, keys: list[str]) -> pd.DataFrame:
    """One row per sweep point: main scheduler against a baseline (all iterations and steady state)."""
    rows = []
    mains = df[df["scheduler"] == main]
    for _, m in mains.iterrows():
        point = {k: m[k] for k in keys}
        b = df[(df["scheduler"] == base) & (df[keys] == pd.Series(point)).all(axis=1)]
        if b.empty:
            continue
        b = b.iloc[0]
        rows.append(
            {
                **point,
                "speedup": b["mean_iteration_s"] / m["mean_iteration_s"],
                "cost_reduction": 1 - m["total_cost_usd"] / b["total_cost_usd"],
                "steady_speedup": b["steady_mean_iteration_s"] / m["steady_mean_iteration_s"],
                "steady_cost_reduction": 1 - m["steady_cost_per_iteration_usd"] / b["steady_cost_per_iteration_usd"],
            }
        )
    return pd.DataFrame(rows)


def md_table(df: pd.DataFrame, fmt: dict[str, callable]) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt.get(c, str)(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "paper"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--doc", default=str(ROOT / "docs" / "reproduction.md"))
    args = ap.parse_args(argv)
    out = Path(args.out)

    for name in ("testbed_grpo", "testbed_ppo", "sensitivity", "large_scale"):
        run(HERE / f"{name}.yaml", out, args.workers)
    for label, params in ABLATION.items():
        slug = ablation_slug(label)
        sets = [f"name={slug}"] + [f"scheduler.params.{k}={str(v).lower()}" for k, v in params.items()]
        run(HERE / "ablation.yaml", out, args.workers, sets)

    fmt = {"speedup": ratio, "steady_speedup": ratio, "cost_reduction": pct, "steady_cost_reduction": pct}
    sections = []

    # ---------------------------------------------------------------- testbed
    tb = []
    for name, algo in (("testbed_grpo", "GRPO"), ("testbed_ppo", "PPO")):
        df = load(out, name)
        t = pair_table(df, "rlhfless", "verl", ["model", "workload.dataset"])
        t.insert(0, "algorithm", algo)
        tb.append(t)
    testbed = pd.concat(tb, ignore_index=True)
    best_speed, best_cost = testbed["speedup"].max(), testbed["cost_reduction"].max()
    best_sspeed, best_scost = testbed["steady_speedup"].max(), testbed["steady_cost_reduction"].max()
    sections.append(
        "## Physical testbed: RLHFless against verl (16 L40S)\n\n"
        "Paper (abstract, [A]): **up to 1.35x speedup and up to 44.8% cost reduction** (GPU-seconds), the best case "
        "most likely GRPO with Qwen2.5-3B on GSM8K ([D], unverified); PPO gains less than GRPO ([D]).\n\n"
        f"Simulated, best over the 12 settings: speedup **{ratio(best_speed)}** (steady state {ratio(best_sspeed)}), "
        f"cost reduction **{pct(best_cost)}** (steady state {pct(best_scost)}).\n\n"
        + md_table(testbed, fmt)
        + "\n\n`speedup` and `cost_reduction` average over every simulated step (6), including the first steps' cold "
        "starts and the length predictor's empty history; `steady_*` use the second half of the steps, closer to "
        "the paper's averages over 3 epochs of real training, where start-up is amortised."
    )

    # ---------------------------------------------------------------- baselines: rlhfuse and oracle
    df = load(out, "testbed_grpo")
    fuse = pair_table(df, "rlhfless", "rlhfuse", ["model", "workload.dataset"])
    orc = pair_table(df, "rlhfless", "oracle", ["model", "workload.dataset"])
    sections.append(
        "## Against RLHFuse and the oracle (GRPO settings)\n\n"
        "Paper: RLHFless saves **12.8%** more cost than RLHFuse's global cut-and-migrate ([D], unverified); "
        "full RLHFless reaches **>90% of the oracle** ([D], unverified).\n\n"
        f"Simulated cost reduction of RLHFless against RLHFuse: mean {pct(fuse['cost_reduction'].mean())} "
        f"(steady state {pct(fuse['steady_cost_reduction'].mean())}).\n\n"
        + md_table(fuse, fmt)
        + "\n\nRLHFless against the oracle (a negative cost reduction means the oracle is cheaper):\n\n"
        + md_table(orc, fmt)
    )

    # ---------------------------------------------------------------- ablation
    ab_rows = []
    base_cost = None
    for label in ABLATION:
        d = load(out, ablation_slug(label))
        m = d[d["scheduler"] == "rlhfless"].iloc[0]
        v = d[d["scheduler"] == "verl"].iloc[0]
        base_cost = base_cost or m["steady_cost_per_iteration_usd"]
        ab_rows.append(
            {
                "variant": label,
                "steady_speedup": v["steady_mean_iteration_s"] / m["steady_mean_iteration_s"],
                "steady_cost_reduction": 1 - m["steady_cost_per_iteration_usd"] / v["steady_cost_per_iteration_usd"],
                "prefill_tokens": int(m["prefill_tokens"]),
                "migrations": int(m["migrations"]),
                "rollout_replicas": f"{m['rollout_replicas']:.1f}",
            }
        )
    sections.append(
        "## Ablation (GRPO, Qwen2.5-3B, GSM8K), each mechanism added in turn, against verl\n\n"
        "Paper ([D] citing its Figure 11, unverified): dedup prefill gives a slight cost drop (~5-10%); prompt "
        "assignment cuts cost notably; actor scaling mainly cuts step time; full RLHFless reaches >90% of the oracle.\n\n"
        + md_table(pd.DataFrame(ab_rows), {**fmt, "prefill_tokens": str, "migrations": str})
        + "\n\nVariants: `none` turns off dedup prefill, prompt assignment (round-robin instead), actor scaling "
        "(every GPU a decode actor) and cut-and-migrate; `+prompt assignment` also turns cut-and-migrate on (the paper "
        "pairs them); `+actor scaling` keeps cut-and-migrate off to isolate scaling. `full + streaming inference` "
        "(not a paper variant; off by default) also runs the inference roles on the GPUs the decode actors leave "
        "free, fed each sample as it finishes: it hides most of the inference phase and pays for the GPUs that wait "
        "for samples."
    )

    # ---------------------------------------------------------------- sensitivity
    sens = load(out, "sensitivity")
    s = sens[sens["scheduler"] == "rlhfless"]
    grid = s.groupby("scheduler.params.tau").agg(
        steady_cost_usd=("steady_cost_per_iteration_usd", "mean"),
        steady_iteration_s=("steady_mean_iteration_s", "mean"),
        migrations=("migrations", "mean"),
    ).reset_index()
    lam = s.groupby("scheduler.params.lambda").agg(
        steady_cost_usd=("steady_cost_per_iteration_usd", "mean"),
        steady_iteration_s=("steady_mean_iteration_s", "mean"),
        rollout_replicas=("rollout_replicas", "mean"),
    ).reset_index()
    ew = s.groupby("scheduler.params.ewma_alpha").agg(
        steady_cost_usd=("steady_cost_per_iteration_usd", "mean"),
        steady_iteration_s=("steady_mean_iteration_s", "mean"),
    ).reset_index()
    num = {c: (lambda x: f"{x:.3g}") for c in ("steady_cost_usd", "steady_iteration_s", "migrations", "rollout_replicas")}
    sections.append(
        "## Sensitivity (GRPO, Qwen2.5-3B, GSM8K)\n\n"
        "Paper ([B]): a smaller cut threshold tau triggers more migrations; at tau <= 0.5 cost stops decreasing "
        "(receivers have no free slots); a late cut can cause latency outliers. Fixed normalisation of the lambda "
        "score does not carry over across workloads. No numbers are published.\n\n"
        "By tau (mean over lambda and EWMA weight):\n\n" + md_table(grid, num)
        + "\n\nBy lambda (weight of time against cost):\n\n" + md_table(lam, num)
        + "\n\nBy EWMA weight of the newest observation (1.0 = the last epoch's length):\n\n" + md_table(ew, num)
    )

    # ---------------------------------------------------------------- large scale
    ls = load(out, "large_scale")
    t = pair_table(ls, "rlhfless", "verl", ["model"])
    sections.append(
        "## Large scale: 20 nodes x 8 H100, a 70B model\n\n"
        "Paper (Vidur-based simulation, [B/C]): **1.23x speedup and 38.7% cost reduction** against verl.\n\n"
        + md_table(t, fmt)
    )

    doc = [
        "# Reproducing the RLHFless paper",
        "",
        "Generated by `python experiments/paper/reproduce.py` from the runs in `experiments/paper/`; do not edit by "
        "hand. Published figures and their confidence tags come from ../shared/research/rlhfless.md (the paper's body "
        "could not be read; per-figure numbers are mostly unknown). Every simulated number is a pure function of the "
        "shipped experiment files and seeds.",
        "",
        "## What drives the gaps (assumptions where the paper is silent)",
        "",
        "- **Workload.** Batch sizes, group size, response-length distributions (GPQA and LiveCodeBench have no public "
        "figures: docs/workload.md) and the number of steps are assumptions. Response lengths of 3B/7B instruct models "
        "on GSM8K are short (~250 tokens), so generation is a smaller share of a step than in long chain-of-thought RL, "
        "and every serverless mechanism acts on generation.",
        "- **Serverless platform.** Cold start = container 5 s + weight load + engine init 15 s (self-hosted preset, "
        "docs/platforms.md); idle functions sleep in host memory and wake in `wake_s` + a DRAM reload "
        "(`platform.sleep_idle: true`), standing in for the paper's pre-warming; RLHFless sets keep-alive to its shortest "
        "step + 30 s. The first steps pay cold starts, which is why the all-steps ratios are below the steady-state ones.",
        "- **Cost metric.** GPU-seconds billed (the paper's metric) priced at on-demand rates; verl is billed for every "
        "GPU for the whole run.",
        "- **Actor scaling.** lambda = 0.5 with normalisers at the largest N; the paper's lambda and normalisers are "
        "not published. With short GSM8K responses the step time barely depends on N, so the score favours few actors: "
        "cheaper, slightly slower generation.",
        "- **verl.** Colocated hybrid engine with a 2 s mode switch per step and rollout memory fraction 0.6; "
        "RLHFuse's migration threshold (0.1) and its fusion (a fluid approximation) are assumptions "
        "(docs/schedulers.md).",
        "",
        *[s + "\n" for s in sections],
    ]
    Path(args.doc).write_text("\n".join(doc))
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
