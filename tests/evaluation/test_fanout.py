"""Backtests and sweeps fanned out on Dask: the same numbers as the serial run, failures
kept apart, metrics chosen by the caller, and the CLI's --workers / --scheduler."""

import json
import sys

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import torch

import bayes_moe as bm
from bayes_moe.cli import main
from bayes_moe.data import DataError
from bayes_moe.evaluation import fanout
from bayes_moe.evaluation.backtest import backtest
from bayes_moe.evaluation.baselines import BASELINES
from bayes_moe.evaluation.fanout import Task, run_tasks
from bayes_moe.evaluation.moe_forecaster import FittedForecaster, MoEForecaster

distributed = pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'bayes-moe[dask]')"
)
# Forecasters defined here travel to the workers by value (this module is not importable
# there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes."""
    with fanout.local_cluster(2) as client:
        yield client


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.iloc[-420:]


def small_mixture(**options):
    model = bm.BayesianMoE(experts=["ar", "kalman"], n_regimes=2, window=16)
    return MoEForecaster(model, num_steps=25, num_draws=8, seed=3, **options)


class FailsAfter:
    """A constant-Normal forecaster whose refits on data after ``day`` raise."""

    name = "fails_after"

    def __init__(self, day):
        self.day = pd.Timestamp(day)

    def __call__(self, train):
        if train.index[-1] > self.day:
            raise RuntimeError(f"refit on {train.index[-1].date()} failed on purpose")
        return BASELINES["constant_normal"]()(train)


def assert_same_backtest(a, b):
    assert a.table.index.equals(b.table.index)
    for column in a.table.columns:
        np.testing.assert_allclose(a.table[column], b.table[column], rtol=1e-12, atol=0)
    np.testing.assert_allclose(a.predictive.weights, b.predictive.weights, rtol=1e-12)


def test_backtest_on_a_cluster_equals_the_serial_run(frame, client):
    options = dict(test_start=frame.index[-60], refit_every=20, progress=False, torch_threads=1)
    for forecaster in (small_mixture(), BASELINES["garch_t"]()):
        serial = backtest(frame, forecaster, **options)
        fanned = backtest(frame, forecaster, client=client, **options)
        assert_same_backtest(serial, fanned)
        assert fanned.refit_dates == serial.refit_dates
        assert fanned.compute_s > 0
    # the mixture's regime probabilities come back as values too
    pd.testing.assert_frame_equal(
        serial.extras.get("regime_probs", pd.DataFrame()),
        fanned.extras.get("regime_probs", pd.DataFrame()),
    )
    mixture = backtest(frame, small_mixture(), client=client, **options)
    probs = mixture.extras["regime_probs"]
    assert probs.index.equals(mixture.table.index)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_fits_travel_back_from_the_workers_when_asked(frame, client):
    options = dict(test_start=frame.index[-40], refit_every=20, progress=False, torch_threads=1)
    result = backtest(frame, small_mixture(), client=client, keep_fits=True, **options)
    assert [fit.data.dates[-1] for fit in result.fits] == result.refit_dates
    again = backtest(frame, FittedForecaster(result.fits), **options)
    np.testing.assert_array_equal(result.table["log_score"], again.table["log_score"])


def test_a_failed_refit_on_a_worker_is_recorded_and_the_rest_kept(frame, client):
    day = frame.index[-61]  # the first refit (on data up to the first origin) works
    result = backtest(
        frame,
        FailsAfter(day),
        test_start=frame.index[-60],
        refit_every=20,
        progress=False,
        on_error="record",
        client=client,
    )
    assert len(result.table) == 20 and len(result.failures) == 2
    failure = result.failures[0]
    assert failure.error_type == "RuntimeError" and "on purpose" in failure.message
    assert failure.refit_date == frame.index[-41] and failure.n_days == 20
    with pytest.raises(RuntimeError, match="on purpose"):  # on_error="raise" stops
        backtest(
            frame,
            FailsAfter(day),
            test_start=frame.index[-60],
            refit_every=20,
            progress=False,
            client=client,
        )


def test_run_tasks_keeps_order_values_and_errors_here():
    def boom():
        raise KeyError("b")

    tasks = [Task(int, ("1",), "a"), Task(boom, (), "b"), Task(int, ("3",), "c")]
    out = run_tasks(tasks, progress=False, stop_on_error=False)
    assert out[0] == 1 and isinstance(out[1], KeyError) and out[2] == 3
    with pytest.raises(KeyError):
        run_tasks(tasks, progress=False)
    before = torch.get_num_threads()
    assert run_tasks([Task(torch.get_num_threads, (), "t")], torch_threads=1, progress=False) == [1]
    assert torch.get_num_threads() == before


def test_each_task_on_a_cluster_runs_with_one_torch_thread(client):
    out = run_tasks(
        [Task(torch.get_num_threads, (), f"t{i}") for i in range(4)], client=client, progress=False
    )
    assert out == [1, 1, 1, 1]


def test_custom_metrics_make_the_table_and_its_summary(frame):
    def squared_error(predictive, y):
        return (predictive.mean() - y) ** 2

    metrics = {"log_score": lambda p, y: p.log_prob(y), "squared_error": squared_error}
    result = backtest(
        frame,
        BASELINES["garch_t"](),
        test_start=frame.index[-50],
        progress=False,
        metrics=metrics,
    )
    assert list(result.table.columns) == ["y", "log_score", "squared_error"]
    expected = np.mean((result.predictive.mean() - result.y) ** 2)
    summary = result.summary()
    assert summary["squared_error"] == pytest.approx(expected, rel=1e-12)
    assert summary["log_score"] == pytest.approx(np.mean(result.predictive.log_prob(result.y)))
    with pytest.raises(ValueError, match="'short'.*one value per day"):
        backtest(
            frame,
            BASELINES["garch_t"](),
            test_start=frame.index[-50],
            progress=False,
            metrics={"short": lambda p, y: y[:-1]},
        )


def test_sweep_is_one_tidy_table_of_the_single_backtests(sp500, client):
    data = {"2016": sp500.loc["2015-06-01":"2016-12-30"], "2018": sp500.loc["2017-06-01":]}
    configs = {"constant": BASELINES["constant_normal"](), "garch_t": BASELINES["garch_t"]()}
    common = dict(test_start="2016-09-01", test_end="2016-12-30", refit_every=40)
    table = bm.evaluation.sweep({"2016": data["2016"]}, configs, [1, 5], progress=False, **common)
    assert list(table[["dataset", "config", "horizon"]].itertuples(index=False)) == [
        ("2016", "constant", 1),
        ("2016", "constant", 5),
        ("2016", "garch_t", 1),
        ("2016", "garch_t", 5),
    ]
    for row in table.itertuples():
        single = backtest(
            data["2016"], configs[row.config], horizon=row.horizon, progress=False, **common
        ).summary()
        assert row.log_score == single["log_score"] and row.crps == single["crps"]
        assert row.n_days == single["n_days"] and row.failed_refits == 0
    fanned = bm.evaluation.sweep(
        {"2016": data["2016"]}, configs, [1, 5], progress=False, client=client, **common
    )
    columns = ["log_score", "crps", "coverage_90"]
    np.testing.assert_allclose(fanned[columns], table[columns], rtol=1e-12)
    per_day = bm.evaluation.sweep(
        {"2016": data["2016"]}, configs, [1], progress=False, per_day=True, **common
    )
    assert list(per_day.columns[:4]) == ["dataset", "config", "horizon", "date"]
    assert len(per_day) == 2 * table.loc[0, "n_days"]


def test_sweep_reports_a_failing_configuration_and_keeps_the_others(sp500):
    frame = sp500.loc["2016-01-01":"2016-12-30"]
    configs = {
        "never": FailsAfter("2000-01-01"),
        "constant": BASELINES["constant_normal"](),
    }
    table = bm.evaluation.sweep(
        frame, configs, test_start="2016-10-03", refit_every=30, progress=False
    )
    never, constant = table.set_index("config").loc[["never", "constant"]].to_dict("records")
    assert never["failed_refits"] == 3 and "every refit of never failed" in never["error"]
    assert constant["failed_refits"] == 0 and constant["n_days"] == len(frame.loc["2016-10-03":])


def test_sweep_refuses_bad_requests_before_any_fit(sp500):
    calls = []

    def spy(train):
        calls.append(train.index[-1])
        return BASELINES["constant_normal"]()(train)

    frame = sp500.loc["2016"]
    with pytest.raises(DataError, match="unknown data set 'sp5000'"):
        bm.evaluation.sweep(["sp5000"], {"spy": spy}, test_start="2016-06-01")
    with pytest.raises(DataError, match="no test days"):
        bm.evaluation.sweep(
            {"a": frame, "b": frame.loc[:"2016-03-01"]}, {"spy": spy}, test_start="2016-06-01"
        )
    with pytest.raises(ValueError, match="horizons"):
        bm.evaluation.sweep(frame, {"spy": spy}, [0], test_start="2016-06-01")
    assert calls == []


def test_cli_backtest_on_a_scheduler_matches_the_serial_report(sp500, client, tmp_path, capsys):
    frame = sp500.loc["2017-06-01":"2018-03-30"]
    path = tmp_path / "prices.csv"
    frame[["ret"]].rename_axis("date").to_csv(path)
    common = [
        "backtest",
        "--data",
        str(path),
        "--return-col",
        "ret",
        "--test-start",
        "2018-02-01",
        "--refit-every",
        "20",
        "--baselines",
        "garch_t",
        "--experts",
        "ar",
        "--regimes",
        "1",
        "--window",
        "16",
        "--num-steps",
        "10",
        "--num-draws",
        "4",
    ]
    torch.set_num_threads(1)
    assert main([*common, "--out", str(tmp_path / "serial")]) == 0
    address = client.scheduler.address
    assert main([*common, "--scheduler", address, "--out", str(tmp_path / "fanned")]) == 0
    serial, fanned = (
        json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("serial", "fanned")
    )
    assert fanned["protocol"]["dask"] == {"cluster": "scheduler", "address": address}
    for model in ("bayes_moe", "garch_t"):
        assert fanned["models"][model]["log_score"] == pytest.approx(
            serial["models"][model]["log_score"], rel=1e-12
        )
    code = main([*common, "--workers", "0", "--out", str(tmp_path / "never")])
    assert code == 2 and "--workers must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_a_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"bayes-moe\[dask\]"):
        fanout.require_distributed()
