"""Topology: bottleneck bandwidths and transfer times over the networkx graph."""

import pytest

from sim.catalog import load_catalog
from sim.hardware.cluster import Cluster


def cluster(nodes=2):
    return Cluster(load_catalog().gpu("L40S"), nodes, 8, intra_node_bandwidth_bytes_per_s=20e9, inter_node_bandwidth_bytes_per_s=50e9)


def test_same_node_transfer_uses_intra_node_link():
    c = cluster()
    assert c.gpu_transfer_s(0, 0, 20e9) == pytest.approx(1.0)


def test_cross_node_transfer_is_limited_by_the_narrowest_link():
    c = cluster()
    assert c.gpu_transfer_s(0, 1, 20e9) == pytest.approx(1.0)  # PCIe 20 GB/s < network 50 GB/s
    fast = Cluster(load_catalog().gpu("H100-SXM"), 2, 8, intra_node_bandwidth_bytes_per_s=450e9, inter_node_bandwidth_bytes_per_s=50e9)
    assert fast.gpu_transfer_s(0, 1, 50e9) == pytest.approx(1.0)


def test_network_efficiency_scales_transfer_time():
    c = Cluster(load_catalog().gpu("L40S"), 2, 8, 20e9, 50e9, network_efficiency=0.5)
    assert c.gpu_transfer_s(0, 1, 20e9) == pytest.approx(2.0)


def test_ring_bandwidth_and_distances():
    c = cluster(3)
    assert c.ring_bandwidth_bytes_per_s([0]) == 20e9
    assert c.ring_bandwidth_bytes_per_s([0, 2]) == 20e9
    assert c.nodes_by_distance(1)[0] == 1
    assert sorted(c.nodes_by_distance(1)) == [0, 1, 2]
    assert c.total_gpus == 24


@pytest.mark.parametrize("nodes, gpus", [(1, 1), (1, 8), (3, 4), (5, 8)])
def test_tree_paths_agree_with_shortest_paths_in_the_networkx_graph(nodes, gpus):
    """Paths walk the link tree (no networkx import in a run); the networkx graph gives the same answers."""
    import networkx as nx

    c = Cluster(load_catalog().gpu("H100-SXM"), nodes, gpus, intra_node_bandwidth_bytes_per_s=450e9, inter_node_bandwidth_bytes_per_s=50e9)
    g = c.graph
    assert nx.is_tree(g) and g.number_of_nodes() == 1 + nodes * (2 + gpus)
    vertices = list(g.nodes)
    for a in vertices:
        for b in vertices:
            if a == b:
                continue
            path = nx.shortest_path(g, a, b)
            assert c.bottleneck_bytes_per_s(a, b) == min(g.edges[u, v]["bandwidth"] for u, v in zip(path, path[1:]))
    for origin in range(nodes):
        lengths = nx.single_source_shortest_path_length(g, ("switch", origin))
        assert c.nodes_by_distance(origin) == sorted(range(nodes), key=lambda n: (lengths[("switch", n)], n))

