"""One run's lifecycle: build -> wire and check -> run -> collect.

`simulate(cfg)` is a pure function of the config and its seed. `build` (sim/build.py) makes every
object complete, with one `numpy.random.Generator` from the seed split into independent streams for the
workload, the scheduler, the platform and dynamic sampling's group filter, so the same workload is drawn
whatever the scheduler (runs under `compare` see identical lengths and filter the same groups). Wiring
gives the scheduler its view of the run (sim/view.py); the phases check each plan as they carry it out
(sim/phases/). Running is one SimPy process: a serverful job's start-up, then the iterations in order.
Collecting turns the records into tables (sim/collect.py). No `compare`/`sweep` expansion here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from sim.build import Run, build, make_scheduler, resolve_gpu, resolve_model  # noqa: F401 (public names)
from sim.catalog import Catalog, load_catalog
from sim.collect import RunResult, collect, price_per_gpu_hour  # noqa: F401 (public names)
from sim.config import ExperimentConfig
from sim.errors import NotImplementedYet  # noqa: F401 (re-exported)
from sim.phases.iteration import run_iteration
from sim.phases.startup import run_startup
from sim.view import Views


def simulate(
    cfg: ExperimentConfig,
    base_dir: Path | str = ".",
    catalog: Catalog | None = None,
    run_id: str | None = None,
    on_iteration: Callable[[int], None] | None = None,
) -> RunResult:
    """Build, run and collect one experiment config; `on_iteration(i)` is called as iteration i ends."""
    run = build(cfg, Path(base_dir), catalog or load_catalog())
    views = Views(run.ctx)
    env = run.ctx.env
    env.run(until=env.process(drive(run, views, on_iteration)))
    return collect(run, run_id)


def drive(run: Run, views: Views, on_iteration: Callable[[int], None] | None) -> Iterator:
    """The job: a serverful start-up (models loaded, engines started), the iterations, the teardown."""
    ctx = run.ctx
    if ctx.platform is None:
        yield from run_startup(ctx)
    for i in range(ctx.cfg.iterations):
        yield from run_iteration(ctx, run.scheduler, run.workload, i, views)
        if on_iteration is not None:
            on_iteration(i)
    if ctx.platform is not None:
        ctx.platform.shutdown()  # the job is over: its functions are torn down, keep-alive or not
