"""Run independent benchmark tasks serially or in worker processes, keeping failures apart.

A task is ``function(*arguments)`` returning ``(name, result or None, error or None)``
(the error a formatted traceback): a failing task is reported and the others go on.
Workers are started with ``spawn`` (each imports torch afresh and sets its own thread
count), so the function must live in an importable module.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm


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
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
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
