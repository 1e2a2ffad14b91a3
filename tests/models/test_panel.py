"""The panel mixture: exact likelihood with masked asset-days, shared parameters, the
cross-sectional expert's masks and causality. Synthetic panels (labelled as such) with
ragged histories: an asset listed late, an asset with a gap."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro import poutine

import bayes_moe as bm
from bayes_moe.data import DataError
from bayes_moe.data.panel_windows import prepare_panel
from bayes_moe.kernels.hmm_reference import reference_filter
from bayes_moe.models.experts.cross_sectional import CrossSectional

WINDOW = 8


def synthetic_panel(n_days=240, seed=0) -> pd.DataFrame:
    """SYNTHETIC: four assets loading on one factor whose volatility switches (days
    80-159 turbulent); 'D' listed on day 60, 'C' missing on days 120-124."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n_days) >= 80) & (np.arange(n_days) < 160), 3.0, 1.0)
    factor = vol * rng.standard_normal(n_days)
    betas = np.array([1.0, 0.8, 1.2, 0.5])
    values = factor[:, None] * betas + rng.standard_normal((n_days, 4))
    frame = pd.DataFrame(
        values,
        index=pd.bdate_range("2015-01-01", periods=n_days, name="date"),
        columns=pd.Index(["A", "B", "C", "D"], name="asset"),
    )
    frame.iloc[:60, 3] = np.nan
    frame.iloc[120:125, 2] = np.nan
    return frame


def _prior_values(program, inputs, response, seed=0):
    pyro.set_rng_seed(seed)
    trace = poutine.trace(program).get_trace(inputs, response)
    return {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _setup(experts=("ar", "kalman", "cross_sectional"), frame=None, seed=0, asset_levels=False):
    frame = synthetic_panel() if frame is None else frame
    model = bm.BayesianMoE(
        experts=list(experts), n_regimes=2, window=WINDOW, asset_levels=asset_levels
    )
    data = prepare_panel(frame, window=WINDOW, min_observations=10)
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    response = data.observed_response
    program = model.panel_program().build(inputs)
    values = _prior_values(program, inputs, response, seed)
    return model, data, inputs, response, program, values


def test_scored_mask_follows_listing_gaps_and_windows():
    frame = synthetic_panel()
    data = prepare_panel(frame, window=WINDOW, min_observations=10)
    scored = pd.DataFrame(
        data.scored[: data.n_observed].numpy(), index=data.response_dates, columns=data.assets
    )
    dates = frame.index
    # D: first return on day 60; origin t scores it once days t-7..t and t+1 are data.
    assert not scored.loc[: dates[67], "D"].any()
    assert scored.loc[dates[68], "D"]
    # C: the gap days are never responses, and no window reaching into them scores.
    gap = dates[120:125]
    assert not scored.loc[gap, "C"].any()
    assert not scored.loc[dates[125] : dates[125 + WINDOW - 1], "C"].any()
    assert scored.loc[dates[125 + WINDOW], "C"]
    # The other assets keep every day, gaps of C and D included (nothing is dropped).
    assert scored[["A", "B"]].all().all()
    # Responses are NaN exactly where not scored.
    assert torch.equal(torch.isfinite(data.observed_response), data.scored[: data.n_observed])


@pytest.mark.parametrize(
    ("experts", "asset_levels"),
    [(("ar", "kalman", "cross_sectional"), False), (("var", "kalman"), False), (("ar",), True)],
)
def test_log_evidence_equals_reference_filter_over_scored_asset_days(experts, asset_levels):
    """Oracle: per-asset emissions from each asset's own mixture, summed over the scored
    asset-days only, then a step-by-step numpy forward filter (VAR: a one-target
    multivariate predictive, joined with the others as its margin; asset_levels: each
    asset's mixture stretched by its own levels rho_i lambda_k)."""
    _, data, inputs, response, program, values = _setup(experts=experts, asset_levels=asset_levels)
    if asset_levels:
        values["gate/asset_level_loading"] = torch.tensor([0.5, 1.0, 1.5, 2.5], dtype=torch.float64)
    with torch.no_grad(), poutine.condition(data=values):
        log_evidence = program(inputs, response)
        comps = program.components(inputs)
    scored = torch.isfinite(response)
    log_emit = torch.zeros(response.shape[0], 2, dtype=torch.float64)
    for i in range(len(data.assets)):
        y = torch.where(scored[:, i], response[:, i], 0.0)[:, None]
        emit = comps.asset(i).log_emission(y)  # (N, K), the single-series code path
        log_emit += torch.where(scored[:, i, None], emit, 0.0)
    gate = comps.gate
    trans = gate.hmm_trans.numpy()
    reference = reference_filter(gate.log_init.numpy(), trans, log_emit.numpy())
    np.testing.assert_allclose(float(log_evidence), reference.log_evidence, rtol=1e-10)


def test_masked_asset_days_do_not_change_the_others():
    """Masking an asset's days removes exactly its own terms from the day emissions:
    the other assets' terms on those days stay (a gate without inputs, so that the
    market average it would read is out of the picture)."""
    gate = bm.models.gate.MarkovGate(2, input_dependent=False, transition_features=())
    frame = synthetic_panel()
    model = bm.BayesianMoE(experts=["ar", "cross_sectional"], gate=gate, window=WINDOW)
    data = prepare_panel(frame, window=WINDOW, min_observations=10)
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    program = model.panel_program().build(inputs)
    values = _prior_values(program, inputs, data.observed_response)

    def emissions(response):
        with torch.no_grad(), poutine.condition(data=values):
            comps = program.components(inputs)
            return program.log_emission(comps, response, comps.gate.log_weights)

    base = emissions(data.observed_response)
    # Remove asset D from the likelihood altogether: the change is exactly D's terms.
    without_d = data.observed_response.clone()
    without_d[:, 3] = torch.nan
    with torch.no_grad(), poutine.condition(data=values):
        comps = program.components(inputs)
        y = torch.nan_to_num(data.observed_response[:, 3:4])
        own = comps.asset(3).log_emission(y)
    on = torch.isfinite(data.observed_response[:, 3:4])
    torch.testing.assert_close(
        emissions(without_d) + torch.where(on, own, 0.0), base, rtol=1e-12, atol=1e-12
    )


def test_experts_share_parameters_across_assets():
    """Each site is sampled once; asset i's predictive is the expert run on asset i
    alone at those values."""
    _, data, inputs, response, program, values = _setup(experts=("ar", "kalman"))
    trace = poutine.trace(program).get_trace(inputs, response)
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    assert len(sites) == len(set(sites))
    assert {"ar/coef", "kalman/df"} <= set(sites) or {"ar/coef"} <= set(sites)
    with torch.no_grad(), poutine.condition(data=values):
        comps = program.components(inputs)
        for i in (0, 3):
            alone = program.expert_predictive(0, inputs.assets[i])  # the AR expert
            # assets 1.. run stacked in one call: the vector kernels may round an ulp apart
            close = {"rtol": 0, "atol": 0} if i == 0 else {"rtol": 1e-13, "atol": 0}
            torch.testing.assert_close(comps.experts[0][i].mean, alone.mean, **close)
            torch.testing.assert_close(comps.experts[0][i].stddev, alone.stddev, **close)


def _cross_sectional_locs(expert, inputs, values):
    with torch.no_grad(), poutine.condition(data=values):
        return torch.stack([d.mean[..., 0] for d in expert.panel_model(inputs)], dim=-1)


@pytest.mark.parametrize("attention", [True, False])
def test_cross_sectional_masks_missing_assets_and_attention_mixes_the_others(attention):
    frame = synthetic_panel()
    data = prepare_panel(frame, window=WINDOW, min_observations=10)
    inputs = data.inputs
    torch.manual_seed(0)
    expert = CrossSectional(length=WINDOW, attention=attention)
    expert.build_panel(inputs)
    with poutine.trace() as tr:
        expert.panel_model(inputs)
    values = {n: s["value"].detach() for n, s in tr.trace.nodes.items() if s["type"] == "sample"}
    base = _cross_sectional_locs(expert, inputs, values)
    # Asset D's placeholders before its listing are masked out of A's attention.
    early = inputs.origins <= 59
    shifted = _replace_series(inputs, 3, lambda s: torch.where(inputs.observed[:, 3:4], s, 7.0))
    moved = _cross_sectional_locs(expert, shifted, values)
    torch.testing.assert_close(moved[early][:, 0], base[early][:, 0], rtol=0, atol=1e-12)
    # Once D is listed, changing its returns moves A's forecast only with attention.
    later = _replace_series(inputs, 3, lambda s: s * 3.0)
    moved = _cross_sectional_locs(expert, later, values)
    listed = inputs.origins >= 80
    changed = (moved[listed][:, 0] - base[listed][:, 0]).abs().max()
    assert (changed > 1e-6) if attention else (changed == 0)


def _replace_series(inputs, asset, change):
    assets = list(inputs.assets)
    assets[asset] = replace(assets[asset], series=change(assets[asset].series))
    return replace(inputs, assets=tuple(assets))


def test_cross_sectional_is_causal():
    """Changing the panel after day t leaves every forecast made at origins <= t alone."""
    frame = synthetic_panel()
    data = prepare_panel(frame, window=WINDOW, min_observations=10)
    torch.manual_seed(0)
    expert = CrossSectional(length=WINDOW)
    expert.build_panel(data.inputs)
    with poutine.trace() as tr:
        expert.panel_model(data.inputs)
    values = {n: s["value"].detach() for n, s in tr.trace.nodes.items() if s["type"] == "sample"}
    later = frame.copy()
    later.iloc[150:] = later.iloc[150:] * -2.0 + 1.0
    changed = prepare_panel(
        later, window=WINDOW, min_observations=10, preprocessor=data.preprocessor
    )
    base = _cross_sectional_locs(expert, data.inputs, values)
    moved = _cross_sectional_locs(expert, changed.inputs, values)
    before = changed.inputs.origins <= 149
    torch.testing.assert_close(moved[before], base[before], rtol=0, atol=0)
    assert not torch.allclose(moved[~before], base[~before])


def test_panel_refuses_what_it_cannot_fit():
    frame = synthetic_panel()
    with pytest.raises(DataError, match=r"expert 'tcn' reads columns \['vix'\]"):
        tcn = {"name": "tcn", "columns": ["vix"]}
        bm.BayesianMoE(experts=["ar", tcn], window=WINDOW).fit(frame, panel=True, num_steps=1)
    with pytest.raises(ValueError, match="energy gating"):
        bm.BayesianMoE(experts=["ar", "tcn"], window=WINDOW, energy_gate=True).fit(
            frame, panel=True, num_steps=1
        )
    short = frame.copy()
    short.iloc[:-20, 3] = np.nan
    with pytest.raises(DataError, match="'D'"):
        bm.BayesianMoE(experts=["ar"], window=WINDOW).fit(short, panel=True, num_steps=1)
    with pytest.raises(ValueError, match="strategy='joint'"):
        bm.BayesianMoE(experts=["ar", "gru"], window=WINDOW).fit(frame, panel=True, num_steps=1)


def test_weight_prior_is_the_gaussian_log_density_of_the_network_while_training():
    """ORACLE: sum of log N(psi; 0, s^2) over the weights, up to the constant."""
    from pyro import poutine

    frame = synthetic_panel()
    data = prepare_panel(frame, window=WINDOW, min_observations=10)
    expert = CrossSectional(weight_prior=True)
    expert.build_panel(data.inputs)

    def factor():
        with torch.no_grad(), poutine.trace() as tr:
            expert.panel_model(data.inputs)
        node = tr.trace.nodes.get("weight_prior")
        return None if node is None else float(node["fn"].log_prob(node["value"]).sum())

    expert.eval()
    assert factor() is None  # a penalty of the optimisation only
    expert.train()
    expected = 0.0
    for name, p in expert.net.named_parameters():
        sd = 1.0 if name == "embedding" else (p.shape[-1] ** -0.5 if p.dim() >= 2 else 0.1)
        normal = torch.distributions.Normal(0.0, sd)
        expected += float((normal.log_prob(p.detach()) - normal.log_prob(torch.zeros(()))).sum())
    np.testing.assert_allclose(factor(), expected, rtol=1e-5)


def test_stacked_assets_equal_one_call_per_asset_with_gradients():
    """The experts with independent targets (AR, Kalman) run on the other assets in one
    call (their per-target parameters repeated); log evidence and its gradient equal
    the per-asset route's, and every asset is still a separate predictive."""
    _, data, inputs, response, program, values = _setup(experts=("ar", "kalman", "var"))
    labels = program.labels
    assert program.per_target_sites[labels.index("ar")] == {
        "ar/intercept",
        "ar/coef",
        "ar/scale",
        "ar/vol_coef",
        "ar/df",
    }
    assert "kalman/pacf" in program.per_target_sites[labels.index("kalman")]
    assert labels.index("var") not in program.per_target_sites  # VAR mixes its targets

    def evidence_and_grad(stacked: bool):
        program.batch_assets = stacked
        leaves = {k: v.clone().requires_grad_(True) for k, v in values.items()}
        with poutine.condition(data=leaves):
            log_evidence = program(inputs, response)
        grads = torch.autograd.grad(log_evidence, list(leaves.values()), allow_unused=True)
        return log_evidence.detach(), dict(zip(leaves, grads))

    stacked, stacked_grad = evidence_and_grad(True)
    alone, alone_grad = evidence_and_grad(False)
    torch.testing.assert_close(stacked, alone, rtol=1e-12, atol=0)
    for name, grad in alone_grad.items():
        if grad is not None:
            torch.testing.assert_close(stacked_grad[name], grad, rtol=1e-9, atol=1e-12)
    program.batch_assets = True
    with torch.no_grad(), poutine.condition(data=values):
        comps = program.components(inputs)
    kalman = comps.experts[labels.index("kalman")]
    assert len(kalman) == len(data.assets)
    assert all(d.event_shape == (1,) and d.batch_shape == (inputs.n_origins,) for d in kalman)


def test_stacking_is_refused_for_sites_that_grow_with_the_targets_otherwise():
    """stacked_sites returns None for an expert whose parameter grows with the targets
    along another axis (here a d_y x d_y matrix), so it keeps one call per asset."""
    import pyro.distributions as dist

    from bayes_moe.models.panel import stacked_sites

    def mixing(inputs):
        d_y = inputs.n_targets
        one = torch.ones((), dtype=inputs.series.dtype)
        pyro.sample("mix", dist.Normal(0 * one, one).expand([d_y, d_y]).to_event(2))
        return dist.Normal(inputs.series[inputs.origins, :d_y], 1.0).to_event(1)

    _, _, inputs, _, _, _ = _setup(experts=("ar",))
    assert stacked_sites(mixing, inputs.assets[0]) is None


def test_asset_levels_load_each_asset_on_the_market_levels():
    """rho_i = 1 for every asset is the shared-levels model exactly; otherwise asset i's
    mixture is stretched by exp(rho_i lambda_k); a single series or a gate without
    levels refuses the option."""
    _, data, inputs, response, program, values = _setup(experts=("ar",), asset_levels=True)
    shared = (
        bm.BayesianMoE(experts=["ar"], n_regimes=2, window=WINDOW).panel_program().build(inputs)
    )
    ones = dict(values, **{"gate/asset_level_loading": torch.ones(4, dtype=torch.float64)})
    with torch.no_grad():
        with poutine.condition(data=ones):
            with_ones = program(inputs, response)
        with poutine.condition(data=values):
            without = shared(inputs, response)
            comps = program.components(inputs)
    torch.testing.assert_close(with_ones, without, rtol=1e-13, atol=0)
    rho = values["gate/asset_level_loading"]
    for i in range(4):
        torch.testing.assert_close(comps.asset(i).gate.log_scale, comps.gate.log_scale * rho[i])
    with pytest.raises(ValueError, match="asset_levels"):
        bm.BayesianMoE(experts=["ar"], window=WINDOW, asset_levels=True).program()
    flat = bm.models.gate.MarkovGate(2, volatility_levels=False)
    model = bm.BayesianMoE(experts=["ar"], gate=flat, window=WINDOW, asset_levels=True)
    with pytest.raises(ValueError, match="volatility_levels=True"):
        model.panel_program().build(inputs)
