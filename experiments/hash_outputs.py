"""Hash every output file of every shipped experiment, to prove a change leaves results byte-identical.

Runs each experiment file under experiments/ (quickstart, paper/*.yaml, sweeps/*.yaml, ...) and the
ablation variants of experiments/paper/reproduce.py through `python -m sim.run` into a temporary
folder, and records the sha256 of every file written there (run folders, runs.csv, reports).

Before and after a refactor or an optimisation that must not change behaviour:

    python experiments/hash_outputs.py --write /tmp/manifest.json    # on the code before the change
    ... change the code ...
    python experiments/hash_outputs.py --check /tmp/manifest.json    # exit 1, naming each differing file

The manifest is a JSON mapping `<output path relative to --out>` -> sha256. It changes whenever
behaviour legitimately changes, so keep it beside your work (a temp dir), not in the repository; record
it again after a deliberate change of results. `--keep DIR` writes the outputs to DIR instead of a
temporary folder (to diff two trees after a failed check); `--only SUBSTRING` limits the experiments
(their manifest entries only are compared); `--no-ablation` skips the five-plus ablation variants.
Each experiment runs as its own `python -m sim.run ... --workers 1` process (as a user runs it, with no
state carried between experiments); `--jobs N` runs N of them at once.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Job:
    """One `python -m sim.run` invocation: an experiment file and its --set overrides."""

    label: str  # manifest prefix: the output folder name (the experiment's `name:` or the ablation slug)
    file: Path
    sets: list[str] = field(default_factory=list)


def experiment_files() -> list[Path]:
    """Every experiment YAML shipped under experiments/, in a stable order (user catalogs in catalogs/ are not experiments)."""
    return sorted(p for p in HERE.rglob("*.yaml") if ".venv" not in p.parts and "catalogs" not in p.parts)


def ablation_jobs() -> list[Job]:
    """The variants experiments/paper/reproduce.py runs as `--set` overrides of experiments/paper/ablation.yaml."""
    spec = importlib.util.spec_from_file_location("_reproduce", HERE / "paper" / "reproduce.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    jobs = []
    for label, params in mod.ABLATION.items():
        slug = mod.ablation_slug(label)
        sets = [f"name={slug}"] + [f"scheduler.params.{k}={str(v).lower()}" for k, v in params.items()]
        jobs.append(Job(slug, HERE / "paper" / "ablation.yaml", sets))
    return jobs


def run_job(job: Job, out: Path) -> tuple[Job, float, str]:
    """Run one job into out/<its own folder>; return it, its wall time and stderr when it failed ('' if ok)."""
    dest = out / job.label.replace("/", "_")
    cmd = [sys.executable, "-m", "sim.run", str(job.file), "--out", str(dest), "--quiet", "--workers", "1"]
    for item in job.sets:
        cmd += ["--set", item]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    return job, wall, "" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"


def hash_tree(out: Path) -> dict[str, str]:
    """sha256 of every file under out, keyed by its path relative to out (forward slashes)."""
    manifest = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            manifest[path.relative_to(out).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return manifest


def compare(expected: dict[str, str], got: dict[str, str], prefixes: list[str] | None) -> list[str]:
    """Lines naming every file that differs, is missing or is new (restricted to prefixes when given)."""
    if prefixes is not None:
        expected = {k: v for k, v in expected.items() if k.split("/", 1)[0] in prefixes}
    lines = []
    for key in sorted(set(expected) | set(got)):
        if key not in got:
            lines.append(f"missing  {key}")
        elif key not in expected:
            lines.append(f"new      {key}")
        elif expected[key] != got[key]:
            lines.append(f"differs  {key}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FILE", help="write the manifest of this code's outputs to FILE")
    mode.add_argument("--check", metavar="FILE", help="compare this code's outputs with the manifest in FILE")
    ap.add_argument("--keep", metavar="DIR", help="write outputs to DIR (must be empty or absent) and keep them")
    ap.add_argument("--only", metavar="SUBSTRING", help="only experiments whose path or label contains SUBSTRING")
    ap.add_argument("--no-ablation", action="store_true", help="skip the ablation variants of reproduce.py")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="experiments run at once (default: CPU count)")
    args = ap.parse_args(argv)

    jobs = []
    for f in experiment_files():
        rel = f.relative_to(HERE).as_posix()
        jobs.append(Job(rel.removesuffix(".yaml"), f))
    if not args.no_ablation:
        jobs += ablation_jobs()
    if args.only:
        jobs = [j for j in jobs if args.only in j.label or args.only in str(j.file.relative_to(ROOT))]
    if not jobs:
        print("no experiment matches", file=sys.stderr)
        return 2

    if args.keep:
        out = Path(args.keep)
        if out.exists() and any(out.iterdir()):
            print(f"--keep {out}: exists and is not empty", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="hash_outputs_")
        out = Path(tmp.name)
    started = time.perf_counter()
    failed = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for job, wall, error in pool.map(lambda j: run_job(j, out), jobs):
            print(f"{wall:7.1f} s  {job.label}" + (f"  FAILED {error}" if error else ""), flush=True)
            if error:
                failed.append(job.label)
    got = hash_tree(out)
    total = time.perf_counter() - started
    if tmp is not None:
        tmp.cleanup()
    print(f"{len(jobs)} experiments, {len(got)} files, {total:.1f} s wall")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.write:
        Path(args.write).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.write}")
        return 0
    expected = json.loads(Path(args.check).read_text())
    prefixes = [j.label.replace("/", "_") for j in jobs] if args.only or args.no_ablation else None
    diff = compare(expected, got, prefixes)
    if diff:
        print("\n".join(diff))
        print(f"{len(diff)} file(s) differ from {args.check}", file=sys.stderr)
        return 1
    print(f"identical to {args.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
