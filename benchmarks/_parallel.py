"""Run independent benchmark tasks serially or in worker processes, keeping failures apart.

A task is ``function(*arguments)`` returning ``(name, result or None, error or None)``
(the error a formatted traceback): a failing task is reported and the others go on.
Workers are started with ``spawn`` (each imports torch afresh and sets its own thread
count), so the function must live in an importable module. A worker whose parent
process is gone (the run was killed) exits within :data:`PARENT_POLL_S` seconds
instead of computing on for nobody.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm

#: How often (seconds) a worker checks that the process that started it still runs.
PARENT_POLL_S = 1.0


def exit_with_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """Worker initializer: end this process once ``parent_pid`` is no longer its parent."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)  # the run that wanted the result is gone

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def run_tasks(
    function: Callable,
    tasks: Iterable[tuple],
    *,
    jobs: int,
    desc: str,
    on_result: Callable[[str, object], None] | None = None,
) -> tuple[dict, dict]:
    """``({name: result}, {name: error})`` of every task, in the order of ``tasks``.

    ``on_result(name, result)``, if given, is called in this process as soon as a task
    succeeds (to keep its result on disk before the others finish).
    """
    tasks = list(tasks)
    outcomes = []

    def finished(outcome):
        outcomes.append(outcome)
        name, result, error = outcome
        if error is None and on_result is not None:
            on_result(name, result)

    if jobs <= 1:
        for arguments in tqdm(tasks, desc=desc):
            finished(function(*arguments))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = [pool.submit(function, *arguments) for arguments in tasks]
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc):
                finished(future.result())
    results = {name: result for name, result, error in outcomes if error is None}
    errors = {name: error for name, _, error in outcomes if error is not None}
    for name, error in errors.items():
        print(f"{name} FAILED: {error.splitlines()[0]}", flush=True)
    order = [arguments[0] for arguments in tasks]
    ordered = {name: results[name] for name in order if name in results}
    return ordered, errors
