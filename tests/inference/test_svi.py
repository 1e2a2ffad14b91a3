"""SVI options: warm starts from an earlier fit's posterior medians.

Oracle: the loss of a cold start at its first step, and the loss the earlier fit
reached; a warm start must begin near the latter. Real S&P 500 returns (arch.data).
"""

from __future__ import annotations

import numpy as np
import pytest

import bayes_moe as bm

OPTIONS = {"num_draws": 20, "seed": 0, "progress": False, "convergence_tol": None}


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.iloc[:600]


@pytest.fixture(scope="module")
def model():
    return bm.BayesianMoE(experts=["ar", "var"], n_regimes=2, window=16)


@pytest.fixture(scope="module")
def fitted(model, frame):
    return model.fit(frame, num_steps=200, **OPTIONS)


def _medians(fit, drop=()):
    return {k: v.median(0).values for k, v in fit.draws.items() if k not in drop}


def test_warm_start_begins_where_the_earlier_fit_ended(model, frame, fitted):
    cold = model.fit(frame, num_steps=5, **OPTIONS)
    warm = model.fit(frame, num_steps=5, init_values=_medians(fitted), **OPTIONS)
    reached = fitted.diagnostics.losses[-50:].mean()
    warm_gap = np.mean(warm.diagnostics.losses) - reached
    cold_gap = np.mean(cold.diagnostics.losses) - reached
    # The warm guide's scales still start small (init_scale), so its entropy term
    # keeps it a little above the fitted loss; the cold start is far above.
    assert 0 < warm_gap < 0.25 * cold_gap, (warm_gap, cold_gap)


def test_warm_start_of_a_subset_of_sites(model, frame, fitted):
    # Sites left out start as usual (here the gate's): no error, and still a warm start
    # for the experts' sites.
    values = {k: v for k, v in _medians(fitted).items() if not k.startswith("gate/")}
    fit = model.fit(frame, num_steps=5, init_values=values, **OPTIONS)
    assert len(fit.diagnostics.losses) == 5


def test_bad_init_values_fail_before_fitting(model, frame, fitted):
    values = _medians(fitted)
    with pytest.raises(ValueError, match="'tcn/head' is not a site"):
        model.fit(frame, num_steps=5, init_values={"tcn/head": values["ar/coef"]}, **OPTIONS)
    with pytest.raises(ValueError, match="site 'gate/bias' has shape"):
        model.fit(
            frame, num_steps=5, init_values={"gate/bias": values["gate/bias"][:, :1]}, **OPTIONS
        )
