r"""Conversion of a fit to ArviZ ``InferenceData``.

ArviZ has no converter for Pyro SVI, so the groups are built with
:func:`arviz.from_dict` from the guide's draws, which go in as one chain:

=====================  ==========================================================
group                  content
=====================  ==========================================================
posterior              every latent site (``"ar.coef"``, ``"gate.transition"``...)
                       with regimes relabelled calm-to-turbulent, plus derived
                       ``regime_duration``, ``regime_volatility``,
                       ``regime_volatility_level``, ``regime_mean``,
                       ``regime_expert_weight``, ``regime_stationary``
posterior_predictive   ``y``: one draw of each day's one-step predictive per draw
observed_data          ``y``: the observed responses (data units)
log_likelihood         ``y``: the one-step predictive log density of each day,
                       :math:`\log p(y_t \mid \mathcal F_{t-1}, \theta)`, in data units
regime_posterior       ``filtered``, ``smoothed`` probabilities and ``viterbi`` paths
=====================  ==========================================================

The pointwise log-likelihood is the one-step *predictive* density (what
:func:`arviz.loo` and :func:`arviz.compare` need for a time series), not the joint
density of an HMM, which does not factor over days.
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import torch

from bayes_moe.data.windows import VOL_FEATURES
from bayes_moe.inference.hmm import stationary_distribution

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


def _relabelled_draws(fit) -> dict[str, np.ndarray]:
    """Latent draws with the gate's regime axis put in the calm-to-turbulent order."""
    order = fit.posterior.regime_order  # (S, K)
    out = {}
    for site, value in fit.draws.items():
        if site == "gate/transition":
            value = fit.posterior.transition
        elif site == "gate/bias":
            value = torch.take_along_dim(value, order[:, :, None], dim=1)
        out[site] = value.detach().numpy()
    return out


def to_inference_data(fit) -> az.InferenceData:
    """Build the InferenceData of ``fit`` (groups in the module docstring)."""
    post = fit.posterior
    data = fit.data
    K = fit.model.n_regimes
    labels = list(fit.program.labels)
    dates = data.response_dates
    targets = list(fit.targets)
    scale = data.preprocessor.target_scale

    posterior, dims = {}, {}
    for site, value in _relabelled_draws(fit).items():
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
    y_pred = data.unstandardize(post.posterior_predictive.numpy())  # (S, N_obs, d_y)
    log_lik = post.log_predictive_density.numpy() - np.log(scale).sum()
    if len(targets) == 1:
        y_obs, y_pred = y_obs[:, 0], y_pred[..., 0]
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
        posterior_predictive={"y": y_pred[None]},
        observed_data={"y": y_obs},
        log_likelihood={"y": log_lik[None]},
        coords=coords,
        dims=dims,
        attrs={
            "inference_library": "pyro",
            "inference_method": f"SVI ({fit.diagnostics.guide} guide)",
            "model": json.dumps(fit.model.config()),
            "horizon": fit.horizon,
        },
    )
    regimes = fit.regimes().to_dataset().expand_dims(chain=[0]).transpose("chain", "draw", ...)
    idata.add_groups({"regime_posterior": regimes})
    return idata
