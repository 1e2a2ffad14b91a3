"""Bad values are caught before they reach a forecast.

Issue 13, defect 2. Three guards:

* implausible values in the data are refused before any fitting, naming the column,
  the date and the value (:mod:`bayes_moe.data.plausibility`), unless accepted with
  ``allow_outliers=True`` / ``--allow-outliers``; a series on a scale that float
  standardisation cannot handle is refused with a short message;
* SVI stops with :class:`~bayes_moe.NonFiniteLossError` when it diverges;
* :func:`~bayes_moe.io.write_json` writes standard JSON only.

The data are real (S&P 500 and NASDAQ from ``arch.data``); the bad values planted in
them are synthetic and labelled where they are made.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from pyro.infer import Trace_ELBO

import bayes_moe as bm
from bayes_moe.cli import main
from bayes_moe.data.errors import DataError
from bayes_moe.data.plausibility import OUTLIER_THRESHOLD, check_plausible_values, robust_z
from bayes_moe.evaluation.moe_forecaster import MoEForecaster
from bayes_moe.inference import svi
from bayes_moe.io import write_json

#: The day of every planted bad value (a Wednesday inside the last 400 days).
SPIKE_DATE = "2018-06-13"
TINY = {"num_steps": 5, "num_draws": 4, "seed": 0, "progress": False}
CLI_TINY = ["--experts", "ar", "--regimes", "2", "--window", "16"]
CLI_TINY += ["--num-steps", "5", "--num-draws", "4"]


def _tiny_model() -> bm.BayesianMoE:
    return bm.BayesianMoE(experts=["ar"], n_regimes=2, window=16)


@pytest.fixture(scope="module")
def returns(sp500) -> pd.DataFrame:
    """The last 400 real S&P 500 daily returns (percent), the only column."""
    return sp500.loc[:, ["ret"]].iloc[-400:]


@pytest.fixture(scope="module")
def spiked(returns) -> pd.DataFrame:
    """SYNTHETIC: the real returns with one planted return of 1e6 % on SPIKE_DATE."""
    frame = returns.copy()
    frame.loc[SPIKE_DATE, "ret"] = 1e6
    return frame


@pytest.fixture
def no_fitting(monkeypatch):
    """Make any SVI fit fail the test: a refusal must come before fitting starts."""

    def fit_svi(*args, **kwargs):
        raise AssertionError("fit_svi was reached: the bad value was not refused first")

    monkeypatch.setattr(svi, "fit_svi", fit_svi)


# ------------------------------------------------------------------ real data pass
#: The largest robust z-score of each real series, computed from the embedded data
#: (arch.data, 1999-2018; the VIX 2014-2019): the crashes of 2000-2002 and 2008 are in it.
REAL_MAX_Z = {
    ("sp500", "ret"): (13.83, "2008-10-13"),
    ("sp500", "ret_nasdaq"): (12.54, "2001-01-03"),
    ("nasdaq", "ret"): (12.54, "2001-01-03"),
    ("vix", "vix"): (8.97, "2015-08-24"),
}
LOADERS = {"sp500": bm.data.load_sp500, "nasdaq": bm.data.load_nasdaq, "vix": bm.data.load_vix}


@pytest.mark.parametrize(("dataset", "target"), list(REAL_MAX_Z))
def test_real_market_data_pass_with_a_wide_margin(dataset, target):
    """Every return series and the VIX pass as targets, every column passes the scale check.

    The threshold (100) is more than 7 times the largest robust z of real data here.
    """
    frame = LOADERS[dataset]()
    z = robust_z(frame[target].to_numpy())
    expected, date = REAL_MAX_Z[dataset, target]
    assert z.max() == pytest.approx(expected, abs=0.01)
    assert frame.index[np.argmax(z)] == pd.Timestamp(date)
    assert z.max() * 7 < OUTLIER_THRESHOLD
    check_plausible_values(frame, targets=[target], columns=list(frame.columns))


def test_the_real_data_fit_through_prepare(sp500):
    """The default path (every column offered to the default experts) accepts real data."""
    model = bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=2, window=32)
    data = model.prepare(sp500)
    assert data.n_observed == len(sp500) - 32


# ------------------------------------------------------------------ outliers
def test_a_return_of_1e6_percent_is_refused_before_fitting(spiked, no_fitting):
    with pytest.raises(DataError) as caught:
        _tiny_model().fit(spiked, "ret", **TINY)
    message = str(caught.value)
    assert "'ret'" in message
    assert SPIKE_DATE in message
    assert "1e+06" in message
    assert "allow_outliers=True" in message and "--allow-outliers" in message


def test_allow_outliers_accepts_the_spike(spiked):
    """Accepted on request: the fit runs on the spike (its response is in the data)."""
    fit = _tiny_model().fit(spiked, "ret", allow_outliers=True, **TINY)
    assert fit.data.frame.loc[SPIKE_DATE, "ret"] == 1e6
    assert np.isfinite(fit.diagnostics.losses).all()


def test_a_typo_in_a_short_illiquid_series_is_refused():
    """Found by the frame fuzzer: most returns exactly 0, so the MAD is 0.

    40 days of an illiquid stock (25 days unchanged, 15 moves of about 1 %) and one
    return of 1e6 %. The untrimmed fallback scale (the mean absolute deviation) took the
    typo in: 1.2533 * 1e6 / 40 = 31,000, a robust z of 32, accepted. Without the largest
    deviation the scale is 1.2533 * 15 * 1 / 39 = 0.48, so the typo's z is 2 million.
    """
    values = np.zeros(40)
    values[::3][:14] = 1.0
    values[1] = -1.0
    values[20] = 1e6
    z = robust_z(values)
    assert z[20] == pytest.approx(1e6 / (1.2533141373155003 * 15 / 39), rel=1e-9)
    frame = pd.DataFrame({"ret": values}, index=pd.bdate_range("2020-01-01", periods=40))
    with pytest.raises(DataError, match="implausible value 1e\\+06 on 2020-01-29"):
        check_plausible_values(frame, targets=["ret"], columns=["ret"])
    # One value off the median and nothing else: nothing is left after trimming, so the
    # untrimmed mean absolute deviation is the scale (a nearly constant series passes).
    one = np.zeros(40)
    one[3] = 0.5
    assert robust_z(one)[3] == pytest.approx(0.5 / (1.2533141373155003 * 0.5 / 40))


def test_an_update_with_an_outlier_is_refused_unless_allowed(returns, spiked):
    """New rows go through the same check; the fitted draws are not conditioned on a spike."""
    fit = _tiny_model().fit(returns.loc[:SPIKE_DATE].iloc[:-1], "ret", **TINY)
    with pytest.raises(DataError, match=SPIKE_DATE):
        fit.update(spiked)
    assert fit.update(spiked, allow_outliers=True).data.dates[-1] == spiked.index[-1]


def test_backtest_forecaster_passes_allow_outliers_to_its_updates(spiked):
    """MoEForecaster(allow_outliers=True): the refit and each forecast's update accept it."""
    forecaster = MoEForecaster(_tiny_model(), allow_outliers=True, **TINY)
    predict = forecaster(spiked.iloc[:-20])
    origins = spiked.index[-6:-1]
    forecast = predict(spiked, origins)
    assert len(forecast.predictive.dates) == len(origins)  # a BlockForecast
    refusing = MoEForecaster(_tiny_model(), **TINY)
    with pytest.raises(DataError, match=SPIKE_DATE):
        refusing(spiked.iloc[:-20])


def _price_csv(path, closes: pd.Series):
    closes.rename("Close").rename_axis("Date").to_csv(path)
    return path


@pytest.fixture(scope="module")
def price_csv(sp500, tmp_path_factory):
    """A user's CSV of the last 400 real S&P 500 closes."""
    closes = sp500["adj_close"].iloc[-400:]
    return _price_csv(tmp_path_factory.mktemp("prices") / "prices.csv", closes)


@pytest.fixture(scope="module")
def jump_csv(sp500, tmp_path_factory):
    """SYNTHETIC: the same closes, multiplied by 10001 from SPIKE_DATE on."""
    closes = sp500["adj_close"].iloc[-400:].copy()
    closes.loc[SPIKE_DATE:] *= 10001
    return _price_csv(tmp_path_factory.mktemp("jump") / "prices.csv", closes)


def test_a_price_jump_is_refused_through_read_frame(jump_csv, no_fitting):
    """The return computed from the prices, 100 log(10001) = 921 %, is named with its date."""
    frame = bm.data.read_frame(jump_csv, date_col="Date", price_col="Close")
    assert frame.loc[SPIKE_DATE, "ret"] == pytest.approx(100 * math.log(10001), rel=1e-3)
    with pytest.raises(DataError) as caught:
        _tiny_model().fit(frame, "ret", **TINY)
    assert "'ret'" in str(caught.value)
    assert SPIKE_DATE in str(caught.value)
    assert f"value {frame.loc[SPIKE_DATE, 'ret']:.6g} on {SPIKE_DATE}" in str(caught.value)


@pytest.mark.parametrize("command", ["fit", "backtest"])
def test_a_price_jump_is_refused_by_the_cli(jump_csv, tmp_path, capsys, no_fitting, command):
    """Exit status 2 before any work: nothing is written, the message names the value."""
    out = tmp_path / "out"
    argv = [command, "--data", str(jump_csv), "--date-col", "Date", "--price-col", "Close"]
    argv += ["--out", str(out), *CLI_TINY]
    if command == "backtest":
        argv += ["--test-start", "2018-10-01", "--baselines", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"bayes-moe {command}: error: column 'ret'" in err
    assert SPIKE_DATE in err and "--allow-outliers" in err
    assert not out.exists()


def test_the_cli_flag_accepts_the_price_jump(jump_csv, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["fit", "--data", str(jump_csv), "--date-col", "Date", "--price-col", "Close"]
    argv += ["--out", str(out), "--allow-outliers", *CLI_TINY]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=_refuse)
    assert metrics["forecast"]["horizon"] == 1


# ------------------------------------------------------------------ scale
@pytest.mark.parametrize(
    ("factor", "hint"), [(1e200, "divide it by 1e+200"), (1e-300, "multiply it by 1e+300")]
)
def test_a_series_on_an_extreme_scale_gets_a_short_clear_message(returns, factor, hint):
    """SYNTHETIC: real returns times 1e200 or 1e-300; allow_outliers does not waive it."""
    frame = returns * factor
    for allow in (False, True):
        with pytest.raises(DataError) as caught:
            _tiny_model().fit(frame, "ret", allow_outliers=allow, **TINY)
        message = str(caught.value)
        assert len(message) < 300, message
        assert message.startswith("column 'ret'")
        assert hint in message
        assert "tensor" not in message


def test_a_covariate_on_an_extreme_scale_names_its_reader(sp500):
    """SYNTHETIC: the NASDAQ return times 1e200 as the VAR expert's second series."""
    frame = sp500.loc[:, ["ret", "ret_nasdaq"]].iloc[-400:].copy()
    frame["ret_nasdaq"] *= 1e200
    model = bm.BayesianMoE(experts=["ar", "var"], n_regimes=2, window=16)
    with pytest.raises(DataError, match=r"column 'ret_nasdaq'.*; read by expert 'var'"):
        model.prepare(frame)


# ------------------------------------------------------------------ SVI divergence
def test_svi_stops_with_a_named_error_when_it_diverges(returns):
    """A huge learning rate drives a guide scale to 0: a named error, no tensor dump."""
    with pytest.raises(bm.NonFiniteLossError) as caught:
        _tiny_model().fit(returns, "ret", learning_rate=1e6, strategy="joint", **TINY)
    message = str(caught.value)
    assert message.startswith("SVI step ")
    assert "ar/" in message  # the sites concerned are named
    assert "tensor(" not in message and "\n" not in message
    assert isinstance(caught.value, FloatingPointError)


def test_svi_stops_at_the_first_non_finite_loss(returns, monkeypatch):
    """A loss made NaN from the third step on (a monkeypatched ELBO) stops at step 3."""

    class NaNFromStepThree(Trace_ELBO):
        calls = 0

        def differentiable_loss(self, model, guide, *args, **kwargs):
            loss = super().differentiable_loss(model, guide, *args, **kwargs)
            NaNFromStepThree.calls += 1  # call 1 creates the parameters, then steps
            return loss * math.nan if NaNFromStepThree.calls > 3 else loss

    monkeypatch.setattr(svi, "Trace_ELBO", NaNFromStepThree)
    with pytest.raises(bm.NonFiniteLossError, match=r"^SVI step 3: the loss is nan"):
        _tiny_model().fit(returns, "ret", **TINY)


def test_the_cli_reports_a_diverged_fit(price_csv, tmp_path, capsys, monkeypatch):
    """Exit status 1 with the named error and no traceback; nothing is written."""
    original = svi.fit_svi

    def diverging(*args, **kwargs):
        return original(*args, **{**kwargs, "learning_rate": 1e6, "strategy": "joint"})

    monkeypatch.setattr(svi, "fit_svi", diverging)
    out = tmp_path / "out"
    argv = ["fit", "--data", str(price_csv), "--date-col", "Date", "--price-col", "Close"]
    assert main([*argv, "--out", str(out), *CLI_TINY]) == 1
    err = capsys.readouterr().err
    assert "bayes-moe fit: error: SVI step " in err  # after the progress bar
    assert "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------ JSON
def _refuse(token: str):
    raise ValueError(f"non-standard JSON token {token}")


def test_write_json_writes_standard_json_only(tmp_path):
    """NaN and +-inf become null; a strict parser reads the file; inf is warned about."""
    doc = {
        "mean": float("inf"),
        "quantiles": [0.1, float("-inf"), float("nan")],
        "nested": {"sd": np.float64("nan"), "n": np.int64(3)},
    }
    path = tmp_path / "doc.json"
    with pytest.warns(RuntimeWarning, match=r"mean, quantiles\[1\] written as null"):
        write_json(doc, path)
    read = json.loads(path.read_text(), parse_constant=_refuse)
    assert read == {"mean": None, "quantiles": [0.1, None, None], "nested": {"sd": None, "n": 3}}


def test_write_json_is_silent_about_nan(tmp_path):
    """NaN marks a value that is not available: written as null without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_json({"coverage": float("nan")}, tmp_path / "doc.json")
    assert json.loads((tmp_path / "doc.json").read_text(), parse_constant=_refuse) == {
        "coverage": None
    }
