"""Early-exit probe with torch: the logit lens on tiny in-process models, a trained toy model, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the probe extra (torch) is not installed")
transformers = pytest.importorskip("transformers", reason="the probe extra (transformers) is not installed")

from sim.probe.cli import main  # noqa: E402
from sim.probe.errors import UnsupportedArchitecture  # noqa: E402
from sim.probe.lens import lens_logits_all_layers, lens_parts, plan_windows, run_lens  # noqa: E402
from sim.probe.metrics import build_profile, stable_exit_layers  # noqa: E402
from sim.probe.models import offline_env  # noqa: E402
from sim.probe.profile import load_profile, profile_from_dict  # noqa: E402

offline_env()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is as fast as two and far more robust on busy CI hosts."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gpt2(n_layer: int = 6):
    cfg = transformers.GPT2Config(n_layer=n_layer, n_embd=128, n_head=4, vocab_size=1000, n_positions=256,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def _llama(n_layer: int = 6):
    cfg = transformers.LlamaConfig(num_hidden_layers=n_layer, hidden_size=128, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=256, vocab_size=1000,
                                   max_position_embeddings=256)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny(request):
    return _gpt2() if request.param == "gpt2" else _llama()


def test_lens_reproduces_logits_and_hooks_match_hidden_states(tiny):
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    layers, logits = lens_logits_all_layers(tiny, ids)
    assert layers.shape == (6, 2, 16, 1000)
    torch.testing.assert_close(layers[-1], logits, atol=1e-4, rtol=0)
    # the hooked block outputs are the raw residual stream (hidden_states[1:-1]); the last
    # hidden state already has the final norm, which is why the lens does not use it
    parts = lens_parts(tiny)
    with torch.no_grad():
        out = tiny(input_ids=ids, output_hidden_states=True)
    for layer in range(5):
        expected = parts.lm_head(parts.final_norm(out.hidden_states[layer + 1]))
        torch.testing.assert_close(layers[layer], expected.float(), atol=1e-4, rtol=1e-4)


def test_run_lens_profile_cdfs(tiny):
    ids = torch.randint(0, 1000, (300,), generator=torch.Generator().manual_seed(1)).tolist()
    stats = run_lens(tiny, ids, window=64, stride=32, batch_size=3, progress=False)
    assert stats.n_positions == 299 and stats.n_layers == 6
    assert np.all(stats.kl[:, -1] == 0) and np.allclose(stats.sim_centered[:, -1], 1, atol=1e-5)
    doc = build_profile(stats, model="tiny", text="random", n_tokens=300, settings={})
    prof = profile_from_dict(json.loads(json.dumps(doc)))
    for cdf in [prof.stable_exit_cdf] + [t.cdf for m in prof.threshold_exits.values() for t in m.values()]:
        assert np.all(np.diff(cdf) >= 0) and cdf[-1] == 1.0
    # batching windows does not change the numbers
    again = run_lens(tiny, ids, window=64, stride=32, batch_size=1, progress=False)
    np.testing.assert_array_equal(again.top1, stats.top1)
    np.testing.assert_allclose(again.kl, stats.kl, rtol=1e-4, atol=1e-4)


def test_plan_windows_cover_every_position_once():
    for n, w, s in [(2, 2, 1), (10, 4, 2), (100, 16, 16), (101, 32, 7), (50, 64, 32)]:
        plans = plan_windows(n, w, s)
        scored = [p for win in plans for p in range(win.score_from, win.score_to)]
        assert scored == list(range(n - 1))
        for win in plans:
            assert win.end - win.start <= w and win.start <= win.score_from < win.score_to <= win.end
            if win.start > 0:  # later windows give every scored position >= w - s tokens of context
                assert win.score_from - win.start >= min(w - s, win.score_from)


def test_unsupported_architecture_is_reported():
    cfg = transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=100, max_position_embeddings=64)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(UnsupportedArchitecture, match="unsupported architecture GPTNeoXForCausalLM"):
        lens_parts(model)


# --------------------------------------------------------------------------- a trained toy model

# Segment of the synthetic language (11 tokens): r1 r2 r3 r4 SEP r1 r2 r3 r4 E f(E)
#  * r_i: random tokens 2..9 (unpredictable);
#  * the second copy of r2..r4 is HARD: predicting it needs an induction circuit (find the
#    earlier occurrence of the current token, copy what followed it), i.e. two composed
#    attention steps, so at least two blocks;
#  * E is random in 10..19 and f(E) = E + 10 is EASY: a fixed bigram, readable from the
#    embedding alone.
# (An XOR-of-earlier-bits rule was tried first: the toy model often computes it inside block 1,
# so its "hard" tokens did not reliably need more depth.)
R, SEP, E0 = 4, 1, 10
SEG = 2 * R + 3


def _segments(n: int, gen: torch.Generator) -> torch.Tensor:
    r = torch.randint(2, 10, (n, R), generator=gen)
    e = torch.randint(E0, E0 + 10, (n,), generator=gen)
    return torch.cat([r, torch.full((n, 1), SEP), r, e[:, None], (e + 10)[:, None]], dim=1)


def test_trained_toy_model_easy_tokens_exit_earlier_than_hard():
    cfg = transformers.LlamaConfig(num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=128, vocab_size=30,
                                   max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    gen = torch.Generator().manual_seed(100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(200):
        x = _segments(128, gen)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    text = _segments(200, torch.Generator().manual_seed(2)).reshape(-1)
    stats = run_lens(model, text.tolist(), window=SEG, stride=SEG, batch_size=50, progress=False)

    pos = np.arange(stats.n_positions) % SEG
    easy = pos == SEG - 2  # E -> f(E)
    hard = (pos >= R + 1) & (pos <= 2 * R - 1)  # second copy: r_i -> r_{i+1}
    final = stats.top1[:, -1]
    assert (final[easy] == stats.targets[easy]).mean() > 0.95, "toy model did not learn the bigram"
    assert (final[hard] == stats.targets[hard]).mean() > 0.9, "toy model did not learn the copy"

    def profile(mask):
        return profile_from_dict(build_profile(stats.select(mask), model="toy", text="toy",
                                               n_tokens=int(mask.sum()) + 1, settings={}))

    p_easy, p_hard = profile(easy), profile(hard)
    exits = stable_exit_layers(stats.top1)
    assert p_easy.mean_stable_exit_fraction == pytest.approx(exits[easy].mean() / 4)
    assert p_easy.mean_stable_exit_fraction < p_hard.mean_stable_exit_fraction
    assert exits[hard].mean() - exits[easy].mean() > 0.3
    assert p_easy.stable_exit_cdf[0] > p_hard.stable_exit_cdf[0]  # more easy tokens settled at layer 1


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    _llama(n_layer=3).save_pretrained(path)
    return path


def test_cli_end_to_end_token_ids(tmp_path, saved_llama, capsys):
    ids = tmp_path / "ids.txt"
    rng = np.random.default_rng(0)
    ids.write_text("\n".join(" ".join(str(v) for v in row) for row in rng.integers(0, 1000, (10, 20))))
    out = tmp_path / "prof" / "tiny.json"
    rc = main(["--model", str(saved_llama), "--token-ids", str(ids), "--out", str(out), "--window", "64",
               "--stride", "32", "--batch-size", "2", "--margin-thresholds", "0.2,0.5", "--batches", "1,2,4"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    prof = load_profile(out)
    assert prof.n_layers == 3 and prof.n_tokens == 200 and prof.text == "ids"
    assert prof.settings["window"] == 64 and prof.settings["stride"] == 32
    assert sorted(prof.threshold_exits["margin"]) == [0.2, 0.5]
    assert sorted(prof.expected_max_depth) == [1, 2, 4]
    assert prof.raw["n_positions"] == 199 and prof.raw["model_info"]["format"] == "hf"


def test_cli_errors_exit_2_one_line(tmp_path, saved_llama, capsys):
    short = tmp_path / "short.txt"
    short.write_text("1 2 3")
    cases = [
        (["--model", str(saved_llama), "--token-ids", str(short)], "needs at least"),
        (["--model", str(saved_llama), "--token-ids", str(tmp_path / "nope.txt")], "not found"),
        (["--model", str(tmp_path / "no-model"), "--token-ids", str(short)], "model not found"),
        (["--model", str(saved_llama), "--text", str(short)], "no tokenizer"),
    ]
    bad_ids = tmp_path / "bad.txt"
    bad_ids.write_text(" ".join(["5"] * 20) + " 99999")
    cases.append((["--model", str(saved_llama), "--token-ids", str(bad_ids)], "outside the model's vocabulary"))
    neox = tmp_path / "neox"
    transformers.AutoModelForCausalLM.from_config(transformers.GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100,
        max_position_embeddings=64)).save_pretrained(neox)
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(str(i) for i in range(40)))
    cases.append((["--model", str(neox), "--token-ids", str(ids), "--out", str(tmp_path / "x.json")],
                  "unsupported architecture"))
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
        assert "Traceback" not in err


def test_cli_missing_file_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "sim.probe", "--model", str(tmp_path / "missing.gguf"),
                          "--text", str(tmp_path / "missing.txt")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "model not found" in lines[0], res.stderr


def test_half_precision_model_uses_fp32_lens():
    model = _llama(n_layer=2).to(torch.bfloat16)
    ids = torch.randint(0, 1000, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    stats = run_lens(model, ids, window=40, stride=20, progress=False)
    assert stats.n_positions == 39 and stats.max_prob.dtype == np.float64
    assert np.all(stats.kl[:, -1] == 0) and np.all(np.isfinite(stats.kl))
    assert next(model.parameters()).dtype == torch.bfloat16  # the model itself is untouched
