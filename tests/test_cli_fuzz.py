"""Random experiment documents through the command line: every one ends in exit 0 or a bad-input exit 2.

The documents are built on experiments/quickstart.yaml (shrunk, so that a valid one runs quickly): a few
settings a user may write (other schedulers and platforms, crashes, tiny KV caches, step mode, sweeps),
then values replaced by values of other types, keys added, removed and nested, and now and then the YAML
text itself damaged (a line repeated, indentation broken, the end cut off). An internal error (exit 1) or a traceback
is a bug: a user's mistake must get a message that names the file and the field.

Two tests: documents with only the user settings applied (`patched`) must mostly run (at least 90% exit 0;
the count is reported), so the paths behind a valid file get exercised; documents that are also mutated and
damaged (`documents`) explore bad input, where exit 2 is expected and only exit 1 or a traceback fails.
"""

from __future__ import annotations

import copy
from collections import Counter
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
BASE["iterations"] = 1
BASE["workload"].update(prompts_per_iteration=4, samples_per_prompt=2, max_response_tokens=256)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-(2**63), -1, 0, 1, 2, 3, 7, 16, 2**64]),
    st.sampled_from([-1.5, 0.0, 0.5, 1.5, 1e-9, 3.0, math.inf, -math.inf, math.nan]),
    st.sampled_from(["", "abc", "verl", "gsm8k", "L40S", "serverless", "qwen2.5-3b", "1e3", "-1", "../x", "a/b", "true"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "name", "nodes", "x"]), inner, max_size=3)), max_leaves=6)
keys = st.sampled_from(["name", "seed", "iterations", "model", "extra", "nodes", "dataset", "params", "kind", "tp", "preset", "sweep", "compare"])


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a nested mapping (lists included by index)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, prefix + (i,))
    return out


def parent_of(doc: Any, path: tuple) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


MIN_RAN_FRACTION = 0.9

# settings a user may well write: with them, many documents are valid and run (deeper paths get exercised)
PATCHES = st.sampled_from([
    ("platform", {"kind": "serverless"}), ("platform", {"preset": "self-hosted", "sleep_idle": True}),
    ("platform", {"preset": "runpod", "failures": {"mtbf_s": 5.0}}), ("scheduler", {"name": "rlhfless"}),
    ("scheduler", {"name": "rlhfuse"}), ("scheduler", {"name": "oracle", "params": {"stream_inference": True}}),
    ("scheduler", {"name": "serverless"}), ("engine", {"mode": "step"}), ("engine", {"max_num_seqs": 1}),
    ("engine", {"gpu_memory_utilization": 0.2}), ("engine", {"admission": "reserve_max"}), ("compare", ["serverless"]),
    ("cluster", {"nodes": 2, "gpus_per_node": 2, "gpu": "H100-SXM"}), ("model", "qwen2.5-0.5b"), [("model", "mixtral-8x7b"), ("training", {"offload": True})],
    ("workload", {"dataset": "livecodebench", "algorithm": "ppo", "prompts_per_iteration": 2, "samples_per_prompt": 1}),
    ("workload", {"dataset": "gsm8k", "prompts_per_iteration": 3, "samples_per_prompt": 3, "max_response_tokens": 1}),
    ("training", {"offload": True}), ("sweep", {"cluster.nodes": [1, 2]}), ("iterations", 2),
])  # fmt: skip


def apply_patches(draw: st.DrawFn) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    for _ in range(draw(st.integers(0, 2))):
        patch = copy.deepcopy(draw(PATCHES))
        for key, value in patch if isinstance(patch, list) else [patch]:  # a list: settings that go together
            doc[key] = dict(doc[key], **value) if isinstance(value, dict) and isinstance(doc.get(key), dict) else value
    return doc


@st.composite
def patched(draw: st.DrawFn) -> str:
    """A document a user may write: the base with up to two of PATCHES, nothing mutated or damaged."""
    return yaml.safe_dump(apply_patches(draw), sort_keys=False)


@st.composite
def documents(draw: st.DrawFn) -> str:
    doc = apply_patches(draw)
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.sampled_from(paths(doc)))
        parent = parent_of(doc, where)
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "nest"]))
        if action == "replace":
            parent[where[-1]] = draw(values)
        elif action == "delete":
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
        elif action == "nest":
            parent[where[-1]] = {draw(keys): parent[where[-1]]}
        if not paths(doc):
            break
    text = yaml.safe_dump(doc, sort_keys=False)
    damage = draw(st.sampled_from(["none", "none", "none", "repeat-line", "indent", "truncate"]))
    lines = text.splitlines()
    if damage != "none" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        if damage == "repeat-line":
            lines.insert(i, lines[i])
        elif damage == "indent":
            lines[i] = "   " + lines[i]
        else:
            lines = lines[: i + 1]
            lines[i] = lines[i][: max(1, len(lines[i]) // 2)]
    return "\n".join(lines) + "\n"


def run_document(text: str, capsys: pytest.CaptureFixture[str]) -> int:
    """Run one document through the CLI; exit 0 or a bad-input exit 2 with a message naming the file, else fail."""
    from sim.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text)
        code = main([str(path), "--out", str(Path(tmp) / "out"), "--quiet", "--workers", "1"])
    captured = capsys.readouterr()
    assert code in (0, 2), (code, captured.err, text)
    assert "Traceback" not in captured.err and "internal error" not in captured.err, (captured.err, text)
    if code == 2:
        assert captured.err.startswith(f"error: {path}: "), (captured.err, text)
    return code


def summary_line(codes: Counter[int]) -> str:
    total = sum(codes.values())
    return f"{codes[0]} of {total} generated documents ran (exit 0, {codes[0] / max(total, 1):.0%}); refused (exit 2): {codes[2]}"


def fuzz(strategy: st.SearchStrategy[str], examples: int, capsys: pytest.CaptureFixture[str], record_property: pytest.RecordProperty) -> tuple[Counter[int], str]:
    """Run `examples` generated documents through the CLI (each must exit 0 or 2, see run_document); their exit
    codes, and a line saying how many ran, which the test report records and prints."""
    codes: Counter[int] = Counter()

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(strategy)
    def run(text: str) -> None:
        codes[run_document(text, capsys)] += 1

    run()
    line = summary_line(codes)
    record_property("fuzz_exit_codes", dict(codes))
    with capsys.disabled():
        print(f"\n{line}")
    return codes, line


def test_documents_a_user_may_write_mostly_run(capsys: pytest.CaptureFixture[str], record_property: pytest.RecordProperty) -> None:
    codes, line = fuzz(patched(), 40, capsys, record_property)
    assert codes[0] >= MIN_RAN_FRACTION * sum(codes.values()), line


def test_random_documents_exit_0_or_2_without_a_traceback(capsys: pytest.CaptureFixture[str], record_property: pytest.RecordProperty) -> None:
    codes, line = fuzz(documents(), 70, capsys, record_property)
    assert codes[2] > 0, f"the mutations no longer reach a bad input: {line}"
