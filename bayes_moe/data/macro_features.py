r"""Macro features on a daily frame, each as it was known at the close of the day.

:func:`add_macro_features` adds the inputs of the ``macro`` expert
(:class:`bayes_moe.models.experts.Macro`) to a daily frame. Every transformation of a
monthly or quarterly series is computed on that series first, and the result is put on
the daily dates by :func:`~bayes_moe.data.join_asof`: the value on day ``t`` comes
from the latest period whose end plus publication lag is on or before ``t``.

==================  ============================================  =====================
column              definition                                    known on day ``t`` from
==================  ============================================  =====================
``core_cpi_yoy``    :math:`100\,(C_m / C_{m-12} - 1)`, core CPI   end of month ``m``
                    year on year, % (``arch.data``, monthly)      + 15 days
``credit_spread``   Moody's Baa minus Aaa yield, percentage       end of month ``m``
                    points (monthly averages of daily yields)     + 1 business day
``wti_ret``         :math:`100 \log(P_t / P_{t'})`, WTI crude     the close of ``t``
                    oil spot, ``t'`` its previous trading day,    (same day)
                    % (``arch.data``, daily)
==================  ============================================  =====================

With ``quarterly=True``, a subset of ``statsmodels.datasets.macrodata`` (1959Q1-2009Q3),
with the publication lags of :data:`QUARTERLY_PUBLICATION_LAGS` after the quarter's end:

==================  ==================================================  ===============
column              definition                                          lag
==================  ==================================================  ===============
``gdp_growth``      :math:`400 \log(\mathrm{GDP}_q / \mathrm{GDP}_{q-1})`,  30 days
                    real GDP growth, % per year (annualised)            (advance
                                                                        estimate)
``infl``            :math:`400 \log(\mathrm{CPI}_q / \mathrm{CPI}_{q-1})`,  15 days
                    end-of-quarter CPI inflation, % per year            (CPI release)
``unemp``           unemployment rate, %                                7 days
                                                                        (jobs report)
``tbilrate``        3-month Treasury bill rate, % per year              1 business day
``realint``         ``tbilrate - infl``, % per year                     15 days
==================  ==================================================  ===============

Caveat: ``macrodata`` holds revised figures, not the vintages first published; the
lags keep the timing causal, not the revisions (GDP in particular is revised for
years). The monthly CPI and yields of ``arch.data`` are revised little.

Gaps. A value stands for one period only: once the next period's value would have
been published and the source has none (the monthly series end in 2018-11,
``macrodata`` in 2009Q3), the column is NaN from that date on, as it is before a
series' first publication and on days WTI has no price. A stale value is not carried
forward forever; readers of these columns must accept gaps (the ``macro`` expert does,
with a documented fallback and a missing-value indicator).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError
from bayes_moe.data.features import log_returns
from bayes_moe.data.loaders import load_macro, load_us_macro_quarterly, load_wti
from bayes_moe.data.macro import (
    DEFAULT_PUBLICATION_LAGS,
    PERIOD_FREQ,
    Lag,
    availability_dates,
    join_asof,
)
from bayes_moe.data.validation import validate_index

__all__ = [
    "MACRO_FEATURES",
    "MONTHLY_PUBLICATION_LAGS",
    "QUARTERLY_FEATURES",
    "QUARTERLY_PUBLICATION_LAGS",
    "add_macro_features",
    "monthly_macro_features",
    "quarterly_macro_features",
]

#: The monthly and daily macro columns, in the order they are added.
MACRO_FEATURES: tuple[str, ...] = ("core_cpi_yoy", "credit_spread", "wti_ret")
#: The quarterly columns added with ``quarterly=True``.
QUARTERLY_FEATURES: tuple[str, ...] = ("gdp_growth", "infl", "unemp", "tbilrate", "realint")

MONTHLY_PUBLICATION_LAGS: Mapping[str, Lag] = MappingProxyType(
    {
        "core_cpi_yoy": DEFAULT_PUBLICATION_LAGS["core_cpi"],
        "credit_spread": DEFAULT_PUBLICATION_LAGS["credit_spread"],
    }
)
"""Lags of the monthly features after the end of their month (read-only)."""

QUARTERLY_PUBLICATION_LAGS: Mapping[str, Lag] = MappingProxyType(
    {
        "gdp_growth": pd.Timedelta(days=30),
        "infl": pd.Timedelta(days=15),
        "unemp": pd.Timedelta(days=7),
        "tbilrate": pd.offsets.BDay(1),
        "realint": pd.Timedelta(days=15),
    }
)
"""Lags of the quarterly features after the end of their quarter (read-only)."""


def monthly_macro_features(macro: pd.DataFrame) -> pd.DataFrame:
    r"""``core_cpi_yoy`` and ``credit_spread`` on the monthly dates of ``macro``.

    .. math:: \mathrm{core\_cpi\_yoy}_m = 100\,(C_m / C_{m-12} - 1),

    with :math:`C_{m-12}` the value twelve calendar months before (NaN where that month
    is not in ``macro``).

    Parameters
    ----------
    macro : pandas.DataFrame
        Monthly frame dated inside each month (:func:`~bayes_moe.data.load_macro`)
        with columns ``core_cpi`` and ``credit_spread``.

    Returns
    -------
    pandas.DataFrame
        Columns ``core_cpi_yoy`` (%) and ``credit_spread`` (percentage points), same
        index; the first twelve months have no ``core_cpi_yoy``.
    """
    _require(macro, ("core_cpi", "credit_spread"), "the monthly macro frame")
    validate_index(macro.index)
    months = macro.index.to_period("M")
    cpi = pd.Series(macro["core_cpi"].to_numpy(dtype=np.float64), index=months)
    year_ago = cpi.reindex(months - 12).to_numpy()
    out = pd.DataFrame(index=macro.index)
    out["core_cpi_yoy"] = 100.0 * (cpi.to_numpy() / year_ago - 1.0)
    out["credit_spread"] = macro["credit_spread"].to_numpy(dtype=np.float64)
    return out


def quarterly_macro_features(quarterly: pd.DataFrame) -> pd.DataFrame:
    r"""The :data:`QUARTERLY_FEATURES` on the quarterly dates of ``quarterly``.

    .. math:: \mathrm{gdp\_growth}_q = 400 \log(\mathrm{realgdp}_q / \mathrm{realgdp}_{q-1}),

    and ``infl``, ``unemp``, ``tbilrate``, ``realint`` as they are in the source.

    Parameters
    ----------
    quarterly : pandas.DataFrame
        :func:`~bayes_moe.data.load_us_macro_quarterly`, or a frame with its columns
        ``realgdp``, ``infl``, ``unemp``, ``tbilrate``, ``realint``.

    Returns
    -------
    pandas.DataFrame
        The five columns, same index; the first quarter has no ``gdp_growth``.
    """
    _require(quarterly, ("realgdp",) + QUARTERLY_FEATURES[1:], "the quarterly macro frame")
    validate_index(quarterly.index)
    quarters = quarterly.index.to_period("Q")
    gdp = pd.Series(quarterly["realgdp"].to_numpy(dtype=np.float64), index=quarters)
    out = pd.DataFrame(index=quarterly.index)
    out["gdp_growth"] = 400.0 * np.log(gdp.to_numpy() / gdp.reindex(quarters - 1).to_numpy())
    for column in QUARTERLY_FEATURES[1:]:
        out[column] = quarterly[column].to_numpy(dtype=np.float64)
    return out


def add_macro_features(
    frame: pd.DataFrame,
    *,
    quarterly: bool = False,
    publication_lag: Mapping[str, Lag] | None = None,
    macro: pd.DataFrame | None = None,
    wti: pd.DataFrame | None = None,
    quarterly_data: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``frame`` with the macro columns of the module docstring, as known at each close.

    Parameters
    ----------
    frame : pandas.DataFrame
        Daily frame indexed by date (see :mod:`bayes_moe.data`); not modified. It must
        not have the columns already.
    quarterly : bool, default False
        Add the :data:`QUARTERLY_FEATURES` of ``statsmodels``' ``macrodata`` too.
    publication_lag : mapping of str to offset or Timedelta, optional
        Lags that replace those of :data:`MONTHLY_PUBLICATION_LAGS` and
        :data:`QUARTERLY_PUBLICATION_LAGS` for the columns named (``wti_ret`` has none:
        it is a same-day close).
    macro, wti, quarterly_data : pandas.DataFrame, optional
        The sources, default the bundled :func:`~bayes_moe.data.load_macro`,
        :func:`~bayes_moe.data.load_wti` and
        :func:`~bayes_moe.data.load_us_macro_quarterly` (for a test or another
        vintage): ``macro`` with ``core_cpi`` and ``credit_spread``, ``wti`` with
        ``wti``, ``quarterly_data`` with the columns :func:`quarterly_macro_features`
        reads.

    Returns
    -------
    pandas.DataFrame
        A new frame: ``frame`` plus ``core_cpi_yoy``, ``credit_spread``, ``wti_ret``
        (and the quarterly columns), float64, NaN where a value was not known yet, no
        longer current, or (``wti_ret``) missing on that day.

    Raises
    ------
    DataError
        For an index that is not a sorted, unique DatetimeIndex, a column that is
        already in ``frame``, a source without a column it needs, or a lag for a
        column it does not add.
    """
    validate_index(frame.index)
    adds = MACRO_FEATURES + (QUARTERLY_FEATURES if quarterly else ())
    present = [c for c in adds if c in frame.columns]
    if present:
        raise DataError(f"the frame already has the macro column(s) {present}")
    lags = {**MONTHLY_PUBLICATION_LAGS, **(QUARTERLY_PUBLICATION_LAGS if quarterly else {})}
    unknown = [c for c in (publication_lag or {}) if c not in lags]
    if unknown:
        raise DataError(
            f"publication_lag names {unknown}, which are not lagged columns it adds {sorted(lags)}"
        )
    lags.update(publication_lag or {})

    monthly = monthly_macro_features(load_macro() if macro is None else macro)
    out = _join_current(frame, monthly, lags, "month")
    prices = load_wti() if wti is None else wti
    _require(prices, ("wti",), "the WTI frame")
    validate_index(prices.index)
    wti_ret = log_returns(prices["wti"].dropna().astype(np.float64))
    out["wti_ret"] = wti_ret.reindex(frame.index).to_numpy()
    if quarterly:
        source = load_us_macro_quarterly() if quarterly_data is None else quarterly_data
        out = _join_current(out, quarterly_macro_features(source), lags, "quarter")
    return out


def _join_current(
    daily: pd.DataFrame, low_freq: pd.DataFrame, lags: Mapping[str, Lag], period: str
) -> pd.DataFrame:
    """:func:`join_asof`, then NaN once the period after a column's last value is due."""
    out = join_asof(daily, low_freq, publication_lag=lags, period_end=period)
    freq = PERIOD_FREQ[period]
    for column in low_freq.columns:
        values = low_freq[column].dropna()
        if values.empty:
            continue
        after_last = (values.index[-1:].to_period(freq) + 1).to_timestamp()
        due = availability_dates(pd.DatetimeIndex(after_last), freq, lags[column])[0]
        out.loc[out.index >= due, column] = np.nan
    return out


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")
