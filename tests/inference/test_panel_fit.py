"""Panel fits end to end: the shared market regime is recovered (synthetic panel with a
known volatility switch), per-asset forecasts, InferenceData with an asset dimension,
long frames, and the 20 real S&P 500 stocks of the panel extra."""

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch

import bayes_moe as bm
from bayes_moe.inference.arviz import group_names
from tests.models.test_panel import WINDOW, synthetic_panel


@pytest.fixture(scope="module")
def panel_fit():
    frame = synthetic_panel(n_days=300)
    # Statistical experts: a network point-estimated on 1,200 synthetic asset-days would
    # fit their noise in sample (the cross-sectional expert is checked in test_panel.py
    # and on the real panel below).
    model = bm.BayesianMoE(experts=["ar", "kalman"], n_regimes=2, window=WINDOW)
    return model.fit(frame, panel=True, seed=0, num_steps=300, num_draws=40, progress=False)


def test_shared_regime_recovers_the_known_volatility_switch(panel_fit):
    """SYNTHETIC: days 80-159 have a factor three times as volatile as the others."""
    smoothed = panel_fit.regimes().smoothed
    day = np.arange(len(panel_fit.data.dates))
    truth = pd.Series((day >= 80) & (day < 160), index=panel_fit.data.dates)
    turbulent = smoothed[1] > 0.5
    accuracy = (turbulent == truth.reindex(smoothed.index)).mean()
    assert accuracy > 0.9
    np.testing.assert_allclose(smoothed.sum(axis=1), 1.0, atol=1e-12)
    levels = panel_fit.regimes().volatility["mean"]
    assert levels[1] > 1.5 * levels[0]  # the turbulent regime's predictive sd is larger


def test_forecast_has_one_row_per_asset_scaled_by_its_exposure(panel_fit):
    forecast = panel_fit.forecast(num_samples=4000)
    frame = forecast.to_frame()
    assert list(frame.index) == ["A", "B", "C", "D"]
    assert frame.index.name == "asset"
    assert (frame["q0.05"] < frame["q0.5"]).all() and (frame["q0.5"] < frame["q0.95"]).all()
    # SYNTHETIC loadings 1.0, 0.8, 1.2, 0.5 on the factor: C is the most volatile, D the least.
    assert frame["std"].idxmax() == "C" and frame["std"].idxmin() == "D"
    np.testing.assert_allclose(forecast.regime_probs["mean"].sum(), 1.0, atol=1e-12)
    # The exact mixture density agrees with its own samples (a histogram check).
    c = forecast["C"]
    lo, hi = np.quantile(c.samples, [0.25, 0.75])
    grid = np.linspace(lo, hi, 201)
    mass = np.trapezoid(np.exp([c.log_prob(y) for y in grid]), grid)
    assert abs(mass - 0.5) < 0.03


def test_delisted_asset_gets_no_forecast():
    frame = synthetic_panel(n_days=200)
    frame.iloc[-30:, 1] = np.nan  # B delisted 30 days before the end
    model = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=WINDOW)
    fit = model.fit(frame, panel=True, seed=0, num_steps=20, num_draws=5, progress=False)
    assert list(fit.forecast(num_samples=100).to_frame().index) == ["A", "C", "D"]
    ll = fit.pointwise_log_likelihood()
    assert ll["B"].iloc[-29:].isna().all() and ll["A"].notna().all()


def test_inference_data_has_an_asset_dimension(panel_fit):
    idata = panel_fit.to_inference_data(keep_draws=10)
    groups = group_names(idata)
    assert {"posterior", "log_likelihood", "observed_data", "regime_posterior"} <= set(groups)
    y = idata["observed_data"]["y"]
    assert y.dims == ("date", "asset") and list(y["asset"].values) == ["A", "B", "C", "D"]
    ll = idata["log_likelihood"]["y"]
    assert ll.dims == ("chain", "draw", "date", "asset")
    # Unscored asset-days: NaN observations, zero log-likelihood.
    np.testing.assert_array_equal(np.isnan(y.values), ll.values[0, 0] == 0.0)
    summary = az.summary(idata, var_names=["regime_volatility"], kind="stats")
    assert len(summary) == 2


def test_long_frame_gives_the_same_fit_as_the_wide_one():
    wide = synthetic_panel(n_days=160)
    long = wide.stack().rename("ret").reset_index()  # date, asset, ret; NaN rows dropped
    long = long.rename(columns={"asset": "ticker"}).set_index("date")
    model = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=WINDOW)
    options = dict(seed=3, num_steps=15, num_draws=3, progress=False)
    a = model.fit(wide, panel=True, **options)
    b = model.fit(long, asset_col="ticker", **options)
    np.testing.assert_array_equal(a.diagnostics.losses, b.diagnostics.losses)
    torch.testing.assert_close(a.draws["ar/coef"], b.draws["ar/coef"], rtol=0, atol=0)


def test_real_sp500_stocks_panel():
    pytest.importorskip("skfolio", reason="needs the panel extra: pip install 'bayes-moe[panel]'")
    stocks = bm.data.load_sp500_stocks().loc["2018"]
    model = bm.BayesianMoE(experts=["ar", "cross_sectional"], n_regimes=2, window=20)
    fit = model.fit(stocks, panel=True, seed=0, num_steps=30, num_draws=10, progress=False)
    frame = fit.forecast(num_samples=200).to_frame()
    assert len(frame) == 20 and frame["std"].gt(0).all()
    assert frame["origin_date"].eq(pd.Timestamp("2018-12-31")).all()
    filtered = fit.regimes().filtered
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0, atol=1e-12)
    assert fit.embeddings().shape == (20, 4)


def test_apply_forecasts_new_days_without_look_ahead():
    """The fitted draws on a longer panel: origins inside the fitted days keep their
    predictive exactly (causal regimes, windows and gate), new origins get one."""
    frame = synthetic_panel(n_days=260)
    model = bm.BayesianMoE(experts=["ar", "cross_sectional"], n_regimes=2, window=WINDOW)
    fit = model.fit(frame.iloc[:200], panel=True, seed=0, num_steps=20, num_draws=8, progress=False)
    later = fit.apply(frame)
    inside, new = frame.index[190], frame.index[230]
    y = np.array([[-1.5], [0.2], [2.5]])
    for asset in ("A", "D"):
        before = fit.predictive(asset, inside, inside)
        after = later.predictive(asset, inside, inside)
        np.testing.assert_allclose(
            [before.log_prob(v)[0] for v in y[:, None]],
            [after.log_prob(v)[0] for v in y[:, None]],
            rtol=1e-12,
        )
    assert np.isfinite(later.predictive("A", new, new).mean).all()
    with pytest.raises(KeyError, match="unknown asset 'Z'"):
        later.predictive("Z")


def test_asset_levels_recover_which_assets_swing_with_the_market():
    """SYNTHETIC: four independent assets whose volatility triples (A, B) or rises by a
    third (C, D) in days 80-159: the loadings on the shared regime levels tell them
    apart, and the InferenceData has each asset's levels."""
    rng = np.random.default_rng(1)
    n = 300
    turbulent = (np.arange(n) >= 80) & (np.arange(n) < 160)
    swing = np.array([3.0, 3.0, 1.3, 1.3])
    values = rng.standard_normal((n, 4)) * np.where(turbulent[:, None], swing, 1.0)
    frame = pd.DataFrame(
        values,
        index=pd.bdate_range("2015-01-01", periods=n, name="date"),
        columns=pd.Index(["A", "B", "C", "D"], name="asset"),
    )
    # Homoscedastic experts: the regime levels alone carry the volatility switch. The
    # experts' one scale is shared by the assets while each asset is standardized by its
    # own sd, so A's calm days (0.57 sd) and C's (0.92 sd) share a scale: the loadings'
    # ratio that fits best is about 1.7, not log 3 / log 1.3 = 4.2 (shared levels: 1).
    ar = {"name": "ar", "heteroscedastic": False}
    model = bm.BayesianMoE(experts=[ar], n_regimes=2, window=WINDOW, asset_levels=True)
    fit = model.fit(frame, panel=True, seed=0, num_steps=400, num_draws=40, progress=False)
    rho = fit.draws["gate/asset_level_loading"].mean(0).numpy()
    assert min(rho[:2]) > 1.25 * max(rho[2:])
    idata = fit.to_inference_data()
    levels = idata.posterior["asset_volatility_level"]
    assert levels.dims[-2:] == ("regime", "asset")
    turbulent_level = levels.sel(regime=1).mean(("chain", "draw"))
    assert float(turbulent_level.sel(asset="A")) > float(turbulent_level.sel(asset="C"))
    assert idata.posterior["gate.asset_level_loading"].dims[-1] == "asset"
