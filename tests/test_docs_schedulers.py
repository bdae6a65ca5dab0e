"""docs/schedulers.md's parameter tables come from each built-in scheduler's Params (docs/gen_scheduler_docs.py,
whose --check tests/test_docs_tables.py runs): every built-in's Params has a table, every field is in it, and
every field says what it means."""

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


def test_every_builtin_params_model_has_a_table(gen):
    from sim.schedulers.registry import BUILTIN_MODULES, lookup

    assert {lookup(n).Params for n in BUILTIN_MODULES} == {lookup(n).Params for n in gen.DOCUMENTED}


@pytest.mark.parametrize("name", ["verl", "rlhfuse", "serverless", "rlhfless"])
def test_every_builtin_parameter_is_in_its_table_with_a_description(gen, name):
    from sim.schedulers.registry import lookup

    rows = gen.table(name).splitlines()[2:]  # header, rule, rows
    params = lookup(name).Params
    keys = [row.split("|")[1].strip().split()[0].strip("`") for row in rows]
    assert keys == [f.alias or n for n, f in params.model_fields.items()]
    assert all(row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows), "a parameter has no description"
    page = (DOCS / "schedulers.md").read_text()
    assert f"<!-- BEGIN gen_scheduler_docs: {name} -->\n{gen.table(name)}<!-- END gen_scheduler_docs: {name} -->" in page
