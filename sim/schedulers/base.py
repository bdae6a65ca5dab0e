"""The scheduler interface (design.md section 5): snapshots in, decisions out, as plain data.

A scheduler never touches SimPy objects. It reads a `ClusterView` and the work at hand (views.py) and
returns plans (plans.py) and actions (actions.py); the mechanism (`sim/rollout/phase.py`,
`sim/phases/iteration.py`) carries them out and checks them. `Scheduler[P]` is generic in its parameters,
a `SchedulerParams` model that refuses unknown keys. Built-ins register with `@register`; third-party
ones through the `sim.schedulers` entry-point group (registry.py).

Every public name of the surface stays importable from here (plug-ins import from `sim.schedulers.base`);
inside `sim/`, code imports from the defining module.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict

from sim.errors import PlanError
from sim.schedulers.actions import Action, Migrate, Release, ScaleOut
from sim.schedulers.plans import GenerationPlan, InferencePlan, Prewarm, ReplicaSpec, RolePlan, TrainingPlan
from sim.schedulers.views import (
    ClusterView,
    GenerationProgress,
    InferenceWork,
    IterationStats,
    ProgressDetail,
    RolloutBatch,
    Slot,
    StartCost,
    TrainingWork,
)


class SchedulerParams(BaseModel):
    """Base class of a scheduler's parameters: unknown keys refused, immutable, no inf/nan; aliases or names.

    Give every field a default (a `compare` run uses the defaults) and a `Field(description=...)` or a
    comment right above it: docs/gen_scheduler_docs.py builds each built-in's parameter table from them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class NoParams(SchedulerParams):
    """A scheduler without parameters (`scheduler.params` must then be empty)."""


P = TypeVar("P", bound=BaseModel)


class Scheduler(Generic[P]):
    """Base class: subclass `Scheduler[YourParams]`, set `name` and `deployment`, and override the plan methods.

    `Params` is taken from the type argument when the class does not set it; `self.params` is then typed.
    """

    name: ClassVar[str] = ""
    #: "serverful" (every GPU billed for the whole run), "serverless", or "either" (platform.kind decides)
    deployment: ClassVar[Literal["serverful", "serverless", "either"]] = "either"
    Params: ClassVar[type[BaseModel]] = NoParams
    #: schedulers that set this see the true response lengths in RolloutBatch (upper-bound baselines)
    oracle: ClassVar[bool] = False
    #: set False to skip on_generation_event calls (saves work on the engine's hot path)
    observes_generation: ClassVar[bool] = True

    def __init__(self, params: P, rng: np.random.Generator):
        self.params: P = params
        self.rng = rng

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = _params_argument(cls)
        if declared is None:
            return
        if "Params" not in cls.__dict__:
            cls.Params = declared
        elif not (isinstance(cls.Params, type) and issubclass(cls.Params, declared)):
            raise TypeError(f"{cls.__qualname__}.Params must be {declared.__name__} (its Scheduler[...] argument) or a subclass")

    def plan_generation(self, view: ClusterView, batch: RolloutBatch) -> GenerationPlan:
        raise NotImplementedError

    def on_generation_event(self, view: ClusterView, progress: GenerationProgress) -> list[Action]:
        return []

    def plan_inference(self, view: ClusterView, work: InferenceWork) -> InferencePlan:
        raise NotImplementedError

    def plan_training(self, view: ClusterView, work: TrainingWork) -> TrainingPlan:
        raise NotImplementedError

    def on_iteration_end(self, stats: IterationStats) -> None:
        return None


def _params_argument(cls: type) -> type[BaseModel] | None:
    """X of a direct `Scheduler[X]` base of `cls`, when X is a pydantic model (not a type variable)."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        if get_origin(base) is Scheduler:
            (arg,) = get_args(base)
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


# the registry and the testing helpers import this module; re-export the registry last (no cycle)
from sim.schedulers.registry import BUILTIN_MODULES, ENTRY_POINT_GROUP, BrokenPlugin, PluginError, available, broken, lookup, register  # noqa: E402
from sim.schedulers.registry import _REGISTRY  # noqa: E402,F401 (tests of other modules register schedulers here)

__all__ = [
    "Action", "BUILTIN_MODULES", "BrokenPlugin", "ClusterView", "ENTRY_POINT_GROUP", "GenerationPlan", "GenerationProgress",
    "InferencePlan", "InferenceWork", "IterationStats", "Migrate", "NoParams", "PlanError", "PluginError", "Prewarm", "ProgressDetail",
    "Release", "ReplicaSpec", "RolePlan", "RolloutBatch", "ScaleOut", "Scheduler", "SchedulerParams", "Slot", "StartCost",
    "TrainingPlan", "TrainingWork", "available", "broken", "lookup", "register",
]  # fmt: skip
