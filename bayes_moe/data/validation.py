"""Checks that a frame is fit to be read by a model, with errors that name the problem.

:func:`validate_frame` runs before any fitting starts. It checks, in this order:

1. the index is a tz-naive :class:`pandas.DatetimeIndex`;
2. no date appears twice;
3. the dates are sorted ascending;
4. no column name appears twice (any column, requested or not: a frame with two
   columns of one name is ambiguous wherever it is read);
5. every requested column exists;
6. every requested column is numeric (integer or float);
7. no requested column holds NaN or +-inf, except NaN in the ``optional`` columns
   (covariates some expert reads with gaps), which must still have two values;
8. no requested column is constant (over its values, for an optional column);
9. the frame has at least ``min_length`` rows.

Only the requested ``columns`` are checked for content; other columns (a ticker name,
a free-text note) may be anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bayes_moe.data.continuation import warmup_rows
from bayes_moe.data.errors import DataError, format_date

__all__ = ["validate_frame", "validate_index", "validate_unique_columns"]


def validate_frame(
    frame: pd.DataFrame,
    *,
    columns: Sequence[str],
    min_length: int,
    readers: Mapping[str, str] | None = None,
    optional: Sequence[str] = (),
) -> None:
    """Raise :class:`DataError` unless ``frame`` can be read by a model.

    Parameters
    ----------
    frame : pandas.DataFrame
        The frame to check, indexed by date (see :mod:`bayes_moe.data`).
    columns : sequence of str
        The columns the model will read. Only these are checked for content.
    min_length : int
        The fewest rows the caller needs, typically the context window plus the forecast
        horizon (plus however many windows a fit needs).
    readers : mapping of str to str, optional
        Who reads a column, e.g. ``{"volume": "expert 'var'"}``; an error about that
        column ends with ``"; read by expert 'var'"``.
    optional : sequence of str
        Requested columns that may hold NaN (missing days), because every expert that
        reads them accepts gaps (:meth:`~bayes_moe.models.experts.Expert.optional_columns`).

    Raises
    ------
    DataError
        At the first failed check, in the order given in the module docstring, with a
        message naming the problem.
    """
    if isinstance(columns, str):
        columns = [columns]
    columns = list(columns)
    validate_index(frame.index)
    validate_unique_columns(frame.columns)
    readers = readers or {}
    _check_columns_exist(frame, columns, readers)
    _check_numeric(frame, columns, readers)
    _check_finite(frame, columns, readers, set(optional))
    _check_not_constant(frame, columns, readers)
    _check_length(frame, min_length)


def validate_index(index: pd.Index) -> None:
    """Raise :class:`DataError` unless ``index`` is a tz-naive, unique, sorted DatetimeIndex.

    Parameters
    ----------
    index : pandas.Index
        The index to check.

    Raises
    ------
    DataError
        If the index is not a :class:`pandas.DatetimeIndex`, is tz-aware, holds a
        missing date (NaT), holds a date twice (the first duplicate is named) or is not
        sorted ascending (the first out-of-order date and its predecessor are named).
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(
            f"the index must be a DatetimeIndex of dates, got {type(index).__name__} "
            f"(dtype {index.dtype}); set the date column as the index"
        )
    if index.tz is not None:
        raise DataError(
            f"the index must hold tz-naive dates, got time zone {index.tz}; "
            "use index.tz_localize(None)"
        )
    if index.hasnans:
        row = int(np.argmax(index.isna()))
        raise DataError(f"the index holds a missing date (NaT) at row {row}")
    duplicated = index.duplicated()
    if duplicated.any():
        first = index[np.argmax(duplicated)]
        count = int(duplicated.sum())
        raise DataError(
            f"duplicate dates in the index: {format_date(first)} appears more than once "
            f"({count} repeated row(s) in all)"
        )
    values = index.asi8
    backwards = np.flatnonzero(values[1:] < values[:-1])
    if backwards.size:
        i = int(backwards[0]) + 1
        raise DataError(
            f"dates are not sorted ascending: {format_date(index[i])} (row {i}) comes after "
            f"{format_date(index[i - 1])} (row {i - 1}); sort the frame by date first"
        )


def validate_unique_columns(names: Sequence[object]) -> None:
    """Raise :class:`DataError` if a column name appears more than once.

    Parameters
    ----------
    names : sequence
        Column names, e.g. ``frame.columns`` or the header row of a file.

    Raises
    ------
    DataError
        Naming every repeated column and how often it appears.
    """
    repeated = {name: n for name, n in Counter(names).items() if n > 1}
    if repeated:
        listed = ", ".join(f"{name!r} ({n} times)" for name, n in repeated.items())
        raise DataError(
            f"duplicate column name(s): {listed}; every column needs its own name "
            "(rename or drop the repeats)"
        )


def _read_by(columns: list[str], readers: Mapping[str, str]) -> str:
    """The end of an error message about ``columns``: who reads them (``""`` if unknown)."""
    named = [c for c in columns if c in readers]
    if len(columns) == 1 and named:
        return f"; read by {readers[named[0]]}"
    return "".join(f"; {c!r} read by {readers[c]}" for c in named)


def _check_columns_exist(
    frame: pd.DataFrame, columns: list[str], readers: Mapping[str, str]
) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; the frame has {[str(c) for c in frame.columns]}"
            + _read_by(missing, readers)
        )


def _is_real_numeric(dtype: object) -> bool:
    return (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not pd.api.types.is_complex_dtype(dtype)
    )


def _check_numeric(frame: pd.DataFrame, columns: list[str], readers: Mapping[str, str]) -> None:
    bad = {c: str(frame[c].dtype) for c in columns if not _is_real_numeric(frame[c].dtype)}
    if bad:
        listed = ", ".join(f"{c!r} ({dtype})" for c, dtype in bad.items())
        raise DataError(
            f"non-numeric column(s): {listed}; the model reads only numbers"
            + _read_by(list(bad), readers)
        )


def _check_finite(
    frame: pd.DataFrame, columns: list[str], readers: Mapping[str, str], optional: set[str]
) -> None:
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        nan = np.isnan(values)
        inf = np.isinf(values)
        bad = inf if column in optional else nan | inf
        present = int(np.count_nonzero(~nan))
        if column in optional and present < 2:
            raise DataError(
                f"column {column!r} has {present} value(s) besides its "
                f"{int(nan.sum())} missing day(s); a column with gaps needs at least 2"
                + _read_by([column], readers)
            )
        if bad.any():
            first = frame.index[np.argmax(bad)]
            raise DataError(
                f"column {column!r} has {int(nan.sum())} NaN and {int(inf.sum())} inf "
                f"value(s), the first on {format_date(first)}" + _read_by([column], readers)
            )


def _check_not_constant(
    frame: pd.DataFrame, columns: list[str], readers: Mapping[str, str]
) -> None:
    if len(frame) < 2:
        return
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64)
        values = values[~np.isnan(values)]  # gaps of an optional column (checked before)
        if len(values) and np.all(values == values[0]):
            raise DataError(
                f"column {column!r} is constant (every one of its {len(values)} values is "
                f"{float(values[0])!r}); it carries no information and breaks standardisation"
                + _read_by([column], readers)
            )


def _check_length(frame: pd.DataFrame, min_length: int) -> None:
    if len(frame) < min_length:
        warmup = warmup_rows(frame)
        dropped = (
            f"; read_frame dropped the first {warmup} row(s) of the file as feature warm-up"
            if warmup
            else ""
        )
        raise DataError(
            f"the frame has {len(frame)} rows but at least {min_length} are needed "
            f"(the context window plus the forecast horizon need them){dropped}"
        )
