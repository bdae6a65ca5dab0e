"""Catalogs of GPU types, model architectures, datasets and platform presets, read from `workloads/*.yaml`.

Every entry is plain data with its source recorded beside it in the YAML. This module only loads and
type-checks the files; what the numbers mean for timing lives in `sim/perf/`, for lengths in
`sim/workload.py`.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from sim import yaml_io

WORKLOADS_DIR = Path(__file__).resolve().parent.parent / "workloads"
BYTES_PER_GB = 1e9


class CatalogError(ValueError):
    """A catalog file is missing, malformed, or names something it does not hold."""


def suggest(name: str, choices: list[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt catalog key, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
        close = [lowered[c] for c in close]
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class GpuSpec:
    """One GPU type and the node it usually comes in (bandwidths in bytes/s, prices in USD)."""

    name: str
    memory_bytes: float
    hbm_bandwidth_bytes_per_s: float
    bf16_flops: float
    intra_node_bandwidth_bytes_per_s: float  # GPU <-> GPU inside a node, one direction (NVLink or PCIe)
    inter_node_bandwidth_bytes_per_s: float  # one node's network, one direction
    host_to_gpu_bandwidth_bytes_per_s: float  # PCIe, host DRAM -> GPU
    price_usd_per_gpu_hour: float
    host_memory_bytes: float  # host DRAM of a node of this type
    gpus_per_node: int
    source: str = ""

    @property
    def price_usd_per_gpu_s(self) -> float:
        return self.price_usd_per_gpu_hour / 3600.0


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape; byte counts assume bf16 weights and KV cache."""

    name: str
    params: float
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    intermediate_size: int
    tied_embeddings: bool
    bytes_per_param: float = 2.0
    kv_bytes_per_element: float = 2.0
    # mixture of experts (0 = dense): routed experts per layer, experts each token uses, one expert's MLP width
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    source: str = ""

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of every layer for one token."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_element

    @property
    def embedding_params(self) -> float:
        return float(self.vocab_size * self.hidden_size)

    @property
    def decode_read_bytes(self) -> float:
        """Weight bytes read per decode step: all weights, except an untied input embedding (one row is read)."""
        unread = 0.0 if self.tied_embeddings else self.embedding_params
        return (self.params - unread) * self.bytes_per_param

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def expert_params(self) -> float:
        """Parameters of all routed experts (SwiGLU: gate, up, down), over every layer; 0 when dense."""
        return float(self.layers * self.experts * 3 * self.hidden_size * self.expert_intermediate_size)

    @property
    def active_params(self) -> float:
        """Parameters one token runs through: everything but the experts it is not routed to."""
        if not self.is_moe:
            return self.params
        return self.params - self.expert_params * (1 - self.experts_per_token / self.experts)

    def expert_fraction_touched(self, batch: int) -> float:
        """Expected share of a layer's experts that b tokens reach (uniform routing, k distinct each)."""
        if not self.is_moe:
            return 1.0
        return 1.0 - (1.0 - self.experts_per_token / self.experts) ** batch

    @property
    def mlp_active_width(self) -> int:
        """Width of the MLP activations of one token (dense MLP, or its routed experts together)."""
        return self.experts_per_token * self.expert_intermediate_size if self.is_moe else self.intermediate_size

    @property
    def layer_params(self) -> float:
        """Parameters of one transformer block (everything except embeddings and the output head)."""
        heads = self.embedding_params * (1 if self.tied_embeddings else 2)
        return (self.params - heads) / self.layers


@dataclass(frozen=True)
class Catalog:
    gpus: dict[str, GpuSpec]
    models: dict[str, ModelSpec]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    platforms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def gpu(self, name: str) -> GpuSpec:
        return _lookup(self.gpus, name, "GPU", "gpus.yaml")

    def model(self, name: str) -> ModelSpec:
        return _lookup(self.models, name, "model", "models.yaml")

    def dataset(self, name: str) -> dict[str, Any]:
        return _lookup(self.datasets, name, "dataset", "datasets.yaml")

    def platform(self, name: str) -> dict[str, Any]:
        return _lookup(self.platforms, name, "platform preset", "platforms.yaml")


def _lookup(table: dict[str, Any], name: str, what: str, file: str) -> Any:
    if name in table:
        return table[name]
    raise CatalogError(f"unknown {what} {name!r}{suggest(name, list(table))}; known: {', '.join(sorted(table))} ({file})")


def _read_yaml(path: Path) -> dict[str, Any]:
    """One catalog file, read strictly (sim.yaml_io: a repeated key is an error) with the C loader when there is one."""
    if not path.exists():
        return {}
    try:
        data = yaml_io.load(path.read_text(), fast=True)
    except yaml_io.YamlError as exc:
        raise CatalogError(f"{path}: malformed YAML{exc.where}: {exc.problem}") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping of names to entries")
    return data


def _build(cls: type, name: str, entry: Any, path: Path) -> Any:
    if not isinstance(entry, dict):
        raise CatalogError(f"{path}: entry {name!r} must be a mapping")
    known = {f.name for f in fields(cls)} - {"name"}
    extra = set(entry) - known - {"notes", "sources"}
    if extra:
        raise CatalogError(f"{path}: entry {name!r} has unknown field(s) {sorted(extra)}; expected {sorted(known)}")
    kwargs = {k: v for k, v in entry.items() if k in known}
    required = [f.name for f in fields(cls) if f.name != "name" and f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise CatalogError(f"{path}: entry {name!r} is missing field(s) {missing}")
    types = {f.name: f.type for f in fields(cls)}
    for key, value in kwargs.items():
        kwargs[key] = _coerce(value, types[key], f"{path}: entry {name!r} field {key!r}")
    if "source" not in kwargs and "sources" in entry:
        kwargs["source"] = "; ".join(f"{k}: {v}" for k, v in dict(entry["sources"]).items())
    try:
        return cls(name=name, **kwargs)
    except TypeError as exc:
        raise CatalogError(f"{path}: entry {name!r}: {exc}") from None


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """YAML reads `48e9` as a string; accept it as a number, refuse anything else of the wrong type."""
    kind = str(annotation)
    if kind in ("float", "int"):
        if isinstance(value, bool):
            raise CatalogError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise CatalogError(f"{where}: expected a number, got {value!r}") from None
        if kind == "int":
            if number != int(number):
                raise CatalogError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number
    if kind == "bool" and not isinstance(value, bool):
        raise CatalogError(f"{where}: expected true or false, got {value!r}")
    return value


def model_from_mapping(name: str, entry: dict[str, Any], where: str = "inline model") -> ModelSpec:
    """An inline model mapping from an experiment file (same fields as models.yaml)."""
    return _build(ModelSpec, name, entry, Path(where))


def load_catalog(directory: Path | str | None = None) -> Catalog:
    """Read gpus.yaml, models.yaml, datasets.yaml and platforms.yaml from a workloads directory."""
    return _load_catalog(str(Path(directory) if directory else WORKLOADS_DIR))


@lru_cache(maxsize=4)
def _load_catalog(directory: str) -> Catalog:
    root = Path(directory)
    gpus = {n: _build(GpuSpec, n, e, root / "gpus.yaml") for n, e in _read_yaml(root / "gpus.yaml").items()}
    models = {n: _build(ModelSpec, n, e, root / "models.yaml") for n, e in _read_yaml(root / "models.yaml").items()}
    datasets = _read_yaml(root / "datasets.yaml")
    platforms = _read_yaml(root / "platforms.yaml")
    return Catalog(gpus=gpus, models=models, datasets=datasets, platforms=platforms)
