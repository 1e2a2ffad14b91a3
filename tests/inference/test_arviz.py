"""InferenceData of a fit: groups, dims, and a pointwise log-likelihood that is right."""

import arviz as az
import numpy as np
import pytest
import torch
from pyro import poutine


@pytest.fixture(scope="module")
def idata(small_fit):
    return small_fit.to_inference_data()


def test_groups_dims_and_coords(small_fit, idata):
    for group in (
        "posterior",
        "posterior_predictive",
        "observed_data",
        "log_likelihood",
        "regime_posterior",
    ):
        assert group in idata.groups()
    post = idata.posterior
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == small_fit.n_draws
    assert post["gate.transition"].dims == ("chain", "draw", "regime_from", "regime_to")
    assert list(post["regime_expert_weight"].coords["expert"].values) == ["ar", "var", "kalman"]
    assert post["ar.coef"].dims[-2:] == ("target", "ar.lag")
    assert list(post["ar.coef"].coords["ar.lag"].values) == [1, 2]
    assert list(post["var.coef"].coords["var.series"].values) == ["ret", "ret_nasdaq"]
    dates = idata.log_likelihood["y"].coords["date"].values
    np.testing.assert_array_equal(dates, small_fit.data.response_dates.values)
    # Transition rows are distributions; regime probabilities sum to one.
    np.testing.assert_allclose(post["gate.transition"].sum("regime_to"), 1.0, rtol=1e-12)
    np.testing.assert_allclose(idata.regime_posterior["filtered"].sum("regime"), 1.0, rtol=1e-10)


def test_pointwise_log_likelihood_sums_to_the_marginal_likelihood(small_fit, idata):
    # For h = 1 the one-step predictive densities factor the marginal likelihood:
    # sum_t log p(y_t | y_{<t}, theta) = log p(y_{1:T} | theta) (chain rule). The right
    # side comes from the Pyro model's own factor for each draw, in data units.
    data = small_fit.data
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    log_lik = idata.log_likelihood["y"].values[0]  # (S, N)
    jacobian = np.log(data.preprocessor.target_scale).sum() * data.n_observed
    for s in (0, 7, small_fit.n_draws - 1):
        draw = {k: v[s] for k, v in small_fit.draws.items()}
        with torch.no_grad():
            evidence = poutine.condition(small_fit.program, data=draw)(
                inputs, data.observed_response
            )
        assert log_lik[s].sum() == pytest.approx(evidence.item() - jacobian, rel=1e-9)


def test_observed_data_are_the_returns(small_fit, idata):
    frame = small_fit.data.frame
    observed = idata.observed_data["y"]
    expected = frame.loc[observed.coords["date"].values, "ret"].to_numpy()
    np.testing.assert_allclose(observed.values, expected, rtol=1e-12, atol=1e-12)


def test_arviz_summary_loo_and_compare_work(small_fit, idata):
    summary = az.summary(idata, var_names=["gate.transition", "regime_duration"], kind="stats")
    assert np.all(summary["mean"].loc[[c for c in summary.index if "transition" in c]] <= 1)
    with pytest.warns(UserWarning):
        loo = az.loo(idata)  # few draws: ArviZ warns about Pareto k; the numbers still exist
    assert np.isfinite(loo["elpd_loo"])
    # elpd_loo cannot exceed the in-sample log predictive density by construction.
    lppd = np.logaddexp.reduce(idata.log_likelihood["y"].values[0], axis=0) - np.log(
        small_fit.n_draws
    )
    assert loo["elpd_loo"] <= lppd.sum() + 1e-6


def test_netcdf_round_trip(tmp_path, idata):
    path = tmp_path / "fit.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    np.testing.assert_allclose(
        back.posterior["gate.transition"].values, idata.posterior["gate.transition"].values
    )
    assert "regime_posterior" in back.groups()


def test_regime_variables_plot_with_arviz(tmp_path, small_fit, idata):
    # The regime report's quantities are posterior variables ArviZ can plot and summarize.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    post = idata.posterior
    reg = small_fit.regimes()
    np.testing.assert_allclose(post["regime_duration"].values[0], reg.duration_draws)
    np.testing.assert_allclose(post["regime_volatility_level"].values[0], reg.level_draws)
    np.testing.assert_allclose(post["regime_mean"].values[0], reg.mean_draws)
    assert post["gate.transition_coef"].dims[-2:] == ("regime_step", "transition_feature")
    axes = az.plot_posterior(idata, var_names=["regime_duration"])
    assert np.size(axes) == 2
    axes = az.plot_forest(idata, var_names=["regime_volatility", "regime_duration"], combined=True)
    assert len(axes[0].get_yticklabels()) == 4
    plt.savefig(tmp_path / "forest.png")
    plt.close("all")
    assert (tmp_path / "forest.png").stat().st_size > 0
