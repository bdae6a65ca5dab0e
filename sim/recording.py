"""The state one run carries: SimPy environment, config, cluster, performance model, GPU pool and recorder.

Like desmod's environment, this object is built once per run and handed to the model code; nothing
here is global. The recorder only appends plain tuples; tables are built after the run (metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from sim.catalog import GpuSpec, ModelSpec
from sim.errors import DoubleBookingError  # noqa: F401 (re-exported)
from sim.hardware.cluster import Cluster
from sim.config import ExperimentConfig
from sim.recipes import Recipe
from sim.resources.roles import RoleBook
from sim.schedulers.base import Slot


class GpuPool:
    """Which work holds each GPU now; refuses double booking."""

    def __init__(self, slots: list[Slot]):
        self.holder: dict[Slot, str | None] = {s: None for s in slots}
        self._free: tuple[Slot, ...] | None = None

    def acquire(self, slots: tuple[Slot, ...], who: str) -> None:
        for s in slots:
            if s not in self.holder:
                raise DoubleBookingError(f"{who}: GPU {s} does not exist in this cluster")
            if self.holder[s] is not None:
                raise DoubleBookingError(f"{who}: GPU n{s.node}g{s.gpu} is already held by {self.holder[s]}")
        if len(set(slots)) != len(slots):
            raise DoubleBookingError(f"{who}: the same GPU is listed twice")
        for s in slots:
            self.holder[s] = who
        self._free = None

    def release(self, slots: tuple[Slot, ...]) -> None:
        for s in slots:
            self.holder[s] = None
        self._free = None

    def free(self) -> tuple[Slot, ...]:
        if self._free is None:
            self._free = tuple(s for s, h in self.holder.items() if h is None)
        return self._free


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


@dataclass
class RunContext:
    env: simpy.Environment
    cfg: ExperimentConfig
    cluster: Cluster
    gpu: GpuSpec
    actor: ModelSpec
    critic: ModelSpec | None
    reference: ModelSpec | None  # None when the recipe has no KL term
    reward: ModelSpec | None
    perf: Any
    pool: GpuPool
    recorder: Recorder
    deployment: str
    rng: np.random.Generator
    roles: RoleBook
    alloc: Any  # sim.resources.leases.ServerfulAllocator or ServerlessAllocator
    recipe: Recipe  # which roles and phases run (sim/recipes.py)
    platform: Any = None  # sim.resources.platform.ServerlessPlatform when serverless
    sampler: Any = None  # sim.rollout.dynamic_sampling.DynamicSampler when the recipe samples dynamically
    extras: dict[str, Any] = field(default_factory=dict)
