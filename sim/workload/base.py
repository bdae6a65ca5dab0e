"""What a workload produces: one iteration's prompts and response lengths (`RolloutSamples`), and the interface.

A workload is a pure function of config, catalog entry and seed; the same config and seed give the same
lengths whatever the scheduler does. Deliberately left out: token contents, rewards and correctness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.errors import WorkloadError


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

    max_prompt_tokens: int
    max_response_tokens: int

    def iteration(self, i: int) -> RolloutSamples:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def default_response_tokens(self) -> float:  # pragma: no cover - interface
        """The prior mean response length a length predictor may use before it has history."""
        raise NotImplementedError

    @property
    def num_iterations(self) -> int | None:
        """How many iterations this workload can produce; None when unbounded (a dataset)."""
        return None

    def truncated_fraction(self, i: int) -> float:
        """Fraction of iteration i's samples whose response stopped at max_response_tokens (the cap)."""
        samples = self.iteration(i)
        return float(np.count_nonzero(samples.response_tokens >= self.max_response_tokens) / samples.response_tokens.size)


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


def _check_index(i: int) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
        raise WorkloadError(f"iteration index must be an integer >= 0, got {i!r}")
    return int(i)
