"""Loaders of the real data shipped inside installed packages (no network needed).

The daily and monthly series come from :mod:`arch.data` (a copy of FRED and Yahoo
Finance series bundled with the ``arch`` package), the quarterly US macro data from
:mod:`statsmodels.datasets.macrodata`. Every loader returns a new frame indexed by a
tz-naive :class:`pandas.DatetimeIndex` named ``"date"`` with float64 columns named in
lower snake case.

================================  ========================  ==================================
loader                            span                      frequency
================================  ========================  ==================================
:func:`load_sp500`                1999-02-04 .. 2018-12-31  daily (source from 1999-01-04)
:func:`load_nasdaq`               1999-02-04 .. 2018-12-31  daily (source from 1999-01-04)
:func:`load_vix`                  2014-01-03 .. 2019-01-03  daily
:func:`load_wti`                  1986-01-02 .. 2019-01-03  daily
:func:`load_macro`                1957-01 .. 2018-11        monthly, dated at the month start
:func:`load_fama_french`          1926-07 .. 2018-11        monthly, dated at the month start
:func:`load_us_macro_quarterly`   1959Q1 .. 2009Q3          quarterly, dated at its start
================================  ========================  ==================================

Monthly and quarterly frames are dated at the start of their reference period, not at
their publication; use :func:`bayes_moe.data.join_asof` to put them on a daily frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError
from bayes_moe.data.features import add_range_features, log_returns

__all__ = [
    "DATASETS",
    "load_fama_french",
    "load_macro",
    "load_nasdaq",
    "load_sp500",
    "load_us_macro_quarterly",
    "load_vix",
    "load_wti",
]

_OHLCV = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}


def load_sp500(*, with_nasdaq: bool = True, features: bool = True) -> pd.DataFrame:
    """S&P 500 index, daily, 1999-2018, with its returns and volatility features.

    Source: :mod:`arch.data.sp500` (Yahoo Finance ``^GSPC``), 5031 trading days from
    1999-01-04 to 2018-12-31.

    ``ret`` is exactly ``100 * diff(log(Adj Close))`` of the source, computed on the
    full series before any row is dropped (its first value is on 1999-01-05). Warm-up
    rows, where a return or a rolling feature does not exist yet, are dropped so that
    the frame has no NaN: the frame starts on 1999-01-05 with ``features=False`` and on
    1999-02-04 (the 22nd return, the first complete ``rv_22``) with ``features=True``,
    5009 rows to 2018-12-31.

    Parameters
    ----------
    with_nasdaq : bool, default True
        Add ``ret_nasdaq``, the percentage log return of the NASDAQ Composite
        (:mod:`arch.data.nasdaq`, Adj Close), computed on its own dates and joined on
        the dates both indices share (all of them in this data set).
    features : bool, default True
        Add the range and realised-variance features of
        :func:`~bayes_moe.data.add_range_features`: ``var_parkinson``,
        ``var_garman_klass``, ``atr_14``, ``rv_5``, ``rv_22``.

    Returns
    -------
    pandas.DataFrame
        Columns ``open, high, low, close, adj_close`` (index points), ``volume``
        (shares), ``ret`` (%), then ``ret_nasdaq`` (%) and the features (variances in
        %^2, ``atr_14`` in % of the close) when requested.
    """
    import arch.data.sp500

    frame = _daily_index_frame(arch.data.sp500.load(), features=features)
    if with_nasdaq:
        import arch.data.nasdaq

        nasdaq = log_returns(arch.data.nasdaq.load()["Adj Close"]).rename("ret_nasdaq")
        nasdaq.index = _date_index(nasdaq.index)
        frame = frame.join(nasdaq.dropna(), how="inner")
        frame = _order_columns(frame)
    return _finish(frame)


def load_nasdaq(*, features: bool = True) -> pd.DataFrame:
    """NASDAQ Composite index, daily, 1999-2018, with its returns and volatility features.

    Source: :mod:`arch.data.nasdaq` (Yahoo Finance ``^IXIC``), 5031 trading days from
    1999-01-04 to 2018-12-31. Built like :func:`load_sp500`: ``ret`` is
    ``100 * diff(log(Adj Close))`` on the full series, and warm-up rows are dropped (the
    frame starts on 1999-01-05, or 1999-02-04 with ``features=True``).

    Parameters
    ----------
    features : bool, default True
        Add ``var_parkinson``, ``var_garman_klass``, ``atr_14``, ``rv_5``, ``rv_22``.

    Returns
    -------
    pandas.DataFrame
        Columns ``open, high, low, close, adj_close`` (index points), ``volume``,
        ``ret`` (%), then the features (variances in %^2, ``atr_14`` in % of the close).
    """
    import arch.data.nasdaq

    return _finish(_daily_index_frame(arch.data.nasdaq.load(), features=features))


def load_vix() -> pd.DataFrame:
    """CBOE VIX, daily close, 2014-2019 only.

    Source: :mod:`arch.data.vix` (FRED ``VIXCLS``), 2014-01-03 to 2019-01-03. The
    source has NaN on US market holidays; those rows are dropped. This is the only VIX
    history shipped offline: it does not cover 1999-2013, so anything that reads VIX
    must also work without it.

    Returns
    -------
    pandas.DataFrame
        Column ``vix``: annualised implied volatility of the S&P 500, in percent.
    """
    import arch.data.vix

    raw = arch.data.vix.load()
    return _finish(_rename(raw, {"vix": "vix"}).dropna())


def add_vix(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``vix`` column: the VIX close of the same day, NaN where missing.

    The VIX shipped offline covers 2014-2019 only (:func:`load_vix`), so most rows of
    a 1999-2018 frame get NaN; forecasters that read VIX must handle that (the
    mixture reads only the columns its experts read, and none of its experts reads
    ``vix`` unless told to). Same-day close: known at
    the close of ``t``, so no look-ahead for a forecast made at that close.
    """
    vix = load_vix()["vix"]
    out = frame.copy()
    out["vix"] = vix.reindex(frame.index)
    return out


def load_wti() -> pd.DataFrame:
    """West Texas Intermediate crude oil spot price, daily, 1986-2019.

    Source: :mod:`arch.data.wti` (FRED ``DCOILWTICO``, Cushing, Oklahoma), 1986-01-02 to
    2019-01-03. The source has NaN on holidays; those rows are dropped.

    Returns
    -------
    pandas.DataFrame
        Column ``wti``: spot price in US dollars per barrel.
    """
    import arch.data.wti

    raw = arch.data.wti.load()
    return _finish(_rename(raw, {"DCOILWTICO": "wti"}).dropna())


def load_macro() -> pd.DataFrame:
    """US core CPI and Moody's corporate bond yields, monthly, 1957-2018.

    Sources: :mod:`arch.data.core_cpi` (FRED ``CPILFESL``: CPI for all urban consumers,
    all items less food and energy, 1982-84 = 100, seasonally adjusted) and
    :mod:`arch.data.default` (FRED ``AAA`` and ``BAA``: Moody's seasoned Aaa and Baa
    corporate bond yields, monthly averages, percent per year). Only the months both
    cover are kept: 1957-01 to 2018-11 (the yields alone go back to 1919-01 and on to
    2018-12).

    Rows are dated at the first day of the reference month, not at publication: join
    them onto daily data with :func:`bayes_moe.data.join_asof`.

    Returns
    -------
    pandas.DataFrame
        Columns ``core_cpi`` (index level), ``aaa``, ``baa`` (% per year) and
        ``credit_spread = baa - aaa`` (percentage points).
    """
    import arch.data.core_cpi
    import arch.data.default

    cpi = _rename(arch.data.core_cpi.load(), {"CPILFESL": "core_cpi"})
    yields = _rename(arch.data.default.load(), {"AAA": "aaa", "BAA": "baa"})
    frame = cpi.join(yields, how="inner")
    frame["credit_spread"] = frame["baa"] - frame["aaa"]
    return _finish(frame)


def load_fama_french() -> pd.DataFrame:
    """Fama-French three factors and the risk-free rate, monthly, 1926-2018.

    Source: :mod:`arch.data.frenchdata` (Kenneth French's data library), 1926-07 to
    2018-11. The source index is broken (the integers ``YYYYMM`` were stored as
    nanoseconds since 1970, so 1926-07 reads ``1970-01-01 00:00:00.000192607``); it is
    rebuilt here as month-start dates.

    Returns
    -------
    pandas.DataFrame
        Columns ``mkt_rf`` (market excess return), ``smb`` (small minus big), ``hml``
        (high minus low book-to-market) and ``rf`` (one-month T-bill), all in percent
        per month, dated at the first day of the month.
    """
    import arch.data.frenchdata

    raw = arch.data.frenchdata.load()
    frame = _rename(raw, {"Mkt-RF": "mkt_rf", "SMB": "smb", "HML": "hml", "RF": "rf"})
    frame.index = _yyyymm_index(raw.index)
    return _finish(frame)


def load_us_macro_quarterly() -> pd.DataFrame:
    """US macroeconomic data, quarterly, 1959Q1-2009Q3.

    Source: :mod:`statsmodels.datasets.macrodata` (FRED and BEA), 203 quarters. Rows are
    dated at the first day of the quarter (1959-01-01 .. 2009-07-01); the source's
    ``year`` and ``quarter`` columns become that index.

    Returns
    -------
    pandas.DataFrame
        Columns ``realgdp``, ``realcons``, ``realinv``, ``realgovt``, ``realdpi``
        (billions of chained 2005 US dollars, seasonally adjusted annual rate), ``cpi``
        (end-of-quarter CPI, 1982-84 = 100), ``m1`` (end-of-quarter M1, billions of
        dollars), ``tbilrate`` (3-month T-bill, % per year), ``unemp`` (unemployment
        rate, %), ``pop`` (end-of-quarter population, millions), ``infl`` (inflation,
        ``400 ln(cpi_t / cpi_{t-1})``, % per year) and ``realint`` (``tbilrate - infl``).
    """
    from statsmodels.datasets import macrodata

    raw = macrodata.load_pandas().data
    year = raw["year"].to_numpy(dtype=np.int64)
    quarter = raw["quarter"].to_numpy(dtype=np.int64)
    frame = raw.drop(columns=["year", "quarter"]).astype(np.float64)
    frame.index = pd.DatetimeIndex(
        pd.to_datetime({"year": year, "month": 3 * (quarter - 1) + 1, "day": 1}), name="date"
    )
    return _finish(frame)


def _daily_index_frame(raw: pd.DataFrame, *, features: bool) -> pd.DataFrame:
    """OHLCV frame with ``ret`` (and features) on the full history, warm-up dropped."""
    frame = _rename(raw, _OHLCV)
    frame["ret"] = log_returns(frame["adj_close"])
    if features:
        frame = add_range_features(frame)
    return _drop_warmup(frame)


def _rename(raw: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    missing = [c for c in names if c not in raw.columns]
    if missing:
        raise DataError(
            f"the bundled data set lacks column(s) {missing}; it has {list(raw.columns)}"
        )
    frame = raw[list(names)].rename(columns=names).astype(np.float64)
    frame.index = _date_index(raw.index)
    return frame


def _date_index(index: pd.Index) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(index, name="date")


def _yyyymm_index(index: pd.Index) -> pd.DatetimeIndex:
    """Month starts from an index of ``YYYYMM`` integers, however they were stored."""
    if isinstance(index, pd.DatetimeIndex) and (index.year == 1970).all():
        codes = index.as_unit("ns").asi8  # YYYYMM stored as nanoseconds since the epoch
    elif isinstance(index, pd.DatetimeIndex):
        return pd.DatetimeIndex(index.to_period("M").to_timestamp(), name="date")
    else:
        codes = np.asarray(index, dtype=np.int64)
    year, month = codes // 100, codes % 100
    if ((month < 1) | (month > 12)).any():
        raise DataError(f"cannot read {codes[(month < 1) | (month > 12)][0]} as YYYYMM")
    return pd.DatetimeIndex(pd.to_datetime({"year": year, "month": month, "day": 1}), name="date")


def _drop_warmup(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the leading rows in which some column is still NaN (warm-up)."""
    complete = frame.notna().all(axis=1).to_numpy()
    if not complete.any():
        return frame.iloc[:0]
    return frame.iloc[int(np.argmax(complete)) :]


def _order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Put ``ret_nasdaq`` right after ``ret``."""
    columns = [c for c in frame.columns if c != "ret_nasdaq"]
    columns.insert(columns.index("ret") + 1, "ret_nasdaq")
    return frame[columns]


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the frame convention (sorted unique dates, float64, no NaN) and return it."""
    frame = frame.astype(np.float64)
    frame.index.name = "date"
    if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
        raise DataError("the bundled data set has unsorted or duplicate dates")
    if frame.isna().any().any():
        column = frame.columns[frame.isna().any()][0]
        raise DataError(f"the bundled data set has NaN in column {column!r} after cleaning")
    return frame


#: The embedded daily data sets by name (``bayes-moe --dataset``, ``sweep(["sp500"])``).
DATASETS = {"sp500": load_sp500, "nasdaq": load_nasdaq}
