"""Plotly figure dicts written as HTML without importing plotly: a run's report is written on every run.

Importing plotly and building its figure objects costs more than simulating a small run, and a figure
dict is all plotly.js needs. `figure_div` writes what `plotly.io.to_html(fig, full_html=False,
include_plotlyjs=False, validate=False, div_id=..., config=...)` writes for a figure dict, byte for byte:
the JSON as plotly's json engine encodes it (NaN and infinities as null; '<', '>' and '/' escaped)
inside plotly's div and script. `template()` is the plotly_white template as a styled plotly figure
holds it, kept in plotly_white.json (`python -m sim.output.plotly_json` writes it from the installed plotly;
tests check both against plotly, so an upgrade that changes either is caught).
"""

from __future__ import annotations

import copy
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATE_NAME = "plotly_white"
TEMPLATE_FILE = Path(__file__).with_name(f"{TEMPLATE_NAME}.json")
_UNSAFE = (("<", "\\u003c"), (">", "\\u003e"), ("/", "\\u002f"))  # plotly.io._json._swap_json


def to_json(obj: Any) -> str:
    """plotly.io.json.to_json_plotly with its json engine, for plain data (dicts, lists, str, numbers, None)."""
    text = json.dumps(obj, separators=(",", ":"))
    if "NaN" in text or "Infinity" in text:  # as PlotlyJSONEncoder: non-finite numbers become null
        text = json.dumps(json.loads(text, parse_constant=lambda _constant: None), separators=(",", ":"))
    for unsafe, safe in _UNSAFE:
        if unsafe in text:
            text = text.replace(unsafe, safe)
    return text


def _css_size(value: Any) -> str:
    try:
        float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{value}px"


def figure_div(fig: dict[str, Any], div_id: str, config: dict[str, Any] | None = None) -> str:
    """The <div> plotly.io.to_html writes for a figure dict (no plotly.js included, no full page)."""
    jdata, jlayout = to_json(fig.get("data", [])), to_json(fig.get("layout", {}))
    config = dict(config or {})
    config.setdefault("responsive", True)
    layout = fig.get("layout", {})
    template_layout = layout.get("template", {}).get("layout", {})
    width = _css_size(layout.get("width", template_layout.get("width", "100%")))
    height = _css_size(layout.get("height", template_layout.get("height", "100%")))
    if not config.get("showSendToCloud", False):
        config.pop("plotlyServerURL", None)
    # plotly.io._html.to_html's two templates, verbatim (plotly is MIT-licensed): a backslash at the end of a line
    # joins it to the next, whose indentation stays in the output
    script = """\
                if (document.getElementById("{id}")) {{\
                    Plotly.newPlot(\
                        "{id}",\
                        {data},\
                        {layout},\
                        {config}\
                    )\
                }}""".format(id=div_id, data=jdata, layout=jlayout, config=json.dumps(config))
    return """\
<div style="height:{height}; width:{width};">\
        \
        \
            <div id="{id}" class="plotly-graph-div" \
style="height:100%; width:100%;"></div>\
            <script>\
                window.PLOTLYENV=window.PLOTLYENV || {{}};\
                {script};\
            </script>\
        </div>""".format(id=div_id, width=width, height=height, script=script).strip()


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    return json.loads(TEMPLATE_FILE.read_text())


def template() -> dict[str, Any]:
    """The plotly_white template as `go.Figure(layout={"template": "plotly_white"}).to_dict()` holds it (a copy)."""
    return copy.deepcopy(_template())


def shared_template() -> dict[str, Any]:
    """The same template, not copied: for callers that only serialise it (never change it)."""
    return _template()


def plotly_template() -> dict[str, Any]:
    """The same, from the installed plotly (slow: plotly validates the whole template)."""
    import plotly.graph_objects as go

    return go.Figure(layout={"template": TEMPLATE_NAME}).to_dict()["layout"]["template"]


def plotly_js_path() -> Path | None:
    """plotly.min.js of the installed plotly (found without importing plotly), or None."""
    from importlib.util import find_spec

    spec = find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """python -m sim.output.plotly_json [--check]: write (or check) plotly_white.json from the installed plotly."""
    args = sys.argv[1:] if argv is None else argv
    text = json.dumps(plotly_template()) + "\n"
    if "--check" in args:
        same = TEMPLATE_FILE.is_file() and TEMPLATE_FILE.read_text() == text
        print(f"{TEMPLATE_FILE}: {'up to date' if same else 'differs from the installed plotly: run python -m sim.output.plotly_json'}")
        return 0 if same else 1
    TEMPLATE_FILE.write_text(text)
    print(f"wrote {TEMPLATE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
