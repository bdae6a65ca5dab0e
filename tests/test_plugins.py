"""Third-party schedulers through the `sim.schedulers` entry-point group (design.md section 5).

Installs the example plug-in `examples/plugin_scheduler` (if it is not installed yet) into the running
environment and checks what a plug-in author relies on. The plug-in is listed by `available()`. An
experiment selects it by name and runs through the CLI. Its parameters are validated, with errors naming
`scheduler.params.X`. An unknown name lists the plug-in among the available schedulers. The tutorial in
docs/schedulers.md shows the shipped files exactly.
"""

from __future__ import annotations

import csv
import importlib
import importlib.metadata
import json
import re
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "examples" / "plugin_scheduler"
EXPERIMENT = "examples/plugin_scheduler/experiment.yaml"
DISTRIBUTION = "rlhf-sim-half-cluster"
MODULE = "rlhf_sim_half_cluster"
NAME = "half_cluster"
BUILTINS = ("oracle", "rlhfless", "rlhfuse", "serverless", "verl")


def _installed() -> bool:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(ep.group == "sim.schedulers" and ep.name == NAME for ep in dist.entry_points)


def _pip_install(*flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *flags, "-e", str(PLUGIN_DIR)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def plugin_installed() -> None:
    """Install the example plug-in (editable) unless it already is; offline first, then with build isolation."""
    if not _installed():
        proc = _pip_install("--no-build-isolation")  # needs setuptools >= 70.1 here, no network
        if proc.returncode != 0:
            proc = _pip_install()  # pip fetches the build backend into an isolated environment
        assert proc.returncode == 0, f"could not install {PLUGIN_DIR}:\n{proc.stdout}\n{proc.stderr}"
        # this interpreter started before the install: read the new .pth file (editable finder) now
        importlib.invalidate_caches()
        site.addsitedir(sysconfig.get_paths()["purelib"])
    assert _installed()


# ------------------------------------------------------------------------------------ discovery


def test_plugin_is_available_by_name() -> None:
    from sim.schedulers.base import Scheduler, available

    found = available()
    assert set(BUILTINS) <= set(found)
    cls = found[NAME]
    assert not hasattr(cls, "error"), getattr(cls, "error", "")  # loaded, not a broken placeholder
    assert issubclass(cls, Scheduler)
    assert cls.name == NAME and cls.deployment == "serverless"
    assert cls.__module__ == MODULE


def test_lookup_is_available_without_scanning_for_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    """lookup(name) gives what available() gives; a built-in name is found without reading any package metadata."""
    from sim.schedulers import base

    found = base.available()
    assert base.lookup(NAME) is found[NAME]  # a plug-in: found through the entry points
    assert base.lookup("no-such-scheduler") is None

    def no_scan(**_kw: object) -> None:
        raise AssertionError("entry points scanned for a built-in scheduler")

    monkeypatch.setattr(base.metadata, "entry_points", no_scan)
    for name in BUILTINS:
        assert base.lookup(name) is found[name]


def test_builtin_modules_list_every_builtin_scheduler() -> None:
    """lookup imports only BUILTIN_MODULES[name]: the table must name every scheduler the package registers."""
    import importlib
    import pkgutil

    import sim.schedulers
    from sim.schedulers import base

    for mod in pkgutil.iter_modules(sim.schedulers.__path__):
        importlib.import_module(f"sim.schedulers.{mod.name}")
    registered = {name: cls.__module__ for name, cls in base._REGISTRY.items() if cls.__module__.startswith("sim.schedulers.")}
    assert registered == base.BUILTIN_MODULES
    assert [n for n in base.available() if n in registered] == list(base.BUILTIN_MODULES)  # the order available() lists


def test_plugin_module_is_under_50_lines() -> None:
    assert len((PLUGIN_DIR / f"{MODULE}.py").read_text().splitlines()) < 50


# ------------------------------------------------------------------------------------ the CLI


def test_experiment_runs_with_the_plugin(tmp_path: Path) -> None:
    proc = run_cli(EXPERIMENT, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{NAME} (serverless)" in proc.stdout  # the summary table's column
    run_dir = tmp_path / "plugin_half_cluster" / NAME
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["scheduler"] == NAME and summary["run_id"] == NAME
    assert summary["deployment"] == "serverless"
    assert "serverless" in summary["compare"]
    # the policy took effect: rollout ran on half of the 8 GPUs (the baseline used all 8)
    with (run_dir / "activities.csv").open(newline="") as fh:
        rollout_gpus = {row["slots"] for row in csv.DictReader(fh) if row["role"] == "rollout"}
    assert len(rollout_gpus) == 4


def test_bad_plugin_param_exits_2_naming_the_field(tmp_path: Path) -> None:
    proc = run_cli(EXPERIMENT, "--out", tmp_path, "--set", "scheduler.params.rollout_fraction=1.5")
    assert proc.returncode == 2, proc.stderr
    assert f"{EXPERIMENT}: scheduler.params.rollout_fraction:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "plugin_half_cluster").exists()  # refused before any run


def test_unknown_plugin_param_key_exits_2(tmp_path: Path) -> None:
    proc = run_cli(EXPERIMENT, "--out", tmp_path, "--set", "scheduler.params.rolout_fraction=0.3")
    assert proc.returncode == 2, proc.stderr
    assert "scheduler.params.rolout_fraction" in proc.stderr and "rollout_fraction" in proc.stderr


def test_unknown_scheduler_lists_available_ones(tmp_path: Path) -> None:
    proc = run_cli(EXPERIMENT, "--out", tmp_path, "--set", "scheduler.name=no_such_scheduler")
    assert proc.returncode == 2, proc.stderr
    assert "scheduler.name: unknown scheduler 'no_such_scheduler'" in proc.stderr
    listed = proc.stderr.split("available:", 1)[1].strip().split(", ")
    assert set(listed) >= {NAME, *BUILTINS}
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------ the docs


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```$", markdown, flags=re.M | re.S)


@pytest.mark.parametrize("name", [f"{MODULE}.py", "setup.cfg", "pyproject.toml", "experiment.yaml"])
def test_tutorial_shows_the_shipped_file(name: str) -> None:
    blocks = code_blocks((ROOT / "docs" / "schedulers.md").read_text())
    assert (PLUGIN_DIR / name).read_text() in blocks, f"docs/schedulers.md has no code block equal to {name}"
