import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_moe.data import (
    DataError,
    add_range_features,
    average_true_range,
    garman_klass_variance,
    log_returns,
    parkinson_variance,
    realized_variance,
)


def _dates(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2021-01-04", periods=n, name="date")


def _random_ohlc(n: int, seed: int) -> pd.DataFrame:
    """A random walk with consistent open/high/low/close (low <= open, close <= high)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * np.exp(rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * np.exp(-rng.uniform(0, 0.01, n))
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}, index=_dates(n))
    frame["ret"] = log_returns(frame["close"])
    return frame


# --- log returns -------------------------------------------------------------------------


def test_log_returns_hand_values() -> None:
    prices = pd.Series([100.0, 110.0, 99.0], index=_dates(3))
    ret = log_returns(prices)
    assert ret.name == "ret"
    assert np.isnan(ret.iloc[0])
    # 100 ln(1.1) and 100 ln(0.9), to 12 digits
    np.testing.assert_allclose(ret.iloc[1:], [9.531017980432, -10.536051565783], rtol=1e-12)


def test_log_returns_sum_to_the_total_log_change() -> None:
    prices = _random_ohlc(50, 1)["close"]
    ret = log_returns(prices)
    total = 100 * math.log(prices.iloc[-1] / prices.iloc[0])
    assert ret.iloc[1:].sum() == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("bad", [0.0, -3.0])
def test_log_returns_reject_non_positive_prices_naming_the_first_date(bad: float) -> None:
    prices = pd.Series([100.0, 101.0, bad, 99.0, bad], index=_dates(5), name="px")
    with pytest.raises(DataError, match=r"positive in column 'px'.* on 2021-01-06 \(2 non"):
        log_returns(prices)


# --- range estimators: closed forms ------------------------------------------------------


def test_parkinson_closed_form() -> None:
    # ln(H/L) = 0.02, so (100 ln(H/L))^2 = 4 and the estimate is 4 / (4 ln 2) = 1 / ln 2
    low = pd.Series([50.0, 80.0], index=_dates(2))
    high = low * math.exp(0.02)
    var = parkinson_variance(high, low)
    assert var.name == "var_parkinson"
    np.testing.assert_allclose(var, [1 / math.log(2)] * 2, rtol=1e-12)


def test_parkinson_is_zero_for_a_flat_day() -> None:
    price = pd.Series([10.0], index=_dates(1))
    assert parkinson_variance(price, price).iloc[0] == 0.0


def test_garman_klass_closed_form() -> None:
    # 100 ln(H/L) = 2 and 100 ln(C/O) = 1: 0.5 * 4 - (2 ln 2 - 1) * 1 = 3 - 2 ln 2
    low = pd.Series([100.0], index=_dates(1))
    high = low * math.exp(0.02)
    open_ = low * math.exp(0.005)
    close = open_ * math.exp(0.01)
    var = garman_klass_variance(open_, high, low, close)
    assert var.name == "var_garman_klass"
    assert var.iloc[0] == pytest.approx(3 - 2 * math.log(2), rel=1e-12)


def test_range_estimators_are_unbiased_for_brownian_motion() -> None:
    # Oracle: for a driftless Brownian log price with daily variance s^2, observed
    # (almost) continuously, both estimators have mean s^2 (Parkinson 1980, Garman and
    # Klass 1980) and variances about 0.41 s^4 and 0.27 s^4 against 2 s^4 for the squared
    # open-to-close return. s = 1%; 2000 days of 2000 steps (discrete monitoring biases
    # the range down by about 3%).
    rng = np.random.default_rng(12345)
    n_days, n_steps = 2000, 2000
    paths = np.cumsum(rng.normal(0.0, 0.01 / math.sqrt(n_steps), (n_days, n_steps)), axis=1)
    paths = np.concatenate([np.zeros((n_days, 1)), paths], axis=1)
    index = _dates(n_days)
    open_ = pd.Series(np.ones(n_days), index=index)
    high = pd.Series(np.exp(paths.max(axis=1)), index=index)
    low = pd.Series(np.exp(paths.min(axis=1)), index=index)
    close = pd.Series(np.exp(paths[:, -1]), index=index)
    park = parkinson_variance(high, low)
    gk = garman_klass_variance(open_, high, low, close)
    squared = (100 * paths[:, -1]) ** 2
    assert park.mean() == pytest.approx(1.0, abs=0.07)
    assert gk.mean() == pytest.approx(1.0, abs=0.07)
    assert squared.mean() == pytest.approx(1.0, abs=0.15)
    assert gk.var() < park.var() < 0.6 < 1.5 < squared.var()


def test_high_below_low_is_named() -> None:
    index = _dates(3)
    high = pd.Series([10.0, 9.0, 10.0], index=index)
    low = pd.Series([9.0, 9.5, 9.0], index=index)
    with pytest.raises(DataError, match=r"high is below low on 2021-01-05"):
        parkinson_variance(high, low)


def test_misaligned_series_are_rejected() -> None:
    high = pd.Series([10.0, 11.0], index=_dates(2), name="high")
    low = pd.Series([9.0, 10.0], index=_dates(3)[1:], name="low")
    with pytest.raises(DataError, match="same index"):
        parkinson_variance(high, low)


# --- average true range ------------------------------------------------------------------


def test_average_true_range_hand_example() -> None:
    index = _dates(5)
    high = pd.Series([11.0, 12.0, 11.0, 13.0, 12.6], index=index)
    low = pd.Series([9.0, 10.0, 10.5, 12.0, 12.4], index=index)
    close = pd.Series([10.0, 11.5, 10.8, 12.5, 12.5], index=index)
    # true ranges: 2 (H-L, no previous close), 2 (H-L = H-C_prev), 1.0 (|L - C_prev|),
    # 2.2 (gap up: H - C_prev), 0.2 (H-L)
    # Wilder, n = 3: A = 2, 2, 5/3, 5/3 + (2.2 - 5/3)/3, then A + (0.2 - A)/3
    a2 = 5 / 3
    a3 = a2 + (2.2 - a2) / 3
    a4 = a3 + (0.2 - a3) / 3
    atr = average_true_range(high, low, close, window=3)
    assert atr.name == "atr_3"
    assert atr.iloc[:2].isna().all()
    np.testing.assert_allclose(
        atr.iloc[2:], [100 * a2 / 10.8, 100 * a3 / 12.5, 100 * a4 / 12.5], rtol=1e-12
    )


def test_average_true_range_matches_a_python_loop() -> None:
    frame = _random_ohlc(60, 2)
    h, lo, c = (frame[k].to_numpy() for k in ("high", "low", "close"))
    expected = np.full(60, np.nan)
    smoothed = 0.0
    for t in range(60):
        tr = (
            h[t] - lo[t]
            if t == 0
            else max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1]))
        )
        smoothed = tr if t == 0 else smoothed + (tr - smoothed) / 14
        if t >= 13:
            expected[t] = 100 * smoothed / c[t]
    atr = average_true_range(frame["high"], frame["low"], frame["close"])
    np.testing.assert_allclose(atr.to_numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("window", [0, -1, 2.5])
def test_bad_window(window: float) -> None:
    ret = pd.Series([1.0, 2.0], index=_dates(2))
    with pytest.raises(DataError, match="window must be a positive integer"):
        realized_variance(ret, window)  # type: ignore[arg-type]


# --- realised variance -------------------------------------------------------------------


def test_realized_variance_matches_a_python_loop() -> None:
    ret = _random_ohlc(40, 3)["ret"]
    r = ret.to_numpy()
    expected = np.full(40, np.nan)
    for t in range(5, 40):  # r[0] is NaN, so the first complete 5-day window ends at 5
        expected[t] = sum(r[t - i] ** 2 for i in range(5)) / 5
    rv = realized_variance(ret, 5)
    assert rv.name == "rv_5"
    np.testing.assert_allclose(rv.to_numpy(), expected, rtol=1e-12)


def test_realized_variance_hand_values() -> None:
    ret = pd.Series([1.0, -2.0, 3.0], index=_dates(3))
    np.testing.assert_allclose(realized_variance(ret, 2).iloc[1:], [2.5, 6.5])


# --- add_range_features ------------------------------------------------------------------


def test_add_range_features_columns_and_values() -> None:
    frame = _random_ohlc(40, 4)
    original = frame.copy()
    out = add_range_features(frame)
    pd.testing.assert_frame_equal(frame, original)  # input untouched
    assert list(out.columns) == [
        *frame.columns,
        "var_parkinson",
        "var_garman_klass",
        "atr_14",
        "rv_5",
        "rv_22",
    ]
    pd.testing.assert_series_equal(
        out["var_garman_klass"],
        garman_klass_variance(frame["open"], frame["high"], frame["low"], frame["close"]),
    )
    pd.testing.assert_series_equal(out["rv_22"], realized_variance(frame["ret"], 22))


def test_add_range_features_adds_what_its_inputs_allow() -> None:
    frame = _random_ohlc(30, 5)
    only_hl = add_range_features(frame[["high", "low"]])
    assert list(only_hl.columns) == ["high", "low", "var_parkinson"]
    only_ret = add_range_features(frame[["ret"]], rv_windows=(3,))
    assert list(only_ret.columns) == ["ret", "rv_3"]
    with pytest.raises(DataError, match=r"needs 'high' and 'low'.*\['close'\]"):
        add_range_features(frame[["close"]])


# --- no look-ahead -----------------------------------------------------------------------


def _all_features(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["ret"] = log_returns(frame["close"])
    return add_range_features(frame)


@settings(max_examples=40, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=59),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_no_feature_looks_ahead(cut: int, seed: int) -> None:
    frame = _random_ohlc(60, 6).drop(columns="ret")
    before = _all_features(frame)
    rng = np.random.default_rng(seed)
    future = frame.copy()
    later = slice(cut + 1, None)
    scale = np.exp(rng.normal(0, 0.3, (60 - cut - 1, 1)))
    future.iloc[later] = future.iloc[later].to_numpy() * scale  # keeps low <= open, close <= high
    future.iloc[later, future.columns.get_loc("high")] *= 1.05
    after = _all_features(future)
    pd.testing.assert_frame_equal(after.iloc[: cut + 1], before.iloc[: cut + 1], check_exact=True)
    if cut < 59:
        assert not after.iloc[cut + 1 :].equals(before.iloc[cut + 1 :])
