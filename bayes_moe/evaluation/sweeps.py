"""A calibration study in one call: data sets x configurations x horizons, one table.

:func:`sweep` backtests every configuration on every data set at every horizon with
the same protocol (test period, refit schedule, metrics) and returns one tidy table,
a row per ``(dataset, config, horizon)``. Every refit block of every backtest is an
independent task (:class:`~bayes_moe.evaluation.backtest.BacktestPlan`); all of them are
planned and checked before the first fit, then run here or, with ``client=``, fanned
out together on a Dask cluster (:mod:`bayes_moe.evaluation.fanout`). A configuration
that fails on some refits or on a whole data set is reported in its row; the others
go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from bayes_moe.data.errors import DataError
from bayes_moe.data.loaders import DATASETS
from bayes_moe.evaluation.backtest import BacktestError, BacktestPlan, plan_backtest
from bayes_moe.evaluation.fanout import run_tasks


def _datasets(data) -> dict[str, pd.DataFrame]:
    """``data`` as ``{name: frame}``: a frame, a mapping, or embedded data set names."""
    if isinstance(data, pd.DataFrame):
        return {"data": data}
    if isinstance(data, str):
        data = [data]
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, Sequence):
        items = [(name, name) for name in data]
    else:
        raise TypeError("data must be a DataFrame, a mapping of names to frames, or names")
    out = {}
    for name, frame in items:
        if isinstance(frame, str):
            if frame not in DATASETS:
                raise DataError(
                    f"unknown data set {frame!r}; embedded data sets: {sorted(DATASETS)}"
                )
            frame = DATASETS[frame]()
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"data set {name!r} is a {type(frame).__name__}, not a DataFrame")
        out[str(name)] = frame
    if not out:
        raise ValueError("sweep needs at least one data set")
    return out


def _for_horizon(forecaster, horizon: int):
    """The forecaster fitted for ``horizon`` (``for_horizon``), else itself."""
    adapt = getattr(forecaster, "for_horizon", None)
    return adapt(horizon) if adapt is not None else forecaster


def sweep(
    data,
    configs: Mapping[str, Callable],
    horizons: Sequence[int] = (1,),
    *,
    test_start,
    test_end=None,
    refit_every: int = 250,
    target: str = "ret",
    window: int | None = None,
    metrics: Mapping[str, Callable] | None = None,
    client=None,
    torch_threads: int | None = 1,
    progress: bool = True,
    on_error: str = "record",
    per_day: bool = False,
) -> pd.DataFrame:
    """Backtest every configuration on every data set at every horizon.

    Parameters
    ----------
    data : DataFrame, mapping of str to DataFrame, or sequence of str
        The data sets: one frame (named ``"data"``), named frames, or names of the
        embedded data sets (``bm.data.DATASETS``: ``"sp500"``, ``"nasdaq"``).
    configs : mapping of str to forecaster
        Backtest forecasters by name (``MoEForecaster``, a baseline...); one with a
        ``for_horizon(h)`` method (``MoEForecaster``) is refitted for each horizon,
        the others forecast every horizon from the same fit.
    horizons : sequence of int
    test_start, test_end, refit_every, target, window, metrics, torch_threads
        As in :func:`~bayes_moe.evaluation.backtest.backtest`, the same for every run.
    client : distributed.Client, optional
        Run all refit blocks of all backtests as tasks on this Dask cluster.
    progress : bool
        A progress bar over refit blocks.
    on_error : {"record", "raise"}
        ``"record"``: a failed refit (or a backtest whose refits all failed) is reported
        in its row and the others go on; ``"raise"``: the first failure stops the sweep.
    per_day : bool
        Return the per-day score tables stacked instead of their summaries.

    Returns
    -------
    DataFrame
        One row per ``(dataset, config, horizon)``: those three columns, the
        :func:`~bayes_moe.evaluation.scoring.summarize` entries, ``failed_refits``,
        ``error`` (the first failure, empty if none) and ``compute_s`` (seconds of
        fitting and forecasting). With ``per_day``: one row per scored day with
        ``dataset, config, horizon, date`` and the score table's columns.

    Raises
    ------
    DataError, ValueError
        Before any fit, for a bad data set, horizon or test period.
    """
    frames = _datasets(data)
    horizons = [int(h) for h in horizons]
    if not horizons or min(horizons) < 1:
        raise ValueError(f"horizons must be positive integers, got {horizons}")
    if not configs:
        raise ValueError("sweep needs at least one configuration")
    plans: dict[tuple, BacktestPlan] = {}
    for dataset, frame in frames.items():
        for config, forecaster in configs.items():
            for horizon in horizons:
                plans[dataset, config, horizon] = plan_backtest(
                    frame,
                    _for_horizon(forecaster, horizon),
                    test_start=test_start,
                    test_end=test_end,
                    refit_every=refit_every,
                    horizon=horizon,
                    target=target,
                    window=window,
                    name=config,
                    on_error=on_error,
                    metrics=metrics,
                )
    tasks = [plan.tasks() for plan in plans.values()]
    start = time.perf_counter()
    outcomes = run_tasks(
        [task for group in tasks for task in group],
        client=client,
        torch_threads=torch_threads,
        progress=progress,
        desc="sweep",
        stop_on_error=on_error == "raise",
    )
    elapsed = time.perf_counter() - start
    rows, days, first = [], [], 0
    for (dataset, config, horizon), plan, group in zip(plans, plans.values(), tasks, strict=True):
        keys = {"dataset": dataset, "config": config, "horizon": horizon}
        try:
            result = plan.assemble(outcomes[first : first + len(group)], elapsed)
        except BacktestError as error:
            rows.append({**keys, "failed_refits": len(error.failures), "error": str(error)})
            continue
        finally:
            first += len(group)
        failures = result.failures
        rows.append(
            {
                **keys,
                **result.summary(),
                "failed_refits": len(failures),
                "error": f"{failures[0].error_type}: {failures[0].message}" if failures else "",
                "compute_s": result.compute_s,
            }
        )
        days.append(result.table.reset_index().assign(**keys))
    if per_day:
        if not days:
            raise BacktestError("every backtest of the sweep failed", [])
        table = pd.concat(days, ignore_index=True)
        front = ["dataset", "config", "horizon", "date"]
        return table[front + [c for c in table.columns if c not in front]]
    return pd.DataFrame(rows)
