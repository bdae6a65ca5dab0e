"""A serverless function instance and a request for one: the records the platform's parts share.

An instance's `state` is one of `loading` (a cold start, a wake or a refresh of stale weights under way),
`busy` (computing), `idle` (resident, its keep-alive running), `asleep` (its state in host DRAM, no GPU
memory) and `released`. Its resident periods are what billing charges. Deliberately no decisions here:
placement is `sim.resources.residency`, loads are `sim.resources.starts`, pre-warms
`sim.resources.prewarm`, and the transitions themselves `sim.resources.platform`.
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

from sim.resources.roles import FunctionSpec
from sim.schedulers.views import Slot

STATES = ("loading", "busy", "idle", "asleep", "released")


class OnSlots:
    """Node and GPU count of something that holds `slots` (whole GPUs of one node)."""

    __slots__ = ()
    slots: tuple[Slot, ...]

    @property
    def node(self) -> int:
        return self.slots[0].node

    @property
    def gpus(self) -> int:
        return len(self.slots)


class Instance(OnSlots):
    """One function instance: a role's spec on GPUs of one node, with its resident periods."""

    __slots__ = (
        "instance_id", "spec", "slots", "state", "requested_s", "placed_s", "ready_s", "released_s", "cold_start",
        "tier", "load_s", "busy_s", "busy_since", "periods", "idle_since", "token", "on_crash", "crashed", "version",
        "wakes", "claimed", "reserved", "waiting", "work",
    )  # fmt: skip

    def __init__(self, instance_id: str, spec: FunctionSpec, slots: tuple[Slot, ...], requested_s: float, placed_s: float | None = None):
        self.instance_id, self.spec, self.slots = instance_id, spec, slots
        self.state = "loading"
        self.requested_s = requested_s
        self.placed_s = requested_s if placed_s is None else placed_s  # placed_s - requested_s: time queued
        self.ready_s = self.released_s = float("nan")
        self.cold_start = True
        self.tier = ""
        self.load_s = 0.0
        self.busy_s = 0.0
        self.busy_since: float | None = None
        self.periods: list[list] = []  # [slots, start, ready, end] per resident period (nan until known)
        self.idle_since = 0.0
        self.token = 0  # bumped at every idle period (keep-alive timers check it)
        self.on_crash = None
        self.crashed = False
        self.version = 0  # version of the trained weights it holds (spec.tracks)
        self.wakes = 0
        self.claimed = False  # requested for work: it computes once ready
        self.reserved = False  # chosen by a pre-warm for a later request
        self.waiting: Request | None = None  # the work request it will serve when ready
        self.work: list[tuple[float, float]] = []  # busy intervals (billing charges a shared GPU to its worker)

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def model(self) -> str:
        return self.spec.key

    def serves(self, spec: FunctionSpec) -> bool:
        """Whether this instance can serve a request of `spec`: same role, same key, same number of GPUs."""
        return self.spec.role == spec.role and self.spec.key == spec.key and self.gpus == spec.gpus


def same_function(a: FunctionSpec, b: FunctionSpec) -> bool:
    """Two requests for the same function (role, key and number of GPUs)."""
    return a.role == b.role and a.key == b.key and a.gpus == b.gpus


@dataclass
class Request:
    """A request for an instance of `spec`: work (`event` succeeds with the instance) or a pre-warm (`event` None).

    `node` and `slots` are preferences, not reservations; a pre-warm gives up at `deadline_s`.
    """

    event: simpy.Event | None  # None: a pre-warm
    spec: FunctionSpec
    node: int | None
    slots: tuple[Slot, ...]
    asked_s: float
    deadline_s: float = float("inf")

    @property
    def work(self) -> bool:
        return self.event is not None
