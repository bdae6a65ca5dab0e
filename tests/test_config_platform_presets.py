"""Tests for workloads/platforms.yaml: every preset validates, explicit keys override it, every value is sourced.

A preset is merged under the experiment's own `platform:` keys by sim.config.merge_preset and then
validated by PlatformConfig, so these tests go through sim.config.validate like an experiment file does.
Prices are checked against independent figures: gpus.yaml for the self-hosted preset, and the vendors'
published rates (calibration.md 5.2) for the others.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from sim.catalog import load_catalog
from sim.config import ConfigError, ExperimentConfig, PlatformConfig, load_config, validate

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS_YAML = ROOT / "workloads" / "platforms.yaml"
GPUS_YAML = ROOT / "workloads" / "gpus.yaml"
META_KEYS = {"description", "sources", "notes"}
TAG = re.compile(r"\[(V|S|A|D|R)\]")

PRESETS: dict[str, dict[str, Any]] = yaml.safe_load(PLATFORMS_YAML.read_text())
GPUS: dict[str, dict[str, Any]] = yaml.safe_load(GPUS_YAML.read_text())

MINIMAL: dict[str, Any] = {
    "name": "t",
    "model": "qwen2.5-3b",
    "workload": {"dataset": "gsm8k"},
    "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "L40S"},
    "scheduler": {"name": "verl"},
}


def experiment(platform: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data["platform"] = platform
    return data


def values(preset: dict[str, Any]) -> dict[str, Any]:
    """The preset without its free-text keys: what merge_preset hands to PlatformConfig."""
    return {k: v for k, v in preset.items() if k not in META_KEYS}


def leaves(mapping: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every non-mapping value."""
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, path + ".")
        else:
            yield path, value


def resolved(cfg: ExperimentConfig, dotted: str) -> Any:
    node: Any = cfg.platform
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def config_error(platform: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        validate(experiment(platform), "exp.yaml")
    return str(info.value)


# ------------------------------------------------------------------------------------------- the file


def test_required_presets_exist() -> None:
    assert {"self-hosted", "runpod", "modal"} <= set(PRESETS)


def test_the_simulator_reads_the_same_presets() -> None:
    assert load_catalog().platforms == PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_uses_only_platform_fields(name: str) -> None:
    unknown = set(values(PRESETS[name])) - set(PlatformConfig.model_fields)
    assert not unknown, f"{name}: not PlatformConfig fields: {sorted(unknown)}"
    assert "preset" not in PRESETS[name], "a preset must not name another preset"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_has_a_one_line_description(name: str) -> None:
    description = PRESETS[name].get("description")
    assert isinstance(description, str) and description.strip()
    assert "\n" not in description.strip()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_value_has_a_tagged_source(name: str) -> None:
    preset = PRESETS[name]
    sources = preset.get("sources")
    assert isinstance(sources, dict) and sources, f"{name}: no `sources:` mapping"
    for path, _ in leaves(values(preset)):
        top = path.split(".")[0]
        assert path in sources or top in sources, f"{name}: {path} has no entry in sources (by its path or by {top!r})"
    for key, text in sources.items():
        assert isinstance(text, str) and TAG.search(text), f"{name}: sources.{key} carries no [V]/[S]/[A]/[D]/[R] tag"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_sources_name_only_paths_the_preset_sets(name: str) -> None:
    preset = values(PRESETS[name])
    paths = {p for p, _ in leaves(preset)}
    prefixes = {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 2)}
    stale = set(PRESETS[name]["sources"]) - prefixes
    assert not stale, f"{name}: sources for values the preset does not set: {sorted(stale)}"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_numbers_are_numbers(name: str) -> None:
    """`2.25e9` in YAML is a string; pydantic would coerce it, so catch it here."""
    for path, value in leaves(values(PRESETS[name])):
        assert not (isinstance(value, str) and looks_numeric(value)), f"{name}: {path} = {value!r} is a string; write 2.25e+9"


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_validates_and_gives_its_values(name: str) -> None:
    cfg = validate(experiment({"preset": name}), "exp.yaml")
    assert cfg.platform.preset == name
    for path, value in leaves(values(PRESETS[name])):
        assert resolved(cfg, path) == value, f"{name}: platform.{path}"


def test_explicit_key_overrides_the_preset() -> None:
    cfg = validate(experiment({"preset": "runpod", "keep_alive_s": 30}), "exp.yaml")
    runpod = PRESETS["runpod"]
    assert cfg.platform.keep_alive_s == 30
    assert cfg.platform.billing.model_dump() == runpod["billing"]
    assert cfg.platform.prices_usd_per_gpu_hour == runpod["prices_usd_per_gpu_hour"]


def test_nested_override_keeps_the_other_preset_keys() -> None:
    cfg = validate(experiment({"preset": "runpod", "cold_start": {"container_s": 1}}), "exp.yaml")
    runpod = PRESETS["runpod"]["cold_start"]
    assert cfg.platform.cold_start.container_s == 1
    assert cfg.platform.cold_start.engine_init_s == runpod["engine_init_s"]
    assert cfg.platform.cold_start.weights_from == runpod["weights_from"]


def test_set_override_on_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment({"preset": "modal"})))
    cfg = load_config(path, ["platform.keep_alive_s=10", "platform.cold_start.weights_from=dram"])
    assert cfg.platform.keep_alive_s == 10
    assert cfg.platform.cold_start.weights_from == "dram"
    assert cfg.platform.cold_start.engine_init_s == PRESETS["modal"]["cold_start"]["engine_init_s"]


def test_unknown_preset_names_the_field_with_a_hint() -> None:
    msg = config_error({"preset": "runpd"})
    assert msg.startswith("exp.yaml: platform.preset:")
    assert "'runpd'" in msg and "did you mean 'runpod'?" in msg and "platforms.yaml" in msg


def test_negative_keep_alive_override_names_the_field() -> None:
    msg = config_error({"preset": "runpod", "keep_alive_s": -1})
    assert "exp.yaml: platform.keep_alive_s:" in msg and "greater than or equal to 0" in msg


def test_unknown_weights_tier_names_the_field() -> None:
    msg = config_error({"preset": "modal", "cold_start": {"weights_from": "tape"}})
    assert "exp.yaml: platform.cold_start.weights_from:" in msg and "'tape'" in msg


# ------------------------------------------------------------------------------------------- the numbers


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_price_keys_are_catalog_gpus(name: str) -> None:
    prices = PRESETS[name].get("prices_usd_per_gpu_hour", {})
    assert set(prices) <= set(GPUS), f"{name}: prices for GPUs not in gpus.yaml: {sorted(set(prices) - set(GPUS))}"
    assert all(isinstance(p, (int, float)) and p > 0 for p in prices.values())


@pytest.mark.parametrize("name", ["self-hosted", "ec2-like"])
def test_aws_prices_agree_with_gpus_yaml(name: str) -> None:
    if name not in PRESETS:
        pytest.skip(f"no {name} preset")
    prices = PRESETS[name]["prices_usd_per_gpu_hour"]
    # every GPU sold as an AWS on-demand node; the others (H20, H800, B200, MI300X) take gpus.yaml's price
    assert set(prices) == set(GPUS) - {"H20", "H800", "B200", "MI300X"}
    for gpu, price in prices.items():
        assert price == pytest.approx(GPUS[gpu]["price_usd_per_gpu_hour"], rel=1e-12), gpu


def test_runpod_prices_are_the_flex_per_second_rates() -> None:
    """docs.runpod.io/serverless/pricing flex $/s (calibration.md 5.2); H100 PRO taken as H100-SXM."""
    per_s = {"H100-SXM": 0.00116, "A100-80GB": 0.00076, "L40S": 0.00053, "H200": 0.00155}
    prices = PRESETS["runpod"]["prices_usd_per_gpu_hour"]
    assert set(prices) == set(per_s)  # A100-40GB is not on RunPod's serverless list
    for gpu, rate in per_s.items():
        assert prices[gpu] == pytest.approx(rate * 3600, rel=1e-9), gpu


def test_modal_prices() -> None:
    """techbytes.app matrix verified against modal.com (calibration.md 5.2); H100 $0.001097/s."""
    prices = PRESETS["modal"]["prices_usd_per_gpu_hour"]
    assert prices == pytest.approx({"H100-SXM": 3.9492, "A100-80GB": 2.4984, "L40S": 1.9512})
    assert prices["H100-SXM"] == pytest.approx(0.001097 * 3600, rel=1e-3)


def test_vendor_billing_rules() -> None:
    runpod, modal = PRESETS["runpod"], PRESETS["modal"]
    assert runpod["keep_alive_s"] == 5  # default idle timeout [V]
    assert runpod["billing"] == {"granularity_s": 1.0, "minimum_s": 0.0, "bill_cold_start": True}
    assert modal["billing"]["granularity_s"] == 1.0
    if "ec2-like" in PRESETS:
        assert PRESETS["ec2-like"]["billing"]["minimum_s"] == 60  # EC2 per-second billing, 60 s minimum [S]


def cold_start_s(name: str, model: str) -> float:
    """container + engine init + one instance loading the whole model from the preset's tier."""
    cfg = validate(experiment({"preset": name}), "exp.yaml")
    cs, storage = cfg.platform.cold_start, cfg.platform.storage
    bandwidth = {"ssd": storage.ssd_bytes_per_s, "remote": storage.remote_bytes_per_s}[cs.weights_from]
    return cs.container_s + cs.engine_init_s + load_catalog().model(model).weight_bytes / bandwidth


def test_modal_cold_start_split_matches_the_mean_vllm_boot() -> None:
    """Modal's vLLM boot without snapshots: 95.7 s mean (calibration.md 4.2); checked for Qwen2.5-7B."""
    assert cold_start_s("modal", "qwen2.5-7b") == pytest.approx(95.7, rel=0.10)


@pytest.mark.parametrize("name", ["self-hosted", "runpod"])
def test_warm_host_cold_start_is_in_the_suggested_range(name: str) -> None:
    """A warm container with weights on local NVMe: 15-30 s for 7B-32B vLLM (calibration.md, suggested defaults)."""
    assert 15.0 <= cold_start_s(name, "qwen2.5-7b") <= 30.0
