"""Macro features on a daily frame: hand computations, publication lags, stopped series.

Oracles: the bundled monthly and daily sources read directly (``bm.data.load_macro``,
``bm.data.load_wti``, ``load_us_macro_quarterly``) and the closed forms of the module
docstring, on dates whose latest published month is worked out by hand in comments.
"""

import numpy as np
import pandas as pd
import pytest

import bayes_moe as bm
from bayes_moe.data import DataError, add_macro_features
from bayes_moe.data.macro_features import MACRO_FEATURES, QUARTERLY_FEATURES


@pytest.fixture(scope="module")
def sources():
    """The bundled monthly macro frame and WTI prices (arch.data)."""
    return bm.data.load_macro(), bm.data.load_wti()


@pytest.fixture(scope="module")
def features(sp500):
    """S&P 500 1999-2018 with the monthly, daily and quarterly macro features."""
    return add_macro_features(sp500, quarterly=True)


def _month(macro, column, month):
    return float(macro.loc[pd.Timestamp(month), column])


def test_core_cpi_yoy_is_the_latest_published_month_year_on_year(features, sources):
    # Core CPI of month m is known from the end of m + 15 days. 2008-06-13 (Fri): May
    # is due 06-15, so April is the latest; 2008-06-16 (Mon): May.
    macro, _ = sources
    cases = {
        "2008-06-13": ("2008-04-01", "2007-04-01"),
        "2008-06-16": ("2008-05-01", "2007-05-01"),
        "2015-01-15": ("2014-12-01", "2013-12-01"),  # Dec 31 + 15 days = Jan 15
        "2015-01-14": ("2014-11-01", "2013-11-01"),
    }
    for day, (month, year_ago) in cases.items():
        expected = 100.0 * (
            _month(macro, "core_cpi", month) / _month(macro, "core_cpi", year_ago) - 1.0
        )
        assert features.loc[day, "core_cpi_yoy"] == pytest.approx(expected, rel=1e-12), day
    assert features.loc["2008-06-13", "core_cpi_yoy"] != features.loc["2008-06-16", "core_cpi_yoy"]


def test_credit_spread_is_baa_minus_aaa_one_business_day_after_the_month(features, sources):
    # 2008-09-30 (Tue) is the last day of September: August is the latest month; the
    # September average is known on 2008-10-01, one business day later.
    macro, _ = sources
    for day, month in {"2008-09-30": "2008-08-01", "2008-10-01": "2008-09-01"}.items():
        expected = _month(macro, "baa", month) - _month(macro, "aaa", month)
        assert features.loc[day, "credit_spread"] == pytest.approx(expected, abs=1e-12), day


def test_wti_return_is_the_same_day_log_return_and_missing_where_wti_is(features, sources):
    _, wti = sources
    prices = wti["wti"]
    for day in ["2008-07-11", "2008-07-14", "2015-06-01"]:
        t = prices.index.get_loc(pd.Timestamp(day))
        expected = 100.0 * np.log(prices.iloc[t] / prices.iloc[t - 1])
        assert features.loc[day, "wti_ret"] == pytest.approx(expected, rel=1e-12), day
    # Trading days of the S&P 500 without a WTI price: NaN, not a zero or a stale return.
    missing = features.index.difference(prices.index)
    assert len(missing) > 5
    assert features.loc[missing, "wti_ret"].isna().all()
    assert features["wti_ret"].notna().sum() == len(features) - len(missing)


def test_quarterly_values_follow_their_lags_and_stop_with_the_source(features):
    quarterly = bm.data.load_us_macro_quarterly()
    gdp = quarterly["realgdp"]
    # 2008Q4 ends 12-31; GDP is due 30 days later (2009-01-30), the rest on their lags.
    expected = 400.0 * np.log(gdp["2008-10-01"] / gdp["2008-07-01"])
    assert features.loc["2009-01-30", "gdp_growth"] == pytest.approx(expected, rel=1e-12)
    previous = 400.0 * np.log(gdp["2008-07-01"] / gdp["2008-04-01"])
    assert features.loc["2009-01-29", "gdp_growth"] == pytest.approx(previous, rel=1e-12)
    assert features.loc["2009-01-15", "infl"] == quarterly.loc["2008-10-01", "infl"]
    assert features.loc["2009-01-14", "infl"] == quarterly.loc["2008-07-01", "infl"]
    # macrodata ends in 2009Q3: 2009Q4's GDP was due on 2010-01-30, a Saturday.
    assert np.isfinite(features.loc["2010-01-29", "gdp_growth"])
    assert features.loc["2010-02-01":, "gdp_growth"].isna().all()
    assert features.loc["2010-02-01":, list(QUARTERLY_FEATURES)].isna().all().all()
    # The monthly series end in 2018-11: still current on the last day of 2018.
    assert features[["core_cpi_yoy", "credit_spread"]].notna().all().all()


def test_a_stopped_monthly_series_is_missing_once_its_next_month_is_due(sp500, sources):
    macro, wti = sources
    out = add_macro_features(sp500, macro=macro.loc[:"2008-06-01"], wti=wti)
    # June 2008 is the last month: July's CPI was due 2008-08-15, its yields 2008-08-01.
    assert np.isfinite(out.loc["2008-08-14", "core_cpi_yoy"])
    assert out.loc["2008-08-15":, "core_cpi_yoy"].isna().all()
    assert np.isfinite(out.loc["2008-07-31", "credit_spread"])
    assert out.loc["2008-08-01":, "credit_spread"].isna().all()


@pytest.mark.parametrize(
    ("column", "due"),
    [("core_cpi", "2007-07-16"), ("credit_spread", "2007-07-02")],
    ids=["core_cpi", "credit_spread"],
)
def test_perturbing_a_month_changes_nothing_before_its_publication(sp500, sources, column, due):
    # June 2007 perturbed. CPI: June 30 + 15 days = Sunday July 15, first seen on the 16th;
    # the spread: one business day after Saturday June 30, Monday July 2.
    macro, wti = sources
    moved = macro.copy()
    moved.loc["2007-06-01", column] += 3.0
    frame = sp500.loc["2006-01-01":"2009-12-31"]
    before = add_macro_features(frame, macro=macro, wti=wti)
    after = add_macro_features(frame, macro=moved, wti=wti)
    feature = "core_cpi_yoy" if column == "core_cpi" else "credit_spread"
    earlier = before.index < pd.Timestamp(due)
    pd.testing.assert_frame_equal(after.loc[earlier], before.loc[earlier])
    assert after.loc[due, feature] != before.loc[due, feature]
    changed = after.index[(after[feature] != before[feature]).to_numpy()]
    assert changed.min() == pd.Timestamp(due)


def test_features_are_all_added_with_the_frame_unchanged(sp500):
    frame = sp500.loc["2010-01-01":"2010-03-31"]
    copy = frame.copy()
    out = add_macro_features(frame)
    pd.testing.assert_frame_equal(frame, copy)
    assert list(out.columns) == list(frame.columns) + list(MACRO_FEATURES)
    assert (out.dtypes == np.float64).all()


def test_bad_input_is_refused_naming_the_problem(sp500, sources):
    macro, wti = sources
    frame = sp500.loc["2010-01-01":"2010-03-31"]
    with pytest.raises(DataError, match=r"already has the macro column\(s\) \['wti_ret'\]"):
        add_macro_features(frame.assign(wti_ret=0.0))
    with pytest.raises(DataError, match=r"publication_lag names \['wti_ret'\]"):
        add_macro_features(frame, publication_lag={"wti_ret": pd.Timedelta(days=1)})
    with pytest.raises(DataError, match=r"monthly macro frame lacks column\(s\) \['core_cpi'\]"):
        add_macro_features(frame, macro=macro.drop(columns="core_cpi"))
    with pytest.raises(DataError, match=r"WTI frame lacks column\(s\) \['wti'\]"):
        add_macro_features(frame, wti=wti.rename(columns={"wti": "price"}))
    with pytest.raises(DataError, match="sorted"):
        add_macro_features(frame.iloc[::-1])


def test_a_longer_lag_delays_the_value(sp500):
    frame = sp500.loc["2008-05-01":"2008-08-29"]
    late = add_macro_features(frame, publication_lag={"core_cpi_yoy": pd.Timedelta(days=45)})
    usual = add_macro_features(frame)
    # May 2008 is seen from June 16 with the usual lag, from July 15 with 45 days.
    assert late.loc["2008-07-14", "core_cpi_yoy"] == usual.loc["2008-06-13", "core_cpi_yoy"]
    assert late.loc["2008-07-15", "core_cpi_yoy"] == usual.loc["2008-06-16", "core_cpi_yoy"]


def test_the_cli_flag_adds_the_features_to_a_dataset_or_a_file(sp500, tmp_path):
    # `--with-macro` of bayes_moe.cli (its home would be tests/test_cli.py) puts the
    # columns of add_macro_features on the loaded frame, for --dataset and --data alike.
    from bayes_moe import cli

    parser = cli.build_parser()
    path = tmp_path / "prices.csv"
    sp500.loc["2010-01-01":"2010-06-30", ["adj_close"]].reset_index().to_csv(path, index=False)
    user_file = ["fit", "--data", str(path), "--price-col", "adj_close", "--out", "x"]
    plain = cli._load_frame(parser.parse_args(user_file))
    assert not set(MACRO_FEATURES) & set(plain.columns)
    with_macro = cli._load_frame(parser.parse_args([*user_file, "--with-macro"]))
    pd.testing.assert_frame_equal(with_macro, add_macro_features(plain))
    dataset = parser.parse_args(["fit", "--dataset", "sp500", "--with-macro", "--out", "x"])
    pd.testing.assert_frame_equal(cli._load_frame(dataset), add_macro_features(sp500))
