"""The command outputs shown in README.md and docs/getting_started.md are what the commands print now.

docs/gen_command_outputs.py runs every marked command; if this fails after a change that moves results,
run `.venv/bin/python docs/gen_command_outputs.py`, read the diff, fix the prose around it, and commit.
"""

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


def test_every_shown_output_is_current() -> None:
    gen = load_generator()
    pages = gen.generate()
    assert set(pages) == set(gen.PAGES)
    for page, new in pages.items():
        old = page.read_text()
        assert gen.MARKER.search(old), f"{page.name}: no marked command left"
        assert gen.WALL.sub("", new) == gen.WALL.sub("", old), f"{page.name} is stale: run .venv/bin/python docs/gen_command_outputs.py"


def test_line_selection_marks_what_it_leaves_out() -> None:
    gen = load_generator()
    text = "\n".join(f"l{i}" for i in range(1, 11)) + "\n"
    assert gen.select(text, None) == text
    assert gen.select(text, "head=2 tail=1") == "l1\nl2\n...\nl10\n"
    assert gen.select(text, "lines=1,4-5") == "l1\n...\nl4\nl5\n...\n"
    assert gen.select(text, "lines=9-") == "...\nl9\nl10\n"
