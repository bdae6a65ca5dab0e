"""docs/gen_command_outputs.py: how it selects the lines it shows (tests/test_docs_tables.py runs its --check,
so the outputs in README.md and docs/getting_started.md are what the commands print now)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_command_outputs", DOCS / "gen_command_outputs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_command_outputs"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_line_selection_marks_what_it_leaves_out() -> None:
    gen = load_generator()
    text = "\n".join(f"l{i}" for i in range(1, 11)) + "\n"
    assert gen.select(text, None) == text
    assert gen.select(text, "head=2 tail=1") == "l1\nl2\n...\nl10\n"
    assert gen.select(text, "lines=1,4-5") == "l1\n...\nl4\nl5\n...\n"
    assert gen.select(text, "lines=9-") == "...\nl9\nl10\n"
