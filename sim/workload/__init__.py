"""Prompt and response lengths for each iteration: sampled from a dataset's fitted distributions, or replayed from a trace.

base.py: what a workload produces (`RolloutSamples`) and its interface; entries.py: a datasets.yaml entry
parsed and checked; dataset.py: the sampled length model (docs/workload.md); trace.py: trace CSV read and
write; factory.py: the run's workload from its config, and `python -m sim.workload`. The names below are
re-exported for users and plug-ins; code inside sim/ imports from the defining module.
"""

from sim.errors import WorkloadError
from sim.workload.base import RolloutSamples, Workload
from sim.workload.dataset import DatasetWorkload
from sim.workload.entries import DatasetParams, parse_dataset
from sim.workload.factory import main, make_workload
from sim.workload.trace import OPTIONAL_TRACE_COLUMNS, TRACE_COLUMNS, TraceWorkload, read_trace, write_trace

__all__ = [
    "OPTIONAL_TRACE_COLUMNS",
    "TRACE_COLUMNS",
    "DatasetParams",
    "DatasetWorkload",
    "RolloutSamples",
    "TraceWorkload",
    "Workload",
    "WorkloadError",
    "main",
    "make_workload",
    "parse_dataset",
    "read_trace",
    "write_trace",
]
