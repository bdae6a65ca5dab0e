"""Pre-warm bookkeeping on its own: timed pre-warms fire at their time, work cancels one of the same
function, a shared platform keeps a pre-warm that found no room until its deadline, and a kept instance's
keep-alive starts over."""

from __future__ import annotations

import simpy

from sim.catalog import load_catalog
from sim.resources.instances import Instance, Request
from sim.resources.prewarm import Prewarms
from sim.resources.roles import RoleBook

CAT = load_catalog()
MODEL = CAT.model("qwen2.5-0.5b")
BOOK = RoleBook(CAT.gpu("L40S"), MODEL, MODEL, MODEL, MODEL, 8192, True, False)


class Served:
    """Records when each request was offered; `room` says whether it could be served."""

    def __init__(self, env: simpy.Environment, room: bool = True):
        self.env, self.room, self.calls = env, room, []

    def __call__(self, req: Request) -> bool:
        self.calls.append((self.env.now, req.spec.role))
        return self.room


def request(env, role="rollout", gpus=1, after_s=0.0, deadline_s=float("inf")) -> Request:
    return Request(None, BOOK.spec(role, gpus), None, (), env.now + after_s, deadline_s=deadline_s)


def test_a_timed_prewarm_is_served_at_its_time_and_an_immediate_one_at_once():
    env = simpy.Environment()
    served = Served(env)
    pre = Prewarms(env, shared=True, serve=served, expire=lambda i, t: None)
    pre.schedule(request(env, after_s=5.0), 5.0)
    pre.schedule(request(env, role="reference"), 0.0)
    assert served.calls == [(0.0, "reference")]
    env.run()
    assert served.calls == [(0.0, "reference"), (5.0, "rollout")]
    assert pre.scheduled == [] and pre.pending == []


def test_work_for_the_same_function_cancels_one_scheduled_prewarm_only():
    env = simpy.Environment()
    served = Served(env)
    pre = Prewarms(env, shared=True, serve=served, expire=lambda i, t: None)
    for role, gpus in (("rollout", 1), ("rollout", 1), ("rollout", 2)):
        pre.schedule(request(env, role, gpus, after_s=5.0), 5.0)
    pre.cancel_one(BOOK.spec("rollout", 1))
    env.run()
    assert served.calls == [(5.0, "rollout"), (5.0, "rollout")]  # one of the 1-GPU ones, and the 2-GPU one


def test_a_prewarm_without_room_waits_when_memory_is_shared_until_its_deadline():
    env = simpy.Environment()
    served = Served(env, room=False)
    pre = Prewarms(env, shared=True, serve=served, expire=lambda i, t: None)
    pre.schedule(request(env, deadline_s=10.0), 0.0)
    assert len(pre.pending) == 1
    env.run(until=4.0)
    pre.retry()
    assert len(pre.pending) == 1 and served.calls[-1] == (4.0, "rollout")
    env.run(until=11.0)
    pre.retry()  # past its deadline: dropped without being offered again
    assert pre.pending == [] and len(served.calls) == 2
    served.room = True
    pre.schedule(request(env, deadline_s=20.0), 0.0)
    assert pre.pending == []


def test_an_exclusive_prewarm_without_room_is_skipped():
    env = simpy.Environment()
    pre = Prewarms(env, shared=False, serve=Served(env, room=False), expire=lambda i, t: None)
    pre.schedule(request(env), 0.0)
    assert pre.pending == []


def test_a_kept_idle_instance_gets_a_fresh_keep_alive():
    env = simpy.Environment()
    expired = []
    pre = Prewarms(env, shared=True, serve=Served(env), expire=lambda i, t: expired.append((env.now, i, t)))
    inst = Instance("rollout-0", BOOK.spec("rollout", 1), (), 0.0)
    token = inst.token
    env.run(until=3.0)
    pre.reserve_idle(inst, keep_alive_s=30.0)
    assert inst.reserved and inst.token == token + 1
    env.run()
    assert expired == [(33.0, inst, token + 1)]
    pre.reserve_idle(inst, keep_alive_s=0.0)  # no keep-alive: nothing to expire later
    env.run()
    assert len(expired) == 1
