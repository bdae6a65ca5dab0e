"""Regenerate the command outputs shown in README.md and docs/getting_started.md by running the commands.

A shown command is a ```bash block preceded by a marker line, and its output is the plain ``` block right
after it:

    <!-- gen_command_outputs -->                 the whole output
    <!-- gen_command_outputs: head=9 tail=2 -->  its first 9 and last 2 lines, "..." between
    <!-- gen_command_outputs: lines=1-4,12- -->  those lines (1-based, inclusive), "..." where lines are left out

The commands of one page run in order, in one scratch folder that holds links to the checkout's
experiments/, traces/ and workloads/, so `results/...` paths in a page are the scratch folder's (a later
command reads what an earlier one wrote). Wall-clock figures (a sweep's "(0.4 s)" per run) are not results:
they are printed as the first generation had them and ignored by --check.

    .venv/bin/python docs/gen_command_outputs.py           # rewrite the outputs
    .venv/bin/python docs/gen_command_outputs.py --check   # exit 1 if any is out of date

tests/test_docs_tables.py runs the check (as it runs every docs/gen_*.py), so the pages cannot drift from what
the commands print. After a change that moves results: regenerate, read the diff, fix the prose around it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
PAGES = (ROOT / "README.md", DOCS / "getting_started.md")
LINKED = ("experiments", "traces", "workloads")
MARKER = re.compile(r"^<!-- gen_command_outputs(?::\s*(?P<opts>[^>]*?))?\s*-->\n```bash\n(?P<cmd>.*?)```\n\n```\n(?P<out>.*?)```\n", re.M | re.S)
WALL = re.compile(r"\(\d+(\.\d+)? s\)$", re.M)  # a sweep line's elapsed wall time
COLUMNS = "100"  # rich's table width, as a wide terminal prints it


def select(text: str, opts: str | None) -> str:
    """The lines of `text` that the marker's options keep, with '...' where lines are left out."""
    lines = text.rstrip("\n").split("\n")
    keep: list[int] = []
    for opt in (opts or "").split():
        key, _, value = opt.partition("=")
        if key == "head":
            keep += range(min(int(value), len(lines)))
        elif key == "tail":
            keep += range(max(0, len(lines) - int(value)), len(lines))
        elif key == "lines":
            for part in value.split(","):
                a, _, b = part.partition("-")
                lo = int(a) - 1
                hi = len(lines) if (_ and not b) else (int(b) if b else int(a))
                keep += range(lo, min(hi, len(lines)))
        else:
            raise SystemExit(f"gen_command_outputs: unknown option {opt!r} (expected head=N, tail=N or lines=A-B,...)")
    if not opts:
        return "\n".join(lines) + "\n"
    out, last = [], -1
    for i in sorted(set(keep)):
        if i != last + 1:
            out.append("...")
        out.append(lines[i])
        last = i
    if last != len(lines) - 1:
        out.append("...")
    return "\n".join(out) + "\n"


def run(cmd: str, cwd: Path) -> str:
    """stdout and stderr of the command, as a user's terminal shows them (stderr lines first for a sweep)."""
    env = {**os.environ, "COLUMNS": COLUMNS, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("RLHF_SIM_RESULTS", None)
    cmd = re.sub(r"^python\b", sys.executable, cmd.strip(), flags=re.M)
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return "\n".join(line.rstrip() for line in (proc.stderr + proc.stdout).split("\n"))


def render(page: Path, scratch: Path) -> str:
    """The page with every marked command's output regenerated (wall-clock figures kept as they were)."""
    text = page.read_text()

    def one(m: re.Match[str]) -> str:
        new = select(run(m["cmd"], scratch), m["opts"])
        old_walls = iter(w.group(0) for w in WALL.finditer(m["out"]))
        new = WALL.sub(lambda w: next(old_walls, w.group(0)), new)
        return m.group(0)[: m.start("out") - m.start(0)] + new + "```\n"

    return MARKER.sub(one, text)


def generate() -> dict[Path, str]:
    """Every page's regenerated text, each page's commands run in order in its own scratch folder."""
    pages = {}
    for page in PAGES:
        with tempfile.TemporaryDirectory(prefix="gen_command_outputs_") as tmp:
            scratch = Path(tmp)
            for name in LINKED:
                (scratch / name).symlink_to(ROOT / name)
            pages[page] = render(page, scratch)
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a page's outputs are out of date; write nothing")
    args = ap.parse_args(argv)
    stale = []
    for page, new in generate().items():
        old = page.read_text()
        if WALL.sub("", new) != WALL.sub("", old):
            stale.append(page)
            if not args.check:
                page.write_text(new)
    for page in stale:
        print(f"{page.relative_to(ROOT)}: {'out of date' if args.check else 'rewritten'}")
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    raise SystemExit(main())
