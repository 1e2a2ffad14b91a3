"""The bayes-moe command on real data: demo, fit on a user file, forecast, regimes, errors."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import bayes_moe as bm
from bayes_moe.cli import main

TINY = ["--num-steps", "8", "--num-draws", "6", "--window", "16", "--regimes", "2"]


@pytest.fixture(scope="module")
def price_file(sp500, tmp_path_factory):
    """The last 700 days of real S&P 500 prices as a user would export them."""
    raw = sp500.iloc[-700:][["open", "high", "low", "adj_close"]]
    frame = raw.rename(columns={"open": "Open", "high": "High", "low": "Low", "adj_close": "Close"})
    path = tmp_path_factory.mktemp("user") / "spx.csv"
    frame.rename_axis("Date").to_csv(path)
    return path


@pytest.fixture(scope="module")
def fitted(price_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    code = main(
        [
            "fit",
            "--data",
            str(price_file),
            "--date-col",
            "Date",
            "--price-col",
            "Close",
            "--high-col",
            "High",
            "--low-col",
            "Low",
            "--open-col",
            "Open",
            "--close-col",
            "Close",
            "--experts",
            "ar,kalman",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert code == 0
    return out


def test_fit_on_a_user_csv_writes_the_report(fitted, price_file):
    names = {p.name for p in fitted.iterdir()}
    assert {
        "fit.safetensors",
        "metrics.json",
        "forecast.json",
        "inference_data.nc",
        "fan_chart.png",
        "regimes.png",
        "expert_weights.png",
        "regimes_filtered.csv",
        "regime_summary.csv",
        "regime_posterior.png",
    } <= names
    metrics = json.loads((fitted / "metrics.json").read_text())
    prices = pd.read_csv(price_file, parse_dates=["Date"], index_col="Date")["Close"]
    assert metrics["data"]["last_date"] == str(prices.index[-1].date())
    q = list(metrics["forecast"]["quantiles"].values())
    assert q == sorted(q)
    assert 0 <= metrics["regime_now"]["filtered_probability"] <= 1
    assert 0 <= metrics["in_sample"]["coverage_90"] <= 1
    # The returns the model saw are the percent log returns of the Close column.
    fit = bm.load_fit(fitted / "fit.safetensors")
    expected = 100 * np.diff(np.log(prices.to_numpy()))
    np.testing.assert_allclose(fit.data.frame["ret"].to_numpy(), expected[-len(fit.data.frame) :])


def test_forecast_command_matches_the_python_api(fitted, tmp_path, capsys):
    out = tmp_path / "fc.json"
    code = main(
        [
            "forecast",
            "--model",
            str(fitted / "fit.safetensors"),
            "--out",
            str(out),
            "--num-samples",
            "3000",
            "--seed",
            "5",
        ]
    )
    assert code == 0
    record = json.loads(out.read_text())[0]
    expected = bm.load_fit(fitted / "fit.safetensors").forecast(num_samples=3000, seed=5)
    assert record["mean"] == pytest.approx(expected.mean, rel=1e-12)
    assert record["q0.5"] == pytest.approx(float(expected.quantiles([0.5]).iloc[0]), rel=1e-12)
    assert "origin_date" in capsys.readouterr().out


def test_regimes_command_writes_probabilities(fitted, tmp_path, capsys):
    out = tmp_path / "reg"
    assert main(["regimes", "--model", str(fitted / "fit.safetensors"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # The regime report, printed and written: one row per regime, as the Python API.
    summary = pd.read_csv(out / "regime_summary.csv", index_col=0)
    expected = bm.load_fit(fitted / "fit.safetensors").regimes().summary()
    np.testing.assert_allclose(summary["volatility"], expected["volatility"], rtol=1e-9)
    np.testing.assert_allclose(summary["share_of_days"].sum(), 1.0, rtol=1e-9)
    for k, row in expected.iterrows():
        assert f"regime {k}: volatility %/day {row['volatility']:.2f}" in text
    filtered = pd.read_csv(out / "regimes_filtered.csv", index_col=0)
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0, rtol=1e-9)
    transition = pd.read_csv(out / "transition.csv", index_col=0)
    np.testing.assert_allclose(transition.sum(axis=1), 1.0, rtol=1e-9)
    assert (out / "regimes.png").stat().st_size > 10_000


def test_demo_runs_on_the_embedded_data(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--num-steps", "5", "--num-draws", "5"]) == 0
    text = capsys.readouterr().out
    assert "regime on 2018-12-31" in text and "forecast from 2018-12-31" in text
    metrics = json.loads((out / "metrics.json").read_text())
    # The regime report is printed and written, with the numbers of metrics.json.
    summary = pd.read_csv(out / "regime_summary.csv", index_col=0)
    assert len(summary) == 3 == len(metrics["regimes"])
    first = metrics["regimes"][0]
    assert f"regime 0: volatility %/day {first['volatility']:.2f}" in text
    assert summary.loc[0, "expected_duration"] == pytest.approx(first["expected_duration"])
    assert metrics["data"]["first_date"] == "1999-02-04"
    assert metrics["elapsed_s"] > 0
    # The energy plot (with the offline VIX) and its table; one class of experts.
    assert (out / "energy.png").exists()
    energy = pd.read_csv(out / "energy.csv", index_col=0, parse_dates=True)
    assert energy.index[-1] == pd.Timestamp("2018-12-31")
    np.testing.assert_allclose(energy["heavy_weight"], 1.0, rtol=1e-9)
    assert "beta" not in metrics["energy"]


def test_bad_user_file_fails_before_fitting_and_writes_nothing(price_file, tmp_path, capsys):
    frame = pd.read_csv(price_file)
    frame.iloc[[10, 11]] = frame.iloc[[11, 10]].to_numpy()  # two dates out of order
    bad = tmp_path / "unsorted.csv"
    frame.to_csv(bad, index=False)
    out = tmp_path / "never"
    code = main(
        [
            "fit",
            "--data",
            str(bad),
            "--date-col",
            "Date",
            "--price-col",
            "Close",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert code == 2
    assert "sorted" in capsys.readouterr().err
    assert not out.exists()


def test_foreign_checkpoint_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "weights.safetensors"
    path.write_text("not a checkpoint")
    assert main(["forecast", "--model", str(path)]) == 2
    assert "not a bayes-moe checkpoint" in capsys.readouterr().err


def test_backtest_command_on_a_user_file(price_file, tmp_path, capsys):
    prices = pd.read_csv(price_file, parse_dates=["Date"], index_col="Date")
    start = str(prices.index[560].date())
    out = tmp_path / "bt"
    code = main(
        [
            "backtest",
            "--data",
            str(price_file),
            "--date-col",
            "Date",
            "--price-col",
            "Close",
            "--high-col",
            "High",
            "--low-col",
            "Low",
            "--test-start",
            start,
            "--refit-every",
            "70",
            "--baselines",
            "garch_t,har",
            "--experts",
            "ar,kalman",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"bayes_moe", "garch_t", "har"}
    n_days = len(prices.loc[start:])
    for summary in metrics["models"].values():
        assert summary["n_days"] == n_days
        assert np.isfinite(summary["log_score"]) and summary["crps"] > 0
    assert set(metrics["comparisons"]) == {"garch_t", "har"}
    assert metrics["protocol"]["test_start"] == start
    assert (out / "report.md").read_text().startswith("# Calibration study")
    assert "bayes_moe" in capsys.readouterr().out


def test_backtest_rejects_unknown_baselines(price_file, tmp_path, capsys):
    code = main(
        [
            "backtest",
            "--data",
            str(price_file),
            "--date-col",
            "Date",
            "--price-col",
            "Close",
            "--test-start",
            "2018-06-01",
            "--baselines",
            "garch_t,prophet",
            "--out",
            str(tmp_path / "x"),
            *TINY,
        ]
    )
    assert code == 2
    assert "prophet" in capsys.readouterr().err


def test_transition_features_drive_the_switches_from_a_user_column(sp500, tmp_path, capsys):
    # A real column of the user's file (the Baa - Aaa spread as known after its
    # publication lag) drives the regime switches beside the 22-day variance; the
    # checkpoint keeps the choice, and a misspelt column is refused before fitting,
    # naming the gate as its reader.
    frame = bm.data.add_macro_features(sp500.iloc[-400:][["ret"]])
    path = tmp_path / "spread.csv"
    frame[["ret", "credit_spread"]].rename_axis("date").to_csv(path)
    common = ["fit", "--data", str(path), "--return-col", "ret", "--experts", "ar", *TINY]
    out = tmp_path / "run"
    features = ["--transition-features", "log_rv_22,credit_spread"]
    assert main([*common, *features, "--out", str(out)]) == 0
    fit = bm.load_fit(out / "fit.safetensors")
    assert fit.model.gate.transition_features == ("log_rv_22", "credit_spread")
    assert "credit_spread" in fit.data.inputs.columns
    assert fit.draws["gate/transition_coef"].shape[-2:] == (1, 2)
    capsys.readouterr()
    never = tmp_path / "never"
    misspelt = ["--transition-features", "log_rv_22,credit_spred"]
    assert main([*common, *misspelt, "--out", str(never)]) == 2
    assert "the gate reads column(s) ['credit_spred']" in capsys.readouterr().err
    assert not never.exists()
    homogeneous = tmp_path / "homogeneous"
    assert main([*common, "--transition-features", "none", "--out", str(homogeneous)]) == 0
    assert bm.load_fit(homogeneous / "fit.safetensors").model.gate.transition_features == ()


def test_energy_gate_writes_the_energy_report_and_sparse_needs_the_gate(sp500, tmp_path, capsys):
    # A light (ar) and a medium (gru) expert with energy gating and sparse inference:
    # the report carries energy.csv, energy.png and the fitted beta and tau, and the
    # checkpoint keeps the gate; --sparse without --energy-gate is refused before fitting.
    path = tmp_path / "ret.csv"
    sp500.iloc[-400:][["ret"]].rename_axis("date").to_csv(path)
    common = ["fit", "--data", str(path), "--return-col", "ret", "--experts", "ar,gru", *TINY]
    out = tmp_path / "run"
    assert main([*common, "--energy-gate", "--sparse", "0.05", "--out", str(out)]) == 0
    assert {"energy.csv", "energy.png"} <= {p.name for p in out.iterdir()}
    energy = pd.read_csv(out / "energy.csv", index_col=0)
    np.testing.assert_allclose(
        energy["energy"], energy["predictive_entropy"] + energy["regime_entropy"], rtol=1e-9
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["energy"]["beta"]) == {"mean", "sd"}
    fit = bm.load_fit(out / "fit.safetensors")
    assert fit.model.energy_gate.sparse == 0.05
    capsys.readouterr()
    never = tmp_path / "never"
    assert main([*common, "--sparse", "0.05", "--out", str(never)]) == 2
    assert "--sparse needs --energy-gate" in capsys.readouterr().err
    assert not never.exists()


def test_fit_runs_in_the_precision_asked_for_and_refuses_an_absent_gpu(
    sp500, tmp_path, capsys, monkeypatch
):
    path = tmp_path / "ret.csv"
    sp500.iloc[-400:][["ret"]].rename_axis("date").to_csv(path)
    common = ["fit", "--data", str(path), "--return-col", "ret", "--experts", "ar", *TINY]
    out = tmp_path / "run"
    assert main([*common, "--dtype", "float32", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["fit"]["device"], metrics["fit"]["dtype"]) == ("cpu", "float32")
    assert bm.load_fit(out / "fit.safetensors").diagnostics.dtype == "float32"
    capsys.readouterr()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    never = tmp_path / "never"
    assert main([*common, "--device", "cuda", "--out", str(never)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not never.exists()
