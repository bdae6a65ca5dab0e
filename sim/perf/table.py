"""Measured decode-step times from a CSV (`batch_size,context_tokens,step_s`), for users who profiled their hardware.

For each measured batch size the step time is fitted as a line in total context (least squares), and
coefficients are interpolated linearly between batch sizes (extrapolated from the nearest two outside
the measured range). That keeps the engine's analytic advance exact. Prefill, inference and training
still come from the roofline (with the experiment's efficiency factors).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sim.catalog import GpuSpec, ModelSpec
from sim.errors import TableError  # noqa: F401 (re-exported)
from sim.perf.base import StepCoeffs
from sim.perf.roofline import RooflineModel, RooflineParams

COLUMNS = ("batch_size", "context_tokens", "step_s")


def read_table(path: Path) -> dict[int, tuple[float, float]]:
    """batch size -> (intercept_s, seconds per context token)."""
    if not path.exists():
        raise TableError(f"{path}: no such file (perf.table)")
    points: dict[int, list[tuple[float, float]]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or any(c not in reader.fieldnames for c in COLUMNS):
            raise TableError(f"{path}: expected a header with columns {', '.join(COLUMNS)}, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                b, c, t = int(row["batch_size"]), float(row["context_tokens"]), float(row["step_s"])
            except (TypeError, ValueError):
                raise TableError(f"{path}: line {line}: batch_size must be an integer, context_tokens and step_s numbers") from None
            if b < 1 or c < 0 or t <= 0:
                raise TableError(f"{path}: line {line}: need batch_size >= 1, context_tokens >= 0 and step_s > 0")
            points.setdefault(b, []).append((c, t))
    if not points:
        raise TableError(f"{path}: no rows")
    fits = {}
    for b, pts in sorted(points.items()):
        ctx = np.array([p[0] for p in pts])
        ts = np.array([p[1] for p in pts])
        if len(pts) == 1 or np.ptp(ctx) == 0:
            fits[b] = (float(ts.mean()), 0.0)
        else:
            slope, intercept = np.polyfit(ctx, ts, 1)
            fits[b] = (float(intercept), float(max(slope, 0.0)))
    return fits


class TableReplica:
    def __init__(self, fits: dict[int, tuple[float, float]], roofline_replica, tp: int):
        self.tp = tp
        self._bs = np.array(sorted(fits), dtype=np.float64)
        self._a = np.array([fits[int(b)][0] for b in self._bs])
        self._s = np.array([fits[int(b)][1] for b in self._bs])
        self._roof = roofline_replica
        self._cache: dict[int, StepCoeffs] = {}

    def _interp(self, y: np.ndarray, b: int) -> float:
        xs = self._bs
        if len(xs) == 1:
            return float(y[0])
        i = int(np.clip(np.searchsorted(xs, b) - 1, 0, len(xs) - 2))
        x0, x1 = xs[i], xs[i + 1]
        return float(y[i] + (y[i + 1] - y[i]) * (b - x0) / (x1 - x0))

    def decode_coeffs(self, batch: int) -> StepCoeffs:
        co = self._cache.get(batch)
        if co is None:
            a = max(self._interp(self._a, batch), 0.0)
            s = max(self._interp(self._s, batch), 0.0)
            co = self._cache[batch] = StepCoeffs(c0=0.0, c1=0.0, m0=a, m1=s, overhead_s=0.0)
        return co

    def prefill_s(self, new_tokens: float, attention_pairs: float) -> float:
        return self._roof.prefill_s(new_tokens, attention_pairs)


class TableModel(RooflineModel):
    """Decode steps from the table (for every model and tp: the table is the user's own measurement)."""

    name = "table"

    def __init__(self, path: Path, gpu: GpuSpec, params: RooflineParams | None = None):
        super().__init__(gpu, params)
        self.path = path
        self.fits = read_table(path)

    def replica(self, model: ModelSpec, tp: int) -> TableReplica:  # type: ignore[override]
        return TableReplica(self.fits, super().replica(model, tp), tp)
