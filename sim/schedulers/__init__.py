"""Schedulers: the policy half of the simulator. base.py is the interface (every public name importable from
there), views/plans/actions the data it reads and returns, registry.py the names, testing.py the builders
for unit tests; docs/schedulers.md explains each and has the plug-in tutorial."""

from sim.schedulers.base import Scheduler, SchedulerParams, available, register

__all__ = ["Scheduler", "SchedulerParams", "available", "register"]
