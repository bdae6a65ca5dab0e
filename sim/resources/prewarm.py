"""Pre-warms on the serverless platform: timed, waiting for room, and cancelled when work gets there first.

A pre-warm asks for an instance of a function to be resident for a later request, `after_s` from now.
At its time it is served like a request that does not compute (`serve`); with memory sharing one that
finds no room waits (pending) until its deadline, the keep-alive it would have had. A work request for
the same function cancels one pre-warm of it still scheduled or pending. How a pre-warm is served (which
instance it keeps, wakes or cold-starts) is the platform's (`sim.resources.platform`).
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

from sim.resources.instances import Instance, Request, same_function
from sim.resources.roles import FunctionSpec


class Prewarms:
    """Scheduled pre-warms (waiting for their start time) and pending ones (waiting for room)."""

    def __init__(self, env: simpy.Environment, shared: bool, serve: Callable[[Request], bool], expire: Callable[[Instance, int], None]):
        self.env, self.shared = env, shared
        self.serve, self.expire = serve, expire
        self.pending: list[Request] = []  # pre-warms waiting for room
        self.scheduled: list[Request] = []  # pre-warms waiting for their start time

    def schedule(self, req: Request, after_s: float) -> None:
        """Serve the pre-warm `req` `after_s` from now (at once if 0), unless work for its function came first."""

        def fire(_e=None) -> None:
            if req not in self.scheduled:
                return  # its phase began first: the work requests took care of it
            self.scheduled.remove(req)
            if not self.serve(req) and self.shared:
                self.pending.append(req)

        self.scheduled.append(req)
        if after_s > 0:
            self.env.timeout(after_s).callbacks.append(fire)
        else:
            fire()

    def reserve_idle(self, inst: Instance, keep_alive_s: float) -> None:
        """A pre-warm keeps a resident idle instance for its request: its keep-alive starts over."""
        inst.reserved = True
        inst.token += 1
        token = inst.token
        if keep_alive_s > 0:
            self.env.timeout(keep_alive_s).callbacks.append(lambda _e, i=inst, t=token: self.expire(i, t))

    def cancel_one(self, spec: FunctionSpec) -> None:
        """A work request of `spec` was served: one pre-warm still waiting for the same function is no longer needed."""
        for queue in (self.pending, self.scheduled):
            for k, p in enumerate(queue):
                if same_function(p.spec, spec):
                    del queue[k]
                    return

    def retry(self) -> None:
        """Serve the pending pre-warms that are still before their deadline, in order; the rest keep waiting."""
        pending, self.pending = self.pending, []
        for req in pending:
            if req.deadline_s >= self.env.now and not self.serve(req):
                self.pending.append(req)

    def clear(self) -> None:
        self.pending.clear()
        self.scheduled.clear()
