"""Schedulers: the policy half of the simulator. See base.py for the interface and docs/schedulers.md."""

from sim.schedulers.base import Scheduler, available, register

__all__ = ["Scheduler", "available", "register"]
