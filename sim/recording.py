"""What a run records as it goes: busy intervals of GPUs (`Activity`), phase windows and counters (`Recorder`).

The recorder only appends plain tuples and numbers; tables are built after the run (sim/metrics.py). It
holds no simulation state: the run's objects are in sim/context.py (`RunContext`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.schedulers.views import Slot


@dataclass
class Activity:
    """GPUs busy with one piece of work (wall interval)."""

    iteration: int
    phase: str
    role: str
    slots: tuple[Slot, ...]
    start_s: float
    end_s: float
    owner: str = ""  # the function instance that did it (serverless); "" on serverful GPUs


@dataclass
class Recorder:
    activities: list[Activity] = field(default_factory=list)
    windows: list[tuple[int, str, float, float]] = field(default_factory=list)  # iteration, phase, start, end
    counters: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)  # (iteration, phase) -> counts
    completion_s: list[np.ndarray] = field(default_factory=list)  # per iteration: finish time of each sample
    generated: list[np.ndarray] = field(default_factory=list)  # per iteration: tokens generated per sample
    engine_events: int = 0

    def busy(self, iteration: int, phase: str, role: str, slots: tuple[Slot, ...], start_s: float, end_s: float, owner: str = "") -> None:
        if end_s > start_s:
            self.activities.append(Activity(iteration, phase, role, slots, start_s, end_s, owner))

    def count(self, iteration: int, phase: str, **values: float) -> None:
        row = self.counters.setdefault((iteration, phase), {})
        for k, v in values.items():
            row[k] = row.get(k, 0.0) + v
