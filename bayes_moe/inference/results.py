"""The results object of a fit: posterior draws plus everything derived from them.

:class:`MoEFit` holds the model specification, the prepared data and ``S`` draws of
every latent site from the approximate posterior. Forecasts, regime posteriors and
the ArviZ conversion are computed from the draws (lazily, once); the specification
object is never modified.

Memory: the draws are evaluated in chunks whose working memory is bounded by
``memory_budget_mib`` and reduced to a
:class:`~bayes_moe.inference.posterior.PosteriorSummary`: per-day summaries over all
draws, the pointwise log-likelihood of every draw, the per-day values of ``keep_draws``
thinned draws and the predictive of every draw at the last
:data:`~bayes_moe.inference.posterior.TAIL_ORIGINS` origins. Nothing else of size
``S`` times ``N`` is held unless asked for (:attr:`MoEFit.posterior`, or
:meth:`MoEFit.predictive` over origins before the tail).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from bayes_moe.data.continuation import PriceHistory, append_rows
from bayes_moe.data.windows import ModelData, prepare
from bayes_moe.inference.posterior import (
    DEFAULT_KEEP_DRAWS,
    DEFAULT_MEMORY_BUDGET_MIB,
    EnergyDraws,
    PosteriorEvaluation,
    PosteriorSummary,
    evaluate_energy,
    evaluate_origins,
    evaluate_posterior,
    summarize_posterior,
)
from bayes_moe.inference.predictive import Forecast, PredictiveMixture
from bayes_moe.inference.regimes import RegimePosterior
from bayes_moe.kernels.hmm import hmm_propagate
from bayes_moe.models.distributions import index_batch
from bayes_moe.models.moe import BayesianMoE, MoEProgram


@dataclass(frozen=True)
class SVIDiagnostics:
    """What happened during fitting.

    Attributes
    ----------
    losses : ndarray, shape ``(steps,)``
        Negative ELBO per step (nats, standardized units).
    n_observations : int
    converged : bool
        True if stopped by the convergence check.
    elapsed_s : float
        Wall time of the optimization loop.
    guide : str
    seed : int
    strategy : str
        Training strategy (:data:`~bayes_moe.inference.svi_options.STRATEGIES`).
    pretrain_s : float
        Wall time of stage one (two-stage strategy with window experts), else 0.
    resumed_from_step : int
        Steps restored from an SVI checkpoint (``resume=True``), else 0; ``elapsed_s``
        times the steps run after them.
    device, dtype : str
        Where and in what precision the optimisation ran (``"cpu"``, ``"float64"``).
    """

    losses: np.ndarray = field(repr=False)
    n_observations: int
    converged: bool
    elapsed_s: float
    guide: str
    seed: int
    strategy: str = "joint"
    pretrain_s: float = 0.0
    resumed_from_step: int = 0
    device: str = "cpu"
    dtype: str = "float64"

    @property
    def num_steps(self) -> int:
        """Steps actually run."""
        return len(self.losses)

    @property
    def step_time_s(self) -> float:
        """Mean wall time of one SVI step (of those run in this process)."""
        return self.elapsed_s / max(1, self.num_steps - self.resumed_from_step)

    @property
    def final_loss(self) -> float:
        """Mean negative ELBO over the last 50 steps."""
        return float(np.mean(self.losses[-50:]))

    @classmethod
    def from_dict(cls, summary: Mapping, losses: np.ndarray) -> SVIDiagnostics:
        """Inverse of :meth:`to_dict` with the loss trace (fields added later defaulted)."""
        return cls(
            losses=losses,
            n_observations=summary["n_observations"],
            converged=summary["converged"],
            elapsed_s=summary["elapsed_s"],
            guide=summary["guide"],
            seed=summary["seed"],
            strategy=summary.get("strategy", "joint"),
            pretrain_s=summary.get("pretrain_s", 0.0),
            resumed_from_step=summary.get("resumed_from_step", 0),
            device=summary.get("device", "cpu"),
            dtype=summary.get("dtype", "float64"),
        )

    def to_dict(self) -> dict:
        """JSON-serializable summary (without the loss trace)."""
        return {
            "num_steps": self.num_steps,
            "n_observations": self.n_observations,
            "converged": self.converged,
            "elapsed_s": self.elapsed_s,
            "step_time_s": self.step_time_s,
            "final_loss": self.final_loss,
            "guide": self.guide,
            "seed": self.seed,
            "strategy": self.strategy,
            "pretrain_s": self.pretrain_s,
            "resumed_from_step": self.resumed_from_step,
            "device": self.device,
            "dtype": self.dtype,
        }


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
    price_history : PriceHistory, optional
        The raw prices behind the generated columns of ``data.frame`` (see
        :mod:`bayes_moe.data.continuation`), which :meth:`update` continues the features
        from; by default taken from ``data.frame`` when
        :func:`~bayes_moe.data.read_frame` built it, else None.
    memory_budget_mib : float
        Bound on the working memory of evaluating the draws, MiB
        (:func:`~bayes_moe.inference.posterior.draws_per_chunk`); kept by :meth:`update`.
    """

    def __init__(
        self,
        *,
        model: BayesianMoE,
        program: MoEProgram,
        data: ModelData,
        draws: dict[str, torch.Tensor],
        diagnostics: SVIDiagnostics,
        price_history: PriceHistory | None = None,
        memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
    ):
        self.model = model
        self.program = program.eval()
        self.data = data
        self.draws = draws
        self.diagnostics = diagnostics
        if price_history is None:
            price_history = PriceHistory.from_frame(data.frame)
        self.price_history = price_history
        self.memory_budget_mib = memory_budget_mib
        self._summaries: dict[int | None, PosteriorSummary] = {}

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
        """Every per-draw quantity over all origins (computed once).

        Holds ``S`` times ``N`` values of every quantity (about ``8 S N (K M + 3 K + 4)``
        bytes): for inspecting small fits. Forecasts, regimes and the ArviZ export use
        :meth:`posterior_summary` instead.
        """
        return evaluate_posterior(
            self.program, self.draws, self.data, memory_budget_mib=self.memory_budget_mib
        )

    def posterior_summary(self, keep_draws: int | None = DEFAULT_KEEP_DRAWS) -> PosteriorSummary:
        """Per-day summaries over all draws plus ``keep_draws`` thinned draws (computed once).

        See :func:`~bayes_moe.inference.posterior.summarize_posterior`; ``keep_draws=None``
        keeps every draw's per-day values.
        """
        if keep_draws not in self._summaries:
            self._summaries[keep_draws] = summarize_posterior(
                self.program,
                self.draws,
                self.data,
                keep_draws=keep_draws,
                memory_budget_mib=self.memory_budget_mib,
            )
        return self._summaries[keep_draws]

    def _any_summary(self) -> PosteriorSummary:
        """A summary already computed, whatever its kept draws (else the default one)."""
        return next(iter(self._summaries.values()), None) or self.posterior_summary()

    def update(self, frame: pd.DataFrame, *, allow_outliers: bool = False) -> MoEFit:
        """The same posterior draws conditioned on newer data: online filtering.

        The rows of ``frame`` dated after the last fitted day are appended to the fitted
        data; ``frame`` may hold only those (the next days of a file) or also earlier
        rows (the whole history and the new days), which must then repeat the fitted
        data. Nothing is refitted: the draws, standardization constants and network
        weights stay; features, windows and the regime filter move forward over the new
        rows. Use it to forecast from a newer close or to filter between refits.

        When ``frame`` was read by :func:`~bayes_moe.data.read_frame` from prices, its
        returns and range features are computed again on the fitted prices followed by
        the new ones (the first new return uses the last fitted close; the rolling
        features use the fitted history as warm-up), so no new row is lost to warm-up
        and the result equals reading the whole file at once. Otherwise the model
        columns of ``frame`` are taken as given. See :mod:`bayes_moe.data.continuation`
        for the rules.

        The combined frame is checked like a fit's (:func:`~bayes_moe.data.windows.prepare`):
        a target value far from the rest is refused unless ``allow_outliers=True``
        (pass it again when the fit itself was made with it).

        Parameters
        ----------
        frame : pandas.DataFrame
            Date-indexed, with the fitted model's columns (or, from ``read_frame``, the
            price columns they are computed from).
        allow_outliers : bool, default False

        Returns
        -------
        MoEFit
            Conditioned on the fitted rows followed by the new ones.

        Raises
        ------
        DataError
            Before anything is computed: rows that overlap the fitted data but differ
            from it (naming the first date, the column and both values), a gap between
            the last fitted day and the first new row (naming both dates), prices whose
            features need fitted prices this fit does not keep (an older checkpoint), a
            missing column, or new rows the model cannot read.
        """
        combined, history = append_rows(
            self.data.frame,
            frame,
            columns=self.data.preprocessor.columns,
            prices=self.price_history,
        )
        return self._conditioned_on(combined, history, allow_outliers=allow_outliers)

    def apply(self, frame: pd.DataFrame, *, allow_outliers: bool = False) -> MoEFit:
        """The same posterior draws conditioned on ``frame`` as it is, not on the fitted data.

        No check against the fitted rows: for what-if analyses (a perturbed or truncated
        history) and for other series; :meth:`update` moves forward in time. Named after
        ``apply`` of the statsmodels state-space results.
        """
        history = PriceHistory.from_frame(frame)
        return self._conditioned_on(frame, history, allow_outliers=allow_outliers)

    def _conditioned_on(
        self, frame: pd.DataFrame, history: PriceHistory | None, *, allow_outliers: bool
    ) -> MoEFit:
        """A fit with these draws on ``frame`` (validated by :func:`prepare`)."""
        data = prepare(
            frame,
            targets=list(self.targets),
            window=self.model.window,
            horizon=self.horizon,
            preprocessor=self.data.preprocessor,
            allow_outliers=allow_outliers,
        )
        return MoEFit(
            model=self.model,
            program=self.program,
            data=data,
            draws=self.draws,
            diagnostics=self.diagnostics,
            price_history=history,
            memory_budget_mib=self.memory_budget_mib,
        )

    # ------------------------------------------------------------------ predictive
    def predictive(self, start=None, end=None) -> PredictiveMixture:
        """Posterior predictive at the origins dated ``start..end`` (inclusive).

        Each origin's predictive uses information up to its close (regimes
        filtered, not smoothed) and the fitted draws. Once a posterior summary exists
        (:meth:`posterior_summary`, made by :meth:`regimes` and the ArviZ export), origins
        among its last :data:`~bayes_moe.inference.posterior.TAIL_ORIGINS` are read from
        it; otherwise the draws are evaluated again in chunks
        (:func:`~bayes_moe.inference.posterior.evaluate_origins`). The mixture holds
        ``S n K M`` weights for ``n`` origins.
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
        summary = next(iter(self._summaries.values()), None)
        if summary is not None and int(idx.min()) >= summary.tail_start:
            pick = (slice(None), idx - summary.tail_start)
            log_weights = summary.tail_log_mix_weights[pick]
            log_scale = summary.log_regime_scale
            experts = [index_batch(d, pick) for d in summary.tail_experts]
        else:
            log_weights, log_scale, experts = evaluate_origins(
                self.program,
                self.draws,
                self.data,
                idx,
                memory_budget_mib=self.memory_budget_mib,
            )
        h = self.horizon
        pre = self.data.preprocessor
        return PredictiveMixture(
            log_weights,
            log_scale,
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
        regime = mixture.regime_weights[:, 0].numpy()  # (S, K): P(z | F) at the last close
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
    def regimes(self, keep_draws: int | None = DEFAULT_KEEP_DRAWS) -> RegimePosterior:
        """Filtered, smoothed and Viterbi regime posteriors.

        Per-day probabilities are summarized over every draw; ``keep_draws`` thinned
        draws keep their own per-day values (None: every draw); per-regime quantities
        keep every draw.
        """
        post = self.posterior_summary(keep_draws)
        scale = float(self.data.preprocessor.target_scale[0])
        loc = self.horizon * float(self.data.preprocessor.target_loc[0])
        return RegimePosterior(
            dates=self.data.response_dates,
            share_draws=post.share_of_days.numpy(),
            last_filtered_draws=post.last_log_filtered.exp().numpy(),
            filtered_mean=post.filtered_mean.numpy(),
            filtered_std=post.filtered_sd.numpy(),
            smoothed_mean=post.smoothed_mean.numpy(),
            smoothed_std=post.smoothed_sd.numpy(),
            viterbi_share=post.viterbi_share.numpy(),
            draw_index=post.kept_draws.numpy(),
            filtered_draws=post.filtered_draws.numpy(),
            smoothed_draws=post.smoothed_draws.numpy(),
            viterbi_draws=post.viterbi_draws.numpy(),
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
        post = self._any_summary()
        log_p = hmm_propagate(post.last_log_filtered, post.log_trans_last, steps)
        p = log_p.exp().numpy()
        return pd.DataFrame(
            {"mean": p.mean(0), "sd": p.std(0)}, index=pd.Index(range(p.shape[1]), name="regime")
        )

    # ---------------------------------------------------------------------- energy
    @cached_property
    def energy_draws(self) -> EnergyDraws:
        """The energy of every origin for every draw (computed once; see :meth:`energy`)."""
        return evaluate_energy(
            self.program, self.draws, self.data, memory_budget_mib=self.memory_budget_mib
        )

    def energy(self) -> pd.DataFrame:
        r"""The energy :math:`E_t` of every forecast origin: its two parts and their spread.

        :math:`E_t` is the entropy of the mixture's predictive of the first target made
        at the close of ``t`` plus the entropy of the regime probabilities at ``t``,
        both from the information at ``t`` only (:mod:`bayes_moe.models.energy`); the
        last ``h`` rows are the origins whose response is not yet known (the last
        is today's forecast). Entropies are in nats of the standardized response: add
        ``log(scale)``, the ``predictive_entropy_shift`` attribute of the frame, for
        the entropy in data units. ``heavy_weight`` is the weight the (tilted)
        mixture gives the experts of its highest capacity class; ``experts_evaluated``
        how many experts were evaluated at the origin (fewer than all with sparse
        inference, ``EnergyGate(sparse=...)``).

        Returns
        -------
        DataFrame
            Indexed by origin date; columns ``energy``, ``predictive_entropy``,
            ``regime_entropy`` and ``heavy_weight``, each with its posterior mean
            and, in ``<name>_sd``, its standard deviation over the draws; and
            ``experts_evaluated``.
        """
        draws = self.energy_draws
        columns = {}
        for name, value in (
            ("energy", draws.total),
            ("predictive_entropy", draws.predictive),
            ("regime_entropy", draws.regime),
            ("heavy_weight", draws.heavy_weight),
        ):
            columns[name] = value.mean(0).numpy()
            columns[f"{name}_sd"] = value.std(0, correction=0).numpy()
        columns["experts_evaluated"] = draws.evaluated.sum(-1).numpy()
        table = pd.DataFrame(columns, index=self.data.origin_dates.rename("date"))
        table.attrs["predictive_entropy_shift"] = float(
            np.log(self.data.preprocessor.target_scale[0])
        )
        return table

    # ----------------------------------------------------------------- diagnostics
    def pointwise_log_likelihood(self) -> pd.DataFrame:
        """One-step log predictive density per day and draw (data units): date x draw."""
        log_dens = self._any_summary().log_predictive_density.numpy()
        log_dens = log_dens - np.log(self.data.preprocessor.target_scale).sum()
        return pd.DataFrame(log_dens.T, index=self.data.response_dates.rename("date"))

    def to_inference_data(
        self,
        *,
        keep_draws: int | None = DEFAULT_KEEP_DRAWS,
        log_likelihood: str = "all",
        energy: bool | None = None,
    ):
        """The fit for ArviZ: InferenceData (ArviZ 0.x) or DataTree (1.x).

        See :func:`bayes_moe.inference.arviz.to_inference_data`.
        """
        from bayes_moe.inference.arviz import to_inference_data

        return to_inference_data(
            self, keep_draws=keep_draws, log_likelihood=log_likelihood, energy=energy
        )

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
