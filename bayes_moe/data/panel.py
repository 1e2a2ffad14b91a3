r"""Panels: one series per asset on a shared calendar, with errors that name the cell.

A *panel* holds many assets at once. Its canonical form is **wide**: a
:class:`pandas.DataFrame`

* indexed by a tz-naive :class:`pandas.DatetimeIndex` named ``"date"``, sorted
  ascending, without duplicates: the union of every asset's dates;
* with one float64 column per asset, named by the asset (a string), the columns
  index named ``"asset"``;
* with NaN where an asset has no value on a date (not listed yet, delisted, a gap).
  NaN is never filled and a date that some asset has is never dropped.

:func:`panel_frame` builds it from a wide or a long (``date, asset, value``) frame,
:func:`validate_panel` checks an already-wide panel, and :func:`load_sp500_stocks`
returns the percentage log returns of 20 S&P 500 stocks shipped with the optional
package ``skfolio`` (``pip install 'bayes-moe[panel]'``), their sectors in
:data:`SP500_STOCK_SECTORS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError, format_date
from bayes_moe.data.validation import validate_index, validate_unique_columns

__all__ = [
    "SP500_STOCK_SECTORS",
    "load_sp500_stocks",
    "panel_frame",
    "read_panel",
    "validate_panel",
]

#: How many offenders (pairs, assets) an error message lists before "...".
_SHOWN = 5

# GICS sector of each stock of skfolio's S&P 500 data set, as of 2022. Source: the
# Global Industry Classification Standard (GICS) published by S&P Dow Jones Indices
# and MSCI.
SP500_STOCK_SECTORS: dict[str, str] = {
    "AAPL": "Information Technology",
    "AMD": "Information Technology",
    "BAC": "Financials",
    "BBY": "Consumer Discretionary",
    "CVX": "Energy",
    "GE": "Industrials",
    "HD": "Consumer Discretionary",
    "JNJ": "Health Care",
    "JPM": "Financials",
    "KO": "Consumer Staples",
    "LLY": "Health Care",
    "MRK": "Health Care",
    "MSFT": "Information Technology",
    "PEP": "Consumer Staples",
    "PFE": "Health Care",
    "PG": "Consumer Staples",
    "RRC": "Energy",
    "UNH": "Health Care",
    "WMT": "Consumer Staples",
    "XOM": "Energy",
}

_PANEL_EXTRA = "pip install 'bayes-moe[panel]'"


def panel_frame(
    frame: pd.DataFrame,
    *,
    asset_col: str | None = None,
    value_col: str | None = None,
    date_col: str | None = None,
    min_rows: int = 1,
) -> pd.DataFrame:
    """Turn a wide or long panel into the canonical wide panel, checking every cell.

    Wide input (``asset_col`` not given): the rows are dates (the index, or the column
    ``date_col``) and every other column is an asset. Long input (``asset_col`` given):
    one row per (asset, date) pair, with the date (the index, or ``date_col``), the
    asset name in ``asset_col`` and the value in ``value_col``; other columns are
    ignored. Long input is pivoted to wide.

    Unsorted dates are sorted (stably); nothing else is changed: NaN stays NaN, a
    date with only NaN values stays, and no asset or date is added or dropped.

    Parameters
    ----------
    frame : pandas.DataFrame
        The panel, wide (n_dates, n_assets) or long (n_pairs, >= 2 columns).
    asset_col : str, optional
        The column of asset names of a long frame; names become strings (``str``).
    value_col : str, optional
        The column of values of a long frame. By default the only column besides the
        date and asset columns, or else the only numeric one.
    date_col : str, optional
        The column of dates; by default the index holds them. Dates are anything
        :func:`pandas.to_datetime` infers consistently, or integers ``YYYYMMDD``;
        time-zone-aware dates keep their local date and lose the zone.
    min_rows : int, default 1
        The fewest values (non-NaN) every asset must have.

    Returns
    -------
    pandas.DataFrame
        Shape (n_dates, n_assets), float64, indexed by ``"date"``, columns named
        ``"asset"``: in the order of ``frame`` for wide input, sorted by name for long
        input.

    Raises
    ------
    DataError
        Before anything is built, naming the asset and the date concerned: a missing
        date, asset or value column (listing the columns), several candidate value
        columns, an unparseable or missing date (its row), a missing asset name,
        duplicate (asset, date) pairs (the first few and how many) or duplicate dates
        (the date, its rows and assets), two assets whose names read alike, a
        non-numeric value (the first one and how many), then the checks of
        :func:`validate_panel` (empty panel, +-inf, fewer than ``min_rows`` values).
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"a panel must be a pandas DataFrame, got {type(frame).__name__}"
            + (" (use series.to_frame(name))" if isinstance(frame, pd.Series) else "")
        )
    validate_unique_columns(list(frame.columns))
    if asset_col is None:
        if value_col is not None:
            raise DataError(
                f"value_col={value_col!r} is for a long panel: pass asset_col= too, or "
                "leave value_col out for a wide panel (one column per asset)"
            )
        wide = _wide_panel(frame, date_col)
    else:
        wide = _long_panel(frame, asset_col=asset_col, value_col=value_col, date_col=date_col)
    validate_panel(wide, min_rows=min_rows)
    return wide


def read_panel(
    path,
    *,
    asset_col: str | None = None,
    value_col: str | None = None,
    date_col: str = "date",
    min_rows: int = 1,
) -> pd.DataFrame:
    """Read a panel from a CSV or Parquet file (:func:`panel_frame` on its columns).

    Wide files have a ``date_col`` column and one column of returns per asset; long
    files (``asset_col`` given) one row per (asset, date) with the value in
    ``value_col``. The values are used as they are (returns, not prices).

    Raises
    ------
    DataError
        An unknown extension, an unreadable file, then every error of :func:`panel_frame`.
    FileNotFoundError
        When ``path`` does not exist.
    """
    from bayes_moe.data.files import read_raw

    return panel_frame(
        read_raw(Path(path)),
        asset_col=asset_col,
        value_col=value_col,
        date_col=date_col,
        min_rows=min_rows,
    )


def validate_panel(wide: pd.DataFrame, *, min_rows: int) -> None:
    """Raise :class:`DataError` unless ``wide`` is a usable wide panel.

    Checks, in this order: the index is a tz-naive, unique, sorted
    :class:`pandas.DatetimeIndex` (:func:`~bayes_moe.data.validation.validate_index`);
    no asset name appears twice; the panel has a date, an asset and a value; every
    value is a number (an integer or float column; the first non-number is named);
    no value is +-inf; every asset has at least ``min_rows`` values. NaN (no value)
    is allowed anywhere.

    Parameters
    ----------
    wide : pandas.DataFrame
        Shape (n_dates, n_assets): dates as the index, one column per asset.
    min_rows : int
        The fewest values (non-NaN) every asset must have; 0 checks none.

    Raises
    ------
    DataError
        At the first failed check, naming the asset and the date concerned.
    ValueError
        If ``min_rows`` is negative.
    """
    if min_rows < 0:
        raise ValueError(f"min_rows must be >= 0, got {min_rows}")
    if not isinstance(wide, pd.DataFrame):
        raise DataError(f"a panel must be a pandas DataFrame, got {type(wide).__name__}")
    validate_index(wide.index)
    validate_unique_columns(list(wide.columns))
    _check_not_empty(wide)
    bad = _bad_matrix(wide)
    if bad.any():
        raise _non_numeric_error(wide.to_numpy(dtype=object), bad, wide.columns, wide.index)
    _check_numeric_dtypes(wide)
    _check_finite(wide)
    _check_min_rows(wide, min_rows)


def load_sp500_stocks() -> pd.DataFrame:
    r"""Daily percentage log returns of 20 S&P 500 stocks, 1990-2022 (needs ``skfolio``).

    Source: :func:`skfolio.datasets.load_sp500_dataset` (shipped with ``skfolio``, works
    offline): daily adjusted closing prices of 20 stocks of the S&P 500 from
    1990-01-02 to 2022-12-28 (8313 dates). The returns
    :math:`r_t = 100 (\log P_t - \log P_{t-1})` are computed per stock, so a missing
    price (a stock not listed yet, a gap) gives NaN returns in that stock only, on its
    date and the next; the first date, which has no return, is dropped. Their GICS
    sectors are in :data:`SP500_STOCK_SECTORS`.

    Returns
    -------
    pandas.DataFrame
        The wide panel (see :mod:`bayes_moe.data.panel`), shape (8312, 20): index
        ``"date"`` from 1990-01-03 to 2022-12-28, one float64 column per ticker
        (``AAPL`` ... ``XOM``), in percent.

    Raises
    ------
    ImportError
        If ``skfolio`` is not installed; ``pip install 'bayes-moe[panel]'`` installs it.
    DataError
        If the bundled prices are not a valid panel or hold a non-positive price.
    """
    prices = _skfolio_sp500_loader()()
    return _percent_log_returns(panel_frame(prices, min_rows=2))


def _skfolio_sp500_loader() -> Callable[[], pd.DataFrame]:
    try:
        from skfolio.datasets import load_sp500_dataset
    except ImportError as exc:
        raise ImportError(
            "load_sp500_stocks needs the optional package skfolio, which is not "
            f"installed: {_PANEL_EXTRA}"
        ) from exc
    return load_sp500_dataset


def _percent_log_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """``100 * diff(log(prices))`` column by column, the first date dropped.

    Parameters
    ----------
    prices : pandas.DataFrame
        A wide panel of prices, shape (n_dates, n_assets), NaN where missing.

    Returns
    -------
    pandas.DataFrame
        Shape (n_dates - 1, n_assets), same columns, NaN where a price is missing on
        the date or the date before.
    """
    values = prices.to_numpy(dtype=np.float64)
    non_positive = values <= 0  # NaN compares False
    if non_positive.any():
        row, col = divmod(int(np.argmax(non_positive)), values.shape[1])
        raise DataError(
            f"asset {str(prices.columns[col])!r} has a non-positive price "
            f"{float(values[row, col])!r} on {format_date(prices.index[row])}; "
            f"{int(non_positive.sum())} non-positive price(s) in all"
        )
    logs = np.log(values)
    returns = pd.DataFrame(
        100.0 * (logs[1:] - logs[:-1]), index=prices.index[1:], columns=prices.columns
    )
    validate_panel(returns, min_rows=1)
    return returns


# ---------------------------------------------------------------------------- building


def _wide_panel(frame: pd.DataFrame, date_col: str | None) -> pd.DataFrame:
    """Check and build the panel of a wide frame: dates x assets."""
    if date_col is not None:
        _require_column(frame, date_col, "date_col")
        dates = _parse_dates(frame[date_col], f"column {date_col!r}")
        body = frame.drop(columns=[date_col])
    else:
        dates = _parse_dates(frame.index, "the index")
        body = frame
    assets = [str(c) for c in body.columns]
    validate_unique_columns(assets)  # 1 and "1" would both become "1"
    raw = body.to_numpy(dtype=object)
    _check_wide_dates(dates, raw, assets)
    bad = _bad_matrix(body)
    if bad.any():
        raise _non_numeric_error(raw, bad, assets, dates)
    values = np.empty((len(dates), len(assets)))
    for j in range(len(assets)):
        values[:, j] = _as_float(body.iloc[:, j])[0]
    wide = pd.DataFrame(
        values,
        index=pd.DatetimeIndex(dates, name="date"),
        columns=pd.Index(assets, name="asset"),
    )
    return wide.sort_index(kind="stable")


def _long_panel(
    frame: pd.DataFrame, *, asset_col: str, value_col: str | None, date_col: str | None
) -> pd.DataFrame:
    """Check and pivot a long frame (one row per asset and date) to the wide panel."""
    _require_column(frame, asset_col, "asset_col")
    if date_col is not None:
        _require_column(frame, date_col, "date_col")
        if date_col == asset_col:
            raise DataError(f"asset_col and date_col are both {asset_col!r}")
    value_col = _value_column(frame, asset_col=asset_col, value_col=value_col, date_col=date_col)
    assets = _asset_names(frame[asset_col], asset_col)
    if date_col is not None:
        dates = _parse_dates(frame[date_col], f"column {date_col!r}", assets)
    else:
        dates = _parse_dates(frame.index, "the index", assets)
    _check_pairs_unique(assets, dates)
    values, bad = _as_float(frame[value_col])
    if bad.any():
        raise _non_numeric_error(
            frame[value_col].to_numpy(dtype=object)[:, None],
            bad[:, None],
            assets.to_numpy()[:, None],
            dates,
            per_row_assets=True,
        )
    date_codes, unique_dates = pd.factorize(dates, sort=True)
    asset_codes, unique_assets = pd.factorize(assets, sort=True)
    grid = np.full((len(unique_dates), len(unique_assets)), np.nan)
    grid[date_codes, asset_codes] = values
    return pd.DataFrame(
        grid,
        index=pd.DatetimeIndex(unique_dates, name="date"),
        columns=pd.Index([str(a) for a in unique_assets], name="asset"),
    )


def _require_column(frame: pd.DataFrame, column: str, argument: str) -> None:
    if column not in frame.columns:
        raise DataError(
            f"no column {column!r} (given as {argument}); the frame has columns "
            f"{[str(c) for c in frame.columns]}"
        )


def _value_column(
    frame: pd.DataFrame, *, asset_col: str, value_col: str | None, date_col: str | None
) -> str:
    """The value column of a long frame: ``value_col``, else the only candidate."""
    if value_col is not None:
        _require_column(frame, value_col, "value_col")
        if value_col in (asset_col, date_col):
            raise DataError(f"value_col {value_col!r} is also the asset or the date column")
        return value_col
    others = [c for c in frame.columns if c not in (asset_col, date_col)]
    if len(others) == 1:
        return others[0]
    numeric = [c for c in others if _is_real_numeric(frame[c].dtype)]
    if len(numeric) == 1:
        return numeric[0]
    if not numeric:
        raise DataError(
            f"no numeric value column besides {asset_col!r}"
            + (f" and {date_col!r}" if date_col is not None else "")
            + f" among columns {[str(c) for c in frame.columns]}; pass value_col=..."
        )
    raise DataError(
        f"several candidate value columns {[str(c) for c in numeric]}; "
        "pass value_col=... to pick one"
    )


def _asset_names(raw: pd.Series, asset_col: str) -> pd.Series:
    """The asset names of a long frame as strings, refusing missing or clashing ones."""
    missing = raw.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise DataError(
            f"missing asset name in column {asset_col!r} at row {row}; "
            f"{int(missing.sum())} missing name(s) in all"
        )
    names = pd.Series([str(a) for a in raw.to_numpy(dtype=object)], dtype=object)
    unique_raw = pd.unique(raw.to_numpy(dtype=object))
    if len(unique_raw) != names.nunique():
        by_name: dict[str, list[object]] = {}
        for value in unique_raw:
            by_name.setdefault(str(value), []).append(value)
        name, values = next((n, v) for n, v in by_name.items() if len(v) > 1)
        raise DataError(
            f"assets {', '.join(repr(v) for v in values)} in column {asset_col!r} would "
            f"all be named {name!r}; rename them"
        )
    return names


# ------------------------------------------------------------------------------ dates


def _parse_dates(
    raw: pd.Series | pd.Index, where: str, assets: pd.Series | None = None
) -> pd.DatetimeIndex:
    """Parse dates, naming the row (and asset) of the first one that fails.

    Parameters
    ----------
    raw : pandas.Series or pandas.Index
        Shape (n_rows,): dates, strings, or integers ``YYYYMMDD``.
    where : str
        Where they come from, for the message (``"the index"``, ``"column 'date'"``).
    assets : pandas.Series, optional
        Shape (n_rows,): the asset of each row of a long frame, named in the message.

    Returns
    -------
    pandas.DatetimeIndex
        Shape (n_rows,), tz-naive, in the original row order.
    """
    series = pd.Series(raw).reset_index(drop=True)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        parsed = series.dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        parsed = series
    elif _is_real_numeric(series.dtype):  # YYYYMMDD numbers, never epoch offsets
        parsed = pd.to_datetime(series.map(_yyyymmdd), format="%Y%m%d", errors="coerce")
    else:
        parsed = _to_datetime(series)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        asset = f", asset {assets.iloc[i]!r}" if assets is not None else ""
        hint = "; pass date_col=... if the dates are in a column" if where == "the index" else ""
        raise DataError(
            f"cannot parse {_shown(series.iloc[i])!r} (row {i}{asset}) of {where} as a date; "
            f"{int(bad.sum())} unparseable or missing date(s) in all{hint}"
        )
    return pd.DatetimeIndex(parsed)


def _to_datetime(series: pd.Series) -> pd.Series:
    try:
        parsed = pd.to_datetime(series, errors="coerce")
    except (TypeError, ValueError):  # mixed time zones, objects pandas cannot read
        parsed = pd.Series([_one_date(v) for v in series], dtype="datetime64[ns]")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)
    return parsed


def _one_date(value: object) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return pd.NaT  # type: ignore[return-value]
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def _yyyymmdd(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else "not a date"


def _check_wide_dates(dates: pd.DatetimeIndex, raw: np.ndarray, assets: Sequence[str]) -> None:
    """Refuse a date that appears on two rows of a wide frame, naming its assets."""
    duplicated = dates.duplicated()
    if not duplicated.any():
        return
    first = dates[int(np.argmax(duplicated))]
    rows = np.flatnonzero(dates == first)
    present = pd.notna(raw[rows]).any(axis=0) if raw.size else np.zeros(0, dtype=bool)
    named = [assets[int(j)] for j in np.flatnonzero(present)]
    holding = (
        f"; those rows hold values of asset(s) {_listed(named)}"
        if named
        else "; those rows hold no value"
    )
    raise DataError(
        f"duplicate dates in the wide panel: {format_date(first)} appears on rows "
        f"{rows.tolist()}{holding}; {int(duplicated.sum())} repeated row(s) in all "
        "(every date needs one row)"
    )


def _check_pairs_unique(assets: pd.Series, dates: pd.DatetimeIndex) -> None:
    """Refuse an (asset, date) pair that appears on two rows of a long frame."""
    pairs = pd.DataFrame({"asset": assets.to_numpy(), "date": dates})
    repeated = pairs.duplicated().to_numpy()
    if not repeated.any():
        return
    shown = pairs[repeated].drop_duplicates()
    listed = ", ".join(
        f"({a!r}, {format_date(d)})" for a, d in shown.head(_SHOWN).itertuples(index=False)
    )
    more = ", ..." if len(shown) > _SHOWN else ""
    raise DataError(
        f"duplicate (asset, date) pair(s) in the long panel: {listed}{more}; "
        f"{int(repeated.sum())} repeated row(s) in all, {len(shown)} pair(s) "
        "(every asset needs at most one value per date)"
    )


# ----------------------------------------------------------------------------- values


def _is_real_numeric(dtype: object) -> bool:
    return (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not pd.api.types.is_complex_dtype(dtype)
    )


def _as_float(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column as float64 and the mask of its present values that are not numbers.

    Numbers and strings of numbers are converted; missing values (NaN, None) become
    NaN; anything else (text such as ``"n/a"``, booleans, dates) is a bad value.

    Returns
    -------
    values : numpy.ndarray
        Shape (n_rows,), float64, NaN where missing or bad.
    bad : numpy.ndarray
        Shape (n_rows,), bool, True where a value is present but not a number.
    """
    present = column.notna().to_numpy()
    if _is_real_numeric(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(column), bool)
    if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
        objects = column.astype(object)
        is_bool = objects.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
        converted = pd.to_numeric(objects.where(~is_bool), errors="coerce")
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, present & np.isnan(values)
    return np.full(len(column), np.nan), present  # bool, datetime, complex, category...


def _bad_matrix(body: pd.DataFrame) -> np.ndarray:
    """Shape (n_dates, n_assets): True where a value is present but not a number."""
    if body.shape[1] == 0:
        return np.zeros(body.shape, dtype=bool)
    return np.column_stack([_as_float(body.iloc[:, j])[1] for j in range(body.shape[1])])


def _non_numeric_error(
    raw: np.ndarray,
    bad: np.ndarray,
    assets: Sequence[object] | np.ndarray,
    dates: pd.Index,
    *,
    per_row_assets: bool = False,
) -> DataError:
    """The error for the first non-number (in row order) of a grid of values.

    Parameters
    ----------
    raw, bad : numpy.ndarray
        Shape (n_rows, n_cols): the values as given and the mask of bad ones.
    assets : sequence
        The asset of each column, shape (n_cols,), or with ``per_row_assets`` the
        asset of each cell, shape (n_rows, n_cols) (a long frame has one column).
    dates : pandas.Index
        Shape (n_rows,): the date of each row.
    """
    row, col = divmod(int(np.argmax(bad)), bad.shape[1])
    asset = assets[row, col] if per_row_assets else assets[col]  # type: ignore[call-overload]
    if per_row_assets:
        holders = pd.unique(np.asarray(assets)[bad])
    else:
        holders = np.asarray([str(a) for a in assets], dtype=object)[bad.any(axis=0)]
    return DataError(
        f"non-numeric value {_shown(raw[row, col])!r} for asset {str(asset)!r} on "
        f"{format_date(dates[row])}; {int(bad.sum())} non-numeric value(s) in all, in "
        f"asset(s) {_listed([str(a) for a in holders])} (a panel holds only numbers; "
        "leave a missing value empty or NaN)"
    )


def _shown(value: object) -> object:
    """``value`` as shown in a message: a numpy scalar as the Python scalar it holds."""
    return value.item() if isinstance(value, np.generic) else value


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


# ----------------------------------------------------------------- checks of a panel


def _check_not_empty(wide: pd.DataFrame) -> None:
    if wide.shape[0] == 0 or wide.shape[1] == 0:
        raise DataError(f"the panel is empty: {wide.shape[0]} date(s) and {wide.shape[1]} asset(s)")
    if not wide.notna().to_numpy().any():
        raise DataError(
            f"the panel is empty: its {wide.shape[0]} date(s) x {wide.shape[1]} asset(s) "
            "hold no value (every cell is NaN)"
        )


def _check_numeric_dtypes(wide: pd.DataFrame) -> None:
    """Refuse a column of numbers stored as text (``panel_frame`` converts it)."""
    for asset in wide.columns:
        if not _is_real_numeric(wide[asset].dtype):
            raise DataError(
                f"asset {str(asset)!r} has dtype {wide[asset].dtype}, not numbers "
                "(integers or floats); panel_frame converts numbers stored as text"
            )


def _check_finite(wide: pd.DataFrame) -> None:
    values = wide.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(values)
    if inf.any():
        row, col = divmod(int(np.argmax(inf)), values.shape[1])
        holders = [str(a) for a in wide.columns[inf.any(axis=0)]]
        raise DataError(
            f"infinite value {float(values[row, col])!r} for asset "
            f"{str(wide.columns[col])!r} on {format_date(wide.index[row])}; "
            f"{int(inf.sum())} inf value(s) in all, in asset(s) {_listed(holders)}"
        )


def _check_min_rows(wide: pd.DataFrame, min_rows: int) -> None:
    present = wide.notna().to_numpy()
    counts = present.sum(axis=0)
    short = np.flatnonzero(counts < min_rows)
    if not short.size:
        return
    j = int(short[0])
    rows = np.flatnonzero(present[:, j])
    span = (
        f" (from {format_date(wide.index[rows[0]])} to {format_date(wide.index[rows[-1]])})"
        if rows.size
        else ""
    )
    others = [f"{str(wide.columns[k])!r} ({int(counts[k])})" for k in short[1:]]
    also = (
        f"; also too short: {', '.join(others[:_SHOWN])}"
        + (f", ... ({len(others)} more in all)" if len(others) > _SHOWN else "")
        if others
        else ""
    )
    raise DataError(
        f"asset {str(wide.columns[j])!r} has {int(counts[j])} value(s){span} but "
        f"min_rows={min_rows} are needed{also}"
    )
