"""Reading YAML input (experiment files, catalogs, `--set` values): strict about repeated keys, fast where it counts.

A YAML mapping must not repeat a key (YAML 1.2, section 3.2.1.1), but PyYAML keeps the last of two
equal keys without a word, so a setting the user wrote is silently lost. `load` refuses it, naming the
key and where both occurrences are. `fast=True` parses with the C loader (libyaml) when PyYAML has one:
the catalog files are long and read on every run. The C loader gives the same Python objects (the
constructor and resolver are PyYAML's own either way); when it reports an error, the text is read again
with the pure-Python loader, so that error messages are the same with or without libyaml.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode

from sim.errors import BadInput

MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(BadInput):
    """A text that is not valid YAML (or repeats a key); `where` locates the problem, `problem` says it."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None):
        self.problem, self.line, self.column = problem, line, column
        super().__init__(f"{self.where.strip() or 'YAML'}: {problem}")

    @property
    def where(self) -> str:
        """' at line L, column C' (1-based), or '' when the parser gave no position."""
        return f" at line {self.line}, column {self.column}" if self.line is not None else ""


class DuplicateKeyError(yaml.MarkedYAMLError):
    """Raised while constructing a mapping whose key was already seen in that mapping."""


class _StrictMappings:
    """Constructor mix-in: a mapping key that equals an earlier key of the same mapping is an error."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:  # `<<: *defaults` merges; its keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base constructor refuses it with its own message
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        "while constructing a mapping", first,
                        f"key {key!r} repeats the key at line {first.line + 1}, column {first.column + 1} of the same "
                        "mapping (YAML keeps only one of them: remove or rename one)",
                        key_node.start_mark,
                    )  # fmt: skip
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class StrictSafeLoader(_StrictMappings, yaml.SafeLoader):
    """yaml.SafeLoader that refuses repeated mapping keys."""


_C_LOADER = getattr(yaml, "CSafeLoader", None)
StrictCSafeLoader: type | None = type("StrictCSafeLoader", (_StrictMappings, _C_LOADER), {}) if _C_LOADER is not None else None


def load(text: str, *, fast: bool = False) -> Any:
    """Parse one YAML document strictly; raises YamlError. `fast`: the C loader when PyYAML has it."""
    loader = StrictCSafeLoader if fast and StrictCSafeLoader is not None else StrictSafeLoader
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        if loader is not StrictSafeLoader:  # the same message as without libyaml
            return load(text)
        raise _error(exc) from None


def _error(exc: yaml.YAMLError) -> YamlError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return YamlError(problem)
    return YamlError(problem, mark.line + 1, mark.column + 1)


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `top` laid over it: nested mappings merged key by key, anything else replaced
    (how presets, catalog `base:` entries and `by_model` overrides combine with what a user writes)."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
