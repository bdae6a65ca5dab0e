"""What a sweep shows while it runs and when it is done: rich progress bars, one line per finished run, a table.

rich is imported only when something is shown (a quiet run imports nothing). Left out: results files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sim.sweep.driver import SweepOutcome
    from sim.sweep.tasks import TaskResult


class IterationBar:
    """A rich progress bar over the iterations of one run (when asked for: a lone run on a terminal)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled
        self.progress: Any = None

    def __enter__(self) -> "IterationBar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn(f"{self.label}: iterations"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.progress.start()
            self.bar = self.progress.add_task("iterations", total=self.total)
        return self

    def advance(self, iteration: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.bar)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


class Log:
    """A rich progress bar over runs when stderr is a terminal, and one line per finished run (unless quiet)."""

    def __init__(self, quiet: bool, total: int):
        self.quiet = quiet
        self.total = total
        self.count = 0
        self.progress: Any = None
        self._console: Any = None

    @property
    def console(self) -> Any:
        """rich's console on stderr, made when first needed (a quiet run prints nothing: no rich import)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def __enter__(self) -> "Log":
        if not self.quiet and self.console.is_terminal and self.total > 1:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=True,
            )  # fmt: skip
            self.progress.start()
            self.bar = self.progress.add_task("runs", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def finished(self, res: TaskResult) -> None:
        self.count += 1
        if self.progress is not None:
            self.progress.advance(self.bar)
        width = len(str(self.total))
        head = f"[{self.count:>{width}}/{self.total}]"
        if res.kind == "ok":
            s = res.result.summary
            self.line(f"{head} ok     {res.run_id}: {s['mean_iteration_s']:.1f} s/iteration, {s['total_cost_usd']:.2f} USD ({res.elapsed_s:.1f} s)")
        else:
            self.line(f"{head} failed {res.run_id}: {' | '.join(res.error.splitlines())}")


def print_sweep_table(outcome: SweepOutcome, sweep_keys: list[str]) -> None:
    """One row per run (a sweep may have hundreds: the per-metric table of a single run would not fit)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(outcome.rows)} runs (results in {outcome.exp_dir}/)")
    table.add_column("run_id", overflow="fold")
    table.add_column("status")
    for col in ["s/iteration", "cost (USD)", "util.", "speedup"]:
        table.add_column(col, justify="right")
    for row in outcome.rows:
        if row["status"] != "ok":
            table.add_row(row["run_id"], "failed", "", "", "", "")
            continue
        speedups = [f"{row[k]:.2f}x vs {k.split('.')[1]}" for k in row if k.startswith("compare.") and k.endswith(".speedup")]
        table.add_row(
            row["run_id"], "ok", f"{row['mean_iteration_s']:.1f}", f"{row['total_cost_usd']:.2f}", f"{row['utilization']:.1%}",
            ", ".join(speedups),
        )  # fmt: skip
    Console().print(table)
