"""The objects one run is made of, built complete before it starts: environment, config, models, cluster,
performance model, GPU leases and recorder.

Like desmod's environment, one `RunContext` is built per run (sim/simulation.py) and handed to the
phases; nothing here is global and nothing is attached to it later. Values that pass from one phase to
the next (a round's template tokens, the GPUs generation freed early) are arguments and return values
of the phases, not fields here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import simpy

from sim.catalog import GpuSpec, ModelSpec
from sim.config import ExperimentConfig
from sim.hardware.cluster import Cluster
from sim.perf.base import PerfModel
from sim.recipes import Recipe
from sim.recording import Recorder
from sim.resources.leases import ServerfulAllocator, ServerlessAllocator
from sim.resources.pool import GpuPool
from sim.resources.roles import RoleBook

if TYPE_CHECKING:
    from sim.resources.platform import ServerlessPlatform
    from sim.rollout.dynamic_sampling import DynamicSampler


@dataclass(frozen=True)
class RunContext:
    """Everything a phase reads about its run; the fields are fixed for the run (their objects keep state)."""

    env: simpy.Environment
    cfg: ExperimentConfig
    cluster: Cluster
    gpu: GpuSpec
    actor: ModelSpec
    critic: ModelSpec | None
    reference: ModelSpec | None  # None when the recipe has no KL term
    reward: ModelSpec | None
    perf: PerfModel
    pool: GpuPool
    recorder: Recorder
    deployment: str
    rng: np.random.Generator
    roles: RoleBook
    alloc: ServerfulAllocator | ServerlessAllocator
    recipe: Recipe  # which roles and phases run (sim/recipes.py)
    platform: ServerlessPlatform | None  # the serverless platform; None when serverful
    sampler: DynamicSampler | None  # dynamic sampling's rounds; None when the recipe samples once
