"""Prompt and response lengths for each iteration: sampled from a dataset's fitted distributions, or replayed from a trace.

INTERFACE STUB (owned by the workload helper): the simulator core consumes exactly this API.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class WorkloadError(ValueError):
    """Bad workload input (a malformed trace or dataset entry); the message names the file, row and column."""


@dataclass(frozen=True)
class RolloutSamples:
    """One iteration's rollout work. Prompts are indexed 0..P-1, samples 0..S-1 (S = sum of group sizes).

    Samples of one prompt are contiguous and in sample_id order.
    """

    iteration: int
    epoch: int
    prompt_ids: np.ndarray  # int64[P], dataset-level ids: the same prompt keeps its id across epochs
    prompt_tokens: np.ndarray  # int64[P], includes the shared template
    template_tokens: int  # leading tokens shared by every prompt (chat template + instruction)
    sample_prompt: np.ndarray  # int64[S], index into the prompt arrays
    sample_ids: np.ndarray  # int64[S], 0..n-1 within its prompt
    response_tokens: np.ndarray  # int64[S], >= 1 and <= max_response_tokens


class Workload:
    """Produces RolloutSamples for iteration i (0-based); a pure function of config, catalog entry and seed."""

    def iteration(self, i: int) -> RolloutSamples:  # pragma: no cover - stub
        raise NotImplementedError

    @property
    def default_response_tokens(self) -> float:  # pragma: no cover - stub
        """The prior mean response length a length predictor may use before it has history."""
        raise NotImplementedError
