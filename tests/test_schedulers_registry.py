"""Third-party schedulers through the `sim.schedulers` entry-point group (design.md section 5).

Installs the example plug-in `examples/plugin_scheduler` (if it is not installed yet) into the running
environment and checks what a plug-in author relies on. The plug-in is listed by `available()`. An
experiment selects it by name and runs through the CLI. Its parameters are validated, with errors naming
`scheduler.params.X`. An unknown name lists the plug-in among the available schedulers. The tutorial in
docs/schedulers.md shows the shipped files exactly.
"""

from __future__ import annotations

import csv
import os
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
    from sim.schedulers.base import Scheduler, available, broken

    found = available()
    assert set(BUILTINS) <= set(found)
    assert NAME not in broken(), broken()
    cls = found[NAME]
    assert issubclass(cls, Scheduler)
    assert cls.name == NAME and cls.deployment == "serverless"
    assert cls.__module__ == MODULE


def test_lookup_is_available_without_scanning_for_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    """lookup(name) gives what available() gives; a built-in name is found without reading any package metadata."""
    from sim.schedulers import registry

    found = registry.available()
    assert registry.lookup(NAME) is found[NAME]  # a plug-in: found through the entry points
    assert registry.lookup("no-such-scheduler") is None

    def no_scan(**_kw: object) -> None:
        raise AssertionError("entry points scanned for a built-in scheduler")

    monkeypatch.setattr(registry.metadata, "entry_points", no_scan)
    for name in BUILTINS:
        assert registry.lookup(name) is found[name]


def test_builtin_modules_list_every_builtin_scheduler() -> None:
    """lookup imports only BUILTIN_MODULES[name]: the table must name every scheduler the package registers."""
    import importlib
    import pkgutil

    import sim.schedulers
    from sim.schedulers import registry

    for mod in pkgutil.iter_modules(sim.schedulers.__path__):
        importlib.import_module(f"sim.schedulers.{mod.name}")
    registered = {name: cls.__module__ for name, cls in registry._REGISTRY.items() if cls.__module__.startswith("sim.schedulers.")}
    assert registered == registry.BUILTIN_MODULES
    assert [n for n in registry.available() if n in registered] == list(registry.BUILTIN_MODULES)  # the order available() lists


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


@pytest.mark.parametrize("name", [f"{MODULE}.py", f"test_{MODULE}.py", "setup.cfg", "pyproject.toml", "experiment.yaml"])
def test_tutorial_shows_the_shipped_file(name: str) -> None:
    blocks = code_blocks((ROOT / "docs" / "schedulers.md").read_text())
    assert (PLUGIN_DIR / name).read_text() in blocks, f"docs/schedulers.md has no code block equal to {name}"


# ------------------------------------------------------------------------------------ broken plug-ins
# Each case is a real distribution on sys.path (a module plus a .dist-info with its entry point), found
# through importlib.metadata as an installed plug-in is, in a child process so this one's registry is untouched.
GOOD_PARAMS = '''
from pydantic import Field
from sim.schedulers.base import SchedulerParams, Scheduler
from sim.schedulers.serverless import Serverless
from sim.errors import PlanError

class FakeParams(SchedulerParams):  # takes the example experiment's params, plus its own
    rollout_fraction: float = 0.5
    tp: int = 1
    gpus: int = Field(1, ge=1)
'''
BROKEN = {
    "import_fails": ("broken_plug:Fake", "raise ImportError('no module named torch_nightly')", "importing it failed: ImportError: no module named torch_nightly"),
    "not_a_scheduler": ("broken_plug:Fake", "class Fake:\n    name = 'not_a_scheduler'", "is not a subclass of sim.schedulers.base.Scheduler"),
    "name_mismatch": ("broken_plug:Fake", GOOD_PARAMS + "class Fake(Serverless):\n    name = 'fake'",
                      "its entry-point name 'name_mismatch' differs from Fake.name 'fake'; make them equal"),
    "lax_params": ("broken_plug:Fake", "from pydantic import BaseModel\nfrom sim.schedulers.serverless import Serverless\n"
                   "class Lax(BaseModel):\n    gpus: int = 1\nclass Fake(Serverless):\n    name = 'lax_params'\n    Params = Lax",
                   "Fake.Params must refuse unknown keys"),
    "params_not_a_model": ("broken_plug:Fake", "from sim.schedulers.serverless import Serverless\n"
                           "class Fake(Serverless):\n    name = 'params_not_a_model'\n    Params = dict",
                           "Fake.Params must be a pydantic model"),
}  # fmt: skip


def fake_distribution(root: Path, name: str, target: str, source: str) -> Path:
    """A plug-in distribution in `root`: `broken_plug.py` and its entry point `name = target`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "broken_plug.py").write_text(source + "\n")
    info = root / "broken_plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sim.schedulers]\n{name} = {target}\n")
    return root


def cli_with(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "true", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "sim.run", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_plugin_is_reported_with_its_reason_and_breaks_nothing_else(tmp_path: Path, name: str) -> None:
    target, source, reason = BROKEN[name]
    root = fake_distribution(tmp_path / "site", name, target, source)
    probe = ("from sim.schedulers.base import available, broken; b = broken(); import json; "
             "print(json.dumps({'broken': {k: v.message for k, v in b.items()}, 'available': sorted(available())}))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout)
    assert reason in out["broken"][name]
    assert name not in out["available"] and set(BUILTINS) <= set(out["available"])  # the others still load
    # selecting it: exit 2, one line that names the field and gives the reason, no traceback, nothing run
    proc = cli_with(root, EXPERIMENT, "--out", str(tmp_path / "out"), "--set", f"scheduler.name={name}")
    assert proc.returncode == 2, proc.stderr
    assert f"{EXPERIMENT}: scheduler.name: plug-in {name!r} (broken_plug:Fake) cannot be used: " in proc.stderr
    assert reason in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


PLAN_ERRORS = GOOD_PARAMS + '''
class Fake(Scheduler[FakeParams]):
    name = "{name}"
    deployment = "serverless"

    def plan_generation(self, view, batch):
        raise {error}(f"scheduler.params.gpus: {{self.params.gpus}} GPUs asked; the cluster has {{view.nodes * view.gpus_per_node}}")
'''


@pytest.mark.parametrize("error, status", [("PlanError", 2), ("ValueError", 1)])
def test_a_plugin_raising_plan_error_is_bad_input_and_a_bare_value_error_is_internal(tmp_path: Path, error: str, status: int) -> None:
    """PlanError (a BadInput): exit 2, one line. A bare ValueError may be a bug in the plug-in: exit 1 with the traceback."""
    name = f"raises_{error.lower()}"
    root = fake_distribution(tmp_path / "site", name, "broken_plug:Fake", PLAN_ERRORS.format(name=name, error=error))
    proc = cli_with(root, EXPERIMENT, "--out", str(tmp_path / "out"), "--set", f"scheduler.name={name}", "--set", "scheduler.params.gpus=99")
    assert proc.returncode == status, proc.stderr
    assert "scheduler.params.gpus: 99 GPUs asked; the cluster has 8" in proc.stderr
    assert ("Traceback" in proc.stderr) == (status == 1)


def test_register_refuses_a_class_that_could_not_run() -> None:
    from pydantic import BaseModel

    from sim.schedulers.base import PluginError, Scheduler, register

    class Nameless(Scheduler):
        pass

    class Lax(BaseModel):
        x: int = 1

    class LaxParams(Scheduler):
        name = "lax"
        Params = Lax

    with pytest.raises(PluginError, match="has no `name`"):
        register(Nameless)
    with pytest.raises(PluginError, match="must refuse unknown keys"):
        register(LaxParams)


def test_params_come_from_the_type_argument_and_must_agree_with_it() -> None:
    from pydantic import Field

    from sim.schedulers.base import NoParams, Scheduler, SchedulerParams

    class A(SchedulerParams):
        x: int = Field(1, ge=1)

    class B(A):
        y: int = 2

    class Typed(Scheduler[A]):
        name = "typed"

    class Narrower(Scheduler[A]):
        name = "narrower"
        Params = B  # a subclass of the argument is allowed

    assert Typed.Params is A and Narrower.Params is B and Scheduler.Params is NoParams
    with pytest.raises(TypeError, match="must be A"):

        class Wrong(Scheduler[A]):  # noqa: F841
            Params = NoParams

    with pytest.raises(Exception, match="Extra inputs are not permitted"):
        A.model_validate({"x": 1, "z": 0})  # the strict base refuses unknown keys
