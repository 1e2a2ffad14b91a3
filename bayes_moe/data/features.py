r"""Causal return and volatility features computed from daily prices.

Every function here is pure (its inputs are not modified) and causal: the value at date
``t`` uses only rows dated ``t`` or earlier, so a feature is known at the close of ``t``.
Returns are percentage log returns and variances are in squared percent (%^2), so a
variance feature and a squared return are on the same scale.

================================  ==========================  ======================
function                          column written by           unit
                                  :func:`add_range_features`
================================  ==========================  ======================
:func:`log_returns`               ``ret`` (from a price)       %
:func:`parkinson_variance`        ``var_parkinson``            %^2
:func:`garman_klass_variance`     ``var_garman_klass``         %^2
:func:`average_true_range`        ``atr_14``                   % of the close
:func:`realized_variance`         ``rv_5``, ``rv_22``          %^2
================================  ==========================  ======================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError, format_date

__all__ = [
    "add_range_features",
    "average_true_range",
    "garman_klass_variance",
    "log_returns",
    "parkinson_variance",
    "realized_variance",
]

_LN2 = float(np.log(2.0))


def log_returns(prices: pd.Series) -> pd.Series:
    r"""Percentage log returns of a price series.

    .. math::

        r_t = 100 \, (\log P_t - \log P_{t-1})

    Parameters
    ----------
    prices : pandas.Series
        Strictly positive prices, indexed by date, sorted ascending. NaN prices give NaN
        returns.

    Returns
    -------
    pandas.Series
        Float64 series named ``"ret"`` on the same index; the first value is NaN (there
        is no previous price).

    Raises
    ------
    DataError
        If a price is zero or negative (the first such date is named).
    """
    values = _positive_values(prices, "price")
    logs = np.log(values)
    out = np.full(values.shape, np.nan)
    out[1:] = 100.0 * (logs[1:] - logs[:-1])
    return pd.Series(out, index=prices.index, name="ret")


def parkinson_variance(high: pd.Series, low: pd.Series) -> pd.Series:
    r"""Parkinson (1980) range estimator of the daily return variance, in %^2.

    .. math::

        \hat\sigma^2_t = \frac{\left(100 \ln(H_t / L_t)\right)^2}{4 \ln 2}

    Unbiased for the variance of a driftless Brownian log price observed continuously
    over the day.

    Parameters
    ----------
    high, low : pandas.Series
        Daily high and low prices on the same index, ``0 < low <= high``.

    Returns
    -------
    pandas.Series
        Float64 series named ``"var_parkinson"``.

    Raises
    ------
    DataError
        If a price is not positive or a high is below its low (first date named).

    References
    ----------
    .. [1] Parkinson, M. (1980). The extreme value method for estimating the variance
       of the rate of return. *Journal of Business* 53(1), 61-65.
    """
    hl = _log_range(high, low)
    return pd.Series(hl**2 / (4.0 * _LN2), index=high.index, name="var_parkinson")


def garman_klass_variance(
    open: pd.Series,
    high: pd.Series,
    low: pd.Series,
    close: pd.Series,
) -> pd.Series:
    r"""Garman-Klass (1980) range estimator of the daily return variance, in %^2.

    .. math::

        \hat\sigma^2_t = \tfrac12 \left(100 \ln\frac{H_t}{L_t}\right)^2
            - (2 \ln 2 - 1) \left(100 \ln\frac{C_t}{O_t}\right)^2

    Uses the open-to-close move as well as the range; about 7 times as efficient as the
    squared close-to-close return for a driftless Brownian log price. Overnight moves
    (previous close to open) are not included.

    Parameters
    ----------
    open, high, low, close : pandas.Series
        Daily prices on the same index, all positive, ``low <= high``.

    Returns
    -------
    pandas.Series
        Float64 series named ``"var_garman_klass"``.

    Raises
    ------
    DataError
        If a price is not positive or a high is below its low (first date named).

    References
    ----------
    .. [1] Garman, M. B. and Klass, M. J. (1980). On the estimation of security price
       volatilities from historical data. *Journal of Business* 53(1), 67-78.
    """
    _check_same_index(open, high, low, close)
    hl = _log_range(high, low)
    co = 100.0 * (np.log(_positive_values(close, "close")) - np.log(_positive_values(open, "open")))
    values = 0.5 * hl**2 - (2.0 * _LN2 - 1.0) * co**2
    return pd.Series(values, index=high.index, name="var_garman_klass")


def average_true_range(
    high: pd.Series, low: pd.Series, close: pd.Series, window: int = 14
) -> pd.Series:
    r"""Wilder's average true range, as a percentage of the close.

    .. math::

        TR_t &= \max(H_t - L_t,\ |H_t - C_{t-1}|,\ |L_t - C_{t-1}|), \qquad
        TR_0 = H_0 - L_0 \\
        A_t &= A_{t-1} + (TR_t - A_{t-1}) / n, \qquad A_0 = TR_0 \\
        ATR_t &= 100 \, A_t / C_t

    with ``n = window`` (Wilder smoothing is an exponential average with
    :math:`\alpha = 1/n`). The first ``window - 1`` values are NaN (warm-up).

    Parameters
    ----------
    high, low, close : pandas.Series
        Daily prices on the same index, all positive, ``low <= high``.
    window : int, default 14
        The smoothing length :math:`n`; 14 is Wilder's choice.

    Returns
    -------
    pandas.Series
        Float64 series named ``f"atr_{window}"``.

    Raises
    ------
    DataError
        If a price is not positive, a high is below its low, or ``window < 1``.

    References
    ----------
    .. [1] Wilder, J. W. (1978). *New Concepts in Technical Trading Systems*.
       Trend Research.
    """
    _check_window(window)
    _check_same_index(high, low, close)
    _log_range(high, low)
    close_values = _positive_values(close, "close")
    h = high.to_numpy(dtype=np.float64)
    lo = low.to_numpy(dtype=np.float64)
    prev_close = np.concatenate([[np.nan], close_values[:-1]])
    true_range = pd.Series(
        np.fmax(h - lo, np.fmax(np.abs(h - prev_close), np.abs(lo - prev_close))),
        index=high.index,
    )
    smoothed = true_range.ewm(alpha=1.0 / window, adjust=False, min_periods=window).mean()
    return (100.0 * smoothed / close_values).rename(f"atr_{window}")


def realized_variance(ret: pd.Series, window: int) -> pd.Series:
    r"""Realised variance: mean of the squared returns over the last ``window`` days.

    .. math::

        RV_t = \frac{1}{n} \sum_{i=0}^{n-1} r_{t-i}^2

    with ``n = window``; the window includes day ``t``. NaN until ``n`` returns exist.

    Parameters
    ----------
    ret : pandas.Series
        Percentage returns.
    window : int
        The number of days :math:`n`.

    Returns
    -------
    pandas.Series
        Float64 series in %^2 named ``f"rv_{window}"``.

    Raises
    ------
    DataError
        If ``window < 1``.

    References
    ----------
    .. [1] Andersen, T. G. and Bollerslev, T. (1998). Answering the skeptics: yes,
       standard volatility models do provide accurate forecasts. *International
       Economic Review* 39(4), 885-905.
    """
    _check_window(window)
    squared = ret.astype(np.float64) ** 2
    return squared.rolling(window, min_periods=window).mean().rename(f"rv_{window}")


def add_range_features(
    frame: pd.DataFrame,
    *,
    atr_window: int = 14,
    rv_windows: Sequence[int] = (5, 22),
) -> pd.DataFrame:
    """Return a copy of ``frame`` with the range and realised-variance features added.

    Each feature is added when its inputs are columns of ``frame``:

    ======================  ===============================
    column                  needs
    ======================  ===============================
    ``var_parkinson``       ``high``, ``low``
    ``var_garman_klass``    ``open``, ``high``, ``low``, ``close``
    ``atr_14``              ``high``, ``low``, ``close``
    ``rv_5``, ``rv_22``     ``ret``
    ======================  ===============================

    Warm-up rows (the first ``atr_window - 1`` for the ATR, the first ``window - 1``
    returns for each realised variance) are NaN; the caller decides whether to drop them.

    Parameters
    ----------
    frame : pandas.DataFrame
        A frame indexed by date (see :mod:`bayes_moe.data`). Not modified.
    atr_window : int, default 14
        Smoothing length of :func:`average_true_range`; the column is ``f"atr_{n}"``.
    rv_windows : sequence of int, default (5, 22)
        Windows of :func:`realized_variance` (a week and a month of trading days).

    Returns
    -------
    pandas.DataFrame
        A new frame with the columns of ``frame`` followed by the added features.

    Raises
    ------
    DataError
        If none of the features can be computed (no ``high``/``low`` and no ``ret``),
        or from the feature functions (non-positive price, high below low).
    """
    columns = set(frame.columns)
    if not ({"high", "low"} <= columns or "ret" in columns):
        raise DataError(
            "add_range_features needs 'high' and 'low' (range features) or 'ret' "
            f"(realised variance); the frame has {[str(c) for c in frame.columns]}"
        )
    out = frame.copy()
    if {"high", "low"} <= columns:
        out["var_parkinson"] = parkinson_variance(frame["high"], frame["low"])
        if "open" in columns and "close" in columns:
            out["var_garman_klass"] = garman_klass_variance(
                frame["open"], frame["high"], frame["low"], frame["close"]
            )
        if "close" in columns:
            out[f"atr_{atr_window}"] = average_true_range(
                frame["high"], frame["low"], frame["close"], atr_window
            )
    if "ret" in columns:
        for window in rv_windows:
            out[f"rv_{window}"] = realized_variance(frame["ret"], window)
    return out


def _positive_values(series: pd.Series, what: str) -> np.ndarray:
    """Return ``series`` as float64 values; raise if any is zero or negative."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = values <= 0.0
    if bad.any():
        i = int(np.argmax(bad))
        name = f" in column {series.name!r}" if series.name is not None else ""
        raise DataError(
            f"{what} must be positive{name}: {float(values[i])!r} on "
            f"{format_date(series.index[i])} ({int(bad.sum())} non-positive value(s) in all)"
        )
    return values


def _log_range(high: pd.Series, low: pd.Series) -> np.ndarray:
    """Return ``100 ln(H/L)``; raise on non-positive prices or a high below its low."""
    _check_same_index(high, low)
    h = _positive_values(high, "high")
    lo = _positive_values(low, "low")
    below = h < lo
    if below.any():
        i = int(np.argmax(below))
        raise DataError(
            f"high is below low on {format_date(high.index[i])} "
            f"(high {float(h[i])!r} < low {float(lo[i])!r}; {int(below.sum())} such day(s) in all)"
        )
    return 100.0 * (np.log(h) - np.log(lo))


def _check_window(window: int) -> None:
    if int(window) != window or window < 1:
        raise DataError(f"window must be a positive integer, got {window!r}")


def _check_same_index(*series: pd.Series) -> None:
    first = series[0].index
    for other in series[1:]:
        if not other.index.equals(first):
            raise DataError(
                f"price series {series[0].name!r} and {other.name!r} must share the same index"
            )
