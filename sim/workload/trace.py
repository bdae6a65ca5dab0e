"""Trace replay (docs/workload.md): a CSV of (iteration, prompt_id, sample_id, prompt_tokens, response_tokens)
rows, validated strictly (file, line and column in every error) and replayed iteration by iteration.

`write_trace` exports any workload in the same format. Left out: traces of token contents or timings.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from sim.errors import WorkloadError
from sim.workload.base import RolloutSamples, Workload, _check_index, _freeze


TRACE_COLUMNS = ("iteration", "prompt_id", "sample_id", "prompt_tokens", "response_tokens")
OPTIONAL_TRACE_COLUMNS = ("epoch",)


class TraceWorkload(Workload):
    """Replays a validated trace: iteration i of the run is trace iteration i."""

    def __init__(self, path: Path, iterations: list[RolloutSamples], max_prompt_tokens: int, max_response_tokens: int):
        self.path = path
        self._iterations = iterations
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.max_response_tokens = int(max_response_tokens)
        total = sum(int(s.response_tokens.sum()) for s in iterations)
        count = sum(int(s.response_tokens.size) for s in iterations)
        self._default = total / count

    @property
    def num_iterations(self) -> int:
        return len(self._iterations)

    def iteration(self, i: int) -> RolloutSamples:
        i = _check_index(i)
        if i >= len(self._iterations):
            raise WorkloadError(
                f"{self.path}: the trace has {len(self._iterations)} iterations (0..{len(self._iterations) - 1}); "
                f"iteration {i} was requested (lower `iterations` or use a longer trace)"
            )
        return self._iterations[i]

    @property
    def default_response_tokens(self) -> float:
        """Mean (capped) response length over the whole trace."""
        return self._default


def _trace_error(path: Path, line: int, column: str, message: str) -> WorkloadError:
    return WorkloadError(f"{path}: line {line}, column {column!r}: {message}")


def _parse_ints(path: Path, name: str, values: list[str], lines: np.ndarray) -> np.ndarray:
    try:
        return np.array(values).astype(np.int64)
    except (ValueError, OverflowError):
        pass
    parsed = []
    for text, line in zip(values, lines):
        try:
            v = int(text)
        except ValueError:
            raise _trace_error(path, int(line), name, f"expected an integer, got {text!r}") from None
        if not -(2**63) <= v < 2**63:
            raise _trace_error(path, int(line), name, f"integer out of range: {text!r}")
        parsed.append(v)
    return np.array(parsed, dtype=np.int64)


def read_trace(path: Path | str, *, max_prompt_tokens: int, max_response_tokens: int, template_tokens: int = 0) -> TraceWorkload:
    """Read and validate a trace CSV (format in docs/workload.md); every error names file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such trace file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise WorkloadError(f"{path}: not a text file") from None
    physical = text.splitlines()
    try:
        header = next(csv.reader(physical[:1]), None)
    except csv.Error as exc:
        raise WorkloadError(f"{path}: line 1: malformed CSV header: {exc}") from None
    header = _check_header(path, header)
    fast = _read_clean(physical, len(header))
    if fast is not None:
        data, lines = fast
    else:
        data, lines = _read_slow(path, text, header)
    if lines.size == 0:
        raise _trace_error(path, 2, TRACE_COLUMNS[0], "the trace has a header but no rows")
    cols = {h: data[:, j] for j, h in enumerate(header)} if isinstance(data, np.ndarray) else data
    return _build_trace(path, cols, lines, max_prompt_tokens, max_response_tokens, template_tokens)


def _check_header(path: Path, header: list[str] | None) -> list[str]:
    if not header:
        raise _trace_error(path, 1, TRACE_COLUMNS[0], f"empty file: expected the header {','.join(TRACE_COLUMNS)}")
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise _trace_error(path, 1, h, "column appears twice in the header")
        seen.add(h)
        if h not in TRACE_COLUMNS and h not in OPTIONAL_TRACE_COLUMNS:
            raise _trace_error(
                path, 1, h, f"unknown column; expected {','.join(TRACE_COLUMNS)} and optionally {','.join(OPTIONAL_TRACE_COLUMNS)}"
            )
    for req in TRACE_COLUMNS:
        if req not in seen:
            raise _trace_error(path, 1, req, f"missing column in the header (got {','.join(header)})")
    return header


def _read_clean(physical: list[str], width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path for a clean file (plain integers, no blank lines): the int64 table and its line numbers, else None."""
    body = physical[1:]
    if not body or not all(body):
        return None
    try:
        table = np.loadtxt(body, delimiter=",", dtype=np.int64, comments=None, ndmin=2)
    except ValueError:
        return None
    if table.shape != (len(body), width):
        return None
    return table, np.arange(2, len(body) + 2, dtype=np.int64)


def _read_slow(path: Path, text: str, header: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Row-by-row parse that finds the first bad line and column."""
    width = len(header)
    cols: list[list[str]] = [[] for _ in header]
    line_list: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        next(reader)
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                col = header[len(row)] if len(row) < width else f"#{width + 1}"
                what = "missing value" if len(row) < width else f"extra value {row[width]!r} beyond the header's {width} columns"
                raise _trace_error(path, reader.line_num, col, what)
            for c, v in zip(cols, row):
                c.append(v)
            line_list.append(reader.line_num)
    except csv.Error as exc:
        raise WorkloadError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
    lines = np.asarray(line_list, dtype=np.int64)
    return {h: _parse_ints(path, h, c, lines) for h, c in zip(header, cols)}, lines


def _first(mask: np.ndarray, lines: np.ndarray) -> int:
    """Index of the earliest-line row among those where mask holds."""
    idx = np.flatnonzero(mask)
    return int(idx[np.argmin(lines[idx])])


def _build_trace(
    path: Path, d: dict[str, np.ndarray], lines: np.ndarray, max_prompt: int, max_response: int, template: int
) -> TraceWorkload:
    it, pid, sid, pt, rt = (d[c] for c in TRACE_COLUMNS)
    ep = d.get("epoch")
    checks: list[tuple[str, np.ndarray, str]] = [
        ("iteration", it < 0, "must be >= 0"),
        ("prompt_id", pid < 0, "must be >= 0"),
        ("sample_id", sid < 0, "must be >= 0"),
        ("prompt_tokens", pt < 1, "must be a positive number of tokens"),
        ("response_tokens", rt < 1, "must be a positive number of tokens"),
        ("prompt_tokens", pt > max_prompt, f"exceeds workload.max_prompt_tokens ({max_prompt})"),
        ("prompt_tokens", pt <= template, f"must exceed the template's {template} tokens"),
    ]
    if ep is not None:
        checks.append(("epoch", ep < 0, "must be >= 0"))
    for col, bad, what in checks:
        if bad.any():
            k = _first(bad, lines)
            raise _trace_error(path, int(lines[k]), col, f"{what} (got {int(d[col][k])})")

    # Sort by (iteration, prompt_id, sample_id); lexsort is stable, so ties keep file order.
    order = np.lexsort((sid, pid, it))
    s_it, s_pid, s_sid, s_pt, s_line = it[order], pid[order], sid[order], pt[order], lines[order]
    same_prompt = np.r_[False, (s_it[1:] == s_it[:-1]) & (s_pid[1:] == s_pid[:-1])]
    dup = same_prompt & np.r_[False, s_sid[1:] == s_sid[:-1]]
    if dup.any():
        k = _first(dup, s_line)
        j = k - 1
        raise _trace_error(
            path, int(s_line[k]), "sample_id",
            f"duplicate (iteration, prompt_id, sample_id) = ({s_it[k]}, {s_pid[k]}, {s_sid[k]}); first at line {s_line[j]}",
        )
    group_start = np.flatnonzero(~same_prompt)
    group_of = np.cumsum(~same_prompt) - 1
    head = group_start[group_of]
    differs = s_pt != s_pt[head]
    if differs.any():
        k = _first(differs, s_line)
        h = head[k]
        raise _trace_error(
            path, int(s_line[k]), "prompt_tokens",
            f"prompt {s_pid[k]} in iteration {s_it[k]} has prompt_tokens {s_pt[k]} here but {s_pt[h]} at line {s_line[h]}; "
            "all samples of a prompt share its prompt",
        )
    rank = np.arange(s_sid.size) - head
    gap = s_sid != rank
    if gap.any():
        k = _first(gap, s_line)
        g = group_of[k]
        end = group_start[g + 1] if g + 1 < group_start.size else s_sid.size
        ids = s_sid[group_start[g]:end]
        shown = ", ".join(map(str, ids[:10])) + (", ..." if ids.size > 10 else "")
        raise _trace_error(
            path, int(s_line[k]), "sample_id",
            f"sample ids of prompt {s_pid[k]} in iteration {s_it[k]} must be 0..{ids.size - 1} without gaps (found {shown})",
        )
    iters = np.unique(it)
    K = iters.size
    if iters[-1] != K - 1:
        missing = int(np.flatnonzero(iters != np.arange(K))[0])
        k = _first(it > missing, lines)
        raise _trace_error(
            path, int(lines[k]), "iteration",
            f"iteration values must be 0..K-1 without gaps; iteration {missing} is missing (found {it[k]} here)",
        )

    # Final order: by iteration, prompts in order of first appearance in the file, samples by sample_id.
    first_row = np.minimum.reduceat(order, group_start)  # earliest file index of each (iteration, prompt) group
    final = np.lexsort((s_sid, first_row[group_of], s_it))
    f_it, f_pid, f_sid, f_pt = s_it[final], s_pid[final], s_sid[final], s_pt[final]
    f_rt = np.minimum(rt[order][final], max_response)
    f_ep = ep[order][final] if ep is not None else None
    new_prompt = np.r_[True, (f_it[1:] != f_it[:-1]) | (f_pid[1:] != f_pid[:-1])]
    p_index = np.flatnonzero(new_prompt)
    p_it = f_it[p_index]
    # When no epoch column: a prompt's epoch = how many earlier iterations held it (each epoch holds it once).
    p_pid = f_pid[p_index]
    occ_order = np.lexsort((p_it, p_pid))
    occ_new = np.r_[True, p_pid[occ_order][1:] != p_pid[occ_order][:-1]]
    occ_head = np.flatnonzero(occ_new)[np.cumsum(occ_new) - 1]
    occurrence = np.empty(p_pid.size, dtype=np.int64)
    occurrence[occ_order] = np.arange(p_pid.size) - occ_head

    row_bounds = np.searchsorted(f_it, np.arange(K + 1))
    prompt_bounds = np.searchsorted(p_it, np.arange(K + 1))
    samples: list[RolloutSamples] = []
    for i in range(K):
        r0, r1 = row_bounds[i], row_bounds[i + 1]
        q0, q1 = prompt_bounds[i], prompt_bounds[i + 1]
        starts = p_index[q0:q1] - r0
        counts = np.diff(np.r_[starts, r1 - r0])
        arrays = (
            p_pid[q0:q1].copy(),
            f_pt[p_index[q0:q1]].copy(),
            np.repeat(np.arange(q1 - q0, dtype=np.int64), counts),
            f_sid[r0:r1].copy(),
            f_rt[r0:r1].copy(),
        )
        _freeze(*arrays)
        epoch = int(f_ep[r0]) if f_ep is not None else int(occurrence[q0])
        samples.append(RolloutSamples(i, epoch, arrays[0], arrays[1], template, arrays[2], arrays[3], arrays[4]))
    return TraceWorkload(path, samples, max_prompt, max_response)


def write_trace(workload: Workload, iterations: int, path: Path | str) -> Path:
    """Export iterations 0..iterations-1 of any workload to the trace CSV format (with an `epoch` column)."""
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise WorkloadError(f"write_trace: iterations must be an integer >= 1, got {iterations!r}")
    path = Path(path)
    blocks = []
    for i in range(int(iterations)):
        s = workload.iteration(i)
        sp = s.sample_prompt
        n = sp.size
        blocks.append(
            np.column_stack(
                (np.full(n, i), s.prompt_ids[sp], s.sample_ids, s.prompt_tokens[sp], s.response_tokens, np.full(n, s.epoch))
            )
        )
    import pandas as pd  # only for writing: keeps `import sim.workload` light

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(np.concatenate(blocks).astype(np.int64), columns=[*TRACE_COLUMNS, "epoch"])
    table.to_csv(path, index=False, lineterminator="\n")
    return path
