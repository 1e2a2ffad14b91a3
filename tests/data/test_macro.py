import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_moe.data import DEFAULT_PUBLICATION_LAGS, DataError, join_asof, load_macro, load_sp500

NAN = np.nan


def _daily(dates: list[str]) -> pd.DataFrame:
    index = pd.DatetimeIndex(dates, name="date")
    return pd.DataFrame({"ret": np.arange(len(dates), dtype=float)}, index=index)


def _monthly() -> pd.DataFrame:
    index = pd.DatetimeIndex(["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01"], name="date")
    return pd.DataFrame(
        {"core_cpi": [1.0, 2.0, 3.0, 4.0], "aaa": [10.0, 20.0, 30.0, 40.0]}, index=index
    )


def test_hand_made_example_with_default_lags() -> None:
    # Availability (period end + lag):
    #   core_cpi, +15 days:    Jan -> 02-15, Feb -> 03-15, Mar -> 04-15, Apr -> 05-15
    #   aaa, +1 business day:  Jan 31 (Fri) -> 02-03, Feb 29 (Sat) -> 03-02,
    #                          Mar 31 (Tue) -> 04-01, Apr 30 (Thu) -> 05-01
    dates = [
        "2020-01-31", "2020-02-03", "2020-03-02", "2020-03-13", "2020-03-16", "2020-03-31",
        "2020-04-01", "2020-04-14", "2020-04-15", "2020-04-30", "2020-05-01", "2020-05-15",
    ]  # fmt: skip
    out = join_asof(_daily(dates), _monthly())
    expected = pd.DataFrame(
        {
            "ret": np.arange(12, dtype=float),
            "core_cpi": [NAN, NAN, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4],
            "aaa": [NAN, 10, 20, 20, 20, 20, 30, 30, 30, 30, 40, 40],
        },
        index=pd.DatetimeIndex(dates, name="date"),
    )
    pd.testing.assert_frame_equal(out, expected)


def test_one_lag_for_all_columns() -> None:
    out = join_asof(
        _daily(["2020-02-29", "2020-03-01", "2020-03-02"]),
        _monthly(),
        publication_lag=pd.Timedelta(days=1),
    )
    # Jan ends 01-31 -> available 02-01; Feb ends 02-29 -> available 03-01
    assert out["core_cpi"].tolist() == [1.0, 2.0, 2.0]
    assert out["aaa"].tolist() == [10.0, 20.0, 20.0]


def test_quarterly_periods() -> None:
    gdp = pd.DataFrame(
        {"gdp": [100.0, 101.0]}, index=pd.DatetimeIndex(["2019-10-01", "2020-01-01"])
    )
    daily = _daily(["2020-01-29", "2020-01-30", "2020-04-29", "2020-04-30"])
    out = join_asof(daily, gdp, publication_lag=pd.Timedelta(days=30), period_end="quarter")
    # Q4 2019 ends 12-31 -> 01-30; Q1 2020 ends 03-31 -> 04-30
    np.testing.assert_array_equal(out["gdp"], [NAN, 100.0, 100.0, 101.0])


def test_nan_cell_counts_as_not_published_for_that_column_only() -> None:
    monthly = _monthly()
    monthly.loc["2020-03-01", "core_cpi"] = NAN
    out = join_asof(_daily(["2020-04-20"]), monthly)
    assert out["core_cpi"].iloc[0] == 2.0  # March missing: still February's value
    assert out["aaa"].iloc[0] == 30.0


def test_input_frames_are_not_modified() -> None:
    daily, monthly = _daily(["2020-04-20"]), _monthly()
    join_asof(daily, monthly)
    assert list(daily.columns) == ["ret"]
    pd.testing.assert_frame_equal(monthly, _monthly())


def test_mixed_datetime_resolutions() -> None:
    daily = _daily(["2020-04-15"])
    daily.index = daily.index.as_unit("ns")
    monthly = _monthly()
    monthly.index = monthly.index.as_unit("s")
    assert join_asof(daily, monthly)["core_cpi"].iloc[0] == 3.0


def test_default_lags_are_read_only_and_cover_load_macro() -> None:
    assert set(DEFAULT_PUBLICATION_LAGS) == {"core_cpi", "aaa", "baa", "credit_spread"}
    assert DEFAULT_PUBLICATION_LAGS["core_cpi"] == pd.Timedelta(days=15)
    with pytest.raises(TypeError):
        DEFAULT_PUBLICATION_LAGS["core_cpi"] = pd.Timedelta(0)  # type: ignore[index]


def test_real_data_cpi_enters_mid_month_after_its_reference_month() -> None:
    macro = load_macro()
    daily = load_sp500(with_nasdaq=False, features=False)[["ret"]]
    out = join_asof(daily, macro)
    assert out.loc["1999-04-14", "core_cpi"] == macro.loc["1999-02-01", "core_cpi"]
    assert out.loc["1999-04-15", "core_cpi"] == macro.loc["1999-03-01", "core_cpi"]
    # March 1999 yields (month ends Wed 03-31) are known from Thu 04-01
    assert out.loc["1999-03-31", "baa"] == macro.loc["1999-02-01", "baa"]
    assert out.loc["1999-04-01", "baa"] == macro.loc["1999-03-01", "baa"]
    assert not out.isna().any().any()  # 1999 is long after 1957


# --- errors ------------------------------------------------------------------------------


def test_missing_lag_for_a_column() -> None:
    with pytest.raises(DataError, match=r"no publication lag for column 'gdp'"):
        join_asof(_daily(["2020-04-01"]), _monthly().assign(gdp=1.0))


def test_column_in_both_frames() -> None:
    with pytest.raises(DataError, match=r"\['core_cpi'\] are in both"):
        join_asof(_daily(["2020-04-01"]).assign(core_cpi=1.0), _monthly())


def test_unknown_period() -> None:
    with pytest.raises(DataError, match=r"period_end must be one of .*'week'"):
        join_asof(_daily(["2020-04-01"]), _monthly(), period_end="week")


def test_bad_lag_type() -> None:
    with pytest.raises(DataError, match=r"DateOffset or Timedelta, got int"):
        join_asof(_daily(["2020-04-01"]), _monthly(), publication_lag=15)  # type: ignore[arg-type]


def test_negative_lag() -> None:
    with pytest.raises(DataError, match="negative"):
        join_asof(_daily(["2020-04-01"]), _monthly(), publication_lag=pd.Timedelta(days=-1))


def test_two_rows_in_one_period() -> None:
    monthly = _monthly()
    monthly.index = pd.DatetimeIndex(["2020-01-01", "2020-01-15", "2020-03-01", "2020-04-01"])
    with pytest.raises(DataError, match="same reference period"):
        join_asof(_daily(["2020-04-01"]), monthly)


def test_unsorted_low_frequency_index() -> None:
    with pytest.raises(DataError, match="not sorted"):
        join_asof(_daily(["2020-04-01"]), _monthly().iloc[::-1])


# --- no look-ahead, property based -------------------------------------------------------

_START = pd.Timestamp("2019-01-01")


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    n_months = draw(st.integers(1, 18))
    values = draw(
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n_months, max_size=n_months)
    )
    monthly = pd.DataFrame(
        {"x": values}, index=pd.date_range(_START, periods=n_months, freq="MS", name="date")
    )
    offsets = draw(st.lists(st.integers(0, 620), min_size=1, max_size=40, unique=True))
    daily = _daily([str((_START + pd.Timedelta(days=d)).date()) for d in sorted(offsets)])
    lag_days = draw(st.integers(0, 60))
    return daily, monthly, lag_days


@settings(max_examples=60, deadline=None)
@given(scenario=_scenario(), perturb=st.floats(1.0, 1e3))
def test_values_never_appear_before_publication(
    scenario: tuple[pd.DataFrame, pd.DataFrame, int], perturb: float
) -> None:
    daily, monthly, lag_days = scenario
    lag = pd.Timedelta(days=lag_days)
    out = join_asof(daily, monthly, publication_lag=lag)
    # Brute-force oracle: period by period, the latest one published on or before t.
    for t, shown in out["x"].items():
        published = [
            value
            for start, value in monthly["x"].items()
            if pd.Period(start, "M").end_time.normalize() + lag <= t
        ]
        if published:
            assert shown == published[-1]
        else:
            assert np.isnan(shown)
    # Perturbing every month not yet published at t leaves the rows up to t unchanged.
    for t in daily.index:
        unpublished = monthly.index.to_period("M").end_time.normalize() + lag > t
        changed = monthly.copy()
        changed.loc[unpublished, "x"] += perturb
        again = join_asof(daily, changed, publication_lag=lag)
        pd.testing.assert_series_equal(again.loc[:t, "x"], out.loc[:t, "x"])
