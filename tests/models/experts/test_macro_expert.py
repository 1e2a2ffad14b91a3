"""The macro expert (and the Kalman expert on macro inputs): no look-ahead, gaps, recovery.

Real data: S&P 500 returns with the macro features of ``bm.data.add_macro_features``
(``arch.data``). The recovery test uses synthetic data, said so in its docstring.
"""

import dataclasses

import numpy as np
import pandas as pd
import pyro
import pytest
import scipy.stats
import torch
from pyro import poutine

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.models.experts import Kalman, Macro, expert_spec, make_expert
from bayes_moe.models.experts.macro import NO_MACRO_INPUT

MACRO = ["core_cpi_yoy", "credit_spread", "wti_ret"]
SPAN = ("2005-01-01", "2008-12-31")
WINDOW = 32


@pytest.fixture(scope="module")
def sources():
    """The bundled monthly macro frame and WTI prices (arch.data)."""
    return bm.data.load_macro(), bm.data.load_wti()


@pytest.fixture(scope="module")
def frame(sp500, sources):
    """S&P 500 2005-2008 with the macro features (WTI has gaps on a few days)."""
    macro, wti = sources
    return bm.data.add_macro_features(sp500.loc[slice(*SPAN)], macro=macro, wti=wti)


@pytest.fixture(scope="module")
def data(frame):
    """The model's tensors: returns and the macro columns, read with their gaps."""
    return prepare(frame, targets=["ret"], covariates=MACRO, window=WINDOW, optional=MACRO)


def _trace(expert, inputs, seed=0):
    pyro.set_rng_seed(seed)
    return poutine.trace(expert.model).get_trace(inputs)


def _draws(trace):
    return {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _predictive(expert, inputs, draws):
    with torch.no_grad():
        return poutine.condition(expert.model, data=draws)(inputs)


def test_registered_as_a_feature_expert_whose_config_round_trips():
    assert "macro" in bm.list_experts()
    expert = make_expert("macro")
    assert (expert.group, expert.capacity) == ("feature", 0)
    spec = expert_spec(Macro(16, columns=["credit_spread"], hidden=4, gap_columns=[]))
    again = make_expert(spec)
    assert spec == {"name": "macro", **again.config()}
    assert again.config()["hidden"] == 4 and again.config()["gap_columns"] == []
    with pytest.raises(ValueError, match="columns must be a non-empty list"):
        Macro(columns="credit_spread")
    with pytest.raises(ValueError, match="gap_columns must be a list"):
        Macro(gap_columns="wti_ret")


def test_inputs_are_the_standardized_columns_with_fallback_and_indicator(frame, data):
    # Oracle: the frame standardized with the training constants, by hand.
    expert = Macro()
    inputs = data.inputs
    expert.build(inputs)
    assert expert.gap_columns == ("wti_ret",)  # the only column with gaps here
    assert expert.input_names(inputs) == MACRO + ["missing_wti_ret"]
    m = expert.macro_series(inputs).numpy()  # (T, 4)
    loc = np.asarray(data.preprocessor.loc[1:])
    scale = np.asarray(data.preprocessor.scale[1:])
    expected = (frame[MACRO].to_numpy() - loc) / scale
    gap = frame["wti_ret"].isna().to_numpy()
    assert gap.sum() >= 3
    np.testing.assert_allclose(m[~gap, :3], expected[~gap], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m[gap, :2], expected[gap, :2], rtol=1e-12)
    assert (m[gap, 2] == 0.0).all()  # the fallback: the training mean
    np.testing.assert_array_equal(m[:, 3], gap.astype(float))
    # The GRU reads the window of m ending at each origin.
    x = expert.window_batch(inputs)
    assert x.shape == (inputs.n_origins, WINDOW, 4) and x.dtype == torch.float32
    t = int(inputs.origins[100])
    np.testing.assert_allclose(x[100].numpy(), m[t - WINDOW + 1 : t + 1], rtol=1e-6)


def _moved_data(sp500, sources, data, column):
    """The frame rebuilt with June 2007 of ``column`` in the monthly source moved."""
    macro, wti = sources
    moved = macro.copy()
    moved.loc["2007-06-01", column] += 3.0
    frame = bm.data.add_macro_features(sp500.loc[slice(*SPAN)], macro=moved, wti=wti)
    return prepare(
        frame, targets=["ret"], window=WINDOW, preprocessor=data.preprocessor, optional=MACRO
    )


EXPERTS = {
    "macro": lambda: Macro(),
    "kalman-exog": lambda: Kalman(exog=MACRO),
}


@pytest.mark.parametrize("make", list(EXPERTS.values()), ids=list(EXPERTS))
@pytest.mark.parametrize(
    ("column", "due"),
    [("core_cpi", "2007-07-16"), ("credit_spread", "2007-07-02")],
    ids=["core_cpi", "credit_spread"],
)
def test_a_moved_month_moves_no_forecast_made_before_its_publication(
    sp500, sources, data, make, column, due
):
    # June 2007 of the monthly source is moved by 3 units (about 7 standard deviations of
    # the year-on-year CPI change, 7 of the spread). It is published on `due` (end of
    # June + 15 days for the CPI, + 1 business day for the spread): every forecast made
    # at an earlier close is unchanged to the bit, the forecast at `due` moves.
    moved = _moved_data(sp500, sources, data, column)
    expert = make()
    draws = _draws(_trace(expert, data.inputs))
    before = _predictive(expert, data.inputs, draws)
    after = _predictive(expert, moved.inputs, draws)
    dates = data.origin_dates
    earlier = torch.as_tensor(dates < pd.Timestamp(due))
    assert earlier.sum() > 500
    for stat in ("mean", "variance"):
        a, b = getattr(after, stat)[..., 0], getattr(before, stat)[..., 0]
        torch.testing.assert_close(a[earlier], b[earlier], rtol=0, atol=0)
    at_due = int(np.flatnonzero(dates == pd.Timestamp(due))[0])
    change = max(
        (getattr(after, s)[at_due] - getattr(before, s)[at_due]).abs().item()
        for s in ("mean", "variance")
    )
    assert change > 1e-4


@pytest.mark.parametrize("make", list(EXPERTS.values()), ids=list(EXPERTS))
def test_the_placeholder_under_a_gap_is_never_read(data, make):
    # Whatever the series holds where the mask says "missing", the predictive is the same.
    expert = make()
    inputs = data.inputs
    col = inputs.columns.index("wti_ret")
    gaps = ~inputs.observed[:, col]
    scrambled = inputs.series.clone()
    scrambled[gaps, col] = torch.randn(int(gaps.sum()), dtype=torch.float64) * 50
    other = dataclasses.replace(inputs, series=scrambled)
    trace = _trace(expert, inputs)
    d = trace.nodes["_RETURN"]["value"]
    again = poutine.replay(expert.model, trace=trace)(other)
    torch.testing.assert_close(again.mean, d.mean, rtol=0, atol=0)
    torch.testing.assert_close(again.variance, d.variance, rtol=0, atol=0)
    # ... while the values it does read move it (the check above can fail).
    moved = inputs.series.clone()
    moved[~gaps, col] += 5.0
    shifted = poutine.replay(expert.model, trace=trace)(dataclasses.replace(inputs, series=moved))
    assert (shifted.mean - d.mean).abs().max() > 1e-4


def test_kalman_exog_is_the_plain_filter_on_the_adjusted_returns(data):
    # Oracle: the Kalman expert without exog, run on y_t - beta'x_{t-1} with the same
    # draws; its forecast plus h beta'x_t is the exog forecast, its variance the same.
    for horizon in (1, 5):
        inputs = dataclasses.replace(data.inputs, horizon=horizon)
        expert = Kalman(exog=MACRO)
        draws = _draws(_trace(expert, inputs, seed=3))
        with_exog = _predictive(expert, inputs, draws)
        beta = draws["exog_coef"][0]  # (e,)
        x = inputs.series[:, 1:4].clone()
        x[~inputs.observed_mask(MACRO)] = 0.0
        effect = x @ beta  # (T,)
        adjusted = inputs.series.clone()
        adjusted[1:, 0] -= effect[:-1]
        plain = _predictive(
            Kalman(),
            dataclasses.replace(inputs, series=adjusted),
            {k: v for k, v in draws.items() if k != "exog_coef"},
        )
        expected = plain.mean[:, 0] + horizon * effect[inputs.origins]
        torch.testing.assert_close(with_exog.mean[:, 0], expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(with_exog.variance, plain.variance, rtol=1e-10, atol=1e-12)
    assert Kalman(exog=MACRO).reads(data.inputs) == ("ret", *MACRO)
    again = make_expert(expert_spec(Kalman(exog=["credit_spread"])))
    assert again.exog == ("credit_spread",)
    with pytest.raises(ValueError, match=r"kalman: columns \['fed_funds'\]"):
        Kalman(exog=["fed_funds"]).model(data.inputs)


def test_columns_it_lacks_are_named_and_a_frame_without_macro_data_is_one_constant(sp500, data):
    with pytest.raises(ValueError, match=r"macro: columns \['fed_funds'\].*add_macro_features"):
        Macro(columns=["credit_spread", "fed_funds"]).build(data.inputs)
    with pytest.raises(ValueError, match=r"columns \['ret'\] are targets"):
        Macro(columns=["ret"]).build(data.inputs)
    with pytest.raises(bm.data.DataError, match=r"reads column\(s\) \['fed_funds'\]"):
        bm.BayesianMoE(experts=[{"name": "macro", "columns": ["fed_funds"]}]).prepare(
            sp500.loc[slice(*SPAN)], "ret"
        )
    # Without macro columns the input is one constant indicator: with a constant scale
    # the predictive is the same on every day.
    plain = prepare(sp500.loc[slice(*SPAN)], targets=["ret"], covariates=[], window=WINDOW)
    expert = Macro(heteroscedastic=False)
    assert expert.reads(plain.inputs) == ("ret",)
    assert expert.input_names(plain.inputs) == [NO_MACRO_INPUT]
    d = _trace(expert, plain.inputs).nodes["_RETURN"]["value"]
    torch.testing.assert_close(d.mean, d.mean[:1].expand_as(d.mean), rtol=1e-6, atol=1e-7)
    # With macro columns it is not (the check above can fail).
    d = _trace(Macro(heteroscedastic=False), data.inputs).nodes["_RETURN"]["value"]
    assert d.mean.std() > 1e-3


def _best_constant(y: np.ndarray) -> float:
    """Mean log density of ``y`` under the Normal fitted to it by maximum likelihood."""
    return -0.5 * (np.log(2 * np.pi * y.var()) + 1.0)


def test_recovers_a_scale_driven_by_a_synthetic_macro_covariate():
    """SYNTHETIC data: the next day's return has scale exp(0.7 c_t), c a monthly covariate.

    c_t is constant over blocks of 21 days, an AR(1) across blocks (coefficient 0.8,
    innovation sd 0.6); y_{t+1} = exp(0.7 c_t) eps, eps ~ N(0, 1), 630 days. The macro
    expert with a constant scale baseline must read the scale off c alone: its fitted
    predictive standard deviation correlates with the true one, and its gain in log score
    over the best constant Normal is most of the oracle's (the true predictive N(0,
    exp(1.4 c_t)) on the same days, about 0.30 nats/day on this sample).
    """
    rng = np.random.default_rng(0)
    T, block, L = 630, 21, 8
    levels = np.zeros(T // block)
    for i in range(1, len(levels)):
        levels[i] = 0.8 * levels[i - 1] + 0.6 * rng.standard_normal()
    log_scale = 0.7 * np.repeat(levels, block)
    y = np.empty(T)
    y[0] = rng.standard_normal()
    y[1:] = np.exp(log_scale[:-1]) * rng.standard_normal(T - 1)
    index = pd.bdate_range("2001-01-01", periods=T, name="date")
    frame = pd.DataFrame({"ret": y, "macro_c": log_scale / 0.7}, index=index)
    spec = {
        "name": "macro",
        "columns": ["macro_c"],
        "length": L,
        "hidden": 4,
        "heteroscedastic": False,
        "family": "normal",
    }
    fit = bm.BayesianMoE(experts=[spec], n_regimes=1, window=L).fit(
        frame,
        target="ret",
        num_steps=30,
        learning_rate=0.05,
        num_draws=10,
        seed=0,
        progress=False,
        pretrain_steps=100,
    )
    sd = fit.posterior.experts[0].variance.mean(0)[:, 0].sqrt().numpy()  # (N,)
    origins = fit.data.inputs.origins.numpy()
    corr = np.corrcoef(np.log(sd), log_scale[origins])[0, 1]
    # Gains over the best constant Normal do not depend on units: the fit's in its
    # standardized units, the oracle's in the data's, on the same days.
    observed = fit.data.observed_response.numpy()[:, 0]  # y[t+1], standardized
    scored = origins[origins + 1 < T]  # the last origin has no next day
    realised = y[scored + 1]
    np.testing.assert_allclose(scipy.stats.zscore(observed), scipy.stats.zscore(realised))
    gain = fit.posterior.log_predictive_density.mean().item() - _best_constant(observed)
    truth = scipy.stats.norm.logpdf(realised, 0.0, np.exp(log_scale[scored])).mean()
    oracle = truth - _best_constant(realised)
    assert corr > 0.9, f"corr {corr:.3f}"
    assert gain > 0.75 * oracle, f"gain {gain:.3f} nats/day, oracle {oracle:.3f}"


def test_a_mixture_with_ar_fits_real_data_end_to_end_and_survives_a_checkpoint(frame, tmp_path):
    # Real S&P 500 2006-07..2008 with macro features: the fit runs and the macro expert's
    # forecasts are finite, vary with the macro state and beat a constant Normal in
    # sample; saved and loaded, the GRU and its gap indicator give the same forecast.
    model = bm.BayesianMoE(experts=["ar", "macro"], n_regimes=2, window=WINDOW)
    fit = model.fit(
        frame.loc["2006-07-01":],
        target="ret",
        num_steps=30,
        num_draws=10,
        seed=0,
        progress=False,
        pretrain_steps=40,
    )
    assert fit.data.preprocessor.optional == tuple(MACRO)
    macro = fit.posterior.experts[1]
    assert torch.isfinite(macro.mean).all() and torch.isfinite(macro.variance).all()
    assert macro.mean.std(dim=1).min() > 0
    forecast = fit.forecast(num_samples=50)
    assert np.isfinite(np.asarray(forecast.mean)).all()
    observed = fit.data.observed_response.numpy()[:, 0]
    lpd = fit.posterior.log_predictive_density.mean().item()
    assert lpd > _best_constant(observed) + 0.05
    fit.save(tmp_path / "fit")
    again = bm.load_fit(tmp_path / "fit")
    assert again.program.experts[1].gap_columns == ("wti_ret",)
    assert again.forecast(num_samples=50).mean == pytest.approx(forecast.mean, rel=1e-6)
