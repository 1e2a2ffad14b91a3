"""The likelihood of h-day responses (h > 1): disjoint sums, each day counted once.

Consecutive origins' h-day sums share h - 1 days. The default likelihood lets only the
origins of ``non_overlapping_origins`` emit; ``"overlapping"`` scores every sum as an
independent observation (each day about h times: an overconfident posterior). The
calibration check fits SYNTHETIC i.i.d. Normal returns with a known mean, where the
posterior sd of the mean has a closed form to compare with: sigma / sqrt(T).
"""

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro import poutine

import bayes_moe as bm
from bayes_moe.data.windows import non_overlapping_origins, prepare
from bayes_moe.inference.posterior import conditioned_components

CONSTANT = {"name": "ar", "order": 0, "family": "normal", "heteroscedastic": False}


@pytest.mark.parametrize(("n", "h"), [(7, 3), (20, 5), (4, 1), (3, 5), (0, 2)])
def test_non_overlapping_origins_tile_the_days_once_ending_with_the_last(n, h):
    keep = non_overlapping_origins(n, h).numpy()
    kept = np.flatnonzero(keep)
    assert keep.shape == (n,) and (n == 0 or keep[-1])
    covered = np.concatenate([np.arange(t + 1, t + h + 1) for t in kept]) if n else []
    assert len(covered) == len(set(covered))  # no day counted twice
    if n:  # every day after the first kept origin is covered once
        assert sorted(covered) == list(range(kept[0] + 1, n + h))
    assert len(kept) == -(-n // h)
    with pytest.raises(ValueError, match="horizon >= 1"):
        non_overlapping_origins(5, 0)


def _log_evidence(sp500, horizon, likelihood, n_regimes=1):
    data = prepare(sp500.iloc[:300], targets=["ret"], window=8, horizon=horizon)
    model = bm.BayesianMoE(
        experts=[CONSTANT, "ar"],
        window=8,
        n_regimes=n_regimes,
        horizon_likelihood=likelihood,
    )
    program = model.program().eval()
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    pyro.set_rng_seed(0)
    trace = poutine.trace(program).get_trace(inputs, data.observed_response)
    params = {k: v["value"] for k, v in trace.nodes.items() if v["type"] == "sample"}
    params = {k: v for k, v in params.items() if not trace.nodes[k]["is_observed"]}
    with torch.no_grad():
        value = poutine.condition(program, data=params)(inputs, data.observed_response)
    return value, program, params, inputs, data.observed_response


def test_one_regime_evidence_is_the_sum_over_disjoint_responses(sp500):
    # Oracle: with one regime the log evidence is the sum over the kept origins of the
    # mixture's log density; "overlapping" sums over every origin.
    for likelihood in ("non_overlapping", "overlapping"):
        value, program, params, inputs, response = _log_evidence(sp500, 5, likelihood)
        comps = conditioned_components(program, params, inputs)
        per_origin = comps.log_emission(response)[:, 0]  # (N,)
        keep = non_overlapping_origins(inputs.n_origins, 5)
        expected = per_origin[keep].sum() if likelihood == "non_overlapping" else per_origin.sum()
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-9)


def test_one_day_responses_are_scored_the_same_either_way(sp500):
    a, *_ = _log_evidence(sp500, 1, "non_overlapping", n_regimes=2)
    b, *_ = _log_evidence(sp500, 1, "overlapping", n_regimes=2)
    assert torch.equal(a, b)


def test_unknown_likelihood_and_old_configs():
    with pytest.raises(ValueError, match="horizon_likelihood must be one of"):
        bm.BayesianMoE(horizon_likelihood="independent")
    config = bm.BayesianMoE().config()
    assert config["horizon_likelihood"] == "non_overlapping"
    del config["horizon_likelihood"]  # written before the option: fitted overlapping
    assert bm.BayesianMoE.from_config(config).horizon_likelihood == "overlapping"


def test_posterior_sd_of_the_mean_is_the_textbook_standard_error():
    # SYNTHETIC: 1,500 i.i.d. N(0.05, 1) days, h = 5. The daily mean's posterior sd (data
    # units, from the 5-day sums' intercept / 5) should be close to sigma / sqrt(T) with
    # disjoint sums, and about sqrt(h) times too small when the overlapping sums are
    # scored as independent.
    rng = np.random.default_rng(0)
    T, h = 1500, 5
    index = pd.bdate_range("2000-01-03", periods=T, name="date")
    frame = pd.DataFrame({"ret": 0.05 + rng.standard_normal(T)}, index=index)
    sd = {}
    for likelihood in ("non_overlapping", "overlapping"):
        model = bm.BayesianMoE(
            experts=[CONSTANT], n_regimes=1, window=1, horizon_likelihood=likelihood
        )
        fit = model.fit(
            frame,
            horizon=h,
            num_steps=400,
            learning_rate=0.05,
            convergence_tol=None,
            num_draws=400,
            seed=0,
            progress=False,
        )
        scale = fit.data.preprocessor.target_scale[0]
        sd[likelihood] = float((scale * fit.draws["ar/intercept"][:, 0] / h).std())
    textbook = 1.0 / np.sqrt(T)
    assert sd["non_overlapping"] == pytest.approx(textbook, rel=0.25)
    assert sd["overlapping"] < 0.6 * textbook
