"""Serverless platform: cold starts per weight tier, warm reuse, keep-alive, caches, billing, queueing, failures."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import simpy

from sim.catalog import load_catalog
from sim.cluster import Cluster
from sim.config import BillingConfig, PlatformConfig
from sim.platform import ServerlessPlatform, billed_seconds
from sim.runner import simulate

from helpers import experiment
from sim.runtime import Recorder

CAT = load_catalog()
GPU = CAT.gpu("L40S")
MODEL = CAT.model("qwen2.5-7b")


def platform(nodes=2, gpus=4, **cfg):
    env = simpy.Environment()
    cluster = Cluster(GPU, nodes, gpus, intra_node_bandwidth_bytes_per_s=20e9, inter_node_bandwidth_bytes_per_s=10e9)
    pcfg = PlatformConfig(**cfg)
    return env, ServerlessPlatform(env, cluster, pcfg, np.random.default_rng(0), Recorder())


def use(env, plat, role="rollout", gpus=1, node=None, work_s=1.0, model=MODEL, log=None):
    def proc():
        inst = yield plat.acquire(role, model, gpus, node)
        plat.begin(inst)
        if log is not None:
            log.append((env.now, inst))
        yield env.timeout(work_s)
        plat.end(inst)

    return env.process(proc())


@pytest.mark.parametrize(
    "tier, bandwidth",
    [("remote", 0.19e9), ("ssd", 2.25e9), ("dram", None)],
)
def test_cold_start_is_container_plus_load_over_the_tier_plus_engine_init(tier, bandwidth):
    env, plat = platform(cold_start={"container_s": 5, "engine_init_s": 10, "weights_from": tier})
    log = []
    use(env, plat, gpus=2, log=log)
    env.run()
    t, inst = log[0]
    if bandwidth is None:  # each GPU reads its half over its own PCIe link
        load = MODEL.weight_bytes / (2 * GPU.host_to_gpu_bandwidth_bytes_per_s)
    else:
        load = MODEL.weight_bytes / bandwidth
    assert t == pytest.approx(5 + 10 + load)
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
    tiers = [inst.tier for _, inst in log]
    assert tiers == ["remote", "dram", "remote"]
    assert log[1][1].load_s < log[0][1].load_s / 50


def test_published_weights_are_fetched_from_the_trainer_node():
    env, plat = platform(keep_alive_s=0, cold_start={"container_s": 0, "engine_init_s": 0, "weights_from": "remote"})
    plat.publish_weights(MODEL.name, 1, MODEL.weight_bytes)
    log = []

    def driver():
        yield use(env, plat, node=1, work_s=1, log=log)
        yield use(env, plat, node=0, work_s=1, log=log)

    env.process(driver())
    env.run()
    assert log[0][1].tier == "dram"
    assert log[1][1].tier == "node1"
    assert log[1][1].load_s == pytest.approx(MODEL.weight_bytes / 10e9)  # over the 10 GB/s network


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
        yield use(env, plat, role="a", gpus=2, work_s=1)
        t = env.now
        log = []
        yield use(env, plat, role="b", gpus=2, work_s=1, log=log)
        assert log[0][0] < t + 2  # did not wait for the 1000 s keep-alive

    env.process(driver())
    env.run()
    a = next(i for i in plat.instances if i.role == "a")
    assert a.released_s < 1000


def test_no_gpu_ever_hosts_two_instances_at_once():
    env, plat = platform(nodes=2, gpus=4, keep_alive_s=3)
    rng = np.random.default_rng(5)

    def spawner():
        for _ in range(40):
            yield env.timeout(float(rng.exponential(2.0)))
            use(env, plat, role=str(rng.choice(["a", "b"])), gpus=int(rng.choice([1, 2, 4])), work_s=float(rng.uniform(1, 20)))

    env.process(spawner())
    env.run()
    plat.shutdown()
    by_gpu = defaultdict(list)
    for inst in plat.instances:
        for s in inst.slots:
            by_gpu[s].append((inst.placed_s, inst.released_s))
    for intervals in by_gpu.values():
        intervals.sort()
        for (a0, a1), (b0, b1) in zip(intervals, intervals[1:]):
            assert b0 >= a1 - 1e-9


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


def test_serverless_run_bills_every_instance_at_least_its_busy_time():
    result = simulate(serverless_config())
    assert result.summary["cold_starts"] > 0
    assert result.summary["cold_start_s"] > 0
    for row in result.instances:
        assert row["billed_s"] >= row["busy_s"] - 1e-9
        assert row["billed_s"] >= row["released_s"] - row["ready_s"] - 1e-9
    assert result.summary["billed_gpu_s"] >= result.summary["busy_gpu_s"]


def test_not_billing_cold_starts_lowers_the_bill():
    billed = simulate(serverless_config())
    free = simulate(serverless_config(platform__billing={"bill_cold_start": False}))
    assert free.summary["billed_gpu_s"] < billed.summary["billed_gpu_s"]
    assert free.summary["mean_iteration_s"] == pytest.approx(billed.summary["mean_iteration_s"])


def test_failures_lose_no_sample_and_count_none_twice():
    cfg = serverless_config(platform__failures={"mtbf_s": 15.0})
    a = simulate(cfg)
    assert a.summary["failures"] > 0
    clean = simulate(serverless_config())
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


def test_a_woken_instance_fetches_weights_published_since_it_slept():
    env, plat = platform(sleep_idle=True, keep_alive_s=100, cold_start={"container_s": 5, "engine_init_s": 10, "weights_from": "ssd"})
    log = []

    def driver():
        yield use(env, plat, node=1, work_s=1, log=log)  # cold start, then sleeps on node 1
        yield use(env, plat, node=1, work_s=1, log=log)  # wakes: its own host copy is current
        plat.publish_weights(MODEL.name, 0, MODEL.weight_bytes)  # the trainer on node 0 wrote new weights
        yield use(env, plat, node=1, work_s=1, log=log)  # wakes and fetches them over the network

    env.process(driver())
    env.run()
    tiers = [inst.tier for _, inst in log]
    assert tiers == ["ssd", "sleep", "sleep+node0"]
    assert [inst.cold_start for _, inst in log] == [True, False, False]
    assert log[2][1].load_s == pytest.approx(MODEL.weight_bytes / 10e9)  # the 10 GB/s network, not PCIe
    assert log[1][1].load_s == pytest.approx(MODEL.weight_bytes / GPU.host_to_gpu_bandwidth_bytes_per_s)
