"""Generate the computed tables of docs/catalog.md from the packaged catalog (workloads/*.yaml).

Each table sits between `<!-- BEGIN gen_catalog_tables: NAME -->` and `<!-- END gen_catalog_tables: NAME -->`:

- `models`: every entry of workloads/models.yaml with its shape, bf16 weight bytes and KV bytes per token
  (what sim.catalog.ModelSpec computes), one row per key in catalog order.

The GPU table stays hand-written: its cells carry per-value source tags and notes that the catalog keeps
in free text. Run:

    .venv/bin/python docs/gen_catalog_tables.py           # rewrite the tables
    .venv/bin/python docs/gen_catalog_tables.py --check   # exit 1 if any is out of date

`tests/test_docs_tables.py` runs the check, so the page cannot drift from the catalog.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import ROOT, main, md_table  # noqa: E402

PAGE = ROOT / "docs" / "catalog.md"


def models_table() -> str:
    from sim.catalog import load_catalog

    models = load_catalog().models
    rows = []
    for key, m in models.items():  # catalog order
        label = f"`{key}`"
        ffn = f"{m.intermediate_size:,}"
        if m.is_moe:
            label += (f" (MoE: {m.experts} experts, top-{m.experts_per_token}, expert width {m.expert_intermediate_size:,}; "
                      f"{m.active_params / 1e9:.3g} B active)")  # fmt: skip
            ffn += "" if m.intermediate_size == m.expert_intermediate_size else " (unused)"
        rows.append([
            label, f"{m.params:,.0f}", str(m.layers), f"{m.hidden_size:,}", f"{m.heads} / {m.kv_heads} × {m.head_dim}", ffn,
            f"{m.vocab_size:,}", "yes" if m.tied_embeddings else "no", f"{m.weight_bytes / 1e9:.3g} GB",
            f"{m.kv_bytes_per_token / 1024:.0f} KiB",
        ])  # fmt: skip
    head = ["Key", "Params", "Layers", "Hidden", "Heads / KV heads × head_dim", "FFN", "Vocab", "Tied", "bf16 weights", "KV per token"]
    return md_table(head, rows)


BLOCKS = {"models": models_table}

if __name__ == "__main__":
    raise SystemExit(main(__file__, {PAGE: BLOCKS}, doc=__doc__))
