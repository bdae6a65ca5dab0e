"""Generate the measured tables of docs/early_exit.md from the shipped exit profiles and the early-exit sweep.

Each table sits between `<!-- BEGIN gen_early_exit_tables: NAME -->` and `<!-- END gen_early_exit_tables: NAME -->`
in docs/early_exit.md, and only the text between the markers is rewritten:

- `profiles`: every profile in traces/exit_profiles/, side by side (EAS, stable-exit depth, batch effect);
- `curves`: their per-layer curves at the same depth fractions (top-1 agreement, similarity S, stable-exit CDF);
- `thresholds`: confidence-threshold exits with every layer allowed (the profiles' own `threshold_exits`);
- `points`: the confidence-threshold operating points at the default allowed exits (every round(L/8) layers);
- `tradeoff`: the sweep experiments/early_exit.yaml, simulated: generation time saved and token mismatch for
  each error budget and batch cap (Qwen2.5-7B on an H100, the SmolLM2 profile).

    .venv/bin/python docs/gen_early_exit_tables.py           # rewrite the tables
    .venv/bin/python docs/gen_early_exit_tables.py --check   # exit 1 if any is out of date

`tests/test_docs_early_exit.py` runs the check, so the page cannot drift from the profiles or the model.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from sim.perf.early_exit import default_exit_every, exit_layers, most_aggressive  # noqa: E402
from sim.probe.profile import ExitProfile, OperatingPoint, load_profile  # noqa: E402

PAGE = DOCS / "early_exit.md"
PROFILES = ROOT / "traces" / "exit_profiles"
EXPERIMENT = ROOT / "experiments" / "early_exit.yaml"
DEPTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BATCHES = (1, 2, 4, 8, 16)


def profiles() -> list[ExitProfile]:
    """The shipped profiles, SmolLM2 first (the simulator's default examples use it), then by name."""
    found = [load_profile(p) for p in sorted(PROFILES.glob("*.json"))]
    return sorted(found, key=lambda p: (not p.model.lower().startswith("smollm2"), p.model))


def _info(p: ExitProfile, key: str) -> Any:
    return (p.raw.get("model_info") or {}).get(key)


def profiles_table() -> str:
    profs = profiles()
    rows: list[tuple[str, list[str]]] = [
        ("model file", [str(_info(p, "file") or p.model) for p in profs]),
        ("architecture (transformers class)", [str(_info(p, "class") or "?") for p in profs]),
        ("decoder layers L", [str(p.n_layers) for p in profs]),
        ("hidden size / vocabulary", [f"{_info(p, 'hidden_size')} / {_info(p, 'vocab_size'):,}" for p in profs]),
        ("parameters", [f"{_info(p, 'n_params') / 1e6:.0f} M" for p in profs]),
        ("text tokens (its own tokenizer)", [f"{p.n_tokens:,}" for p in profs]),
        ("**EAS** (centred-logit cosine, α = 0.5)", [f"**{p.eas:.3f}**" for p in profs]),
        ("EAS with softmax-probability cosine", [f"{p.raw['alt_similarity']['softmax_prob_cosine']['eas']:.3f}" for p in profs]),
        ("**mean stable-exit depth** / L", [f"**{p.mean_stable_exit_fraction:.3f}**" for p in profs]),
        ("positions that need every layer", [f"{1 - p.stable_exit_cdf[-2]:.0%}" for p in profs]),
        ("first layer with top-1 agreement ≥ 0.5", [_first_layer(p.top1_agreement, 0.5, p.n_layers) for p in profs]),
        ("final-layer next-token accuracy", [f"{p.raw['per_layer']['next_token_accuracy'][-1]:.3f}" for p in profs]),
    ]
    for b in BATCHES[1:]:
        rows.append((f"E[max]/L at batch {b} (stable exit)", [f"{p.expected_max_depth_fraction(b):.3f}" for p in profs]))
    return _table(["quantity", *(p.model for p in profs)], [[k, *v] for k, v in rows])


def _first_layer(values: Any, level: float, n_layers: int) -> str:
    for i, v in enumerate(values, start=1):
        if v >= level:
            return f"{i} ({i / n_layers:.2f} L)"
    return "-"


def _layer_at(depth: float, n_layers: int) -> int:
    return max(1, min(n_layers, round(depth * n_layers)))


def curves_table() -> str:
    profs = profiles()
    head = ["depth l/L"]
    for p in profs:
        short = p.model.split(".")[0]
        head += [f"{short}: layer", "top-1 agr.", "S", "F(l)"]
    rows = []
    for d in DEPTHS:
        row = [f"{d:.1f}"]
        for p in profs:
            l_ = _layer_at(d, p.n_layers)
            row += [str(l_), f"{p.top1_agreement[l_ - 1]:.3f}", f"{p.similarity[l_ - 1]:.3f}", f"{p.stable_exit_cdf[l_ - 1]:.3f}"]
        rows.append(row)
    return _table(head, rows)


def thresholds_table() -> str:
    profs = profiles()
    head = ["policy"] + [f"{p.model.split('.')[0]}: {c}" for p in profs for c in ("mean exit / L", "mismatch")]
    keys = []
    for p in profs:
        for measure, table in p.threshold_exits.items():
            keys += [(measure, t) for t in table if (measure, t) not in keys]
    rows = []
    for measure, t in sorted(keys, key=lambda k: (k[0] != "max_prob", k[1])):
        row = [f"{measure} ≥ {t:g}"]
        for p in profs:
            e = p.threshold_exits.get(measure, {}).get(t)
            row += ["-", "-"] if e is None else [f"{e.mean_exit_fraction:.3f}", f"{e.error_rate:.3f}"]
        rows.append(row)
    return _table(head, rows)


def _frontier(points: list[OperatingPoint]) -> list[OperatingPoint]:
    """The points no other point beats on both depth and mismatch, shallowest first."""
    keep = []
    for p in sorted(points, key=lambda q: (q.mean_exit_fraction, q.mismatch)):
        if not keep or p.mismatch < keep[-1].mismatch:
            keep.append(p)
    return keep


def points_table() -> str:
    out = []
    for prof in profiles():
        every = default_exit_every(prof.n_layers)
        layers = exit_layers(prof.n_layers, every)
        stable = prof.operating_point("stable", None, layers)
        front = [p for p in _frontier(prof.threshold_operating_points(layers)) if p.mismatch <= 0.5]
        rows = []
        for p in [*reversed(front), stable]:
            rows.append([p.label, f"{p.mismatch:.1%}", f"{p.mean_exit_fraction:.3f}",
                         " ".join(f"{p_b:.3f}" for p_b in (_g(p, b) for b in (2, 4, 8)))])  # fmt: skip
        chosen = {b: most_aggressive(prof.threshold_operating_points(layers), b) for b in (0.02, 0.05, 0.1)}
        picks = ", ".join(f"{b:.0%} → {c.label if c else 'stable (fallback)'}" for b, c in chosen.items())
        out.append(
            f"**{prof.model}**, exits allowed at layers {', '.join(map(str, layers))} (every {every} of {prof.n_layers}); "
            f"budgets pick: {picks}.\n\n"
            + _table(["operating point", "mismatch", "mean exit / L (b = 1)", "E[max]/L at b = 2, 4, 8"], rows)
        )
    return "\n".join(out)


def _g(p: OperatingPoint, b: int) -> float:
    from sim.probe.profile import expected_max_depth_fraction

    return expected_max_depth_fraction(p.cdf, b)


def tradeoff_table() -> str:
    """Simulate experiments/early_exit.yaml and tabulate time saved (mismatch) per budget and batch cap."""
    import yaml

    from sim.config import validate
    from sim.simulation import simulate
    from sim.sweep import expand

    raw = yaml.safe_load(EXPERIMENT.read_text())
    file = str(EXPERIMENT.relative_to(ROOT))
    plan = expand(raw, validate(raw, file), file)
    cells: dict[tuple[float, int], dict[str, Any]] = {}
    for run in plan.runs:
        s = simulate(run.cfg, EXPERIMENT.parent).summary
        cells[(run.point["early_exit.max_mismatch"], run.point["engine.max_num_seqs"])] = s
    budgets = sorted({b for b, _ in cells})
    caps = sorted({c for _, c in cells})
    rows = []
    for b in budgets:
        first = cells[(b, caps[0])]
        point = "stable" if first["early_exit_threshold"] is None else f"{first['early_exit_policy']} ≥ {first['early_exit_threshold']:g}"
        row = [f"{b:g}", f"{point} ({first['early_exit_chosen_by']})", f"{first['early_exit_mismatch_fraction']:.1%}"]
        row += [f"{cells[(b, c)]['early_exit_generation_time_saved_fraction']:+.1%}" for c in caps]
        rows.append(row)
    depth = ["depth per step (budget 0.05)", "", ""] + [
        f"{cells[(0.05, c)]['early_exit_depth_fraction_per_step']:.3f}" for c in caps if (0.05, c) in cells
    ]  # fmt: skip
    full = ["full-depth generation (s)", "", ""] + [f"{cells[(budgets[0], c)]['early_exit_full_depth_generation_s']:.1f}" for c in caps]
    # the same default-budget runs with the full LM-head check instead of the exit classifier
    heavy = {}
    for run in plan.runs:
        if run.point["early_exit.max_mismatch"] == 0.05:
            cfg = run.cfg.model_copy(update={"early_exit": run.cfg.early_exit.model_copy(update={"check": "lm_head"})})
            heavy[run.point["engine.max_num_seqs"]] = simulate(cfg, EXPERIMENT.parent).summary
    lm = ["0.05, `check: lm_head`", "as for 0.05", f"{heavy[caps[0]]['early_exit_mismatch_fraction']:.1%}"] + [
        f"{heavy[c]['early_exit_generation_time_saved_fraction']:+.1%}" for c in caps
    ]  # fmt: skip
    head = ["max_mismatch", "operating point (chosen by)", "token mismatch", *(f"saved, cap {c}" for c in caps)]
    return _table(head, [*rows, lm, depth, full])


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


BLOCKS = {
    "profiles": profiles_table, "curves": curves_table, "thresholds": thresholds_table, "points": points_table,
    "tradeoff": tradeoff_table,
}  # fmt: skip


def render(page: str) -> str:
    """The page with every generated block rewritten (markers kept)."""
    for name, make in BLOCKS.items():
        pattern = re.compile(
            rf"(<!-- BEGIN gen_early_exit_tables: {name} -->\n)(.*?)(<!-- END gen_early_exit_tables: {name} -->)", re.S
        )
        if not pattern.search(page):
            raise SystemExit(f"{PAGE}: no block markers for {name!r}")
        text = make()
        page = pattern.sub(lambda m: m.group(1) + text + m.group(3), page)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the tables are up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    current = PAGE.read_text()
    new = render(current)
    if new == current:
        print("up to date")
        return 0
    if args.check:
        print(f"out of date: {PAGE.relative_to(ROOT)}; run: python docs/gen_early_exit_tables.py", file=sys.stderr)
        return 1
    PAGE.write_text(new)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
