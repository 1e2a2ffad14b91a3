import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayes_moe as bm
from bayes_moe.data import DataError, add_range_features, log_returns, read_frame
from bayes_moe.data.continuation import restore_warmup


def _prices(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    return pd.DataFrame(
        {
            "Date": pd.bdate_range("2022-03-01", periods=n).strftime("%Y-%m-%d"),
            "Open": open_,
            "High": np.maximum(open_, close) * 1.004,
            "Low": np.minimum(open_, close) * 0.996,
            "Close": close,
            "Volume": rng.integers(1_000, 2_000, n),
            "ticker": "XYZ",
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def test_csv_with_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("date,px,note\n2022-01-03,100,a\n2022-01-04,110,b\n2022-01-05,99,c\n")
    frame = read_frame(path, price_col="px")
    assert frame.index.name == "date"
    assert list(frame.index) == [pd.Timestamp("2022-01-04"), pd.Timestamp("2022-01-05")]
    assert list(frame.columns) == ["px", "note", "ret"]
    np.testing.assert_allclose(frame["ret"], [100 * math.log(1.1), 100 * math.log(0.9)])
    assert frame["px"].dtype == np.float64  # integers in the file become float64
    assert frame["note"].tolist() == ["b", "c"]  # non-numeric columns are kept


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_with_returns(tmp_path: Path, suffix: str) -> None:
    source = pd.DataFrame(
        {"day": pd.to_datetime(["2022-01-03", "2022-01-04"]), "r": [0.5, -0.25], "n": [1, 2]}
    )
    frame = read_frame(_write(source, tmp_path / f"r{suffix}"), date_col="day", return_col="r")
    assert list(frame.columns) == ["ret", "n"]
    assert frame["ret"].tolist() == [0.5, -0.25]
    assert frame["n"].dtype == np.float64
    assert frame.index.equals(pd.DatetimeIndex(["2022-01-03", "2022-01-04"], name="date"))


def test_parquet_written_with_its_date_index(tmp_path: Path) -> None:
    source = pd.DataFrame(
        {"ret": [0.1, 0.2]}, index=pd.DatetimeIndex(["2022-01-03", "2022-01-04"], name="date")
    )
    source.to_parquet(tmp_path / "f.parquet")
    frame = read_frame(tmp_path / "f.parquet")
    assert frame["ret"].tolist() == [0.1, 0.2]
    assert frame.index.equals(source.index)


def test_existing_ret_column_needs_no_argument(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("date,ret\n2022-01-03,0.1\n2022-01-04,-0.2\n")
    assert read_frame(path)["ret"].tolist() == [0.1, -0.2]


def test_integer_yyyymmdd_dates_and_tz_aware_dates(tmp_path: Path) -> None:
    path = tmp_path / "i.csv"
    path.write_text("date,ret\n20220103,0.1\n20220104,0.2\n")
    assert read_frame(path).index[1] == pd.Timestamp("2022-01-04")
    path.write_text("date,ret\n2022-01-03T16:00:00-05:00,0.1\n2022-01-04T16:00:00-05:00,0.2\n")
    index = read_frame(path).index
    assert index.tz is None and index[0] == pd.Timestamp("2022-01-03 16:00")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ohlc_adds_range_features_and_drops_warm_up(tmp_path: Path, suffix: str) -> None:
    source = _prices()
    before = sorted(tmp_path.iterdir())
    path = _write(source, tmp_path / f"ohlc{suffix}")
    frame = read_frame(
        path,
        date_col="Date",
        price_col="Close",
        open_col="Open",
        high_col="High",
        low_col="Low",
        close_col="Close",
    )
    assert sorted(tmp_path.iterdir()) == sorted([*before, path])  # nothing else written
    # Independent construction from the source frame.
    ohlc = {"Open": "open", "High": "high", "Low": "low", "Close": "close"}
    expected = source.drop(columns="Date").rename(columns=ohlc).astype({"Volume": float})
    expected.index = pd.DatetimeIndex(pd.to_datetime(source["Date"]), name="date")
    expected["ret"] = log_returns(expected["close"])
    expected = add_range_features(expected).iloc[22:]  # first complete rv_22: 22nd return
    assert frame.index[0] == pd.bdate_range("2022-03-01", periods=23)[-1]
    assert set(frame.columns) == set(expected.columns)
    pd.testing.assert_frame_equal(frame[expected.columns], expected)
    assert not frame.drop(columns="ticker").isna().any().any()


def test_high_and_low_only(tmp_path: Path) -> None:
    path = _write(_prices(), tmp_path / "hl.csv")
    frame = read_frame(path, date_col="Date", price_col="Close", high_col="High", low_col="Low")
    assert {"var_parkinson", "rv_5", "rv_22"} <= set(frame.columns)
    assert "var_garman_klass" not in frame.columns and "atr_14" not in frame.columns


# --- errors ------------------------------------------------------------------------------


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"unknown extension '\.xlsx'"):
        read_frame(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_frame(tmp_path / "absent.csv")


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("date,ret\n2022-01-03,0.1\n")
    with pytest.raises(DataError, match=r"cannot read 'fake\.parquet' as parquet"):
        read_frame(path)


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"cannot read 'empty\.csv' as csv"):
        read_frame(path)
    path.write_text("date,ret\n")
    with pytest.raises(DataError, match="no data rows"):
        read_frame(path)


def test_missing_date_column_lists_the_columns(tmp_path: Path) -> None:
    path = _write(_prices(), tmp_path / "p.csv")
    with pytest.raises(DataError, match=r"no date column 'date'.*\['Date', 'Open',"):
        read_frame(path, price_col="Close")


def test_unparseable_date_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("date,ret\n2022-01-03,0.1\n2022-13-45,0.2\n2022-01-05,0.3\n")
    with pytest.raises(DataError, match=r"cannot parse '2022-13-45' \(row 1\) of column 'date'"):
        read_frame(path)


def test_missing_date_value(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("date,ret\n2022-01-03,0.1\n,0.2\n")
    with pytest.raises(DataError, match=r"cannot parse nan \(row 1\)"):
        read_frame(path)


def test_unsorted_dates_are_an_error_not_sorted_silently(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("date,ret\n2022-01-03,0.1\n2022-01-05,0.2\n2022-01-04,0.3\n")
    with pytest.raises(
        DataError, match=r"not sorted ascending: 2022-01-04 \(row 2\) comes after 2022-01-05"
    ):
        read_frame(path)


def test_duplicate_dates(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("date,ret\n2022-01-03,0.1\n2022-01-04,0.2\n2022-01-04,0.3\n")
    with pytest.raises(DataError, match=r"duplicate dates.*2022-01-04"):
        read_frame(path)


def test_price_and_return_columns_together(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("date,px,r\n2022-01-03,1,0.1\n2022-01-04,2,0.2\n")
    with pytest.raises(DataError, match=r"price_col \('px'\) or return_col \('r'\), not both"):
        read_frame(path, price_col="px", return_col="r")


def test_no_return_information(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("date,px\n2022-01-03,1\n2022-01-04,2\n")
    with pytest.raises(DataError, match=r"no 'ret' column; pass price_col=.*\['px'\]"):
        read_frame(path)


def test_ret_column_besides_the_price(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("date,px,ret\n2022-01-03,1,0.1\n2022-01-04,2,0.2\n")
    with pytest.raises(DataError, match=r"already has a 'ret' column besides 'px'"):
        read_frame(path, price_col="px")


def test_missing_price_column(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("date,px\n2022-01-03,1\n2022-01-04,2\n")
    with pytest.raises(DataError, match=r"no column 'close'; the file has columns \['px'\]"):
        read_frame(path, price_col="close")


def test_non_numeric_return_column(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("date,r\n2022-01-03,up\n2022-01-04,down\n")
    with pytest.raises(DataError, match=r"column 'r' must be numeric, got dtype"):
        read_frame(path, return_col="r")


def test_non_positive_price_names_the_date(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("date,px\n2022-01-03,1\n2022-01-04,0\n2022-01-05,2\n")
    with pytest.raises(DataError, match=r"positive in column 'px': 0\.0 on 2022-01-04"):
        read_frame(path, price_col="px")


def test_high_without_low(tmp_path: Path) -> None:
    path = _write(_prices(), tmp_path / "p.csv")
    with pytest.raises(DataError, match=r"high_col and low_col go together.*'High'"):
        read_frame(path, date_col="Date", price_col="Close", high_col="High")


def test_renaming_onto_an_existing_column(tmp_path: Path) -> None:
    frame = _prices().assign(high=1.0)
    path = _write(frame, tmp_path / "p.csv")
    with pytest.raises(DataError, match=r"cannot rename 'High' to 'high'"):
        read_frame(path, date_col="Date", price_col="Close", high_col="High", low_col="Low")


def test_high_below_low_in_the_file(tmp_path: Path) -> None:
    frame = _prices()
    frame.loc[5, "High"] = frame.loc[5, "Low"] / 2
    path = _write(frame, tmp_path / "p.csv")
    with pytest.raises(DataError, match=f"high is below low on {frame.loc[5, 'Date']}"):
        read_frame(path, date_col="Date", price_col="Close", high_col="High", low_col="Low")


def test_too_short_for_the_features(tmp_path: Path) -> None:
    """Ten rows are all warm-up of ``rv_22``: an empty frame that remembers them (for
    ``update``), which a model refuses to fit on, saying where the rows went."""
    path = _write(_prices(10), tmp_path / "p.csv")
    frame = read_frame(path, date_col="Date", price_col="Close", high_col="High", low_col="Low")
    assert len(frame) == 0 and "rv_22" in frame.columns
    assert len(restore_warmup(frame)) == 10
    model = bm.BayesianMoE(experts=["ar"], n_regimes=1, window=4)
    with pytest.raises(DataError, match=r"has 0 rows .* dropped the first 10 row\(s\)"):
        model.prepare(frame)
