r"""Fitting a panel and reading it: per-asset forecasts, the shared market regime, ArviZ.

:func:`fit_panel` fits :class:`~bayes_moe.models.panel.PanelProgram` by the same SVI as a
single series (:func:`~bayes_moe.inference.svi.run_svi`). :class:`PanelFit` evaluates the
posterior draws in chunks (:func:`evaluate_panel`): for each draw the day emissions
summed over the scored assets, the forward-backward smoother and Viterbi path of the one
market regime, the causal regime probabilities of every origin
(:func:`~bayes_moe.kernels.hmm.causal_regime`) and each asset's one-step predictive
density, the mixture over regimes and experts

.. math::

    p(y_{i,n} \mid \mathcal F_n) = \sum_k P(z_n = k \mid \mathcal F_n)
    \sum_m g_{n,k,m}\, p_m^{(k)}(y_{i,n} \mid X_{i,n}).

Regimes are labelled calm to turbulent in every draw (by the volatility levels where the
gate has them, else by the pooled predictive variance), as for a single series.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyro
import torch
from tqdm.auto import tqdm

from bayes_moe.data.panel import panel_frame
from bayes_moe.data.panel_windows import PanelData, prepare_panel
from bayes_moe.inference.arviz import (
    ARVIZ_VERSION,
    _dataset,
    _site_dims,
    _variable_name,
    from_groups,
)
from bayes_moe.inference.posterior import (
    DEFAULT_KEEP_DRAWS,
    TAIL_ORIGINS,
    expected_stay,
    nn_one_hot,
    occupancy_average,
    relabel_matrices,
    thinned_draws,
)
from bayes_moe.inference.predictive import Forecast, PredictiveMixture
from bayes_moe.inference.regimes import RegimePosterior
from bayes_moe.inference.results import SVIDiagnostics
from bayes_moe.inference.svi import run_svi
from bayes_moe.inference.svi_options import SVIOptions
from bayes_moe.kernels.hmm import causal_regime, hmm_smoother, hmm_viterbi
from bayes_moe.kernels.mixture_kernels import regime_mixture
from bayes_moe.models.distributions import (
    cat_batch,
    index_batch,
    mean_and_variance,
    regime_log_prob,
)
from bayes_moe.models.experts.cross_sectional import CrossSectional
from bayes_moe.models.experts.window import WindowExpert
from bayes_moe.models.moe import BayesianMoE
from bayes_moe.models.panel import PanelProgram

#: Posterior draws evaluated together by :func:`evaluate_panel`.
PANEL_DRAW_CHUNK: int = 25


def fit_panel(
    model: BayesianMoE, data: PanelData, options: SVIOptions | None = None, **keywords
) -> PanelFit:
    """Fit ``model`` to a panel by SVI (:func:`~bayes_moe.inference.svi.fit_svi`'s options).

    Window experts train jointly with the rest on a panel (``strategy="joint"``): their
    two-stage pretraining reads one series. ValueError before any work otherwise.
    """
    options = SVIOptions.merge(options, keywords)
    window = [label for label, e in zip(model.labels, model.experts) if isinstance(e, WindowExpert)]
    if window and options.strategy == "two_stage":
        raise ValueError(
            f"window experts {window} are pretrained on one series; on a panel fit them "
            "jointly with strategy='joint'"
        )
    n_obs = data.n_observed
    inputs = data.inputs.at(data.inputs.origins[:n_obs])
    program, draws, diagnostics = run_svi(
        model.config(),
        model.panel_program,
        inputs,
        data.observed_response,
        options,
        level_response=data.market_response[:n_obs, None],
        n_observations=int(data.scored.sum()),
    )
    assert isinstance(program, PanelProgram)  # made by model.panel_program
    return PanelFit(model, program, data, draws, diagnostics)


@dataclass(frozen=True)
class PanelEvaluation:
    r"""Per-draw quantities of a panel fit (``S`` draws, ``N_obs`` observed origins, ``A`` assets).

    Attributes
    ----------
    log_filtered, log_smoothed : Tensor ``(S, N_obs, K)``
    viterbi : LongTensor ``(S, N_obs)``
    transition : Tensor ``(S, K, K)``
        Relabelled (baseline) transition matrices.
    log_regime_scale : Tensor ``(S, K)``
        The market's volatility levels :math:`\lambda_k`.
    log_asset_scale : Tensor ``(S, K, A)``
        Each asset's levels :math:`\rho_i \lambda_k` (the market's without
        ``asset_levels``).
    regime_expert_weights : Tensor ``(S, K, M)``
        Gate weights of each regime averaged over observed origins.
    regime_volatility, regime_mean : Tensor ``(S, K)``
        Predictive sd and mean of each regime in data units, averaged over the scored
        assets of each day and over the days the regime occupies.
    regime_duration : Tensor ``(S, K)``
    log_density : Tensor ``(S, N_obs, A)``
        :math:`\log p(y_{i,n} \mid \mathcal F_n)` in data units; 0 where not scored.
    tail_log_weights : Tensor ``(S, n_t, K, M)``
        Predictive mixture weights :math:`P(z_n = k \mid \mathcal F_n)\, g_{n,k,m}` at
        the last ``n_t`` origins (:data:`~bayes_moe.inference.posterior.TAIL_ORIGINS`).
    tail_experts : list of list of Distribution
        ``[i][m]``: expert ``m``'s predictive for asset ``i`` at those origins, batch
        ``(S, n_t)``.
    tail_start : int
        Index of the first tail origin.
    """

    log_filtered: torch.Tensor
    log_smoothed: torch.Tensor
    viterbi: torch.Tensor
    transition: torch.Tensor
    log_regime_scale: torch.Tensor
    log_asset_scale: torch.Tensor
    regime_expert_weights: torch.Tensor
    regime_volatility: torch.Tensor
    regime_mean: torch.Tensor
    regime_duration: torch.Tensor
    log_density: torch.Tensor
    tail_log_weights: torch.Tensor
    tail_experts: list
    tail_start: int


def _evaluate_chunk(program: PanelProgram, draws: dict, data: PanelData) -> dict:
    """Everything of :class:`PanelEvaluation` for one chunk of draws."""
    inputs = data.inputs
    n_obs, h = data.n_observed, inputs.horizon
    with torch.no_grad(), pyro.poutine.condition(data=draws):
        comps = program.components(inputs)
    S = next(iter(draws.values())).shape[0]
    gate = comps.gate
    K = gate.log_scale.shape[-1]
    N = inputs.n_origins
    log_w = gate.log_weights.expand(S, *gate.log_weights.shape[-3:])
    log_scale = gate.log_scale.expand(S, K)
    asset_log_scale = comps.asset_log_scale.expand(S, K, inputs.n_assets)
    log_init = gate.log_init.expand(S, K)
    log_trans = gate.log_trans.expand(S, K, K)
    step_trans = gate.hmm_trans.expand(S, N, K, K) if gate.time_varying else log_trans[:, None]
    scored = torch.isfinite(data.response[:n_obs])  # (N_obs, A)
    response = torch.nan_to_num(data.response, nan=0.0)
    pre = data.preprocessor

    log_emit = torch.zeros(S, n_obs, K, dtype=log_w.dtype)
    log_p_assets, var_sum, mean_sum = [], torch.zeros_like(log_emit), torch.zeros_like(log_emit)
    for i in range(inputs.n_assets):
        experts = [per_asset[i] for per_asset in comps.experts]
        moments = [mean_and_variance(d) for d in experts]
        means = torch.stack([m[..., 0] for m, _ in moments], dim=-1)
        variances = torch.stack([v[..., 0] for _, v in moments], dim=-1)
        levels = asset_log_scale[..., i]  # (S, K)
        log_p = torch.stack(
            [regime_log_prob(d, response[:, i : i + 1], levels) for d in experts], dim=-1
        )[:, :n_obs]  # (S, N_obs, K, M)
        mu, var, emit = regime_mixture(
            log_w[:, :n_obs], log_p, means[:, :n_obs], variances[:, :n_obs], levels, n_obs
        )
        on = scored[:, i, None]
        log_emit = log_emit + torch.where(on, emit, torch.zeros_like(emit))
        var_sum = var_sum + torch.where(on, var * pre.scale[i] ** 2, 0.0)  # (S, N_obs, K)
        mean_sum = mean_sum + torch.where(on, h * pre.loc[i] + pre.scale[i] * mu, 0.0)
        log_p_assets.append(log_p)
    count = scored.sum(-1).clamp_min(1)[None, :, None]  # (1, N_obs, 1)
    pooled_var, pooled_mean = var_sum / count, mean_sum / count

    order = (
        log_scale.argsort(dim=-1)
        if program.gate.volatility_levels
        else pooled_var.mean(dim=1).argsort(dim=-1)
    )
    log_w = torch.take_along_dim(log_w, order[:, None, :, None], dim=2)
    log_p_assets = [torch.take_along_dim(p, order[:, None, :, None], dim=2) for p in log_p_assets]
    log_init = torch.take_along_dim(log_init, order, dim=1)
    log_trans = relabel_matrices(log_trans, order)
    step_trans = relabel_matrices(step_trans, order)
    log_scale = torch.take_along_dim(log_scale, order, dim=1)
    asset_log_scale = torch.take_along_dim(asset_log_scale, order[:, :, None], dim=1)
    log_emit = torch.take_along_dim(log_emit, order[:, None, :], dim=2)
    pooled_var = torch.take_along_dim(pooled_var, order[:, None, :], dim=2)
    pooled_mean = torch.take_along_dim(pooled_mean, order[:, None, :], dim=2)

    varying = gate.time_varying
    hmm_trans = step_trans[:, :n_obs].contiguous() if varying else log_trans
    smoothed = hmm_smoother(log_init, hmm_trans, log_emit, time_varying=varying)
    path, _ = hmm_viterbi(log_init, hmm_trans, log_emit, time_varying=varying)
    occupancy = smoothed.log_smoothed.exp()
    log_causal = causal_regime(
        log_init, smoothed.log_filtered, step_trans, h, smoothed.log_predicted
    )  # (S, N, K)
    log_mix = log_causal[..., None] + log_w  # (S, N, K, M)
    log_density = torch.stack(
        [
            torch.logsumexp((log_mix[:, :n_obs] + p).flatten(-2), dim=-1) - np.log(pre.scale[i])
            for i, p in enumerate(log_p_assets)
        ],
        dim=-1,
    ).masked_fill(~scored, 0.0)  # (S, N_obs, A)
    tail = (slice(None), slice(max(0, N - TAIL_ORIGINS), N))
    return {
        "log_filtered": smoothed.log_filtered,
        "log_smoothed": smoothed.log_smoothed,
        "viterbi": path,
        "transition": log_trans.exp(),
        "log_regime_scale": log_scale,
        "log_asset_scale": asset_log_scale,
        "regime_expert_weights": log_w[:, :n_obs].exp().mean(dim=1),
        "regime_volatility": occupancy_average(occupancy, pooled_var).sqrt(),
        "regime_mean": occupancy_average(occupancy, pooled_mean),
        "regime_duration": occupancy_average(occupancy, expected_stay(hmm_trans))
        if gate.time_varying
        else expected_stay(log_trans),
        "log_density": log_density,
        "tail_log_weights": log_mix[tail],
        "tail_experts": [
            [index_batch(per_asset[i], tail) for per_asset in comps.experts]
            for i in range(inputs.n_assets)
        ],
    }


def evaluate_panel(
    program: PanelProgram, draws: dict, data: PanelData, *, progress: bool = False
) -> PanelEvaluation:
    """Evaluate every draw, :data:`PANEL_DRAW_CHUNK` at a time (:class:`PanelEvaluation`)."""
    S = next(iter(draws.values())).shape[0]
    parts = []
    for start in tqdm(
        range(0, S, PANEL_DRAW_CHUNK), desc="panel posterior", disable=not progress, leave=False
    ):
        chunk = {name: value[start : start + PANEL_DRAW_CHUNK] for name, value in draws.items()}
        parts.append(_evaluate_chunk(program, chunk, data))
    joined = {
        name: torch.cat([p[name] for p in parts]) for name in parts[0] if name != "tail_experts"
    }
    n_assets, n_experts = len(parts[0]["tail_experts"]), len(program.experts)
    experts = [
        [cat_batch([p["tail_experts"][i][m] for p in parts], dim=0) for m in range(n_experts)]
        for i in range(n_assets)
    ]
    tail_start = max(0, data.inputs.n_origins - TAIL_ORIGINS)
    return PanelEvaluation(**joined, tail_experts=experts, tail_start=tail_start)


class PanelForecast:
    """Every asset's forecast distribution from the last close.

    Indexable by asset: ``forecast["AAPL"]`` is a
    :class:`~bayes_moe.inference.predictive.Forecast`; :meth:`to_frame` has one row per asset.

    Attributes
    ----------
    forecasts : dict of str to Forecast
        The assets whose last window is observed (a delisted asset has no forecast).
    regime_probs : DataFrame
        P(z = k) of the forecast day, the market regime shared by every asset.
    """

    def __init__(self, forecasts: dict[str, Forecast], regime_probs: pd.DataFrame):
        self.forecasts = forecasts
        self.regime_probs = regime_probs

    def __getitem__(self, asset: str) -> Forecast:
        return self.forecasts[asset]

    def __iter__(self):
        return iter(self.forecasts)

    def __len__(self) -> int:
        return len(self.forecasts)

    def to_frame(self, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> pd.DataFrame:
        """One row per asset: origin date, horizon, mean, std and quantiles."""
        frames = [f.to_frame(qs) for f in self.forecasts.values()]
        frame = pd.concat(frames)
        frame.index.name = "asset"
        return frame

    def __repr__(self) -> str:
        horizon = next(iter(self.forecasts.values())).horizon if self.forecasts else None
        return f"PanelForecast({len(self)} assets, horizon={horizon})"


class PanelFit:
    """The result of a panel fit: draws, diagnostics and what they imply.

    Attributes
    ----------
    model : BayesianMoE
    program : PanelProgram
    data : PanelData
    draws : dict of str to Tensor ``(S, ...)``
    diagnostics : SVIDiagnostics
    """

    def __init__(
        self,
        model: BayesianMoE,
        program: PanelProgram,
        data: PanelData,
        draws: dict[str, torch.Tensor],
        diagnostics: SVIDiagnostics,
    ):
        self.model = model
        self.program = program
        self.data = data
        self.draws = draws
        self.diagnostics = diagnostics

    @property
    def n_draws(self) -> int:
        """``S``."""
        return next(iter(self.draws.values())).shape[0]

    @property
    def horizon(self) -> int:
        """``h``."""
        return self.data.inputs.horizon

    @property
    def assets(self) -> tuple[str, ...]:
        """Asset names."""
        return self.data.assets

    @cached_property
    def evaluation(self) -> PanelEvaluation:
        """Every draw evaluated once (:func:`evaluate_panel`)."""
        return evaluate_panel(self.program, self.draws, self.data)

    def save(self, path) -> None:
        """Write a checkpoint: safetensors + JSON (:mod:`~bayes_moe.inference.panel_checkpoint`)."""
        from bayes_moe.inference.panel_checkpoint import save_panel_fit

        save_panel_fit(self, path)

    @classmethod
    def load(cls, path) -> PanelFit:
        """Read a checkpoint written by :meth:`save` (also ``bm.load_panel_fit``)."""
        from bayes_moe.inference.panel_checkpoint import load_panel_fit

        return load_panel_fit(path)

    def apply(self, frame: pd.DataFrame) -> PanelFit:
        """The fitted draws on another panel of the same assets (e.g. with newer days).

        The panel is standardized with the fitted constants; nothing is refitted, so
        :meth:`predictive` gives out-of-sample forecasts for the days after the fit's.
        """
        data = prepare_panel(
            panel_frame(frame),
            window=self.data.inputs.window,
            horizon=self.horizon,
            preprocessor=self.data.preprocessor,
        )
        return PanelFit(self.model, self.program, data, self.draws, self.diagnostics)

    def predictive(self, asset: str, start=None, end=None) -> PredictiveMixture:
        """Asset ``asset``'s posterior predictive at the origins dated ``start..end``.

        Origins among the last :data:`~bayes_moe.inference.posterior.TAIL_ORIGINS`;
        each uses information up to its close (causal regime probabilities).
        """
        if asset not in self.assets:
            raise KeyError(f"unknown asset {asset!r}; the panel has {list(self.assets)}")
        ev = self.evaluation
        dates = self.data.origin_dates[ev.tail_start :]
        mask = np.ones(len(dates), dtype=bool)
        if start is not None:
            mask &= dates >= pd.Timestamp(start)
        if end is not None:
            mask &= dates <= pd.Timestamp(end)
        if not mask.any():
            raise ValueError(
                f"no origins between {start} and {end} among the last {len(dates)} "
                f"({dates[0].date()} to {dates[-1].date()})"
            )
        idx = torch.as_tensor(np.flatnonzero(mask))
        i, pre, h = self.assets.index(asset), self.data.preprocessor, self.horizon
        pick = (slice(None), idx)
        return PredictiveMixture(
            ev.tail_log_weights[pick],
            ev.log_asset_scale[..., i],
            [index_batch(d, pick) for d in ev.tail_experts[i]],
            loc=np.array([h * pre.loc[i]]),
            scale=np.array([pre.scale[i]]),
            dates=dates[mask],
            targets=(asset,),
        )

    def forecast(self, num_samples: int = 2000, *, seed: int | None = 0) -> PanelForecast:
        """Each asset's forecast of its ``h``-day return from the last close.

        Assets whose last window is not observed (delisted) have none.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        last = self.evaluation.tail_log_weights[:, -1:]  # (S, 1, K, M)
        listed = self.data.inputs.window_observed(self.data.inputs.window)[-1]  # (A,)
        regime = last.exp().sum(-1)[:, 0].numpy()  # (S, K)
        regime_probs = pd.DataFrame(
            {"mean": regime.mean(0), "sd": regime.std(0)},
            index=pd.Index(range(regime.shape[1]), name="regime"),
        )
        weights = pd.Series(
            last.exp().sum(-2)[:, 0].mean(0).numpy(),
            index=pd.Index(self.program.labels, name="expert"),
            name="weight",
        )
        last_date = self.data.origin_dates[-1]
        forecasts = {
            asset: Forecast(
                self.predictive(asset, start=last_date),
                num_samples=num_samples,
                seed=seed,
                horizon=self.horizon,
                regime_probs=regime_probs,
                expert_weights=weights,
            )
            for i, asset in enumerate(self.assets)
            if bool(listed[i])
        }
        return PanelForecast(forecasts, regime_probs)

    def regimes(self, keep_draws: int | None = DEFAULT_KEEP_DRAWS) -> RegimePosterior:
        """The posterior of the one market regime shared by every asset."""
        ev = self.evaluation
        kept = thinned_draws(self.n_draws, keep_draws)
        filtered, smoothed = ev.log_filtered.exp(), ev.log_smoothed.exp()
        K = filtered.shape[-1]
        return RegimePosterior(
            dates=self.data.response_dates,
            share_draws=nn_one_hot(filtered.argmax(-1), K).mean(1).numpy(),
            last_filtered_draws=filtered[:, -1].numpy(),
            filtered_mean=filtered.mean(0).numpy(),
            filtered_std=filtered.std(0, unbiased=False).numpy(),
            smoothed_mean=smoothed.mean(0).numpy(),
            smoothed_std=smoothed.std(0, unbiased=False).numpy(),
            viterbi_share=nn_one_hot(ev.viterbi, K).mean(0).numpy(),
            draw_index=kept.numpy(),
            filtered_draws=filtered[kept].numpy(),
            smoothed_draws=smoothed[kept].numpy(),
            viterbi_draws=ev.viterbi[kept].numpy(),
            transition_draws=ev.transition.numpy(),
            expert_weight_draws=ev.regime_expert_weights.numpy(),
            volatility_draws=ev.regime_volatility.numpy(),
            experts=tuple(self.program.labels),
            level_draws=ev.log_regime_scale.exp().numpy(),
            mean_draws=ev.regime_mean.numpy(),
            duration_draws=ev.regime_duration.numpy(),
        )

    def pointwise_log_likelihood(self) -> pd.DataFrame:
        """Posterior-mean log predictive density of each scored asset-day (NaN elsewhere)."""
        ev = self.evaluation
        density = torch.logsumexp(ev.log_density, dim=0) - np.log(self.n_draws)
        scored = self.data.scored[: self.data.n_observed]
        values = density.masked_fill(~scored, float("nan")).numpy()
        return pd.DataFrame(values, index=self.data.response_dates, columns=list(self.assets))

    def embeddings(self) -> pd.DataFrame:
        """The cross-sectional expert's learned asset embeddings (asset x dimension)."""
        for expert in self.program.expert_modules:
            if isinstance(expert, CrossSectional):
                values = expert.embeddings().numpy()
                return pd.DataFrame(
                    values,
                    index=pd.Index(self.assets, name="asset"),
                    columns=[f"e{j}" for j in range(values.shape[1])],
                )
        raise ValueError("this mixture has no cross_sectional expert")

    def to_inference_data(self, keep_draws: int | None = DEFAULT_KEEP_DRAWS):
        """ArviZ groups with an ``asset`` dimension.

        ``posterior`` (every latent site, regime summaries), ``log_likelihood`` and
        ``observed_data`` (``date x asset``; unscored asset-days are NaN in
        ``observed_data`` and 0 in ``log_likelihood``, which ``az.loo`` then counts as
        certain), ``regime_posterior`` (kept draws) and ``regime_summary``.
        """
        ev = self.evaluation
        dates = self.data.response_dates
        assets = list(self.assets)
        posterior, dims = {}, {}
        for site, value in self.draws.items():
            array = ev.transition if site == "gate/transition" else value
            name = _variable_name(site)
            posterior[name] = array.detach().numpy()[None]
            site_dims = _site_dims(self, site, array.ndim - 1)
            if site_dims:
                dims[name] = site_dims
        for name, value in (
            ("regime_duration", ev.regime_duration),
            ("regime_volatility", ev.regime_volatility),
            ("regime_volatility_level", ev.log_regime_scale.exp()),
            ("regime_mean", ev.regime_mean),
        ):
            posterior[name] = value.numpy()[None]
            dims[name] = ["regime"]
        posterior["regime_expert_weight"] = ev.regime_expert_weights.numpy()[None]
        dims["regime_expert_weight"] = ["regime", "expert"]
        if self.model.asset_levels:  # each asset's own levels exp(rho_i lambda_k)
            posterior["asset_volatility_level"] = ev.log_asset_scale.exp().numpy()[None]
            dims["asset_volatility_level"] = ["regime", "asset"]
        y = np.stack(
            [
                self.data.unstandardize(self.data.observed_response[:, i].numpy(), i)
                for i in range(len(assets))
            ],
            axis=1,
        )
        dims["y"] = ["date", "asset"]
        K = ev.transition.shape[-1]
        coords = {
            "regime": np.arange(K),
            "regime_from": np.arange(K),
            "regime_to": np.arange(K),
            "regime_step": np.arange(1, K),
            "expert": list(self.program.labels),
            "asset": assets,
            "gate_feature": list(self.model.gate.feature_names),
            "transition_feature": list(self.model.gate.transition_features),
            "date": dates.values,
        }
        attrs = {
            "inference_library": "pyro",
            "inference_method": f"SVI ({self.diagnostics.guide} guide)",
            "model": json.dumps(self.model.config()),
            "horizon": self.horizon,
            "panel_assets": json.dumps(assets),
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "arviz_version": ARVIZ_VERSION,
        }
        regimes = self.regimes(keep_draws).to_dataset()
        drawn = ["filtered", "smoothed", "viterbi"]
        return from_groups(
            {
                "posterior": _dataset(posterior, dims, coords, attrs, sample_dims=True),
                "log_likelihood": _dataset(
                    {"y": ev.log_density.numpy()[None]}, dims, coords, attrs, sample_dims=True
                ),
                "observed_data": _dataset({"y": y}, dims, coords, attrs, sample_dims=False),
                "regime_posterior": regimes[drawn]
                .expand_dims(chain=[0])
                .transpose("chain", "draw", ...),
                "regime_summary": regimes.drop_vars(drawn + ["draw"]),
            }
        )

    def __repr__(self) -> str:
        return (
            f"PanelFit({len(self.assets)} assets, {self.data.n_observed} days, "
            f"experts={self.program.labels}, K={self.model.n_regimes}, draws={self.n_draws})"
        )
