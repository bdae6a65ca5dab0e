"""Early-exit probe: a logit-lens profiler of causal LMs (``python -m sim.probe``).

Only :mod:`sim.probe.profile`, :mod:`sim.probe.profile_model`, :mod:`sim.probe.metrics` and :mod:`sim.probe.errors` are
importable without the optional ``probe`` extra; they are pure json + numpy and are what the
simulator uses (:func:`load_profile`, :func:`expected_max_depth_fraction`). The torch parts
(:mod:`sim.probe.lens`, the loaders in :mod:`sim.probe.models`, the CLI) import torch lazily.
"""

from sim.probe.errors import ProbeError
from sim.probe.profile import load_profile
from sim.probe.profile_model import ExitProfile, ProfileError, ThresholdExit, expected_max_depth_fraction

__all__ = [
    "ExitProfile",
    "ProbeError",
    "ProfileError",
    "ThresholdExit",
    "expected_max_depth_fraction",
    "load_profile",
]
