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
# # RLHFless: cost and iteration time against lambda and tau
#
# Reads `runs.csv` of `experiments/sweeps/rlhfless_params.yaml` (lambda x tau, each point compared with verl
# on the same cluster) from `results/rlhfless_params/` or `$RLHF_SIM_RESULTS/rlhfless_params/`; runs the sweep
# first when it is missing (seconds). lambda weighs time against cost when RLHFless picks the number of
# decode actors; tau is the fraction of an actor's samples that must finish before its tail is cut and
# migrated. The steady-state columns use the second half of the iterations (after cold starts and the
# length predictor's first epoch).

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
EXPERIMENT = ROOT / "experiments" / "sweeps" / "rlhfless_params.yaml"
name = yaml.safe_load(EXPERIMENT.read_text())["name"]
runs = load_or_run(EXPERIMENT)  # runs the sweep first when results/<name>/runs.csv is missing
ok = runs[runs.status == "ok"]
rl = ok[ok.scheduler == "rlhfless"].copy()
rl[["run_id", "scheduler.params.lambda", "scheduler.params.tau", "steady_mean_iteration_s",
    "steady_cost_per_iteration_usd", "rollout_replicas", "migrations"]]  # fmt: skip

# %% [markdown]
# Speedup and cost reduction against verl (steady state) along lambda, one line per tau. A larger lambda
# weighs time more: more decode actors, faster and dearer generation.

# %%
long = rl.melt(
    id_vars=["scheduler.params.lambda", "scheduler.params.tau"],
    value_vars=["compare.verl.steady_speedup", "compare.verl.steady_cost_reduction"],
    var_name="metric",
)
fig = px.line(long, x="scheduler.params.lambda", y="value", color="scheduler.params.tau", facet_col="metric",
              markers=True, title=f"{name}: against verl, by lambda and tau")  # fmt: skip
fig.update_yaxes(matches=None, showticklabels=True)
fig.show()

# %% [markdown]
# Cost per iteration over the (lambda, tau) grid, and the number of migrations each tau triggers (a smaller
# tau cuts earlier and moves more samples).

# %%
grid = rl.pivot_table(index="scheduler.params.tau", columns="scheduler.params.lambda", values="steady_cost_per_iteration_usd")
fig = px.imshow(grid, text_auto=".3f", aspect="auto", labels={"color": "USD / iteration"},
                title=f"{name}: steady-state cost per iteration")  # fmt: skip
fig.show()
fig = px.bar(rl, x="scheduler.params.tau", y="migrations", color="scheduler.params.lambda", barmode="group",
             title=f"{name}: migrations by tau")  # fmt: skip
fig.show()
