"""Reading an experiment: YAML file, `--set` overrides, user catalogs, platform presets, then validation.

Every error is a ConfigError that names the file, the dotted field path and what was expected, so the CLI
can print it and exit 2 without a traceback. Also writes the resolved config back as YAML (`dump_config`).
What a valid experiment is lives in models.py; the wording of pydantic errors in messages.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sim import yaml_io
from sim.catalog import Catalog, CatalogError, load_catalog, suggest, with_user_catalogs
from sim.config.messages import format_validation_error
from sim.config.models import ExperimentConfig
from sim.errors import ConfigError


def apply_overrides(raw: dict[str, Any], overrides: list[str], file: str = "--set") -> dict[str, Any]:
    """Apply `dotted.key=value` overrides (values parsed as YAML) to a raw config mapping."""
    data = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty part in the key {key!r}")
        try:
            value = yaml_io.load(text) if text.strip() else None
        except yaml_io.YamlError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML{exc.where}: {exc.problem}") from None
        set_path(data, parts, value, origin=f"--set {item!r}")
    return data


def set_path(data: dict[str, Any], parts: list[str], value: Any, origin: str) -> None:
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts[:i])} is not a mapping")
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        node = nxt
    if not isinstance(node, dict):
        raise ConfigError(f"{origin}: {'.'.join(parts[:-1])} is not a mapping")
    node[parts[-1]] = value


def read_yaml_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected an experiment YAML file")
    try:
        data = yaml_io.load(path.read_text())
    except yaml_io.YamlError as exc:
        raise ConfigError(f"{path}: malformed YAML{exc.where}: {exc.problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of experiment keys at the top level, got {type(data).__name__}")
    return data


def merge_preset(raw: dict[str, Any], catalog: Catalog, file: str) -> dict[str, Any]:
    """`platform.preset` supplies defaults; keys written in the experiment file override them."""
    platform = raw.get("platform")
    if not isinstance(platform, dict) or platform.get("preset") is None:
        return raw
    name = platform["preset"]
    if not isinstance(name, str) or name not in catalog.platforms:
        known = ", ".join(sorted(catalog.platforms))
        hint = suggest(name, list(catalog.platforms)) if isinstance(name, str) else ""
        raise ConfigError(f"{file}: platform.preset: unknown preset {name!r}{hint}; expected one of: {known} (workloads/platforms.yaml)")
    preset = {k: v for k, v in catalog.platforms[name].items() if k not in ("sources", "notes", "source", "description")}
    merged = yaml_io.deep_merge(preset, platform)
    return {**raw, "platform": merged}



def resolve_catalog(raw: dict[str, Any], file: str, base_dir: Path | None = None) -> Catalog:
    """The packaged catalog with the experiment's `catalogs:` files merged on top (paths relative to `base_dir`).

    `base_dir` defaults to the directory of `file` when that is an existing file, else the working directory.
    """
    paths = raw.get("catalogs", [])
    if paths is None:
        paths = []
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"{file}: catalogs: expected a list of catalog file paths, got {paths!r}")
    if not paths:
        return load_catalog()
    if base_dir is None:
        here = Path(file)
        base_dir = here.resolve().parent if here.is_file() else Path.cwd()
    resolved = [Path(p) if Path(p).is_absolute() else base_dir / p for p in paths]
    try:
        return with_user_catalogs(resolved)
    except CatalogError as exc:
        index = next((i for i, p in enumerate(resolved) if str(exc).startswith(str(p))), None)
        where = f"catalogs[{index}]: " if index is not None else "catalogs: "
        raise ConfigError(f"{file}: {where}{exc}") from None


def add_catalogs(raw: dict[str, Any], paths: list[str], file: str = "--catalog") -> dict[str, Any]:
    """Append `--catalog` files (relative to the working directory) to the experiment's `catalogs:` list."""
    if not paths:
        return raw
    current = raw.get("catalogs") or []
    if not isinstance(current, list):
        raise ConfigError(f"{file}: catalogs: expected a list of catalog file paths, got {current!r}")
    return {**raw, "catalogs": [*current, *(str(Path(p).resolve()) for p in paths)]}


def validate(raw: dict[str, Any], file: str, catalog: Catalog | None = None) -> ExperimentConfig:
    """Validate a raw mapping; errors become one ConfigError naming file and field paths.

    Without `catalog`, the packaged catalog plus the raw mapping's `catalogs:` files is used.
    """
    catalog = catalog if catalog is not None else resolve_catalog(raw, file)
    raw = merge_preset(raw, catalog, file)
    try:
        return ExperimentConfig.model_validate(raw, context={"catalog": catalog})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, file)) from None
    except CatalogError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def load_config(path: str | Path, overrides: list[str] | None = None, catalog: Catalog | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment file (its `catalogs:` resolved relative to the file)."""
    path = Path(path)
    raw = read_yaml_file(path)
    raw = apply_overrides(raw, overrides or [], file=str(path))
    if catalog is None:
        catalog = resolve_catalog(raw, str(path), path.resolve().parent)
    return validate(raw, str(path), catalog)


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, in field order (written beside every run's results)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the C dumper is ~10x faster when libyaml is there
    return yaml.dump(cfg.model_dump(mode="json"), Dumper=dumper, sort_keys=False)
