"""Sweep benchmark: a 100-point sweep of the RLHFless physical-testbed setting on 2 workers; prints wall times.

The testbed (research/rlhfless.md section 6): 2 nodes of 8 L40S, Qwen2.5-3B and 7B, GRPO and PPO. The base
config is experiments/paper/testbed*.yaml when such a file exists (its compare: dropped, its sweep: replaced),
else the quickstart moved to 2 nodes;
the grid is model (2) x algorithm (2) x seed (25) = 100 runs. Figures printed (nothing asserted):
1. the whole `python -m sim.run` sweep (imports, pool start, 100 simulations, 100 run reports, runs.csv and
   the experiment report), and the wall time per run;
2. the same command again: every run is found complete and skipped (the cost of resuming);
3. with --ray: the same sweep on a local Ray cluster, and whether its files equal the local pool's.

Run: python bench/bench_sweep.py [--workers 2] [--seeds 25] [--ray]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def base_config() -> tuple[dict, str]:
    found = sorted((ROOT / "experiments" / "paper").glob("testbed*.yaml"))
    if found:
        return yaml.safe_load(found[0].read_text()), str(found[0].relative_to(ROOT))
    raw = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    raw["cluster"]["nodes"] = 2
    return raw, "experiments/quickstart.yaml on 2 nodes"


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return elapsed


def differing_files(a: Path, b: Path) -> list[str]:
    """Files present in only one tree or with different bytes."""
    files_a = {str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()}
    files_b = {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()}
    return sorted((files_a ^ files_b) | {f for f in files_a & files_b if not filecmp.cmp(a / f, b / f, shallow=False)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=25, help="seeds per (model, algorithm): 25 gives 100 runs")
    ap.add_argument("--ray", action="store_true", help="also run the sweep on a local Ray cluster")
    args = ap.parse_args()

    raw, source = base_config()
    raw["name"] = "bench_sweep"
    raw.pop("compare", None)
    raw["sweep"] = {"model": ["qwen2.5-3b", "qwen2.5-7b"], "workload.algorithm": ["grpo", "ppo"], "seed": list(range(args.seeds))}
    runs = 4 * args.seeds
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_sweep.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        cmd = [sys.executable, "-m", "sim.run", str(path), "--quiet", "--workers", str(args.workers)]
        local = timed([*cmd, "--out", f"{tmp}/local"])
        resume = timed([*cmd, "--out", f"{tmp}/local"])
        result = {
            "base": source, "runs": runs, "workers": args.workers, "cpus": os.cpu_count(),
            "local_wall_s": round(local, 2), "local_s_per_run": round(local / runs, 3), "resume_all_skipped_wall_s": round(resume, 2),
            "run_dir_mb": round(sum(p.stat().st_size for p in Path(tmp, "local").rglob("*") if p.is_file()) / 1e6, 1),
        }  # fmt: skip
        if args.ray:
            result["ray_wall_s"] = round(timed([*cmd, "--backend", "ray", "--out", f"{tmp}/ray"]), 2)
            differ = differing_files(Path(tmp, "local"), Path(tmp, "ray"))
            result["ray_files_identical"] = not differ
            if differ:
                result["ray_files_differing"] = differ[:10]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
