"""Which schedulers exist: the built-ins (by `@register`) and plug-ins (the `sim.schedulers` entry-point group).

A plug-in is checked when it is found: its module must import, the entry point must name a `Scheduler`
subclass whose `name` equals the entry point's name, and its `Params` must be a pydantic model that
refuses unknown keys. One that fails is recorded as a `BrokenPlugin` with the reason (`broken()`); it does
not break the others, and selecting it is a bad-input error that gives the reason. Left out: versioning of
plug-ins, and shadowing: a plug-in may not take a built-in's name (the built-in wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module, metadata
from typing import TYPE_CHECKING

from pydantic import BaseModel

from sim.errors import BadInput, ConfigError

if TYPE_CHECKING:
    from sim.schedulers.base import Scheduler

ENTRY_POINT_GROUP = "sim.schedulers"

_REGISTRY: dict[str, type["Scheduler"]] = {}
_BROKEN: dict[str, "BrokenPlugin"] = {}  # from the last entry-point scan

#: each built-in scheduler's module, in the order `available()` lists them (a test checks this against the
#: registry): `lookup` imports only the module of the scheduler asked for
BUILTIN_MODULES = {
    "verl": "sim.schedulers.verl",
    "rlhfless": "sim.schedulers.rlhfless",
    "oracle": "sim.schedulers.rlhfless",
    "rlhfuse": "sim.schedulers.rlhfuse",
    "serverless": "sim.schedulers.serverless",
}


class PluginError(BadInput):
    """A scheduler class that cannot be registered or used (wrong name, not a Scheduler, bad Params)."""


@dataclass(frozen=True)
class BrokenPlugin:
    """A plug-in found in the entry-point group that cannot be used, and why."""

    name: str  # the entry point's name (what YAML would select)
    target: str  # the entry point's value, `module:attribute`
    reason: str

    @property
    def message(self) -> str:
        return f"plug-in {self.name!r} ({self.target}) cannot be used: {self.reason}"


def problem(cls: object, name: str | None = None) -> str | None:
    """Why `cls` cannot serve as the scheduler called `name` (its own name if None), or None if it can."""
    from sim.schedulers.base import Scheduler

    if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
        return f"{cls!r} is not a subclass of sim.schedulers.base.Scheduler"
    if not cls.name:
        return f"{cls.__qualname__} has no `name`"
    if name is not None and cls.name != name:
        return f"its entry-point name {name!r} differs from {cls.__qualname__}.name {cls.name!r}; make them equal"
    params = cls.Params
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return f"{cls.__qualname__}.Params must be a pydantic model (subclass sim.schedulers.base.SchedulerParams), got {params!r}"
    if params.model_config.get("extra") != "forbid":
        return (f"{cls.__qualname__}.Params must refuse unknown keys (a typo would be ignored): subclass "
                "sim.schedulers.base.SchedulerParams, or set model_config = ConfigDict(extra='forbid')")  # fmt: skip
    if cls.deployment not in ("serverful", "serverless", "either"):
        return f"{cls.__qualname__}.deployment must be 'serverful', 'serverless' or 'either', not {cls.deployment!r}"
    return None


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator for built-in schedulers (and tests' own); refuses a class that could not run."""
    reason = problem(cls)
    if reason is not None:
        raise PluginError(f"cannot register {getattr(cls, '__qualname__', cls)!r}: {reason}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins(name: str | None = None) -> None:
    """Import the built-in schedulers' modules (they register themselves), or only the one of `name`."""
    for module in dict.fromkeys(BUILTIN_MODULES.values()) if name is None else (BUILTIN_MODULES[name],):
        import_module(module)


def _load(ep: metadata.EntryPoint) -> type[Scheduler] | BrokenPlugin:
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plug-in must not break the built-ins
        return BrokenPlugin(ep.name, ep.value, f"importing it failed: {type(exc).__name__}: {exc}")
    reason = problem(cls, ep.name)
    return cls if reason is None else BrokenPlugin(ep.name, ep.value, reason)


def available() -> dict[str, type[Scheduler]]:
    """Built-ins plus the working plug-ins of the `sim.schedulers` entry-point group (broken ones: `broken()`)."""
    _load_builtins()
    found = {name: _REGISTRY[name] for name in BUILTIN_MODULES if name in _REGISTRY}
    found.update(_REGISTRY)  # and any registered otherwise (a test's)
    _BROKEN.clear()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found or ep.name in _BROKEN:
            continue  # a built-in's name, or a name an earlier distribution took
        loaded = _load(ep)
        if isinstance(loaded, BrokenPlugin):
            _BROKEN[ep.name] = loaded
        else:
            found[ep.name] = loaded
    return found


def broken() -> dict[str, BrokenPlugin]:
    """Plug-ins found in the entry-point group that cannot be used, by name, with the reason."""
    available()
    return dict(_BROKEN)


def lookup(name: str) -> type[Scheduler] | None:
    """`available().get(name)`, without scanning the installed packages' entry points for a built-in name
    (a plug-in may not shadow one): that scan reads every distribution's metadata, tens of ms per call."""
    if name in BUILTIN_MODULES:
        _load_builtins(name)
    cls = _REGISTRY.get(name)
    return cls if cls is not None else available().get(name)


def resolve(name: str, where: str) -> type[Scheduler]:
    """The scheduler called `name`, or a ConfigError naming `where` (e.g. "exp.yaml: scheduler.name"): an
    unknown name (with the closest and every available one), or a broken plug-in (with the reason)."""
    cls = lookup(name)
    if cls is not None:
        return cls
    found = available()
    if name in _BROKEN:
        raise ConfigError(f"{where}: {_BROKEN[name].message}")
    from sim.catalog import suggest

    names = sorted({*found, *_BROKEN})
    raise ConfigError(f"{where}: unknown scheduler {name!r}{suggest(name, names)}; available: {', '.join(names)}")
