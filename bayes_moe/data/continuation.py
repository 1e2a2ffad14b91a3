r"""Continue a fitted frame with newer rows: features on the whole history, overlaps checked.

A frame read by :func:`~bayes_moe.data.read_frame` remembers, in ``frame.attrs``, how its
generated columns (``ret`` from a price, the range features) were computed from the
file's columns (a :class:`FeatureRecipe`) and the leading rows it dropped because a
generated column was still NaN there (feature warm-up). From that a fit keeps a
:class:`PriceHistory`: the raw columns the recipe reads, on every row of the fitted file
up to the last fitted day. :func:`append_rows` continues the fitted frame with the rows
of a newer frame:

* **features**: generated columns of the new rows are computed by the fit's recipe on
  the fitted raw history followed by the new raw rows, so the first new return uses
  the last fitted close, the rolling windows and the ATR use the fitted history as
  warm-up, and no new row is dropped. The new rows equal those of the whole file read
  at once (for the ATR, an exponential average, exactly so when the fitted frame starts
  where ``read_frame`` started it; if its first rows were cut off, the average restarts
  at the cut and its starting value decays by a factor 13/14 a day). Other model
  columns (and everything, for a frame that ``read_frame`` did not build, or one read
  with ``return_col`` and no range features) are taken as given.
* **overlap**: on the dates the new frame shares with the fitted data, both must have
  the same dates and the same values (raw prices, and the columns taken as given),
  within :data:`OVERLAP_RTOL` and :data:`OVERLAP_ATOL`; the first difference is a
  :class:`DataError` naming the date, the column and both values.
* **gap**: when the new data has a row on the last fitted day, the rows after it are
  the next rows of the user's own file and follow on by construction. When it starts
  after the last fitted day, its first row may skip at most as many weekdays as the
  fitted data ever skips between two consecutive rows (weekends are free; the fitted
  data's own holidays set the allowance, e.g. 4 weekdays for S&P 500 1999-2018, closed
  11-14 September 2001). A longer gap is a :class:`DataError` naming both dates; rows
  that do follow on after an unusually long closure are accepted from a file that
  starts on or before the last fitted day. A single missing weekday is not caught when
  the fitted data has one-day holidays: no market calendar is assumed.

A new frame may therefore be the next days alone (no overlap: the README's use), or
any file that overlaps the fitted data (the whole history plus the new days).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError, format_date
from bayes_moe.data.features import add_range_features, log_returns

__all__ = [
    "OVERLAP_ATOL",
    "OVERLAP_RTOL",
    "FeatureRecipe",
    "PriceHistory",
    "append_rows",
    "check_gap",
    "check_overlap",
    "recipe_of",
    "remember_reading",
    "restore_warmup",
    "warmup_rows",
]

#: Key of ``DataFrame.attrs`` under which :func:`~bayes_moe.data.read_frame` records its
#: recipe, the first date it returned and the warm-up rows it dropped.
ATTRS_KEY = "bayes_moe.read_frame"
#: Relative tolerance of the overlap check (:func:`numpy.isclose`).
OVERLAP_RTOL = 1e-6
#: Absolute tolerance of the overlap check, in data units (prices, percent returns).
OVERLAP_ATOL = 1e-8


@dataclass(frozen=True)
class FeatureRecipe:
    """How :func:`~bayes_moe.data.read_frame` computed a frame's generated columns.

    Attributes
    ----------
    returns_from : str or None
        The column (as named in the frame) whose percentage log return is ``ret``;
        None when ``ret`` was read from the file (``return_col``).
    range_inputs : tuple of str
        The ``open``/``high``/``low``/``close`` columns present when range features
        were asked for (empty when they were not); ``ret`` feeds the realised variances.
    generated : tuple of str
        The columns computed, in the order they were added.
    """

    returns_from: str | None
    range_inputs: tuple[str, ...]
    generated: tuple[str, ...]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The raw columns the recipe reads: the price (or ``ret``) and ``range_inputs``."""
        first = self.returns_from if self.returns_from is not None else "ret"
        return tuple(dict.fromkeys((first, *self.range_inputs)))

    def compute(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The generated columns computed on ``raw``: shape ``(T, len(generated))``.

        Parameters
        ----------
        raw : pandas.DataFrame
            Date-indexed, with the :attr:`inputs` columns, ``(T, P)``.

        Returns
        -------
        pandas.DataFrame
            The :attr:`generated` columns on the index of ``raw``; NaN in the warm-up rows.
        """
        frame = raw.loc[:, list(self.inputs)].copy()
        if self.returns_from is not None:
            frame["ret"] = log_returns(frame[self.returns_from])
        if self.range_inputs:
            frame = add_range_features(frame)
        return frame.loc[:, list(self.generated)]

    def to_dict(self) -> dict:
        """A JSON-able dict (used in ``frame.attrs`` and in checkpoints)."""
        return {
            "returns_from": self.returns_from,
            "range_inputs": list(self.range_inputs),
            "generated": list(self.generated),
        }

    @classmethod
    def from_dict(cls, raw: dict) -> FeatureRecipe:
        """Inverse of :meth:`to_dict`; ValueError names a malformed entry."""
        returns_from = raw.get("returns_from")
        if returns_from is not None and not isinstance(returns_from, str):
            raise ValueError(
                f"recipe 'returns_from' must be a string or null, got {returns_from!r}"
            )
        lists: dict[str, Any] = {key: raw.get(key) for key in ("range_inputs", "generated")}
        for key, value in lists.items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"recipe {key!r} must be a list of strings, got {value!r}")
        unknown = [c for c in lists["range_inputs"] if c not in ("open", "high", "low", "close")]
        if unknown:
            raise ValueError(f"recipe 'range_inputs' has unknown columns {unknown}")
        return cls(returns_from, tuple(lists["range_inputs"]), tuple(lists["generated"]))


def remember_reading(frame: pd.DataFrame, warmup: pd.DataFrame, recipe: FeatureRecipe) -> None:
    """Record in ``frame.attrs`` the recipe and the dropped warm-up rows (``frame`` is modified).

    Parameters
    ----------
    frame : pandas.DataFrame
        What :func:`~bayes_moe.data.read_frame` returns (warm-up rows dropped).
    warmup : pandas.DataFrame
        The rows dropped before ``frame``, same columns; their generated columns are
        not kept (they are NaN or incomplete there).
    recipe : FeatureRecipe
    """
    kept = [c for c in warmup.columns if c not in recipe.generated]
    frame.attrs[ATTRS_KEY] = {
        "recipe": recipe.to_dict(),
        "first_date": frame.index[0].isoformat() if len(frame) else None,
        "warmup": {
            "dates": [stamp.isoformat() for stamp in warmup.index],
            "columns": {c: warmup[c].tolist() for c in kept},
        },
    }


def recipe_of(frame: pd.DataFrame) -> FeatureRecipe | None:
    """The recipe ``read_frame`` recorded on ``frame``, or None for any other frame."""
    info = frame.attrs.get(ATTRS_KEY)
    return None if info is None else FeatureRecipe.from_dict(info["recipe"])


def warmup_rows(frame: pd.DataFrame) -> int:
    """How many leading rows of its file ``read_frame`` dropped from ``frame`` (0 if none)."""
    info = frame.attrs.get(ATTRS_KEY)
    return 0 if info is None else len(info["warmup"]["dates"])


def restore_warmup(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the warm-up rows ``read_frame`` dropped put back in front.

    The restored rows hold the file's values of every column that is still in
    ``frame`` and NaN in the generated ones. A frame that ``read_frame`` did not build,
    or whose first rows were cut off since (its first date moved), is returned as it is.

    Returns
    -------
    pandas.DataFrame
        ``(T_warmup + T, C)``, the columns of ``frame``.
    """
    info = frame.attrs.get(ATTRS_KEY)
    if info is None or not info["warmup"]["dates"]:
        return frame
    first = None if info["first_date"] is None else pd.Timestamp(info["first_date"])
    if (frame.index[0] if len(frame) else None) != first:
        return frame  # rows were cut off (or added) since it was read
    dates = pd.DatetimeIndex(info["warmup"]["dates"]).as_unit(frame.index.unit)
    full = frame.reindex(dates.append(frame.index).rename(frame.index.name))
    for column, values in info["warmup"]["columns"].items():
        if column in full.columns:
            full.iloc[: len(dates), full.columns.get_loc(column)] = values
    return full


@dataclass(frozen=True)
class PriceHistory:
    """The raw columns behind a frame's generated columns, on every row read for it.

    Attributes
    ----------
    recipe : FeatureRecipe
    raw : pandas.DataFrame
        ``(T_raw, P)`` float64, the :attr:`FeatureRecipe.inputs` columns, indexed by
        date: the warm-up rows ``read_frame`` dropped, then the frame's rows.
    """

    recipe: FeatureRecipe
    raw: pd.DataFrame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> PriceHistory | None:
        """The history of a frame built by ``read_frame``; None if there is none.

        None for a frame without a recipe, one whose recipe generates nothing, or one
        that lost a column the recipe reads.
        """
        recipe = recipe_of(frame)
        if recipe is None or not recipe.generated:
            return None
        if any(column not in frame.columns for column in recipe.inputs):
            return None
        full = restore_warmup(frame)
        return cls(recipe, full.loc[:, list(recipe.inputs)].astype(np.float64))

    def extended(self, rows: pd.DataFrame) -> PriceHistory | None:
        """The history followed by ``rows`` (dated after it); None if they lack an input."""
        if not len(rows):
            return self
        if any(column not in rows.columns for column in self.recipe.inputs):
            return None
        more = rows.loc[:, list(self.recipe.inputs)].astype(np.float64)
        return PriceHistory(self.recipe, pd.concat([self.raw, more]))


def check_overlap(fitted: pd.DataFrame, new: pd.DataFrame, what: str = "") -> None:
    """Raise unless ``new`` agrees with ``fitted`` on the dates they share.

    The shared span runs from the later of the two first dates to the earlier of the
    two last dates. In it both must have the same dates and, in every column of
    ``fitted``, values equal within :data:`OVERLAP_RTOL` and :data:`OVERLAP_ATOL`
    (NaN equals NaN).

    Parameters
    ----------
    fitted, new : pandas.DataFrame
        Date-indexed; ``new`` has every column of ``fitted``.
    what : str
        Words put before "column" in the message (``"price "``).

    Raises
    ------
    DataError
        Naming the first date the two disagree on (a date in one only, or a value with
        both values and the column).
    """
    if not len(fitted) or not len(new):
        return
    start, end = max(fitted.index[0], new.index[0]), min(fitted.index[-1], new.index[-1])
    if start > end:
        return
    ours, theirs = fitted.loc[start:end], new.loc[start:end, list(fitted.columns)]
    if not ours.index.equals(theirs.index):
        _raise_date_mismatch(ours.index, theirs.index)
    a = ours.to_numpy(dtype=np.float64)
    b = theirs.to_numpy(dtype=np.float64)
    differs = ~np.isclose(b, a, rtol=OVERLAP_RTOL, atol=OVERLAP_ATOL, equal_nan=True)
    if differs.any():
        row, col = np.argwhere(differs)[0]
        raise DataError(
            f"the new data disagrees with the fitted data on {format_date(ours.index[row])}: "
            f"{what}column {ours.columns[col]!r} is {b[row, col]!r} in the new data and "
            f"{a[row, col]!r} in the fitted data (tolerance: relative {OVERLAP_RTOL:g}, "
            f"absolute {OVERLAP_ATOL:g}); rows dated up to the last fitted day must repeat "
            "the fitted data"
        )


def _raise_date_mismatch(fitted: pd.DatetimeIndex, new: pd.DatetimeIndex) -> None:
    """Raise naming the first date that is in only one of ``fitted`` and ``new``."""
    only_fitted, only_new = fitted.difference(new), new.difference(fitted)
    first = min([*only_fitted[:1], *only_new[:1]])
    if first in only_fitted:
        where = "the fitted data has it and the new data does not"
    else:
        where = "the new data has it and the fitted data does not"
    raise DataError(
        f"the new data and the fitted data disagree on their shared dates "
        f"({format_date(max(fitted[0], new[0]))} .. {format_date(min(fitted[-1], new[-1]))}): "
        f"first on {format_date(first)}, which {where}"
    )


def check_gap(fitted_dates: pd.DatetimeIndex, new_dates: pd.DatetimeIndex) -> None:
    """Raise if the first new date leaves a gap after the last fitted date.

    The weekdays strictly between the two dates may not outnumber the most weekdays
    the fitted data skips between two consecutive rows (module docstring).

    Parameters
    ----------
    fitted_dates : DatetimeIndex
        The fitted rows' dates, sorted.
    new_dates : DatetimeIndex
        The dates of the rows to append, all after ``fitted_dates[-1]``; may be empty.

    Raises
    ------
    DataError
        Naming the last fitted date, the first new date and the weekdays skipped.
    """
    if not len(new_dates) or not len(fitted_dates):
        return
    days = fitted_dates.to_numpy().astype("datetime64[D]")
    one = np.timedelta64(1, "D")
    allowed = int(np.busday_count(days[:-1] + one, days[1:]).max()) if len(days) > 1 else 0
    last, first = days[-1], new_dates[:1].to_numpy().astype("datetime64[D]")[0]
    skipped = int(np.busday_count(last + one, first))
    if skipped > allowed:
        raise DataError(
            f"gap between the fitted data and the new rows: the fitted data ends on "
            f"{format_date(fitted_dates[-1])} and the new rows start on "
            f"{format_date(new_dates[0])}, {skipped} weekday(s) later than the next one, "
            f"while the fitted data never skips more than {allowed} weekday(s) between two "
            "rows; give the rows in between (new data that starts on or before the last "
            "fitted day is taken to follow on, and its shared rows are checked against the "
            "fitted ones)"
        )


def append_rows(
    fitted: pd.DataFrame,
    new: pd.DataFrame,
    *,
    columns: Sequence[str],
    prices: PriceHistory | None,
) -> tuple[pd.DataFrame, PriceHistory | None]:
    """The fitted frame followed by the rows of ``new`` dated after it (module docstring).

    Parameters
    ----------
    fitted : pandas.DataFrame
        The fitted rows ``(T, ...)``, with every model column.
    new : pandas.DataFrame
        Newer data: the next days, or a frame overlapping the fitted rows; a frame
        built by ``read_frame`` has its generated columns recomputed on the history.
    columns : sequence of str
        The model columns ``C`` (targets first).
    prices : PriceHistory or None
        The fitted raw history (None when the fit keeps none).

    Returns
    -------
    frame : pandas.DataFrame
        ``(T + T_new, C)``: the fitted rows, then the new ones (no ``attrs``).
    prices : PriceHistory or None
        The raw history continued over the new rows (None when it cannot be).

    Raises
    ------
    DataError
        When the new rows need the fitted prices and the fit keeps none, were read
        differently from the fitted file, lack a column, disagree with the fitted data
        where they overlap, or leave a gap after it.
    """
    columns = list(columns)
    full = restore_warmup(new)  # a file shorter than the warm-up: only warm-up rows
    if not len(full):
        return _without_attrs(fitted.loc[:, columns]), prices
    recomputed = _recomputed_columns(new, columns, prices)
    given = [c for c in columns if c not in recomputed]
    # _recomputed_columns raises when prices is None, so it is set whenever recomputed is.
    _require_columns(
        full, given + (list(cast(PriceHistory, prices).recipe.inputs) if recomputed else [])
    )
    if recomputed:
        assert prices is not None
        check_overlap(prices.raw, full, what="price ")
    check_overlap(fitted.loc[:, given], full)
    rows = full.loc[full.index > fitted.index[-1]]
    if fitted.index[-1] not in full.index:  # else the rows follow on in the new file itself
        check_gap(fitted.index, rows.index)
    history = None if prices is None else prices.extended(rows)
    if not len(rows):
        return _without_attrs(fitted.loc[:, columns]), history
    appended = rows.loc[:, given].astype(np.float64)
    if recomputed:
        assert prices is not None and history is not None
        values = prices.recipe.compute(history.raw)
        for column in recomputed:
            appended[column] = values.loc[rows.index, column]
    frame = pd.concat([fitted.loc[:, columns], appended.loc[:, columns]])
    return _without_attrs(frame), history


def _recomputed_columns(
    new: pd.DataFrame, columns: Sequence[str], prices: PriceHistory | None
) -> tuple[str, ...]:
    """The model columns to compute on the fitted history (empty: take ``new`` as given)."""
    recipe = recipe_of(new)
    if recipe is None or not recipe.generated:
        return ()
    if prices is None:
        raise DataError(
            f"the new data's {list(recipe.generated)} are computed from its prices, which "
            "needs the fitted prices before them (the last close, the warm-up of the rolling "
            "features), and this fit keeps none: it was fitted on a frame that read_frame did "
            "not build (or whose price columns were dropped), or read from a checkpoint "
            "written before format version 3. Refit on the whole history, or give the new "
            "rows as returns (return_col=, --return-col)"
        )
    if recipe.returns_from != prices.recipe.returns_from:
        raise DataError(
            f"the new data's 'ret' is {_describe_returns(recipe)} and the fitted one was "
            f"{_describe_returns(prices.recipe)}; read the new file the way the fitted one was"
        )
    return tuple(c for c in prices.recipe.generated if c in columns)


def _describe_returns(recipe: FeatureRecipe) -> str:
    if recipe.returns_from is None:
        return "read from the file (return_col)"
    return f"computed from column {recipe.returns_from!r} (price_col)"


def _require_columns(frame: pd.DataFrame, needed: Sequence[str]) -> None:
    """Raise unless ``frame`` has every column of ``needed``, each numeric."""
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise DataError(
            f"the new data has no column(s) {missing}, which the fitted model reads or "
            f"computes its features from; its columns are {[str(c) for c in frame.columns]}"
        )
    for column in needed:
        dtype = frame[column].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise DataError(f"column {column!r} of the new data must be numeric, got dtype {dtype}")


def _without_attrs(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.attrs = {}
    return frame
