# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # RLHFless: cost and iteration time against lambda and tau (stub)
#
# TODO: to be finished once the `rlhfless` scheduler is implemented. The sweep it will read is
# `experiments/sweeps/rlhfless_params.yaml` (lambda x tau, each point compared with verl); the plots will
# follow `nodes_sweep.py`: run the sweep when `runs.csv` is missing, then speedup and cost reduction
# against verl along `scheduler.params.lambda` and `scheduler.params.tau` (a heatmap over both).

# %%
import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"

# %%
from pathlib import Path

import sim

ROOT = Path(sim.__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "sweeps" / "rlhfless_params.yaml"
print(f"Stub: the sweep this notebook will plot is {EXPERIMENT.relative_to(ROOT)} (exists: {EXPERIMENT.exists()}).")
