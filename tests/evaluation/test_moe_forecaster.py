"""The mixture's predictive handed to the scoring code is the same distribution."""

import numpy as np
import pytest

import bayes_moe as bm
from bayes_moe.evaluation.moe_forecaster import MoEForecaster, to_location_scale


def test_location_scale_form_has_the_exact_mixture_density(small_fit):
    # Oracle: PredictiveMixture.log_prob (posterior draws x experts, data units).
    mixture = small_fit.predictive(start=small_fit.data.origin_dates[-30])
    flat = to_location_scale(mixture, mixture.dates)
    y = np.linspace(-3, 3, len(mixture.dates))
    np.testing.assert_allclose(flat.log_prob(y), mixture.log_prob(y[:, None]), rtol=1e-10)
    np.testing.assert_allclose(flat.mean(), mixture.mean[:, 0], rtol=1e-9)
    np.testing.assert_allclose(flat.variance(), mixture.variance[:, 0], rtol=1e-9)
    K = mixture.log_weights.shape[2]
    assert flat.n_components == mixture.n_draws * K * len(mixture.experts)


def test_two_target_var_is_scored_on_the_first_target_marginal(sp500):
    frame = sp500.iloc[-400:]
    model = bm.BayesianMoE(experts=["var"], n_regimes=1, window=8)
    fit = model.fit(frame, target=["ret", "ret_nasdaq"], num_steps=10, num_draws=6, progress=False)
    mixture = fit.predictive(start=fit.data.origin_dates[-5])
    flat = to_location_scale(mixture, mixture.dates)
    # The marginal of a multivariate t is t with the same df, loc_0 and sqrt(Sigma_00):
    # its mean and variance are the joint's first coordinates.
    np.testing.assert_allclose(flat.mean(), mixture.mean[:, 0], rtol=1e-9)
    np.testing.assert_allclose(flat.variance(), mixture.variance[:, 0], rtol=1e-9)


def test_predict_refuses_another_horizon(sp500):
    forecaster = MoEForecaster(
        bm.BayesianMoE(experts=["ar"], n_regimes=1, window=8), num_steps=5, num_draws=4
    )
    predict = forecaster(sp500.iloc[-300:-50])
    with pytest.raises(ValueError, match="horizon"):
        predict(sp500.iloc[-300:], sp500.index[-60:-50], 5)


def test_replayed_fits_score_exactly_as_the_backtest_that_made_them(sp500):
    from bayes_moe.evaluation.backtest import backtest
    from bayes_moe.evaluation.moe_forecaster import FittedForecaster

    frame = sp500.iloc[-360:]
    forecaster = MoEForecaster(
        bm.BayesianMoE(experts=["ar"], n_regimes=1, window=8), num_steps=5, num_draws=4
    )
    options = {"test_start": frame.index[-40], "refit_every": 20, "progress": False}
    first = backtest(frame, forecaster, keep_fits=True, **options)
    assert not hasattr(forecaster, "fits")  # the forecaster keeps nothing; the result does
    assert [fit.data.dates[-1] for fit in first.fits] == first.refit_dates
    again = backtest(frame, FittedForecaster(first.fits), **options)
    assert backtest(frame, forecaster, **options).fits == []  # not kept unless asked
    np.testing.assert_array_equal(first.table["log_score"], again.table["log_score"])
    with pytest.raises(ValueError, match="no fit ends on"):  # fits of another backtest
        backtest(frame, FittedForecaster(first.fits[1:]), **options)
