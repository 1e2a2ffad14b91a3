"""Fuzzing CSV files given to ``read_frame``: a named DataError, or the right returns.

Files are written as text cell by cell from a clean series of positive closes (drawn
seed and length, ISO or ``YYYYMMDD`` dates) and drawn corruptions: an unparseable or
missing date, two rows swapped, a row repeated, a price that is empty, text, zero,
negative or beyond float range, a header name repeated, a ragged row, a text column
nobody reads, the file cut after its header. Oracle: the corruptions that DESIGN.md
says must be refused are refused with :class:`DataError` (nothing else escapes); a file
with none of them is read, its dates are the written ones, and ``ret`` equals
``100 * diff(log close)`` computed here from the written numbers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bayes_moe as bm
from bayes_moe.data.errors import DataError

pytestmark = pytest.mark.fuzz

# Corruption: must the file be refused? (None: either is right.)
CORRUPTIONS = {
    "bad_date": True,
    "missing_date": True,
    "swap_rows": True,
    "repeat_row": True,
    "empty_price": None,  # read; ret NaN there (prepare refuses it, see test_fuzz_frames)
    "text_price": True,
    "zero_price": True,
    "negative_price": True,
    "overflow_price": None,  # "1e400" is inf to the parser: refused as non-positive or read
    "repeated_header": True,
    "ragged_row": None,  # pandas may take the extra cell as an index
    "unread_text_column": False,
    "header_only": True,
}
DATE_FORMATS = ["%Y-%m-%d", "%Y%m%d"]


@st.composite
def csv_files(draw):
    """``(text, closes, dates, applied)``: a file's text and the clean values behind it."""
    n = draw(st.integers(4, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    dates = pd.bdate_range("2019-12-30", periods=n)
    fmt = draw(st.sampled_from(DATE_FORMATS))
    header = ["date", "close"]
    rows = [[d.strftime(fmt), repr(float(c))] for d, c in zip(dates, closes)]
    applied = draw(st.lists(st.sampled_from(sorted(CORRUPTIONS)), max_size=2, unique=True))
    first = draw(st.integers(0, n - 2))
    for j, name in enumerate(applied):
        if not rows:  # cut after the header: nothing left to corrupt
            break
        i = 1 + (first + j) % (n - 1)  # distinct rows: no corruption undoes another
        if name == "bad_date":
            rows[i][0] = draw(st.sampled_from(["2020-13-45", "n/a", "yesterday", "20201345"]))
        elif name == "missing_date":
            rows[i][0] = ""
        elif name == "swap_rows":
            rows[i], rows[i - 1] = rows[i - 1], rows[i]
        elif name == "repeat_row":
            rows.insert(i, list(rows[i]))
        elif name in ("empty_price", "text_price", "zero_price", "negative_price"):
            cell = {"empty_price": "", "text_price": "12,5", "zero_price": "0"}
            rows[i][1] = cell.get(name, "-5.25")
        elif name == "overflow_price":
            rows[i][1] = "1e400"
        elif name == "repeated_header":
            header.append("close")
            rows = [r + ["1.0"] for r in rows]
        elif name == "ragged_row":
            rows[i].append("7")
        elif name == "unread_text_column":
            header.append("ticker")
            rows = [r + ["SPX"] for r in rows]
        elif name == "header_only":
            rows = []
    text = "\n".join(",".join(cells) for cells in [header, *rows]) + "\n"
    return text, closes, dates, applied


def _must_refuse(applied: list[str]) -> bool | None:
    answers = [CORRUPTIONS[name] for name in applied]
    if True in answers:
        return True
    return None if None in answers else False


@given(csv_files())
def test_a_csv_file_is_read_right_or_refused_by_name(example):
    text, closes, dates, applied = example
    refuse = _must_refuse(applied)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prices.csv"
        path.write_text(text)
        try:
            frame = bm.data.read_frame(path, price_col="close")
        except DataError as err:
            message = str(err)
            assert 0 < len(message) < 2000 and "Traceback" not in message
            assert refuse is not False, f"a clean file ({applied}) was refused: {message}"
            return
    assert refuse is not True, f"a file with {applied} was read:\n{text}"
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.is_monotonic_increasing
    assert frame.index.is_unique and frame.index.tz is None
    if applied:
        return  # a corruption that may be read: no reference values to compare with
    expected = pd.DatetimeIndex(dates[1:], name="date")
    pd.testing.assert_index_equal(frame.index, expected, check_freq=False, exact=False)
    written = np.array([float(repr(float(c))) for c in closes])
    np.testing.assert_allclose(frame["ret"], 100 * np.diff(np.log(written)), rtol=1e-12)
