"""Fuzzing the continuation of a fitted file by a file of newer prices (issue 13, 1).

Real S&P 500 daily prices (2017-06 .. 2018-12, arch.data). Each example splits them at a
drawn day into the fitted file and a newer file of drawn length that may repeat a drawn
number of the fitted days, read with closes only or with open/high/low/close, and may
damage the newer file: a repeated day's close changed by 1 %, a repeated day left out,
or days skipped after the fitted data. Oracle: undamaged, the continued frame equals
the whole series read at once (every return and range feature, nothing dropped);
damaged, a DataError names the date at fault.
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
from bayes_moe.data.continuation import PriceHistory, append_rows
from bayes_moe.data.errors import DataError

pytestmark = pytest.mark.fuzz

OHLC = {"open_col": "open", "high_col": "high", "low_col": "low", "close_col": "close"}
RANGE = ["var_parkinson", "var_garman_klass", "atr_14", "rv_5", "rv_22"]
WARMUP = 40  # the fitted file keeps at least this many rows beyond the 22-day warm-up


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """Daily open/high/low/close of the S&P 500, 2017-06-01 .. 2018-12-31 (real data)."""
    frame = bm.data.load_sp500(with_nasdaq=False, features=False)
    return frame.loc["2017-06-01":, ["open", "high", "low", "close"]]


def _read(frame: pd.DataFrame, folder: Path, name: str, ohlc: bool) -> pd.DataFrame:
    path = folder / f"{name}.csv"
    frame.rename_axis("date").reset_index().to_csv(path, index=False)
    return bm.data.read_frame(path, price_col="close", **(OHLC if ohlc else {}))


@given(
    split=st.floats(0, 1),
    n_new=st.integers(1, 60),
    overlap=st.integers(0, 30),
    ohlc=st.booleans(),
    damage=st.sampled_from(["none", "none", "changed_close", "missing_day", "gap"]),
    where=st.floats(0, 1, exclude_max=True),
)
def test_newer_prices_continue_the_fitted_file(prices, split, n_new, overlap, ohlc, damage, where):
    k = 22 + WARMUP + int(split * (len(prices) - 22 - WARMUP - n_new))  # fitted rows
    overlap = min(overlap, k - 1)
    newer = prices.iloc[k - overlap : k + n_new].copy()
    if damage == "changed_close" and overlap >= 1:
        day = newer.index[int(where * overlap)]
        newer.loc[day, "close"] *= 1.01
        newer.loc[day, "high"] = max(newer.loc[day, "high"], newer.loc[day, "close"])
    elif damage == "missing_day" and overlap >= 2:
        day = newer.index[1 + int(where * (overlap - 1))]  # not the file's first day
        newer = newer.drop(day)
    elif damage == "gap" and n_new >= 12:
        skipped = 10 + int(where * (n_new - 11))  # two weeks or more of trading days
        newer = prices.iloc[k + skipped : k + n_new]
        day = newer.index[0]
    else:
        damage = "none"
    columns = ["ret", *(RANGE if ohlc else [])]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        fitted = _read(prices.iloc[:k], folder, "fitted", ohlc)
        whole = _read(prices.iloc[: k + n_new], folder, "whole", ohlc)
        new = _read(newer, folder, "newer", ohlc)  # may be all warm-up: then empty
    history = PriceHistory.from_frame(fitted)
    if damage != "none":
        with pytest.raises(DataError) as err:
            append_rows(fitted[columns], new, columns=columns, prices=history)
        assert day.strftime("%Y-%m-%d") in str(err.value), str(err.value)
        return
    combined, _ = append_rows(fitted[columns], new, columns=columns, prices=history)
    expected = whole.loc[fitted.index[0] :, columns]
    assert combined.index.equals(expected.index)  # nothing dropped, nothing repeated
    np.testing.assert_allclose(combined.to_numpy(), expected.to_numpy(), rtol=1e-10)
