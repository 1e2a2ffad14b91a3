r"""Conversion of a fit to ArviZ ``InferenceData``.

ArviZ has no converter for Pyro SVI, so the groups are built from the guide's
draws, which go in as one chain. Per-day values of every draw would grow with days
times draws (0.3 GB per variable at 200,000 days and 200 draws), so the per-day
groups hold the values of ``keep_draws`` thinned draws
(:func:`~bayes_moe.inference.posterior.thinned_draws`; their ``draw`` coordinate
holds their indices among all draws) and summaries over all draws:

=====================  ==========================================================
group                  content
=====================  ==========================================================
posterior              every latent site (``"ar.coef"``, ``"gate.transition"``...)
                       with regimes relabelled calm-to-turbulent, plus derived
                       ``regime_duration``, ``regime_volatility``,
                       ``regime_volatility_level``, ``regime_mean``,
                       ``regime_expert_weight``, ``regime_stationary``; all draws
posterior_predictive   ``y``: one draw of each day's one-step predictive per kept draw
observed_data          ``y``: the observed responses (data units)
log_likelihood         ``y``: the one-step predictive log density of each day,
                       :math:`\log p(y_t \mid \mathcal F_{t-1}, \theta)`, in data
                       units; every draw (``log_likelihood="all"``, what
                       :func:`arviz.loo` needs) or the kept ones (``"kept"``)
regime_posterior       ``filtered``, ``smoothed`` probabilities and ``viterbi``
                       paths of the kept draws, ``(chain, draw, date[, regime])``
regime_summary         over all draws, ``(date, regime)``: ``filtered_mean``,
                       ``filtered_sd``, ``smoothed_mean``, ``smoothed_sd`` and
                       ``viterbi_share`` (the share of draws whose path is there)
predictive_summary     over all draws, per day: the one-step posterior predictive's
                       ``mean`` and ``sd`` (data units, ``(date[, target])``), its
                       ``pit`` (CDF at the realized first target) and ``log_score``
                       (:math:`\log \frac1S \sum_s p(y_t \mid \mathcal F_{t-1},
                       \theta_s)`, data units)
=====================  ==========================================================

:func:`compact` makes a copy for files: per-day groups in float32, Viterbi paths in
int8; the posterior and the observed data stay float64.

The pointwise log-likelihood is the one-step *predictive* density (what
:func:`arviz.loo` and :func:`arviz.compare` need for a time series), not the joint
density of an HMM, which does not factor over days.
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import torch
import xarray as xr

from bayes_moe.data.windows import VOL_FEATURES
from bayes_moe.inference.hmm import stationary_distribution
from bayes_moe.inference.posterior import DEFAULT_KEEP_DRAWS

SHARED_DIMS = {"target", "vol_feature"}
GATE_DIMS = {
    "transition": ("regime_from", "regime_to"),
    "bias": ("regime", "expert"),
    "coef": ("expert", "gate_feature"),
    "level_step": ("regime_step",),
    "transition_coef": ("regime_step", "transition_feature"),
}


def _variable_name(site: str) -> str:
    return site.replace("/", ".")


def _site_dims(fit, site: str, ndim: int) -> list[str] | None:
    label, param = site.split("/", 1)
    if label == "gate":
        return list(GATE_DIMS.get(param, ())) or None
    expert = fit.program.experts[fit.program.labels.index(label)]
    dims = expert.param_dims.get(param)
    if dims is None or len(dims) != ndim:
        return None
    return [d if d in SHARED_DIMS else f"{label}.{d}" for d in dims]


def _expert_coords(fit) -> dict[str, list]:
    """Coordinates of the label-prefixed dimensions of expert parameters."""
    coords = {}
    inputs = fit.program.expert_inputs(fit.data.inputs)
    for label, expert in zip(fit.program.labels, fit.program.experts):
        for dim, values in expert.param_coords(inputs).items():
            coords[f"{label}.{dim}"] = values
    return coords


def _relabelled_draws(fit, post) -> dict[str, np.ndarray]:
    """Latent draws with the gate's regime axis put in the calm-to-turbulent order."""
    order = post.regime_order  # (S, K)
    out = {}
    for site, value in fit.draws.items():
        if site == "gate/transition":
            value = post.transition
        elif site == "gate/bias":
            value = torch.take_along_dim(value, order[:, :, None], dim=1)
        out[site] = value.detach().numpy()
    return out


def to_inference_data(
    fit, *, keep_draws: int | None = DEFAULT_KEEP_DRAWS, log_likelihood: str = "all"
) -> az.InferenceData:
    """Build the InferenceData of ``fit`` (groups in the module docstring).

    Parameters
    ----------
    fit : MoEFit
    keep_draws : int or None
        Draws whose per-day values are kept (None: every draw).
    log_likelihood : {"all", "kept"}
        Draws of the ``log_likelihood`` group: every draw (for LOO and WAIC) or the
        kept ones (a smaller file; LOO from few draws is unreliable).
    """
    if log_likelihood not in ("all", "kept"):
        raise ValueError(f"log_likelihood must be 'all' or 'kept', got {log_likelihood!r}")
    post = fit.posterior_summary(keep_draws)
    data = fit.data
    K = fit.model.n_regimes
    labels = list(fit.program.labels)
    dates = data.response_dates
    targets = list(fit.targets)
    scale = data.preprocessor.target_scale

    posterior, dims = {}, {}
    for site, value in _relabelled_draws(fit, post).items():
        name = _variable_name(site)
        posterior[name] = value[None]
        site_dims = _site_dims(fit, site, value.ndim - 1)
        if site_dims:
            dims[name] = site_dims
    posterior["regime_duration"] = post.regime_duration.numpy()[None]
    posterior["regime_volatility"] = (post.regime_volatility.numpy() * scale[0])[None]
    posterior["regime_volatility_level"] = post.log_regime_scale.exp().numpy()[None]
    loc = fit.horizon * data.preprocessor.target_loc[0]
    posterior["regime_mean"] = (loc + scale[0] * post.regime_mean.numpy())[None]
    posterior["regime_expert_weight"] = post.regime_expert_weights.numpy()[None]
    posterior["regime_stationary"] = stationary_distribution(post.transition).numpy()[None]
    dims.update(
        regime_duration=["regime"],
        regime_volatility=["regime"],
        regime_volatility_level=["regime"],
        regime_mean=["regime"],
        regime_expert_weight=["regime", "expert"],
        regime_stationary=["regime"],
    )

    y_obs = data.unstandardize(data.observed_response.numpy())  # (N_obs, d_y)
    if len(targets) == 1:
        y_obs = y_obs[:, 0]
        dims["y"] = ["date"]
    else:
        dims["y"] = ["date", "target"]

    coords = {
        "regime": np.arange(K),
        "regime_from": np.arange(K),
        "regime_to": np.arange(K),
        "regime_step": np.arange(1, K),
        "expert": labels,
        "target": targets,
        "vol_feature": list(VOL_FEATURES),
        "gate_feature": list(fit.model.gate.feature_names),
        "transition_feature": list(fit.model.gate.transition_features),
        "date": dates.values,
        **_expert_coords(fit),
    }
    idata = az.from_dict(
        posterior=posterior,
        observed_data={"y": y_obs},
        coords=coords,
        dims=dims,
        attrs={
            "inference_library": "pyro",
            "inference_method": f"SVI ({fit.diagnostics.guide} guide)",
            "model": json.dumps(fit.model.config()),
            "horizon": fit.horizon,
        },
    )
    kept = post.kept_draws.numpy()
    log_lik = post.log_predictive_density.numpy() - np.log(scale).sum()  # (S, N_obs)
    ll_draws = np.arange(fit.n_draws) if log_likelihood == "all" else kept
    y_pred = data.unstandardize(post.posterior_predictive.numpy())  # (k, N_obs, d_y)
    regimes = fit.regimes(keep_draws).to_dataset()
    drawn = ["filtered", "smoothed", "viterbi"]
    idata.add_groups(
        {
            "posterior_predictive": _by_draw("y", y_pred, kept, dates, targets),
            "log_likelihood": _by_draw("y", log_lik[ll_draws], ll_draws, dates, targets),
            "regime_posterior": regimes[drawn]
            .expand_dims(chain=[0])
            .transpose("chain", "draw", ...),
            "regime_summary": regimes.drop_vars(drawn + ["draw"]),
            "predictive_summary": _predictive_summary(fit, post, log_lik),
        }
    )
    return idata


def _by_draw(name: str, values: np.ndarray, draws, dates, targets) -> xr.Dataset:
    """Values ``(k, N_obs[, d_y])`` of some draws as a ``(chain, draw, date[, target])`` group.

    A trailing target axis of length one is dropped, as in ``observed_data``.
    """
    if values.ndim == 3 and len(targets) == 1:
        values = values[..., 0]
    value_dims = ["chain", "draw", "date"] + (["target"] if values.ndim == 3 else [])
    coords = {"chain": [0], "draw": np.asarray(draws), "date": dates.values}
    if values.ndim == 3:
        coords["target"] = list(targets)
    return xr.Dataset({name: (value_dims, values[None])}, coords=coords)


def _predictive_summary(fit, post, log_lik: np.ndarray) -> xr.Dataset:
    """The ``predictive_summary`` group (module docstring); ``log_lik`` ``(S, N_obs)``."""
    data = fit.data
    targets = list(fit.targets)
    mean = data.unstandardize(post.predictive_mean.numpy())  # (N_obs, d_y)
    sd = post.predictive_sd.numpy() * data.preprocessor.target_scale
    log_score = np.logaddexp.reduce(log_lik, axis=0) - np.log(log_lik.shape[0])
    coords = {"date": data.response_dates.values}
    moment_dims = ["date", "target"]
    if len(targets) == 1:
        mean, sd, moment_dims = mean[:, 0], sd[:, 0], ["date"]
    else:
        coords["target"] = targets
    return xr.Dataset(
        {
            "mean": (moment_dims, mean),
            "sd": (moment_dims, sd),
            "pit": (["date"], post.pit.numpy()),
            "log_score": (["date"], log_score),
        },
        coords=coords,
    )


#: Groups that :func:`compact` leaves in full precision.
FULL_PRECISION_GROUPS = ("posterior", "observed_data")


def compact_dataset(dataset: xr.Dataset) -> xr.Dataset:
    """A copy with float64 variables in float32 and integer ones in int8 where they fit."""
    out = dataset.copy()
    for name, var in dataset.data_vars.items():
        if var.dtype == np.float64:
            out[name] = var.astype(np.float32)
        elif var.dtype.kind == "i" and var.size and -128 <= var.min() and var.max() <= 127:
            out[name] = var.astype(np.int8)
    return out


def compact(idata: az.InferenceData, *, log_likelihood: str = "all") -> az.InferenceData:
    """A copy for files: every group but :data:`FULL_PRECISION_GROUPS` compacted.

    Per-day values keep what a report or a plot needs in float32 (seven significant
    digits); the posterior draws and the observed data stay float64, so summaries
    computed from a file equal those of the fit. ``log_likelihood="kept"`` keeps the
    log-likelihood of the draws of ``posterior_predictive`` (the kept draws) only.
    """
    if log_likelihood not in ("all", "kept"):
        raise ValueError(f"log_likelihood must be 'all' or 'kept', got {log_likelihood!r}")
    groups = {}
    for group in idata.groups():
        dataset = idata[group]
        if group == "log_likelihood" and log_likelihood == "kept":
            dataset = dataset.sel(draw=idata.posterior_predictive["draw"].values)
        groups[group] = dataset if group in FULL_PRECISION_GROUPS else compact_dataset(dataset)
    return az.InferenceData(**groups)
