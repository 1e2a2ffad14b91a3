"""Read the user's own daily data from a CSV or Parquet file into a frame.

:func:`read_frame` turns a file with a date column and numeric columns (prices or
returns, optionally daily highs and lows) into the frame convention of
:mod:`bayes_moe.data`. It reads only; nothing is written to disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bayes_moe.data.continuation import FeatureRecipe, remember_reading
from bayes_moe.data.errors import DataError
from bayes_moe.data.features import add_range_features, log_returns
from bayes_moe.data.validation import validate_index, validate_unique_columns

__all__ = ["read_frame"]

_READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_frame(
    path: str | PathLike[str],
    *,
    date_col: str = "date",
    price_col: str | None = None,
    return_col: str | None = None,
    open_col: str | None = None,
    high_col: str | None = None,
    low_col: str | None = None,
    close_col: str | None = None,
) -> pd.DataFrame:
    r"""Read a CSV or Parquet file of daily data into a frame with a ``ret`` column.

    Steps: read the file (by extension), parse ``date_col`` into a tz-naive
    ``DatetimeIndex`` named ``"date"`` (it must already be sorted ascending and
    without duplicates: nothing is re-sorted silently), build ``ret``, rename the
    price columns, add the range features, and drop the leading warm-up rows in which
    a generated column (``ret`` from a price, a feature) is still NaN.

    Parameters
    ----------
    path : str or path-like
        A ``.csv``, ``.parquet`` or ``.pq`` file.
    date_col : str, default "date"
        The column holding the dates (any format :func:`pandas.to_datetime` infers
        consistently, or integers ``YYYYMMDD``). Time-zone-aware dates keep their local
        date and lose the zone.
    price_col : str, optional
        A column of positive prices; ``ret`` becomes its percentage log return
        :math:`100 (\log P_t - \log P_{t-1})` and the first row is dropped. The price
        column itself is kept.
    return_col : str, optional
        A column that already holds percentage returns; it is renamed ``ret``.
        Give at most one of ``price_col`` and ``return_col``, and neither only if the
        file has a ``ret`` column.
    open_col, high_col, low_col, close_col : str, optional
        Daily open, high, low and close prices, renamed ``open``, ``high``, ``low``,
        ``close``; ``high_col`` and ``low_col`` go together. They add the features of
        :func:`~bayes_moe.data.add_range_features` that they allow: ``var_parkinson``
        (high, low), ``atr_14`` (+ close), ``var_garman_klass`` (+ open and close),
        besides ``rv_5`` and ``rv_22`` (from ``ret``, added whenever high and low are).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``"date"``; ``ret`` and every other column of the file. Integer and
        float columns become float64; non-numeric columns are kept as they are
        (:func:`~bayes_moe.data.validate_frame` objects only if a model reads them).
        Its ``attrs`` record how the generated columns were computed and the warm-up
        rows that were dropped, so that a fit on it can continue the features over a
        file of newer rows (:mod:`bayes_moe.data.continuation`,
        :meth:`~bayes_moe.inference.results.MoEFit.update`).

    Raises
    ------
    DataError
        On an unknown extension, an unreadable file, a column name that appears twice
        in the header (pandas would rename a repeated CSV column ``x`` to ``x.1``; it is
        refused instead, naming ``x``), a missing or unparseable date column, unsorted or
        duplicate dates, no rows (in the file; a file of fewer rows than the feature
        warm-up gives an empty frame, for ``update``), a missing or non-numeric price or
        return column, a non-positive price, a high below its low, a price column
        called ``ret`` (the name of the returns computed from it), or conflicting
        column arguments. Each message names the problem.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    frame = read_raw(path)
    frame = _set_date_index(frame, date_col)
    generated = []
    frame, ret_generated = _with_returns(frame, price_col=price_col, return_col=return_col)
    if ret_generated:
        generated.append("ret")
    ohlc = {"open": open_col, "high": high_col, "low": low_col, "close": close_col}
    range_inputs: tuple[str, ...] = ()
    if any(col is not None for col in ohlc.values()):
        frame = _rename_ohlc(frame, ohlc)
        range_inputs = tuple(c for c in ohlc if c in frame.columns)
        before = list(frame.columns)
        frame = add_range_features(frame)
        generated += [c for c in frame.columns if c not in before]
    renamed: dict[str | None, str] = {
        column: target for target, column in ohlc.items() if column is not None
    }
    recipe = FeatureRecipe(
        returns_from=renamed.get(price_col, price_col) if ret_generated else None,
        range_inputs=range_inputs,
        generated=tuple(generated),
    )
    kept = _drop_leading_nan(frame, generated)
    remember_reading(kept, frame.iloc[: len(frame) - len(kept)], recipe)
    return kept


def read_raw(path: Path) -> pd.DataFrame:
    """The columns of a CSV or Parquet file as pandas reads them (unique names checked)."""
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"cannot read {path.name!r}: unknown extension {path.suffix!r}; "
            f"use one of {sorted(_READERS)}"
        )
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    # The header first: pandas would rename a repeated CSV column 'x' to 'x.1' silently,
    # and pyarrow refuses a repeated Parquet column without saying which one repeats.
    validate_unique_columns(_parse(path, kind, _HEADER_READERS[kind]))
    frame = _parse(path, kind, _FRAME_READERS[kind])
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()  # a Parquet file written with its index
    frame.columns = [str(c) for c in frame.columns]
    validate_unique_columns(frame.columns)  # an index named like a column, 1 and "1"
    return frame


def _parse(path: Path, kind: str, reader: Callable[[Path], object]):
    """``reader(path)``, with the parsers' errors turned into a :class:`DataError`."""
    try:
        return reader(path)
    except ValueError as exc:  # pandas' ParserError, EmptyDataError, pyarrow's ArrowInvalid
        raise DataError(f"cannot read {path.name!r} as {kind}: {exc}") from exc


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file as written (blank names left out)."""
    row = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    return [name for name in row.tolist() if name != ""]


def _parquet_header(path: Path) -> list[str]:
    """The column names of a Parquet file as written (its stored index included)."""
    return list(pq.read_schema(path).names)


_HEADER_READERS: dict[str, Callable[[Path], list[str]]] = {
    "csv": _csv_header,
    "parquet": _parquet_header,
}
_FRAME_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "csv": pd.read_csv,
    "parquet": pd.read_parquet,
}


def _set_date_index(frame: pd.DataFrame, date_col: str) -> pd.DataFrame:
    if date_col not in frame.columns:
        raise DataError(
            f"no date column {date_col!r}; the file has columns {list(frame.columns)} "
            "(pass date_col=...)"
        )
    dates = _parse_dates(frame[date_col], date_col)
    frame = frame.drop(columns=[date_col])
    frame.index = pd.DatetimeIndex(dates, name="date")
    if len(frame) == 0:
        raise DataError("the file has no data rows")
    validate_index(frame.index)
    return _to_float(frame)


def _parse_dates(raw: pd.Series, date_col: str) -> pd.DatetimeIndex:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        parsed = raw
    elif pd.api.types.is_numeric_dtype(raw.dtype):  # YYYYMMDD numbers, never epoch offsets
        parsed = pd.to_datetime(raw.map(_yyyymmdd), format="%Y%m%d", errors="coerce")
    else:
        parsed = pd.to_datetime(raw, errors="coerce")
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_localize(None)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"cannot parse {raw.iloc[i]!r} (row {i}) of column {date_col!r} as a date; "
            f"{int(bad.sum())} unparseable or missing value(s) in all"
        )
    return pd.DatetimeIndex(parsed)


def _yyyymmdd(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else "not a date"


def _to_float(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = [
        c
        for c in frame.columns
        if pd.api.types.is_numeric_dtype(frame[c].dtype)
        and not pd.api.types.is_bool_dtype(frame[c].dtype)
        and not pd.api.types.is_complex_dtype(frame[c].dtype)
    ]
    return frame.astype(dict.fromkeys(numeric, np.float64))


def _with_returns(
    frame: pd.DataFrame, *, price_col: str | None, return_col: str | None
) -> tuple[pd.DataFrame, bool]:
    """Return the frame with a ``ret`` column and whether ``ret`` was computed."""
    if price_col is not None and return_col is not None:
        raise DataError(f"pass price_col ({price_col!r}) or return_col ({return_col!r}), not both")
    source = price_col if price_col is not None else return_col
    if source is None:
        if "ret" not in frame.columns:
            raise DataError(
                "the file has no 'ret' column; pass price_col= (prices) or return_col= "
                f"(percentage returns); its columns are {list(frame.columns)}"
            )
        _require_numeric(frame, "ret")
        return frame, False
    if price_col == "ret":
        raise DataError(
            "the price column may not be called 'ret', the name of the returns computed "
            "from it; rename it"
        )
    _require_numeric(frame, source)
    if "ret" in frame.columns and source != "ret":
        raise DataError(
            f"the file already has a 'ret' column besides {source!r}; rename one of them"
        )
    frame = frame.copy()
    if price_col is not None:
        frame["ret"] = log_returns(frame[price_col])
        return frame, True
    return frame.rename(columns={return_col: "ret"}), False


def _rename_ohlc(frame: pd.DataFrame, ohlc: dict[str, str | None]) -> pd.DataFrame:
    if ohlc["high"] is None or ohlc["low"] is None:
        given = {k: v for k, v in ohlc.items() if v is not None}
        raise DataError(
            f"high_col and low_col go together (every range feature needs both); got {given}"
        )
    renames = {}
    for target, column in ohlc.items():
        if column is None:
            continue
        _require_numeric(frame, column)
        if column != target and target in frame.columns:
            raise DataError(
                f"cannot rename {column!r} to {target!r}: the file already has a {target!r} column"
            )
        renames[column] = target
    return frame.rename(columns=renames)


def _require_numeric(frame: pd.DataFrame, column: str) -> None:
    if column not in frame.columns:
        raise DataError(f"no column {column!r}; the file has columns {list(frame.columns)}")
    dtype = frame[column].dtype
    if not pd.api.types.is_float_dtype(dtype):
        raise DataError(f"column {column!r} must be numeric, got dtype {dtype}")


def _drop_leading_nan(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Drop the leading rows in which a generated column is still NaN (warm-up).

    A file shorter than the warm-up (one new close, ten days of range features) leaves
    no row: the frame comes back empty, its rows kept as warm-up in ``attrs``, so that
    :meth:`MoEFit.update <bayes_moe.MoEFit.update>` computes their features on the
    fitted history; a fit on it is refused with the rows it lacks.
    """
    if not columns:
        return frame
    complete = frame[list(columns)].notna().all(axis=1).to_numpy()
    if not complete.any():
        return frame.iloc[:0]
    return frame.iloc[int(np.argmax(complete)) :]
