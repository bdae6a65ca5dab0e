"""Generate the built-in schedulers' parameter tables in docs/schedulers.md from their `Params` models.

Each table is a block between `<!-- BEGIN gen_scheduler_docs: NAME -->` and `<!-- END gen_scheduler_docs: NAME -->`
(docs/doc_blocks.py) and lists every field of scheduler NAME's `Params`: its key (and alias), type, default,
bounds, and description (`Field(description=...)`, else the comment right above the field), in the format of
docs/experiment.md. The prose around the tables is hand-written. `oracle` shares `rlhfless`'s Params.

    .venv/bin/python docs/gen_scheduler_docs.py           # rewrite the tables
    .venv/bin/python docs/gen_scheduler_docs.py --check   # exit 1 if any is out of date

tests/test_docs_tables.py runs the check, so a change to a built-in's Params that is not regenerated fails.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import ROOT, main  # noqa: E402

from sim.schedulers.registry import lookup  # noqa: E402

PAGE = ROOT / "docs" / "schedulers.md"
DOCUMENTED = ("verl", "rlhfuse", "serverless", "rlhfless")  # every built-in Params once (oracle: rlhfless's)


def _formatting():
    """docs/gen_experiment_docs.py's field table: one format for every generated parameter table."""
    spec = importlib.util.spec_from_file_location("gen_experiment_docs", ROOT / "docs" / "gen_experiment_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(name: str) -> str:
    """The parameter table of built-in scheduler `name`."""
    params = lookup(name).Params
    rows = _formatting().field_rows(params, "scheduler.params.") if params.model_fields else ["No parameters."]
    return "\n".join(rows) + "\n"


BLOCKS = {name: (lambda name=name: table(name)) for name in DOCUMENTED}

if __name__ == "__main__":
    raise SystemExit(main(__file__, {PAGE: BLOCKS}, doc=__doc__))
