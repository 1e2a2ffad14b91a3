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
energy                 with an energy gate (or ``energy=True``): ``energy``,
                       ``predictive_entropy``, ``regime_entropy`` and
                       ``heavy_weight`` of the kept draws, ``(chain, draw,
                       origin_date)``, and each one's ``<name>_mean`` over all draws
                       (:meth:`~bayes_moe.inference.results.MoEFit.energy`)
=====================  ==========================================================

:func:`compact` makes a copy for files: per-day groups in float32, Viterbi paths in
int8; the posterior and the observed data stay float64.

The pointwise log-likelihood is the one-step *predictive* density (what
:func:`arviz.loo` and :func:`arviz.compare` need for a time series), not the joint
density of an HMM, which does not factor over days.

ArviZ 0.x and 1.x
-----------------
:func:`to_inference_data` returns the native container of the installed ArviZ: an
``arviz.InferenceData`` under ArviZ 0.x (0.23 on Python 3.11) and an
:class:`xarray.DataTree` under ArviZ 1.x (``arviz_base``, ``arviz_stats`` and
``arviz_plots``), with the same groups, variables, dims and coords; both are written to
NetCDF files with one group per ArviZ group, so either version reads the other's files.
This module is the one place that knows the version (:data:`ARVIZ_1`); the rest of the
package goes through its functions:

===================  ===================================  ===================================
function             ArviZ 0.x                            ArviZ 1.x
===================  ===================================  ===================================
:func:`loo`          ``az.loo``, a ``pandas.Series``      ``arviz_stats.loo``, an
                     indexed by ``elpd_loo``...           ``ELPDDataLOO`` (``elpd``, ``p``...)
:func:`psislw`       ``az.psislw(log_ratio)``             ``array_stats.psislw(-log_ratio)``:
                                                          it takes the log-*likelihood*
:func:`summary`      ``az.summary(hdi_prob=...)``         ``az.summary(ci_prob=...,
                                                          ci_kind="hdi")``
:func:`plot_forest`  ``az.plot_forest`` on one            ``arviz_plots.plot_forest``: one
                     matplotlib axis per variable         figure per variable, side by side
:func:`to_netcdf`    ``InferenceData.to_netcdf``          ``DataTree.to_netcdf`` with the
                     (zlib by default)                    same zlib encoding per group
:func:`from_netcdf`  ``az.from_netcdf``                   ``xarray.open_datatree``, loaded
:func:`group_names`  ``InferenceData.groups()``           the ``DataTree``'s children
===================  ===================================  ===================================

What still differs: ``arviz_stats`` refuses a Pareto tail of fewer than five draws
(fewer than :data:`MIN_PSIS_DRAWS` draws), where ArviZ 0.x leaves the ratios unsmoothed
with :math:`\hat k = \infty`; :func:`psislw` and :func:`loo` give 0.x's answer under
both. The tail holds :math:`\lceil \min(S/5, 3\sqrt S) \rceil` draws under 0.x and
:math:`\lfloor S/5 \rfloor` or :math:`\lfloor 3 \sqrt S \rfloor` under 1.x, so
:math:`\hat k` can differ in the third decimal; the standard error of ``elpd_loo``
takes the variance of the pointwise values with divisor :math:`N` (0.x) or
:math:`N - 1` (1.x).

The groups are built as :class:`xarray.Dataset` objects here (not with ``from_dict``,
whose signature differs between the versions) and put in the native container by
:func:`from_groups`. A variable without named dims gets ArviZ's default names
``{variable}_dim_{i}``.
"""

from __future__ import annotations

import datetime
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import xarray as xr
from scipy import special

from bayes_moe.data.windows import VOL_FEATURES
from bayes_moe.inference.posterior import DEFAULT_KEEP_DRAWS
from bayes_moe.kernels.hmm import stationary_distribution

if TYPE_CHECKING:  # annotations only: the fit's class calls into this module
    from bayes_moe.inference.results import MoEFit

try:
    import arviz as az
except FileNotFoundError:
    # ArviZ 0.23 stamps the date of its once-a-day notice in the user's cache on import
    # (write ``daily_warning.tmp``, rename it over ``daily_warning``). Processes that
    # import it together on a new day (Dask workers unpickling a task) write the same
    # temporary file, and every rename after the first finds it gone. The first rename
    # has written today's stamp by then, so importing again skips the write.
    import arviz as az

#: The ArviZ version in use, recorded in the attributes of every InferenceData made here.
ARVIZ_VERSION: str = az.__version__

#: True under ArviZ 1.x (``DataTree`` containers, ``arviz_stats``, ``arviz_plots``).
ARVIZ_1: bool = int(ARVIZ_VERSION.split(".")[0]) >= 1
#: Fewest draws whose largest ratios ``arviz_stats`` smooths (a tail of ``S // 5 >= 5``).
MIN_PSIS_DRAWS = 25

SHARED_DIMS = {"target", "vol_feature"}
GATE_DIMS = {
    "transition": ("regime_from", "regime_to"),
    "bias": ("regime", "expert"),
    "coef": ("expert", "gate_feature"),
    "level_step": ("regime_step",),
    "transition_coef": ("regime_step", "transition_feature"),
    "asset_level_loading": ("asset",),  # a panel's per-asset levels
}


def _variable_name(site: str) -> str:
    return site.replace("/", ".")


def _site_dims(fit, site: str, ndim: int) -> list[str] | None:
    label, param = site.split("/", 1)
    if label == "gate":
        return list(GATE_DIMS.get(param, ())) or None
    if label == "energy":  # the energy gate's scalars beta and tau
        return None
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
    fit: MoEFit,
    *,
    keep_draws: int | None = DEFAULT_KEEP_DRAWS,
    log_likelihood: str = "all",
    energy: bool | None = None,
) -> Any:
    """Build the InferenceData of ``fit`` (groups in the module docstring).

    An ``arviz.InferenceData`` under ArviZ 0.x, an :class:`xarray.DataTree` under 1.x.

    Parameters
    ----------
    fit : MoEFit
    keep_draws : int or None
        Draws whose per-day values are kept (None: every draw).
    log_likelihood : {"all", "kept"}
        Draws of the ``log_likelihood`` group: every draw (for LOO and WAIC) or the
        kept ones (a smaller file; LOO from few draws is unreliable).
    energy : bool, optional
        Add the ``energy`` group (:meth:`~bayes_moe.inference.results.MoEFit.energy`);
        default: when the model has an energy gate (else it costs a pass over the
        draws).
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
    attrs = {
        "inference_library": "pyro",
        "inference_method": f"SVI ({fit.diagnostics.guide} guide)",
        "model": json.dumps(fit.model.config()),
        "horizon": fit.horizon,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "arviz_version": ARVIZ_VERSION,
    }
    kept = post.kept_draws.numpy()
    log_lik = post.log_predictive_density.numpy() - np.log(scale).sum()  # (S, N_obs)
    ll_draws = np.arange(fit.n_draws) if log_likelihood == "all" else kept
    y_pred = data.unstandardize(post.posterior_predictive.numpy())  # (k, N_obs, d_y)
    regimes = fit.regimes(keep_draws).to_dataset()
    drawn = ["filtered", "smoothed", "viterbi"]
    return from_groups(
        {
            "posterior": _dataset(posterior, dims, coords, attrs, sample_dims=True),
            "posterior_predictive": _by_draw("y", y_pred, kept, dates, targets),
            "log_likelihood": _by_draw("y", log_lik[ll_draws], ll_draws, dates, targets),
            "observed_data": _dataset({"y": y_obs}, dims, coords, attrs, sample_dims=False),
            "regime_posterior": regimes[drawn]
            .expand_dims(chain=[0])
            .transpose("chain", "draw", ...),
            "regime_summary": regimes.drop_vars(drawn + ["draw"]),
            "predictive_summary": _predictive_summary(fit, post, log_lik),
            **(
                {"energy": _energy_group(fit, kept)}
                if (fit.model.energy_gate is not None if energy is None else energy)
                else {}
            ),
        }
    )


def _energy_group(fit, kept: np.ndarray) -> xr.Dataset:
    """Energy of the kept draws, ``(chain, draw, origin_date)``, and its mean over all draws."""
    draws = fit.energy_draws
    coords = {"chain": [0], "draw": kept, "origin_date": fit.data.origin_dates.values}
    variables = {}
    for name, value in (
        ("energy", draws.total),
        ("predictive_entropy", draws.predictive),
        ("regime_entropy", draws.regime),
        ("heavy_weight", draws.heavy_weight),
    ):
        variables[name] = (["chain", "draw", "origin_date"], value.numpy()[kept][None])
        variables[f"{name}_mean"] = (["origin_date"], value.mean(0).numpy())
    return xr.Dataset(variables, coords=coords)


def _dataset(
    values: Mapping[str, np.ndarray],
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, object],
    attrs: Mapping[str, object],
    *,
    sample_dims: bool,
) -> xr.Dataset:
    """An ArviZ group from arrays, as ArviZ's ``from_dict`` builds it.

    With ``sample_dims`` every array leads with ``(chain, draw)`` (one chain, draws
    ``0..S-1``). Dims not named in ``dims`` are called ``{variable}_dim_{i}``; only the
    coords of dims some variable has are kept, and a dim without coords gets ``0..n-1``.
    """
    variables, used = {}, set()
    for name, value in values.items():
        lead = ["chain", "draw"] if sample_dims else []
        rest = list(dims.get(name, ()))
        rest += [f"{name}_dim_{i}" for i in range(len(rest), value.ndim - len(lead))]
        variables[name] = (lead + rest, value)
        used.update(lead + rest)
    own = {dim: value for dim, value in coords.items() if dim in used}
    if sample_dims:
        draws = next(iter(values.values())).shape[1]
        own.update(chain=np.arange(1), draw=np.arange(draws))
    dataset = xr.Dataset(variables, coords=own, attrs=dict(attrs))
    return dataset.assign_coords(
        {dim: np.arange(size) for dim, size in dataset.sizes.items() if dim not in own}
    )


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


def compact(idata, *, log_likelihood: str = "all"):
    """A copy for files: every group but :data:`FULL_PRECISION_GROUPS` compacted.

    Per-day values keep what a report or a plot needs in float32 (seven significant
    digits); the posterior draws and the observed data stay float64, so summaries
    computed from a file equal those of the fit. ``log_likelihood="kept"`` keeps the
    log-likelihood of the draws of ``posterior_predictive`` (the kept draws) only.
    """
    if log_likelihood not in ("all", "kept"):
        raise ValueError(f"log_likelihood must be 'all' or 'kept', got {log_likelihood!r}")
    groups = to_groups(idata)
    out = {}
    for group, dataset in groups.items():
        if group == "log_likelihood" and log_likelihood == "kept":
            dataset = dataset.sel(draw=groups["posterior_predictive"]["draw"].values)
        out[group] = dataset if group in FULL_PRECISION_GROUPS else compact_dataset(dataset)
    return from_groups(out)


# ------------------------------------------------------------------ ArviZ 0.x and 1.x
def from_groups(groups: Mapping[str, xr.Dataset]):
    """The native ArviZ container of ``groups``: ``InferenceData`` (0.x), ``DataTree`` (1.x)."""
    if ARVIZ_1:
        return xr.DataTree.from_dict(dict(groups))
    return az.InferenceData(**cast("dict[str, Any]", groups))


def group_names(idata) -> list[str]:
    """The names of the groups of an ``InferenceData`` or ``DataTree``, in order."""
    if ARVIZ_1:
        return list(idata.children)
    return list(idata.groups())


def to_groups(idata) -> dict[str, xr.Dataset]:
    """Each group of an ``InferenceData`` or ``DataTree`` as an :class:`xarray.Dataset`."""
    if ARVIZ_1:
        return {name: node.to_dataset() for name, node in idata.children.items()}
    return {name: idata[name] for name in idata.groups()}


def to_netcdf(idata, path) -> Path:
    """Write ``idata`` to the NetCDF file ``path``, one HDF5 group per ArviZ group.

    Numeric variables are zlib-compressed (ArviZ 0.x's default, given explicitly to the
    ``DataTree`` writer under 1.x). Either version reads the file with
    :func:`from_netcdf` (or its own ``from_netcdf``).
    """
    path = Path(path)
    if not ARVIZ_1:
        idata.to_netcdf(str(path), engine="h5netcdf")
        return path
    encoding = {
        f"/{name}": {
            var: {"zlib": True}
            for var, value in dataset.variables.items()
            if value.dtype.kind in "biuf"
        }
        for name, dataset in to_groups(idata).items()
    }
    idata.to_netcdf(str(path), engine="h5netcdf", encoding=encoding)
    return path


def from_netcdf(path):
    """Read a file of :func:`to_netcdf` (or of either ArviZ) into memory."""
    if not ARVIZ_1:
        return az.from_netcdf(str(path))
    with xr.open_datatree(str(path), engine="h5netcdf") as tree:
        return tree.load()


@dataclass(frozen=True)
class LOO:
    r"""PSIS-LOO of :func:`loo`, the same fields under either ArviZ.

    Attributes
    ----------
    elpd_loo, se, p_loo : float
        The estimate of the expected log pointwise predictive density, its standard
        error (:math:`\sqrt{N \operatorname{var}(\mathrm{elpd}_i)}`, the variance with
        divisor :math:`N` under ArviZ 0.x, :math:`N - 1` under 1.x) and the effective
        number of parameters.
    pareto_k : ndarray
        Pareto :math:`\hat k` of each observation (the shape of the log-likelihood's
        observation dims).
    good_k : float
        ArviZ's threshold :math:`\min(1 - 1/\log_{10} S, 0.7)`.
    """

    elpd_loo: float
    se: float
    p_loo: float
    pareto_k: np.ndarray
    good_k: float


def loo(idata, var_name: str | None = None) -> LOO:
    r"""PSIS-LOO of the ``log_likelihood`` group (ArviZ's ``loo``, pointwise).

    ArviZ's warning when some :math:`\hat k` exceeds ``good_k`` passes through. Under
    ArviZ 1.x with fewer than :data:`MIN_PSIS_DRAWS` draws the weights come from
    :func:`psislw` (raw ratios, :math:`\hat k = \infty`, as ArviZ 0.x does), since
    ``arviz_stats`` refuses to fit a Pareto tail of fewer than five draws.
    """
    if not ARVIZ_1:
        result = az.loo(idata, pointwise=True, var_name=var_name)
        return LOO(
            elpd_loo=float(result["elpd_loo"]),
            se=float(result["se"]),
            p_loo=float(result["p_loo"]),
            pareto_k=np.asarray(result["pareto_k"]),
            good_k=float(result["good_k"]),
        )
    options = {}
    log_lik: xr.Dataset | xr.DataArray = to_groups(idata)["log_likelihood"]
    name = var_name if var_name is not None else next(iter(log_lik.data_vars))
    log_lik = log_lik[name].transpose(..., "chain", "draw")
    n_draws = log_lik.sizes["chain"] * log_lik.sizes["draw"]
    if n_draws < MIN_PSIS_DRAWS:
        obs_shape = log_lik.shape[:-2]
        log_weights, k = psislw(-log_lik.values.reshape(*obs_shape, n_draws))
        obs_dims = log_lik.dims[:-2]
        options["log_weights"] = xr.DataArray(log_weights.reshape(log_lik.shape), dims=log_lik.dims)
        options["pareto_k"] = xr.DataArray(k, dims=obs_dims)
    result = az.loo(idata, pointwise=True, var_name=name, **options)
    return LOO(
        elpd_loo=float(result.elpd),
        se=float(result.se),
        p_loo=float(result.p),
        pareto_k=np.asarray(result.pareto_k),
        good_k=float(result.good_k),
    )


def psislw(log_ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Pareto-smoothed, normalized log importance weights and Pareto :math:`\hat k`.

    Parameters
    ----------
    log_ratio : ndarray ``(..., S)``
        Log importance ratios :math:`\log r_s` of ``S`` draws along the last axis (for
        LOO, minus the log-likelihood).

    Returns
    -------
    log_weights : ndarray ``(..., S)``
        Smoothed log weights; :math:`\sum_s e^{w_s} = 1` along the last axis.
    k : ndarray ``(...)``
        The fitted generalized Pareto shape of the largest ratios.

    Notes
    -----
    ArviZ 0.x's ``psislw`` takes the log ratios; ArviZ 1.x's (``arviz_stats.base``)
    takes the log-likelihood and smooths its negative, so it gets ``-log_ratio``.
    Their tail sizes differ by at most a draw (0.x: :math:`\lceil \min(S/5,
    3\sqrt S) \rceil`; 1.x: :math:`\lfloor 3\sqrt S \rfloor` above 225 draws,
    :math:`\lfloor S/5 \rfloor` below). A tail of fewer than five draws is not
    smoothed: ArviZ 0.x returns the raw normalized ratios with :math:`\hat k = \infty`,
    ArviZ 1.x raises; here both give ArviZ 0.x's answer (1.x: under
    :data:`MIN_PSIS_DRAWS` draws).
    """
    log_ratio = np.asarray(log_ratio, dtype=np.float64)
    if not ARVIZ_1:
        log_weights, k = az.psislw(log_ratio)
        return np.asarray(log_weights), np.asarray(k)
    if log_ratio.shape[-1] < MIN_PSIS_DRAWS:
        log_weights = log_ratio - special.logsumexp(log_ratio, axis=-1, keepdims=True)
        return log_weights, np.full(log_ratio.shape[:-1], np.inf)
    from arviz_stats.base import array_stats

    log_weights, k = array_stats.psislw(-log_ratio, r_eff=1.0, axis=-1)
    return np.asarray(log_weights), np.asarray(k)


def summary(idata, var_names: Sequence[str] | None = None, *, hdi_prob: float = 0.94):
    """Posterior mean, sd and HDI of variables (ArviZ's ``summary``, unrounded).

    Returns
    -------
    DataFrame
        Indexed like ArviZ (``"gate.transition[0, 1]"``), columns ``mean``, ``sd``,
        ``hdi_{lower}%`` and ``hdi_{upper}%`` (ArviZ 0.x's names, e.g. ``hdi_3%`` and
        ``hdi_97%`` at 94%).
    """
    names = None if var_names is None else list(var_names)
    if not ARVIZ_1:
        return az.summary(idata, var_names=names, kind="stats", hdi_prob=hdi_prob, round_to="none")
    # ArviZ 1.x's signature: the type hints may be of the 0.x installed.
    table = cast(Any, az).summary(
        idata, var_names=names, kind="stats", ci_prob=hdi_prob, ci_kind="hdi", round_to="none"
    )
    lower, upper = _hdi_columns(hdi_prob)
    bounds = [c for c in table.columns if c not in ("mean", "sd")]
    return table.rename(columns=dict(zip(bounds, (lower, upper))))


def _hdi_columns(hdi_prob: float) -> tuple[str, str]:
    tail = 100 * (1 - hdi_prob) / 2
    return f"hdi_{tail:g}%", f"hdi_{100 - tail:g}%"


def plot_forest(
    idata,
    var_names: Sequence[str],
    path,
    *,
    titles: Sequence[str] | None = None,
    hdi_prob: float = 0.94,
    dpi: int = 120,
) -> Path:
    """Forest plots of ``var_names`` side by side, written to the PNG file ``path``.

    One panel per variable (each with its own x axis): the posterior mean and the
    ``hdi_prob`` HDI of each element, rows labelled by their coordinates. ArviZ 0.x
    draws each panel with ``az.plot_forest`` on a matplotlib axis (rows
    ``"{first dim} {coords}"``, e.g. ``"regime 1, ar"``); ArviZ 1.x's
    ``arviz_plots.plot_forest`` makes a figure of its own per variable (a coordinate
    column per dim, the 50% HDI as a thicker line), and the figures are put side by side.
    """
    import matplotlib.pyplot as plt

    names = list(var_names)
    titles = names if titles is None else list(titles)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ARVIZ_1:
        posterior = to_groups(idata)["posterior"]
        rows = max(_forest_rows(posterior[name]) for name in names)
        images = [
            _forest_image(idata, name, title, hdi_prob, dpi, height=1.2 + 0.35 * rows)
            for name, title in zip(names, titles)
        ]
        image = np.hstack(_pad_heights(images))
        plt.imsave(path, image, format="png", dpi=dpi)
        return path
    posterior = to_groups(idata)["posterior"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.7), squeeze=False)
    with warnings.catch_warnings():
        # ArviZ 0.23 calls a helper that matplotlib 3.11 deprecates; nothing to act on.
        warnings.filterwarnings("ignore", "Passing a dict or None as alias_mapping")
        for ax, name, title in zip(axes[0], names, titles):
            az.plot_forest(idata, var_names=[name], combined=True, hdi_prob=hdi_prob, ax=ax)
            ax.set_title(title, fontsize=10)
            # "regime_volatility[0]" -> "regime 0", "[1, ar]" -> "regime 1, ar": short
            # labels that do not run into the panel on the left.
            first = posterior[name].dims[2] if posterior[name].ndim > 2 else ""
            labels = [t.get_text().replace(name, "").strip("[]") for t in ax.get_yticklabels()]
            ax.set_yticklabels([f"{first} {label}".strip() for label in labels], fontsize=9)
        fig.tight_layout()
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _forest_rows(variable: xr.DataArray) -> int:
    """Rows of a forest plot of ``variable``: one per element of a draw."""
    return int(np.prod([n for d, n in variable.sizes.items() if d not in ("chain", "draw")]))


def _forest_image(
    idata, name: str, title: str, hdi_prob: float, dpi: int, *, height: float
) -> np.ndarray:
    """RGBA pixels of ``arviz_plots.plot_forest`` of one variable, titled, ``height`` inches."""
    import matplotlib.pyplot as plt

    dims = [d for d in to_groups(idata)["posterior"][name].dims if d not in ("chain", "draw")]
    # arviz_plots' signature (ArviZ 1.x): the type hints may be of the 0.x installed.
    collection = cast(Any, az).plot_forest(
        idata,
        var_names=[name],
        combined=True,
        point_estimate="mean",
        ci_kind="hdi",
        ci_probs=(0.5, hdi_prob),
        labels=dims or None,
        backend="matplotlib",
        figure_kwargs={"figsize": (4.2 + 0.8 * max(len(dims) - 1, 0), height)},
    )
    fig = collection.viz["figure"].item()
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    return plt.imread(buffer, format="png")


def _pad_heights(images: list[np.ndarray]) -> list[np.ndarray]:
    """Images padded at the bottom with white to the height of the tallest."""
    height = max(image.shape[0] for image in images)
    out = []
    for image in images:
        pad = np.ones((height - image.shape[0], *image.shape[1:]), dtype=image.dtype)
        out.append(np.concatenate([image, pad], axis=0))
    return out
