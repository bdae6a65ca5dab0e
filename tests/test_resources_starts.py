"""Loads on their own: what a cold start reads and from where, one read for concurrent loads of a key,
wakes and refreshes of stale trained weights, and the start estimates schedulers see."""

from __future__ import annotations

import pytest
import simpy

from sim.catalog import load_catalog
from sim.config import PlatformConfig
from sim.hardware.cluster import Cluster
from sim.resources.instances import Instance
from sim.resources.residency import HostMemory
from sim.resources.roles import RoleBook
from sim.resources.starts import Loader, TrainedWeights, published_key
from sim.schedulers.base import Slot

CAT = load_catalog()
GPU = CAT.gpu("L40S")
MODEL = CAT.model("qwen2.5-0.5b")
BOOK = RoleBook(GPU, MODEL, MODEL, MODEL, MODEL, 8192, True, False)
HOST = GPU.host_to_gpu_bandwidth_bytes_per_s
NIC = 10e9
SSD = 2e9


def loader(weights_from="ssd", container_s=0.0, engine_init_s=0.0, wake_s=0.0):
    env = simpy.Environment()
    cluster = Cluster(GPU, 2, 2, inter_node_bandwidth_bytes_per_s=NIC)
    cfg = PlatformConfig(
        gpu_sharing="memory", wake_s=wake_s, storage={"ssd_bytes_per_s": SSD},
        cold_start={"container_s": container_s, "engine_init_s": engine_init_s, "weights_from": weights_from},
    )  # fmt: skip
    loaded, refreshed = [], []
    ld = Loader(env, cluster, cfg, HostMemory(2, 1e15), TrainedWeights(), lambda i: loaded.append((env.now, i)), lambda i: refreshed.append((env.now, i)))
    return env, ld, loaded, refreshed


def inst(role="rollout", node=0, gpus=1, state="loading", idle_since=0.0) -> Instance:
    i = Instance(f"{role}-{node}", BOOK.spec(role, gpus), tuple(Slot(node, g) for g in range(gpus)), 0.0)
    i.state = state
    i.periods.append([i.slots, 0.0, float("nan"), float("nan")])
    return i


def test_trained_weights_make_older_instances_stale_and_move_what_a_cold_start_reads():
    w = TrainedWeights()
    rollout = BOOK.spec("rollout", 1)
    assert w.source(rollout) == (MODEL.name, 0)
    a = inst()
    assert not w.stale(a)
    assert w.publish("actor", node=1) == 1
    assert w.stale(a) and w.source(rollout) == (published_key("actor", MODEL.name), 1)
    assert not w.stale(inst("reference"))  # the frozen reference tracks nothing


def test_a_trainer_reads_the_checkpoint_first_and_its_optimizer_state_once_it_has_trained():
    w = TrainedWeights()
    trainer = BOOK.spec("actor_trainer", 1)
    assert w.cold_bytes(trainer) == trainer.first_load_bytes
    assert w.source(trainer) == (MODEL.name, 0)
    w.trained.add(trainer.key)
    assert w.cold_bytes(trainer) == trainer.load_bytes and w.source(trainer) == (trainer.key, 0)


def test_a_cold_start_is_container_read_copy_and_init_and_leaves_the_bytes_in_the_node_cache():
    env, ld, loaded, _ = loader(container_s=2.0, engine_init_s=3.0)
    a = inst()
    env.process(ld.cold(a, env.now))
    env.run()
    W = a.spec.load_bytes
    assert loaded == [(pytest.approx(2.0 + W / SSD + W / HOST + 3.0), a)]
    assert a.tier == "ssd" and a.load_s == pytest.approx(W / SSD + W / HOST)
    assert ld.host.holds(0, MODEL.name, 0, W) and not ld.host.holds(1, MODEL.name, 0)


def test_concurrent_cold_starts_of_one_key_on_a_node_share_one_read():
    env, ld, loaded, _ = loader()
    a, b = inst(node=0, gpus=1), Instance("rollout-b", BOOK.spec("rollout", 1), (Slot(0, 1),), 0.0)
    b.periods.append([b.slots, 0.0, float("nan"), float("nan")])
    env.process(ld.cold(a, 0.0))
    env.process(ld.cold(b, 0.0))
    env.run()
    W = a.spec.load_bytes
    assert [t for t, _ in loaded] == [pytest.approx(W / SSD + W / HOST)] * 2  # not 2 W / SSD: one read


def test_newer_trained_weights_are_fetched_from_the_node_they_were_published_to():
    env, ld, loaded, _ = loader()
    ld.weights.publish("actor", node=1)
    ld.host.store(1, published_key("actor", MODEL.name), BOOK.spec("rollout", 1).load_bytes, 1)
    a = inst(node=0)
    env.process(ld.cold(a, 0.0))
    env.run()
    W = a.spec.load_bytes
    assert a.tier == "node1" and a.version == 1
    assert loaded[0][0] == pytest.approx(W / NIC + W / HOST)


def test_a_wake_is_wake_s_plus_the_copy_back_and_waits_for_the_memory_to_be_freed():
    env, ld, loaded, _ = loader(wake_s=0.5)
    a = inst()
    env.process(ld.wake(a, free_at=4.0))
    env.run()
    assert a.tier == "sleep"
    assert loaded[0][0] == pytest.approx(4.0 + a.spec.wake_bytes / HOST)
    assert ld.wake_time_s == pytest.approx(loaded[0][0])


def test_a_refresh_fetches_the_newest_weights_and_is_not_delivered_to_a_released_instance():
    env, ld, _, refreshed = loader()
    ld.weights.publish("actor", node=0)  # in this node's host memory: only the copy over PCIe
    a, gone = inst(state="busy"), inst(state="busy")
    env.process(ld.refresh(a))
    env.process(ld.refresh(gone))
    gone.state = "released"
    env.run()
    assert a.version == 1 and [i for _, i in refreshed] == [a]


def test_start_estimates_are_cheapest_first_resident_then_asleep_then_cold():
    env, ld, _, _ = loader(weights_from="ssd", container_s=1.0, engine_init_s=2.0, wake_s=0.4)
    spec = BOOK.spec("rollout", 1)
    sleeping, idle, claimed = inst(state="asleep"), inst(state="idle"), inst(state="idle")
    claimed.claimed = True
    costs = ld.estimates(spec, 4, node=0, instances=[sleeping, idle, claimed, inst("reference", state="idle")])
    cold = 1.0 + spec.load_bytes / SSD + spec.load_bytes / HOST + 2.0
    assert [c.seconds for c in costs] == pytest.approx([0.0, 0.4 + spec.wake_bytes / HOST, cold, cold])
    ld.host.store(0, MODEL.name, spec.load_bytes, 0)  # cached on node 0: no read there
    assert ld.estimates(spec, 1, node=0, instances=[])[0].seconds == pytest.approx(1.0 + spec.load_bytes / HOST + 2.0)
    assert ld.estimates(spec, 1, node=1, instances=[])[0].seconds == pytest.approx(cold)
