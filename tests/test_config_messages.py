"""Tests for sim/config/messages.py: pydantic errors worded as `file: dotted.path: what was expected`."""

from __future__ import annotations

import pytest

from sim.config import format_validation_error


# --------------------------------------------------------------------------- error formatting


def test_format_validation_error_for_another_model_prefixes_paths() -> None:
    """Scheduler Params are validated with the same formatter; paths get the `scheduler.params.` prefix."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tp: int = Field(1, ge=1)

    with pytest.raises(ValidationError) as info:
        Params.model_validate({"t": 1, "tp": 0})
    msg = format_validation_error(info.value, "f.yaml", root=Params, prefix="scheduler.params.")
    assert "f.yaml: scheduler.params.t: unknown key 't' in scheduler.params (did you mean 'tp'?); expected one of: tp" in msg
    assert "f.yaml: scheduler.params.tp: Input should be greater than or equal to 1 (got 0)" in msg
    # without `root` the formatter must not list the experiment's top-level keys as if they applied
    bare = format_validation_error(info.value, "f.yaml")
    assert "f.yaml: t: unknown key 't'" in bare
    assert "iterations" not in bare
