"""InferenceData of a fit: groups, dims, and a pointwise log-likelihood that is right.

Every test runs under the installed ArviZ: 0.x (``InferenceData``) or 1.x (``DataTree``);
the package reaches ArviZ through :mod:`bayes_moe.inference.arviz` only.
"""

import warnings

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr
from pyro import poutine
from scipy import special, stats

from bayes_moe import plotting
from bayes_moe.inference import arviz as arviz_io

GROUPS = [
    "posterior",
    "posterior_predictive",
    "log_likelihood",
    "observed_data",
    "regime_posterior",
    "regime_summary",
    "predictive_summary",
]


@pytest.fixture(scope="module")
def idata(small_fit):
    return small_fit.to_inference_data()


def test_native_container_with_the_groups_dims_and_coords(small_fit, idata):
    if arviz_io.ARVIZ_1:
        assert isinstance(idata, xr.DataTree)
    else:
        assert isinstance(idata, az.InferenceData)
    assert arviz_io.group_names(idata) == GROUPS
    post = idata.posterior
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == small_fit.n_draws
    assert post["gate.transition"].dims == ("chain", "draw", "regime_from", "regime_to")
    assert list(post["regime_expert_weight"].coords["expert"].values) == ["ar", "var", "kalman"]
    assert post["ar.coef"].dims[-2:] == ("target", "ar.lag")
    assert list(post["ar.coef"].coords["ar.lag"].values) == [1, 2]
    assert list(post["var.coef"].coords["var.series"].values) == ["ret", "ret_nasdaq"]
    # A dim without named coords gets ArviZ's 0..n-1, as from_dict gives it.
    np.testing.assert_array_equal(post["var.df"].coords["var.df_dim"].values, [0])
    dates = idata.log_likelihood["y"].coords["date"].values
    np.testing.assert_array_equal(dates, small_fit.data.response_dates.values)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "date")
    assert idata.observed_data["y"].dims == ("date",)
    assert idata.regime_posterior["viterbi"].dims == ("chain", "draw", "date")
    assert idata.regime_summary["filtered_mean"].dims == ("date", "regime")
    assert post.attrs["inference_library"] == "pyro"
    # Transition rows are distributions; regime probabilities sum to one.
    np.testing.assert_allclose(post["gate.transition"].sum("regime_to"), 1.0, rtol=1e-12)
    np.testing.assert_allclose(idata.regime_posterior["filtered"].sum("regime"), 1.0, rtol=1e-10)


def test_posterior_values_are_the_draws(small_fit, idata):
    post = idata.posterior
    order = small_fit.posterior_summary().regime_order  # (S, K) original index per label
    for site, value in small_fit.draws.items():
        name = site.replace("/", ".")
        if site == "gate/transition":
            continue  # relabelled baseline matrix: rows checked in the test above
        if site == "gate/bias":  # (S, K, M): regimes put in the calm-to-turbulent order
            value = torch.take_along_dim(value, order[:, :, None], dim=1)
        np.testing.assert_array_equal(post[name].values[0], value.detach().numpy(), err_msg=site)


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


def test_summary_is_the_moments_of_the_draws(idata):
    table = arviz_io.summary(idata, ["gate.transition", "regime_duration"])
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    draws = idata.posterior["regime_duration"].values[0]  # (S, K)
    for k in range(draws.shape[1]):
        row = table.loc[f"regime_duration[{k}]"]
        assert row["mean"] == pytest.approx(draws[:, k].mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(draws[:, k].std(ddof=1), rel=1e-9)
        # The HDI holds 94% of the draws (ceil(0.94 S) of them) and no shorter interval does.
        inside = np.sum((draws[:, k] >= row["hdi_3%"]) & (draws[:, k] <= row["hdi_97%"]))
        assert inside >= np.ceil(0.94 * len(draws)) - 1
        window = int(np.floor(0.94 * len(draws)))
        ordered = np.sort(draws[:, k])
        shortest = np.min(ordered[window:] - ordered[: len(ordered) - window])
        assert row["hdi_97%"] - row["hdi_3%"] == pytest.approx(shortest, rel=1e-9)
    transition = table.loc[[i for i in table.index if i.startswith("gate.transition")]]
    assert len(transition) == 4 and np.all(transition["mean"] <= 1)


def test_psislw_finds_the_tail_of_the_ratios():
    # Ratios from a generalized Pareto law with shape 0.5: k-hat estimates 0.5. The body
    # keeps the raw ratios (weights proportional to them), the tail is smoothed below the
    # largest raw ratio, and the weights are normalized.
    rng = np.random.default_rng(0)
    # With the sign of the ratios wrong, the tail of 1/r (Pareto index 1) gives k-hat ~ 1.
    ratios = stats.genpareto(c=0.5).rvs(size=(4, 20_000), random_state=rng)
    log_ratio = np.log(ratios) + 7.0  # any shift: weights are normalized
    log_weights, k = arviz_io.psislw(log_ratio)
    assert log_weights.shape == (4, 20_000) and k.shape == (4,)
    # sd of k-hat ~ (1 + k) / sqrt(M) = 0.07 with a tail of M = 3 sqrt(S) = 424 draws
    np.testing.assert_allclose(k, 0.5, atol=0.2)
    assert k.mean() == pytest.approx(0.5, abs=0.1)
    np.testing.assert_allclose(special.logsumexp(log_weights, axis=-1), 0.0, atol=1e-12)
    for row in range(4):
        body = log_ratio[row] < np.quantile(log_ratio[row], 0.9)  # tail <= 3 sqrt(S) draws
        shift = log_weights[row][body] - log_ratio[row][body]
        np.testing.assert_allclose(shift, shift[0], atol=1e-10)
        top = log_ratio[row].argmax()
        assert np.all(log_weights[row] <= log_weights[row][top] + 1e-12)
        assert log_weights[row][top] <= log_ratio[row][top] + shift[0] + 1e-12


def test_loo_is_psis_of_the_pointwise_log_likelihood(small_fit, idata):
    log_lik = idata.log_likelihood["y"].values[0]  # (S, N)
    with pytest.warns(UserWarning):  # 40 draws: some k-hat exceed ArviZ's threshold
        loo = arviz_io.loo(idata)
    log_weights, k = arviz_io.psislw(-log_lik.T)  # (N, S) smoothed 1 / p(y_i | theta_s)
    elpd_i = special.logsumexp(log_weights + log_lik.T, axis=1)
    assert loo.elpd_loo == pytest.approx(elpd_i.sum(), rel=1e-10)
    ddof = 1 if arviz_io.ARVIZ_1 else 0  # ArviZ 1.x takes the sample variance
    assert loo.se == pytest.approx(np.sqrt(len(elpd_i) * elpd_i.var(ddof=ddof)), rel=1e-8)
    lppd = special.logsumexp(log_lik, axis=0) - np.log(small_fit.n_draws)
    assert loo.p_loo == pytest.approx(lppd.sum() - elpd_i.sum(), rel=1e-8)
    np.testing.assert_allclose(loo.pareto_k, k, rtol=1e-10)
    assert loo.good_k == pytest.approx(min(1 - 1 / np.log10(small_fit.n_draws), 0.7))
    # elpd_loo cannot exceed the in-sample log predictive density by much.
    assert loo.elpd_loo <= lppd.sum() + 1e-6


def test_loo_of_few_draws_is_plain_importance_sampling(idata):
    # A Pareto tail needs five draws: with 12 draws there is none (k-hat = inf) and LOO is
    # the harmonic mean of the draws' densities, exactly.
    groups = arviz_io.to_groups(idata)
    few = arviz_io.from_groups(
        {
            "posterior": groups["posterior"].isel(draw=slice(12)),
            "log_likelihood": groups["log_likelihood"].isel(draw=slice(12)),
        }
    )
    log_lik = groups["log_likelihood"]["y"].values[0, :12]  # (12, N)
    with pytest.warns(UserWarning):
        loo = arviz_io.loo(few)
    elpd_i = -(special.logsumexp(-log_lik, axis=0) - np.log(12))
    assert loo.elpd_loo == pytest.approx(elpd_i.sum(), rel=1e-12)
    assert np.all(np.isinf(loo.pareto_k))


def test_arviz_compare_ranks_fits_by_their_loo(idata):
    # The same draws with every day's log-likelihood one nat lower: the same PSIS weights
    # and an elpd_loo lower by the number of days, so it ranks second.
    groups = arviz_io.to_groups(idata)
    lowered = groups["log_likelihood"].copy()
    lowered["y"] = lowered["y"] - 1.0
    worse = arviz_io.from_groups({"posterior": groups["posterior"], "log_likelihood": lowered})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k; ArviZ 0.23 calls a deprecated pandas API
        table = az.compare({"worse": worse, "fit": idata})
        gap = arviz_io.loo(idata).elpd_loo - arviz_io.loo(worse).elpd_loo
    assert list(table.index) == ["fit", "worse"] and list(table["rank"]) == [0, 1]
    assert gap == pytest.approx(idata.log_likelihood.sizes["date"], rel=1e-9)


def test_netcdf_round_trip(tmp_path, idata):
    path = arviz_io.to_netcdf(idata, tmp_path / "fit.nc")
    back = arviz_io.from_netcdf(path)
    assert arviz_io.group_names(back) == GROUPS
    original = arviz_io.to_groups(idata)
    for name, dataset in arviz_io.to_groups(back).items():
        xr.testing.assert_identical(dataset, original[name])
    # The library's own reader opens the file too.
    native = az.from_netcdf(str(path))
    np.testing.assert_array_equal(
        native.posterior["gate.transition"].values, idata.posterior["gate.transition"].values
    )


def test_compact_copy_keeps_the_posterior_and_thins_the_rest(tmp_path, idata):
    small = arviz_io.compact(idata)
    groups = arviz_io.to_groups(small)
    assert arviz_io.group_names(small) == GROUPS
    assert groups["posterior"]["gate.transition"].dtype == np.float64
    assert groups["log_likelihood"]["y"].dtype == np.float32
    assert groups["regime_posterior"]["viterbi"].dtype == np.int8
    np.testing.assert_allclose(
        groups["log_likelihood"]["y"].values, idata.log_likelihood["y"].values, rtol=1e-6
    )
    kept = arviz_io.compact(idata, log_likelihood="kept")
    np.testing.assert_array_equal(
        arviz_io.to_groups(kept)["log_likelihood"]["draw"].values,
        idata.posterior_predictive["draw"].values,
    )
    back = arviz_io.from_netcdf(arviz_io.to_netcdf(small, tmp_path / "small.nc"))
    xr.testing.assert_identical(
        arviz_io.to_groups(back)["regime_posterior"], groups["regime_posterior"]
    )


def test_regime_variables_plot_with_arviz(tmp_path, small_fit, idata):
    # The regime report's quantities are posterior variables ArviZ can plot and summarize.
    import matplotlib.pyplot as plt

    post = idata.posterior
    reg = small_fit.regimes()
    np.testing.assert_allclose(post["regime_duration"].values[0], reg.duration_draws)
    np.testing.assert_allclose(post["regime_volatility_level"].values[0], reg.level_draws)
    np.testing.assert_allclose(post["regime_mean"].values[0], reg.mean_draws)
    assert post["gate.transition_coef"].dims[-2:] == ("regime_step", "transition_feature")
    path = plotting.plot_regime_posterior(idata, tmp_path / "forest.png")
    image = plt.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 3 * image.shape[0] / 2  # three panels
    assert np.mean(image[..., :3] < 0.5) > 0.001  # something is drawn
    # The native posterior plot of the installed ArviZ takes the object as it is.
    if arviz_io.ARVIZ_1:
        collection = az.plot_dist(idata, var_names=["regime_duration"], backend="matplotlib")
        assert len(collection.viz["figure"].item().axes) == 2
    else:
        axes = az.plot_posterior(idata, var_names=["regime_duration"])
        assert np.size(axes) == 2
    plt.close("all")
