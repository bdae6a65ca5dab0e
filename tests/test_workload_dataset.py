"""Tests for sim/workload/dataset.py and entries.py: the dataset length model, its entries and its calibration targets (the runaway tail included)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import WorkloadConfig
from sim.workload import WorkloadError, make_workload, parse_dataset

from workload_helpers import ROOT, DATASETS, build, inline, same, per_epoch_group_means, check_shapes


# ---------------------------------------------------------------------------------------------- determinism, bounds


def test_same_seed_same_arrays_in_any_call_order() -> None:
    a, b = build(seed=7), build(seed=7)
    forward = [a.iteration(i) for i in range(6)]
    backward = [b.iteration(i) for i in reversed(range(6))][::-1]
    assert all(same(x, y) for x, y in zip(forward, backward))
    assert same(build(seed=7).iteration(3), forward[3])


def test_different_seed_different_arrays() -> None:
    a, b = build(seed=1).iteration(0), build(seed=2).iteration(0)
    assert not np.array_equal(a.response_tokens, b.response_tokens)
    assert not np.array_equal(a.prompt_ids, b.prompt_ids)


def test_arrays_are_read_only() -> None:
    s = build().iteration(0)
    with pytest.raises(ValueError):
        s.response_tokens[0] = 5


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_lengths_within_bounds(name: str) -> None:
    w = build(dataset=name, prompts_per_iteration=128, samples_per_prompt=8, max_prompt_tokens=300, max_response_tokens=400)
    entry = parse_dataset(name, DATASETS[name])
    for i in range(3):
        s = w.iteration(i)
        assert s.response_tokens.dtype == np.int64 and s.prompt_tokens.dtype == np.int64
        assert s.response_tokens.min() >= 1 and s.response_tokens.max() <= 400
        assert s.prompt_tokens.min() >= entry.template_tokens + 1 and s.prompt_tokens.max() <= 300
        assert s.template_tokens == entry.template_tokens


def test_truncation_is_reported() -> None:
    w = build(prompts_per_iteration=256, samples_per_prompt=8, max_response_tokens=300)
    s = w.iteration(0)
    frac = w.truncated_fraction(0)
    assert frac == np.mean(s.response_tokens == 300)
    # GSM8K at a 300 cap: P(L > 300) = P(z > ln(300/median)/sigma_total), ~29% for the fitted entry
    p = parse_dataset("gsm8k", DATASETS["gsm8k"])
    expected = 0.5 * math.erfc(math.log(300 / p.response_median_tokens) / (p.response_sigma * math.sqrt(2)))
    assert 0.15 < expected < 0.45 and abs(frac - expected) < 0.06
    assert build(prompts_per_iteration=256, samples_per_prompt=8).truncated_fraction(0) < 0.001


def test_default_response_tokens_matches_capped_mean() -> None:
    for cap in (2048, 300):
        w = build(prompts_per_iteration=4096, samples_per_prompt=8, max_response_tokens=cap, dataset_prompts=7473)
        empirical = w.iteration(0).response_tokens.mean()
        assert abs(w.default_response_tokens - empirical) / empirical < 0.03


# ---------------------------------------------------------------------------------------------- correlation structure


def test_samples_of_a_prompt_are_closer_than_other_prompts() -> None:
    s = build(prompts_per_iteration=256, samples_per_prompt=8).iteration(0)
    logs = np.log(s.response_tokens)
    means = np.bincount(s.sample_prompt, weights=logs) / np.bincount(s.sample_prompt)
    within = np.mean((logs - means[s.sample_prompt]) ** 2)
    between = np.var(means)
    assert within < between / 3  # configured: 0.12^2 vs 0.25^2 + 0.13^2 (+ 0.12^2/8)


def test_epoch_to_epoch_correlation_of_a_prompts_mean_length() -> None:
    w = build(prompts_per_iteration=128, samples_per_prompt=8, dataset_prompts=512)
    means = per_epoch_group_means(w, 4)
    corrs = []
    for e in range(3):
        ids = sorted(means[e])
        assert ids == sorted(means[e + 1]) == list(range(512))
        corrs.append(np.corrcoef([means[e][p] for p in ids], [means[e + 1][p] for p in ids])[0, 1])
    assert min(corrs) > 0.7


def test_gsm8k_epoch_change_calibration() -> None:
    """sigma_epoch was derived so that ~70% of a prompt's group-mean changes between epochs are < 50 tokens."""
    w = build(prompts_per_iteration=250, samples_per_prompt=8, dataset_prompts=1000)
    m0, m1 = per_epoch_group_means(w, 2)
    diffs = np.array([m1[p] - m0[p] for p in m0])
    assert abs(np.mean(np.abs(diffs) < 50) - 0.70) < 0.05


def test_no_epoch_noise_means_only_sample_noise_between_epochs() -> None:
    d = inline(response_tokens={"median": 200, "sigma_prompt": 0.5, "sigma_epoch": 0.0, "sigma_sample": 0.0})
    w = build(dataset=d, prompts_per_iteration=50, samples_per_prompt=2)
    m0, m1 = per_epoch_group_means(w, 2)
    assert all(m0[p] == m1[p] for p in m0)


@pytest.mark.parametrize("trend", [0.1, -0.1])
def test_trend_sign(trend: float) -> None:
    d = inline(response_trend_per_epoch=trend)
    w = build(dataset=d, prompts_per_iteration=100, samples_per_prompt=8, max_response_tokens=100_000)
    early = np.mean(np.log(w.iteration(0).response_tokens))
    late = np.mean(np.log(w.iteration(12).response_tokens))  # 6 epochs later
    expected = 6 * np.log1p(trend)  # same prompts (2 iterations per epoch), so the offsets a_p cancel out on average
    assert np.sign(late - early) == np.sign(trend)
    assert abs((late - early) - expected) < 0.12


def test_gsm8k_lengths_shrink_over_training() -> None:
    w = build(prompts_per_iteration=1000, samples_per_prompt=4, dataset_prompts=1000)
    assert w.iteration(20).response_tokens.mean() < w.iteration(0).response_tokens.mean()


def test_dataset_means_differ_as_configured() -> None:
    means = {
        n: build(dataset=n, prompts_per_iteration=400, samples_per_prompt=4).iteration(0).response_tokens.mean()
        for n in ("gsm8k", "math", "gpqa", "livecodebench")
    }
    assert means["gsm8k"] < means["math"] < means["gpqa"] < means["livecodebench"]
    assert means["gpqa"] > 1.8 * means["gsm8k"] and means["livecodebench"] > 2.3 * means["gsm8k"]
    prompts = {n: build(dataset=n, prompts_per_iteration=400).iteration(0).prompt_tokens.mean() for n in ("gsm8k", "gpqa", "livecodebench")}
    assert prompts["gsm8k"] < prompts["gpqa"] < prompts["livecodebench"]
    assert 95 < prompts["gsm8k"] < 113  # calibration.md: ~104 with the Qwen2.5 chat template


# ---------------------------------------------------------------------------------------------- the prompt walk


def test_walk_covers_each_prompt_once_per_epoch() -> None:
    w = build(prompts_per_iteration=16, dataset_prompts=100)  # iterations straddle epochs
    ids = np.concatenate([w.iteration(i).prompt_ids for i in range(19)])[:300]
    epochs = ids.reshape(3, 100)
    for e in range(3):
        assert sorted(epochs[e].tolist()) == list(range(100))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert [w.iteration(i).epoch for i in (0, 6, 7)] == [0, 0, 1]  # iteration 6 holds positions 96..111
    assert w.iteration(6).prompt_ids.size == 16


def test_straddling_iterations_never_repeat_a_prompt() -> None:
    w = build(prompts_per_iteration=60, samples_per_prompt=1, dataset_prompts=100)
    walk = []
    for i in range(50):  # 30 epochs, more than the epoch cache holds
        ids = w.iteration(i).prompt_ids
        assert np.unique(ids).size == 60
        walk.append(ids)
    epochs = np.concatenate(walk).reshape(30, 100)
    assert all(sorted(row.tolist()) == list(range(100)) for row in epochs)
    # random access, cold and after cache eviction, gives the same iterations as the sequential walk
    cold = build(prompts_per_iteration=60, samples_per_prompt=1, dataset_prompts=100)
    assert same(cold.iteration(47), w.iteration(47))
    assert np.array_equal(w.iteration(3).prompt_ids, walk[3]) and np.array_equal(cold.iteration(1).prompt_ids, walk[1])


def test_first_prompts_do_not_depend_on_pool_size() -> None:
    full, small = build(seed=3), build(seed=3, dataset_prompts=50)
    assert np.array_equal(full.prompt_lengths[:50], small.prompt_lengths)
    assert np.array_equal(full.prompt_offsets[:50], small.prompt_offsets)


def test_pool_size_errors() -> None:
    with pytest.raises(WorkloadError, match="dataset_prompts"):
        build(dataset="gpqa", dataset_prompts=449)
    with pytest.raises(WorkloadError, match="prompts_per_iteration"):
        build(dataset="gpqa", prompts_per_iteration=512)
    with pytest.raises(WorkloadError, match="max_prompt_tokens"):
        build(dataset="livecodebench", max_prompt_tokens=100)


# ---------------------------------------------------------------------------------------------- dataset validation


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shipped_datasets_validate_and_cite(name: str) -> None:
    p = parse_dataset(name, DATASETS[name])
    assert p.num_prompts >= 1
    assert DATASETS[name].get("sources") and DATASETS[name].get("notes")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("num_prompts"), "num_prompts"),
        (lambda d: d.update(num_prompts=-3), "num_prompts"),
        (lambda d: d.update(num_prompts=12.5), "num_prompts"),
        (lambda d: d.update(template_tokens=True), "template_tokens"),
        (lambda d: d.update(prompt_tokens={"median": 50}), "prompt_tokens.sigma"),
        (lambda d: d.update(prompt_tokens={"median": 0, "sigma": 0.1}), "prompt_tokens.median"),
        (lambda d: d["response_tokens"].update(sigma_epoch=-0.1), "response_tokens.sigma_epoch"),
        (lambda d: d["response_tokens"].update(sigma_sampel=0.1), "sigma_sampel"),
        (lambda d: d.update(response_trend_per_epoch=-1.0), "response_trend_per_epoch"),
        (lambda d: d.update(response_trend_per_epoch="fast"), "response_trend_per_epoch"),
        (lambda d: d.update(num_promts=5), "num_promts"),
        (lambda d: d.update(response_tokens=240), "response_tokens"),
    ],
)
def test_bad_dataset_entries_name_dataset_and_field(mutate: Any, field: str) -> None:
    d = inline()
    d["response_tokens"] = dict(d["response_tokens"])
    mutate(d)
    with pytest.raises(WorkloadError) as exc:
        parse_dataset("mydata", d)
    assert "mydata" in str(exc.value) and field in str(exc.value)
    # inline mappings from an experiment file go through the same validation
    cfg = WorkloadConfig(dataset=d, prompts_per_iteration=4)
    with pytest.raises(WorkloadError) as exc2:
        make_workload(cfg, d, None, np.random.default_rng(0), ROOT)
    assert "inline" in str(exc2.value) and field in str(exc2.value)


def test_make_workload_reads_catalog_when_no_entry_passed() -> None:
    cfg = WorkloadConfig(dataset="gsm8k", prompts_per_iteration=8)
    a = make_workload(cfg, None, None, np.random.default_rng(5), ROOT)
    b = make_workload(cfg, DATASETS["gsm8k"], None, np.random.default_rng(5), ROOT)
    assert same(a.iteration(1), b.iteration(1))
    with pytest.raises(WorkloadError, match="gsm8"):
        make_workload(WorkloadConfig(dataset="gsm8", prompts_per_iteration=8), None, None, np.random.default_rng(5), ROOT)


# ---------------------------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    num_prompts=st.integers(1, 300),
    ppi=st.integers(1, 300),
    n=st.integers(1, 9),
    cap=st.integers(1, 5000),
    sigmas=st.tuples(*[st.floats(0, 2)] * 5),
    median=st.floats(1, 5000),
    trend=st.floats(-0.5, 0.5),
    seed=st.integers(0, 2**32),
    i=st.integers(0, 50),
)
def test_property_dataset_shapes(num_prompts, ppi, n, cap, sigmas, median, trend, seed, i) -> None:
    ppi = min(ppi, num_prompts)
    d = {
        "num_prompts": num_prompts,
        "template_tokens": 5,
        "prompt_tokens": {"median": 30, "sigma": sigmas[0]},
        "response_tokens": {"median": median, "sigma_prompt": sigmas[1], "sigma_epoch": sigmas[2], "sigma_sample": sigmas[3]},
        "response_trend_per_epoch": trend,
    }
    cfg = WorkloadConfig(dataset=d, prompts_per_iteration=ppi, samples_per_prompt=n, max_response_tokens=cap, max_prompt_tokens=64)
    w = make_workload(cfg, d, None, np.random.default_rng(seed), ROOT)
    s = w.iteration(i)
    assert s.prompt_ids.size == ppi and s.response_tokens.size == ppi * n
    check_shapes(s, cap)
    assert s.prompt_tokens.min() >= 6 and s.prompt_tokens.max() <= 64
    assert 1 <= w.default_response_tokens <= cap

# ---------------------------------------------------------------------------------------------- measured tails

import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "workloads"))
import fit_length_tails as tails  # noqa: E402



def test_fitted_values_and_table_are_in_sync() -> None:
    """datasets.yaml's fitted lines and docs/workload.md's table are what workloads/fit_length_tails.py writes."""
    assert tails.main(["--check"]) == 0


def sampled_batches(dataset: str, model: str | None, prompts: int, group: int, cap: int, batches: int = 40) -> np.ndarray:
    """Consecutive iterations of the shipped entry, through the public API (trends on, as in a run)."""
    cfg = WorkloadConfig(dataset=dataset, prompts_per_iteration=prompts, samples_per_prompt=group, max_response_tokens=cap)
    w = make_workload(cfg, DATASETS[dataset], None, np.random.default_rng(11), ROOT, model=model)
    return np.stack([w.iteration(i).response_tokens for i in range(batches)]).astype(float)


@pytest.mark.parametrize("target", sorted(tails.TARGETS, key=str))
def test_sampled_batches_reproduce_the_logged_tail(target: tuple[str, str | None]) -> None:
    """A batch of the log's shape reproduces its max/mean within 10% and its capped share within 25% (or 0.1 points).

    The maximum ends the rollout phase; the capped share is how often a batch holds a sample that runs to the cap.
    """
    log = tails.LOGS[tails.TARGETS[target]]
    dataset, model = target
    x = sampled_batches(dataset, model or log.model, log.prompts, log.group, log.cap)
    cited = tails.cited_stats(log)
    max_over_mean = float(np.mean(x.max(axis=1) / x.mean(axis=1)))
    assert max_over_mean == pytest.approx(cited["max_over_mean"], rel=0.10)
    capped = float((x >= log.cap).mean())
    assert abs(capped - cited["capped"]) <= max(0.25 * cited["capped"], 0.001)
    assert float(x.mean()) == pytest.approx(cited["mean"], rel=0.05)
    if cited["steps_at_cap"] == 1.0:  # the 0.5B log reaches the cap in every step
        assert float((x.max(axis=1) >= log.cap).mean()) > 0.75


def test_math_reproduces_the_cot_sample_bulk_and_tail() -> None:
    c = tails.MATH_COT
    x = sampled_batches("math", None, c["prompts"], c["group"], int(c["max"]), batches=60)
    assert float(x.mean()) == pytest.approx(c["mean"], rel=0.05)
    assert float(np.mean([np.quantile(b, 0.9) for b in x])) == pytest.approx(c["p90"], rel=0.10)  # the old single lognormal gave ~650
    assert float((x >= c["max"]).mean()) == pytest.approx(0.01, abs=0.0025)  # the top 1% run to the cap
    assert float(np.mean(x.max(axis=1))) == c["max"]  # every batch of 800 reaches it


@pytest.mark.parametrize("name", tails.ASSUMED_LIKE_MATH)
def test_datasets_without_a_log_assume_maths_runaways(name: str) -> None:
    own, ref = DATASETS[name]["runaway"], DATASETS["math"]["runaway"]
    assert (own["probability"], own["prompt_correlation"]) == (ref["probability"], ref["prompt_correlation"])
    x = sampled_batches(name, None, 64, 8, 2048, batches=20)
    params = parse_dataset(name, DATASETS[name])
    bulk = tails.overflow(params.response_median_tokens, params.response_sigma, 2048)  # LiveCodeBench's own bulk reaches 2,048 too
    assert float((x >= 2048).mean()) == pytest.approx(own["probability"] + (1 - own["probability"]) * bulk, abs=0.004)


def runaway_entry(p: float, r: float, **over: Any) -> dict[str, Any]:
    return inline(num_prompts=400, runaway={"probability": p, "prompt_correlation": r}, **over)


def test_runaways_run_to_the_cap_at_the_configured_rate() -> None:
    d = runaway_entry(0.05, 0.0, response_tokens={"median": 200, "sigma_prompt": 0.2, "sigma_epoch": 0.1, "sigma_sample": 0.1})
    x = sampled_batches_inline(d, prompts=200, group=8, cap=1000, batches=10)
    assert float((x == 1000).mean()) == pytest.approx(0.05, abs=0.008)
    assert float(np.quantile(x[x < 1000], 0.999)) < 600  # the bulk never comes near: the capped samples are runaways
    w = build(dataset=d, prompts_per_iteration=200, samples_per_prompt=8, max_response_tokens=1000)
    assert w.truncated_fraction(0) == float((w.iteration(0).response_tokens == 1000).mean())
    assert w.default_response_tokens == pytest.approx(float(x.mean()), rel=0.05)


def sampled_batches_inline(d: dict[str, Any], prompts: int, group: int, cap: int, batches: int) -> np.ndarray:
    w = build(dataset=d, prompts_per_iteration=prompts, samples_per_prompt=group, max_response_tokens=cap)
    return np.stack([w.iteration(i).response_tokens for i in range(batches)]).astype(float)


@pytest.mark.parametrize("r", [0.0, 0.9])
def test_runaway_prompt_correlation_clusters_runaways_in_groups_and_epochs(r: float) -> None:
    d = runaway_entry(0.03, r)
    w = build(dataset=d, prompts_per_iteration=200, samples_per_prompt=8, max_response_tokens=5000, dataset_prompts=400)
    per_epoch = []
    for e in range(6):
        hits: dict[int, int] = {}
        for i in (2 * e, 2 * e + 1):
            s = w.iteration(i)
            counts = np.bincount(s.sample_prompt, weights=s.response_tokens >= 5000)
            hits.update(zip(s.prompt_ids.tolist(), counts.tolist()))
        per_epoch.append(np.array([hits[p] for p in range(400)]))
    counts = np.stack(per_epoch)  # epochs x prompts: runaways per group
    p = counts.sum() / counts.size / 8
    dispersion = counts.var() / (8 * p * (1 - p))  # 1 for independent samples, up to 8 when whole groups run away
    ran = counts > 0
    again = (ran[1:] & ran[:-1]).sum() / ran[:-1].sum()
    if r == 0.0:
        assert dispersion == pytest.approx(1.0, abs=0.25)
        assert again == pytest.approx(ran.mean(), abs=0.06)  # no memory of the last epoch
    else:
        assert dispersion > 2.0
        assert again > 4 * ran.mean()  # a prompt that ran away last epoch tends to run away again


@pytest.mark.parametrize(("dataset", "model"), [("gsm8k", "qwen2.5-0.5b"), ("math", None)])
def test_epoch_to_epoch_correlation_holds_with_runaways(dataset: str, model: str | None) -> None:
    """The length predictor's premise survives the tail: group means still correlate across epochs."""
    cfg = WorkloadConfig(dataset=dataset, prompts_per_iteration=128, samples_per_prompt=8, dataset_prompts=512)
    w = make_workload(cfg, DATASETS[dataset], None, np.random.default_rng(3), ROOT, model=model)
    assert w.params.runaway_probability > 0.005
    means = per_epoch_group_means(w, 4)
    ids = sorted(means[0])
    corrs = [np.corrcoef([means[e][p] for p in ids], [means[e + 1][p] for p in ids])[0, 1] for e in range(3)]
    assert min(corrs) > 0.7


def test_by_model_overrides_select_by_the_actor_and_are_always_validated() -> None:
    base = parse_dataset("gsm8k", DATASETS["gsm8k"])
    small = parse_dataset("gsm8k", DATASETS["gsm8k"], "qwen2.5-0.5b")
    assert small.runaway_probability > 0 and base.runaway_probability == 0
    assert small.response_median_tokens < base.response_median_tokens
    assert (small.sigma_epoch, small.sigma_sample, small.runaway_prompt_correlation) == (
        base.sigma_epoch, base.sigma_sample, base.runaway_prompt_correlation,
    )  # fmt: skip
    assert parse_dataset("gsm8k", DATASETS["gsm8k"], "llama-3.1-8b") == base  # no override: the default
    bad = {**DATASETS["gsm8k"], "by_model": {"m1": {"prompt_tokens": {"median": 5, "sigma": 0.1}}}}
    with pytest.raises(WorkloadError, match=r"by_model\.m1: unknown field\(s\) \['prompt_tokens'\]"):
        parse_dataset("gsm8k", bad)
    bad = {**DATASETS["gsm8k"], "by_model": {"m1": {"runaway": {"probability": 1.5}}}}
    with pytest.raises(WorkloadError, match=r"by_model m1\): field runaway\.probability: must be < 1"):
        parse_dataset("gsm8k", bad, "another-model")  # validated even when another model runs


@pytest.mark.parametrize(
    ("runaway", "field"),
    [({"probability": -0.1}, "runaway.probability"), ({"probability": 0.1, "prompt_correlation": 1.2}, "runaway.prompt_correlation"),
     ({"probability": 0.1, "trend_per_epoch": -1.0}, "runaway.trend_per_epoch"), ({"rate": 0.1}, "runaway"), (0.1, "runaway")],
)  # fmt: skip
def test_bad_runaway_fields_name_the_field(runaway: Any, field: str) -> None:
    with pytest.raises(WorkloadError) as exc:
        parse_dataset("mydata", inline(runaway=runaway))
    assert "mydata" in str(exc.value) and field in str(exc.value)


def test_the_runner_picks_the_actors_override() -> None:
    from sim.simulation import simulate

    from helpers import experiment

    base = {
        "name": "t", "iterations": 1, "model": "qwen2.5-0.5b",
        "workload": {"dataset": "gsm8k", "prompts_per_iteration": 32, "samples_per_prompt": 4, "max_response_tokens": 1024},
        "cluster": {"nodes": 1, "gpu": "L40S"}, "platform": {"kind": "serverful"}, "scheduler": {"name": "verl"},
    }  # fmt: skip
    from sim.catalog import load_catalog

    same_shape = {k: v for k, v in vars(load_catalog().model("qwen2.5-0.5b")).items() if k not in ("name", "source")}
    by_name = simulate(experiment(base)).summary["tokens_generated"]
    unnamed = simulate(experiment(base, model={"name": "my-0.5b", **same_shape})).summary["tokens_generated"]
    cfg = WorkloadConfig(**base["workload"])
    expected = {
        model: int(make_workload(cfg, DATASETS["gsm8k"], None, np.random.default_rng(0).spawn(3)[0], ROOT, model=model).iteration(0).response_tokens.sum())
        for model in ("qwen2.5-0.5b", "my-0.5b")
    }  # fmt: skip
    assert (by_name, unnamed) == (expected["qwen2.5-0.5b"], expected["my-0.5b"])
    assert by_name < unnamed  # the 0.5B's fitted responses are shorter than the default's, runaways included


# ---------------------------------------------------------------------------------------------- stream draws
# Dynamic sampling (sim/rollout/dynamic_sampling.py) reads rounds of any size from the prompt stream with `draw`.


@pytest.mark.parametrize("i", [0, 1, 6, 13])  # 13 straddles an epoch of a 50-prompt pool with P=16
def test_round_zero_draw_is_the_iteration(i: int) -> None:
    w = build(dataset=inline(num_prompts=50), prompts_per_iteration=16)
    fresh = build(dataset=inline(num_prompts=50), prompts_per_iteration=16)
    assert same(w.draw(i, 0, i * 16, 16), fresh.iteration(i))


def test_later_rounds_draw_fresh_noise_with_the_steps_trend() -> None:
    entry = inline(response_trend_per_epoch=1.0, runaway={"probability": 0.3})
    w = build(dataset=entry, prompts_per_iteration=16)
    a, b = w.draw(3, 0, 100, 16), w.draw(3, 1, 100, 16)
    np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)  # the same prompts...
    assert not np.array_equal(a.response_tokens, b.response_tokens)  # ...sampled again
    assert a.iteration == b.iteration == 3
    # the trend follows the training step, not how far the stream has been read: step 3 at any position
    # has step 3's median, step 40 a much larger one (trend 1.0 per epoch of 200 prompts: 2^(40*16/200))
    late = w.draw(40, 0, 116, 16)
    assert np.median(late.response_tokens) > 3 * np.median(a.response_tokens)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 37), min_size=1, max_size=30), pool=st.sampled_from([37, 50]))
def test_consecutive_rounds_read_each_epoch_as_a_permutation_and_never_repeat_a_prompt(sizes: list[int], pool: int) -> None:
    """Rounds of any sizes, in order: no round holds a prompt twice, and every epoch's positions hold each
    prompt exactly once (later rounds draw the next prompts of the epoch)."""
    w = build(dataset=inline(num_prompts=pool), prompts_per_iteration=8)
    pos, seen = 0, []
    for r, n in enumerate(sizes):
        s = w.draw(r, 1, pos, n)
        assert len(np.unique(s.prompt_ids)) == n
        assert s.epoch == pos // pool
        seen.extend(s.prompt_ids.tolist())
        pos += n
    for e in range(len(seen) // pool):
        assert sorted(seen[e * pool : (e + 1) * pool]) == list(range(pool))


def test_a_round_larger_than_the_pool_is_refused() -> None:
    w = build(dataset=inline(num_prompts=50), prompts_per_iteration=8)
    with pytest.raises(WorkloadError, match="1..50"):
        w.draw(0, 0, 0, 51)
