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
# # Early exit: the gain against batch size
#
# Two views of the same effect. First, straight from the measured SmolLM2-135M-Instruct profile
# (`traces/exit_profiles/smollm2-135m-instruct.json`): the expected depth a batched decode step must run,
# E[max exit layer over b tokens] / L. Second, from the sweep `experiments/early_exit.yaml` (read from
# `results/early_exit/` or `$RLHF_SIM_RESULTS/early_exit/`, run first when missing): rollout time with and
# without early exit as the batch cap grows, for two models.

# %%
import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"

# %%
from pathlib import Path

import pandas as pd
import plotly.express as px
import yaml

import sim
from sim.probe.profile import load_profile
from sim.sweep import load_or_run

ROOT = Path(sim.__file__).resolve().parent.parent
profile = load_profile(ROOT / "traces" / "exit_profiles" / "smollm2-135m-instruct.json")
batches = [1, 2, 4, 8, 16, 32, 64, 128]
depth = pd.DataFrame({"batch": batches, "expected_depth_fraction": [profile.expected_max_depth_fraction(b) for b in batches]})
fig = px.line(depth, x="batch", y="expected_depth_fraction", log_x=True, markers=True,
              title=f"{profile.model}: expected depth of a batched step (stable exit, {profile.n_tokens} tokens)")  # fmt: skip
fig.update_yaxes(range=[0, 1.05])
fig.show()

# %%
EXPERIMENT = ROOT / "experiments" / "early_exit.yaml"
name = yaml.safe_load(EXPERIMENT.read_text())["name"]
runs = load_or_run(EXPERIMENT)  # runs the sweep first when results/<name>/runs.csv is missing
ok = runs[runs.status == "ok"]
pivot = ok.pivot_table(index=["model", "early_exit.check", "engine.max_num_seqs"], columns="early_exit.enabled", values="phases.generation")
pivot.columns = ["full_depth_s" if not c else "early_exit_s" for c in pivot.columns]
gain = pivot.assign(gain=1 - pivot["early_exit_s"] / pivot["full_depth_s"]).reset_index()
gain

# %% [markdown]
# The gain of early exit on rollout time, by batch cap and check: with a cheap exit classifier, about the
# profile's saving at batch 1 and gone once a step's batch almost surely holds a token that needs every
# layer; with full-vocabulary LM-head checks, a loss at every batch size (each check costs several layers).

# %%
fig = px.line(gain, x="engine.max_num_seqs", y="gain", color="model", line_dash="early_exit.check", log_x=True,
              markers=True, title="early-exit gain on generation time against the batch cap")  # fmt: skip
fig.add_hline(y=0, line_dash="dot")
fig.show()
