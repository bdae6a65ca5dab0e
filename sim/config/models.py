"""The experiment file (design.md section 6) as frozen pydantic models, with their field and cross-field checks.

Catalog names (model, GPU, dataset) are checked against the catalog passed in the validation context
(`validate` in sim.config.loading supplies it). Reading YAML, `--set` overrides, presets and the wording of
errors live in loading.py and messages.py; this module only says what a valid experiment is.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sim.catalog import Catalog, CatalogError, gpu_from_mapping, suggest


class _FieldError(ValueError):
    """A cross-field check that knows which field is wrong."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def _catalog(info: ValidationInfo) -> Catalog | None:
    return (info.context or {}).get("catalog")


# ---------------------------------------------------------------------------------------------- loading



class Strict(BaseModel):
    # unknown keys are errors; so are .inf and .nan (a duration or a rate that is not a finite number would
    # end in an internal error or in results that are not numbers)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


PositiveInt = Field(ge=1)


class DynamicSamplingConfig(Strict):
    """DAPO's dynamic sampling: generation rounds until the step holds `prompts_per_iteration` groups whose
    rewards are not all equal (docs/model.md, "Dynamic sampling")."""

    enabled: bool | None = Field(None, description="null: the recipe's default (on for dapo, off otherwise)")
    filtered_fraction: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="share of groups whose rewards are all equal (all correct or all wrong), drawn per group; "
        "it depends on the model and the data, and no public per-step figure was found: 0.5 is an assumption (docs/model.md section 15)",
    )
    oversample: float = Field(
        3.0,
        ge=1,
        description="prompts drawn by a generation round, as a multiple of prompts_per_iteration "
        "(verl recipe/dapo/run_dapo_qwen2.5_32b.sh: gen_prompt_bsz = 3 x train_prompt_bsz)",
    )
    refill: Literal["batch", "shortfall"] = Field(
        "batch",
        description="later rounds draw a whole generation batch again (verl's recipe: the dataloader yields fixed batches), "
        "or only the prompts expected to fill the shortfall at the keep rate seen so far in the run",
    )
    max_rounds: int = Field(
        10,
        ge=0,
        description="most generation rounds per step, 0 = no limit (recipe/dapo: max_num_gen_batches=10); a step that "
        "reaches it trains on the groups it kept (verl stops with an error there) and is counted in summary.json",
    )


class WorkloadConfig(Strict):
    dataset: Union[str, dict[str, Any], None] = Field(
        None, description="a key of workloads/datasets.yaml, or an inline mapping of the same fields (docs/workload.md); exactly one of dataset or trace"
    )
    trace: str | None = Field(None, description="a response-length trace CSV to replay (relative to the experiment file); exactly one of dataset or trace")
    algorithm: Literal["grpo", "ppo", "dapo", "rloo", "reinforce_pp"] = Field(
        "grpo", description="the RL recipe: which roles and phases run, and the defaults of the keys marked `null: the recipe's` (Recipes, below)"
    )
    prompts_per_iteration: int = Field(128, ge=1, description="prompts rolled out per iteration (each sampled samples_per_prompt times)")
    samples_per_prompt: int | None = Field(None, ge=1, description="group size n; null: the recipe's (Recipes, below)")
    max_prompt_tokens: int = Field(1024, ge=1, description="prompts are truncated to this many tokens")
    max_response_tokens: int = Field(2048, ge=1, description="responses stop at this many tokens")
    ppo_epochs: int = Field(1, ge=1, description="passes over the iteration's samples in training")
    mini_batches: int | None = Field(
        None, ge=1, description="optimizer steps per epoch (the samples are split into this many mini-batches); null: the recipe's"
    )
    kl: Literal["loss", "reward", "none"] | None = Field(
        None,
        description="the KL term against a frozen reference model: in the loss, in the reward, or none (no reference model, "
        "no reference pass); null: the recipe's",
    )
    old_logprob: Union[Literal["auto"], bool] = Field(
        "auto",
        description="recompute the actor's old log-probs before training: auto = unless the step is on-policy "
        "(ppo_epochs x mini_batches == 1) and the KL is not in the reward; false = use the rollout engine's log-probs",
    )
    dynamic_sampling: DynamicSamplingConfig = Field(
        DynamicSamplingConfig(), description="DAPO's over-sampling and filtering of groups whose rewards are all equal"
    )
    dataset_prompts: int | None = Field(
        None, ge=1, description="use only the first N prompts of the dataset, so that epochs (and length history) recur sooner"
    )

    @field_validator("old_logprob", mode="before")
    @classmethod
    def _auto_or_bool(cls, v: Any) -> Any:
        if v == "auto" or isinstance(v, bool):
            return v
        raise ValueError("expected auto, true or false")

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data: Any) -> Any:
        """Fill the recipe's defaults into the keys left out (or null), so the resolved config shows them."""
        if not isinstance(data, dict):
            return data
        from sim.recipes import RECIPES

        recipe = RECIPES.get(data.get("algorithm", "grpo")) if isinstance(data.get("algorithm", "grpo"), str) else None
        if recipe is None:
            return data  # the `algorithm` field reports the error
        out = dict(data)
        for key in ("samples_per_prompt", "mini_batches", "kl"):
            if out.get(key) is None:
                out[key] = getattr(recipe, key)
        ds = out.get("dynamic_sampling", {})
        if isinstance(ds, dict) and ds.get("enabled") is None:
            out["dynamic_sampling"] = {**ds, "enabled": recipe.dynamic_sampling}
        return out

    @model_validator(mode="after")
    def _one_source(self) -> "WorkloadConfig":
        if (self.dataset is None) == (self.trace is None):
            raise ValueError("exactly one of `dataset` (a datasets.yaml key or mapping) or `trace` (a CSV path) is required")
        if self.dynamic_sampling.enabled:
            why = None
            if self.trace is not None:
                why = "needs a dataset: a trace already holds what was generated, it cannot draw more prompts for extra rounds"
            elif self.group_size < 2:
                why = f"filters groups whose rewards are all equal and needs samples_per_prompt >= 2 (got {self.group_size})"
            if why is not None:
                where = "" if self.algorithm != "dapo" else " (dapo turns it on: set workload.dynamic_sampling.enabled: false to run without it)"
                raise _FieldError("workload.dynamic_sampling.enabled", f"dynamic sampling {why}{where}")
        return self

    @property
    def group_size(self) -> int:
        if self.samples_per_prompt is not None:
            return self.samples_per_prompt
        from sim.recipes import RECIPES

        return RECIPES[self.algorithm].samples_per_prompt


class ClusterConfig(Strict):
    nodes: int = Field(ge=1, description="number of nodes")
    gpu: Union[str, dict[str, Any]] = Field(
        description="a GPU name (workloads/gpus.yaml or a user catalog), or an inline mapping of the same fields, optionally with `name` and `base: NAME` (docs/catalog.md)"
    )
    gpus_per_node: int | None = Field(None, ge=1, description="defaults to the GPU type's usual node size")
    intra_node_bandwidth_bytes_per_s: float | None = Field(None, gt=0, description="GPU-to-GPU bandwidth within a node, one direction; default: the GPU catalog's")
    inter_node_bandwidth_bytes_per_s: float | None = Field(None, gt=0, description="each node's network link, one direction; default: the GPU catalog's")


class ColdStartConfig(Strict):
    container_s: float = Field(5.0, ge=0, description="container start of a cold function instance, before the weight load")
    engine_init_s: float = Field(10.0, ge=0, description="engine initialisation after the weight load")
    weights_from: Literal["remote", "ssd", "dram"] = Field(
        "remote", description="where a cold start loads weights when the node's DRAM cache does not hold them (bandwidths: platform.storage)"
    )


class BillingConfig(Strict):
    granularity_s: float = Field(1.0, gt=0, description="an instance's billed time is rounded up to a multiple of this")
    minimum_s: float = Field(0.0, ge=0, description="least billed time per instance")
    bill_cold_start: bool = Field(True, description="bill from placement (true) or from when the instance is ready (false)")


class StorageConfig(Strict):
    """Where function instances load weights from (bandwidth per node, one direction)."""

    remote_bytes_per_s: float = Field(0.19e9, gt=0, description="object store (S3 mount): 0.19 GB/s, calibration.md 4.3")
    ssd_bytes_per_s: float = Field(2.25e9, gt=0, description="local NVMe: 2.25 GB/s, calibration.md 4.3")


class FailureConfig(Strict):
    mtbf_s: float | None = Field(None, gt=0, description="mean time to failure of a function instance (exponential); null: no failures")


class PlatformConfig(Strict):
    kind: Literal["serverless", "serverful"] = Field(
        "serverless", description="deployment for schedulers that can run either way; built-ins fix their own (verl, rlhfuse: serverful)"
    )
    preset: str | None = Field(None, description="a key of workloads/platforms.yaml whose values are defaults for this section (docs/platforms.md)")
    gpu_sharing: Literal["memory", "exclusive"] = Field(
        "memory",
        description="how function instances hold GPUs: memory = several of the job's instances resident on a GPU while their memory fits, one computing at a time (self-hosted: Ray + vLLM sleep mode + FSDP offload, as the RLHFless testbed); exclusive = whole GPUs per instance (hosted functions: Modal, RunPod)",
    )
    keep_alive_s: float = Field(60.0, ge=0, description="an idle function instance is kept (resident or asleep) this long before release")
    cold_start: ColdStartConfig = Field(ColdStartConfig(), description="cold-start costs of a function instance")
    billing: BillingConfig = Field(BillingConfig(), description="how instance time is billed")
    failures: FailureConfig = Field(FailureConfig(), description="function instance failures")
    storage: StorageConfig = Field(StorageConfig(), description="weight-load bandwidths of the ssd and remote tiers")
    #: idle instances go to sleep at once instead of staying resident: their GPU memory is freed (not
    #: billed), the process and its state stay in host memory, and a later request wakes it by copying the
    #: state back over PCIe plus `wake_s` (vLLM sleep mode / GPU-snapshot style warm pools). With memory
    #: sharing an idle instance also sleeps whenever another needs its memory; exclusive GPUs sleep only
    #: with this switch
    sleep_idle: bool = Field(
        False, description="idle instances sleep in host memory at once instead of staying resident: not billed, woken in wake_s + a copy back over PCIe"
    )
    #: vLLM's sleep-mode benchmarks wake small models (weights copy included) in about 0.1-0.4 s and the
    #: largest (235B, TP) in up to 6 s, which the copy over PCIe explains (blog.vllm.ai/2025/10/26/sleep-mode;
    #: docs/platforms.md); the fixed part is at most ~0.4 s
    wake_s: float = Field(0.4, ge=0, description="fixed cost of waking a sleeping instance, besides copying its state back over PCIe (vLLM sleep mode: docs/platforms.md)")
    price_usd_per_gpu_hour: float | None = Field(None, ge=0, description="overrides the GPU catalog's on-demand price")
    prices_usd_per_gpu_hour: dict[str, float] = Field(
        default_factory=dict, description="per GPU type (a preset's price list); price_usd_per_gpu_hour wins"
    )


class SchedulerConfig(Strict):
    name: str = Field(description="a built-in (verl, rlhfuse, serverless, rlhfless, oracle) or a registered plug-in")
    params: dict[str, Any] = Field({}, description="the scheduler's own parameters, validated by its Params (see below)")


class PerfConfig(Strict):
    model: Literal["roofline", "table"] = Field("roofline", description="roofline: analytic; table: measured decode steps from `table`")
    table: str | None = Field(None, description="CSV of measured decode steps (batch_size, context_tokens, step_s)")
    hbm_efficiency: float | None = Field(None, gt=0, le=1, description="achieved share of HBM bandwidth; default 0.82 (fitted)")
    mfu_prefill: float | None = Field(None, gt=0, le=1, description="prefill model FLOPs utilisation; default 0.5 (assumption)")
    mfu_decode: float | None = Field(None, gt=0, le=1, description="decode model FLOPs utilisation; default 0.5 (assumption)")
    mfu_train: float | None = Field(None, gt=0, le=1, description="training and forward-only inference MFU; default 0.35")
    layer_overhead_s: float | None = Field(None, ge=0, description="fixed cost per layer per decode step or prefill; default 115e-6 (fitted)")
    step_overhead_s: float | None = Field(None, ge=0, description="fixed cost per decode step or prefill; default 0 (fitted)")
    allreduce_latency_s: float | None = Field(None, ge=0, description="latency of one tensor-parallel all-reduce; default 10.4e-6 (fitted)")
    network_efficiency: float | None = Field(None, gt=0, le=1, description="achieved share of link bandwidth; default 0.8 (assumption)")

    @model_validator(mode="after")
    def _table_needs_file(self) -> "PerfConfig":
        if self.model == "table" and not self.table:
            raise ValueError("perf.model 'table' needs `table: path/to/steps.csv`")
        return self


class EngineConfig(Strict):
    mode: Literal["analytic", "step"] = Field("analytic", description="analytic: one event per state change; step: one per decode step (reference, slow)")
    max_num_seqs: int = Field(1024, ge=1, description="most sequences in a replica's running batch")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="default: the scheduler's choice")
    kv_watermark: float = Field(0.01, ge=0, lt=1, description="share of the KV cache kept free (limits admission and growth)")
    prefix_sharing: bool = Field(True, description="samples of a GRPO group on one replica share their prompt's KV")
    admission: Literal["current", "reserve_max"] = Field(
        "current",
        description="KV admission: current = on the tokens a sequence holds now, growing, with preemption (vLLM); reserve_max = reserve max_response_tokens up front (static allocation, for comparison)",
    )


class TrainingConfig(Strict):
    offload: bool = Field(False, description="keep optimizer state in host memory: reloaded before and offloaded after each update")
    micro_batch_tokens: int = Field(8192, ge=1, description="tokens per micro-batch (memory check only)")
    activation_checkpointing: bool = Field(True, description="recompute activations in the backward pass (8·P·T FLOPs instead of 6·P·T)")


class EarlyExitConfig(Strict):
    """Early-exit decoding of the actor's rollouts; docs/early_exit.md gives each default's source."""

    enabled: bool = Field(True, description="false keeps the section but decodes every layer (handy in sweeps)")
    profile: str = Field(description="a layer-exit profile JSON (python -m sim.probe), e.g. traces/exit_profiles/NAME.json")
    # 5%: the early-exit paper's oracle benchmark reports the largest skip ratio within a 5% accuracy loss
    # (arXiv 2603.23701, Table 1, via ../shared/research/early_exit.md section 3); docs/early_exit.md
    max_mismatch: float = Field(
        0.05,
        ge=0,
        le=1,
        description="error budget: the largest share of generated tokens whose exit-layer prediction may differ from the full model's; with threshold null it picks the most aggressive measured threshold within it (0: the oracle stable exit)",
    )
    policy: Literal["max_prob", "margin", "stable"] | None = Field(
        None,
        description="exit rule: a confidence threshold on the top-1 probability or on the top-1 - top-2 margin, or the oracle stable exit; null: whichever measure max_mismatch picks",
    )
    threshold: float | None = Field(
        None, gt=0, le=1, description="an explicit confidence threshold (one the profile measured) for policy max_prob or margin; null: chosen by max_mismatch"
    )
    # about every L/8 layers: ../shared/research/early_exit.md section 7 item 7 (a full-vocabulary check costs several layers)
    exit_every: int | None = Field(
        None, ge=1, description="exits allowed every k layers of the profile, and at its last layer; null: k = round(L/8) of the profile's L layers (about 8 candidate exits)"
    )
    # CALM (arXiv 2207.07061) and DREX deploy a small exit classifier; docs/early_exit.md
    check: Literal["lm_head", "classifier"] = Field(
        "classifier",
        description="cost of one exit check: a small exit classifier (CALM-style, d x 1, ~free), or a full-vocabulary LM-head evaluation (logit-lens confidence, several layers' worth of weight reads)",
    )
    kv_fill: Literal["state_copy", "deferred", "none"] = Field(
        "state_copy", description="KV of skipped layers: recompute K/V projections now (state copy), later (deferred, ~free), or not at all"
    )
    full_depth_baseline: bool = Field(
        True,
        description="also simulate the same run at full depth (same seed and workload) to report the generation time saved; false skips that second simulation (the time-saved keys are then null)",
    )

    @model_validator(mode="after")
    def _policy_and_threshold(self) -> "EarlyExitConfig":
        if self.threshold is not None and self.policy in (None, "stable"):
            which = "null" if self.policy is None else "stable"
            raise _FieldError(
                "early_exit.threshold",
                f"threshold {self.threshold:g} needs policy max_prob or margin (policy is {which}); "
                "leave threshold null to let max_mismatch choose the operating point",
            )
        return self


class ExperimentConfig(Strict):
    name: str = Field(min_length=1, description="experiment name: the results folder DIR/<name>/")
    seed: int = Field(0, ge=0, strict=True, description="seed of every random draw (workload, scheduler, platform): an integer >= 0")
    iterations: int = Field(3, ge=1, description="synchronous RLHF iterations to simulate")
    model: Union[str, dict[str, Any]] = Field(description="the actor: a key of workloads/models.yaml or an inline mapping (docs/catalog.md)")
    critic_model: Union[str, dict[str, Any], None] = Field(None, description="PPO only; default: the actor's model")
    reward_model: Union[str, dict[str, Any], None] = Field(None, description="a learned reward model; null: a rule-based reward on CPU")
    workload: WorkloadConfig = Field(description="prompts, responses and the RL algorithm")
    cluster: ClusterConfig = Field(description="nodes and GPUs")
    platform: PlatformConfig = Field(PlatformConfig(), description="serverless functions (cold starts, keep-alive, billing) or serverful GPUs")
    scheduler: SchedulerConfig = Field(description="the scheduler and its parameters")
    perf: PerfConfig = Field(PerfConfig(), description="the latency model and its efficiency factors")
    engine: EngineConfig = Field(EngineConfig(), description="the rollout engine (vLLM-like continuous batching)")
    training: TrainingConfig = Field(TrainingConfig(), description="FSDP training options")
    early_exit: EarlyExitConfig | None = Field(None, description="early-exit decoding of the actor from a layer-exit profile; null: off")
    compare: list[str] = Field([], description="also run the same config under these schedulers (default params); ratios in summary.json")
    sweep: dict[str, list[Any]] = Field({}, description="a grid: dotted config path -> list of values (docs/scaling.md)")
    catalogs: list[str] = Field(
        [], description="user catalog YAML files (relative to this file) that add or override GPUs, models, datasets and platform presets (docs/catalog.md)"
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if any(c in v for c in "/\\\0") or v in {".", ".."}:
            raise ValueError("must be usable as a folder name (no '/', '\\')")
        return v

    @field_validator("model", "critic_model", "reward_model")
    @classmethod
    def _known_model(cls, v: Any, info: ValidationInfo) -> Any:
        catalog = _catalog(info)
        if isinstance(v, str) and catalog is not None and v not in catalog.models:
            raise ValueError(f"unknown model {v!r}{suggest(v, list(catalog.models))}; expected a key of workloads/models.yaml or a user catalog, or a mapping")
        return v

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> "ExperimentConfig":
        catalog = _catalog(info)
        if catalog is None:
            return self
        checks = [("platform.preset", self.platform.preset, catalog.platforms, "workloads/platforms.yaml")]
        if isinstance(self.cluster.gpu, str):
            checks.append(("cluster.gpu", self.cluster.gpu, catalog.gpus, "workloads/gpus.yaml"))
        else:
            try:
                gpu_from_mapping(self.cluster.gpu, catalog, where="cluster.gpu")
            except CatalogError as exc:
                path, _, message = str(exc).partition(": ")  # "cluster.gpu.memory_bytes: ..." names its own path
                raise _FieldError(path, message) from None
        if isinstance(self.workload.dataset, str):
            checks.append(("workload.dataset", self.workload.dataset, catalog.datasets, "workloads/datasets.yaml"))
        for path, value, table, file in checks:
            if value is not None and value not in table:
                also = " or a user catalog (`catalogs:`, --catalog)"
                raise _FieldError(path, f"unknown name {value!r}{suggest(value, list(table))}; expected a key of {file}{also}")
        if self.workload.max_prompt_tokens + self.workload.max_response_tokens > 1_000_000:
            raise _FieldError("workload.max_response_tokens", "prompt + response above 1,000,000 tokens is not supported")
        return self

    @property
    def critic(self) -> Union[str, dict[str, Any]]:
        return self.critic_model if self.critic_model is not None else self.model

