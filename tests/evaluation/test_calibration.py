"""Calibration summaries and the backtest report on real baselines."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from bayes_moe.evaluation import calibration
from bayes_moe.evaluation.backtest import backtest
from bayes_moe.evaluation.baselines import BASELINES
from bayes_moe.evaluation.scoring import diebold_mariano
from bayes_moe.report import write_backtest_report


@pytest.fixture(scope="module")
def results(sp500):
    frame = sp500.loc["2010-01-01":"2016-12-31"]
    out = {}
    for name in ("garch_t", "ewma", "ms2"):
        out[name] = backtest(
            frame,
            BASELINES[name](),
            test_start="2015-01-02",
            refit_every=250,
            name=name,
            progress=False,
        )
    return out


def test_comparisons_are_diebold_mariano_on_daily_log_scores(results):
    comps = calibration.comparisons(results, "garch_t")
    expected = diebold_mariano(
        results["garch_t"].table["log_score"].to_numpy(),
        results["ewma"].table["log_score"].to_numpy(),
    )
    assert comps["ewma"]["mean_diff"] == pytest.approx(expected["mean_diff"])
    assert comps["ewma"]["t_stat"] == pytest.approx(expected["t_stat"])
    assert set(comps) == {"ewma", "ms2"}
    assert calibration.best_baseline(results, "garch_t") in {"ewma", "ms2"}


def test_comparisons_of_overlapping_h_day_targets_use_a_lag_of_at_least_h_minus_1(results):
    # The same daily scores relabelled as 20-day forecasts: the lag becomes 19, more
    # than the default rule's 5 for these 504 days.
    relabelled = {name: dataclasses.replace(r, horizon=20) for name, r in results.items()}
    comps = calibration.comparisons(relabelled, "garch_t")
    a, b = (results[n].table["log_score"].to_numpy() for n in ("garch_t", "ewma"))
    assert diebold_mariano(a, b)["lag"] < 19 == comps["ewma"]["lag"]
    assert comps["ewma"]["t_stat"] == pytest.approx(diebold_mariano(a, b, lag=19)["t_stat"])


def test_coverage_curves_match_interval_coverage(results):
    curves = calibration.coverage_curves(results)
    assert list(curves.columns) == list(results)
    for name, result in results.items():
        at_90 = curves[name].iloc[np.argmin(np.abs(curves.index - 0.90))]
        assert at_90 == pytest.approx(result.table["covered_90"].mean(), abs=1e-12)


def test_calibration_by_regime_groups_days_by_their_regime(results):
    result = results["garch_t"]
    # Give the days a made-up "regime": whether the forecast sd is above its median.
    sd = np.sqrt(result.predictive.variance())
    high = sd > np.median(sd)
    probs = np.stack([~high, high], axis=1).astype(float)

    result.extras["regime_probs"] = pd.DataFrame(probs, index=result.table.index)
    table = calibration.calibration_by_regime(result)
    assert table["n_days"].tolist() == [int((~high).sum()), int(high.sum())]
    assert table.loc[1, "log_score"] == pytest.approx(result.table["log_score"][high].mean())
    assert table.loc[1, "mean_abs_return"] > table.loc[0, "mean_abs_return"]
    del result.extras["regime_probs"]


def test_report_has_the_documented_metrics_shape(results, tmp_path):
    doc = write_backtest_report(results, tmp_path, protocol={"name": "test"}, reference="garch_t")
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert set(on_disk) >= {"protocol", "models", "comparisons"}
    for name in results:
        assert {
            "log_score",
            "crps",
            "coverage_90",
            "coverage_95",
            "pit_ks_pvalue",
            "n_days",
        } <= set(on_disk["models"][name])
    for comp in on_disk["comparisons"].values():
        assert {"mean_diff", "nw_se", "t_stat"} <= set(comp)
    assert on_disk["models"]["garch_t"]["log_score"] == pytest.approx(
        results["garch_t"].table["log_score"].mean()
    )
    for name in ("report.md", "pit_histograms.png", "coverage_curves.png", "score_differences.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert doc["best_baseline"] in {"ewma", "ms2"}
