"""Errors of the early-exit probe (no torch import here)."""

from __future__ import annotations

from sim.errors import BadInput


class ProbeError(BadInput):
    """A user-facing probe error: the CLI prints its message on one line and exits 2."""


class UnsupportedArchitecture(ProbeError):
    """The model's module layout is not one the logit lens knows."""


class TextTooShort(ProbeError):
    """The text (or token-id file) has too few tokens for the requested profile."""


class MissingDependency(ProbeError):
    """torch / transformers (the ``probe`` extra) is not installed."""


INSTALL_HINT = (
    "the early-exit probe needs the optional 'probe' extra (torch, transformers, gguf); "
    "install it with:  pip install -e '.[probe]'   (or: pip install 'rlhf-sim[probe]')"
)
