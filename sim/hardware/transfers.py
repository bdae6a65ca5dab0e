"""Concurrent loads that share links: each link's bandwidth is split max-min fairly among the flows on it.

A flow moves bytes over a set of links, using `weight x rate` of each (a load onto g GPUs puts 1/g of its
bytes through each GPU's PCIe link). Rates are set by progressive filling (every unfrozen flow grows at
the same rate until a link saturates; the flows on it freeze) and recomputed whenever a flow starts or
ends, so a flow alone on its links gets their full bandwidth and concurrent flows share it. This is the
fluid model of processor sharing; per-packet effects, protocol overheads and pipelining between links
are not modelled. Used for cold starts and wakes (storage, network and host-to-GPU links); it is
touched once per load, never per decode step.
"""

from __future__ import annotations

from typing import Callable, Hashable

import simpy

_DONE_BYTES = 1e-3  # a flow within a millibyte of its end is done (float round-off of rate x time)


class _Flow:
    __slots__ = ("remaining", "usage", "event", "rate")

    def __init__(self, nbytes: float, usage: dict[Hashable, float], event: simpy.Event):
        self.remaining = nbytes
        self.usage = usage
        self.event = event
        self.rate = 0.0


class TransferPool:
    """Flows over shared links; `capacity(link)` gives a link's bandwidth in bytes/s."""

    def __init__(self, env: simpy.Environment, capacity: Callable[[Hashable], float]):
        self.env = env
        self.capacity = capacity
        self.flows: list[_Flow] = []
        self._last_s = 0.0
        self._token = 0

    def start(self, nbytes: float, usage: dict[Hashable, float]) -> simpy.Event:
        """An event that succeeds when `nbytes` have crossed every link in `usage` (link -> weight > 0)."""
        ev = self.env.event()
        if nbytes <= 0 or not usage:
            ev.succeed()
            return ev
        self._advance()
        self.flows.append(_Flow(float(nbytes), dict(usage), ev))
        self._reschedule()
        return ev

    def rate(self, usage: dict[Hashable, float]) -> float:
        """The rate a new flow over these links would get now (for estimates; changes nothing)."""
        probe = _Flow(1.0, dict(usage), None)  # type: ignore[arg-type]
        rates = self._fill(self.flows + [probe])
        return rates[-1]

    # ------------------------------------------------------------------ fluid model
    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last_s
        if dt > 0:
            for f in self.flows:
                f.remaining -= f.rate * dt
        self._last_s = now

    def _fill(self, flows: list[_Flow]) -> list[float]:
        """Max-min fair rates by progressive filling."""
        rates = [0.0] * len(flows)
        left: dict[Hashable, float] = {}
        for f in flows:
            for link in f.usage:
                if link not in left:
                    left[link] = self.capacity(link)
        active = set(range(len(flows)))
        while active:
            load: dict[Hashable, float] = {}
            for k in active:
                for link, w in flows[k].usage.items():
                    load[link] = load.get(link, 0.0) + w
            step = min(left[link] / w for link, w in load.items())
            saturated = {link for link, w in load.items() if left[link] / w <= step * (1 + 1e-12)}
            for link, w in load.items():
                left[link] -= step * w
            frozen = set()
            for k in active:
                rates[k] += step
                if any(link in saturated for link in flows[k].usage):
                    frozen.add(k)
            active -= frozen
        return rates

    def _reschedule(self) -> None:
        for f, r in zip(self.flows, self._fill(self.flows)):
            f.rate = r
        self._token += 1
        if not self.flows:
            return
        wait = min(max(f.remaining, 0.0) / f.rate for f in self.flows)
        token = self._token
        self.env.timeout(wait).callbacks.append(lambda _e: self._tick(token))

    def _tick(self, token: int) -> None:
        if token != self._token:
            return  # superseded by a later start
        self._advance()
        done = [f for f in self.flows if f.remaining <= max(_DONE_BYTES, f.rate * 1e-9)]
        if not done:  # round-off left a sliver: finish the soonest flow
            done = [min(self.flows, key=lambda f: f.remaining / f.rate)]
        self.flows = [f for f in self.flows if f not in done]
        self._reschedule()
        for f in done:
            f.event.succeed()
