import numpy as np
import pandas as pd
import pytest

from bayes_moe.data import DataError, validate_frame


def _frame(n: int = 10) -> pd.DataFrame:
    index = pd.bdate_range("2020-01-01", periods=n, name="date")
    rng = np.random.default_rng(0)
    return pd.DataFrame({"ret": rng.normal(size=n), "vol": rng.uniform(1, 2, size=n)}, index=index)


def test_valid_frame_passes() -> None:
    validate_frame(_frame(), columns=["ret", "vol"], min_length=10)


def test_index_must_be_datetime() -> None:
    frame = _frame().reset_index()
    with pytest.raises(DataError, match=r"DatetimeIndex.*got RangeIndex"):
        validate_frame(frame, columns=["ret"], min_length=1)


def test_index_must_be_tz_naive() -> None:
    frame = _frame().tz_localize("UTC")
    with pytest.raises(DataError, match=r"tz-naive.*UTC"):
        validate_frame(frame, columns=["ret"], min_length=1)


def test_missing_date_in_index() -> None:
    frame = _frame()
    frame.index = pd.DatetimeIndex([frame.index[0], pd.NaT, *frame.index[2:]], name="date")
    with pytest.raises(DataError, match=r"missing date \(NaT\) at row 1"):
        validate_frame(frame, columns=["ret"], min_length=1)


def test_duplicate_dates_name_the_first_duplicate() -> None:
    frame = _frame()
    dates = list(frame.index)
    dates[4] = dates[3]  # 2020-01-06 twice
    dates[7] = dates[6]  # 2020-01-09 twice
    frame.index = pd.DatetimeIndex(dates, name="date")
    with pytest.raises(DataError, match=r"duplicate dates.*2020-01-06 .*2 repeated"):
        validate_frame(frame, columns=["ret"], min_length=1)


def test_unsorted_dates_name_the_first_out_of_order_date_and_its_predecessor() -> None:
    frame = _frame()
    dates = list(frame.index)
    dates[5], dates[6] = dates[6], dates[5]
    frame.index = pd.DatetimeIndex(dates, name="date")
    with pytest.raises(
        DataError, match=r"not sorted ascending: 2020-01-08 \(row 6\) comes after 2020-01-09"
    ):
        validate_frame(frame, columns=["ret"], min_length=1)


def test_duplicates_are_reported_before_unsorted_dates() -> None:
    frame = _frame(4)
    frame.index = pd.DatetimeIndex(["2020-01-03", "2020-01-02", "2020-01-02", "2020-01-06"])
    with pytest.raises(DataError, match="duplicate"):
        validate_frame(frame, columns=["ret"], min_length=1)


def test_missing_columns_are_named_with_the_available_ones() -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) \['vix', 'wti'\].*\['ret', 'vol'\]"):
        validate_frame(_frame(), columns=["ret", "vix", "wti"], min_length=1)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (["a"] * 10, "(object|str)"),
        ([True, False] * 5, "bool"),
        (list(pd.date_range("2020-01-01", periods=10)), r"datetime64\[\w+\]"),
    ],
)
def test_non_numeric_column_is_named_with_its_dtype(values: list, dtype: str) -> None:
    frame = _frame().assign(name=values)
    with pytest.raises(DataError, match=rf"non-numeric column\(s\): 'name' \({dtype}\)"):
        validate_frame(frame, columns=["ret", "name"], min_length=1)


def test_non_numeric_columns_that_are_not_read_are_fine() -> None:
    validate_frame(_frame().assign(ticker="SPX"), columns=["ret"], min_length=1)


def test_integer_columns_are_numeric() -> None:
    validate_frame(_frame().assign(volume=np.arange(10)), columns=["volume"], min_length=1)


def test_nan_is_counted_and_first_date_named() -> None:
    frame = _frame()
    frame.iloc[[3, 8], 1] = np.nan
    with pytest.raises(
        DataError, match=r"column 'vol' has 2 NaN and 0 inf value\(s\), the first on 2020-01-06"
    ):
        validate_frame(frame, columns=["ret", "vol"], min_length=1)


def test_inf_is_reported() -> None:
    frame = _frame()
    frame.iloc[2, 0] = -np.inf
    with pytest.raises(
        DataError, match=r"'ret' has 0 NaN and 1 inf value\(s\), the first on 2020-01-03"
    ):
        validate_frame(frame, columns=["ret"], min_length=1)


def test_nan_in_unread_column_is_fine() -> None:
    frame = _frame()
    frame.iloc[3, 1] = np.nan
    validate_frame(frame, columns=["ret"], min_length=1)


def test_constant_column_is_named() -> None:
    frame = _frame().assign(flat=2.5)
    with pytest.raises(DataError, match=r"column 'flat' is constant .*2\.5"):
        validate_frame(frame, columns=["ret", "flat"], min_length=1)


def test_too_short_states_both_numbers() -> None:
    with pytest.raises(DataError, match=r"has 10 rows but at least 30 are needed.*window"):
        validate_frame(_frame(), columns=["ret"], min_length=30)


def test_length_is_checked_after_content() -> None:
    frame = _frame()
    frame.iloc[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        validate_frame(frame, columns=["ret"], min_length=30)


def test_a_single_column_name_as_a_string_is_one_column() -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) \['close'\]"):
        validate_frame(_frame(), columns="close", min_length=1)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)
