import sys
import types

import numpy as np
import pandas as pd
import pytest

import bayes_moe.data as bm_data
from bayes_moe.data import (
    SP500_STOCK_SECTORS,
    DataError,
    load_sp500_stocks,
    panel_frame,
    validate_panel,
)

NEEDS_PANEL_EXTRA = "needs the panel extra: pip install 'bayes-moe[panel]'"
TICKERS = [
    "AAPL",
    "AMD",
    "BAC",
    "BBY",
    "CVX",
    "GE",
    "HD",
    "JNJ",
    "JPM",
    "KO",
    "LLY",
    "MRK",
    "MSFT",
    "PEP",
    "PFE",
    "PG",
    "RRC",
    "UNH",
    "WMT",
    "XOM",
]


def _wide(data: dict[str, list[float]], dates: list[str]) -> pd.DataFrame:
    """The expected canonical panel, built by hand."""
    frame = pd.DataFrame(data, index=pd.DatetimeIndex(pd.to_datetime(dates), name="date"))
    frame.columns = pd.Index(list(data), name="asset")
    return frame.astype(np.float64)


def _long() -> pd.DataFrame:
    """Three assets with ragged histories, rows unsorted, one gap for B."""
    return pd.DataFrame(
        {
            "date": [
                "2020-01-03",
                "2020-01-02",
                "2020-01-06",
                "2020-01-02",
                "2020-01-06",
                "2020-01-07",
                "2020-01-07",
            ],
            "ticker": ["B", "B", "B", "A", "A", "A", "C"],
            "px": [2.5, 2.0, 2.6, 1.0, 1.1, 1.2, 9.0],
            "note": ["x"] * 7,  # a non-numeric extra column is ignored
        }
    )


# ------------------------------------------------------------------------ long input


def test_long_frame_pivots_to_the_hand_built_wide_panel() -> None:
    wide = panel_frame(_long(), asset_col="ticker", value_col="px", date_col="date")
    expected = _wide(
        {
            "A": [1.0, np.nan, 1.1, 1.2],
            "B": [2.0, 2.5, 2.6, np.nan],
            "C": [np.nan, np.nan, np.nan, 9.0],
        },
        ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"],
    )
    pd.testing.assert_frame_equal(wide, expected)
    assert wide.index.name == "date" and wide.columns.name == "asset"
    assert wide.index.is_monotonic_increasing and wide.index.is_unique


def test_long_frame_value_column_inferred_and_dates_from_the_index() -> None:
    long = _long().drop(columns=["note"]).set_index("date")
    wide = panel_frame(long, asset_col="ticker")  # "px", the only column besides
    assert list(wide.columns) == ["A", "B", "C"]
    assert wide.loc["2020-01-03", "B"] == 2.5
    assert np.isnan(wide.loc["2020-01-03", "A"])


def test_long_frame_keeps_a_date_whose_only_value_is_nan_and_never_fills() -> None:
    long = pd.DataFrame(
        {
            "date": ["2021-03-01", "2021-03-02", "2021-03-03", "2021-03-01"],
            "asset": ["X", "X", "X", "Y"],
            "ret": [0.5, np.nan, -0.2, 1.0],
        }
    )
    wide = panel_frame(long, asset_col="asset", date_col="date")
    expected = _wide(
        {"X": [0.5, np.nan, -0.2], "Y": [1.0, np.nan, np.nan]},
        ["2021-03-01", "2021-03-02", "2021-03-03"],
    )
    pd.testing.assert_frame_equal(wide, expected)


def test_long_frame_asset_names_become_strings() -> None:
    long = pd.DataFrame({"date": ["2020-01-02", "2020-01-03"], "id": [7, 7], "v": [1.0, 2.0]})
    wide = panel_frame(long, asset_col="id", date_col="date")
    assert list(wide.columns) == ["7"]


def test_long_frame_numbers_as_text_are_converted() -> None:
    long = pd.DataFrame({"date": ["2020-01-02", "2020-01-03"], "a": ["A", "A"], "v": ["1.5", None]})
    wide = panel_frame(long, asset_col="a", date_col="date")
    assert wide["A"].dtype == np.float64
    assert wide["A"].iloc[0] == 1.5 and np.isnan(wide["A"].iloc[1])


# ------------------------------------------------------------------------ wide input


def test_wide_frame_with_ragged_histories_keeps_every_date_and_nan() -> None:
    dates = ["2019-12-31", "2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
    raw = pd.DataFrame(
        {
            "late": [np.nan, np.nan, 3.0, 4.0, 5.0],  # listed on 2020-01-03
            "gone": [1.0, 2.0, np.nan, np.nan, np.nan],  # delisted after 2020-01-02
            "gap": [1.0, np.nan, 2.0, np.nan, 3.0],
        },
        index=pd.to_datetime(dates),
    )
    shuffled = raw.iloc[[3, 0, 4, 2, 1]]
    wide = panel_frame(shuffled)
    pd.testing.assert_frame_equal(wide, _wide(raw.to_dict("list"), dates))
    assert wide.isna().to_numpy().sum() == 7


def test_wide_frame_with_a_date_column_and_integer_values() -> None:
    raw = pd.DataFrame({"day": [20200103, 20200102], 1: [5, 6], "B": [1.5, np.nan]})
    wide = panel_frame(raw, date_col="day")
    expected = _wide({"1": [6.0, 5.0], "B": [np.nan, 1.5]}, ["2020-01-02", "2020-01-03"])
    pd.testing.assert_frame_equal(wide, expected)


def test_wide_frame_tz_aware_dates_keep_their_local_date() -> None:
    index = pd.DatetimeIndex(["2020-01-02", "2020-01-03"]).tz_localize("US/Eastern")
    wide = panel_frame(pd.DataFrame({"A": [1.0, 2.0]}, index=index))
    assert wide.index.tz is None
    assert list(wide.index) == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")]


# ------------------------------------------------------------------------- bad input


def test_duplicate_asset_date_pairs_are_named_with_their_count() -> None:
    long = pd.concat([_long(), _long().iloc[[0, 3, 3]]])
    with pytest.raises(
        DataError,
        match=r"\('B', 2020-01-03\), \('A', 2020-01-02\); 3 repeated row\(s\) in all, 2 pair",
    ):
        panel_frame(long, asset_col="ticker", value_col="px", date_col="date")


def test_duplicate_dates_in_a_wide_frame_name_the_date_and_assets() -> None:
    raw = pd.DataFrame(
        {"A": [1.0, 2.0, 3.0], "B": [np.nan, np.nan, 4.0]},
        index=pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-02"]),
    )
    with pytest.raises(DataError, match=r"2020-01-02 appears on rows \[0, 2\].*'A', 'B'"):
        panel_frame(raw)


def test_unparseable_date_names_the_row_and_asset() -> None:
    long = _long()
    long.loc[4, "date"] = "2020-13-45"
    with pytest.raises(DataError, match=r"'2020-13-45' \(row 4, asset 'A'\) of column 'date'"):
        panel_frame(long, asset_col="ticker", value_col="px", date_col="date")


def test_missing_date_in_a_wide_index_names_the_row() -> None:
    raw = pd.DataFrame({"A": [1.0, 2.0]}, index=["2020-01-02", None])
    with pytest.raises(DataError, match=r"row 1\) of the index"):
        panel_frame(raw)


@pytest.mark.parametrize("bad", ["n/a", "abc"])
def test_non_numeric_value_in_a_long_frame_names_asset_date_and_count(bad: str) -> None:
    long = _long()
    long["px"] = long["px"].astype(object)
    long.loc[1, "px"] = bad  # B on 2020-01-02
    long.loc[5, "px"] = "?"  # A on 2020-01-07
    with pytest.raises(
        DataError,
        match=rf"non-numeric value '{bad}' for asset 'B' on 2020-01-02; 2 non-numeric",
    ):
        panel_frame(long, asset_col="ticker", value_col="px", date_col="date")


def test_non_numeric_value_in_a_wide_frame_names_asset_date_and_count() -> None:
    raw = pd.DataFrame(
        {"A": [1.0, 2.0, "abc"], "B": [1.0, "n/a", 3.0]},
        index=pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"]),
    )
    with pytest.raises(
        DataError, match=r"'n/a' for asset 'B' on 2020-01-03; 2 non-numeric value\(s\)"
    ):
        panel_frame(raw)


def test_boolean_values_are_not_numbers() -> None:
    raw = pd.DataFrame({"A": [True, False]}, index=pd.to_datetime(["2020-01-02", "2020-01-03"]))
    with pytest.raises(DataError, match=r"non-numeric value True for asset 'A' on 2020-01-02"):
        panel_frame(raw)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_value_names_asset_and_date(value: float) -> None:
    long = _long()
    long.loc[2, "px"] = value  # B on 2020-01-06
    with pytest.raises(DataError, match=rf"infinite value {value!r} for asset 'B' on 2020-01-06"):
        panel_frame(long, asset_col="ticker", value_col="px", date_col="date")


def test_asset_with_fewer_than_min_rows_values_is_named_with_its_count() -> None:
    with pytest.raises(
        DataError,
        match=r"asset 'C' has 1 value\(s\) \(from 2020-01-07 to 2020-01-07\) but min_rows=2",
    ):
        panel_frame(_long(), asset_col="ticker", value_col="px", date_col="date", min_rows=2)
    wide = panel_frame(_long(), asset_col="ticker", value_col="px", date_col="date", min_rows=1)
    assert wide["C"].count() == 1


def test_min_rows_names_every_short_asset() -> None:
    with pytest.raises(
        DataError, match=r"asset 'A' has 3 value\(s\).*also too short: 'B' \(3\), 'C' \(1\)"
    ):
        panel_frame(_long(), asset_col="ticker", value_col="px", date_col="date", min_rows=4)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"date": [], "ticker": [], "px": []}),
        pd.DataFrame({"date": ["2020-01-02"], "ticker": ["A"], "px": [np.nan]}),
    ],
)
def test_empty_panel(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="the panel is empty"):
        panel_frame(frame, asset_col="ticker", value_col="px", date_col="date", min_rows=0)


def test_wide_frame_without_assets_is_empty() -> None:
    raw = pd.DataFrame(index=pd.to_datetime(["2020-01-02"]))
    with pytest.raises(DataError, match=r"empty: 1 date\(s\) and 0 asset\(s\)"):
        panel_frame(raw)


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        (
            {"asset_col": "sym", "value_col": "px", "date_col": "date"},
            "'sym' \\(given as asset_col",
        ),
        ({"asset_col": "ticker", "value_col": "close", "date_col": "date"}, "'close'"),
        ({"asset_col": "ticker", "value_col": "px", "date_col": "day"}, "'day'"),
    ],
)
def test_missing_column_is_named_with_the_columns(kwargs: dict[str, str], missing: str) -> None:
    with pytest.raises(
        DataError, match=rf"no column {missing}.*\['date', 'ticker', 'px', 'note'\]"
    ):
        panel_frame(_long(), **kwargs)


def test_several_candidate_value_columns_are_listed() -> None:
    long = _long().assign(volume=1.0)
    with pytest.raises(DataError, match=r"several candidate value columns \['px', 'volume'\]"):
        panel_frame(long, asset_col="ticker", date_col="date")


def test_asset_names_that_read_alike_are_refused() -> None:
    long = pd.DataFrame({"date": ["2020-01-02", "2020-01-03"], "a": [1, "1"], "v": [1.0, 2.0]})
    with pytest.raises(DataError, match="would all be named '1'"):
        panel_frame(long, asset_col="a", date_col="date")


# ------------------------------------------------------------------- validate_panel


def test_validate_panel_accepts_the_canonical_panel_and_refuses_bad_ones() -> None:
    good = _wide({"A": [1.0, np.nan], "B": [np.nan, 2.0]}, ["2020-01-02", "2020-01-03"])
    validate_panel(good, min_rows=1)
    with pytest.raises(DataError, match="not sorted"):
        validate_panel(good.iloc[::-1], min_rows=1)
    with pytest.raises(DataError, match=r"infinite value inf for asset 'B' on 2020-01-03"):
        validate_panel(good.replace(2.0, np.inf), min_rows=1)
    with pytest.raises(DataError, match=r"asset 'A' has 1 value\(s\).*min_rows=2"):
        validate_panel(good, min_rows=2)
    as_text = good.astype({"B": object})
    as_text.iloc[1, 1] = "2.0"
    with pytest.raises(DataError, match=r"asset 'B' has dtype object"):
        validate_panel(as_text, min_rows=1)
    as_text.iloc[1, 1] = "abc"
    with pytest.raises(DataError, match=r"'abc' for asset 'B' on 2020-01-03"):
        validate_panel(as_text, min_rows=1)


def test_panel_api_is_exported() -> None:
    for name in ("panel_frame", "validate_panel", "load_sp500_stocks", "SP500_STOCK_SECTORS"):
        assert name in bm_data.__all__


# ------------------------------------------------------------------ S&P 500 stocks


def test_sectors_cover_the_twenty_tickers() -> None:
    assert sorted(SP500_STOCK_SECTORS) == TICKERS
    assert SP500_STOCK_SECTORS["MSFT"] == "Information Technology"
    assert SP500_STOCK_SECTORS["JPM"] == "Financials"
    assert SP500_STOCK_SECTORS["RRC"] == "Energy"
    assert SP500_STOCK_SECTORS["GE"] == "Industrials"
    assert SP500_STOCK_SECTORS["UNH"] == "Health Care"
    assert SP500_STOCK_SECTORS["WMT"] == "Consumer Staples"
    assert SP500_STOCK_SECTORS["HD"] == "Consumer Discretionary"


@pytest.fixture(scope="module")
def stocks() -> pd.DataFrame:
    pytest.importorskip("skfolio", reason=NEEDS_PANEL_EXTRA)
    return load_sp500_stocks()


def test_sp500_stocks_shape_and_convention(stocks: pd.DataFrame) -> None:
    assert list(stocks.columns) == TICKERS
    assert stocks.index.name == "date" and stocks.columns.name == "asset"
    assert stocks.index.tz is None
    assert stocks.index[0] == pd.Timestamp("1990-01-03")  # 1990-01-02 has no return
    assert stocks.index[-1] == pd.Timestamp("2022-12-28")
    assert (stocks.index.year >= 1990).all() and (stocks.index.year <= 2022).all()
    assert (stocks.dtypes == np.float64).all()
    validate_panel(stocks, min_rows=len(stocks))  # complete in this data set


def test_sp500_stocks_equal_percent_log_returns_of_the_prices(stocks: pd.DataFrame) -> None:
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset()
    assert len(stocks) == len(prices) - 1
    for ticker in ("AAPL", "XOM", "JPM"):
        p = prices[ticker].to_numpy(dtype=float)
        expected = 100.0 * np.diff(np.log(p))
        np.testing.assert_allclose(stocks[ticker].to_numpy(), expected, rtol=1e-12, atol=0)
    for ticker, day in [("AAPL", "2020-03-16"), ("KO", "2008-10-10"), ("GE", "1990-01-03")]:
        at = prices.index.get_loc(pd.Timestamp(day))
        before, now = prices[ticker].iloc[at - 1], prices[ticker].iloc[at]
        assert stocks.loc[day, ticker] == pytest.approx(100.0 * np.log(now / before), rel=1e-12)


def _fake_skfolio(monkeypatch: pytest.MonkeyPatch, prices: pd.DataFrame) -> None:
    package = types.ModuleType("skfolio")
    datasets = types.ModuleType("skfolio.datasets")
    datasets.load_sp500_dataset = lambda: prices  # type: ignore[attr-defined]
    package.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "skfolio", package)
    monkeypatch.setitem(sys.modules, "skfolio.datasets", datasets)


def test_sp500_stocks_returns_are_computed_per_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    dates = pd.DatetimeIndex(
        pd.to_datetime(["2000-01-03", "2000-01-04", "2000-01-05", "2000-01-06", "2000-01-07"]),
        name="Date",
    )
    prices = pd.DataFrame(
        {
            "OLD": [10.0, 11.0, 12.0, 13.0, 14.0],
            "NEW": [np.nan, np.nan, 5.0, 5.5, 6.0],  # listed on 2000-01-05
            "GAP": [20.0, 21.0, np.nan, 22.0, 23.0],
        },
        index=dates,
    )
    _fake_skfolio(monkeypatch, prices)
    returns = load_sp500_stocks()
    log = np.log(prices.to_numpy())
    expected = _wide(
        {
            "OLD": list(100 * np.diff(log[:, 0])),
            "NEW": [np.nan, np.nan, 100 * (log[3, 1] - log[2, 1]), 100 * (log[4, 1] - log[3, 1])],
            "GAP": [100 * (log[1, 2] - log[0, 2]), np.nan, np.nan, 100 * (log[4, 2] - log[3, 2])],
        },
        ["2000-01-04", "2000-01-05", "2000-01-06", "2000-01-07"],
    )
    pd.testing.assert_frame_equal(returns, expected, rtol=1e-12)


def test_sp500_stocks_refuses_a_non_positive_price(monkeypatch: pytest.MonkeyPatch) -> None:
    prices = pd.DataFrame(
        {"A": [1.0, 0.0, 2.0]}, index=pd.to_datetime(["2000-01-03", "2000-01-04", "2000-01-05"])
    )
    _fake_skfolio(monkeypatch, prices)
    with pytest.raises(DataError, match=r"asset 'A' has a non-positive price 0.0 on 2000-01-04"):
        load_sp500_stocks()


def test_sp500_stocks_without_skfolio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skfolio", None)
    monkeypatch.setitem(sys.modules, "skfolio.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'bayes-moe\[panel\]'"):
        load_sp500_stocks()
