"""Run independent pieces of work here or as Dask tasks, keeping failures apart.

A backtest or a sweep is a list of :class:`Task` objects (one per refit block) whose
results are plain values; :func:`run_tasks` runs them one after the other in this
process, or on a :class:`distributed.Client` (``client=``), and returns, in the order of
the tasks, each task's value or the exception it raised. Nothing is read back from
objects the tasks touched, so a task gives the same value in a worker process as here.

Threads: every task runs with ``torch_threads`` torch and BLAS threads (default one,
here and on a Dask worker), so that ``n`` worker threads on a machine with ``n`` cores
do not oversubscribe it; :func:`local_cluster` starts one single-threaded worker
process per requested worker. Results equal the serial run's bit for bit when both use
the same thread count (floating-point reductions depend on it).

Dask is an optional dependency: ``pip install bayes-moe[dask]``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from bayes_moe._runtime import torch_threads

DASK_EXTRA = "pip install 'bayes-moe[dask]'"


@dataclass(frozen=True)
class Task:
    """``function(*arguments)``, named ``label`` in progress bars and Dask's dashboard."""

    function: Callable
    arguments: tuple
    label: str


def require_distributed():
    """The ``distributed`` module, or an ImportError that names the extra to install."""
    try:
        import distributed
    except ImportError as error:  # pragma: no cover - the extra is installed in CI
        raise ImportError(
            f"running on a Dask cluster needs dask.distributed: {DASK_EXTRA}"
        ) from error
    return distributed


@contextlib.contextmanager
def local_cluster(n_workers: int, *, threads_per_worker: int = 1) -> Iterator:
    """``with local_cluster(n) as client:`` a Dask client on ``n`` new worker processes.

    Each process runs ``threads_per_worker`` tasks at once (each task with one torch
    thread unless told otherwise), so ``n_workers * threads_per_worker`` should not
    exceed the cores; no dashboard is served. The cluster is shut down on exit.
    """
    if n_workers < 1 or threads_per_worker < 1:
        raise ValueError("n_workers and threads_per_worker must be positive integers")
    distributed = require_distributed()
    with (
        distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def connect(scheduler: str):
    """A :class:`distributed.Client` on the running scheduler at ``scheduler``."""
    return require_distributed().Client(scheduler)


def call_with_threads(function: Callable, threads: int | None, *arguments):
    """``function(*arguments)`` with ``threads`` torch and BLAS threads (None: as they are).

    The body of every task. BLAS matters as much as torch for equal results: an
    optimizer that calls LAPACK (arch's GARCH fit) rounds differently with two threads.
    """
    limits = threadpool_limits(limits=threads) if threads is not None else nullcontext()
    with torch_threads(threads), limits:
        return function(*arguments)


def run_tasks(
    tasks: Sequence[Task],
    *,
    client=None,
    torch_threads: int | None = 1,
    progress: bool = True,
    desc: str = "tasks",
    stop_on_error: bool = True,
) -> list:
    """Each task's value, or the exception it raised, in the order of ``tasks``.

    Parameters
    ----------
    tasks : sequence of Task
    client : distributed.Client, optional
        Run the tasks on its cluster (data frames among the arguments are sent once);
        None runs them here, one after the other.
    torch_threads : int or None
        Torch and BLAS threads of each task (None: as they are in the process running
        it). The mixture's small tensors run fastest on one thread, and equal thread
        counts give equal results here and on a cluster.
    progress : bool
        A progress bar over finished tasks.
    desc : str
        Its label.
    stop_on_error : bool
        Raise the first exception (cancelling what is left) instead of returning it.
    """
    tasks = list(tasks)
    if client is None:
        return _run_here(tasks, torch_threads, progress, desc, stop_on_error)
    return _run_on_cluster(tasks, client, torch_threads, progress, desc, stop_on_error)


def _run_here(tasks, threads, progress, desc, stop_on_error):
    out = []
    for task in tqdm(tasks, desc=desc, disable=not progress, leave=False):
        try:
            out.append(call_with_threads(task.function, threads, *task.arguments))
        except Exception as error:
            if stop_on_error:
                raise
            out.append(error)
    return out


def _run_on_cluster(tasks, client, threads, progress, desc, stop_on_error):
    import pandas as pd

    distributed = require_distributed()
    shared: dict[int, object] = {}  # id(frame) -> its future on the cluster

    def send(argument):
        if isinstance(argument, pd.DataFrame | pd.Series):
            if id(argument) not in shared:
                shared[id(argument)] = client.scatter(argument, broadcast=True, hash=False)
            return shared[id(argument)]
        return argument

    stamp = time.time_ns()
    futures = [
        client.submit(
            call_with_threads,
            task.function,
            threads,
            *(send(a) for a in task.arguments),
            key=f"{task.label}-{stamp}-{i}",
            pure=False,
        )
        for i, task in enumerate(tasks)
    ]
    position = {future.key: i for i, future in enumerate(futures)}
    out: list = [None] * len(tasks)
    finished = distributed.as_completed(futures)
    try:
        for future in tqdm(finished, total=len(futures), desc=desc, disable=not progress):
            i = position[future.key]
            if future.status == "error":
                error = future.exception()
                if stop_on_error:
                    raise error
                out[i] = error
            else:
                out[i] = future.result()
    finally:
        client.cancel(futures)
    return out
