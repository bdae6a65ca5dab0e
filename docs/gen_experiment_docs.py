"""Generate the experiment-file reference from the pydantic models in `sim.config`.

Writes two files next to this script:

- `docs/experiment.md`: every key of an experiment file, section by section, with its type, default,
  constraints and description (from `sim.config.ExperimentConfig` and the models nested in it), then
  the `scheduler.params` of each built-in scheduler (from `sim.schedulers.base.available()`);
- `docs/experiment.schema.json`: `ExperimentConfig.model_json_schema()` (JSON Schema 2020-12, unknown
  keys refused by `additionalProperties: false`), for editor completion and validation.

    .venv/bin/python docs/gen_experiment_docs.py           # rewrite both files
    .venv/bin/python docs/gen_experiment_docs.py --check   # exit 1 if either is out of date

`tests/test_docs.py` fails when the committed files differ from what this script generates, so run it
after changing a config model or a built-in scheduler's Params.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from sim.config import ExperimentConfig  # noqa: E402
from sim.schedulers.base import available  # noqa: E402

MARKDOWN_PATH = DOCS / "experiment.md"
SCHEMA_PATH = DOCS / "experiment.schema.json"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: rules a field's own type and constraints do not show (cross-field and catalog checks in sim/config/models.py)
SECTION_NOTES: dict[str, list[str]] = {
    "": [
        "`name` must be usable as a folder name (no `/` or `\\`).",
        "`model`, `critic_model` and `reward_model` must be keys of `workloads/models.yaml` when given as names "
        "(a did-you-mean hint names the closest); an inline mapping gives the architecture itself (docs/catalog.md).",
        "`compare` names and `scheduler.name` must be registered schedulers; `sweep` keys are dotted paths of this "
        "file (any key except `name`, `sweep`, `compare` and `catalogs`), and every grid point is validated like the file.",
        "`catalogs` files (relative to this file; `--catalog FILE` on the command line appends more, relative to the "
        "working directory) are merged over the packaged catalog in order, later files winning; their GPUs, models, "
        "datasets and platform presets can then be named anywhere a packaged one can (docs/catalog.md, \"User catalogs\").",
    ],
    "workload": [
        "Exactly one of `dataset` and `trace` is required.",
        "A `dataset` name must be a key of `workloads/datasets.yaml` or of a user catalog.",
        "`max_prompt_tokens + max_response_tokens` may not exceed 1,000,000.",
        "Keys whose default is `null: the recipe's` take the `algorithm`'s value from the table below; the resolved "
        "value is written to the run's `config.yaml`, and `summary.json`'s `recipe` says what ran (`old_logprob` after `auto`).",
        "`dynamic_sampling.enabled` needs a `dataset` (a trace cannot draw more prompts) and `samples_per_prompt >= 2`; "
        "`dynamic_sampling.oversample x prompts_per_iteration` may not exceed the dataset's prompt pool.",
    ],
    "cluster": [
        "`gpu` is a GPU name of `workloads/gpus.yaml` or of a user catalog, or an inline mapping with the same fields "
        "(optionally `name`, and `base: NAME` to start from a catalog GPU and change some fields), validated like a "
        "catalog entry (docs/catalog.md)."
    ],
    "platform": [
        "`preset` must be a key of `workloads/platforms.yaml`. The preset's values are merged *under* the keys "
        "written in this section (mappings key by key) before validation, so anything written here wins "
        "(docs/platforms.md).",
        "Serverful runs use only `billing` and the prices; the other keys apply to serverless functions "
        "(docs/model.md, \"Serverless platform\").",
        "Price of a GPU-hour: `price_usd_per_gpu_hour` if set, else `prices_usd_per_gpu_hour[cluster.gpu]`, "
        "else the GPU catalog's on-demand price.",
    ],
    "perf": [
        "`model: table` needs `table`. `null` efficiency factors take the roofline defaults (docs/model.md, section 2.1).",
    ],
    "early_exit": [
        "The section is optional (`null`, or `enabled: false`: no early exit). Enabled, it works with "
        "`perf.model: roofline` only. "
        "`threshold` must be one the profile measured for `policy`, and needs `policy: max_prob` or `margin`; "
        "with `threshold: null` the budget `max_mismatch` chooses the operating point (docs/early_exit.md §9).",
    ],
}

#: built-in schedulers in the order they are documented (any other built-in follows, by name)
SCHEDULER_ORDER = ("verl", "rlhfuse", "serverless", "rlhfless", "oracle")

# ------------------------------------------------------------------------------------------- schema
def schema() -> dict[str, Any]:
    """The JSON Schema of an experiment file (what pydantic validates, before catalog checks)."""
    out = ExperimentConfig.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, **out}


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------------------- formatting
def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def type_text(annotation: Any) -> str:
    """A readable type: string, integer, number, boolean, mapping, list of X, "a" or "b", section, null."""
    if annotation is type(None) or annotation is None:
        return "null"
    if annotation is Any:
        return "any"
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return " or ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        if args and args[1] is not Any:
            return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def value_text(value: Any) -> str:
    """A default as it would be written in YAML."""
    if isinstance(value, BaseModel):
        return "(section defaults)"
    if isinstance(value, bool) or value is None:
        return f"`{json.dumps(value)}`"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            mantissa, exp = f"{value:.6g}".split("e") if "e" in f"{value:.6g}" else (f"{value:.6g}", None)
            if exp is None:
                return f"`{value!r}`"
            if "." not in mantissa:
                mantissa += ".0"
            return f"`{mantissa}e{exp}`"
        return f"`{value!r}`"
    if isinstance(value, (int, str)):
        return f"`{json.dumps(value)}`"
    return f"`{json.dumps(value)}`"


def constraints_text(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        if isinstance(m, at.Ge):
            parts.append(f">= {m.ge:g}")
        elif isinstance(m, at.Gt):
            parts.append(f"> {m.gt:g}")
        elif isinstance(m, at.Le):
            parts.append(f"<= {m.le:g}")
        elif isinstance(m, at.Lt):
            parts.append(f"< {m.lt:g}")
        elif isinstance(m, at.MinLen):
            parts.append(f"length >= {m.min_length}")
        elif isinstance(m, at.MaxLen):
            parts.append(f"length <= {m.max_length}")
    return ", ".join(parts)


def _source_comment(model: type[BaseModel], name: str) -> str:
    """The `# ...` comment lines right above a field's definition in its class (scheduler Params)."""
    for klass in model.__mro__:
        if name not in getattr(klass, "__annotations__", {}):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            return ""
        for i, line in enumerate(lines):
            if re.match(rf"\s+{re.escape(name)}\s*:", line):
                comment = []
                j = i - 1
                while j >= 0 and lines[j].strip().startswith("#"):
                    comment.insert(0, lines[j].strip().lstrip("#").strip())
                    j -= 1
                return " ".join(c for c in comment if c)
        return ""
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def field_rows(model: type[BaseModel], prefix: str, fallback: dict[str, str] | None = None) -> list[str]:
    rows = ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        shown = f"`{key}`" + (f" (or `{name}`)" if field.alias and field.alias != name else "")
        nested = _model_in(field.annotation)
        kind = type_text(field.annotation)
        if nested is not None:
            anchor = _anchor(f"{prefix}{name}")
            kind = kind.replace("section", f"section ([`{prefix}{name}`](#{anchor}))")
        default = "**required**" if field.is_required() else value_text(field.get_default(call_default_factory=True))
        desc = field.description or _source_comment(model, name) or (fallback or {}).get(name, "")
        rows.append(f"| {shown} | {_cell(kind)} | {_cell(default)} | {_cell(constraints_text(field))} | {_cell(desc)} |")
    return rows


def _anchor(path: str) -> str:
    """GitHub's heading anchor for a heading `` `path` `` (lower case, dots and backticks dropped)."""
    return re.sub(r"[^a-z0-9_ -]", "", path.lower()).replace(" ", "-")


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """(dotted path, model) for every nested section, depth first in field order."""
    out = []
    for name, field in model.model_fields.items():
        nested = _model_in(field.annotation)
        if nested is not None:
            path = f"{prefix}{name}"
            out.append((path, nested))
            out.extend(_sections(nested, path + "."))
    return out


def _summary(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or sys.modules[cls.__module__].__doc__ or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return first


# ------------------------------------------------------------------------------------------- markdown
def markdown_text() -> str:
    out = [
        "# Experiment file reference",
        "",
        "<!-- Generated by docs/gen_experiment_docs.py from sim/config/models.py and the built-in schedulers' Params."
        " Do not edit by hand: run `.venv/bin/python docs/gen_experiment_docs.py`. -->",
        "",
        "An experiment file is YAML. Every key is listed below, section by section, with its type, its default,",
        "the constraints it is checked against and what it means. Keys without a default are **required**.",
        "Unknown keys are errors, reported with the file, the dotted path and the keys allowed there. So is a key",
        "written twice in one mapping (YAML would keep only the last value): the error names the key and both lines.",
        "Numbers must be finite (`.inf` and `.nan` are refused), and `seed` an integer >= 0.",
        "`python -m sim.run FILE --set dotted.key=value` overrides any key (the value is read as YAML) before validation.",
        "",
        "`docs/experiment.schema.json` is the same contract as a JSON Schema, for editor completion. With the",
        "YAML language server, put this line at the top of an experiment file in `experiments/`:",
        "",
        "```yaml",
        "# yaml-language-server: $schema=../docs/experiment.schema.json",
        "```",
        "",
        "The schema checks types, constraints and unknown keys. It does not know the catalog (model, GPU, dataset",
        "and preset names), the scheduler's own `params`, or the cross-field rules listed under each section;",
        "`python -m sim.run` checks those too.",
        "",
        "Sections: " + ", ".join(f"[`{p}`](#{_anchor(p)})" for p in ["(top level)"] + [p for p, _ in _sections(ExperimentConfig)])
        + ", [`scheduler.params`](#schedulerparams-per-scheduler).",
        "",
        "## `(top level)`",
        "",
        *field_rows(ExperimentConfig, ""),
    ]
    notes = SECTION_NOTES.get("", [])
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    for path, model in _sections(ExperimentConfig):
        out += ["", f"## `{path}`", ""]
        doc = model.__dict__.get("__doc__")
        if doc and not doc.startswith(model.__name__ + "("):
            out += [" ".join(doc.split()), ""]
        out += field_rows(model, path + ".")
        notes = SECTION_NOTES.get(path, [])
        if notes:
            out += ["", *[f"- {n}" for n in notes]]
        if path == "workload":
            out += ["", *recipe_table()]
    out += [
        "",
        "## `scheduler.params` per scheduler",
        "",
        "`scheduler.params` is a free mapping in the file (and in the JSON Schema): each scheduler validates it",
        "with its own pydantic `Params` model when the run starts, and refuses unknown keys. The built-ins'",
        "parameters follow; docs/schedulers.md explains each scheduler and where its defaults come from.",
        "A plug-in scheduler documents its own (`python -c \"from sim.schedulers.base import available;",
        "print(available()['NAME'].Params.model_json_schema())\"`).",
        "A `compare` run uses its scheduler's default parameters.",
    ]
    found = available()
    builtins = {name: cls for name, cls in found.items() if cls.__module__.startswith("sim.schedulers.")}
    seen: dict[type, str] = {}
    order = [n for n in SCHEDULER_ORDER if n in builtins] + sorted(n for n in builtins if n not in SCHEDULER_ORDER)
    for name in order:
        cls = builtins[name]
        out += ["", f"### `{name}`", ""]
        out += [f"Deployment: {cls.deployment}. {_summary(cls)}", ""]
        params = cls.Params
        if params in seen:
            out.append(f"Parameters: the same as [`{seen[params]}`](#{_anchor(seen[params])}).")
            continue
        seen[params] = name
        if not params.model_fields:
            out.append("No parameters.")
            continue
        out += field_rows(params, "scheduler.params.")
    return "\n".join(out) + "\n"


def recipe_table() -> list[str]:
    """`workload.algorithm`'s recipes: roles and defaults (sim/recipes.py), each default with its source."""
    from sim.recipes import RECIPES

    out = [
        "### Recipes",
        "",
        "Each `algorithm` is a recipe: which roles exist and the defaults of the keys marked `null: the recipe's`. "
        "Roles of the inference phase, in order: `actor_logprob` (unless `old_logprob` skips it), `reference` (when `kl` "
        "is not `none`), `critic` (ppo), `reward` (a learned `reward_model`; with dynamic sampling it scores every "
        "generation round instead). docs/model.md section 1 describes the phases.",
        "",
        "| algorithm | what it is | critic | samples_per_prompt | mini_batches | kl | dynamic_sampling.enabled | old_logprob (auto) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in RECIPES.items():
        auto = "runs" if (r.mini_batches > 1 or r.kl == "reward") else "skipped (on-policy)"
        out.append(
            f"| `{name}` | {r.summary} | {'yes' if r.critic else 'no'} | {r.samples_per_prompt} | {r.mini_batches} | `{r.kl}` "
            f"| {'on' if r.dynamic_sampling else 'off'} | {auto} |"
        )
    out += ["", "Sources of the defaults:", ""]
    for name, r in RECIPES.items():
        for key, source in r.sources.items():
            out.append(f"- `{name}` `{key}`: {_cell(source)}")
    return out


# ------------------------------------------------------------------------------------------- main
def outputs() -> dict[Path, str]:
    return {MARKDOWN_PATH: markdown_text(), SCHEMA_PATH: schema_text()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    rel = ", ".join(str(p.relative_to(ROOT)) for p in stale)
    if args.check:
        if stale:
            print(f"out of date: {rel}; run: python docs/gen_experiment_docs.py", file=sys.stderr)
            return 1
        print("up to date")
        return 0
    print(f"wrote {rel}" if stale else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
