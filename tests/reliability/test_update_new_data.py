"""Forecasting from a file of newer prices: features continue the fitted history (issue 13, 1).

Real S&P 500 prices (arch.data): a model is fitted on the closes up to 2018-11-14 and
conditioned on a file holding only the next 30 trading days (to 2018-12-31), the
README's use. The reference is the whole price series read at once: its log returns
(computed here directly) and its range features (read_frame on the whole file).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

import bayes_moe as bm
from bayes_moe.cli import main
from bayes_moe.data.continuation import PriceHistory, append_rows
from bayes_moe.data.errors import DataError
from bayes_moe.inference.checkpoint import CheckpointError

LAST_FITTED = "2018-11-14"
N_NEW = 30
OHLC = {"open_col": "open", "high_col": "high", "low_col": "low", "close_col": "close"}


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """Daily open/high/low/close of the S&P 500, 2017-06-01 .. 2018-12-31 (real data)."""
    frame = bm.data.load_sp500(with_nasdaq=False, features=False)
    return frame.loc["2017-06-01":, ["open", "high", "low", "close"]]


@pytest.fixture(scope="module")
def files(prices, tmp_path_factory) -> dict[str, Path]:
    """CSV files: the fitted history, the next 30 days alone, and both together."""
    folder = tmp_path_factory.mktemp("prices")
    history = prices.loc[:LAST_FITTED]
    newer = prices.iloc[len(history) : len(history) + N_NEW]
    assert len(newer) == N_NEW and newer.index[-1] == pd.Timestamp("2018-12-31")
    parts = {"history": history, "newer": newer, "whole": prices.iloc[: len(history) + N_NEW]}
    paths = {}
    for name, part in parts.items():
        paths[name] = folder / f"{name}.csv"
        part.reset_index().to_csv(paths[name], index=False)
    return paths


@pytest.fixture(scope="module")
def fit(files):
    """A tiny mixture (one AR expert, 2 regimes) fitted on the closes up to 2018-11-14."""
    frame = bm.data.read_frame(files["history"], price_col="close")
    model = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=8)
    return model.fit(frame, num_steps=40, num_draws=20, seed=0, progress=False)


def _reference_returns(prices: pd.DataFrame, dates: pd.DatetimeIndex) -> np.ndarray:
    """100 * dlog(close) on the whole series, at ``dates``."""
    whole = 100.0 * np.log(prices["close"]).diff()
    return whole.loc[dates].to_numpy()


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.reset_index().to_csv(path, index=False)
    return path


def test_next_days_file_is_appended_whole_with_returns_of_the_whole_series(fit, files, prices):
    updated = fit.update(bm.data.read_frame(files["newer"], price_col="close"))
    new_dates = prices.loc[LAST_FITTED:].index[1 : N_NEW + 1]
    assert updated.data.dates[-1] == pd.Timestamp("2018-12-31")
    assert updated.data.dates.equals(fit.data.dates.append(new_dates))  # nothing dropped
    np.testing.assert_allclose(
        updated.data.frame["ret"].to_numpy(),
        _reference_returns(prices, updated.data.dates),
        rtol=1e-12,
    )
    # the first new return uses the last fitted close
    first = updated.data.frame.loc["2018-11-15", "ret"]
    closes = prices["close"]
    assert first == pytest.approx(100 * np.log(closes["2018-11-15"] / closes[LAST_FITTED]))


def test_range_features_of_new_rows_equal_those_of_the_whole_file(files):
    history = bm.data.read_frame(files["history"], price_col="close", **OHLC)
    whole = bm.data.read_frame(files["whole"], price_col="close", **OHLC)
    newer = bm.data.read_frame(files["newer"], price_col="close", **OHLC)
    assert len(newer) == N_NEW - 22  # read alone, 22 rows are lost to warm-up ...
    columns = ["ret", "var_parkinson", "var_garman_klass", "atr_14", "rv_5", "rv_22"]
    combined, _ = append_rows(
        history,
        newer,
        columns=columns,
        prices=PriceHistory.from_frame(history),
    )
    expected = whole.loc[combined.index, columns]  # ... and continued, none is
    assert combined.index.equals(whole.index)
    np.testing.assert_allclose(combined.to_numpy(), expected.to_numpy(), rtol=1e-10)


def test_a_file_of_one_new_close_is_appended(fit, prices, tmp_path):
    """Found by the continuation fuzzer: tomorrow's close alone, the daily use, was
    refused ("the file has 1 rows, too few to compute ['ret']")."""
    one = prices.loc[LAST_FITTED:].iloc[1:2]
    updated = fit.update(
        bm.data.read_frame(_write_csv(one, tmp_path / "one.csv"), price_col="close")
    )
    assert updated.data.dates[-1] == one.index[0]
    assert len(updated.data.dates) == len(fit.data.dates) + 1
    np.testing.assert_allclose(
        updated.data.frame["ret"].iloc[-1], _reference_returns(prices, one.index)[0], rtol=1e-12
    )


def test_fewer_new_days_than_the_feature_warm_up_are_appended(files, prices, tmp_path):
    """Ten new days with range features: all of them warm-up when read alone (rv_22)."""
    history = bm.data.read_frame(files["history"], price_col="close", **OHLC)
    ten = prices.loc[LAST_FITTED:].iloc[1:11]
    newer = bm.data.read_frame(_write_csv(ten, tmp_path / "ten.csv"), price_col="close", **OHLC)
    assert len(newer) == 0  # every row is warm-up of the file alone
    columns = ["ret", "var_parkinson", "var_garman_klass", "atr_14", "rv_5", "rv_22"]
    combined, _ = append_rows(
        history, newer, columns=columns, prices=PriceHistory.from_frame(history)
    )
    whole = bm.data.read_frame(files["whole"], price_col="close", **OHLC)
    assert combined.index[-10:].equals(ten.index)
    np.testing.assert_allclose(
        combined.to_numpy(), whole.loc[combined.index, columns].to_numpy(), rtol=1e-10
    )


def test_a_file_overlapping_the_fitted_data_gives_the_same_rows(fit, files):
    from_newer = fit.update(bm.data.read_frame(files["newer"], price_col="close"))
    from_whole = fit.update(bm.data.read_frame(files["whole"], price_col="close"))
    pd.testing.assert_frame_equal(from_whole.data.frame, from_newer.data.frame, rtol=1e-12)


def test_an_overlap_that_differs_names_the_date_and_both_values(fit, prices, tmp_path):
    start = prices.index.get_loc(pd.Timestamp(LAST_FITTED)) - 4
    changed = prices.iloc[start : start + 4 + N_NEW].copy()
    changed.loc["2018-11-12", "close"] = 2700.0
    path = _write_csv(changed, tmp_path / "changed.csv")
    fitted_close = prices.loc["2018-11-12", "close"]
    with pytest.raises(DataError, match="2018-11-12") as err:
        fit.update(bm.data.read_frame(path, price_col="close"))
    assert "2700.0" in str(err.value) and repr(float(fitted_close)) in str(err.value)
    assert "'close'" in str(err.value)


def test_an_overlap_missing_a_fitted_day_names_it(fit, prices, tmp_path):
    start = prices.index.get_loc(pd.Timestamp(LAST_FITTED)) - 4
    holey = prices.iloc[start : start + 4 + N_NEW].drop(pd.Timestamp("2018-11-13"))
    path = _write_csv(holey, tmp_path / "holey.csv")
    with pytest.raises(DataError, match="first on 2018-11-13, which the fitted data has"):
        fit.update(bm.data.read_frame(path, price_col="close"))


def test_a_gap_after_the_fitted_data_names_both_dates(fit, prices, tmp_path):
    later = prices.loc["2018-12-03":]  # 2018-11-15 .. 2018-11-30 missing
    path = _write_csv(later, tmp_path / "later.csv")
    with pytest.raises(
        DataError, match=f"ends on {LAST_FITTED} and the new rows start on 2018-12-03"
    ):
        fit.update(bm.data.read_frame(path, price_col="close"))


def test_returns_given_directly_are_appended_as_given_with_the_same_checks(prices, tmp_path):
    returns = (100.0 * np.log(prices["close"]).diff()).dropna().rename("r").to_frame()
    history = _write_csv(returns.loc[:LAST_FITTED], tmp_path / "returns.csv")
    model = bm.BayesianMoE(experts=["ar"], n_regimes=1, window=8)
    fit = model.fit(
        bm.data.read_frame(history, return_col="r"), num_steps=20, num_draws=10, progress=False
    )
    newer = returns.loc[LAST_FITTED:].iloc[1 : N_NEW + 1]
    updated = fit.update(bm.data.read_frame(_write_csv(newer, tmp_path / "n.csv"), return_col="r"))
    np.testing.assert_array_equal(updated.data.frame["ret"].iloc[-N_NEW:], newer["r"])
    gap = _write_csv(newer.iloc[5:], tmp_path / "gap.csv")
    with pytest.raises(DataError, match=f"ends on {LAST_FITTED} and the new rows start on 2018-11"):
        fit.update(bm.data.read_frame(gap, return_col="r"))
    changed = returns.loc["2018-11-01":].copy()
    changed.loc["2018-11-08", "r"] += 0.5
    with pytest.raises(DataError, match="2018-11-08: column 'ret'"):
        fit.update(bm.data.read_frame(_write_csv(changed, tmp_path / "c.csv"), return_col="r"))


def test_cli_forecast_from_the_next_days_equals_the_update_with_the_whole_file(
    fit, files, tmp_path, capsys
):
    checkpoint = tmp_path / "fit.safetensors"
    fit.save(checkpoint)
    out = tmp_path / "fc.json"
    argv = ["forecast", "--model", str(checkpoint), "--data", str(files["newer"])]
    argv += ["--price-col", "close", "--num-samples", "500", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    got = pd.DataFrame(json.loads(out.read_text()))
    whole = fit.update(bm.data.read_frame(files["whole"], price_col="close"))
    expected = whole.forecast(num_samples=500, seed=0).to_frame(qs=(0.05, 0.25, 0.5, 0.75, 0.95))
    expected = expected.reset_index()
    assert list(got.columns) == list(expected.columns)
    numeric = [c for c in expected.columns if pd.api.types.is_float_dtype(expected[c])]
    np.testing.assert_allclose(got[numeric].to_numpy(float), expected[numeric].to_numpy(float))
    assert whole.data.dates[-1] == pd.Timestamp("2018-12-31")


def test_checkpoint_keeps_the_fitted_prices(fit, tmp_path):
    checkpoint = tmp_path / "fit.safetensors"
    fit.save(checkpoint)
    loaded = bm.load_fit(checkpoint).price_history
    assert loaded.recipe == fit.price_history.recipe
    pd.testing.assert_frame_equal(loaded.raw, fit.price_history.raw, check_index_type=False)
    assert loaded.raw.index[-1] == pd.Timestamp(LAST_FITTED)


def _as_version_2(path: Path, out: Path) -> Path:
    """The checkpoint as a version-2 file wrote it: no price history."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("prices/")}
    metadata.pop("price_history", None)
    metadata["format_version"] = "2"
    save_file(tensors, str(out), metadata=metadata)
    return out


def test_an_older_checkpoint_loads_but_refuses_new_prices_by_name(fit, files, tmp_path, capsys):
    fit.save(tmp_path / "fit.safetensors")
    old = _as_version_2(tmp_path / "fit.safetensors", tmp_path / "old.safetensors")
    loaded = bm.load_fit(old)
    assert loaded.price_history is None
    assert loaded.forecast(num_samples=10).origin_date == pd.Timestamp(LAST_FITTED)
    with pytest.raises(DataError, match="keeps none.*format version 3"):
        loaded.update(bm.data.read_frame(files["newer"], price_col="close"))
    argv = ["forecast", "--model", str(old), "--data", str(files["newer"]), "--price-col", "close"]
    assert main(argv) == 2
    assert "computed from its prices" in capsys.readouterr().err


def test_price_dates_that_do_not_end_with_the_fitted_dates_are_refused(fit, tmp_path):
    fit.save(tmp_path / "fit.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "fit.safetensors"), framework="pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(str(tmp_path / "fit.safetensors"))
    one_day = np.timedelta64(1, "D").astype(metadata["date_unit"].replace("datetime", "timedelta"))
    tensors["prices/dates"] = tensors["prices/dates"] - int(one_day.astype(np.int64))
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="'prices/dates' must end with"):
        bm.load_fit(tmp_path / "bad.safetensors")
