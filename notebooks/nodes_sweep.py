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
# # Cost and iteration time against cluster size
#
# Reads `runs.csv` of the sweep `experiments/sweeps/nodes.yaml` (the quickstart workload on 1, 2 and 4
# nodes of 8 L40S, each scheduler of the experiment) from `results/nodes/`, or from `$RLHF_SIM_RESULTS/nodes/`
# when that variable is set. When the file is missing, the notebook runs the sweep first (a few seconds).
# Any experiment whose sweep has a `cluster.nodes` axis can be plotted by changing `EXPERIMENT`.

# %%
import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"

# %%
from pathlib import Path

import plotly.express as px
import yaml

import sim
from sim.sweep import load_or_run

ROOT = Path(sim.__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "sweeps" / "nodes.yaml"
name = yaml.safe_load(EXPERIMENT.read_text())["name"]
runs = load_or_run(EXPERIMENT)  # runs the sweep first when results/<name>/runs.csv is missing
failed = runs[runs.status != "ok"]
if len(failed):
    print(f"{len(failed)} runs failed:", *(f"  {r.run_id}: {r.error}" for r in failed.itertuples()), sep="\n")
ok = runs[runs.status == "ok"].sort_values(["scheduler", "cluster.nodes"])
ok[["run_id", "scheduler", "cluster.nodes", "gpus", "steady_mean_iteration_s", "steady_cost_per_iteration_usd", "utilization"]]

# %% [markdown]
# Steady-state iteration time and cost per iteration (the second half of the run), one line per scheduler.
# More GPUs shorten an iteration less than proportionally (the longest rollout and the fixed per-phase
# costs do not shrink), so the cost of the same work grows with the cluster.

# %%
long = ok.melt(
    id_vars=["scheduler", "cluster.nodes"], value_vars=["steady_mean_iteration_s", "steady_cost_per_iteration_usd"], var_name="metric"
)
fig = px.line(
    long, x="cluster.nodes", y="value", color="scheduler", facet_col="metric", markers=True,
    title=f"{name}: iteration time and cost against the number of nodes",
)  # fmt: skip
fig.update_yaxes(matches=None, showticklabels=True)
fig.update_xaxes(type="category")
fig.show()

# %% [markdown]
# Utilisation (busy / billed GPU-seconds) and cost per million generated tokens.

# %%
fig = px.line(
    ok.melt(id_vars=["scheduler", "cluster.nodes"], value_vars=["utilization", "cost_per_million_tokens_usd"], var_name="metric"),
    x="cluster.nodes", y="value", color="scheduler", facet_col="metric", markers=True,
    title=f"{name}: utilisation and cost per million tokens",
)  # fmt: skip
fig.update_yaxes(matches=None, showticklabels=True)
fig.update_xaxes(type="category")
fig.show()

# %% [markdown]
# With `compare:` set, each run also holds its speedup and cost reduction against each baseline at the same
# number of nodes (`compare.<baseline>.speedup`, `compare.<baseline>.cost_reduction`).

# %%
ratios = [c for c in ok.columns if c.startswith("compare.")]
if ratios:
    long = ok.melt(id_vars=["scheduler", "cluster.nodes"], value_vars=ratios, var_name="metric").dropna()
    fig = px.bar(long, x="cluster.nodes", y="value", color="scheduler", facet_col="metric", barmode="group",
                 title=f"{name}: against the baselines")  # fmt: skip
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(type="category")
    fig.show()
else:
    print("No comparison in this experiment: every run used the same scheduler (compare: is empty or names it).")
