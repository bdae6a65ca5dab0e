"""Checks on the catalog data (workloads/gpus.yaml, workloads/models.yaml) and on the loader's errors.

The data tests compare each entry against an independent quantity: a parameter count recomputed from the
architecture, KV bytes from calibration.md 3.2, and ridge points from calibration.md 3.1. A typo in the
YAML makes them fail.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from sim.catalog import WORKLOADS_DIR, CatalogError, GpuSpec, ModelSpec, load_catalog

CATALOG = load_catalog()
RAW_GPUS = yaml.safe_load((WORKLOADS_DIR / "gpus.yaml").read_text())
RAW_MODELS = yaml.safe_load((WORKLOADS_DIR / "models.yaml").read_text())

GPU_NUMERIC_FIELDS = [f.name for f in fields(GpuSpec) if f.name not in ("name", "source")]
MODEL_INT_FIELDS = ["layers", "hidden_size", "heads", "kv_heads", "head_dim", "vocab_size", "intermediate_size"]

REQUIRED_GPUS = ["L40S", "A100-40GB", "A100-80GB", "H100-SXM", "H200", "H20", "H800", "B200", "MI300X", "L4", "A10G"]
REQUIRED_MODELS = [
    "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b",
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "llama-3.1-8b",
    "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "deepseek-llm-7b",
]

# Architecture family by key prefix. It decides which small tensors exist:
#   Qwen2 / Qwen2.5: q, k and v biases
#   Qwen3: no biases, but per-head q_norm and k_norm
#   Llama: neither
# A new model family must be added here, so the parameter-count check cannot silently skip it.
FAMILIES = {
    "qwen2.5-": "qwen2", "qwen2-": "qwen2", "qwen3-": "qwen3", "llama-": "llama", "mixtral-": "llama",
    "deepseek-llm-": "llama",  # LlamaForCausalLM
    "deepseek-r1-distill-qwen-": "qwen2",  # Qwen2ForCausalLM (Qwen2.5-Math bases)
}


def family(name: str) -> str:
    for prefix, fam in FAMILIES.items():
        if name.startswith(prefix):
            return fam
    raise AssertionError(f"model {name!r} has no family in tests/test_catalog.py FAMILIES; add one")


def params_from_architecture(m: ModelSpec) -> int:
    """Total parameters of a Llama-style decoder (RMSNorm, SwiGLU MLP, GQA) from its shape."""
    fam = family(m.name)
    q_out = m.heads * m.head_dim
    kv_out = m.kv_heads * m.head_dim
    attention = m.hidden_size * q_out + 2 * m.hidden_size * kv_out + q_out * m.hidden_size  # q, k, v, o
    if fam == "qwen2":
        attention += q_out + 2 * kv_out  # q/k/v biases (o_proj has none)
    if fam == "qwen3":
        attention += 2 * m.head_dim  # q_norm, k_norm
    if m.experts:  # routed SwiGLU experts + the router
        mlp = m.experts * 3 * m.hidden_size * m.expert_intermediate_size + m.hidden_size * m.experts
    else:
        mlp = 3 * m.hidden_size * m.intermediate_size  # gate, up, down
    norms = 2 * m.hidden_size  # input_layernorm, post_attention_layernorm
    embeddings = m.vocab_size * m.hidden_size * (1 if m.tied_embeddings else 2)
    return embeddings + m.layers * (attention + mlp + norms) + m.hidden_size  # + final norm


# --------------------------------------------------------------------------------------------------
# models.yaml


def test_required_models_present():
    missing = [m for m in REQUIRED_MODELS if m not in CATALOG.models]
    assert not missing, f"models.yaml lacks {missing}"


@pytest.mark.parametrize("name", sorted(RAW_MODELS))
def test_model_param_count_matches_architecture(name):
    m = CATALOG.model(name)
    computed = params_from_architecture(m)
    assert math.isclose(computed, m.params, rel_tol=0.02), (
        f"{name}: architecture gives {computed:,} parameters, params says {m.params:,.0f} "
        f"({(computed - m.params) / m.params:+.2%})"
    )


@pytest.mark.parametrize("name", sorted(RAW_MODELS))
def test_model_field_types_and_source(name):
    raw = RAW_MODELS[name]
    m = CATALOG.model(name)
    assert isinstance(raw["params"], float) and raw["params"] > 0, f"{name}: params must be a positive float"
    for f in MODEL_INT_FIELDS:
        value = getattr(m, f)
        assert isinstance(value, int) and not isinstance(value, bool) and value > 0, f"{name}.{f} = {value!r}"
    assert isinstance(m.tied_embeddings, bool), f"{name}.tied_embeddings must be true/false"
    assert m.heads % m.kv_heads == 0, f"{name}: heads {m.heads} not a multiple of kv_heads {m.kv_heads}"
    assert m.source.strip(), f"{name}: a source is required"


def test_tied_embeddings_follow_the_published_configs():
    # Qwen2.5 ties word embeddings only for 0.5B/1.5B/3B, Qwen3 for 4B (not 8B and larger), Llama 3.2 for 3B;
    # Llama 2/3/3.1, Qwen2.5 >= 7B, DeepSeek LLM and the R1 distills (Qwen2.5-Math bases) do not.
    tied = {"qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen3-4b", "llama-3.2-3b"}
    assert {n for n, m in CATALOG.models.items() if m.tied_embeddings} == tied


@pytest.mark.parametrize(
    "name, layers, hidden, heads, kv_heads, ffn, vocab",
    # config.json values of the added models, as copied in citsjtu2020/LLM-Prof sglang/Model_Config.md (Qwen3,
    # Llama 3.2) and the DeepSeek LLM paper's table 2 (deepseek-llm-7b); a typo in models.yaml fails here and,
    # independently, in the parameter-count check above.
    [
        ("qwen3-4b", 36, 2560, 32, 8, 9728, 151936),
        ("qwen3-14b", 40, 5120, 40, 8, 17408, 151936),
        ("qwen3-32b", 64, 5120, 64, 8, 25600, 151936),
        ("llama-3.2-3b", 28, 3072, 24, 8, 8192, 128256),
        ("deepseek-llm-7b", 30, 4096, 32, 32, 11008, 102400),
    ],
)
def test_added_model_shapes(name, layers, hidden, heads, kv_heads, ffn, vocab):
    m = CATALOG.model(name)
    assert (m.layers, m.hidden_size, m.heads, m.kv_heads, m.intermediate_size, m.vocab_size) == (layers, hidden, heads, kv_heads, ffn, vocab)


def test_qwen3_head_dim_is_not_hidden_over_heads():
    # Qwen3 configs set head_dim 128 explicitly; for 32B that makes the attention 8,192 wide on a 5,120 stream.
    m = CATALOG.model("qwen3-32b")
    assert m.head_dim == 128 and m.heads * m.head_dim == 8192 != m.hidden_size
    assert m.kv_bytes_per_token == 2 * 64 * 8 * 128 * 2  # 256 KiB per token in bf16


@pytest.mark.parametrize("name, expected", [("qwen2.5-7b", 2 * 28 * 4 * 128 * 2), ("qwen2.5-3b", 2 * 36 * 2 * 128 * 2)])
def test_kv_bytes_per_token_matches_calibration(name, expected):
    # calibration.md 3.2: Qwen2.5-7B 56 KiB = 57,344 B; Qwen2.5-3B 36 KiB = 36,864 B (bf16 K and V).
    assert expected == {"qwen2.5-7b": 57344, "qwen2.5-3b": 36864}[name]
    assert CATALOG.model(name).kv_bytes_per_token == expected


def test_weight_bytes_match_calibration():
    # calibration.md 3.2 / rlhfless.md 6.1: bf16 weights ~6.2 GB (3B) and ~15.2 GB (7B).
    assert CATALOG.model("qwen2.5-3b").weight_bytes == pytest.approx(6.2e9, rel=0.01)
    assert CATALOG.model("qwen2.5-7b").weight_bytes == pytest.approx(15.2e9, rel=0.01)


# --------------------------------------------------------------------------------------------------
# gpus.yaml


def test_required_gpus_present():
    missing = [g for g in REQUIRED_GPUS if g not in CATALOG.gpus]
    assert not missing, f"gpus.yaml lacks {missing}"


@pytest.mark.parametrize("name", sorted(RAW_GPUS))
def test_gpu_fields_positive_numbers_with_sources(name):
    raw = RAW_GPUS[name]
    gpu = CATALOG.gpu(name)
    sources = raw.get("sources") or {}
    for f in GPU_NUMERIC_FIELDS:
        value = getattr(gpu, f)
        # PyYAML reads `48e9` as the string '48e9'; the loader does not convert, so check here.
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name}.{f} = {value!r} is not a number"
        assert value > 0, f"{name}.{f} = {value!r} must be positive"
        assert str(sources.get(f, "")).strip(), f"{name}: no source for {f} under `sources:`"
    assert isinstance(gpu.gpus_per_node, int), f"{name}.gpus_per_node must be an integer"
    assert gpu.source.strip()


@pytest.mark.parametrize(
    "name, ridge",
    # calibration.md 3.1: ridge point = dense BF16 FLOP/s / memory bandwidth (FLOP per byte).
    [("L40S", 419), ("A100-40GB", 201), ("A100-80GB", 153), ("H100-SXM", 295), ("H200", 206)],
)
def test_ridge_point_matches_calibration(name, ridge):
    gpu = CATALOG.gpu(name)
    assert gpu.bf16_flops / gpu.hbm_bandwidth_bytes_per_s == pytest.approx(ridge, rel=0.03)


@pytest.mark.parametrize(
    "name, dense_flops, memory_bw",
    # the vendor figures cited in gpus.yaml (dense BF16 FLOP/s, memory bytes/s): the ridge point is their ratio
    [("H20", 148e12, 4.0e12), ("H800", 989.4e12, 3.35e12), ("B200", 2.25e15, 8.0e12), ("MI300X", 1307.4e12, 5.3e12),
     ("L4", 121e12, 300e9), ("A10G", 70e12, 600e9)],
)
def test_added_gpu_ridge_points(name, dense_flops, memory_bw):
    gpu = CATALOG.gpu(name)
    assert gpu.bf16_flops / gpu.hbm_bandwidth_bytes_per_s == pytest.approx(dense_flops / memory_bw, rel=1e-9)
    # a sparsity figure written by mistake would double the ridge point; none of these parts exceeds 450
    assert 30 < gpu.bf16_flops / gpu.hbm_bandwidth_bytes_per_s < 450


def test_bandwidths_are_one_direction():
    # NVLink 4 is 900 GB/s bidirectional and NVLink 3 is 600 GB/s; the catalog stores one direction.
    assert CATALOG.gpu("H100-SXM").intra_node_bandwidth_bytes_per_s == 450e9
    assert CATALOG.gpu("H200").intra_node_bandwidth_bytes_per_s == 450e9
    assert CATALOG.gpu("A100-80GB").intra_node_bandwidth_bytes_per_s == 300e9
    # L40S has no NVLink: PCIe Gen4 x16, 64 GB/s bidirectional.
    assert CATALOG.gpu("L40S").intra_node_bandwidth_bytes_per_s == 32e9
    # g6e.48xlarge 400 Gbps, p5.48xlarge 3200 Gbps.
    assert CATALOG.gpu("L40S").inter_node_bandwidth_bytes_per_s == 400e9 / 8
    assert CATALOG.gpu("H100-SXM").inter_node_bandwidth_bytes_per_s == 3200e9 / 8
    # H800: NVLink cut to 400 GB/s bidirectional; B200: NVLink 5 1.8 TB/s; MI300X: 896 GB/s Infinity Fabric
    assert CATALOG.gpu("H800").intra_node_bandwidth_bytes_per_s == 400e9 / 2
    assert CATALOG.gpu("B200").intra_node_bandwidth_bytes_per_s == 1.8e12 / 2
    assert CATALOG.gpu("MI300X").intra_node_bandwidth_bytes_per_s == 896e9 / 2
    assert CATALOG.gpu("L4").inter_node_bandwidth_bytes_per_s == CATALOG.gpu("A10G").inter_node_bandwidth_bytes_per_s == 100e9 / 8


def test_prices_match_calibration_instance_prices():
    # calibration.md 5.1: instance $/h divided by 8 GPUs.
    expected = {"L40S": 30.131, "A100-40GB": 32.773, "A100-80GB": 40.966, "H100-SXM": 98.32, "H200": 118.02}
    for name, per_instance in expected.items():
        gpu = CATALOG.gpu(name)
        assert gpu.price_usd_per_gpu_hour * gpu.gpus_per_node == pytest.approx(per_instance, rel=1e-9), name
    assert CATALOG.gpu("L40S").price_usd_per_gpu_s == pytest.approx(30.131 / 8 / 3600)


def test_host_memory_is_gib_converted():
    assert CATALOG.gpu("L40S").host_memory_bytes == 1536 * 2**30
    assert CATALOG.gpu("A100-40GB").host_memory_bytes == 1152 * 2**30
    assert CATALOG.gpu("H100-SXM").host_memory_bytes == 2048 * 2**30


# --------------------------------------------------------------------------------------------------
# loader errors


def test_unknown_model_name_suggests_closest():
    with pytest.raises(CatalogError) as exc:
        CATALOG.model("qwen2.5-7")
    message = str(exc.value)
    assert "did you mean 'qwen2.5-7b'" in message
    assert "models.yaml" in message


def test_unknown_gpu_name_suggests_closest():
    with pytest.raises(CatalogError, match=r"did you mean 'H100-SXM'"):
        CATALOG.gpu("H100-SMX")


def _write(directory: Path, file: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / file).write_text(text)
    return directory


GOOD_MODEL = """
tiny:
  params: 1000.0
  layers: 1
  hidden_size: 8
  heads: 2
  kv_heads: 1
  head_dim: 4
  vocab_size: 16
  intermediate_size: 32
  tied_embeddings: true
  source: test fixture
"""


def test_fixture_catalog_loads(tmp_path):
    # Control for the next tests: the same fixture without the defect loads cleanly.
    catalog = load_catalog(_write(tmp_path / "good", "models.yaml", GOOD_MODEL))
    assert catalog.model("tiny").kv_bytes_per_token == 2 * 1 * 1 * 4 * 2
    assert catalog.gpus == {}


def test_unknown_field_names_file_and_field(tmp_path):
    bad = GOOD_MODEL + "  hidden: 8\n"
    directory = _write(tmp_path / "unknown_field", "models.yaml", bad)
    with pytest.raises(CatalogError) as exc:
        load_catalog(directory)
    message = str(exc.value)
    assert str(directory / "models.yaml") in message
    assert "'hidden'" in message
    assert "'tiny'" in message


def test_unknown_gpu_field_names_file_and_field(tmp_path):
    text = "X:\n  memory_bytes: 1.0\n  nvlink_gbps: 900\n"
    directory = _write(tmp_path / "gpu_field", "gpus.yaml", text)
    with pytest.raises(CatalogError) as exc:
        load_catalog(directory)
    assert "gpus.yaml" in str(exc.value) and "'nvlink_gbps'" in str(exc.value)


def test_missing_field_is_a_catalog_error(tmp_path):
    text = GOOD_MODEL.replace("  head_dim: 4\n", "")
    directory = _write(tmp_path / "missing_field", "models.yaml", text)
    with pytest.raises(CatalogError, match=r"models\.yaml.*'tiny'.*head_dim"):
        load_catalog(directory)


# --------------------------------------------------------------------------------------------------
# user catalogs (sim.catalog.with_user_catalogs) and inline GPUs

from sim.catalog import gpu_from_mapping, with_user_catalogs  # noqa: E402

USER_GPU = {
    "memory_bytes": 96.0e9, "hbm_bandwidth_bytes_per_s": 1.6e12, "bf16_flops": 500.0e12,
    "intra_node_bandwidth_bytes_per_s": 64.0e9, "inter_node_bandwidth_bytes_per_s": 50.0e9,
    "host_to_gpu_bandwidth_bytes_per_s": 64.0e9, "price_usd_per_gpu_hour": 2.5, "host_memory_bytes": 1.0e12,
    "gpus_per_node": 4, "sources": {"all": "test fixture"},
}  # fmt: skip


def _user_catalog(tmp_path: Path, data: dict, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_user_catalog_adds_and_overrides_entries(tmp_path):
    path = _user_catalog(tmp_path, {
        "gpus": {"X1": USER_GPU, "H100-SXM": {"base": "H100-SXM", "price_usd_per_gpu_hour": 6.88}},
        "models": {"tiny": yaml.safe_load(GOOD_MODEL)["tiny"], "qwen-wide": {"base": "qwen2.5-3b", "intermediate_size": 22016}},
        "datasets": {"gsm8k-long": {"base": "gsm8k", "response_tokens": {"median": 900}}},
        "platforms": {"cheap": {"base": "runpod", "keep_alive_s": 1.0}},
    })  # fmt: skip
    cat = with_user_catalogs([path])
    assert cat.gpu("X1").gpus_per_node == 4 and cat.gpu("X1").memory_bytes == 96e9
    # `base:` changes only the fields it writes
    h100 = cat.gpu("H100-SXM")
    assert h100.price_usd_per_gpu_hour == 6.88 and h100.hbm_bandwidth_bytes_per_s == CATALOG.gpu("H100-SXM").hbm_bandwidth_bytes_per_s
    assert cat.model("tiny").kv_bytes_per_token == 2 * 1 * 1 * 4 * 2
    wide = cat.model("qwen-wide")
    assert wide.intermediate_size == 22016 and wide.layers == CATALOG.model("qwen2.5-3b").layers
    # nested mappings merge key by key
    assert cat.dataset("gsm8k-long")["response_tokens"]["median"] == 900
    assert cat.dataset("gsm8k-long")["response_tokens"]["sigma_epoch"] == CATALOG.dataset("gsm8k")["response_tokens"]["sigma_epoch"]
    assert cat.platform("cheap")["keep_alive_s"] == 1.0 and cat.platform("cheap")["kind"] == "serverless"
    # the packaged catalog is untouched
    assert CATALOG.gpu("H100-SXM").price_usd_per_gpu_hour == 12.29 and "X1" not in CATALOG.gpus


def test_later_user_catalog_wins(tmp_path):
    first = _user_catalog(tmp_path, {"gpus": {"X1": USER_GPU}}, "a.yaml")
    second = _user_catalog(tmp_path, {"gpus": {"X1": {"base": "X1", "price_usd_per_gpu_hour": 9.0}}}, "b.yaml")
    assert with_user_catalogs([first, second]).gpu("X1").price_usd_per_gpu_hour == 9.0
    assert with_user_catalogs([second, first], base=with_user_catalogs([first])).gpu("X1").price_usd_per_gpu_hour == 2.5


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"gpu": {"X1": USER_GPU}}, "gpu: unknown section (did you mean 'gpus'?)"),
        ({"gpus": [USER_GPU]}, "gpus: expected a mapping of names to entries"),
        ({"gpus": {"X1": {k: v for k, v in USER_GPU.items() if k != "bf16_flops"}}}, "gpus.X1: missing field(s) bf16_flops"),
        ({"gpus": {"X1": {**USER_GPU, "memory_bytes": 96}}}, "gpus.X1.memory_bytes: 96 is implausibly small: the field is in bytes"),
        ({"gpus": {"X1": {**USER_GPU, "memory_bytes": "96 GB"}}}, "gpus.X1.memory_bytes: expected a number, got '96 GB' (the field is in bytes"),
        ({"gpus": {"X1": {**USER_GPU, "inter_node_bandwidth_bytes_per_s": 400}}}, "gpus.X1.inter_node_bandwidth_bytes_per_s: 400 is implausibly small"),
        ({"gpus": {"X1": {**USER_GPU, "gpus_per_node": 2.5}}}, "gpus.X1.gpus_per_node: expected an integer"),
        ({"gpus": {"X1": {**USER_GPU, "nvlink": 1}}}, "gpus.X1: unknown field(s) ['nvlink']"),
        ({"gpus": {"X1": {"base": "H100-SMX"}}}, "gpus.X1.base: unknown GPU 'H100-SMX' (did you mean 'H100-SXM'?)"),
        ({"models": {"m": {"base": "qwen2.5-3b", "params": 3.1}}}, "models.m.params: 3.1 is smaller than the embedding matrix alone"),
        ({"models": {"m": {"base": "qwen2.5-3b", "tied_embeddings": "yes"}}}, "models.m.tied_embeddings: expected true or false"),
        ({"datasets": {"d": {"base": "gsm8k", "num_prompts": 0}}}, "datasets.d: num_prompts: must be >= 1"),
        ({"datasets": {"d": {"base": "gsm8k", "response_tokens": {"sigma": 0.3}}}}, "datasets.d: response_tokens: unknown field(s) ['sigma']"),
        ({"platforms": {"p": {"keep_alive_s": -1}}}, "platforms.p.keep_alive_s: Input should be greater than or equal to 0"),
        ({"platforms": {"p": {"billing": {"granularity": 1}}}}, "platforms.p.billing.granularity: unknown key"),
    ],
)
def test_bad_user_catalog_names_file_and_path(tmp_path, data, expected):
    path = _user_catalog(tmp_path, data)
    with pytest.raises(CatalogError) as exc:
        with_user_catalogs([path])
    assert str(exc.value).startswith(f"{path}: "), str(exc.value)
    assert expected in str(exc.value)


def test_user_catalog_file_errors(tmp_path):
    with pytest.raises(CatalogError, match="no such catalog file"):
        with_user_catalogs([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [unclosed\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml: malformed YAML"):
        with_user_catalogs([bad])
    top = _user_catalog(tmp_path, {"gpus": {}}, "empty.yaml")
    assert with_user_catalogs([top]).gpus == CATALOG.gpus  # an empty section adds nothing


def test_inline_gpu_mapping():
    gpu = gpu_from_mapping({"name": "L40S-cheap", "base": "L40S", "price_usd_per_gpu_hour": 1.0}, CATALOG)
    assert gpu.name == "L40S-cheap" and gpu.price_usd_per_gpu_hour == 1.0 and gpu.memory_bytes == 48e9
    assert gpu_from_mapping(dict(USER_GPU), CATALOG).name == "cluster.gpu"
    with pytest.raises(CatalogError, match=r"^cluster\.gpu\.hbm_bandwidth_bytes_per_s: 1\.6 is implausibly small"):
        gpu_from_mapping({**USER_GPU, "hbm_bandwidth_bytes_per_s": 1.6}, CATALOG)


def test_a_catalog_file_that_repeats_a_key_is_refused(tmp_path: Path) -> None:
    for name in ("gpus.yaml", "models.yaml", "datasets.yaml", "platforms.yaml"):
        (tmp_path / name).write_text((WORKLOADS_DIR / name).read_text())
    lines = (tmp_path / "gpus.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("price_usd_per_gpu_hour:"))
    lines.insert(at + 1, lines[at])  # the same field twice in one entry
    (tmp_path / "gpus.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'gpus.yaml'}: malformed YAML at line {at + 2}, column ")
    assert f"key 'price_usd_per_gpu_hour' repeats the key at line {at + 1}," in msg


def test_the_catalog_is_the_same_without_the_c_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sim import yaml_io

    for name in ("gpus.yaml", "models.yaml", "datasets.yaml", "platforms.yaml"):
        (tmp_path / name).write_text((WORKLOADS_DIR / name).read_text())
    monkeypatch.setattr(yaml_io, "StrictCSafeLoader", None)
    assert load_catalog(tmp_path) == CATALOG
