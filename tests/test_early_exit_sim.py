"""Early exit in the simulator: batch-aware step latency, exactness of the analytic advance, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.catalog import load_catalog
from sim.config import validate
from sim.perf.base import steps_sum_s
from sim.perf.early_exit import EarlyExit, EarlyExitError
from sim.perf.roofline import RooflineModel
from sim.probe.profile import expected_max_depth_fraction, profile_from_dict
from sim.runner import simulate

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = ROOT / "traces" / "exit_profiles" / "smollm2-135m-instruct.json"


def synthetic_doc(cdf: list[float]) -> dict:
    """A valid profile document around one exit CDF (labelled synthetic)."""
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


def model_and_exit(cdf=HALF, policy="stable", kv_fill="none", exit_every=4):
    cat = load_catalog()
    model = cat.model("qwen2.5-7b")
    profile = profile_from_dict(synthetic_doc(cdf))
    ee = EarlyExit(profile, model, policy, 0.9, exit_every, kv_fill)
    perf = RooflineModel(cat.gpu("A100-80GB"), early_exit=ee)
    perf.early_exit_model = model.name
    base = RooflineModel(cat.gpu("A100-80GB"))
    return model, ee, perf.replica(model, 1), base.replica(model, 1)


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
    assert gains[-1] < 0.0  # the batch always holds a token that needs every layer; the check still costs


def test_exit_checks_cost_time():
    _, _, every_layer, base = model_and_exit(exit_every=1)
    _, _, sparse, _ = model_and_exit(exit_every=4)
    # same exit depths (the profile's exits are at layer 4 and 8), fewer LM-head checks
    assert sparse.decode_coeffs(1).step_s(0) < every_layer.decode_coeffs(1).step_s(0)
    # a full-vocabulary check after every layer costs more than exiting saves (early_exit.md section 8)
    assert every_layer.decode_coeffs(8).step_s(0) > base.decode_coeffs(8).step_s(0)


def test_state_copy_kv_fill_costs_more_than_deferred():
    _, _, copy_rep, _ = model_and_exit(kv_fill="state_copy")
    _, _, deferred_rep, _ = model_and_exit(kv_fill="deferred")
    assert copy_rep.decode_coeffs(1).step_s(100) > deferred_rep.decode_coeffs(1).step_s(100)


def test_a_profile_where_every_token_needs_every_layer_gives_no_gain_but_pays_checks():
    _, _, ee_rep, base_rep = model_and_exit(cdf=[0.0] * 7 + [1.0])
    assert ee_rep.decode_coeffs(1).step_s(0) > base_rep.decode_coeffs(1).step_s(0)


def test_unknown_threshold_is_refused_with_the_measured_ones_listed():
    cat = load_catalog()
    profile = profile_from_dict(synthetic_doc(HALF))
    with pytest.raises(EarlyExitError, match="0.9"):
        EarlyExit(profile, cat.model("qwen2.5-7b"), "max_prob", 0.75, 1, "none")


def run_config(tmp_path, batch_cap: int, mode="analytic", early=True):
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
        raw["early_exit"] = {"profile": str(path), "policy": "stable", "exit_every": 4}
    return validate(raw, "test")


def test_analytic_and_step_modes_agree_with_early_exit_on(tmp_path):
    a = simulate(run_config(tmp_path, 4))
    s = simulate(run_config(tmp_path, 4, mode="step"))
    np.testing.assert_allclose(a.completion_s[0], s.completion_s[0], rtol=1e-9)


def test_early_exit_shortens_generation_more_at_small_batch(tmp_path):
    def gen(cap, early):
        return simulate(run_config(tmp_path, cap, early=early)).summary["phases"]["generation"]

    gain_small = 1 - gen(1, True) / gen(1, False)
    gain_large = 1 - gen(32, True) / gen(32, False)
    assert gain_small > 0.1
    assert gain_large < 0.02  # at batch 32 a step almost always runs every layer (and pays the check)


@pytest.mark.skipif(not SMOLLM2.exists(), reason="the measured SmolLM2 profile is produced by sim.probe")
def test_measured_smollm2_profile_gain_shrinks_monotonically_with_batch():
    cat = load_catalog()
    from sim.probe.profile import load_profile

    profile = load_profile(SMOLLM2)
    model = cat.model("qwen2.5-7b")
    ee = EarlyExit(profile, model, "stable", 0.9, 1, "state_copy", check="classifier")
    perf = RooflineModel(cat.gpu("H100-SXM"), early_exit=ee)
    perf.early_exit_model = model.name
    base = RooflineModel(cat.gpu("H100-SXM")).replica(model, 1)
    rep = perf.replica(model, 1)
    gains = [1 - steps_sum_s(rep.decode_coeffs(b), b, 200 * b, 100) / steps_sum_s(base.decode_coeffs(b), b, 200 * b, 100) for b in (1, 2, 4, 8, 16)]
    assert all(x >= y for x, y in zip(gains, gains[1:]))
    assert gains[0] > 0.05 and gains[0] > gains[-1]
    # with a full-vocabulary LM-head check at every layer, the checks cost more than the exits save
    heavy = EarlyExit(profile, model, "stable", 0.9, 1, "state_copy", check="lm_head")
    perf_heavy = RooflineModel(cat.gpu("H100-SXM"), early_exit=heavy)
    perf_heavy.early_exit_model = model.name
    assert perf_heavy.replica(model, 1).decode_coeffs(1).step_s(200) > base.decode_coeffs(1).step_s(200)
