"""Rolling-origin backtests with periodic refits and filtering in between.

A *forecaster* is a factory, as in :func:`pyro.contrib.forecast.backtest`:

``forecaster(train) -> predict``
    fits on ``train`` (a frame of rows up to and including the last training day)
    and returns a function;
``predict(frame, origins, horizon) -> LocationScaleMixture`` or :class:`BlockForecast`
    gives, for every origin ``t`` (a row of ``frame``), the predictive distribution of
    the sum of the target over the ``horizon`` rows after ``t``, using only rows of
    ``frame`` up to ``t``: parameters stay as fitted, states (GARCH variance, filtered
    regime probabilities, windows) are filtered forward. A :class:`BlockForecast` also
    returns the fit and per-day extras (regime probabilities): everything a refit makes
    comes back as a value, so a refit can run in another process.

:func:`backtest` walks through the test period in blocks of ``refit_every`` days:
refit on the data before the block (expanding or sliding window), then predict every
day of the block from the previous close, as practitioners do with GARCH. The frame
handed to ``predict`` ends at the block's last origin, so no forecast can see a
later row; :mod:`tests.evaluation.test_backtest` also perturbs the data after each
origin and checks that nothing before it moves.

With ``on_error="record"`` a refit (its fit or its forecasts) that raises does not stop
the backtest: it becomes a :class:`BacktestFailure` in ``BacktestResult.failures``, and
the days of its block have no forecast from that forecaster (its scores are over the
remaining days; comparisons with other forecasters use the days both have).

The blocks are independent tasks (:func:`plan_backtest`, :class:`BacktestPlan`), run
here one after the other or on a Dask cluster with ``client=``
(:mod:`bayes_moe.evaluation.fanout`); the scores are the per-day ``metrics``
(:data:`~bayes_moe.evaluation.scoring.DEFAULT_METRICS` unless given).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError
from bayes_moe.evaluation.distributions import LocationScaleMixture
from bayes_moe.evaluation.fanout import Task, run_tasks
from bayes_moe.evaluation.scoring import score_table, summarize

Predict = Callable[[pd.DataFrame, pd.DatetimeIndex, int], "LocationScaleMixture | BlockForecast"]
Forecaster = Callable[[pd.DataFrame], Predict]


@dataclass(frozen=True)
class BacktestFailure:
    """A part of a backtest that raised: one refit, or a whole forecaster.

    Attributes
    ----------
    model : str
        Name of the forecaster.
    error_type : str
        Class name of the exception.
    message : str
        Its message (first line).
    refit_date : Timestamp or None
        Last training day of the failed refit; None when the failure was not in a refit.
    first_day, last_day : Timestamp or None
        First and last realized test day left without a forecast.
    n_days : int or None
        Test days left without a forecast.
    """

    model: str
    error_type: str
    message: str
    refit_date: pd.Timestamp | None = None
    first_day: pd.Timestamp | None = None
    last_day: pd.Timestamp | None = None
    n_days: int | None = None

    @classmethod
    def from_exception(cls, model: str, error: BaseException, **where) -> BacktestFailure:
        """The record of ``error`` raised by ``model``; ``where``: the other attributes."""
        message = str(error).strip().splitlines()
        return cls(model, type(error).__name__, message[0] if message else "", **where)

    def to_dict(self) -> dict:
        """JSON-ready: dates as ``YYYY-MM-DD`` strings (None stays None)."""

        def day(stamp):
            return None if stamp is None else str(pd.Timestamp(stamp).date())

        return {
            "model": self.model,
            "error_type": self.error_type,
            "message": self.message,
            "refit_date": day(self.refit_date),
            "first_day": day(self.first_day),
            "last_day": day(self.last_day),
            "n_days": self.n_days,
        }


class BacktestError(RuntimeError):
    """Every refit of a backtest failed; ``failures`` holds their records."""

    def __init__(self, message: str, failures: list[BacktestFailure]):
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class BacktestResult:
    """Per-day predictive distributions and scores of one forecaster.

    Attributes
    ----------
    name : str
    origins : DatetimeIndex (n,)
        Close whose information each forecast uses.
    predictive : LocationScaleMixture
        One mixture per test day; its ``dates`` are the realized days.
    y : ndarray (n,)
        Realized ``horizon``-day target sums.
    table : DataFrame
        Per-day scores (:func:`~bayes_moe.evaluation.scoring.score_table`).
    refit_dates : list of Timestamp
        Last training day of each refit.
    horizon : int
    elapsed_s : float
    extras : dict
        Forecaster-specific per-day information (e.g. regime probabilities).
    failures : list of BacktestFailure
        Refits that raised (``on_error="record"``); their days are not in ``table``.
    fits : list
        Each successful refit's fitted model, with ``keep_fits=True`` (else empty).
    compute_s : float
        Seconds spent in the refits and their forecasts, summed over refits (equal to
        ``elapsed_s`` up to scoring when run serially; larger on a cluster).
    """

    name: str
    origins: pd.DatetimeIndex
    predictive: LocationScaleMixture
    y: np.ndarray
    table: pd.DataFrame
    refit_dates: list
    horizon: int
    elapsed_s: float
    extras: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    fits: list = field(default_factory=list)
    compute_s: float = float("nan")

    def summary(self) -> dict:
        """``log_score, crps, coverage_90, coverage_95, pit_ks_pvalue, n_days`` and more."""
        return summarize(self.table)


def origin_rows(
    frame: pd.DataFrame, *, test_start, test_end=None, horizon: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the origins and of the realized days of a test period.

    A test day ``d`` in ``[test_start, test_end]`` is forecast from the origin ``h``
    rows before it; only days whose origin lies inside ``frame`` count.
    """
    dates = frame.index
    start = pd.Timestamp(test_start)
    end = pd.Timestamp(test_end) if test_end is not None else dates[-1]
    realized = np.flatnonzero((dates >= start) & (dates <= end))
    realized = realized[realized - horizon >= 0]
    if len(realized) == 0:
        raise DataError(f"no test days between {start.date()} and {end.date()} in the data")
    return realized - horizon, realized


def realized_dates(index: pd.DatetimeIndex, positions: np.ndarray, horizon: int):
    """Dates of the realized values of origins at ``positions``, horizon ``h``.

    Row ``t + h`` of ``index`` where it exists, else the origin date plus ``h``
    business days.

    Parameters
    ----------
    index : DatetimeIndex (T,)
        Dates of the frame.
    positions : ndarray of int (n,)
        Row positions of the origins.
    horizon : int

    Returns
    -------
    DatetimeIndex (n,)
    """
    positions = np.asarray(positions)
    target = positions + horizon
    inside = target < len(index)
    out = (index[positions] + horizon * pd.offsets.BDay()).to_numpy().copy()
    out[inside] = index[target[inside]].to_numpy()
    return pd.DatetimeIndex(out, name="date")


def realized_sums(frame: pd.DataFrame, target: str, origins: np.ndarray, horizon: int):
    """Sum of ``target`` over rows ``t+1 .. t+h`` for each origin row ``t``."""
    values = np.concatenate([[0.0], np.cumsum(frame[target].to_numpy(dtype=np.float64))])
    return values[origins + 1 + horizon] - values[origins + 1]


@dataclass(frozen=True)
class BlockForecast:
    """Everything one refit produced, returned as values (nothing is read off objects).

    ``predict`` may return this or just its ``predictive``.

    Attributes
    ----------
    predictive : LocationScaleMixture
        One mixture per origin of the block.
    extras : dict
        Forecaster-specific information; a frame or series with one row per origin is
        a per-day extra, re-dated by the backtest and concatenated over blocks.
    fit : object, optional
        The fitted model behind the forecasts (kept with ``backtest(keep_fits=True)``).
    elapsed_s : float
        Seconds the refit and its forecasts took (set by the backtest).
    """

    predictive: LocationScaleMixture
    extras: dict = field(default_factory=dict)
    fit: object = None
    elapsed_s: float = float("nan")


@dataclass(frozen=True)
class BacktestPlan:
    """The refit blocks of one backtest, as tasks, and the assembly of their results.

    Made by :func:`plan_backtest` (all checks done); :func:`backtest` runs its
    :meth:`tasks` and :meth:`assemble` s the outcomes, and a sweep does the same for
    many plans at once.
    """

    frame: pd.DataFrame
    forecaster: Forecaster
    label: str
    horizon: int
    target: str
    starts: tuple  # first training row of each block
    blocks: tuple  # origin rows of each block
    metrics: Mapping | None = None
    keep_fits: bool = False

    def tasks(self) -> list[Task]:
        """One task per refit block: :func:`forecast_block` on it."""
        return [
            Task(
                forecast_block,
                (self.frame, self.forecaster, lo, block, self.horizon, self.label, self.keep_fits),
                f"{self.label} refit {self.frame.index[block[0]].date()}",
            )
            for lo, block in zip(self.starts, self.blocks, strict=True)
        ]

    def assemble(self, outcomes: Sequence, elapsed_s: float) -> BacktestResult:
        """The :class:`BacktestResult` of the blocks' outcomes, in block order.

        Each outcome is a :class:`BlockForecast` or the exception its block raised;
        failed blocks become :class:`BacktestFailure` records.

        Raises
        ------
        BacktestError
            When every block failed.
        """
        frame, horizon, label = self.frame, self.horizon, self.label
        extras: dict[str, Any]
        parts, kept, extras, failures, fits, compute = [], [], {}, [], [], 0.0
        for block, outcome in zip(self.blocks, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failures.append(
                    BacktestFailure.from_exception(
                        label,
                        outcome,
                        refit_date=frame.index[block[0]],
                        first_day=frame.index[block[0] + horizon],
                        last_day=frame.index[block[-1] + horizon],
                        n_days=len(block),
                    )
                )
                continue
            parts.append(outcome.predictive)
            kept.append(block)
            fits.append(outcome.fit)
            compute += outcome.elapsed_s
            for key, value in outcome.extras.items():
                extras.setdefault(key, []).append(value)
        if not parts:
            raise BacktestError(
                f"every refit of {label} failed; the first: {failures[0].error_type}: "
                f"{failures[0].message}",
                failures,
            )
        origins = np.concatenate(kept)
        realized = origins + horizon
        # The realized dates come from the data (a forecaster may only guess the date of
        # a day beyond the rows it was shown).
        predictive = replace(LocationScaleMixture.concatenate(parts), dates=frame.index[realized])
        y = realized_sums(frame, self.target, origins, horizon)
        table = score_table(predictive, y, self.metrics)
        table.index = frame.index[realized]
        extras = {
            k: pd.concat(v) if isinstance(v[0], pd.DataFrame | pd.Series) else v
            for k, v in extras.items()
        }
        return BacktestResult(
            name=label,
            origins=frame.index[origins],
            predictive=predictive,
            y=y,
            table=table,
            refit_dates=[frame.index[block[0]] for block in self.blocks],
            horizon=horizon,
            elapsed_s=elapsed_s,
            extras=extras,
            failures=failures,
            fits=fits if self.keep_fits else [],
            compute_s=compute,
        )


def plan_backtest(
    frame: pd.DataFrame,
    forecaster: Forecaster,
    *,
    test_start,
    test_end=None,
    refit_every: int = 250,
    horizon: int = 1,
    target: str = "ret",
    window: int | None = None,
    name: str | None = None,
    on_error: str = "raise",
    metrics: Mapping[str, Callable] | None = None,
    keep_fits: bool = False,
) -> BacktestPlan:
    """Check the arguments of :func:`backtest` and split its test period into blocks."""
    if refit_every < 1 or horizon < 1:
        raise ValueError("refit_every and horizon must be positive integers")
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    if target not in frame.columns:
        raise DataError(f"target column {target!r} is missing; columns: {list(frame.columns)}")
    if metrics is not None and not all(callable(m) for m in metrics.values()):
        raise TypeError("metrics must map names to functions f(predictive, y)")
    label = cast(str, name or getattr(forecaster, "name", type(forecaster).__name__))
    origins, _ = origin_rows(frame, test_start=test_start, test_end=test_end, horizon=horizon)
    blocks = tuple(origins[i : i + refit_every] for i in range(0, len(origins), refit_every))
    starts = tuple(0 if window is None else max(0, b[0] + 1 - window) for b in blocks)
    return BacktestPlan(
        frame, forecaster, label, horizon, target, starts, blocks, metrics, keep_fits
    )


def backtest(
    frame: pd.DataFrame,
    forecaster: Forecaster,
    *,
    test_start,
    test_end=None,
    refit_every: int = 250,
    horizon: int = 1,
    target: str = "ret",
    window: int | None = None,
    name: str | None = None,
    progress: bool = True,
    on_error: str = "raise",
    metrics: Mapping[str, Callable] | None = None,
    client=None,
    torch_threads: int | None = 1,
    keep_fits: bool = False,
) -> BacktestResult:
    """Rolling-origin backtest of ``forecaster`` on ``frame``.

    Parameters
    ----------
    frame : DataFrame
        Date-indexed data with the ``target`` column (and whatever the forecaster reads).
    forecaster : callable
        ``forecaster(train) -> predict`` (module docstring).
    test_start, test_end : date-like
        First and last realized test day (``test_end`` defaults to the last row).
    refit_every : int
        Test days between refits; in between, states are filtered forward.
    horizon : int
        ``h``: forecast the sum of the target over the next ``h`` rows.
    target : str
    window : int, optional
        Sliding training window in rows; ``None`` for an expanding window.
    name : str, optional
        Label of the forecaster (default: its ``name`` attribute or class name).
    progress : bool
        Show a progress bar over refits.
    on_error : {"raise", "record"}
        What an exception in a refit (fitting or forecasting its block) does: stop the
        backtest, or become a :class:`BacktestFailure` in the result's ``failures``,
        leaving that block's days without a forecast.
    metrics : mapping of str to callable, optional
        Per-day metrics of the score table (default
        :data:`~bayes_moe.evaluation.scoring.DEFAULT_METRICS`).
    client : distributed.Client, optional
        Run the refit blocks as tasks on this Dask cluster (``forecaster`` must pickle);
        the result equals the serial one with the same seeds and thread count.
    torch_threads : int or None
        Torch and BLAS threads of each refit, here or on a worker (None: as they are).
    keep_fits : bool
        Keep each refit's fitted model in ``result.fits`` (on a cluster, they travel
        back to this process).

    Returns
    -------
    BacktestResult

    Raises
    ------
    BacktestError
        With ``on_error="record"``, when every refit failed.
    """
    plan = plan_backtest(
        frame,
        forecaster,
        test_start=test_start,
        test_end=test_end,
        refit_every=refit_every,
        horizon=horizon,
        target=target,
        window=window,
        name=name,
        on_error=on_error,
        metrics=metrics,
        keep_fits=keep_fits,
    )
    start = time.perf_counter()
    outcomes = run_tasks(
        plan.tasks(),
        client=client,
        torch_threads=torch_threads,
        progress=progress,
        desc=f"backtest {plan.label}",
        stop_on_error=on_error == "raise",
    )
    return plan.assemble(outcomes, time.perf_counter() - start)


def forecast_block(
    frame: pd.DataFrame,
    forecaster: Forecaster,
    lo: int,
    block: np.ndarray,
    horizon: int,
    label: str,
    keep_fit: bool = False,
) -> BlockForecast:
    """Refit on rows ``lo .. block[0]`` and forecast every origin of ``block``.

    Returns the block's :class:`BlockForecast`; a per-day extra (a frame or series with
    one row per origin) is dated by the realized days of the data, as the scores are: a
    forecaster shown the rows up to the block's last origin can only guess the dates of
    the last ``h`` realized days (and a guess that skips a holiday can repeat a real
    date). The fit is dropped unless ``keep_fit``.
    """
    start = time.perf_counter()
    predict = forecaster(frame.iloc[lo : block[0] + 1])
    visible = frame.iloc[lo : block[-1] + 1]  # nothing after the block's last origin
    out = predict(visible, frame.index[block], horizon)
    if not isinstance(out, BlockForecast):
        out = BlockForecast(out)
    if out.predictive.n_days != len(block):
        raise RuntimeError(
            f"{label} returned {out.predictive.n_days} forecasts for {len(block)} days"
        )
    extras = dict(out.extras)
    for key, value in extras.items():
        if isinstance(value, pd.DataFrame | pd.Series) and len(value) == len(block):
            extras[key] = value.set_axis(frame.index[block + horizon])
    return replace(
        out,
        extras=extras,
        fit=out.fit if keep_fit else None,
        elapsed_s=time.perf_counter() - start,
    )
