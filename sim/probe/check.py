"""Re-measure the first positions of a shipped exit profile and compare them with the file (drift check).

Causal attention: within one window each position sees only what precedes it, so a short lens pass over
the text's first n + 1 tokens reproduces the profile's first n positions exactly, up to float noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sim.probe.metrics import token_block

TEXTS = Path(__file__).resolve().parents[2] / "traces" / "texts"


def reproduce_shipped_prefix(loaded, profile_path: Path | str, n: int = 48) -> tuple[float, float]:
    """(share of equal top-1 agreement rows, share of equal exit-level rows) over the first n positions."""
    from sim.probe.lens import run_lens  # torch: the probe extra

    shipped = json.loads(Path(profile_path).read_text())
    text = (TEXTS / f"{shipped['text']}.txt").read_text()
    ids = loaded.tokenizer(text, add_special_tokens=shipped["settings"]["add_special_tokens"])["input_ids"][: n + 1]
    stats = run_lens(loaded.model, ids, window=n + 1, stride=n + 1, progress=False)
    grids = shipped["tokens"]["thresholds"]
    block = token_block(stats, grids)
    agree = np.mean([a == b for a, b in zip(block["top1_agrees"], shipped["tokens"]["top1_agrees"][:n])])
    levels = np.mean([a == b for m in grids for a, b in zip(block["levels"][m], shipped["tokens"]["levels"][m][:n])])
    return float(agree), float(levels)
