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
# # Early exit: the gain against batch size (stub)
#
# TODO: to be finished once early-exit decoding (`early_exit:` in the experiment file) is implemented. It will
# sweep `workload.prompts_per_iteration` with and without `early_exit`, run the sweep when its `runs.csv` is
# missing (as `nodes_sweep.py` does), and plot the generation-phase speedup against the batch size.

# %%
import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"

# %%
print("Stub: early-exit decoding is not implemented yet; see the TODO above.")
