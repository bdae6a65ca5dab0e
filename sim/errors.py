"""One family of errors, so that a type says what an error means and the command line knows its exit status.

`BadInput` (exit 2): the user's input, a catalog, a trace or a plug-in's decision is wrong; the message is one
sentence that names the file, the field or parameter, and what was expected. Every input error inherits it,
including a plug-in scheduler's (raise `PlanError`, or any `BadInput`). It subclasses ValueError so that pydantic
validators may raise it. `InternalError` (exit 1, with a traceback): the simulator broke one of its own
invariants. Any other exception is internal too. This module imports nothing of the simulator's: no cycles.
"""

from __future__ import annotations


class BadInput(ValueError):
    """Bad input of any kind: the command line prints the message on one line and exits 2."""


class ConfigError(BadInput):
    """A wrong experiment file, --set value or option: the message names the file, the field path and what was expected."""


class CatalogError(BadInput):
    """A catalog file is missing, malformed, or names something it does not hold."""


class WorkloadError(BadInput):
    """Bad workload input (a malformed trace or dataset entry); the message names the file, row and column."""


class TableError(BadInput):
    """A malformed step-time table; the message names the file and the line."""


class EarlyExitError(BadInput):
    """An early-exit setting the profile cannot support; names the file and the setting."""


class InfeasibleError(BadInput):
    """The work does not fit the GPUs given to it: names the phase, the need and the capacity."""


class NotImplementedYet(BadInput):
    """A config section that a later part of the project implements; refused, never silently ignored."""


class PlanError(BadInput):
    """A scheduler's parameters or decisions do not fit the cluster or workload: names the parameter.

    Plug-in schedulers raise it (or another BadInput) for anything the user can fix; the run exits 2."""


class RoleError(BadInput):
    """A role name that does not exist, or a role this run has no model for."""


class InternalError(RuntimeError):
    """The simulator broke one of its own invariants (exit 1, with a traceback)."""


class DoubleBookingError(InternalError):
    """Two pieces of work were placed on one GPU at the same time."""


class SchedulerActionError(InternalError):
    """A scheduler asked the mechanism for something impossible (e.g. releasing a replica with work)."""
