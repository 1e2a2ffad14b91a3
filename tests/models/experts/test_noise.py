"""The shared noise model of the experts against scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from pyro import poutine

from bayes_moe.models.experts import AR, VAR, Kalman, NoiseModel
from bayes_moe.models.experts.noise import ShiftedGamma

DT = torch.float64


def test_shifted_gamma_log_prob_equals_scipy():
    # Reference: scipy.stats.gamma(a, loc=2, scale=1 / rate), the Gamma shifted to (2, inf).
    concentration, rate = 2.0, 0.1
    prior = ShiftedGamma(torch.tensor(concentration, dtype=DT), torch.tensor(rate, dtype=DT))
    x = np.array([2.001, 2.5, 3.0, 7.3, 22.0, 80.0])
    expected = scipy.stats.gamma(concentration, loc=2.0, scale=1 / rate).logpdf(x)
    np.testing.assert_allclose(prior.log_prob(torch.as_tensor(x)).numpy(), expected, rtol=1e-12)

    # Batched through expand (as the expert's prior is used): same values, batch (3,).
    batched = prior.expand([3])
    assert isinstance(batched, ShiftedGamma) and batched.batch_shape == (3,)
    np.testing.assert_allclose(
        batched.log_prob(torch.as_tensor(x[:3])).numpy(), expected[:3], rtol=1e-12
    )


def test_shifted_gamma_support_is_above_two():
    # Reference: nu = 2 + G with G > 0 (the Student-t variance needs nu > 2); samples have
    # mean 2 + a / rate = 22 (scipy.stats.gamma(2, loc=2, scale=10).mean()).
    prior = ShiftedGamma(torch.tensor(2.0, dtype=DT), torch.tensor(0.1, dtype=DT))
    assert not prior.support.check(torch.tensor(2.0, dtype=DT))
    assert prior.support.check(torch.tensor(2.0001, dtype=DT))
    torch.manual_seed(0)
    samples = prior.sample((100_000,))
    assert samples.min() > 2.0
    mean = scipy.stats.gamma(2.0, loc=2.0, scale=10.0).mean()
    sd = scipy.stats.gamma(2.0, loc=2.0, scale=10.0).std()
    assert samples.mean().item() == pytest.approx(mean, abs=4 * sd / np.sqrt(len(samples)))


@pytest.mark.parametrize("family", ["normal", "studentt"])
@pytest.mark.parametrize("batch", [(), (3,)], ids=["no-draws", "S=3"])
def test_predictive_from_variance_has_the_requested_variance(family, batch):
    # Reference: the requested variance v; for Student-t the scale sqrt(v (nu - 2) / nu)
    # gives Var = scale^2 nu / (nu - 2) = v, checked against scipy.stats.t.var as well.
    rng = np.random.default_rng(0)
    N, d_y = 7, 2
    loc = torch.as_tensor(rng.standard_normal(batch + (N, d_y)))
    variance = torch.as_tensor(rng.uniform(0.2, 3.0, batch + (N, d_y)))
    df = torch.as_tensor(rng.uniform(2.5, 30.0, batch + (d_y,))) if family == "studentt" else None
    noise = NoiseModel(family, heteroscedastic=False)
    d = noise.predictive_from_variance(loc, variance, df)
    assert d.batch_shape == batch + (N,) and d.event_shape == (d_y,)
    torch.testing.assert_close(d.variance, variance, rtol=1e-12, atol=0)
    torch.testing.assert_close(d.mean, loc, rtol=0, atol=0)
    if df is not None:
        nu = df.unsqueeze(-2).expand_as(variance).numpy()
        scale = d.base_dist.scale.numpy()
        np.testing.assert_allclose(scipy.stats.t.var(nu, scale=scale), variance.numpy(), rtol=1e-12)


@pytest.mark.parametrize("family", ["normal", "studentt"])
def test_predictive_log_prob_equals_scipy(family):
    # Reference: scipy.stats.norm / t log densities, summed over the d_y targets.
    rng = np.random.default_rng(1)
    N, d_y = 5, 2
    loc = rng.standard_normal((N, d_y))
    scale = rng.uniform(0.5, 2.0, (N, d_y))
    df = np.array([4.0, 9.0])
    y = rng.standard_normal((N, d_y))
    noise = NoiseModel(family)
    d = noise.predictive(
        torch.as_tensor(loc),
        torch.as_tensor(scale),
        torch.as_tensor(df) if family == "studentt" else None,
    )
    if family == "normal":
        expected = scipy.stats.norm.logpdf(y, loc, scale).sum(-1)
    else:
        expected = scipy.stats.t.logpdf(y, df, loc, scale).sum(-1)
    np.testing.assert_allclose(d.log_prob(torch.as_tensor(y)).numpy(), expected, rtol=1e-12)


def _scale_with(noise: NoiseModel, vol: torch.Tensor, params: dict) -> torch.Tensor:
    def sample():
        return noise.sample_scale(vol, dtype=DT)

    return poutine.condition(sample, data=params)()


def test_heteroscedastic_scale_is_the_har_regression_by_hand():
    # Reference: log s_{t,i} = log sigma_i + sum_w gamma_{i,w} f_{t,i,w}, written out term
    # by term for a 2-day, 2-target, 3-span input.
    vol = torch.tensor(
        [[[0.5, -1.0, 0.2], [0.0, 0.3, -0.4]], [[-0.7, 0.1, 1.5], [2.0, -0.2, 0.0]]], dtype=DT
    )  # (n=2, d_y=2, V=3)
    sigma = torch.tensor([0.8, 1.3], dtype=DT)
    gamma = torch.tensor([[0.2, -0.1, 0.4], [0.3, 0.05, -0.6]], dtype=DT)
    s = _scale_with(NoiseModel("normal", True), vol, {"scale": sigma, "vol_coef": gamma})
    expected = np.empty((2, 2))
    for t in range(2):
        for i in range(2):
            log_s = np.log(sigma[i].item())
            for w in range(3):
                log_s += gamma[i, w].item() * vol[t, i, w].item()
            expected[t, i] = np.exp(log_s)
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-14)

    # With S = 4 draws of the parameters: each draw's scale as above.
    sigmas = sigma * torch.arange(1, 5, dtype=DT)[:, None]
    gammas = gamma * torch.linspace(-1, 1, 4, dtype=DT)[:, None, None]
    batched = _scale_with(NoiseModel("normal", True), vol, {"scale": sigmas, "vol_coef": gammas})
    assert batched.shape == (4, 2, 2)
    for i in range(4):
        single = _scale_with(
            NoiseModel("normal", True), vol, {"scale": sigmas[i], "vol_coef": gammas[i]}
        )
        torch.testing.assert_close(batched[i], single, rtol=1e-14, atol=0)


def test_homoscedastic_scale_is_sigma_on_every_day():
    # Reference: s_t = sigma for every day; one row per day, as documented ((n, d_y)),
    # so that experts whose location is constant still get one predictive per origin.
    vol = torch.randn(5, 2, 3, dtype=DT)
    sigma = torch.tensor([0.8, 1.3], dtype=DT)
    trace = poutine.trace(
        poutine.condition(
            lambda: NoiseModel("normal", False).sample_scale(vol, dtype=DT), {"scale": sigma}
        )
    ).get_trace()
    assert "vol_coef" not in trace.nodes
    s = trace.nodes["_RETURN"]["value"]
    assert s.shape == (5, 2)
    torch.testing.assert_close(s, sigma.expand(5, 2), rtol=0, atol=0)


def test_priors_of_the_noise_sites():
    # Reference: the module docstring: sigma ~ LogNormal(0, 1), gamma_w ~ N(0, 0.5^2),
    # nu - 2 ~ Gamma(2, 0.1); checked through the log density of fixed values (scipy).
    vol = torch.zeros(3, 1, 6, dtype=DT)
    noise = NoiseModel("studentt", True)

    def model():
        noise.sample_scale(vol, dtype=DT)
        noise.sample_df(1, dtype=DT)

    values = {
        "scale": torch.tensor([0.7], dtype=DT),
        "vol_coef": torch.tensor([[0.1, -0.3, 0.6, 0.2, -0.2, 0.05]], dtype=DT),
        "df": torch.tensor([5.5], dtype=DT),
    }
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace()
    log_probs = {name: trace.nodes[name]["fn"].log_prob(values[name]).item() for name in values}
    assert log_probs["scale"] == pytest.approx(scipy.stats.lognorm(1.0).logpdf(0.7), rel=1e-12)
    expected_gamma = scipy.stats.norm(0, 0.5).logpdf([0.1, -0.3, 0.6, 0.2, -0.2, 0.05]).sum()
    assert log_probs["vol_coef"] == pytest.approx(expected_gamma, rel=1e-12)
    expected_df = scipy.stats.gamma(2.0, loc=2.0, scale=10.0).logpdf(5.5)
    assert log_probs["df"] == pytest.approx(expected_df, rel=1e-12)
    assert NoiseModel("normal").sample_df(1, dtype=DT) is None  # no df site for Normal


@pytest.mark.parametrize("make", [NoiseModel, AR, VAR, Kalman])
def test_invalid_family_raises(make):
    with pytest.raises(ValueError, match="family must be 'studentt' or 'normal', got 'cauchy'"):
        make(family="cauchy")
