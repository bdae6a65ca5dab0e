"""Nodes of GPUs and the topology that connects them: links with bandwidths, a networkx graph on demand.

Each node has its GPUs on an intra-node fabric (NVLink switch or PCIe), a host (DRAM) on PCIe, and one
network link to the cluster fabric. A transfer's time is its bytes over the bottleneck bandwidth of the
path, scaled by the network efficiency. Contention between concurrent transfers is not modelled.

The links form a tree, so a path is found by walking up to the common ancestor, without networkx (whose
import costs more than most runs); `Cluster.graph` builds the networkx graph for whoever wants it, and a
topology with cycles would be routed over it (shortest path).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from typing import TYPE_CHECKING, Iterator

from sim.catalog import GpuSpec

if TYPE_CHECKING:
    import networkx as nx

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
        self._graph: "nx.Graph | None" = None
        # the links as a tree: each vertex's parent and the bandwidth of the link up to it (None: not a tree)
        self._up: dict[tuple, tuple[tuple, float]] | None = {}
        for child, parent, bandwidth, _kind in self.links():
            if self._up is not None and child in self._up:
                self._up = None
            elif self._up is not None:
                self._up[child] = (parent, bandwidth)
        self._bottleneck = lru_cache(maxsize=None)(self._bottleneck_uncached)
        self._by_distance: dict[int, list[int]] = {}

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def slots(self) -> list[GpuSlot]:
        return [GpuSlot(n, g) for n in range(self.nodes) for g in range(self.gpus_per_node)]

    def links(self) -> Iterator[tuple[tuple, tuple, float, str]]:
        """Every link as (vertex, vertex towards the fabric, bandwidth in bytes/s, kind)."""
        for n in range(self.nodes):
            switch, host = ("switch", n), ("host", n)
            yield switch, FABRIC, self.inter_bw, "network"
            yield host, switch, self.host_bw, "pcie"
            for i in range(self.gpus_per_node):
                yield ("gpu", n, i), switch, self.intra_bw, "intra"

    @property
    def graph(self) -> "nx.Graph":
        """The topology as a networkx graph (vertices with their kind and node, edges with bandwidth and kind)."""
        if self._graph is None:
            self._graph = self._build_graph()
        return self._graph

    def _build_graph(self) -> "nx.Graph":
        import networkx as nx

        g = nx.Graph()
        g.add_node(FABRIC, kind="fabric")
        for child, parent, bandwidth, kind in self.links():
            for v in (child, parent):
                if v not in g:
                    g.add_node(v, kind=v[0], node=v[1])
            g.add_edge(child, parent, bandwidth=bandwidth, kind=kind)
        return g

    def _path_up(self, v: tuple) -> list[tuple[tuple, float]]:
        """(vertex, bandwidth of its link up) from v to the root of the tree, v first."""
        assert self._up is not None
        out = []
        while v in self._up:
            parent, bandwidth = self._up[v]
            out.append((v, bandwidth))
            v = parent
            if len(out) > len(self._up):
                raise ValueError(f"the links up from {out[0][0]} form a cycle")
        out.append((v, float("inf")))
        return out

    def _tree_path(self, a: tuple, b: tuple) -> tuple[int, float]:
        """Hops and bottleneck bandwidth of the tree path between two vertices."""
        up_a, up_b = self._path_up(a), self._path_up(b)
        depth_b = {v: i for i, (v, _) in enumerate(up_b)}
        for i, (v, _) in enumerate(up_a):
            if v in depth_b:  # the lowest common ancestor
                j = depth_b[v]
                links = [bw for _, bw in up_a[:i]] + [bw for _, bw in up_b[:j]]
                return i + j, min(links, default=float("inf"))
        raise ValueError(f"{a} and {b} are not connected")

    def _bottleneck_uncached(self, a: tuple, b: tuple) -> float:
        if self._up is not None:
            return self._tree_path(a, b)[1]
        import networkx as nx

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
            src = ("switch", origin)
            if self._up is not None:
                hops = {n: self._tree_path(src, ("switch", n))[0] for n in range(self.nodes)}
            else:
                import networkx as nx

                lengths = nx.single_source_shortest_path_length(self.graph, src)
                hops = {n: lengths[("switch", n)] for n in range(self.nodes)}
            order = self._by_distance[origin] = sorted(range(self.nodes), key=lambda n: (hops[n], n))
        return list(order)


def _rep(v: tuple) -> tuple:
    if v[0] == "gpu":
        return ("gpu", v[1], 0)
    return v
