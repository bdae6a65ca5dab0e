"""Helpers for the tests that run the probe on a real model (they need the probe extra: torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sim.probe.lens import run_lens
from sim.probe.metrics import token_block


def reproduce_shipped_prefix(loaded, profile_path, n: int = 48) -> tuple[float, float]:
    """Re-measure the first n positions of a shipped profile's text; (share of equal agreement rows, of equal level rows).

    Causal attention: in the first window each position sees only what precedes it, so a short run over
    the text's first n + 1 tokens reproduces the shipped profile's first n positions.
    """
    shipped = json.loads(Path(profile_path).read_text())
    text = (Path(__file__).resolve().parents[1] / "traces" / "texts" / f"{shipped['text']}.txt").read_text()
    ids = loaded.tokenizer(text, add_special_tokens=shipped["settings"]["add_special_tokens"])["input_ids"][: n + 1]
    stats = run_lens(loaded.model, ids, window=n + 1, stride=n + 1, progress=False)
    grids = shipped["tokens"]["thresholds"]
    block = token_block(stats, grids)
    agree = np.mean([a == b for a, b in zip(block["top1_agrees"], shipped["tokens"]["top1_agrees"][:n])])
    levels = np.mean([a == b for m in grids for a, b in zip(block["levels"][m], shipped["tokens"]["levels"][m][:n])])
    return float(agree), float(levels)

