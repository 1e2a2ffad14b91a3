"""SVI options travel as one typed, checked value (SVIOptions), not loose keywords."""

import pickle

import numpy as np
import pytest

import bayes_moe as bm
from bayes_moe.evaluation.moe_forecaster import MoEForecaster
from bayes_moe.inference.svi_options import SVIOptions

MODEL = dict(experts=["ar"], n_regimes=2, window=8)


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.loc["2017-01-01":"2017-12-29"]


def test_an_options_value_and_keywords_give_the_same_fit(frame):
    model = bm.BayesianMoE(**MODEL)
    keywords = model.fit(frame, num_steps=8, num_draws=4, seed=2, progress=False)
    options = SVIOptions(num_steps=8, num_draws=4, seed=2, progress=False)
    value = model.fit(frame, options=options)
    np.testing.assert_array_equal(keywords.diagnostics.losses, value.diagnostics.losses)
    # keywords replace the fields of the value
    mixed = model.fit(frame, options=options, seed=3)
    assert mixed.diagnostics.seed == 3 and value.diagnostics.seed == 2


def test_unknown_or_bad_options_fail_before_any_work(frame, monkeypatch):
    model = bm.BayesianMoE(**MODEL)
    monkeypatch.setattr(model, "prepare", lambda *a, **k: pytest.fail("prepared"))
    with pytest.raises(TypeError, match=r"unknown SVI option\(s\) \['num_step'\].*'num_steps'"):
        model.fit(frame, num_step=5)
    with pytest.raises(TypeError, match="num_step"):
        MoEForecaster(model, num_step=5)  # at construction, not at the first refit
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        SVIOptions(num_steps=0)
    with pytest.raises(ValueError, match="unknown guide 'flow'"):
        SVIOptions(guide="flow")
    with pytest.raises(ValueError, match=r"pretrain_holdout must be in \[0, 1\)"):
        SVIOptions(pretrain_holdout=1.0)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint"):
        SVIOptions(resume=True)


def test_a_forecaster_carries_its_options_and_replaces_them():
    forecaster = MoEForecaster(bm.BayesianMoE(**MODEL), num_steps=7, seed=1)
    assert forecaster.options == SVIOptions(num_steps=7, seed=1, progress=False)
    five = forecaster.replace(horizon=5, seed=4)
    assert (five.horizon, five.options.seed, five.options.num_steps) == (5, 4, 7)
    assert forecaster.for_horizon(20).horizon == 20 and forecaster.horizon == 1
    again = pickle.loads(pickle.dumps(forecaster))  # it travels to Dask workers
    assert again.options == forecaster.options
