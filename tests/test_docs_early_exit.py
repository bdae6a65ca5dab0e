"""docs/early_exit.md's measured tables are what docs/gen_early_exit_tables.py makes from the shipped profiles and the model.

If this fails after a change to a profile, the latency model or experiments/early_exit.yaml, run
`.venv/bin/python docs/gen_early_exit_tables.py` and commit the page.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_early_exit_tables", DOCS / "gen_early_exit_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_early_exit_tables_are_up_to_date():
    gen = _generator()
    page = (DOCS / "early_exit.md").read_text()
    assert gen.render(page) == page, "docs/early_exit.md is stale: run .venv/bin/python docs/gen_early_exit_tables.py"


def test_every_shipped_profile_is_in_the_side_by_side_tables():
    gen = _generator()
    table = gen.profiles_table()
    for prof in gen.profiles():
        assert prof.model in table and prof.model.split(".")[0] in gen.curves_table()
    assert len(gen.profiles()) >= 2  # SmolLM2 and Gemma 3
