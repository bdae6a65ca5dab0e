"""Where a sweep's tasks run: in this process, on a local process pool, or on Ray.

Each backend is a context manager with `imap_unordered(fn, tasks)` yielding (index, result) as results
arrive; a worker that dies yields its exception. Pool workers ignore SIGINT so Ctrl-C reaches the driver.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sim.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import ProcessPoolExecutor


class InProcess:
    """Runs tasks one after another in this process (one worker; also what tests can monkeypatch)."""

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[tuple[int, Any]]:
        for i, task in enumerate(tasks):
            yield i, fn(task)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the driver, which cancels the sweep and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalPool:
    """A `concurrent.futures.ProcessPoolExecutor` of `workers` processes on this machine."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "LocalPool":
        from concurrent.futures import ProcessPoolExecutor  # only sweeps need it (and its multiprocessing imports)

        self.pool = ProcessPoolExecutor(self.workers, initializer=_ignore_sigint)
        self.pool.submit(int).result()  # start the workers now, before the progress bar starts its thread
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self.pool is not None
        if exc_type is None:
            self.pool.shutdown(wait=True)
            return
        # interrupted or failed: drop queued tasks and stop the workers now, not after their current run
        processes = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.join(timeout=5)

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[tuple[int, Any]]:
        """(index, result) in completion order; a task whose process died yields its exception instead."""
        from concurrent.futures import FIRST_COMPLETED, wait

        assert self.pool is not None
        futures = {self.pool.submit(fn, task): i for i, task in enumerate(tasks)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=futures.__getitem__):
                exc = fut.exception()
                yield futures[fut], exc if exc is not None else fut.result()


LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


class RayBackend:
    """Ray tasks: joins the cluster at `address`, or starts a local one bound to loopback with `workers` CPUs."""

    def __init__(self, workers: int, address: str | None):
        self.workers = workers
        self.address = address
        self.started = False
        self.refs: list[Any] = []

    def __enter__(self) -> "RayBackend":
        if self.address is None:
            for key, value in LOOPBACK_ENV.items():
                os.environ.setdefault(key, value)
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'rlhf-sim[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
            if self.address is None:
                options["num_cpus"] = self.workers
            else:
                options["address"] = self.address
            try:
                ray.init(**options)
            except (ConnectionError, ValueError) as exc:
                raise ConfigError(f"--ray-address {self.address}: cannot connect to a Ray cluster: {exc}") from None
            self.started = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            for ref in self.refs:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:
                    pass
        if self.started:
            self.ray.shutdown()

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[tuple[int, Any]]:
        remote = self.ray.remote(num_cpus=1, max_retries=0)(fn)
        self.refs = [remote.remote(task) for task in tasks]
        index = {ref: i for i, ref in enumerate(self.refs)}
        pending = list(self.refs)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield index[ref], self.ray.get(ref)
                except Exception as exc:  # the worker died (a task's own errors are data)
                    yield index[ref], exc


def make_backend(kind: str, workers: int, address: str | None) -> InProcess | LocalPool | RayBackend:
    if kind == "ray" or address is not None:
        return RayBackend(workers, address)
    return InProcess() if workers <= 1 else LocalPool(workers)
