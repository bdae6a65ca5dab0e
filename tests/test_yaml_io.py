"""sim/yaml_io.py: strict YAML reading (a mapping that repeats a key is refused) and the C loader's results."""

from __future__ import annotations

import pytest
import yaml

from sim import yaml_io
from sim.catalog import WORKLOADS_DIR

LOADERS = [False, True] if yaml_io.StrictCSafeLoader is not None else [False]


@pytest.mark.parametrize("fast", LOADERS)
@pytest.mark.parametrize(
    "text, key, first, second",
    [
        ("name: a\niterations: 3\nseed: 0\niterations: 7\n", "'iterations'", (2, 1), (4, 1)),
        ("workload:\n  dataset: gsm8k\n  algorithm: grpo\n  dataset: gpqa\n", "'dataset'", (2, 3), (4, 3)),
        ("x: {k: 1, j: 2, k: 3}\n", "'k'", (1, 5), (1, 17)),
        ("1: a\n1.0: b\n", "1.0", (1, 1), (2, 1)),  # equal keys of different spelling: a dict would keep one
    ],
)
def test_a_repeated_key_is_refused_with_both_places(fast: bool, text: str, key: str, first: tuple, second: tuple) -> None:
    with pytest.raises(yaml_io.YamlError) as info:
        yaml_io.load(text, fast=fast)
    err = info.value
    assert (err.line, err.column) == second
    assert f"key {key} repeats the key at line {first[0]}, column {first[1]}" in err.problem


@pytest.mark.parametrize("fast", LOADERS)
def test_merge_keys_may_be_overridden_and_equal_keys_in_different_mappings_are_fine(fast: bool) -> None:
    text = "base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  a: 5\ny: {a: 1}\n"
    assert yaml_io.load(text, fast=fast) == {"base": {"a": 1, "b": 2}, "x": {"a": 5, "b": 2}, "y": {"a": 1}}


@pytest.mark.parametrize("fast", LOADERS)
def test_syntax_errors_give_the_same_message_with_either_loader(fast: bool) -> None:
    with pytest.raises(yaml_io.YamlError) as info:
        yaml_io.load("name: x\nseed: [1, 2\niterations: 3\n", fast=fast)
    assert (info.value.line, info.value.column) == (3, 11)
    assert info.value.where == " at line 3, column 11"


@pytest.mark.skipif(yaml_io.StrictCSafeLoader is None, reason="PyYAML without libyaml")
@pytest.mark.parametrize("path", sorted(WORKLOADS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_the_c_loader_reads_every_catalog_file_as_the_python_loader_does(path) -> None:
    text = path.read_text()
    fast, slow, plain = yaml_io.load(text, fast=True), yaml_io.load(text), yaml.safe_load(text)
    assert repr(fast) == repr(slow) == repr(plain)  # same values, types and key order
