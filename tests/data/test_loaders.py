import math

import arch.data.nasdaq
import arch.data.sp500
import numpy as np
import pandas as pd
import pytest

from bayes_moe.data import (
    load_fama_french,
    load_macro,
    load_nasdaq,
    load_sp500,
    load_us_macro_quarterly,
    load_vix,
    load_wti,
    validate_frame,
)

SP500_COLUMNS = [
    "open",
    "high",
    "low",
    "close",
    "adj_close",
    "volume",
    "ret",
    "ret_nasdaq",
    "var_parkinson",
    "var_garman_klass",
    "atr_14",
    "rv_5",
    "rv_22",
]


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return load_sp500()


def _raw_returns(raw: pd.DataFrame) -> pd.Series:
    """The protocol's target: 100 * diff(log(Adj Close)) on the full source series."""
    prices = raw["Adj Close"].to_numpy(dtype=float)
    return pd.Series(100 * np.diff(np.log(prices)), index=pd.DatetimeIndex(raw.index[1:]))


def _assert_frame_convention(frame: pd.DataFrame) -> None:
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "date"
    assert frame.index.tz is None
    assert (frame.dtypes == np.float64).all()
    validate_frame(frame, columns=list(frame.columns), min_length=len(frame))


def test_sp500_columns_span_and_convention(sp500: pd.DataFrame) -> None:
    assert list(sp500.columns) == SP500_COLUMNS
    assert sp500.index[0] == pd.Timestamp("1999-02-04")
    assert sp500.index[-1] == pd.Timestamp("2018-12-31")
    assert len(sp500) == 5009  # 5031 trading days less 22 warm-up rows
    _assert_frame_convention(sp500)


def test_sp500_ret_is_the_protocol_series(sp500: pd.DataFrame) -> None:
    expected = _raw_returns(arch.data.sp500.load()).loc[sp500.index]
    np.testing.assert_allclose(sp500["ret"].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    expected_nasdaq = _raw_returns(arch.data.nasdaq.load()).loc[sp500.index]
    np.testing.assert_allclose(sp500["ret_nasdaq"], expected_nasdaq.to_numpy(), atol=1e-12)


def test_sp500_without_features_starts_on_the_first_return() -> None:
    frame = load_sp500(features=False, with_nasdaq=False)
    assert list(frame.columns) == SP500_COLUMNS[:7]
    assert frame.index[0] == pd.Timestamp("1999-01-05")
    assert len(frame) == 5030
    # Adj Close 1228.099976 on 1999-01-04 and 1244.780029 on 1999-01-05 (Yahoo Finance)
    assert frame["ret"].iloc[0] == pytest.approx(
        100 * math.log(1244.780029 / 1228.099976), rel=1e-8
    )
    _assert_frame_convention(frame)


def test_sp500_features_against_the_source(sp500: pd.DataFrame) -> None:
    raw = arch.data.sp500.load()
    day = pd.Timestamp("2008-10-10")
    high, low = raw.loc[day, "High"], raw.loc[day, "Low"]
    assert sp500.loc[day, "var_parkinson"] == pytest.approx(
        (100 * math.log(high / low)) ** 2 / (4 * math.log(2)), rel=1e-12
    )
    # The first row is the first complete rv_22: the returns of 1999-01-05 .. 1999-02-04.
    first_22 = _raw_returns(raw).iloc[:22]
    assert first_22.index[-1] == sp500.index[0]
    assert sp500["rv_22"].iloc[0] == pytest.approx((first_22**2).mean(), rel=1e-12)
    assert (sp500[["var_parkinson", "var_garman_klass", "atr_14", "rv_5", "rv_22"]] > 0).all().all()


def test_nasdaq(sp500: pd.DataFrame) -> None:
    frame = load_nasdaq()
    assert list(frame.columns) == [c for c in SP500_COLUMNS if c != "ret_nasdaq"]
    assert frame.index.equals(sp500.index)
    np.testing.assert_allclose(frame["ret"], sp500["ret_nasdaq"], rtol=0, atol=0)
    _assert_frame_convention(frame)
    assert load_nasdaq(features=False).index[0] == pd.Timestamp("1999-01-05")


def test_vix_drops_holidays_and_covers_2014_2019_only() -> None:
    vix = load_vix()
    assert list(vix.columns) == ["vix"]
    assert (vix.index[0], vix.index[-1]) == (pd.Timestamp("2014-01-03"), pd.Timestamp("2019-01-03"))
    assert len(vix) == 1259  # 1305 source rows less 46 holidays (NaN)
    assert pd.Timestamp("2014-01-20") not in vix.index  # Martin Luther King day
    # record low 9.14 on 2017-11-03, high 40.74 on 2015-08-24 (CBOE closes)
    assert vix["vix"].min() == 9.14 and vix["vix"].idxmin() == pd.Timestamp("2017-11-03")
    assert vix["vix"].max() == 40.74 and vix["vix"].idxmax() == pd.Timestamp("2015-08-24")
    _assert_frame_convention(vix)


def test_wti() -> None:
    wti = load_wti()
    assert list(wti.columns) == ["wti"]
    assert (wti.index[0], wti.index[-1]) == (pd.Timestamp("1986-01-02"), pd.Timestamp("2019-01-03"))
    assert len(wti) == 8321  # 8611 source rows less 290 holidays (NaN)
    assert wti.loc["1986-01-02", "wti"] == 25.56
    assert (wti["wti"] > 0).all()
    _assert_frame_convention(wti)


def test_macro() -> None:
    macro = load_macro()
    assert list(macro.columns) == ["core_cpi", "aaa", "baa", "credit_spread"]
    assert macro.index.is_month_start.all()
    assert (macro.index[0], macro.index[-1]) == (
        pd.Timestamp("1957-01-01"),
        pd.Timestamp("2018-11-01"),
    )
    assert len(macro) == 743  # every month, no gap
    assert macro.loc["1957-01-01", "core_cpi"] == 28.5
    assert macro.loc["2018-11-01"].tolist() == pytest.approx([259.481, 4.22, 5.22, 1.0])
    np.testing.assert_array_equal(macro["credit_spread"], macro["baa"] - macro["aaa"])
    _assert_frame_convention(macro)


def test_fama_french_index_is_repaired() -> None:
    ff = load_fama_french()
    assert list(ff.columns) == ["mkt_rf", "smb", "hml", "rf"]
    assert ff.index.is_month_start.all()
    assert (ff.index[0], ff.index[-1]) == (pd.Timestamp("1926-07-01"), pd.Timestamp("2018-11-01"))
    months = ff.index.year * 12 + ff.index.month
    assert (np.diff(months) == 1).all()  # consecutive months
    assert ff.iloc[0].tolist() == [2.96, -2.30, -2.87, 0.22]  # July 1926
    assert ff.iloc[-1].tolist() == [1.69, -0.75, 0.22, 0.18]  # November 2018
    _assert_frame_convention(ff)


def test_us_macro_quarterly() -> None:
    macro = load_us_macro_quarterly()
    assert "year" not in macro.columns and "quarter" not in macro.columns
    assert "realgdp" in macro.columns and "infl" in macro.columns
    assert macro.index.is_quarter_start.all()
    assert (macro.index[0], macro.index[-1]) == (
        pd.Timestamp("1959-01-01"),
        pd.Timestamp("2009-07-01"),
    )
    assert len(macro) == 203
    assert macro.iloc[0]["realgdp"] == 2710.349  # 1959Q1
    # The source defines infl = 400 ln(cpi_t / cpi_{t-1}) (rounded to 2 decimals), which
    # holds only if the rows are in quarter order under the index built here.
    infl = 400 * np.log(macro["cpi"]).diff()
    assert (infl - macro["infl"]).iloc[1:].abs().max() < 0.01
    _assert_frame_convention(macro)
