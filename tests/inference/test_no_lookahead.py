"""No look-ahead: changing data after day t changes nothing the model says about days <= t.

With the fitted posterior draws held fixed, the features, windows, expert predictives,
filtered regime probabilities and one-step forecasts of every origin up to t are
computed again on a frame whose rows after t were replaced by noise; they must not
move. A forecast made from data truncated at t must equal the in-sample predictive at
origin t.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from bayes_moe.data.windows import prepare


@pytest.fixture(scope="module")
def perturbed(small_fit):
    frame = small_fit.data.frame
    cut = frame.index[len(frame) - 200]
    rng = np.random.default_rng(0)
    changed = frame.copy()
    after = changed.index > cut
    noise = rng.normal(1.0, 0.3, size=(after.sum(), changed.shape[1]))
    changed.loc[after] = changed.loc[after].to_numpy() * np.abs(noise)
    return cut, small_fit.apply(changed)  # the perturbed history as it is


def test_windows_and_volatility_features_are_causal(small_fit, perturbed):
    cut, other = perturbed
    rows = int(np.searchsorted(small_fit.data.dates, cut, side="right"))
    a, b = small_fit.data.inputs, other.data.inputs
    torch.testing.assert_close(a.series[:rows], b.series[:rows], rtol=0, atol=0)
    torch.testing.assert_close(a.vol[:rows], b.vol[:rows], rtol=0, atol=0)
    assert not torch.equal(a.series[rows:], b.series[rows:])
    n = int((small_fit.data.origin_dates <= cut).sum())
    origins = a.origins[:n]
    torch.testing.assert_close(a.at(origins).windows(16), b.at(origins).windows(16), rtol=0, atol=0)


def test_forecasts_and_filtered_regimes_up_to_t_do_not_move(small_fit, perturbed):
    cut, other = perturbed
    ours = small_fit.predictive(end=cut)
    theirs = other.predictive(end=cut)
    y = small_fit.data.frame.loc[ours.dates, "ret"].to_numpy()
    np.testing.assert_allclose(ours.log_prob(y), theirs.log_prob(y), rtol=1e-12)
    np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.variance, theirs.variance, rtol=1e-12)
    # Filtered probabilities are causal; smoothed ones are not (and must differ).
    filt_a, filt_b = small_fit.regimes().filtered, other.regimes().filtered
    np.testing.assert_allclose(filt_a.loc[:cut], filt_b.loc[:cut], rtol=1e-10, atol=1e-12)
    smooth_a, smooth_b = small_fit.regimes().smoothed, other.regimes().smoothed
    assert np.abs(smooth_a.loc[:cut].to_numpy() - smooth_b.loc[:cut].to_numpy()).max() > 1e-6


def test_forecast_from_truncated_data_equals_in_sample_predictive(small_fit):
    frame = small_fit.data.frame
    t = frame.index[-100]
    truncated = small_fit.apply(frame.loc[:t])
    forecast = truncated.forecast(num_samples=10)
    in_sample = small_fit.predictive(start=t, end=t)
    y = np.array([[0.7]])
    assert forecast.origin_date == t
    np.testing.assert_allclose(forecast.mixture.log_prob(y), in_sample.log_prob(y), rtol=1e-12)
    np.testing.assert_allclose(forecast.mixture.mean, in_sample.mean, rtol=1e-12)


def test_prepared_responses_never_reach_into_the_inputs(sp500):
    # The response of origin t is the sum of days t+1..t+h; change day t+1 only and
    # check that nothing an expert reads at origin t changes.
    frame = sp500.iloc[:200]
    data = prepare(frame, targets=["ret"], window=10, horizon=1)
    t = 120
    changed = frame.copy()
    changed.iloc[t + 1 :, :] = changed.iloc[t + 1 :, :] * 1.5
    other = prepare(changed, targets=["ret"], window=10, horizon=1, preprocessor=data.preprocessor)
    origin = torch.tensor([t])
    torch.testing.assert_close(
        data.inputs.at(origin).windows(10, list(data.inputs.columns)),
        other.inputs.at(origin).windows(10, list(other.inputs.columns)),
    )
    index = t - (data.inputs.window - 1)
    assert data.response[index] != other.response[index]
    assert isinstance(data.dates, pd.DatetimeIndex)


def test_update_with_new_rows_only_equals_update_with_the_whole_frame(small_fit):
    # small_fit was fitted on 2014-2018; pretend its last 30 rows are new.
    frame = small_fit.data.frame
    older = small_fit.apply(frame.iloc[:-30])
    appended = older.update(frame.iloc[-30:])
    assert appended.data.dates.equals(small_fit.data.dates)
    a, b = appended.forecast(num_samples=10), small_fit.forecast(num_samples=10)
    assert a.origin_date == b.origin_date
    np.testing.assert_allclose(a.mixture.log_prob([[0.3]]), b.mixture.log_prob([[0.3]]), rtol=1e-12)
    np.testing.assert_allclose(
        appended.regimes().filtered.to_numpy(), small_fit.regimes().filtered.to_numpy(), rtol=1e-12
    )
