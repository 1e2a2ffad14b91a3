"""The one exception type raised for bad input data."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd


class DataError(ValueError):
    """Bad input data: wrong index, missing or non-numeric column, NaN, too short...

    Every message names the problem concretely (the column, the first offending date,
    the sizes involved) so that it can be fixed without a debugger. A subclass of
    :class:`ValueError`, so ``except ValueError`` catches it too.
    """


def format_date(stamp: object) -> str:
    """Format a date for an error message: ``2020-03-31``, with a time only if it has one.

    Parameters
    ----------
    stamp : object
        A date (:class:`pandas.Timestamp`, :class:`datetime.date`,
        :class:`numpy.datetime64`); anything else (an integer row label, say) is shown
        with :func:`repr`.

    Returns
    -------
    str
        The formatted date.
    """
    if not isinstance(stamp, datetime.date | np.datetime64):
        return repr(stamp)
    ts = pd.Timestamp(stamp)
    if ts is pd.NaT:
        return "NaT"
    if ts == ts.normalize() and ts.tzinfo is None:
        return ts.strftime("%Y-%m-%d")
    return str(ts)
