"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

import sim.build
from sim.recording import Recorder


@pytest.fixture
def recorders(monkeypatch):
    """Capture each run's Recorder: its counters (e.g. prefill_tokens_saved) are not in RunResult."""
    seen: list[Recorder] = []

    class Capturing(Recorder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(sim.build, "Recorder", Capturing)  # where a run builds its recorder
    return seen
