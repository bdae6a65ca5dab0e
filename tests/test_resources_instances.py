"""The instance record on its own: which requests an instance can serve, and its first resident period's defaults."""

from __future__ import annotations

import math

import simpy

from sim.catalog import load_catalog
from sim.resources.instances import Instance, Request, same_function
from sim.resources.roles import RoleBook
from sim.schedulers.base import Slot

CAT = load_catalog()
MODEL = CAT.model("qwen2.5-0.5b")
BOOK = RoleBook(CAT.gpu("L40S"), MODEL, MODEL, MODEL, MODEL, 8192, True, False)


def test_an_instance_serves_only_its_role_its_weights_and_its_number_of_gpus():
    inst = Instance("rollout-0", BOOK.spec("rollout", 2), (Slot(0, 0), Slot(0, 1)), 0.0)
    assert inst.serves(BOOK.spec("rollout", 2))
    assert not inst.serves(BOOK.spec("rollout", 1))
    assert not inst.serves(BOOK.spec("prefill", 2))  # same weights (actor key), other role
    assert not inst.serves(BOOK.spec("reference", 2))  # other weights
    assert same_function(BOOK.spec("rollout", 2), BOOK.spec("rollout", 2))
    assert not same_function(BOOK.spec("actor_logprob", 2), BOOK.spec("reference", 2))


def test_a_new_instance_is_loading_on_its_node_and_not_yet_ready_or_released():
    inst = Instance("reference-3", BOOK.spec("reference", 1), (Slot(1, 2),), requested_s=4.0, placed_s=9.0)
    assert (inst.state, inst.node, inst.gpus, inst.role) == ("loading", 1, 1, "reference")
    assert inst.placed_s - inst.requested_s == 5.0
    assert math.isnan(inst.ready_s) and math.isnan(inst.released_s)
    assert Instance("r", BOOK.spec("rollout", 1), (Slot(0, 0),), 2.0).placed_s == 2.0


def test_a_request_without_an_event_is_a_prewarm():
    env = simpy.Environment()
    assert Request(env.event(), BOOK.spec("rollout", 1), None, (), 0.0).work
    assert not Request(None, BOOK.spec("rollout", 1), None, (), 0.0).work
