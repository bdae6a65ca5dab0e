"""Pydantic validation errors turned into one line per problem: `file: dotted.path: what was expected`.

Unknown keys get the allowed keys and a did-you-mean hint; cross-field checks (`_FieldError`) name the
field they blame. Leaves out exit codes and printing: the CLI wraps the text in a ConfigError (exit 2).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from sim.catalog import suggest
from sim.config.models import ExperimentConfig, _FieldError


def format_validation_error(exc: ValidationError, file: str, root: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line per error: `file: dotted.path: what was expected`.

    `root` is the model that was validated (default: ExperimentConfig when the error comes from it) and is
    used to list the allowed keys of an unknown key; `prefix` is prepended to every path (e.g.
    "scheduler.params." for a scheduler's own Params).
    """
    if root is None and exc.title == ExperimentConfig.__name__:
        root = ExperimentConfig
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _FieldError):
            lines.append(f"{file}: {prefix}{ctx_err.path}: {ctx_err.message}")
            continue
        path = _join(prefix, loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent, key = _join(prefix, loc[:-1], top=""), loc[-1]
            allowed = _allowed_keys(loc[:-1], root) if root is not None else []
            hint = suggest(key, allowed) if allowed else ""
            where = f" in {parent}" if parent else ""
            expected = f"; expected one of: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{file}: {path}: unknown key {key!r}{where}{hint}{expected}")
        elif kind == "missing":
            lines.append(f"{file}: {path}: required field is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
            lines.append(f"{file}: {path}: {msg}{shown}")
    # pydantic reports one error per union member for union fields; keep each message once
    return "\n".join(dict.fromkeys(lines))


def _join(prefix: str, loc: list[str], top: str = "(top level)") -> str:
    path = ".".join(loc)
    if path:
        return prefix + path
    return prefix.rstrip(".") or top


_UNION_TAGS = {"str", "dict[str,any]", "none", "dict[str, Any]", "function-after[_slug(), str]"}


def _allowed_keys(loc: list[str], root: type[BaseModel] = None) -> list[str]:  # type: ignore[assignment]
    model: Any = root if root is not None else ExperimentConfig
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)
