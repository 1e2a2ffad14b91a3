"""The volatility expert: its inputs against pandas, its scale model, its columns."""

import dataclasses

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro import poutine

import bayes_moe as bm
from bayes_moe.data.windows import VOL_FLOOR, ExpertInputs, prepare
from bayes_moe.models.experts import expert_spec, make_expert
from bayes_moe.models.experts.volatility import RV_SPANS, Volatility, rolling_mean_square

RANGE = ["var_parkinson", "var_garman_klass", "atr_14"]


@pytest.fixture(scope="module")
def data(sp500):
    """Real S&P 500 returns with their range features (arch.data), window 64."""
    return prepare(sp500, targets=["ret"], covariates=RANGE, window=64)


def test_raw_gives_back_the_frame_in_data_units(sp500, data):
    raw = data.inputs.raw(RANGE).numpy()
    np.testing.assert_allclose(raw, sp500[RANGE].to_numpy(), rtol=1e-12)
    header = ExpertInputs.header(["ret", "atr_14"], 1, window=5)
    with pytest.raises(ValueError, match="preprocessing constants"):
        header.raw(["atr_14"])


def test_rolling_mean_square_is_pandas_rolling_with_a_short_start():
    z = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for span in (1, 5, 20, 60):
        expected = pd.DataFrame(z.numpy() ** 2).rolling(span, min_periods=1).mean().to_numpy()
        np.testing.assert_allclose(
            rolling_mean_square(z, span).numpy(), expected, rtol=1e-12, atol=1e-13
        )


def test_inputs_are_log_variances_in_standardized_units(sp500, data):
    # Oracle: pandas on the frame itself, then the target's training scale.
    expert = Volatility(range_spans=(5, 22), leverage=True)
    inputs = data.inputs
    assert expert.range_columns(inputs) == tuple(RANGE)
    v = expert.volatility_inputs(inputs)[:, 0].numpy()  # (N, d_v)
    names = expert.input_names(inputs)
    assert len(names) == 12  # no gaps, no missing-value indicators
    assert expert.gap_presence(inputs).shape == (len(v), 1, 0)
    origins = inputs.origins.numpy()
    scale = data.preprocessor.target_scale[0]
    z = (sp500["ret"] - data.preprocessor.target_loc[0]) / scale
    expected = [np.log((z**2).rolling(w, min_periods=1).mean() + VOL_FLOOR) for w in RV_SPANS]
    parkinson = sp500["var_parkinson"] / scale**2
    garman_klass = sp500["var_garman_klass"] / scale**2
    expected += [
        np.log(parkinson + VOL_FLOOR),
        np.log(garman_klass + VOL_FLOOR),
        np.log(sp500["atr_14"] ** 2 / scale**2 + VOL_FLOOR),
    ]
    # HAR averages of the range variances (Corsi 2009), short at the start of the sample.
    expected += [
        np.log(x.rolling(w, min_periods=1).mean() + VOL_FLOOR)
        for x in (parkinson, garman_klass)
        for w in (5, 22)
    ]
    expected += [np.minimum(z, 0.0), np.abs(z)]
    expected = np.stack([e.to_numpy()[origins] for e in expected], axis=1)
    np.testing.assert_allclose(v, expected, rtol=1e-10, atol=1e-12)
    assert names[5] == "log_atr_14"
    assert names[6:] == [
        "log_var_parkinson_mean_5",
        "log_var_parkinson_mean_22",
        "log_var_garman_klass_mean_5",
        "log_var_garman_klass_mean_22",
        "negative_return",
        "abs_return",
    ]
    daily_only = Volatility()  # the default: daily values only
    assert daily_only.input_names(inputs) == names[:6]
    np.testing.assert_allclose(daily_only.volatility_inputs(inputs)[:, 0].numpy(), v[:, :6])


def test_vix_is_read_as_a_daily_variance_where_the_frame_has_it(sp500):
    frame = bm.data.add_vix(sp500).loc["2014-01-02":].dropna()
    data = prepare(frame, targets=["ret"], covariates=RANGE + ["vix"], window=64)
    expert = Volatility()
    assert expert.range_columns(data.inputs)[-1] == "vix"
    v = expert.volatility_inputs(data.inputs)[:, 0, 6].numpy()
    scale = data.preprocessor.target_scale[0]
    expected = np.log(frame["vix"].to_numpy() ** 2 / 252 / scale**2 + VOL_FLOOR)
    np.testing.assert_allclose(v, expected[data.inputs.origins.numpy()], rtol=1e-10)


def test_log_scale_is_the_linear_term_plus_the_mlp(data):
    expert = Volatility(hidden=4)
    inputs = data.inputs
    expert.build(inputs)
    pyro.set_rng_seed(1)
    trace = poutine.trace(expert.model).get_trace(inputs)
    p = {n: s["value"] for n, s in trace.nodes.items() if s["type"] == "sample"}
    d = trace.nodes["_RETURN"]["value"]
    v = expert.volatility_inputs(inputs)[:, 0]  # (N, d_v)
    W, b = expert.layer.weight.detach(), expert.layer.bias.detach()
    h = torch.tanh(v @ W.T + b)
    log_s = p["scale"].log() + v @ p["vol_coef"][0] + h @ p["head_scale"][0]
    torch.testing.assert_close(d.base_dist.scale[:, 0], log_s.exp())
    torch.testing.assert_close(d.base_dist.loc[:, 0], p["intercept"].expand(len(v)))


def test_measurement_equation_observes_the_next_days_range_while_fitting_only(sp500, data):
    # log v_{t+1} = xi + 2 phi log s_t + u, u ~ N(0, sigma_u^2): scipy's Normal density of
    # the next day's log Parkinson variance (standardized units), summed over the
    # origins whose next day is in the series.
    from scipy import stats

    expert = Volatility(hidden=4, measurement=True)
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])  # as fit_svi does
    expert.build(inputs)
    assert expert.measures(inputs)
    last = inputs.at(data.inputs.origins[-2:])
    fitting = dataclasses.replace(inputs, fitting=True)
    pyro.set_rng_seed(2)
    trace = poutine.trace(expert.model).get_trace(fitting)
    p = {n: s["value"] for n, s in trace.nodes.items() if s["type"] == "sample"}
    log_s = trace.nodes["_RETURN"]["value"].base_dist.scale[:, 0].log().detach().numpy()
    scale = data.preprocessor.target_scale[0]
    log_v = np.log(sp500["var_parkinson"].to_numpy() / scale**2 + VOL_FLOOR)
    origins = inputs.origins.numpy()
    assert origins[-1] + 1 < len(sp500)  # training origins all have their next day
    xi, phi, sd = (float(p[f"measure_{n}"][0]) for n in ("intercept", "slope", "noise"))
    expected = stats.norm(xi + 2 * phi * log_s, sd).logpdf(log_v[origins + 1]).sum()
    factor = trace.nodes["measurement"]["fn"].log_prob(torch.zeros(())).detach()
    assert float(factor) == pytest.approx(expected, rel=1e-10)
    # The last day has no next day: masked, not read past the end.
    value, present = expert.next_day_measure(last)
    assert present.tolist() == [True, False] and torch.isfinite(value).all()
    # Outside the training likelihood: the same parameters, no observation, the same
    # predictive.
    replayed = poutine.trace(poutine.replay(expert.model, trace=trace)).get_trace(inputs)
    assert "measurement" not in replayed.nodes and "measure_slope" in replayed.nodes
    torch.testing.assert_close(
        replayed.nodes["_RETURN"]["value"].base_dist.scale,
        trace.nodes["_RETURN"]["value"].base_dist.scale,
    )
    # Not in the model at h > 1, without the Parkinson variance, or when switched off.
    assert not expert.measures(dataclasses.replace(inputs, horizon=5))
    assert not Volatility().measures(inputs)  # off by default
    assert not Volatility(columns=["atr_14"], measurement=True).measures(inputs)
    off = Volatility(hidden=4)
    off.build(inputs)
    nodes = poutine.trace(off.model).get_trace(fitting).nodes
    assert "measurement" not in nodes and "measure_slope" not in nodes


def test_the_mixture_adds_the_measurement_to_its_training_likelihood_only(sp500):
    model = bm.BayesianMoE(
        experts=["ar", {"name": "volatility", "measurement": True}], n_regimes=2, window=20
    )
    data = model.prepare(sp500.loc["2016-01-01":], "ret")
    program = model.program().build(data.inputs)
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    pyro.set_rng_seed(0)
    trace = poutine.trace(program).get_trace(inputs, data.observed_response)
    assert "volatility/measurement" in trace.nodes
    joint = trace.log_prob_sum()
    evidence = trace.nodes["log_evidence"]["fn"].log_prob(torch.zeros(()))
    measure = trace.nodes["volatility/measurement"]["fn"].log_prob(torch.zeros(()))
    latent = sum(
        site["log_prob_sum"]
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"]
    )
    torch.testing.assert_close(joint, latent + evidence + measure)
    components = poutine.trace(program.components).get_trace(inputs)
    assert "volatility/measurement" not in components.nodes


def test_a_fit_with_the_measurement_equation_survives_a_checkpoint(sp500, tmp_path):
    spec = {"name": "volatility", "measurement": True}
    fit = bm.BayesianMoE(experts=[spec], n_regimes=1, window=20).fit(
        sp500.loc["2017-01-01":], target="ret", num_steps=5, num_draws=10, seed=0, progress=False
    )
    assert fit.draws["volatility/measure_slope"].shape == (10, 1)
    fit.save(tmp_path / "fit")
    again = bm.load_fit(tmp_path / "fit")
    assert again.program.experts[0].measurement
    assert again.forecast(num_samples=10).mean == pytest.approx(fit.forecast(num_samples=10).mean)
    idata = fit.to_inference_data()
    assert idata.posterior["volatility.measure_slope"].dims == ("chain", "draw", "target")


def test_columns_are_checked_before_any_data_is_read(data):
    with pytest.raises(ValueError, match="not among"):
        Volatility(columns=["var_parkinson", "turnover"])
    with pytest.raises(ValueError, match="hidden"):
        Volatility(hidden=0)
    returns_only = prepare(bm.data.load_sp500(features=False), targets=["ret"], window=64)
    assert Volatility().range_columns(returns_only.inputs) == ()
    with pytest.raises(ValueError, match="vix"):
        Volatility(columns=["vix"]).build(returns_only.inputs)
    for bad in ({"range_spans": 5}, {"range_spans": (1, 5)}, {"gap_shift_sd": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Volatility(**bad)
    again = make_expert(expert_spec(Volatility(columns=["atr_14"], hidden=3, leverage=False)))
    assert again.config() == {
        "columns": ["atr_14"],
        "hidden": 3,
        "family": "studentt",
        "gap_columns": None,
        "range_spans": [],
        "leverage": False,
        "gap_shift_sd": 0.3,
        "measurement": False,
    }


# --------------------------------------------------------------------------------------
# a covariate with gaps: the VIX of arch.data starts in 2014


@pytest.fixture(scope="module")
def with_vix(sp500):
    """S&P 500 1999-2018 with the VIX, NaN before its first day in arch.data (2014)."""
    frame = bm.data.add_vix(sp500)
    assert frame["vix"].isna().any() and frame["vix"].notna().sum() > 1000
    return frame


def test_vix_gaps_are_read_with_a_mask_and_the_documented_fallback(with_vix):
    model = bm.BayesianMoE(experts=["volatility"], n_regimes=1)
    assert model.columns_with_gaps("ret", list(with_vix.columns)) == RANGE + ["vix"]
    data = model.prepare(with_vix, "ret")
    inputs, expert = data.inputs, model.program().experts[0]
    present = torch.as_tensor(with_vix["vix"].notna().to_numpy(copy=True))
    torch.testing.assert_close(inputs.observed_mask(["vix"])[:, 0], present)
    # Standardized with the mean and sd of the days the VIX has.
    vix = with_vix["vix"].dropna()
    assert data.preprocessor.loc[inputs.columns.index("vix")] == pytest.approx(vix.mean())
    assert data.preprocessor.scale[inputs.columns.index("vix")] == pytest.approx(vix.std(ddof=0))
    expert.build(inputs)
    assert expert.gap_columns == ("vix",)  # the only column with gaps gets an indicator
    v = expert.volatility_inputs(inputs)[:, 0]  # (N, d_v)
    names = expert.input_names(inputs)
    assert names[-1] == "missing_vix" and len(names) == 8
    log_vix, gap, log_rv20 = (v[:, names.index(n)] for n in ("log_vix", "missing_vix", "log_rv_20"))
    at_origin = present[inputs.origins]
    torch.testing.assert_close(log_vix[~at_origin], log_rv20[~at_origin])  # the fallback
    torch.testing.assert_close(gap, (~at_origin).double())
    scale = data.preprocessor.target_scale[0]
    expected = np.log(with_vix["vix"].to_numpy() ** 2 / 252 / scale**2 + VOL_FLOOR)
    np.testing.assert_allclose(
        log_vix[at_origin].numpy(), expected[inputs.origins.numpy()][at_origin.numpy()]
    )


def test_a_column_with_gaps_shifts_the_coefficients_only_where_it_is_observed(with_vix):
    # log s_t = log sigma + gamma'v_t + o_t delta'v~_t + u'h_t, with o_t = 1 on VIX days.
    model = bm.BayesianMoE(experts=["volatility"], n_regimes=1)
    data = model.prepare(with_vix, "ret")
    inputs, expert = data.inputs, model.program().experts[0]
    expert.build(inputs)
    pyro.set_rng_seed(3)
    trace = poutine.trace(expert.model).get_trace(inputs)
    p = {n: s["value"] for n, s in trace.nodes.items() if s["type"] == "sample"}
    scale = trace.nodes["_RETURN"]["value"].base_dist.scale[:, 0]
    v = expert.volatility_inputs(inputs)[:, 0]  # (N, d_v)
    shifted = expert.shift_names(inputs)
    assert expert.param_coords(inputs)["gap_column"] == ["vix"]
    assert p["gap_coef"].shape == (1, 1, len(shifted)) and len(shifted) == v.shape[1] - 1
    present = torch.as_tensor(with_vix["vix"].notna().to_numpy(copy=True))[inputs.origins]
    W, b = expert.layer.weight.detach(), expert.layer.bias.detach()
    plain = p["scale"].log() + v @ p["vol_coef"][0] + torch.tanh(v @ W.T + b) @ p["head_scale"][0]
    shift = v[:, : len(shifted)] @ p["gap_coef"][0, 0]
    torch.testing.assert_close(scale.log(), plain + present.double() * shift)
    assert present.any() and (~present).any() and shift[present].abs().min() > 0


def test_the_placeholder_under_a_gap_is_never_read(with_vix):
    # Whatever the series holds where the mask says "missing", the predictive is the same.
    model = bm.BayesianMoE(experts=["volatility"], n_regimes=1)
    data = model.prepare(with_vix, "ret")
    program = model.program()
    expert = program.experts[0]
    expert.build(data.inputs)
    col = data.inputs.columns.index("vix")
    scrambled = data.inputs.series.clone()
    gaps = ~data.inputs.observed[:, col]
    scrambled[gaps, col] = torch.randn(int(gaps.sum()), dtype=torch.float64) * 50
    other = dataclasses.replace(data.inputs, series=scrambled)
    pyro.set_rng_seed(0)
    trace = poutine.trace(expert.model).get_trace(data.inputs)
    d = trace.nodes["_RETURN"]["value"]
    again = poutine.replay(expert.model, trace=trace)(other)
    torch.testing.assert_close(again.base_dist.scale, d.base_dist.scale, rtol=0, atol=0)


def test_a_gap_in_a_column_no_expert_accepts_with_gaps_is_refused_naming_it(with_vix):
    # VAR reads ret_nasdaq and accepts no gaps; a window expert reading the VIX neither.
    frame = with_vix.copy()
    frame.loc["2003-03-03", "ret_nasdaq"] = np.nan
    with pytest.raises(bm.data.DataError, match=r"'ret_nasdaq'.*2003-03-03.*expert 'var'"):
        bm.BayesianMoE(experts=["var", "volatility"], n_regimes=1).prepare(frame, "ret")
    both = bm.BayesianMoE(experts=["volatility", {"name": "tcn", "columns": ["vix"]}], n_regimes=1)
    assert both.columns_with_gaps("ret", list(with_vix.columns)) == RANGE
    with pytest.raises(bm.data.DataError, match=r"'vix' has \d+ NaN.*first on 1999-02-04"):
        both.prepare(with_vix, "ret")


def test_a_fit_with_gaps_survives_a_checkpoint(with_vix, tmp_path):
    frame = with_vix.loc["2012-01-01":]
    fit = bm.BayesianMoE(experts=["volatility"], n_regimes=1, window=20).fit(
        frame, target="ret", num_steps=5, num_draws=10, seed=0, progress=False
    )
    assert fit.data.preprocessor.optional == tuple(RANGE + ["vix"])
    fit.save(tmp_path / "fit")
    again = bm.load_fit(tmp_path / "fit")
    torch.testing.assert_close(again.data.inputs.observed, fit.data.inputs.observed)
    assert again.forecast(num_samples=10).mean == pytest.approx(fit.forecast(num_samples=10).mean)
    # Applied to days without gaps, then saved: the indicator built from the fit stays.
    later = fit.apply(with_vix.loc["2015-01-01":])
    assert later.data.inputs.observed is None
    later.save(tmp_path / "later")
    loaded = bm.load_fit(tmp_path / "later")
    assert loaded.program.experts[0].gap_columns == ("vix",)
    assert loaded.forecast(num_samples=10).mean == pytest.approx(
        later.forecast(num_samples=10).mean
    )


def test_a_column_with_gaps_and_no_values_in_the_training_window_is_not_read(with_vix):
    # P1's validation refits end before 2014: the VIX has no value there.
    model = bm.BayesianMoE(experts=["volatility"], n_regimes=1)
    data = model.prepare(with_vix.loc[:"2012-12-31"], "ret")
    assert "vix" not in data.inputs.columns and data.preprocessor.optional == tuple(RANGE)
    explicit = bm.BayesianMoE(experts=[{"name": "volatility", "columns": ["vix"]}], n_regimes=1)
    with pytest.raises(bm.data.DataError, match="reads column.*'vix'.*not among"):
        explicit.prepare(with_vix.loc[:"2012-12-31"], "ret")
