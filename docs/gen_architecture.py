"""Generate the module map of docs/architecture.md from the package itself: one line per module of sim/.

Each line is the module's path and the first sentence of its docstring, package by package, in the order of
`PACKAGES` (a module or package not listed there fails the generator, so a new one must be placed on the map).
The prose of the page is hand-written; the map cannot drift from the code.

    .venv/bin/python docs/gen_architecture.py           # rewrite the map
    .venv/bin/python docs/gen_architecture.py --check   # exit 1 if it is out of date

tests/test_docs_tables.py runs the check.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import ROOT, main  # noqa: E402

PAGE = ROOT / "docs" / "architecture.md"
SIM = ROOT / "sim"
#: the map's sections in reading order: (title, the package or top-level modules it holds)
PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Entry points and the run's lifecycle", ("run.py", "cli.py", "errors.py", "simulation.py", "build.py", "context.py", "view.py", "collect.py")),
    ("Input: the experiment file and the catalogs", ("config", "yaml_io.py", "catalog.py", "recipes.py", "workload")),
    ("Hardware and performance models", ("hardware", "perf")),
    ("Mechanism: SimPy processes and ledgers", ("rollout", "phases", "resources")),
    ("Policy: schedulers", ("schedulers",)),
    ("Results", ("recording.py", "metrics.py", "output")),
    ("Sweeps", ("sweep",)),
    ("The early-exit probe (optional extra: torch)", ("probe",)),
)


def summary(path: Path) -> str:
    """The first sentence of the module's docstring (a module without one fails: every module says what it does)."""
    doc = ast.get_docstring(ast.parse(path.read_text()))
    if not doc:
        raise SystemExit(f"{path.relative_to(ROOT)}: no module docstring")
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return (paragraph if end < 0 else paragraph[: end + 1]).replace("|", "\\|")


def modules(entry: str) -> list[Path]:
    """The files of one map entry: a top-level module, or a package's __init__ and then its modules."""
    path = SIM / entry
    if path.is_file():
        return [path]
    return [path / "__init__.py"] + sorted(p for p in path.glob("*.py") if p.name != "__init__.py")


def module_map() -> str:
    placed = {p for _, entries in PACKAGES for e in entries for p in modules(e)}
    present = {p for p in SIM.rglob("*.py")}
    missing = sorted(str(p.relative_to(ROOT)) for p in present - placed if p.parent == SIM or p.parent.parent == SIM)
    if (SIM / "__init__.py") in present:
        missing = [m for m in missing if m != "sim/__init__.py"]
    if missing:
        raise SystemExit(f"docs/gen_architecture.py: place these on the map (PACKAGES): {', '.join(missing)}")
    out = []
    for title, entries in PACKAGES:
        out.append(f"**{title}**\n")
        out.append("| module | what it does |\n|---|---|")
        for entry in entries:
            for p in modules(entry):
                name = str(p.relative_to(ROOT))
                if p.name == "__init__.py":
                    name = str(p.parent.relative_to(ROOT)) + "/"
                out.append(f"| `{name}` | {summary(p)} |")
        out.append("")
    return "\n".join(out)


BLOCKS = {"modules": module_map}

if __name__ == "__main__":
    raise SystemExit(main(__file__, {PAGE: BLOCKS}, doc=__doc__))
