r"""Data for bayes_moe: bundled real data, causal features, macro joins, user files, checks.

The frame convention
--------------------
Everything in this package exchanges *frames*: :class:`pandas.DataFrame` objects

* indexed by a tz-naive :class:`pandas.DatetimeIndex` named ``"date"``, sorted
  ascending, without duplicates, one row per trading (business) day;
* with float64 columns only (see :func:`validate_frame` for the checks a model runs);
* whose main target column is ``"ret"``, the percentage log return
  :math:`r_t = 100 (\log P_t - \log P_{t-1})`; other return series are called
  ``"ret_<name>"`` (``"ret_nasdaq"``), and experts find them by that prefix;
* without look-ahead: every value on date ``t`` uses data up to and including the close
  of ``t`` only. Monthly and quarterly series enter a daily frame only from the date
  they were published (end of the reference period plus a publication lag), through an
  as-of join backward in time (:func:`join_asof`).

Contents
--------
* loaders of the data bundled with ``arch`` and ``statsmodels`` (work offline):
  :func:`load_sp500`, :func:`load_nasdaq`, :func:`load_vix`, :func:`load_wti`,
  :func:`load_macro`, :func:`load_fama_french`, :func:`load_us_macro_quarterly`;
* causal features: :func:`log_returns`, :func:`parkinson_variance`,
  :func:`garman_klass_variance`, :func:`average_true_range`, :func:`realized_variance`,
  :func:`add_range_features`;
* :func:`join_asof` and :data:`DEFAULT_PUBLICATION_LAGS` for lower-frequency data;
  :func:`add_macro_features` for the macro expert's inputs (core CPI year on year,
  credit spread, WTI returns, optionally quarterly US macro), each with its lag;
* :func:`read_frame` for the user's own CSV or Parquet file;
* panels of many assets at once (:mod:`bayes_moe.data.panel`): :func:`panel_frame`
  (:func:`read_panel` for a CSV or Parquet file) turns a wide or long panel into the
  canonical wide one (one float64 column per asset, NaN where an asset has no value),
  :func:`validate_panel` checks one, and
  :func:`load_sp500_stocks` returns the daily returns of 20 S&P 500 stocks (needs the
  ``panel`` extra, ``skfolio``), their sectors in :data:`SP500_STOCK_SECTORS`;
* :func:`validate_frame` and :class:`DataError`, raised for every bad input;
  :func:`check_plausible_values` for implausible values (a target outlier, a column on
  a scale float standardisation cannot handle), waived for outliers by
  ``allow_outliers=True``.
"""

from bayes_moe.data.errors import DataError
from bayes_moe.data.features import (
    add_range_features,
    average_true_range,
    garman_klass_variance,
    log_returns,
    parkinson_variance,
    realized_variance,
)
from bayes_moe.data.files import read_frame
from bayes_moe.data.loaders import (
    DATASETS,
    add_vix,
    load_fama_french,
    load_macro,
    load_nasdaq,
    load_sp500,
    load_us_macro_quarterly,
    load_vix,
    load_wti,
)
from bayes_moe.data.macro import DEFAULT_PUBLICATION_LAGS, join_asof
from bayes_moe.data.macro_features import add_macro_features
from bayes_moe.data.panel import (
    SP500_STOCK_SECTORS,
    load_sp500_stocks,
    panel_frame,
    read_panel,
    validate_panel,
)
from bayes_moe.data.plausibility import check_plausible_values
from bayes_moe.data.validation import validate_frame

__all__ = [
    "DATASETS",
    "DEFAULT_PUBLICATION_LAGS",
    "DataError",
    "SP500_STOCK_SECTORS",
    "add_macro_features",
    "add_range_features",
    "add_vix",
    "average_true_range",
    "check_plausible_values",
    "garman_klass_variance",
    "join_asof",
    "load_fama_french",
    "load_macro",
    "load_nasdaq",
    "load_sp500",
    "load_sp500_stocks",
    "load_us_macro_quarterly",
    "load_vix",
    "load_wti",
    "log_returns",
    "panel_frame",
    "read_panel",
    "parkinson_variance",
    "read_frame",
    "realized_variance",
    "validate_frame",
    "validate_panel",
]
