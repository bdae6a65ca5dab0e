"""Catalogs of GPU types, model architectures, datasets and platform presets: `workloads/*.yaml` + user catalogs.

Every entry is plain data with its source recorded beside it in the YAML. This module only loads,
type-checks and merges the files (the packaged ones, then the user's, each YAML file read by `_read_yaml`);
what the numbers mean for timing lives in `sim/perf/`, for lengths in `sim/workload/`.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from sim import yaml_io

from sim.errors import CatalogError  # noqa: F401 (re-exported)

WORKLOADS_DIR = Path(__file__).resolve().parent.parent / "workloads"
BYTES_PER_GB = 1e9


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


def _build(cls: type, name: str, entry: Any, path: Path, prefix: str | None = None) -> Any:
    """A GpuSpec or ModelSpec from a YAML entry; errors name the file and the entry.

    Packaged files say `FILE: entry 'NAME' field 'x'`; with `prefix` (a user catalog's `FILE: gpus.NAME`, an
    inline mapping's `cluster.gpu`) errors name the dotted path `PREFIX.x`.
    """
    at = prefix if prefix else f"{path}: entry {name!r}"

    def where(key: str) -> str:
        return f"{prefix}.{key}" if prefix else f"{path}: entry {name!r} field {key!r}"

    if not isinstance(entry, dict):
        raise CatalogError(f"{at}: must be a mapping")
    known = {f.name for f in fields(cls)} - {"name"}
    extra = set(entry) - known - {"notes", "sources"}
    if extra:
        raise CatalogError(f"{at}: unknown field(s) {sorted(extra)}; expected {sorted(known)}")
    kwargs = {k: v for k, v in entry.items() if k in known}
    required = [f.name for f in fields(cls) if f.name != "name" and f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise CatalogError(f"{at}: missing field(s) {', '.join(missing)}")
    types = {f.name: f.type for f in fields(cls)}
    for key, value in kwargs.items():
        try:
            kwargs[key] = _coerce(value, types[key], where(key))
        except CatalogError as exc:
            unit = _GPU_MINIMUM.get(key) if cls is GpuSpec else None
            raise CatalogError(f"{exc} (the field is in {unit[1]}, e.g. {unit[2]})" if unit else str(exc)) from None
    for key, value in kwargs.items():
        _check_unit(cls, key, value, kwargs, where(key), shown=entry[key])
    if "source" not in kwargs and "sources" in entry:
        kwargs["source"] = "; ".join(f"{k}: {v}" for k, v in dict(entry["sources"]).items())
    try:
        return cls(name=name, **kwargs)
    except TypeError as exc:
        raise CatalogError(f"{at}: {exc}") from None


#: least plausible value of a GPU field, and its unit: a smaller number is almost always given in the wrong
#: unit (GB for bytes, GB/s or Gbps for bytes/s, TFLOP/s for FLOP/s)
_GPU_MINIMUM = {
    "memory_bytes": (1e8, "bytes", "96 GB = 96.0e+9"),
    "host_memory_bytes": (1e8, "bytes", "2 TiB = 2199023255552.0"),
    "hbm_bandwidth_bytes_per_s": (1e9, "bytes/s", "4 TB/s = 4.0e+12"),
    "intra_node_bandwidth_bytes_per_s": (1e8, "bytes/s, one direction", "NVLink 4 900 GB/s bidirectional = 450.0e+9"),
    "inter_node_bandwidth_bytes_per_s": (1e8, "bytes/s, one direction", "400 Gbps = 50.0e+9"),
    "host_to_gpu_bandwidth_bytes_per_s": (1e8, "bytes/s, one direction", "PCIe Gen5 x16 = 64.0e+9"),
    "bf16_flops": (1e11, "FLOP/s (dense)", "989 TFLOP/s = 989.0e+12"),
}


def _check_unit(cls: type, key: str, value: Any, entry: dict[str, Any], where: str, shown: Any) -> None:
    """Refuse values that cannot be physical in the field's unit (a GPU memory of 96 bytes, params of 7.6)."""
    if cls is GpuSpec:
        if key in _GPU_MINIMUM:
            low, unit, example = _GPU_MINIMUM[key]
            if value < low:
                raise CatalogError(f"{where}: {shown!r} is implausibly small: the field is in {unit} (e.g. {example})")
        elif key == "price_usd_per_gpu_hour" and value < 0:
            raise CatalogError(f"{where}: must be >= 0 USD per GPU-hour (got {shown!r})")
        elif key == "gpus_per_node" and value < 1:
            raise CatalogError(f"{where}: must be an integer >= 1 (got {shown!r})")
    elif cls is ModelSpec:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0 and key != "experts" and not key.startswith("expert"):
            raise CatalogError(f"{where}: must be > 0 (got {shown!r})")
        if key == "params" and {"vocab_size", "hidden_size"} <= set(entry):
            embedding = float(entry["vocab_size"]) * float(entry["hidden_size"])
            if value < embedding:
                raise CatalogError(
                    f"{where}: {shown!r} is smaller than the embedding matrix alone (vocab_size x hidden_size = {embedding:,.0f}): "
                    "params is a count of parameters, not billions (write 7.6e+9 for 7.6B)"
                )


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


def gpu_from_mapping(entry: Any, catalog: "Catalog", where: str = "cluster.gpu") -> GpuSpec:
    """An inline GPU mapping (same fields as gpus.yaml, optionally `name` and `base: KEY`): errors name `where`."""
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: expected a GPU name or a mapping of gpus.yaml fields, got {entry!r}")
    name = str(entry.get("name", where))
    body = {k: v for k, v in entry.items() if k != "name"}
    body = _with_base(body, "gpus", catalog, where)
    return _build(GpuSpec, name, body, Path(where), prefix=where)


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


# ---------------------------------------------------------------------------------------------- user catalogs

#: top-level sections of a user catalog file
USER_SECTIONS = ("gpus", "models", "datasets", "platforms")
_SECTION_LABEL = {"gpus": "GPU", "models": "model", "datasets": "dataset", "platforms": "platform preset"}


def with_user_catalogs(paths: Iterable[Path | str], base: Catalog | None = None) -> Catalog:
    """The packaged catalog (or `base`) with each user catalog file merged on top, in order (later files win).

    A user catalog is a YAML mapping with any of the sections `gpus:`, `models:`, `datasets:` and
    `platforms:`, each a mapping of names to entries with the fields of the packaged file of that name. An
    entry replaces the one of the same name; `base: NAME` starts it from an existing entry of its section
    and changes only the fields it writes. Every entry is validated like the packaged ones; errors name
    the file and the path (`gpus.H20.memory_bytes`).
    """
    catalog = base if base is not None else load_catalog()
    for path in paths:
        catalog = _merge_file(catalog, Path(path))
    return catalog


def read_user_catalog(path: Path) -> dict[str, Any]:
    """A user catalog file's sections, each checked to be a mapping of names to mappings."""
    if not path.is_file():
        raise CatalogError(f"{path}: no such catalog file" if not path.exists() else f"{path}: not a file")
    try:
        data = _read_yaml(path)
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not a text file") from None
    unknown = [k for k in data if k not in USER_SECTIONS]
    if unknown:
        key = str(unknown[0])
        raise CatalogError(f"{path}: {key}: unknown section{suggest(key, list(USER_SECTIONS))}; expected any of: {', '.join(USER_SECTIONS)}")
    for section, entries in data.items():
        if entries is None:
            data[section] = {}
        elif not isinstance(entries, dict):
            raise CatalogError(f"{path}: {section}: expected a mapping of names to entries, got {type(entries).__name__}")
    return data


def _merge_file(catalog: Catalog, path: Path) -> Catalog:
    data = read_user_catalog(path)
    gpus, models = dict(catalog.gpus), dict(catalog.models)
    datasets, platforms = dict(catalog.datasets), dict(catalog.platforms)
    for name, entry in data.get("gpus", {}).items():
        at = f"{path}: gpus.{name}"
        gpus[str(name)] = _build(GpuSpec, str(name), _with_base(entry, "gpus", catalog, at), path, prefix=at)
    for name, entry in data.get("models", {}).items():
        at = f"{path}: models.{name}"
        models[str(name)] = _build(ModelSpec, str(name), _with_base(entry, "models", catalog, at), path, prefix=at)
    for name, entry in data.get("datasets", {}).items():
        datasets[str(name)] = _check_dataset(str(name), _with_base(entry, "datasets", catalog, f"{path}: datasets.{name}"), path)
    for name, entry in data.get("platforms", {}).items():
        platforms[str(name)] = _check_platform(str(name), _with_base(entry, "platforms", catalog, f"{path}: platforms.{name}"), path)
    return Catalog(gpus=gpus, models=models, datasets=datasets, platforms=platforms)


def _with_base(entry: Any, section: str, catalog: Catalog, where: str) -> Any:
    """Resolve `base: NAME`: the named entry of the catalog so far, with this entry's fields on top."""
    if not isinstance(entry, dict) or "base" not in entry:
        return entry
    name = entry["base"]
    table = getattr(catalog, section)
    if not isinstance(name, str) or name not in table:
        hint = suggest(name, list(table)) if isinstance(name, str) else ""
        raise CatalogError(f"{where}.base: unknown {_SECTION_LABEL[section]} {name!r}{hint}; known: {', '.join(sorted(table))}")
    start = table[name]
    if isinstance(start, (GpuSpec, ModelSpec)):
        start = {f.name: getattr(start, f.name) for f in fields(start) if f.name != "name"}
    own = {k: v for k, v in entry.items() if k != "base"}
    if isinstance(start, dict) and "source" in start and ("sources" in own or "source" in own):
        start = {k: v for k, v in start.items() if k != "source"}
        own.setdefault("notes", f"based on {section}.{name}")
    return yaml_io.deep_merge(start, own)



def _check_dataset(name: str, entry: Any, path: Path) -> dict[str, Any]:
    from sim.errors import WorkloadError
    from sim.workload.entries import parse_dataset

    try:
        parse_dataset(name, entry)
    except WorkloadError as exc:
        raise CatalogError(f"{path}: datasets.{name}: {_strip_dataset_prefix(str(exc), name)}") from None
    return entry


def _strip_dataset_prefix(message: str, name: str) -> str:
    """parse_dataset says `dataset NAME: field x.y: ...`; a catalog error names the path instead."""
    message = message.removeprefix(f"dataset {name}: ")
    return message.removeprefix("field ")


def _check_platform(name: str, entry: Any, path: Path) -> dict[str, Any]:
    from pydantic import ValidationError

    from sim.config.models import PlatformConfig
    from sim.config.messages import format_validation_error

    if not isinstance(entry, dict):
        raise CatalogError(f"{path}: platforms.{name}: expected a mapping of platform fields, got {entry!r}")
    body = {k: v for k, v in entry.items() if k not in ("sources", "notes", "source", "description")}
    if "preset" in body:
        raise CatalogError(f"{path}: platforms.{name}.preset: a preset cannot name another preset (use `base: NAME`)")
    try:
        PlatformConfig.model_validate(body)
    except ValidationError as exc:
        raise CatalogError(format_validation_error(exc, str(path), root=PlatformConfig, prefix=f"platforms.{name}.")) from None
    return entry
