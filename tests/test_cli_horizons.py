"""``bayes-moe fit|backtest --horizon 1,5``: several horizons from one command, on real data.

The command's fits must be the Python API's (``model.fit(frame, horizon=[1, 5])``) draw
for draw, and its backtest at each horizon the single-horizon backtest's, so the
reports of several horizons can be trusted as much as one.
"""

import json

import numpy as np
import pandas as pd
import pytest

import bayes_moe as bm
from bayes_moe.cli import main, svi_state_path

TINY = ["--num-steps", "8", "--num-draws", "6", "--window", "16", "--regimes", "2"]


@pytest.fixture(scope="module")
def return_file(sp500, tmp_path_factory):
    """The last 500 days of real S&P 500 returns as a user file."""
    path = tmp_path_factory.mktemp("user") / "spx.csv"
    sp500.iloc[-500:][["ret"]].rename_axis("date").to_csv(path)
    return path


@pytest.fixture(scope="module")
def horizons_report(return_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    args = ["fit", "--data", str(return_file), "--return-col", "ret", "--experts", "ar"]
    assert main([*args, "--horizon", "5,1", "--out", str(out), *TINY]) == 0
    return out


def test_fit_at_several_horizons_equals_the_python_api(horizons_report, return_file):
    frame = pd.read_csv(return_file, parse_dates=["date"], index_col="date")
    model = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=16)
    fits = model.fit(frame, horizon=[1, 5], num_steps=8, num_draws=6, seed=0)
    table = pd.read_csv(horizons_report / "forecasts.csv", index_col="horizon")
    assert list(table.index) == [1, 5]
    for h in (1, 5):
        written = json.loads((horizons_report / f"h{h}" / "forecast.json").read_text())
        expected = fits[h].forecast(num_samples=2000, seed=0)
        assert written["horizon"] == h
        np.testing.assert_allclose(written["mean"], expected.mean, rtol=1e-12)
        np.testing.assert_allclose(written["std"], expected.std, rtol=1e-12)
        np.testing.assert_allclose(table.loc[h, "mean"], expected.mean, rtol=1e-12)
        assert (horizons_report / f"h{h}" / "fit.safetensors").exists()
    assert set(table["origin_date"]) == {str(frame.index[-1].date())}
    metrics = json.loads((horizons_report / "metrics.json").read_text())
    assert metrics["horizons"] == [1, 5] and metrics["reports"] == {"1": "h1", "5": "h5"}
    assert (horizons_report / "report.md").read_text().startswith("# Forecasts at several")


def test_no_svi_state_is_left_beside_the_report(horizons_report):
    for h in (None, 1, 5):
        assert not svi_state_path(horizons_report, h).exists()
    assert svi_state_path(horizons_report, 5).name == "run.svi.h5.safetensors"


@pytest.mark.parametrize(
    ("horizon", "message"),
    [("0,5", "positive"), ("5,5", "distinct"), ("1,x", "comma list")],
)
def test_bad_horizon_lists_are_refused_before_work(return_file, tmp_path, capsys, horizon, message):
    args = ["fit", "--data", str(return_file), "--return-col", "ret", "--experts", "ar"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--horizon", horizon, "--out", str(tmp_path / "run"), *TINY])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_panel_fit_takes_one_horizon(tmp_path, capsys):
    wide = pd.DataFrame(
        np.random.default_rng(0).normal(size=(80, 2)),  # synthetic: only validation runs
        index=pd.bdate_range("2020-01-01", periods=80, name="date"),
        columns=["A", "B"],
    )
    path = tmp_path / "panel.csv"
    wide.to_csv(path)
    code = main(["fit", "--data", str(path), "--panel", "--horizon", "1,5", "--out", "x", *TINY])
    assert code == 2
    assert "a panel fit takes one --horizon, got 1,5" in capsys.readouterr().err
    code = main(["fit", "--data", str(path), "--panel", "--workers", "2", "--out", "x", *TINY])
    assert code == 2
    assert "several --horizon values" in capsys.readouterr().err


def test_backtest_at_several_horizons_equals_one_backtest_per_horizon(return_file, tmp_path):
    frame = pd.read_csv(return_file, parse_dates=["date"], index_col="date")
    start = str(frame.index[440].date())
    common = [
        "backtest",
        "--data",
        str(return_file),
        "--return-col",
        "ret",
        "--experts",
        "ar",
        "--test-start",
        start,
        "--refit-every",
        "60",
        "--baselines",
        "garch_t",
        *TINY,
    ]
    assert main([*common, "--horizon", "1,5", "--out", str(tmp_path / "both")]) == 0
    assert main([*common, "--horizon", "5", "--out", str(tmp_path / "five")]) == 0
    both = json.loads((tmp_path / "both" / "metrics.json").read_text())
    single = json.loads((tmp_path / "five" / "metrics.json").read_text())
    at_five = json.loads((tmp_path / "both" / "h5" / "metrics.json").read_text())
    for model in ("bayes_moe", "garch_t"):
        for key in ("log_score", "crps", "coverage_90", "n_days"):
            assert at_five["models"][model][key] == pytest.approx(
                single["models"][model][key], rel=1e-12
            )
    scores = pd.DataFrame(both["scores"]).set_index(["horizon", "model"])
    assert set(scores.index) == {(h, m) for h in (1, 5) for m in ("bayes_moe", "garch_t")}
    # overlapping 5-day targets: the Newey-West lag of the comparison is at least h - 1
    assert scores.loc[(5, "garch_t"), "nw_lag"] >= 4
    assert scores.loc[(5, "bayes_moe"), "log_score"] == pytest.approx(
        single["models"]["bayes_moe"]["log_score"], rel=1e-12
    )
    assert "at least h - 1" in (tmp_path / "both" / "report.md").read_text()


def test_fit_workers_fit_the_horizons_at_once_with_the_serial_results(
    horizons_report, return_file, tmp_path
):
    pytest.importorskip(
        "distributed", reason="the dask extra is not installed (pip install 'bayes-moe[dask]')"
    )
    out = tmp_path / "run"
    args = ["fit", "--data", str(return_file), "--return-col", "ret", "--experts", "ar"]
    assert main([*args, "--horizon", "1,5", "--workers", "2", "--out", str(out), *TINY]) == 0
    for h in (1, 5):
        parallel = json.loads((out / f"h{h}" / "forecast.json").read_text())
        serial = json.loads((horizons_report / f"h{h}" / "forecast.json").read_text())
        assert parallel["mean"] == pytest.approx(serial["mean"], rel=1e-12)
        assert parallel["std"] == pytest.approx(serial["std"], rel=1e-12)
        assert not svi_state_path(out, h).exists()


def test_fit_workers_need_several_horizons(return_file, tmp_path, capsys):
    args = ["fit", "--data", str(return_file), "--return-col", "ret", "--experts", "ar"]
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "run"), *TINY]) == 2
    assert "several --horizon values" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
