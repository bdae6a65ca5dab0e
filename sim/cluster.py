"""Nodes of GPUs and the topology that connects them, as a networkx graph with link bandwidths.

Each node has its GPUs on an intra-node fabric (NVLink switch or PCIe), a host (DRAM) on PCIe, and one
network link to the cluster fabric. A transfer's time is its bytes over the bottleneck bandwidth of the
path, scaled by the network efficiency. Contention between concurrent transfers is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import networkx as nx

from sim.catalog import GpuSpec

FABRIC = ("fabric",)


@dataclass(frozen=True)
class GpuSlot:
    node: int
    index: int

    @property
    def label(self) -> str:
        return f"n{self.node}g{self.index}"


class Cluster:
    """A homogeneous cluster: `nodes` x `gpus_per_node` GPUs of one type."""

    def __init__(
        self,
        gpu: GpuSpec,
        nodes: int,
        gpus_per_node: int,
        intra_node_bandwidth_bytes_per_s: float | None = None,
        inter_node_bandwidth_bytes_per_s: float | None = None,
        network_efficiency: float = 1.0,
    ):
        self.gpu = gpu
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.intra_bw = intra_node_bandwidth_bytes_per_s or gpu.intra_node_bandwidth_bytes_per_s
        self.inter_bw = inter_node_bandwidth_bytes_per_s or gpu.inter_node_bandwidth_bytes_per_s
        self.host_bw = gpu.host_to_gpu_bandwidth_bytes_per_s
        self.network_efficiency = network_efficiency
        self.graph = self._build_graph()
        self._bottleneck = lru_cache(maxsize=None)(self._bottleneck_uncached)
        self._by_distance: dict[int, list[int]] = {}

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def slots(self) -> list[GpuSlot]:
        return [GpuSlot(n, g) for n in range(self.nodes) for g in range(self.gpus_per_node)]

    def _build_graph(self) -> nx.Graph:
        g = nx.Graph()
        g.add_node(FABRIC, kind="fabric")
        for n in range(self.nodes):
            switch, host = ("switch", n), ("host", n)
            g.add_node(switch, kind="switch", node=n)
            g.add_node(host, kind="host", node=n)
            g.add_edge(switch, FABRIC, bandwidth=self.inter_bw, kind="network")
            g.add_edge(host, switch, bandwidth=self.host_bw, kind="pcie")
            for i in range(self.gpus_per_node):
                g.add_node(("gpu", n, i), kind="gpu", node=n)
                g.add_edge(("gpu", n, i), switch, bandwidth=self.intra_bw, kind="intra")
        return g

    def _bottleneck_uncached(self, a: tuple, b: tuple) -> float:
        path = nx.shortest_path(self.graph, a, b)
        return min(self.graph.edges[u, v]["bandwidth"] for u, v in zip(path, path[1:]))

    def bottleneck_bytes_per_s(self, a: tuple, b: tuple) -> float:
        """Bandwidth of the narrowest link on the path between two graph vertices."""
        if a == b:
            return float("inf")
        # every GPU of a node is symmetric: cache by representative vertices
        return self._bottleneck(_rep(a), _rep(b)) if _rep(a) != _rep(b) else self._bottleneck(a, b)

    def gpu_transfer_s(self, src_node: int, dst_node: int, nbytes: float) -> float:
        """Time to move bytes from a GPU on src_node to a GPU on dst_node (another GPU if the same node)."""
        if nbytes <= 0:
            return 0.0
        a, b = ("gpu", src_node, 0), ("gpu", dst_node, 1 if src_node == dst_node and self.gpus_per_node > 1 else 0)
        if a == b:
            return 0.0
        return nbytes / (self.bottleneck_bytes_per_s(a, b) * self.network_efficiency)

    def host_to_gpu_s(self, nbytes: float) -> float:
        return nbytes / (self.host_bw * self.network_efficiency) if nbytes > 0 else 0.0

    def ring_bandwidth_bytes_per_s(self, nodes_used: list[int]) -> float:
        """Per-link bandwidth of a ring over GPUs on the given nodes (intra-node if one node)."""
        distinct = sorted(set(nodes_used))
        if len(distinct) <= 1:
            return self.intra_bw
        return min(self.intra_bw, self.bottleneck_bytes_per_s(("gpu", distinct[0], 0), ("gpu", distinct[1], 0)))

    def nodes_by_distance(self, origin: int) -> list[int]:
        """Nodes ordered nearest first from origin (hop count in the graph, then index)."""
        order = self._by_distance.get(origin)
        if order is None:
            lengths = nx.single_source_shortest_path_length(self.graph, ("switch", origin))
            order = self._by_distance[origin] = sorted(range(self.nodes), key=lambda n: (lengths[("switch", n)], n))
        return list(order)


def _rep(v: tuple) -> tuple:
    if v[0] == "gpu":
        return ("gpu", v[1], 0)
    return v
