"""Each neural family beats AR(2) out of sample on a series built for its family.

SYNTHETIC DATA (known ground truth), one series per family:

- local shape (cnn, depthwise, mobilenet, efficientnet_lite): the next value is a
  nonlinear function of the last two, r_t = 0.9 tanh(2 r_{t-1}) tanh(2 r_{t-2}) + e_t:
  uncorrelated with every lag, so invisible to a linear autoregression;
- planted dilated pattern (tcn): r_t = 0.45 r_{t-16} + 0.35 r_{t-32} + e_t, reached by
  the TCN's dilations 1..16 and not by two lags;
- level shifts (mamba): r_t = mu_t + e_t with mu_t piecewise constant, a new
  N(0, 1) level on about 2% of days; the best forecast is the mean since the last
  break, up to ~50 days back, which a selective state space can learn to reset (its
  input-dependent step) and two lags cannot. (A dependency at exact lags, below, is
  one a diagonal real SSM with a few states cannot pick out: measured -1.718 against
  AR(2) -1.716.)
- long lags (attention, performer, linformer, nystromformer, hyena):
  r_t = 0.5 r_{t-25} + 0.3 r_{t-38} + e_t, a dependency 25 and 38 days back that two
  lags cannot see and the whole 40-day window can;
- two planted periods (timesnet): r_t = 0.9 sin(2 pi t / 16 + phi_1) +
  0.7 sin(2 pi t / 6 + phi_2) + e_t, with noise e_t of unit variance; a frequency
  filter over the window isolates them, while AR(2) can follow one sinusoid at most;
- slowly drifting level and volatility (gru, minimalrnn, sru): r_t = mu_t + s_t e_t
  with mu_t = 0.98 mu_{t-1} + 0.1 u_t and log s_t a slow AR(1); the best forecast is a
  long exponential average, which a recurrence learns and two lags do not. (The AR
  expert's scale model already reads realized variances over 1-252 days, so drifting
  volatility alone would test the scale model rather than the recurrence.)

Each expert is fitted alone (one regime, the default two-stage strategy) on the
first 2,000 days and scored on the next 1,000 by its exact predictive log density;
the AR(2) expert, with the same scale model, is fitted and scored the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayes_moe as bm

N_TRAIN, N_TEST, WINDOW = 2000, 1000, 40


def _local_shape(rng, n):
    e = 0.5 * rng.standard_normal(n)
    r = np.zeros(n)
    for t in range(2, n):
        r[t] = 0.9 * np.tanh(2 * r[t - 1]) * np.tanh(2 * r[t - 2]) + e[t]
    return r


def _dilated(rng, n):
    e = rng.standard_normal(n)
    r = np.zeros(n)
    for t in range(32, n):
        r[t] = 0.45 * r[t - 16] + 0.35 * r[t - 32] + e[t]
    return r


def _long_lags(rng, n):
    e = rng.standard_normal(n)
    r = np.zeros(n)
    for t in range(38, n):
        r[t] = 0.5 * r[t - 25] + 0.3 * r[t - 38] + e[t]
    return r


def _level_shifts(rng, n):
    mu, level = np.zeros(n), 0.0
    for t in range(n):
        if rng.uniform() < 0.02:
            level = rng.standard_normal()
        mu[t] = level
    return mu + rng.standard_normal(n)


def _periods(rng, n):
    t = np.arange(n)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    signal = 0.9 * np.sin(2 * np.pi * t / 16 + phase[0]) + 0.7 * np.sin(
        2 * np.pi * t / 6 + phase[1]
    )
    return signal + rng.standard_normal(n)


def _drifting(rng, n):
    mu, log_s = np.zeros(n), np.zeros(n)
    for t in range(1, n):
        mu[t] = 0.98 * mu[t - 1] + 0.1 * rng.standard_normal()
        log_s[t] = 0.99 * log_s[t - 1] + 0.05 * rng.standard_normal()
    return mu + np.exp(log_s) * rng.standard_normal(n)


SERIES = {
    "cnn": _local_shape,
    "depthwise": _local_shape,
    "mobilenet": _local_shape,
    "efficientnet_lite": _local_shape,
    "tcn": _dilated,
    "gru": _drifting,
    "minimalrnn": _drifting,
    "sru": _drifting,
    "attention": _long_lags,
    "performer": _long_lags,
    "linformer": _long_lags,
    "nystromformer": _long_lags,
    "mamba": _level_shifts,
    "hyena": _long_lags,
    "timesnet": _periods,
}


def _frame(kind):
    n = N_TRAIN + N_TEST + 200
    r = SERIES[kind](np.random.default_rng(7), n)[200:]  # burn-in dropped
    index = pd.bdate_range("2000-01-03", periods=len(r), name="date")
    return pd.DataFrame({"ret": r}, index=index)


def _out_of_sample_log_score(spec, frame):
    train = frame.iloc[:N_TRAIN]
    model = bm.BayesianMoE(experts=[spec], n_regimes=1, window=WINDOW)
    fit = model.fit(train, num_steps=300, num_draws=50, seed=0, progress=False, pretrain_steps=500)
    updated = fit.update(frame)
    predictive = updated.predictive(start=frame.index[N_TRAIN - 1], end=frame.index[-2])
    rows = frame.index.get_indexer(predictive.dates)
    realized = frame["ret"].to_numpy()[rows + 1]
    return float(predictive.log_prob(realized).mean())


_AR_SCORES: dict = {}


def _ar_score(kind, frame):
    key = SERIES[kind].__name__
    if key not in _AR_SCORES:
        _AR_SCORES[key] = _out_of_sample_log_score({"name": "ar", "order": 2}, frame)
    return _AR_SCORES[key]


@pytest.mark.parametrize("name", list(SERIES))
def test_family_beats_ar_on_its_own_pattern(name):
    frame = _frame(name)
    expert = _out_of_sample_log_score({"name": name}, frame)
    ar = _ar_score(name, frame)
    # Measured (nats/day, seed 7), expert vs AR(2), stage one without early stopping:
    # local shape cnn -0.829, depthwise -0.785, mobilenet -0.785, efficientnet_lite
    # -0.791 vs -1.026; dilated tcn -1.694 vs -1.851; drifting gru -1.541, minimalrnn
    # -1.568, sru -1.554 vs -1.599. With early stopping (the default now): long lags
    # linformer -1.481, hyena -1.677 vs -1.716 (oracle -1.419); periods timesnet -1.499
    # vs -1.616; level shifts mamba -1.542 vs -1.585.
    assert expert > ar + 0.02, f"{name} {expert:.4f} vs AR(2) {ar:.4f}"
