"""The results object of a fit: posterior draws plus everything derived from them.

:class:`MoEFit` holds the model specification, the prepared data and ``S`` draws of
every latent site from the approximate posterior. Forecasts, regime posteriors and
the ArviZ conversion are computed from the draws (lazily, once); the specification
object is never modified.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import torch

from bayes_moe.data.windows import ModelData, prepare
from bayes_moe.inference.hmm import hmm_propagate
from bayes_moe.inference.posterior import PosteriorEvaluation, evaluate_posterior
from bayes_moe.inference.predictive import Forecast, PredictiveMixture
from bayes_moe.inference.regimes import RegimePosterior
from bayes_moe.inference.svi import SVIDiagnostics
from bayes_moe.models.distributions import index_batch
from bayes_moe.models.moe import BayesianMoE, MoEProgram


class MoEFit:
    """A fitted mixture: posterior draws, diagnostics and the data they condition on.

    Parameters
    ----------
    model : BayesianMoE
        The specification that was fitted.
    program : MoEProgram
        The fitted Pyro program (holds trained network weights, if any).
    data : ModelData
    draws : dict of str to Tensor
        ``S`` posterior draws per latent site, shape ``(S, ...)``.
    diagnostics : SVIDiagnostics
    """

    def __init__(
        self,
        *,
        model: BayesianMoE,
        program: MoEProgram,
        data: ModelData,
        draws: dict[str, torch.Tensor],
        diagnostics: SVIDiagnostics,
    ):
        self.model = model
        self.program = program.eval()
        self.data = data
        self.draws = draws
        self.diagnostics = diagnostics

    @property
    def n_draws(self) -> int:
        """``S``."""
        return next(iter(self.draws.values())).shape[0]

    @property
    def horizon(self) -> int:
        """Horizon ``h`` the model was fitted for."""
        return self.data.inputs.horizon

    @property
    def targets(self) -> tuple[str, ...]:
        """Target columns."""
        return self.data.inputs.targets

    @cached_property
    def posterior(self) -> PosteriorEvaluation:
        """Per-draw evaluation over all origins (computed once)."""
        return evaluate_posterior(self.program, self.draws, self.data)

    def update(self, frame: pd.DataFrame) -> MoEFit:
        """The same posterior draws conditioned on new data: online filtering.

        ``frame`` is either only the rows after the fitted data (they are appended) or
        a whole frame (used as it is), with the fitted model's columns. Nothing is
        refitted: the draws, standardization constants and network weights stay;
        features, windows and the regime filter move forward over the new rows. Use it
        to forecast from a newer close or to filter between refits.
        """
        if len(frame) and frame.index[0] > self.data.dates[-1]:
            frame = pd.concat([self.data.frame, frame.loc[:, list(self.data.frame.columns)]])
        data = prepare(
            frame,
            targets=list(self.targets),
            window=self.model.window,
            horizon=self.horizon,
            preprocessor=self.data.preprocessor,
        )
        return MoEFit(
            model=self.model,
            program=self.program,
            data=data,
            draws=self.draws,
            diagnostics=self.diagnostics,
        )

    # ------------------------------------------------------------------ predictive
    def predictive(self, start=None, end=None) -> PredictiveMixture:
        """Posterior predictive at the origins dated ``start..end`` (inclusive).

        Each origin's predictive uses information up to its close (regimes
        filtered, not smoothed) and the fitted draws.
        """
        dates = self.data.origin_dates
        mask = np.ones(len(dates), dtype=bool)
        if start is not None:
            mask &= dates >= pd.Timestamp(start)
        if end is not None:
            mask &= dates <= pd.Timestamp(end)
        idx = torch.as_tensor(np.flatnonzero(mask))
        if len(idx) == 0:
            raise ValueError(f"no forecast origins between {start} and {end}")
        return self._mixture(idx)

    def _mixture(self, idx: torch.Tensor) -> PredictiveMixture:
        post = self.posterior
        experts = [index_batch(d, (slice(None), idx)) for d in post.experts]
        h = self.horizon
        pre = self.data.preprocessor
        return PredictiveMixture(
            post.log_mix_weights[:, idx],
            post.log_regime_scale,
            experts,
            loc=h * pre.target_loc,
            scale=pre.target_scale,
            dates=self.data.origin_dates[idx.numpy()],
            targets=self.targets,
        )

    def forecast(
        self, horizon: int | None = None, num_samples: int = 2000, *, seed: int | None = 0
    ) -> Forecast:
        """Forecast distribution of the ``h``-day return from the last close.

        Parameters
        ----------
        horizon : int, optional
            Must equal the fitted horizon (fit with ``horizon=h`` for an ``h``-day
            forecast; the response of a fit is the ``h``-day sum).
        num_samples : int
            Samples behind ``.samples``, ``.quantiles`` and ``.interval``.
        seed : int or None
            Seed of the sampling (None: the global torch RNG).
        """
        if horizon is not None and horizon != self.horizon:
            raise ValueError(
                f"this model was fitted for horizon={self.horizon}; fit with horizon={horizon} "
                f"to forecast {horizon}-day returns"
            )
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        last = torch.tensor([self.data.inputs.n_origins - 1])
        mixture = self._mixture(last)
        post = self.posterior
        regime = post.log_causal_regime[:, -1].exp().numpy()  # (S, K)
        regime_probs = pd.DataFrame(
            {"mean": regime.mean(0), "sd": regime.std(0)},
            index=pd.Index(range(regime.shape[1]), name="regime"),
        )
        weights = pd.Series(
            mixture.expert_weights[:, 0].mean(0).numpy(),
            index=pd.Index(self.program.labels, name="expert"),
            name="weight",
        )
        return Forecast(
            mixture,
            num_samples=num_samples,
            seed=seed,
            horizon=self.horizon,
            regime_probs=regime_probs,
            expert_weights=weights,
        )

    # --------------------------------------------------------------------- regimes
    def regimes(self) -> RegimePosterior:
        """Filtered, smoothed and Viterbi regime posteriors for every draw."""
        post = self.posterior
        scale = float(self.data.preprocessor.target_scale[0])
        loc = self.horizon * float(self.data.preprocessor.target_loc[0])
        return RegimePosterior(
            dates=self.data.response_dates,
            filtered_draws=post.log_filtered.exp().numpy(),
            smoothed_draws=post.log_smoothed.exp().numpy(),
            viterbi_draws=post.viterbi.numpy(),
            transition_draws=post.transition.numpy(),
            expert_weight_draws=post.regime_expert_weights.numpy(),
            volatility_draws=post.regime_volatility.numpy() * scale,
            experts=tuple(self.program.labels),
            level_draws=post.log_regime_scale.exp().numpy(),
            mean_draws=loc + scale * post.regime_mean.numpy(),
            duration_draws=post.regime_duration.numpy(),
        )

    def regime_forecast(self, steps: int = 1) -> pd.DataFrame:
        """P(z = k) ``steps`` days after the last observed day: mean and sd over draws.

        With transition features, their values at the last close are held for the
        days ahead (their future values are not known).
        """
        post = self.posterior
        log_p = hmm_propagate(post.log_filtered[:, -1], post.log_trans_last, steps)
        p = log_p.exp().numpy()
        return pd.DataFrame(
            {"mean": p.mean(0), "sd": p.std(0)}, index=pd.Index(range(p.shape[1]), name="regime")
        )

    # ----------------------------------------------------------------- diagnostics
    def pointwise_log_likelihood(self) -> pd.DataFrame:
        """One-step log predictive density per day and draw (data units): date x draw."""
        log_dens = self.posterior.log_predictive_density.numpy()
        log_dens = log_dens - np.log(self.data.preprocessor.target_scale).sum()
        return pd.DataFrame(log_dens.T, index=self.data.response_dates.rename("date"))

    def to_inference_data(self):
        """ArviZ InferenceData (see :func:`bayes_moe.inference.arviz.to_inference_data`)."""
        from bayes_moe.inference.arviz import to_inference_data

        return to_inference_data(self)

    def save(self, path) -> None:
        """Write a checkpoint: safetensors + JSON (:mod:`~bayes_moe.inference.checkpoint`)."""
        from bayes_moe.inference.checkpoint import save_fit

        save_fit(self, path)

    @classmethod
    def load(cls, path) -> MoEFit:
        """Read a checkpoint written by :meth:`save`."""
        from bayes_moe.inference.checkpoint import load_fit

        return load_fit(path)

    def __repr__(self) -> str:
        d = self.diagnostics
        return (
            f"MoEFit(experts={self.program.labels}, regimes={self.model.n_regimes}, "
            f"window={self.model.window}, horizon={self.horizon}, days={self.data.n_observed}, "
            f"draws={self.n_draws}, steps={d.num_steps}, "
            f"loss/obs={d.final_loss / d.n_observations:.4f})"
        )
