"""Every generated table in docs/ is what its script makes now: each docs/gen_*.py runs in --check mode.

A failure names the script to run (`.venv/bin/python docs/gen_NAME.py`) and the page to commit. A new
generator is picked up by its file name; the test also checks that each one has a --check mode that can fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "docs").glob("gen_*.py"))


def test_the_generators_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"gen_experiment_docs.py", "gen_early_exit_tables.py", "gen_model_tables.py", "gen_catalog_tables.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_generated_docs_are_up_to_date(script: Path) -> None:
    proc = subprocess.run([sys.executable, str(script), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script.name} --check failed:\n{proc.stdout}{proc.stderr}"


def test_check_mode_fails_on_a_stale_block(tmp_path: Path) -> None:
    """The shared block writer refuses drift: a page whose block differs is reported and left alone in --check."""
    sys.path.insert(0, str(ROOT / "docs"))
    import doc_blocks

    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- BEGIN gen_x: t -->\nold\n<!-- END gen_x: t -->\nend\n")
    blocks = {page: {"t": lambda: doc_blocks.md_table(["a"], [["1"]])}}
    assert doc_blocks.main("gen_x.py", blocks, ["--check"]) == 1
    assert "old" in page.read_text()
    assert doc_blocks.main("gen_x.py", blocks, []) == 0
    assert page.read_text() == "intro\n<!-- BEGIN gen_x: t -->\n| a |\n|---|\n| 1 |\n<!-- END gen_x: t -->\nend\n"
    assert doc_blocks.main("gen_x.py", blocks, ["--check"]) == 0
    with pytest.raises(SystemExit, match="no block markers for 'u'"):
        doc_blocks.render(page.read_text(), "gen_x", {"u": lambda: ""}, page)


def test_reproduction_page_is_what_the_paper_runs_give(tmp_path: Path) -> None:
    """docs/reproduction.md is written by experiments/paper/reproduce.py from every paper run; --check reruns them
    (into a temporary folder) and compares, and reports a page that differs (the runs are reused the second time)."""
    script = ROOT / "experiments" / "paper" / "reproduce.py"
    out = tmp_path / "paper"
    proc = subprocess.run([sys.executable, str(script), "--check", "--out", str(out), "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"docs/reproduction.md is stale: run python experiments/paper/reproduce.py\n{proc.stdout}{proc.stderr}"
    stale = tmp_path / "reproduction.md"
    stale.write_text((ROOT / "docs" / "reproduction.md").read_text().replace("x |", "y |", 1))
    proc = subprocess.run([sys.executable, str(script), "--check", "--out", str(out), "--doc", str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1 and "out of date" in proc.stderr
    assert stale.read_text() != (ROOT / "docs" / "reproduction.md").read_text()  # --check writes nothing
