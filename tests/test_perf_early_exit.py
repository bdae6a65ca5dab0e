"""Early exit in the simulator: batch-aware step latency, the error budget, what a run reports, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.catalog import load_catalog
from sim.config import EarlyExitConfig, validate
from sim.perf.base import steps_sum_s
from sim.perf.early_exit import Choice, EarlyExit, EarlyExitError, choose, exit_layers
from sim.perf.roofline import RooflineModel
from sim.probe.profile import expected_max_depth_fraction, load_profile, profile_from_dict
from sim.simulation import simulate

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = ROOT / "traces" / "exit_profiles" / "smollm2-135m-instruct.json"
DEFAULT_BUDGET = EarlyExitConfig.model_fields["max_mismatch"].default


def synthetic_doc(cdf: list[float]) -> dict:
    """A valid profile document around one exit CDF (labelled synthetic; no per-position data)."""
    n = len(cdf)
    stable = np.asarray(cdf, dtype=float)
    return {
        "model": "synthetic",
        "n_layers": n,
        "text": "none",
        "n_tokens": 100,
        "settings": {},
        "definitions": {},
        "synthetic": True,
        "per_layer": {"top1_agreement": list(stable), "similarity": list(stable), "kl": [0.0] * n},
        "stable_exit_cdf": list(stable),
        "threshold_exits": {
            "max_prob": {"0.9": {"cdf": list(stable), "error_rate": 0.0}},
            "margin": {"0.5": {"cdf": list(stable), "error_rate": 0.0}},
        },
        "eas": 0.5,
        "mean_stable_exit_fraction": expected_max_depth_fraction(stable, 1),
        "expected_max_depth_fraction": {"1": expected_max_depth_fraction(stable, 1)},
    }


# half the tokens exit after layer 4 of 8, the rest need all 8
HALF = [0, 0, 0, 0.5, 0.5, 0.5, 0.5, 1.0]


def model_and_exit(cdf=HALF, policy="stable", kv_fill="none", exit_every=4, check="lm_head"):
    cat = load_catalog()
    model = cat.model("qwen2.5-7b")
    profile = profile_from_dict(synthetic_doc(cdf))
    point = profile.operating_point(policy, None if policy == "stable" else 0.9, exit_layers(profile.n_layers, exit_every))
    ee = EarlyExit(profile, model, point, kv_fill, check)
    perf = RooflineModel(cat.gpu("A100-80GB"), early_exit=ee)
    base = RooflineModel(cat.gpu("A100-80GB"))
    return model, ee, perf.replica(model, 1), base.replica(model, 1)


# ------------------------------------------------------------------------------------ the step model


def test_expected_depth_is_exact_for_a_two_point_profile():
    _, ee, _, _ = model_and_exit()
    # E[max]/L for b tokens: 4/8 + 4/8 * (1 - 0.5**b)
    for b in (1, 2, 3, 8):
        assert ee.factors(b).depth_fraction == pytest.approx(0.5 + 0.5 * (1 - 0.5**b))


def test_early_exit_shortens_batch1_decode_and_the_gain_shrinks_with_batch():
    _, _, ee_rep, base_rep = model_and_exit()
    gains = []
    for b in (1, 2, 4, 8, 16):  # memory-bound range: the check's share stays put
        ratio = ee_rep.decode_coeffs(b).step_s(512 * b) / base_rep.decode_coeffs(b).step_s(512 * b)
        gains.append(1 - ratio)
    assert gains[0] > 0.1  # E[depth]/L = 0.75 at b=1, minus one LM-head check
    assert all(a > b for a, b in zip(gains, gains[1:]))
    assert gains[-1] < 0.0  # the batch always holds a token that needs every layer; the LM-head check still costs


def test_exit_checks_cost_time():
    _, _, every_layer, base = model_and_exit(exit_every=1)
    _, _, sparse, _ = model_and_exit(exit_every=4)
    # same exit depths (the profile's exits are at layer 4 and 8), fewer LM-head checks
    assert sparse.decode_coeffs(1).step_s(0) < every_layer.decode_coeffs(1).step_s(0)
    # a full-vocabulary check after every layer costs more than exiting saves (early_exit.md section 8)
    assert every_layer.decode_coeffs(8).step_s(0) > base.decode_coeffs(8).step_s(0)
    # an exit classifier costs next to nothing: at a batch where every step runs all layers, within 0.5%
    _, _, classifier, _ = model_and_exit(exit_every=1, check="classifier")
    assert classifier.decode_coeffs(64).step_s(0) == pytest.approx(base.decode_coeffs(64).step_s(0), rel=5e-3)


def test_state_copy_kv_fill_costs_more_than_deferred():
    _, _, copy_rep, _ = model_and_exit(kv_fill="state_copy")
    _, _, deferred_rep, _ = model_and_exit(kv_fill="deferred")
    assert copy_rep.decode_coeffs(1).step_s(100) > deferred_rep.decode_coeffs(1).step_s(100)


def test_a_profile_where_every_token_needs_every_layer_gives_no_gain_but_pays_checks():
    _, _, ee_rep, base_rep = model_and_exit(cdf=[0.0] * 7 + [1.0])
    assert ee_rep.decode_coeffs(1).step_s(0) > base_rep.decode_coeffs(1).step_s(0)


def test_unknown_threshold_is_refused_with_the_measured_ones_listed():
    profile = profile_from_dict(synthetic_doc(HALF))
    with pytest.raises(EarlyExitError, match="0.9"):
        choose(profile, "max_prob", 0.75, DEFAULT_BUDGET, exit_layers(8, 1))


@pytest.mark.skipif(not SMOLLM2.exists(), reason="the measured SmolLM2 profile is produced by sim.probe")
def test_measured_smollm2_profile_gain_shrinks_monotonically_with_batch():
    cat = load_catalog()
    profile = load_profile(SMOLLM2)
    model = cat.model("qwen2.5-7b")
    stable = profile.operating_point("stable", None, range(1, 31))
    perf = RooflineModel(cat.gpu("H100-SXM"), early_exit=EarlyExit(profile, model, stable, "state_copy", "classifier"))
    base = RooflineModel(cat.gpu("H100-SXM")).replica(model, 1)
    rep = perf.replica(model, 1)
    gains = [1 - steps_sum_s(rep.decode_coeffs(b), b, 200 * b, 100) / steps_sum_s(base.decode_coeffs(b), b, 200 * b, 100) for b in (1, 2, 4, 8, 16)]
    assert all(x >= y for x, y in zip(gains, gains[1:]))
    assert gains[0] > 0.05 and gains[0] > gains[-1]
    # with a full-vocabulary LM-head check at every layer, the checks cost more than the exits save
    perf_heavy = RooflineModel(cat.gpu("H100-SXM"), early_exit=EarlyExit(profile, model, stable, "state_copy", "lm_head"))
    assert perf_heavy.replica(model, 1).decode_coeffs(1).step_s(200) > base.decode_coeffs(1).step_s(200)


# ------------------------------------------------------------------------------- whole runs, synthetic


def run_config(tmp_path, batch_cap: int, mode="analytic", early=True, **ee):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(synthetic_doc(HALF)))
    raw = {
        "name": "ee",
        "iterations": 1,
        "model": "qwen2.5-0.5b",
        "workload": {"dataset": "gsm8k", "prompts_per_iteration": 8, "samples_per_prompt": 4, "max_response_tokens": 512},
        "cluster": {"nodes": 1, "gpus_per_node": 1, "gpu": "L40S"},
        "platform": {"kind": "serverful"},
        "scheduler": {"name": "verl"},
        "engine": {"mode": mode, "max_num_seqs": batch_cap},
    }
    if early:
        raw["early_exit"] = {"profile": str(path), "policy": "stable", "exit_every": 4, "check": "lm_head", **ee}
    return validate(raw, "test")


def test_analytic_and_step_modes_agree_with_early_exit_on(tmp_path):
    a = simulate(run_config(tmp_path, 4))
    s = simulate(run_config(tmp_path, 4, mode="step"))
    np.testing.assert_allclose(a.completion_s[0], s.completion_s[0], rtol=1e-9)
    # the executed depth is counted from the steps as run: the same in both modes
    for key in ("early_exit_depth_fraction_per_step", "early_exit_depth_fraction_per_token"):
        assert a.summary[key] == pytest.approx(s.summary[key], rel=1e-12)


def test_executed_depth_per_step_is_g_of_the_batch_sizes_actually_run(tmp_path):
    one = simulate(run_config(tmp_path, 1, full_depth_baseline=False)).summary
    assert one["early_exit_depth_fraction_per_step"] == pytest.approx(0.75)  # every step at b = 1: g(1)
    wide = simulate(run_config(tmp_path, 32, full_depth_baseline=False)).summary
    # 32 sequences start together; as they finish the batch shrinks, so the per-step mean lies between
    # g(32) and g(1), and the token-weighted mean (big steps count more) is deeper than the per-step one
    g = lambda b: 0.5 + 0.5 * (1 - 0.5**b)  # noqa: E731
    assert g(1) < wide["early_exit_depth_fraction_per_step"] < g(32)
    assert wide["early_exit_depth_fraction_per_token"] > wide["early_exit_depth_fraction_per_step"]
    assert wide["early_exit_full_depth_generation_s"] is None and wide["early_exit_generation_time_saved_fraction"] is None


def test_early_exit_shortens_generation_more_at_small_batch(tmp_path):
    def saved(cap):
        return simulate(run_config(tmp_path, cap)).summary["early_exit_generation_time_saved_fraction"]

    assert saved(1) > 0.1
    assert saved(32) < 0.02  # at batch 32 a step almost always runs every layer (and pays the check)


def test_time_saved_equals_a_real_paired_run_without_early_exit(tmp_path):
    ee = simulate(run_config(tmp_path, 2)).summary
    full = simulate(run_config(tmp_path, 2, early=False)).summary
    this, base = ee["phases"]["generation"], full["phases"]["generation"]
    assert ee["early_exit_full_depth_generation_s"] == base
    assert ee["early_exit_generation_s_saved"] == pytest.approx(base - this, rel=1e-12)
    assert ee["early_exit_generation_time_saved_fraction"] == pytest.approx(1 - this / base, rel=1e-12)
    assert ee["tokens_generated"] == full["tokens_generated"]  # the same workload
    assert "early_exit_mismatch_fraction" not in full


def test_old_profile_without_per_position_data_needs_every_layer_or_stable(tmp_path):
    with pytest.raises(EarlyExitError, match="tokens.*exit_every: 1"):
        simulate(run_config(tmp_path, 4, policy="max_prob", threshold=0.9))
    ok = simulate(run_config(tmp_path, 4, policy="max_prob", threshold=0.9, exit_every=1, full_depth_baseline=False))
    assert ok.summary["early_exit_mismatch_fraction"] == 0.0  # the synthetic profile's stored error rate


# ----------------------------------------------------------------- the shipped profile, Qwen2.5-7B on H100


def qwen_config(batch: int, sequences: int, gpus: int, **ee):
    """Qwen2.5-7B on H100s, GRPO on GSM8K; `batch` caps each replica's running batch."""
    samples = 8 if sequences >= 8 else 1
    raw = {
        "name": "ee",
        "iterations": 1,
        "model": "qwen2.5-7b",
        "workload": {"dataset": "gsm8k", "prompts_per_iteration": sequences // samples, "samples_per_prompt": samples, "max_response_tokens": 1024},
        "cluster": {"nodes": 1, "gpus_per_node": gpus, "gpu": "H100-SXM"},
        "platform": {"kind": "serverful"},
        "scheduler": {"name": "verl"},
        "engine": {"max_num_seqs": batch},
        "early_exit": {"profile": str(SMOLLM2), **ee},
    }
    return validate(raw, "test")


def reference_mismatch(doc: dict, policy: str, threshold: float, layers: tuple[int, ...]) -> float:
    """The profile's error rate at an operating point, straight from its JSON (independent of sim.probe.profile)."""
    grid = doc["tokens"]["thresholds"][policy]
    k = grid.index(threshold) + 1
    wrong = 0
    rows = zip(doc["tokens"]["top1_agrees"], doc["tokens"]["levels"][policy])
    for agrees, levels in rows:
        exit_at = next((c for c in layers if int(levels[c - 1], 36) >= k), layers[-1])
        wrong += agrees[exit_at - 1] == "0"
    return wrong / len(doc["tokens"]["top1_agrees"])


@pytest.fixture(scope="module")
def defaults():
    """Every early-exit key at its default, on 8 GPUs: batch 1 (8 replicas of one sequence), and 512 sequences."""
    return simulate(qwen_config(1, 8, 8)).summary, simulate(qwen_config(1024, 512, 8)).summary


def test_defaults_save_time_at_batch_1_cost_nothing_at_512_and_stay_within_the_budget(defaults):
    small, large = defaults
    assert small["early_exit_generation_time_saved_fraction"] > 0
    assert large["early_exit_generation_time_saved_fraction"] >= -0.02
    for s in defaults:
        assert s["early_exit_mismatch_fraction"] <= DEFAULT_BUDGET
        assert s["early_exit_max_mismatch"] == DEFAULT_BUDGET
        assert s["early_exit_check"] == "classifier"
        assert s["early_exit_chosen_by"] == "budget"
    # the batch erodes the gain: a 64-sequence batch per replica runs nearly every layer
    assert large["early_exit_depth_fraction_per_token"] > small["early_exit_depth_fraction_per_step"]


def test_defaults_allow_exits_about_every_eighth_of_the_stack(defaults):
    layers = [int(c) for c in defaults[0]["early_exit_exit_layers"].split(",")]
    assert layers == [4, 8, 12, 16, 20, 24, 28, 30]  # round(30 / 8) = 4, plus the last layer


def test_reported_mismatch_is_the_profile_error_rate_at_the_chosen_point(defaults):
    doc = json.loads(SMOLLM2.read_text())
    s = defaults[0]
    layers = tuple(int(c) for c in s["early_exit_exit_layers"].split(","))
    assert s["early_exit_threshold"] is not None
    assert s["early_exit_mismatch_fraction"] == pytest.approx(reference_mismatch(doc, s["early_exit_policy"], s["early_exit_threshold"], layers), abs=1e-12)
    # and it is the most aggressive measured threshold within the budget (smallest mean exit depth)
    prof = load_profile(SMOLLM2)
    within = [p for p in prof.threshold_operating_points(layers) if p.mismatch <= DEFAULT_BUDGET]
    assert s["early_exit_mean_exit_fraction"] == pytest.approx(min(p.mean_exit_fraction for p in within))
    # with every layer allowed, an explicit threshold reports the stored threshold_exits error rate
    every = simulate(qwen_config(1, 8, 8, policy="max_prob", threshold=0.99, exit_every=1, full_depth_baseline=False)).summary
    assert every["early_exit_mismatch_fraction"] == doc["threshold_exits"]["max_prob"]["0.99"]["error_rate"]


def test_budget_zero_gives_the_stable_oracle_exit():
    s = simulate(qwen_config(1, 8, 8, max_mismatch=0)).summary
    assert (s["early_exit_policy"], s["early_exit_threshold"], s["early_exit_chosen_by"]) == ("stable", None, "oracle")
    assert s["early_exit_mismatch_fraction"] == 0.0
    assert s["early_exit_generation_time_saved_fraction"] > 0


def test_a_budget_no_threshold_meets_falls_back_to_stable_and_says_so():
    prof = load_profile(SMOLLM2)
    layers = exit_layers(30, 4)
    lowest = min(p.mismatch for p in prof.threshold_operating_points(layers))
    s = simulate(qwen_config(1, 8, 8, max_mismatch=lowest / 2, full_depth_baseline=False)).summary
    assert (s["early_exit_policy"], s["early_exit_chosen_by"], s["early_exit_mismatch_fraction"]) == ("stable", "fallback", 0.0)
    assert any("no measured" in w and "stable" in w for w in s["early_exit_warnings"])
    # just above the lowest measured mismatch, that threshold is chosen instead
    s = simulate(qwen_config(1, 8, 8, max_mismatch=lowest, full_depth_baseline=False)).summary
    assert s["early_exit_chosen_by"] == "budget" and s["early_exit_mismatch_fraction"] == pytest.approx(lowest)


def test_an_explicit_threshold_reports_its_mismatch_and_warns_above_the_budget():
    s = simulate(qwen_config(1, 8, 8, policy="max_prob", threshold=0.9, full_depth_baseline=False)).summary
    assert (s["early_exit_policy"], s["early_exit_threshold"], s["early_exit_chosen_by"]) == ("max_prob", 0.9, "explicit")
    assert s["early_exit_mismatch_fraction"] > DEFAULT_BUDGET
    assert any("above max_mismatch" in w for w in s["early_exit_warnings"])
    # a policy without a threshold chooses within that measure only
    s = simulate(qwen_config(1, 8, 8, policy="max_prob", full_depth_baseline=False)).summary
    assert s["early_exit_policy"] == "max_prob" and s["early_exit_mismatch_fraction"] <= DEFAULT_BUDGET


def test_a_profile_of_another_model_is_named_with_its_layer_mapping(defaults):
    s = defaults[0]
    assert s["early_exit_profile_model"].startswith("SmolLM2-135M")
    assert s["early_exit_profile_layers"] == 30
    assert "l/30" in s["early_exit_layer_mapping"] and "qwen2.5-7b's 28 layers" in s["early_exit_layer_mapping"]
    assert any("measured on SmolLM2" in w and "qwen2.5-7b" in w for w in s["early_exit_warnings"])


def test_choice_is_the_shallowest_point_within_budget_whatever_the_measure():
    prof = load_profile(SMOLLM2)
    layers = exit_layers(30, 4)
    for budget in (0.02, 0.05, 0.1, 0.3):
        c = choose(prof, None, None, budget, layers)
        assert isinstance(c, Choice) and c.point.mismatch <= budget
        deeper = [p for p in prof.threshold_operating_points(layers) if p.mismatch <= budget]
        assert all(c.point.mean_exit_fraction <= p.mean_exit_fraction for p in deeper)
    # a larger budget never picks a deeper (slower) point
    depths = [choose(prof, None, None, b, layers).point.mean_exit_fraction for b in (0.02, 0.05, 0.1, 0.3, 1.0)]
    assert depths == sorted(depths, reverse=True)


def test_config_refuses_a_threshold_without_a_confidence_measure():
    for policy in (None, "stable"):
        with pytest.raises(Exception, match="early_exit.threshold.*policy max_prob or margin"):
            qwen_config(1, 8, 8, policy=policy, threshold=0.9)


def test_a_profile_of_the_simulated_model_itself_raises_no_warning():
    # SmolLM2-135M-Instruct as an inline model (its GGUF header, docs/early_exit.md section 4)
    smollm2 = {
        "name": "SmolLM2-135M-Instruct", "params": 134515008, "layers": 30, "hidden_size": 576, "heads": 9,
        "kv_heads": 3, "head_dim": 64, "vocab_size": 49152, "intermediate_size": 1536, "tied_embeddings": True,
    }  # fmt: skip
    raw = qwen_config(1, 8, 8, full_depth_baseline=False).model_dump(mode="json")
    raw["model"] = smollm2
    s = simulate(validate(raw, "test")).summary
    assert s["early_exit_warnings"] == []
    assert "l/30 of SmolLM2-135M-Instruct's 30 layers" in s["early_exit_layer_mapping"]
