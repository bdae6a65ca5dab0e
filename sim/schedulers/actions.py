"""What a scheduler may do during generation: migrate samples, release a replica, scale out (frozen actions).

`on_generation_event` returns a list of these; the mechanism applies them in order at the named replica's
next step boundary and refuses impossible ones (SchedulerActionError). Left out: actions in other phases.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.schedulers.plans import ReplicaSpec


@dataclass(frozen=True)
class Migrate:
    """Move unfinished samples (all if `samples` is None) from one replica to another, with their KV."""

    src: int
    dst: int
    samples: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Release:
    """Stop a replica (it must be empty or emptied by Migrate actions returned before this one)."""

    replica: int


@dataclass(frozen=True)
class ScaleOut:
    """Start a new replica and give it these waiting samples (moved from their replicas' queues)."""

    replica: ReplicaSpec
    samples: tuple[int, ...] = ()


Action = Migrate | Release | ScaleOut
