"""Issue 13, defect 5: memory that holds at scale.

The draws are evaluated in chunks sized by a memory budget, not all at once; per-day
quantities are reduced over the draws as the chunks pass (summaries) and kept per draw
only for a thinned set of draws; the report's NetCDF holds those, in float32. Each
check has an oracle that can disagree: the evaluation of all draws in one chunk, numpy
moments over every draw, the exact predictive mixture of
:class:`~bayes_moe.inference.predictive.PredictiveMixture`. Real S&P 500 returns
(arch.data), tiny fits (few SVI steps, a short window).
"""

import threading

import numpy as np
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from scipy import stats

import bayes_moe as bm
from bayes_moe.cli import main
from bayes_moe.inference import posterior as post_mod
from bayes_moe.inference.arviz import from_netcdf, group_names, loo
from bayes_moe.inference.posterior import (
    PosteriorEvaluation,
    RunningMoments,
    draws_per_chunk,
    evaluate_posterior,
    summarize_posterior,
    thinned_draws,
    working_floats_per_draw_origin,
)
from bayes_moe.inference.predictive import PredictiveMixture
from bayes_moe.models.distributions import decompose, index_batch, regime_cdf
from bayes_moe.report import write_report

N_DRAWS = 24
#: A budget far below one draw's need: every chunk holds a single draw.
TINY_BUDGET_MIB = 1e-3
#: The groups of the report's inference_data.nc (bayes_moe.inference.arviz docstring).
GROUPS = {
    "posterior",
    "posterior_predictive",
    "log_likelihood",
    "observed_data",
    "regime_posterior",
    "regime_summary",
    "predictive_summary",
}


@pytest.fixture(scope="module")
def fit(sp500):
    model = bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=2, window=16)
    frame = sp500.loc["2016-01-01":]
    return model.fit(frame, "ret", num_steps=20, num_draws=N_DRAWS, seed=0, progress=False)


@pytest.fixture(scope="module")
def full(fit):
    """Every draw in one chunk: the oracle."""
    n_origins = fit.data.inputs.n_origins
    assert draws_per_chunk(n_origins, 2, 3) >= N_DRAWS  # the default budget: one chunk
    return evaluate_posterior(fit.program, fit.draws, fit.data)


def _params(experts) -> list[torch.Tensor]:
    return [p for d in experts for p in decompose(d)[1]]


def test_chunked_evaluation_equals_one_chunk(fit, full):
    assert draws_per_chunk(fit.data.inputs.n_origins, 2, 3, memory_budget_mib=TINY_BUDGET_MIB) == 1
    chunked = evaluate_posterior(
        fit.program, fit.draws, fit.data, memory_budget_mib=TINY_BUDGET_MIB
    )
    for name in PosteriorEvaluation.__dataclass_fields__:
        if name == "experts":
            for a, b in zip(_params(full.experts), _params(chunked.experts)):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
            continue
        torch.testing.assert_close(
            getattr(chunked, name), getattr(full, name), rtol=1e-6, atol=1e-6, msg=name
        )


def test_chunks_evaluated_on_threads_equal_those_evaluated_in_turn(fit, full, monkeypatch):
    # Oracle: the one-thread evaluation. Chunks of one draw, so both runs evaluate the
    # same chunks with one torch thread each; they are combined in draw order, so the
    # summaries are equal to the last bit, and the full evaluation equals one chunk.
    threads = []
    evaluate = post_mod._evaluate_chunk

    def spy(*args):
        threads.append(threading.current_thread().name)
        return evaluate(*args)

    monkeypatch.setattr(post_mod, "_evaluate_chunk", spy)
    run = {"memory_budget_mib": TINY_BUDGET_MIB, "keep_draws": 5}
    alone = summarize_posterior(fit.program, fit.draws, fit.data, num_threads=1, **run)
    assert set(threads) == {threading.current_thread().name}
    threads.clear()
    side_by_side = summarize_posterior(fit.program, fit.draws, fit.data, num_threads=3, **run)
    assert len(threads) == N_DRAWS and all(name.startswith("posterior") for name in threads)
    for name in post_mod.PosteriorSummary.__dataclass_fields__:
        a, b = getattr(alone, name), getattr(side_by_side, name)
        if name == "tail_experts":
            assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b)))
        elif isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name
        else:
            assert a == b, name
    threaded = evaluate_posterior(
        fit.program, fit.draws, fit.data, memory_budget_mib=TINY_BUDGET_MIB, num_threads=2
    )
    for name in ("log_smoothed", "viterbi", "log_mix_weights", "posterior_predictive"):
        torch.testing.assert_close(getattr(threaded, name), getattr(full, name), msg=name)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_threads"):
            summarize_posterior(fit.program, fit.draws, fit.data, num_threads=bad)


def test_chunks_follow_the_budget_whatever_the_number_of_draws(fit, monkeypatch):
    n, budget = fit.data.inputs.n_origins, 2.0
    per_draw = 8 * n * working_floats_per_draw_origin(2, 3, 1)
    size = draws_per_chunk(n, 2, 3, memory_budget_mib=budget)
    assert size * per_draw <= budget * 2**20 < (size + 1) * per_draw
    # The chunk size depends on the days and the budget, never on the draws.
    assert draws_per_chunk(10 * n, 2, 3, memory_budget_mib=budget) == max(1, size // 10)
    seen = []
    evaluate = post_mod._evaluate_chunk

    def spy(program, draws, data, *lock):
        seen.append(next(iter(draws.values())).shape[0])
        return evaluate(program, draws, data, *lock)

    monkeypatch.setattr(post_mod, "_evaluate_chunk", spy)
    summarize_posterior(fit.program, fit.draws, fit.data, memory_budget_mib=budget, num_threads=1)
    assert sum(seen) == N_DRAWS and max(seen) == size < N_DRAWS
    with pytest.raises(ValueError, match="memory_budget_mib"):
        draws_per_chunk(n, 2, 3, memory_budget_mib=0)


def test_running_moments_equal_numpy_over_all_draws():
    x = torch.randn(11, 5, 3, dtype=torch.float64) * 3 + 7
    moments = RunningMoments()
    for chunk in torch.split(x, [1, 4, 2, 4]):
        moments.update(chunk)
    np.testing.assert_allclose(moments.mean, x.numpy().mean(0), rtol=1e-13)
    np.testing.assert_allclose(moments.sd, x.numpy().std(0), rtol=1e-12)


def test_summaries_equal_those_computed_from_all_draws(fit, full):
    summary = summarize_posterior(
        fit.program, fit.draws, fit.data, keep_draws=5, memory_budget_mib=TINY_BUDGET_MIB
    )
    n_obs = fit.data.n_observed
    filtered, smoothed = full.log_filtered.exp().numpy(), full.log_smoothed.exp().numpy()
    close = {"rtol": 1e-10, "atol": 1e-12}
    np.testing.assert_allclose(summary.filtered_mean, filtered.mean(0), **close)
    np.testing.assert_allclose(summary.filtered_sd, filtered.std(0), **close)
    np.testing.assert_allclose(summary.smoothed_mean, smoothed.mean(0), **close)
    np.testing.assert_allclose(summary.smoothed_sd, smoothed.std(0), **close)
    viterbi = full.viterbi.numpy()
    share = np.stack([(viterbi == k).mean(0) for k in range(2)], axis=-1)
    np.testing.assert_allclose(summary.viterbi_share, share, **close)
    best = filtered.argmax(-1)
    np.testing.assert_allclose(
        summary.share_of_days, np.stack([(best == k).mean(1) for k in range(2)], -1), **close
    )
    np.testing.assert_allclose(summary.last_log_filtered, full.log_filtered[:, -1], **close)
    np.testing.assert_allclose(summary.log_predictive_density, full.log_predictive_density)
    for name in post_mod.PER_DRAW:
        np.testing.assert_allclose(getattr(summary, name), getattr(full, name), **close)
    # The day's predictive over all draws: exact moments and CDF of the mixture.
    origins = torch.arange(n_obs)
    data = fit.data
    mixture = PredictiveMixture(
        full.log_mix_weights[:, origins],
        full.log_regime_scale,
        [index_batch(d, (slice(None), origins)) for d in full.experts],
        loc=data.preprocessor.target_loc,
        scale=data.preprocessor.target_scale,
        dates=data.origin_dates[:n_obs],
        targets=fit.targets,
    )
    np.testing.assert_allclose(data.unstandardize(summary.predictive_mean), mixture.mean, **close)
    sd = summary.predictive_sd.numpy() * data.preprocessor.target_scale
    np.testing.assert_allclose(sd, np.sqrt(mixture.variance), **close)
    realized = data.unstandardize(data.observed_response.numpy())
    np.testing.assert_allclose(summary.pit, mixture.cdf(realized), **close)
    assert 0.0 < float(summary.pit.min()) and float(summary.pit.max()) < 1.0


def test_thinned_draws_are_a_subset_of_the_draws(fit, full):
    for n_draws, keep in ((200, 40), (24, 5), (24, 1), (7, 7), (7, 30)):
        kept = thinned_draws(n_draws, keep).numpy()
        assert len(kept) == min(keep, n_draws) and len(np.unique(kept)) == len(kept)
        assert (np.diff(kept) > 0).all() and kept[0] == 0 and kept[-1] <= n_draws - 1
    assert thinned_draws(9, None).tolist() == list(range(9))
    for bad in (0, -3):
        with pytest.raises(ValueError, match="keep_draws"):
            thinned_draws(9, bad)
    summary = summarize_posterior(
        fit.program, fit.draws, fit.data, keep_draws=5, memory_budget_mib=TINY_BUDGET_MIB
    )
    kept = summary.kept_draws
    assert len(kept) == 5
    # The kept values are those draws' own values, whatever the chunking (the predictive
    # samples too: each draw is sampled under its own seed).
    torch.testing.assert_close(summary.filtered_draws, full.log_filtered.exp()[kept])
    torch.testing.assert_close(summary.smoothed_draws, full.log_smoothed.exp()[kept])
    torch.testing.assert_close(summary.viterbi_draws, full.viterbi[kept])
    torch.testing.assert_close(summary.posterior_predictive, full.posterior_predictive[kept])
    idata = fit.to_inference_data(keep_draws=5)
    draws = idata.posterior_predictive["draw"].values
    np.testing.assert_array_equal(draws, kept.numpy())
    assert set(draws) <= set(idata.posterior["draw"].values)
    np.testing.assert_allclose(
        idata.regime_posterior["filtered"].values[0], full.log_filtered.exp()[kept].numpy()
    )
    # LOO needs every draw's log-likelihood: in memory it is all there by default.
    assert idata.log_likelihood.sizes["draw"] == N_DRAWS


def test_report_folder_is_small_and_loadable(fit, tmp_path):
    out = tmp_path / "report"
    metrics = write_report(fit, out, keep_draws=5)
    path = out / "inference_data.nc"
    idata = from_netcdf(path)  # InferenceData or DataTree
    assert set(group_names(idata)) == GROUPS
    n_obs = fit.data.n_observed
    assert idata.posterior.sizes["draw"] == N_DRAWS  # every draw of the global parameters
    assert idata.posterior["gate.transition"].dtype == np.float64
    kept = idata.posterior_predictive["draw"].values
    assert len(kept) == 5 == metrics["inference_data"]["kept_draws"]
    for group in ("posterior_predictive", "log_likelihood", "regime_posterior"):
        np.testing.assert_array_equal(idata[group]["draw"].values, kept)
    assert idata.log_likelihood["y"].dtype == np.float32
    assert idata.regime_posterior["viterbi"].dtype == np.int8
    assert idata.regime_summary["filtered_mean"].shape == (n_obs, 2)
    assert set(idata.predictive_summary.data_vars) == {"mean", "sd", "pit", "log_score"}
    # Summaries of all draws, from the file, equal the fit's (to float32).
    regimes = fit.regimes()
    np.testing.assert_allclose(
        idata.regime_summary["filtered_mean"].values, regimes.filtered.to_numpy(), atol=1e-6
    )
    # No per-day variable is larger than the kept draws' regime probabilities in float32
    # (the old file held every draw's, in float64), and the file is small.
    for group in GROUPS - {"posterior"}:
        for name, var in idata[group].data_vars.items():
            assert var.nbytes <= 4 * len(kept) * n_obs * 2, (group, name)
    assert path.stat().st_size < 1_000_000
    # elpd_loo in metrics.json comes from every draw, not the kept ones.
    with pytest.warns(UserWarning):
        psis_loo = loo(fit.to_inference_data())
    assert metrics["in_sample"]["elpd_loo"] == pytest.approx(psis_loo.elpd_loo, rel=1e-9)


def test_regimes_command_keeps_the_asked_draws(fit, tmp_path, capsys):
    fit.save(tmp_path / "fit.safetensors")
    out = tmp_path / "regimes"
    args = ["regimes", "--model", str(tmp_path / "fit.safetensors"), "--out", str(out)]
    assert main([*args, "--keep-draws", "3"]) == 0
    with xr.open_dataset(out / "regimes.nc", engine="h5netcdf") as dataset:
        assert dataset.sizes["draw"] == 3
        assert dataset["filtered"].dtype == np.float32
        np.testing.assert_allclose(
            dataset["filtered_mean"].values, fit.regimes().filtered.to_numpy(), atol=1e-6
        )
    with pytest.raises(SystemExit):
        main([*args, "--keep-draws", "0"])
    assert "--keep-draws" in capsys.readouterr().err


def test_a_bad_memory_budget_is_refused_before_fitting(sp500):
    model = bm.BayesianMoE(experts=["ar"], n_regimes=1, window=8)
    with pytest.raises(ValueError, match="memory_budget_mib"):
        model.fit(sp500.iloc[-200:], "ret", num_steps=1, memory_budget_mib=-1, progress=False)


def test_regime_cdf_is_the_stretched_first_margin_against_scipy():
    # The PIT of the summaries rests on regime_cdf: F((y - mu) / (sigma e^lambda_k)) of
    # the first target's margin; oracle: scipy's t and normal CDFs with loc and scale.

    g = torch.Generator().manual_seed(0)
    loc = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)  # S=2, N=3, d_y=2
    scale = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) + 0.5
    df = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * 5 + 2.5
    lam = torch.tensor([[0.0, 0.4], [0.0, -0.3]], dtype=torch.float64)  # (S, K)
    value = torch.tensor([-1.0, 0.3, 2.2], dtype=torch.float64)
    stretch = lam.exp().numpy()[:, None, :]  # (S, 1, K)
    y, mu, sd, nu = value.numpy()[None, :, None], loc[..., :1], scale[..., :1], df[..., :1]
    expected_t = stats.t.cdf(y, nu.numpy(), mu.numpy(), sd.numpy() * stretch)
    got_t = regime_cdf(dist.StudentT(df, loc, scale).to_event(1), value, lam)
    np.testing.assert_allclose(got_t, expected_t, rtol=1e-10)
    tril = torch.diag_embed(scale) + torch.tensor([[0.0, 0.0], [0.7, 0.0]], dtype=torch.float64)
    got_mvn = regime_cdf(dist.MultivariateNormal(loc, scale_tril=tril), value, lam)
    expected_n = stats.norm.cdf(y, mu.numpy(), sd.numpy() * stretch)
    np.testing.assert_allclose(got_mvn, expected_n, rtol=1e-10)


def test_predictive_from_the_tail_or_a_new_pass_equals_all_draws(fit, full):
    fit.posterior_summary()  # the tail of the summary serves the last origins
    dates = fit.data.origin_dates
    n_origins = len(dates)
    assert n_origins > post_mod.TAIL_ORIGINS + 10
    for first, last in ((5, 40), (n_origins - 30, n_origins - 1)):  # before / in the tail
        mixture = fit.predictive(start=dates[first], end=dates[last])
        idx = torch.arange(first, last + 1)
        torch.testing.assert_close(mixture.log_weights, full.log_mix_weights[:, idx])
        torch.testing.assert_close(mixture.log_scale, full.log_regime_scale)
        expected = [index_batch(d, (slice(None), idx)) for d in full.experts]
        for a, b in zip(_params(mixture.experts), _params(expected)):
            torch.testing.assert_close(a, b)
