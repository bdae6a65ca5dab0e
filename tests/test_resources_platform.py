"""Serverless platform: cold starts per tier, reuse, keep-alive, caches, contention, sleep and wake, memory
sharing, pre-warming, billing, queueing and failures."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest
import simpy

from sim.resources.billing import billed_seconds
from sim.catalog import load_catalog
from sim.hardware.cluster import Cluster
from sim.config import BillingConfig, PlatformConfig
from sim.resources.platform import ServerlessPlatform
from sim.resources.residency import DRAM_CACHE_FRACTION
from sim.resources.roles import RoleBook
from sim.simulation import simulate
from sim.schedulers.base import Slot

from helpers import experiment

CAT = load_catalog()
GPU = CAT.gpu("L40S")
MODEL = CAT.model("qwen2.5-7b")
SMALL = CAT.model("qwen2.5-0.5b")
HOST = GPU.host_to_gpu_bandwidth_bytes_per_s


def book(model=MODEL, gpu=GPU) -> RoleBook:
    return RoleBook(gpu, model, model, model, model, 8192, True, False)


def platform(nodes=2, gpus=4, gpu=GPU, **cfg):
    env = simpy.Environment()
    cluster = Cluster(gpu, nodes, gpus, intra_node_bandwidth_bytes_per_s=20e9, inter_node_bandwidth_bytes_per_s=10e9)
    cfg.setdefault("gpu_sharing", "exclusive")
    return env, ServerlessPlatform(env, cluster, PlatformConfig(**cfg), np.random.default_rng(0))


def use(env, plat, role="rollout", gpus=1, node=None, work_s=1.0, model=MODEL, log=None, slots=(), fraction=0.9, group=None):
    spec = book(model).spec(role, gpus, group, fraction)

    def proc():
        inst = yield plat.acquire(spec, node, slots)
        plat.begin(inst)
        if log is not None:
            log.append((env.now, inst))
        yield env.timeout(work_s)
        plat.end(inst)

    return env.process(proc())


# ------------------------------------------------------------------------------- cold starts and tiers
@pytest.mark.parametrize("tier, bandwidth", [("remote", 0.19e9), ("ssd", 2.25e9), ("dram", None)])
def test_cold_start_is_container_plus_read_plus_copy_over_pcie_plus_engine_init(tier, bandwidth):
    env, plat = platform(cold_start={"container_s": 5, "engine_init_s": 10, "weights_from": tier})
    log = []
    use(env, plat, gpus=2, log=log)
    env.run()
    t, inst = log[0]
    copy = MODEL.weight_bytes / (2 * HOST)  # each GPU takes its half over its own PCIe link
    read = 0.0 if bandwidth is None else MODEL.weight_bytes / bandwidth
    assert t == pytest.approx(5 + 10 + read + copy)
    assert inst.tier == tier


def test_warm_reuse_within_keep_alive_and_cold_start_after_it():
    env, plat = platform(keep_alive_s=30)
    log = []

    def driver():
        yield use(env, plat, work_s=1.0, log=log)
        yield env.timeout(10)  # within keep-alive: reuse, no start-up delay
        t0 = env.now
        yield use(env, plat, work_s=1.0, log=log)
        assert log[1][0] == t0
        yield env.timeout(31)  # keep-alive expired: released, next request cold-starts
        t1 = env.now
        yield use(env, plat, work_s=1.0, log=log)
        assert log[2][0] > t1 + 10

    env.process(driver())
    env.run()
    assert log[0][1] is log[1][1]
    assert log[2][1] is not log[1][1]
    assert log[1][1].released_s == pytest.approx(log[1][0] + 1.0 + 30)


def test_a_load_fills_the_node_dram_cache_so_the_next_cold_start_there_is_fast():
    env, plat = platform(keep_alive_s=0, cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "remote"})
    log = []

    def driver():
        yield use(env, plat, node=0, work_s=1, log=log)
        yield use(env, plat, node=0, work_s=1, log=log)  # same node: DRAM hit
        yield use(env, plat, node=1, work_s=1, log=log)  # other node: miss

    env.process(driver())
    env.run()
    assert [inst.tier for _, inst in log] == ["remote", "dram", "remote"]
    assert log[1][1].load_s == pytest.approx(MODEL.weight_bytes / HOST)
    assert log[1][1].load_s < log[0][1].load_s / 50


def test_the_reference_reads_the_same_checkpoint_as_the_actor():
    """Different roles that start from one model's checkpoint share its copy in host DRAM."""
    env, plat = platform(keep_alive_s=0, cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "ssd"})
    log = []

    def driver():
        yield use(env, plat, role="rollout", node=0, log=log)
        yield use(env, plat, role="reference", node=0, log=log)

    env.process(driver())
    env.run()
    assert [inst.tier for _, inst in log] == ["ssd", "dram"]


def test_published_weights_are_fetched_from_the_trainer_node():
    env, plat = platform(keep_alive_s=0, cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "remote"})
    plat.publish("actor", MODEL, 1, MODEL.weight_bytes)
    log = []

    def driver():
        yield use(env, plat, node=1, work_s=1, log=log)
        yield use(env, plat, node=0, work_s=1, log=log)
        yield use(env, plat, role="reference", node=0, work_s=1, log=log)  # frozen: not the published weights

    env.process(driver())
    env.run()
    assert [inst.tier for _, inst in log] == ["dram", "node1", "remote"]
    assert log[1][1].load_s == pytest.approx(MODEL.weight_bytes / 10e9 + MODEL.weight_bytes / HOST)  # network, then PCIe


# ------------------------------------------------------------------------------- contention
def test_concurrent_reads_of_different_models_share_the_node_storage_bandwidth():
    env, plat = platform(cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "ssd"})
    alone, both = [], []
    use(env, plat, role="rollout", node=0, log=alone, model=MODEL)
    env.run()
    env, plat = platform(cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "ssd"})
    use(env, plat, role="rollout", node=0, log=both, model=MODEL)
    use(env, plat, role="rollout", node=0, log=both, model=dataclasses.replace(MODEL, name="other-7b"))
    env.run()
    read = MODEL.weight_bytes / 2.25e9
    assert alone[0][0] == pytest.approx(read + MODEL.weight_bytes / HOST)
    assert [t for t, _ in both] == pytest.approx([2 * read + MODEL.weight_bytes / HOST] * 2)  # half the bandwidth each


def test_concurrent_cold_starts_of_one_model_on_a_node_read_it_once():
    env, plat = platform(cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "ssd"})
    log = []
    for _ in range(4):
        use(env, plat, role="rollout", node=0, log=log)
    env.run()
    assert [t for t, _ in log] == pytest.approx([MODEL.weight_bytes / 2.25e9 + MODEL.weight_bytes / HOST] * 4)


def test_loads_on_different_nodes_do_not_contend():
    env, plat = platform(cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "remote"})
    log = []
    use(env, plat, role="rollout", node=0, log=log)
    use(env, plat, role="rollout", node=1, log=log, model=dataclasses.replace(MODEL, name="other-7b"))
    env.run()
    assert log[0][0] == pytest.approx(log[1][0])


# ------------------------------------------------------------------------------- exclusive GPUs
def test_full_cluster_queues_requests_and_reports_the_wait():
    env, plat = platform(nodes=1, gpus=2, keep_alive_s=0, cold_start={"container_s": 1, "engine_init_s": 0, "weights_from": "dram"})
    for _ in range(3):
        use(env, plat, gpus=2, work_s=5)
    env.run()
    queued = sorted(i.placed_s - i.requested_s for i in plat.instances)
    assert queued[0] == 0 and queued[1] > 5 and queued[2] > 10
    assert plat.queue_wait_s == pytest.approx(sum(queued))


def test_idle_warm_instances_are_evicted_to_make_room():
    env, plat = platform(nodes=1, gpus=2, keep_alive_s=1000, cold_start={"container_s": 1, "engine_init_s": 0, "weights_from": "dram"})

    def driver():
        yield use(env, plat, role="rollout", gpus=2, work_s=1)
        t = env.now
        log = []
        yield use(env, plat, role="reference", gpus=2, work_s=1, log=log)
        assert log[0][0] < t + 2  # did not wait for the 1000 s keep-alive

    env.process(driver())
    env.run()
    a = next(i for i in plat.instances if i.role == "rollout")
    assert a.released_s < 1000


def test_no_gpu_ever_hosts_two_exclusive_instances_at_once():
    env, plat = platform(nodes=2, gpus=4, keep_alive_s=3)
    rng = np.random.default_rng(5)

    def spawner():
        for _ in range(40):
            yield env.timeout(float(rng.exponential(2.0)))
            use(env, plat, role=str(rng.choice(["rollout", "reference"])), gpus=int(rng.choice([1, 2, 4])), work_s=float(rng.uniform(1, 20)))

    env.process(spawner())
    env.run()
    plat.shutdown()
    by_gpu = defaultdict(list)
    for inst in plat.instances:
        for slots, start, _ready, end in inst.periods:
            for s in slots:
                by_gpu[s].append((start, end))
    for intervals in by_gpu.values():
        intervals.sort()
        for (a0, a1), (b0, b1) in zip(intervals, intervals[1:]):
            assert b0 >= a1 - 1e-9


# ------------------------------------------------------------------------------- memory sharing
def test_small_instances_share_a_gpu_but_never_compute_on_it_at_once():
    env, plat = platform(nodes=1, gpus=1, gpu_sharing="memory", keep_alive_s=100, cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "dram"})
    log = []
    use(env, plat, role="reference", model=SMALL, work_s=10, log=log)
    use(env, plat, role="actor_logprob", model=SMALL, work_s=10, log=log)
    env.run()
    (t0, a), (t1, b) = log
    assert a.slots == b.slots  # both resident on the only GPU
    starts = sorted([t0, t1])
    assert starts[1] >= starts[0] + 10 - 1e-9  # the second computed only after the first had finished
    assert max(plat.resident_bytes().values()) <= GPU.memory_bytes


def test_an_idle_instance_is_put_to_sleep_when_another_needs_its_memory_and_wakes_without_a_cold_start():
    env, plat = platform(nodes=1, gpus=1, gpu_sharing="memory", keep_alive_s=1000, wake_s=1.0,
                         cold_start={"container_s": 5, "engine_init_s": 10, "weights_from": "ssd"})  # fmt: skip
    log = []

    def driver():
        yield use(env, plat, role="rollout", work_s=1, log=log)  # an engine claims 90% of the GPU
        yield use(env, plat, role="reference", work_s=1, log=log)  # does not fit beside it: the engine sleeps
        t = env.now
        yield use(env, plat, role="rollout", work_s=1, log=log)  # wakes: the reference sleeps in turn
        assert log[2][0] - t == pytest.approx(1.0 + MODEL.weight_bytes / HOST)

    env.process(driver())
    env.run()
    engine = log[0][1]
    assert log[2][1] is engine and engine.wakes == 1 and engine.tier == "sleep"
    assert plat.sleeps >= 2 and plat.wakes == 1
    assert sum(1 for i in plat.instances if i.cold_start) == 2


def test_a_full_host_releases_instead_of_sleeping():
    tiny_host = dataclasses.replace(GPU, host_memory_bytes=MODEL.weight_bytes * 1.1 / DRAM_CACHE_FRACTION)
    env, plat = platform(nodes=1, gpus=1, gpu=tiny_host, gpu_sharing="memory", keep_alive_s=1000,
                         cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "ssd"})  # fmt: skip
    log, asked = [], []

    def driver():
        yield use(env, plat, role="rollout", work_s=1, log=log)
        yield use(env, plat, role="prefill", work_s=1, log=log)  # rollout sleeps (the host holds one copy)
        assert log[0][1].state == "asleep"
        asked.append(env.now)
        yield use(env, plat, role="reference", work_s=1, log=log)  # prefill must go: the host is full, rollout released

    env.process(driver())
    env.run()
    rollout, prefill = log[0][1], log[1][1]
    assert rollout.state == "released" and rollout.released_s == pytest.approx(asked[0])
    assert prefill.released_s > 1000  # it slept until its keep-alive expired


def test_keep_alive_bounds_the_time_asleep_too():
    env, plat = platform(nodes=1, gpus=1, gpu_sharing="memory", sleep_idle=True, keep_alive_s=30,
                         cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "dram"})  # fmt: skip
    log = []
    use(env, plat, work_s=1, log=log)
    env.run()
    inst = log[0][1]
    assert inst.state == "released" and inst.released_s == pytest.approx(log[0][0] + 1 + 30)
    assert plat.sleeps == 1


def test_a_prewarm_loads_beside_running_work_and_is_ready_when_asked():
    env, plat = platform(nodes=1, gpus=1, gpu_sharing="memory", keep_alive_s=100, cold_start={"container_s": 2, "engine_init_s": 3, "weights_from": "ssd"})
    log = []
    ref = book(SMALL).spec("reference", 1)

    def driver():
        yield use(env, plat, role="actor_logprob", model=SMALL, work_s=1)  # warm it up first
        busy = use(env, plat, role="actor_logprob", model=SMALL, work_s=60)
        plat.prewarm(ref, 0, (Slot(0, 0),))  # loads on the GPU that is computing
        yield busy
        t = env.now
        inst = yield plat.acquire(ref, 0)
        log.append((env.now - t, inst))

    env.process(driver())
    env.run()
    wait, inst = log[0]
    assert wait == 0.0 and inst.cold_start and inst.ready_s < 60


def test_shared_gpu_is_billed_once_and_exclusive_instances_each():
    def bill(sharing):
        env, plat = platform(nodes=1, gpus=1, gpu_sharing=sharing, keep_alive_s=0, cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "dram"})
        use(env, plat, role="reference", model=SMALL, work_s=10)
        use(env, plat, role="actor_logprob", model=SMALL, work_s=10)
        env.run()
        plat.shutdown()
        records, intervals = plat.records(BillingConfig(granularity_s=1e-6))
        return sum(billed_seconds(b.end_s - b.start_s, BillingConfig(granularity_s=1e-6)) * b.gpus for b in intervals), records

    shared, shared_rec = bill("memory")
    exclusive, _ = bill("exclusive")
    copy = book(SMALL).spec("reference", 1).load_bytes / HOST
    # memory: both load at once (sharing the GPU's PCIe link), then compute one after the other; billed once
    assert shared == pytest.approx(2 * copy + 20, rel=1e-6)
    # exclusive: the second instance waits for the GPU; each instance is billed for its own lifetime
    assert exclusive == pytest.approx(2 * (copy + 10), rel=1e-6)
    assert sum(r.billed_gpu_s for r in shared_rec) == pytest.approx(shared)


# ------------------------------------------------------------------------------- billing
@pytest.mark.parametrize(
    "duration, granularity, minimum, expected",
    [(0.2, 1, 0, 1), (1.0, 1, 0, 1), (1.01, 1, 0, 2), (61, 60, 0, 120), (5, 1, 60, 60), (0.001, 0.001, 0, 0.001)],
)
def test_billing_rounds_up_to_granularity_with_a_minimum(duration, granularity, minimum, expected):
    assert billed_seconds(duration, BillingConfig(granularity_s=granularity, minimum_s=minimum)) == pytest.approx(expected)


SERVERLESS = {
    "name": "p",
    "seed": 1,
    "iterations": 2,
    "model": "qwen2.5-0.5b",
    "workload": {"dataset": "gsm8k", "prompts_per_iteration": 16, "samples_per_prompt": 4, "max_response_tokens": 512},
    "cluster": {"nodes": 2, "gpus_per_node": 4, "gpu": "L40S"},
    "platform": {"kind": "serverless", "keep_alive_s": 20},
    "scheduler": {"name": "serverless"},
}


def serverless_config(**over):
    return experiment(SERVERLESS, **over)


@pytest.mark.parametrize("sharing", ["memory", "exclusive"])
def test_serverless_run_bills_every_instance_at_least_its_busy_time(sharing):
    result = simulate(serverless_config(platform__gpu_sharing=sharing))
    assert result.summary["cold_starts"] > 0
    assert result.summary["cold_start_s"] > 0
    for row in result.instances:
        assert row["billed_s"] >= row["busy_s"] - 1e-9
    assert result.summary["billed_gpu_s"] >= result.summary["busy_gpu_s"]
    assert sum(r["billed_gpu_s"] for r in result.instances) == pytest.approx(result.summary["billed_gpu_s"])


def test_not_billing_cold_starts_lowers_the_bill():
    billed = simulate(serverless_config(platform__gpu_sharing="exclusive"))
    free = simulate(serverless_config(platform__gpu_sharing="exclusive", platform__billing={"bill_cold_start": False}))
    assert free.summary["billed_gpu_s"] < billed.summary["billed_gpu_s"]
    assert free.summary["mean_iteration_s"] == pytest.approx(billed.summary["mean_iteration_s"])


@pytest.mark.parametrize("sharing", ["memory", "exclusive"])
def test_failures_lose_no_sample_and_count_none_twice(sharing):
    cfg = serverless_config(platform__failures={"mtbf_s": 15.0}, platform__gpu_sharing=sharing)
    a = simulate(cfg)
    assert a.summary["failures"] > 0
    clean = simulate(serverless_config(platform__gpu_sharing=sharing))
    for gen, ref in zip(a.generated, clean.generated):
        np.testing.assert_array_equal(gen, ref)  # every sample exactly once, with its full length
    assert a.summary["tokens_generated"] == clean.summary["tokens_generated"]
    assert a.summary["mean_iteration_s"] > clean.summary["mean_iteration_s"]
    b = simulate(cfg)
    assert a.summary == b.summary  # same seed, same failures


def test_serverless_and_serverful_see_the_same_workload():
    sl = simulate(serverless_config())
    sf = simulate(serverless_config(scheduler={"name": "verl"}))
    assert sl.summary["deployment"] == "serverless" and sf.summary["deployment"] == "serverful"
    assert sl.summary["tokens_generated"] == sf.summary["tokens_generated"]


@pytest.mark.parametrize("sharing", ["memory", "exclusive"])
def test_a_woken_instance_fetches_weights_published_since_it_slept(sharing):
    env, plat = platform(gpu_sharing=sharing, sleep_idle=True, keep_alive_s=100, cold_start={"container_s": 5, "engine_init_s": 10, "weights_from": "ssd"})
    log = []

    def driver():
        yield use(env, plat, node=1, work_s=1, log=log)  # cold start, then sleeps on node 1
        yield use(env, plat, node=1, work_s=1, log=log)  # wakes: its own host copy is current
        plat.publish("actor", MODEL, 0, MODEL.weight_bytes)  # the trainer on node 0 wrote new weights
        yield use(env, plat, node=1, work_s=1, log=log)  # wakes and fetches them over the network

    env.process(driver())
    env.run()
    inst = log[0][1]
    assert log[1][1] is inst and log[2][1] is inst and inst.wakes == 2 and inst.cold_start
    assert inst.tier == "sleep+node0"
    assert inst.load_s == pytest.approx(MODEL.weight_bytes / 10e9 + MODEL.weight_bytes / HOST)  # network, then PCIe
