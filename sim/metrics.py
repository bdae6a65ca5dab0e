"""From a finished run's records to the tables and summary of design.md section 7 (definitions: docs/metrics.md).

Phase rows partition each iteration's wall time into windows (generation, inference, training,
weight_sync). Every billed GPU-second and every busy GPU-second falls in exactly one window, so the rows
add up to the run's totals. Idle = billed - busy, split into within-phase idle (GPUs that worked in the
window but waited, e.g. for the longest rollout) and between-phase idle (billed GPUs with no work in the
window at all). Billing rounding is charged to the window where the instance was released.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from sim.resources.billing import BilledInterval, InstanceRecord, billed_seconds, lifetime_intervals
from sim.recording import Recorder

ITERATION_COLUMNS = [
    "iteration", "phase", "start_s", "end_s", "duration_s", "busy_gpu_s", "billed_gpu_s", "idle_gpu_s",
    "idle_within_phase_gpu_s", "idle_between_phases_gpu_s", "cost_usd", "cold_starts", "tokens", "prefill_tokens",
    "preemptions", "migrations",
]  # fmt: skip
INSTANCE_COLUMNS = [
    "instance_id", "role", "node", "gpus", "requested_s", "ready_s", "released_s", "busy_s", "resident_s", "billed_s",
    "billed_gpu_s", "cold_start", "wakes", "queued_s", "load_tier", "crashed",
]  # fmt: skip


def _overlap(a0: np.ndarray, a1: np.ndarray, w0: float, w1: float) -> np.ndarray:
    return np.clip(np.minimum(a1, w1) - np.maximum(a0, w0), 0.0, None)


def build_tables(
    rec: Recorder,
    instances: list[InstanceRecord],
    billing,
    price_usd_per_gpu_s: float,
    billed: list[BilledInterval] | None = None,
    by_owner: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of iterations.csv and instances.csv.

    `billed` are the billed intervals (default: one per instance lifetime); with `by_owner`, an instance's
    busy time is that of the activities it did (serverless: several instances may share a GPU).
    """
    acts = rec.activities
    billed = billed if billed is not None else lifetime_intervals(instances)
    a0 = np.array([a.start_s for a in acts], dtype=np.float64)
    a1 = np.array([a.end_s for a in acts], dtype=np.float64)
    an = np.array([len(a.slots) for a in acts], dtype=np.float64)
    b0 = np.array([b.start_s for b in billed], dtype=np.float64)
    b1 = np.array([b.end_s for b in billed], dtype=np.float64)
    bn = np.array([b.gpus for b in billed], dtype=np.float64)
    ready = np.array([inst.ready_s for inst in instances], dtype=np.float64)
    cold = np.array([inst.cold_start for inst in instances], dtype=bool)
    # rounding surplus per billed interval, charged at its end
    surplus = (np.array([billed_seconds(b.end_s - b.start_s, billing) for b in billed], dtype=np.float64) - (b1 - b0)) * bn

    rows = []
    windows = sorted(rec.windows, key=lambda w: (w[2], PHASE_ORDER.get(w[1], 9)))
    ends = np.array([w[3] for w in windows], dtype=np.float64)
    if windows and billed:
        # billed time outside every window (an instance held past the last phase, e.g. kept warm) is
        # charged at release too, so that the rows still add up to every billed GPU-second
        first, last = float(windows[0][2]), float(ends.max())
        surplus = surplus + (np.clip(b1 - np.maximum(b0, last), 0.0, None) + np.clip(np.minimum(b1, first) - b0, 0.0, None)) * bn
    release_window = np.clip(np.searchsorted(ends, b1, side="left"), 0, max(len(windows) - 1, 0))
    surplus_by_window = np.bincount(release_window, weights=surplus, minlength=len(windows)) if billed else np.zeros(len(windows))
    for idx, (it, phase, w0, w1) in enumerate(windows):
        overlap = _overlap(a0, a1, w0, w1) if acts else None
        busy = float((overlap * an).sum()) if acts else 0.0
        billed_w = float((_overlap(b0, b1, w0, w1) * bn).sum()) if billed else 0.0
        billed_w += float(surplus_by_window[idx])
        participating = set()
        for k in np.flatnonzero(overlap > 0).tolist() if acts else ():  # the window's activities only
            participating.update(acts[k].slots)
        dur = w1 - w0
        within = max(0.0, len(participating) * dur - busy)
        idle = max(0.0, billed_w - busy)
        counts = rec.counters.get((it, phase), {})
        rows.append(
            {
                "iteration": it,
                "phase": phase,
                "start_s": float(w0),
                "end_s": float(w1),
                "duration_s": float(dur),
                "busy_gpu_s": busy,
                "billed_gpu_s": billed_w,
                "idle_gpu_s": idle,
                "idle_within_phase_gpu_s": min(within, idle),
                "idle_between_phases_gpu_s": max(0.0, idle - min(within, idle)),
                "cost_usd": billed_w * price_usd_per_gpu_s,
                "cold_starts": int(((ready > w0) & (ready <= w1) & cold).sum()) if instances else 0,
                "tokens": int(counts.get("tokens", 0)) if phase == "generation" else 0,
                "prefill_tokens": int(counts.get("prefill_tokens", 0)),
                "preemptions": int(counts.get("preemptions", 0)),
                "migrations": int(counts.get("migrations", 0)),
            }
        )

    # per GPU (or per owning instance): the indices of its activities. An instance's busy time is its busiest
    # GPU's work inside the instance's lifetime; serverful GPUs host one instance after another
    acts_by: dict[Any, list[int]] = defaultdict(list)
    for k, a in enumerate(acts):
        if by_owner:
            acts_by[a.owner].append(k)
        else:
            for s in a.slots:
                acts_by[s].append(k)
    inst_rows = []
    for inst in instances:
        busy_s = 0.0
        for s in inst.slots:
            idx = acts_by.get(inst.instance_id if by_owner else s)
            if idx:
                busy_s = max(busy_s, float(_overlap(a0[idx], a1[idx], inst.requested_s, inst.released_s).sum()))
            if by_owner:
                break
        if inst.billed_gpu_s is not None:
            billed_gpu = float(inst.billed_gpu_s)
        else:
            billed_gpu = billed_seconds(inst.released_s - inst.bill_from_s, billing) * inst.gpus
        resident = inst.resident_s if inst.resident_s is not None else inst.released_s - inst.bill_from_s
        inst_rows.append(
            {
                "instance_id": inst.instance_id,
                "role": inst.role,
                "node": inst.node,
                "gpus": inst.gpus,
                "requested_s": float(inst.requested_s),
                "ready_s": float(inst.ready_s),
                "released_s": float(inst.released_s),
                "busy_s": min(busy_s, inst.released_s - inst.requested_s),
                "resident_s": float(resident),
                "billed_s": billed_gpu / inst.gpus,
                "billed_gpu_s": billed_gpu,
                "cold_start": bool(inst.cold_start),
                "wakes": int(inst.wakes),
                "queued_s": float(inst.queued_s),
                "load_tier": inst.load_tier,
                "crashed": bool(inst.crashed),
            }
        )
    return rows, inst_rows


PHASE_ORDER = {"startup": -1, "generation": 0, "inference": 1, "training": 2, "weight_sync": 3}


def summarize(
    rows: list[dict[str, Any]], inst_rows: list[dict[str, Any]], meta: dict[str, Any], rec: Recorder
) -> dict[str, Any]:
    """summary.json: the scalar results of one run (keys of design.md section 7, plus a few more)."""
    iterations = int(meta["iterations"])
    total_time = max((r["end_s"] for r in rows), default=0.0)
    billed = sum(r["billed_gpu_s"] for r in rows)
    busy = sum(r["busy_gpu_s"] for r in rows)
    idle = sum(r["idle_gpu_s"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    cost = sum(r["cost_usd"] for r in rows)
    phases = {p: sum(r["duration_s"] for r in rows if r["phase"] == p) / iterations for p in PHASE_ORDER}
    starts = defaultdict(lambda: float("inf"))
    ends = defaultdict(float)
    for r in rows:
        starts[r["iteration"]] = min(starts[r["iteration"]], r["start_s"])
        ends[r["iteration"]] = max(ends[r["iteration"]], r["end_s"])
    iter_s = [ends[i] - starts[i] for i in sorted(ends)]
    # steady state: the second half of the run's iterations (after start-up and the warm-up of length
    # predictors), never the first iteration when there are more; start-up windows are left out
    order = sorted(ends)
    steady = order[max(1, len(order) // 2) :] if len(order) > 1 else order
    work = [r for r in rows if r["phase"] != "startup"]
    steady_s = [sum(r["duration_s"] for r in work if r["iteration"] == i) for i in steady]
    steady_cost = [sum(r["cost_usd"] for r in work if r["iteration"] == i) for i in steady]
    steady_gpu_s = [sum(r["billed_gpu_s"] for r in work if r["iteration"] == i) for i in steady]
    gen_counts: dict[str, list[float]] = {"replicas": [], "rollout_tp": []}
    rounds = {it: c.get("rounds", 1.0) for (it, phase), c in rec.counters.items() if phase == "generation"}
    for (it, phase), counts in sorted(rec.counters.items()):
        if phase == "generation":
            for key in gen_counts:
                if key in counts:  # replicas are counted per generation round: the mean is per round
                    gen_counts[key].append(counts[key] / rounds[it] if key == "replicas" else counts[key])
    trained = sum(c.get("samples_trained", 0.0) for (_, phase), c in rec.counters.items() if phase == "training")
    generated = sum(len(g) for g in rec.generated)
    summary = {
        **{k: meta[k] for k in ("name", "run_id", "scheduler", "deployment", "seed", "iterations")},
        "mean_iteration_s": float(np.mean(iter_s)) if iter_s else 0.0,
        "startup_s": startup_seconds(rows, rec),
        "steady_mean_iteration_s": float(np.mean(steady_s)) if steady else 0.0,
        "steady_cost_per_iteration_usd": float(np.mean(steady_cost)) if steady else 0.0,
        "steady_billed_gpu_s_per_iteration": float(np.mean(steady_gpu_s)) if steady else 0.0,
        "total_time_s": total_time,
        "total_cost_usd": cost,
        "billed_gpu_s": billed,
        "busy_gpu_s": busy,
        "idle_gpu_s": idle,
        "idle_within_phase_gpu_s": sum(r["idle_within_phase_gpu_s"] for r in rows),
        "idle_between_phases_gpu_s": sum(r["idle_between_phases_gpu_s"] for r in rows),
        "utilization": busy / billed if billed > 0 else 0.0,
        "tokens_generated": int(tokens),
        "tokens_per_s": tokens / total_time if total_time > 0 else 0.0,
        "cost_per_million_tokens_usd": cost / tokens * 1e6 if tokens else 0.0,
        "cold_starts": int(sum(r["cold_starts"] for r in rows)),
        "migrations": int(sum(r["migrations"] for r in rows)),
        "preemptions": int(sum(r["preemptions"] for r in rows)),
        "prefill_tokens": int(sum(r["prefill_tokens"] for r in rows)),
        "prefill_tokens_saved": int(sum(c.get("prefill_tokens_saved", 0.0) for c in rec.counters.values())),
        "mean_decode_batch": _mean_decode_batch(rec),
        "peak_decode_batch": int(max((c.get("peak_decode_batch", 0.0) for (_, ph), c in rec.counters.items() if ph == "generation"), default=0)),
        "phases": phases,
        # dynamic sampling (docs/metrics.md): rounds per step, samples rolled out and trained, groups filtered
        "generation_rounds": float(np.mean(list(rounds.values()))) if rounds else 0.0,
        "samples_generated": int(generated),
        "samples_trained": int(trained),
        "groups_filtered": int(sum(c.get("groups_filtered", 0.0) for c in rec.counters.values())),
        "short_steps": int(sum(c.get("short_steps", 0.0) for c in rec.counters.values())),
        "rollout_replicas": float(np.mean(gen_counts["replicas"])) if gen_counts["replicas"] else 0.0,
        "rollout_tp": int(max(gen_counts["rollout_tp"], default=0)),
        "model": meta["model"],
        "gpu": meta["gpu"],
        "gpus": meta["gpus"],
        "price_usd_per_gpu_hour": meta["price_usd_per_gpu_hour"],
        "engine_events": rec.engine_events,
    }
    return summary


def startup_seconds(rows: list[dict[str, Any]], rec: Recorder) -> float:
    """Time the job spent starting before work could begin: a serverful job's start-up window, plus, for
    each phase of the first iteration, the wait from the phase's start to its first GPU work (serverless
    functions cold-starting or queued on the critical path)."""
    first_work: dict[str, float] = {}
    for a in rec.activities:
        if a.iteration == 0 and a.start_s < first_work.get(a.phase, float("inf")):
            first_work[a.phase] = a.start_s
    total = 0.0
    for r in rows:
        if r["iteration"] != 0:
            continue
        if r["phase"] == "startup":
            total += r["duration_s"]
        elif r["phase"] in first_work:
            total += max(0.0, min(first_work[r["phase"]], r["end_s"]) - r["start_s"])
    return total


def _mean_decode_batch(rec: Recorder) -> float:
    """Decode tokens per replica decode step: the step-weighted mean running batch of the rollout engines."""
    gen = [c for (_, phase), c in rec.counters.items() if phase == "generation"]
    steps = sum(c.get("decode_steps", 0.0) for c in gen)
    tokens = sum(c.get("tokens", 0.0) for c in gen)
    return tokens / steps if steps else 0.0


def compare_ratios(this: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """speedup = baseline mean iteration time / this one; reductions relative to the baseline.

    The steady_* ratios use the second half of the iterations only (after cold starts and warm-up).
    """
    out = _ratios(this, baseline)
    if this.get("steady_mean_iteration_s") and baseline.get("steady_mean_iteration_s"):
        out["steady_speedup"] = baseline["steady_mean_iteration_s"] / this["steady_mean_iteration_s"]
        if baseline.get("steady_cost_per_iteration_usd"):
            out["steady_cost_reduction"] = 1.0 - this["steady_cost_per_iteration_usd"] / baseline["steady_cost_per_iteration_usd"]
        if baseline.get("steady_billed_gpu_s_per_iteration"):
            out["steady_gpu_s_reduction"] = 1.0 - this["steady_billed_gpu_s_per_iteration"] / baseline["steady_billed_gpu_s_per_iteration"]
    return out


def _ratios(this: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    return {
        "speedup": baseline["mean_iteration_s"] / this["mean_iteration_s"] if this["mean_iteration_s"] > 0 else float("nan"),
        "cost_reduction": 1.0 - this["total_cost_usd"] / baseline["total_cost_usd"] if baseline["total_cost_usd"] > 0 else float("nan"),
        "gpu_s_reduction": 1.0 - this["billed_gpu_s"] / baseline["billed_gpu_s"] if baseline["billed_gpu_s"] > 0 else float("nan"),
    }
