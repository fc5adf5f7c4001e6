"""Running a sweep's points: the resume log (points.jsonl, read_log), the progress bar, and
the executors that evaluate points and hand each finished row to a callback: in this process,
in a pool of local processes (spawned), or on a Dask cluster (evaluate_points picks one).

The executors take the evaluate function (tse.quant.sweep_eval.evaluate unless told otherwise):
any module-level function of (Context, Point) -> row travels to the workers by reference.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tse.ref_model.errors import ConfigError, InputError

from .sweep_eval import Context, evaluate as evaluate_point
from .sweep_grid import Point

CONNECT_TIMEOUT = "15s"
"""How long to wait for a Dask scheduler (--scheduler) to answer."""


class Progress:
    """A progress bar on stderr (off with enabled=False): one line redrawn on a terminal,
    a line per tenth in a log. The total may grow (points added as results come in)."""

    def __init__(self, total: int, done: int, enabled: bool, what: str = "sweep",
                 stream=None):
        self.total, self.done, self.enabled, self.what = total, done, enabled, what
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.last_decile = -1
        self.last_written = None
        self.show()

    def step(self, label: str = "") -> None:
        self.done += 1
        self.show(label)

    def _line(self, label: str = "") -> str:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        return (f"{self.what} [{bar}] {self.done}/{self.total} points "
                f"{time.perf_counter() - self.t0:5.1f} s {label}")[:110]

    def show(self, label: str = "") -> None:
        if not self.enabled:
            return
        decile = int(10 * self.done / self.total) if self.total else 10
        if self.tty:
            self.stream.write("\r" + self._line(label).ljust(110))
        elif decile > self.last_decile:
            self.last_decile = decile
            self.last_written = (self.done, self.total)
            self.stream.write(self._line(label) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\n")
        elif self.last_written != (self.done, self.total):
            self.stream.write(self._line() + "\n")
        self.stream.flush()


def read_log(path: Path) -> dict:
    """Finished points of an earlier run: id -> row (a torn last line is skipped)."""
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row:
                rows[row["id"]] = row
    return rows


_WORKER: list = []


def _init_worker(ctx: Context, evaluate) -> None:
    _WORKER[:] = [ctx, evaluate]


def _evaluate_in_worker(point: Point) -> dict:
    ctx, evaluate = _WORKER
    return evaluate(ctx, point)


def run_local(ctx: Context, todo: list, workers: int, on_row, evaluate=evaluate_point) -> None:
    """Evaluate the points in this process (one worker) or in a pool of spawned processes;
    on_row(row) as each finishes (in completion order)."""
    if workers <= 1 or len(todo) <= 1:
        for p in todo:
            on_row(evaluate(ctx, p))
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    # spawn: the workers need numpy and numba only, never the parent's torch threads
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(ctx, evaluate)) as pool:
        pending = {pool.submit(_evaluate_in_worker, p) for p in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_row(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def run_dask(ctx: Context, todo: list, scheduler: str, workers: int, on_row,
             evaluate=evaluate_point) -> None:
    """Evaluate the points on a Dask cluster: a scheduler's address, or "local" (a local
    cluster of `workers` processes); on_row(row) as each finishes. An unreachable scheduler
    is a one-line InputError, Dask not installed a ConfigError."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("scheduler: Dask is not installed; allowed: pip install "
                          "'dask[distributed]', or leave --scheduler out for local "
                          "processes") from None
    cluster = None
    try:
        if scheduler == "local":
            cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        if cluster is not None:
            cluster.close()
        raise InputError(f"scheduler: cannot connect to {scheduler!r} ({e}); allowed: a "
                         "running Dask scheduler's address, e.g. tcp://host:8786, or "
                         "'local'") from None
    try:
        ctx_future = client.scatter(ctx, broadcast=True)
        futures = [client.submit(evaluate, ctx_future, p, pure=False) for p in todo]
        try:
            for fut in as_completed(futures):
                on_row(fut.result())
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def evaluate_points(ctx: Context, todo: list, workers: int, scheduler: str | None, on_row,
                    evaluate=evaluate_point) -> None:
    """Evaluate the points on the Dask scheduler if one is named, else locally."""
    if not todo:
        return
    if scheduler:
        run_dask(ctx, todo, scheduler, workers, on_row, evaluate)
    else:
        run_local(ctx, todo, workers, on_row, evaluate)
