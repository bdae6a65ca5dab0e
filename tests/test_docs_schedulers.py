"""docs/schedulers.md's parameter tables are generated from each built-in scheduler's Params
(docs/gen_scheduler_docs.py); they must match the code, and every field must say what it means."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_scheduler_docs", DOCS / "gen_scheduler_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scheduler_parameter_tables_are_up_to_date(gen):
    assert gen.main(["--check"]) == 0, "docs/schedulers.md is stale: run .venv/bin/python docs/gen_scheduler_docs.py"


@pytest.mark.parametrize("name", ["verl", "rlhfuse", "serverless", "rlhfless"])
def test_every_builtin_parameter_is_in_its_table_with_a_description(gen, name):
    from sim.schedulers.registry import lookup

    rows = gen.table(name).splitlines()[3:-1]  # marker, header, rule ... marker
    params = lookup(name).Params
    keys = [row.split("|")[1].strip().split()[0].strip("`") for row in rows]
    assert keys == [f.alias or n for n, f in params.model_fields.items()]
    assert all(row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows), "a parameter has no description"


def test_a_stale_table_is_caught(gen):
    page = (DOCS / "schedulers.md").read_text()
    stale = page.replace("| `tau` |", "| `tau_old` |", 1)
    assert stale != page and gen.page_text(stale) == page
