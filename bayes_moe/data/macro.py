r"""Join lower-frequency (monthly, quarterly) series onto a daily frame without look-ahead.

A monthly value is dated at the start of its reference period (core CPI for March 2020
is dated 2020-03-01) but nobody knows it until it is published, some time after the
period ends. :func:`join_asof` makes each value visible on a daily row ``t`` only if

.. math::

    \text{end of its reference period} + \text{publication lag} \le t,

and then shows the latest such value (an as-of join, backward in time). Each column is
joined on its own: a NaN in one column of the low-frequency frame does not hide the
others, and each column can have its own lag.

The default lags, :data:`DEFAULT_PUBLICATION_LAGS`, are assumptions, not release
calendars:

=================  =========================  ===============================================
column             lag after the period end   why
=================  =========================  ===============================================
``core_cpi``       15 calendar days           BLS publishes the CPI for month M around the
                                              10th-15th of month M+1 (8:30 ET, before the
                                              close); 15 days is the late end of that range.
``aaa``, ``baa``   1 business day             Moody's monthly yields are averages of daily
                                              yields, complete after the month's last day.
``credit_spread``  1 business day             ``baa - aaa``, as above.
=================  =========================  ===============================================

For other series pass an explicit lag, e.g. ``pd.Timedelta(days=30)`` for the advance
estimate of quarterly GDP (about four weeks after the quarter ends).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeAlias

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError
from bayes_moe.data.validation import validate_index

__all__ = ["DEFAULT_PUBLICATION_LAGS", "join_asof"]

Lag: TypeAlias = pd.offsets.BaseOffset | pd.Timedelta

DEFAULT_PUBLICATION_LAGS: Mapping[str, Lag] = MappingProxyType(
    {
        "core_cpi": pd.Timedelta(days=15),
        "aaa": pd.offsets.BDay(1),
        "baa": pd.offsets.BDay(1),
        "credit_spread": pd.offsets.BDay(1),
    }
)
"""Assumed publication lags after the end of the reference period (read-only)."""

#: pandas period frequency of each ``period_end`` of :func:`join_asof`.
PERIOD_FREQ = {"month": "M", "quarter": "Q", "year": "Y"}


def join_asof(
    daily: pd.DataFrame,
    low_freq: pd.DataFrame,
    *,
    publication_lag: Mapping[str, Lag] | Lag = DEFAULT_PUBLICATION_LAGS,
    period_end: str = "month",
) -> pd.DataFrame:
    """Add the columns of ``low_freq`` to ``daily`` as they were known at each date.

    Parameters
    ----------
    daily : pandas.DataFrame
        A daily frame indexed by date (see :mod:`bayes_moe.data`). Not modified.
    low_freq : pandas.DataFrame
        Lower-frequency series indexed by any date inside their reference period
        (conventionally its first day, as :func:`~bayes_moe.data.load_macro` does),
        sorted ascending, one row per period. NaN cells are treated as not published.
    publication_lag : mapping of str to offset or Timedelta, or one offset or Timedelta
        How long after the end of its reference period a value becomes known: one lag
        for every column, or one per column name (every column of ``low_freq`` must
        then have an entry). A :class:`pandas.DateOffset` such as
        ``pd.offsets.BDay(1)`` or a :class:`pandas.Timedelta`. Defaults to
        :data:`DEFAULT_PUBLICATION_LAGS`.
    period_end : {"month", "quarter", "year"}, default "month"
        The length of the reference period.

    Returns
    -------
    pandas.DataFrame
        A new frame: ``daily`` with one float64 column per column of ``low_freq``. On a
        date ``t`` each holds the value of the latest period whose availability date
        (period end + lag) is on or before ``t``; NaN before the first one is available
        (the caller decides whether to drop or fill those rows).

    Raises
    ------
    DataError
        If an index is not a sorted, unique DatetimeIndex, a column is in both frames,
        a column has no lag, a lag has the wrong type, or ``period_end`` is unknown.

    Examples
    --------
    >>> import pandas as pd
    >>> daily = pd.DataFrame(
    ...     {"ret": [0.1, -0.2, 0.3]},
    ...     index=pd.DatetimeIndex(["2020-04-14", "2020-04-15", "2020-04-16"], name="date"),
    ... )
    >>> cpi = pd.DataFrame(
    ...     {"core_cpi": [266.0, 265.4]},
    ...     index=pd.DatetimeIndex(["2020-02-01", "2020-03-01"], name="date"),
    ... )
    >>> join_asof(daily, cpi)["core_cpi"].tolist()
    [266.0, 265.4, 265.4]
    """
    if period_end not in PERIOD_FREQ:
        raise DataError(f"period_end must be one of {sorted(PERIOD_FREQ)}, got {period_end!r}")
    validate_index(daily.index)
    validate_index(low_freq.index)
    overlap = [c for c in low_freq.columns if c in daily.columns]
    if overlap:
        raise DataError(f"column(s) {overlap} are in both the daily and the low-frequency frame")
    out = daily.copy()
    for column in low_freq.columns:
        lag = _lag_for(column, publication_lag)
        series = low_freq[column].dropna()
        available = availability_dates(series.index, PERIOD_FREQ[period_end], lag)
        out[column] = _asof(daily.index, available, series.to_numpy(dtype=np.float64))
    return out


def _lag_for(column: str, publication_lag: Mapping[str, Lag] | Lag) -> Lag:
    if isinstance(publication_lag, Mapping):
        if column not in publication_lag:
            raise DataError(
                f"no publication lag for column {column!r}; publication_lag has "
                f"{sorted(publication_lag)} (pass one lag for all columns, or add this one)"
            )
        lag = publication_lag[column]
    else:
        lag = publication_lag
    if not isinstance(lag, pd.offsets.BaseOffset | pd.Timedelta):
        raise DataError(
            f"the publication lag of {column!r} must be a pandas DateOffset or Timedelta, "
            f"got {type(lag).__name__}"
        )
    if isinstance(lag, pd.Timedelta) and lag < pd.Timedelta(0):
        raise DataError(f"the publication lag of {column!r} is negative ({lag})")
    return lag


def availability_dates(reference: pd.DatetimeIndex, freq: str, lag: Lag) -> pd.DatetimeIndex:
    """The first date each period's value can be used: period end + lag.

    ``reference`` holds one date inside each period (sorted, one per period), ``freq`` a
    value of :data:`PERIOD_FREQ`; DataError if two dates fall in the same period.
    """
    ends = reference.to_period(freq).end_time.normalize()
    available = ends + lag
    clash = np.flatnonzero(np.diff(available.asi8) <= 0)
    if len(clash):
        first, second = reference[clash[0]].date(), reference[clash[0] + 1].date()
        raise DataError(
            f"rows {first} and {second} of the low-frequency frame fall in the same "
            f"reference period ({reference[clash[0]].to_period(freq)}); pass one row per period"
        )
    return available


def _asof(index: pd.DatetimeIndex, available: pd.DatetimeIndex, values: np.ndarray) -> np.ndarray:
    """Latest value whose availability date is on or before each date of ``index``."""
    position = (
        np.searchsorted(available.as_unit("ns").asi8, index.as_unit("ns").asi8, side="right") - 1
    )
    out = np.full(len(index), np.nan)
    known = position >= 0
    out[known] = values[position[known]]
    return out
