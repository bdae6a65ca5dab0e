"""The experiment file (design.md section 6): models, loading and error messages.

models.py says what a valid experiment is (pydantic models), loading.py reads YAML, applies `--set`
overrides, presets and user catalogs and validates, messages.py words validation errors. The names below
are re-exported so `from sim.config import ExperimentConfig, load_config` keeps working for users and
plug-ins; code inside sim/ imports from the defining module.
"""

from sim.config.loading import (
    add_catalogs,
    apply_overrides,
    dump_config,
    load_config,
    merge_preset,
    read_yaml_file,
    resolve_catalog,
    set_path,
    validate,
)
from sim.config.messages import format_validation_error
from sim.config.models import (
    BillingConfig,
    ClusterConfig,
    ColdStartConfig,
    DynamicSamplingConfig,
    EarlyExitConfig,
    EngineConfig,
    ExperimentConfig,
    FailureConfig,
    PerfConfig,
    PlatformConfig,
    PositiveInt,
    SchedulerConfig,
    StorageConfig,
    Strict,
    TrainingConfig,
    WorkloadConfig,
)
from sim.errors import ConfigError

__all__ = [
    "BillingConfig",
    "ClusterConfig",
    "ColdStartConfig",
    "ConfigError",
    "DynamicSamplingConfig",
    "EarlyExitConfig",
    "EngineConfig",
    "ExperimentConfig",
    "FailureConfig",
    "PerfConfig",
    "PlatformConfig",
    "PositiveInt",
    "SchedulerConfig",
    "StorageConfig",
    "Strict",
    "TrainingConfig",
    "WorkloadConfig",
    "add_catalogs",
    "apply_overrides",
    "dump_config",
    "format_validation_error",
    "load_config",
    "merge_preset",
    "read_yaml_file",
    "resolve_catalog",
    "set_path",
    "validate",
]
