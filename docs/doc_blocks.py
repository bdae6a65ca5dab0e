"""Shared by the docs/gen_*.py scripts: rewrite generated blocks of a docs page between markers, with --check.

A block sits between `<!-- BEGIN <script>: NAME -->` and `<!-- END <script>: NAME -->`; only the text between
the markers is rewritten. `--check` exits 1 when any block is out of date, so a test can catch drift.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A markdown table (each cell already formatted); `align` is one of l/r per column (default: l)."""
    rule = ["---:" if a == "r" else "---" for a in (align or ["l"] * len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render(page: str, script: str, blocks: dict[str, Callable[[], str]], where: Path) -> str:
    """`page` with every block of `blocks` rewritten; a block without its markers is an error."""
    for name, make in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN {re.escape(script)}: {re.escape(name)} -->\n)(.*?)(<!-- END {re.escape(script)}: {re.escape(name)} -->)", re.S)
        if not pattern.search(page):
            raise SystemExit(f"{where}: no block markers for {name!r} (<!-- BEGIN {script}: {name} --> ... <!-- END {script}: {name} -->)")
        text = make()
        page = pattern.sub(lambda m: m.group(1) + text + m.group(3), page)
    return page


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(script_file: str, pages: dict[Path, dict[str, Callable[[], str]]], argv: list[str] | None = None, doc: str = "") -> int:
    """Rewrite (or with --check only compare) every page's blocks; exit status 1 when --check finds drift."""
    script = Path(script_file).stem
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else script)
    parser.add_argument("--check", action="store_true", help="only check that the tables are up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    stale = []
    for page, blocks in pages.items():
        current = page.read_text()
        new = render(current, script, blocks, page)
        if new == current:
            continue
        stale.append(page)
        if not args.check:
            page.write_text(new)
            print(f"wrote {_shown(page)}")
    if args.check and stale:
        names = ", ".join(_shown(p) for p in stale)
        print(f"out of date: {names}; run: python docs/{script}.py", file=sys.stderr)
        return 1
    if not stale:
        print("up to date")
    return 0
