r"""Posterior over market regimes, with its uncertainty across posterior draws.

Three different questions, kept apart on purpose:

- **filtered** :math:`P(z_t = k \mid y_{1:t})`: what a trader could have known at the
  close of day ``t``. Causal; use it for anything that trades or backtests.
- **smoothed** :math:`P(z_t = k \mid y_{1:T})`: the forward-backward posterior given
  the *whole* sample. It looks ahead; use it to describe history, never to trade.
- **Viterbi** :math:`\arg\max_{z_{1:T}} p(z_{1:T} \mid y_{1:T})`: the single most
  probable path, also using the whole sample.

Each is computed for every posterior draw of the global parameters; the tables
below report the posterior mean across draws and the ``*_sd`` tables its standard
deviation, so regime probabilities carry their own uncertainty. Regimes are
labelled 0..K-1 from the calmest (lowest predictive volatility) to the most
turbulent. Rows are indexed by the date of the return the regime generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr


@dataclass(frozen=True)
class RegimePosterior:
    r"""Regime posteriors for ``S`` draws over ``N`` days and ``K`` regimes.

    Per-day probabilities are summarized over all ``S`` draws (mean, sd, Viterbi
    share), and kept per draw only for ``k`` thinned draws (:attr:`draw_index`):
    memory and files grow with ``N`` times ``k``, not ``N`` times ``S``
    (:func:`~bayes_moe.inference.posterior.summarize_posterior`). Everything per
    regime (volatility, duration, expert weights...) is kept for every draw.

    Attributes
    ----------
    dates : DatetimeIndex (N,)
    transition_draws : ndarray ``(S, K, K)``
    expert_weight_draws : ndarray ``(S, K, M)``
        Gate weights of each regime averaged over days.
    volatility_draws : ndarray ``(S, K)``
        Predictive standard deviation of each regime averaged over the days it
        occupies (:class:`~bayes_moe.inference.posterior.PosteriorEvaluation`), data units.
    experts : tuple of str
    level_draws : ndarray ``(S, K)``
        Volatility level :math:`e^{\lambda_k}` of each regime (ones without levels).
    mean_draws : ndarray ``(S, K)``
        Predictive mean of each regime averaged like the volatility, data units.
    duration_draws : ndarray ``(S, K)``
        Expected stay in each regime, days
        (:class:`~bayes_moe.inference.posterior.PosteriorEvaluation`).
    share_draws : ndarray ``(S, K)``
        Per draw, the share of days each regime is the most probable (filtered).
    last_filtered_draws : ndarray ``(S, K)``
        Filtered probabilities of the last day, per draw.
    filtered_mean, filtered_std, smoothed_mean, smoothed_std : ndarray ``(N, K)``
        Mean and sd (``ddof=0``) over all draws of the filtered and smoothed
        probabilities (as tables: :attr:`filtered`, :attr:`filtered_sd`...).
    viterbi_share : ndarray ``(N, K)``
        Share of all draws whose Viterbi path is in regime ``k`` on the day.
    draw_index : ndarray ``(k,)`` int
        Indices (among the ``S`` draws) of the kept draws below.
    filtered_draws, smoothed_draws : ndarray ``(k, N, K)``
        Probabilities of the kept draws.
    viterbi_draws : ndarray ``(k, N)`` int
        Viterbi paths of the kept draws.
    """

    dates: pd.DatetimeIndex
    transition_draws: np.ndarray
    expert_weight_draws: np.ndarray
    volatility_draws: np.ndarray
    experts: tuple[str, ...]
    level_draws: np.ndarray
    mean_draws: np.ndarray
    duration_draws: np.ndarray
    share_draws: np.ndarray
    last_filtered_draws: np.ndarray
    filtered_mean: np.ndarray
    filtered_std: np.ndarray
    smoothed_mean: np.ndarray
    smoothed_std: np.ndarray
    viterbi_share: np.ndarray
    draw_index: np.ndarray
    filtered_draws: np.ndarray
    smoothed_draws: np.ndarray
    viterbi_draws: np.ndarray

    @property
    def n_regimes(self) -> int:
        """``K``."""
        return self.filtered_mean.shape[-1]

    @property
    def regime_index(self) -> pd.Index:
        """Regime labels 0..K-1 (0 = calmest)."""
        return pd.Index(range(self.n_regimes), name="regime")

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=self.dates.rename("date"), columns=self.regime_index)

    @property
    def filtered(self) -> pd.DataFrame:
        """Posterior mean of P(z_t = k | y_{1:t}) (causal): date x regime."""
        return self._frame(self.filtered_mean)

    @property
    def filtered_sd(self) -> pd.DataFrame:
        """Posterior sd across draws of the filtered probabilities: date x regime."""
        return self._frame(self.filtered_std)

    @property
    def smoothed(self) -> pd.DataFrame:
        """Posterior mean of P(z_t = k | y_{1:T}) (uses the whole sample): date x regime."""
        return self._frame(self.smoothed_mean)

    @property
    def smoothed_sd(self) -> pd.DataFrame:
        """Posterior sd across draws of the smoothed probabilities: date x regime."""
        return self._frame(self.smoothed_std)

    @property
    def viterbi(self) -> pd.DataFrame:
        """Share of posterior draws whose Viterbi path is in regime k on day t."""
        return self._frame(self.viterbi_share)

    @property
    def viterbi_path(self) -> pd.Series:
        """The most common regime across the draws' Viterbi paths, per day."""
        return self.viterbi.idxmax(axis=1).rename("regime")

    @property
    def transition(self) -> pd.DataFrame:
        r"""Posterior mean transition matrix (row: from, column: to).

        With transition features (an input-output gate) this is the baseline
        :math:`\Pi`, the transitions on a day when every input is at its training mean;
        the day's own :math:`\Pi_t` tilts its columns (:mod:`bayes_moe.models.gate`).
        """
        idx = self.regime_index
        return pd.DataFrame(
            self.transition_draws.mean(0), index=idx.rename("from"), columns=idx.rename("to")
        )

    @property
    def expected_duration(self) -> pd.DataFrame:
        r"""Expected stay in each regime, :math:`1 / (1 - \Pi_{kk})` days.

        With transition features, averaged over the days the regime occupies
        (:attr:`duration_draws`). Returns mean, sd and the 94% interval over draws.
        """
        return _summarize(self.duration_draws, self.regime_index)

    @property
    def volatility(self) -> pd.DataFrame:
        """Predictive sd of each regime over the days it occupies: mean, sd, 94% interval."""
        return _summarize(self.volatility_draws, self.regime_index)

    @property
    def most_probable(self) -> pd.Series:
        """The regime with the largest posterior mean filtered probability, per day."""
        return self.filtered.idxmax(axis=1).rename("regime")

    def summary(self, top_experts: int = 3) -> pd.DataFrame:
        r"""The regime report: one row per regime, posterior mean and 94% interval.

        Columns, each as ``name``, ``name_q3`` and ``name_q97`` (the 3% and 97%
        quantiles over posterior draws):

        - ``volatility``: predictive sd in the regime over the days it occupies
          (data units per horizon, e.g. % per day);
        - ``volatility_level``: :math:`e^{\lambda_k}`, the factor on every expert's scale;
        - ``mean_return``: predictive mean in the regime, same averaging;
        - ``expected_duration``: :math:`1 / (1 - \Pi_{kk})` days (:attr:`expected_duration`);
        - ``share_of_days``: share of days on which the regime has the largest filtered
          probability;
        - ``expert_1`` .. ``expert_n``: the regime's ``top_experts`` experts by
          posterior mean gate weight, with ``expert_i_weight`` (and its interval).
        """
        quantities = {
            "volatility": self.volatility_draws,
            "volatility_level": self.level_draws,
            "mean_return": self.mean_draws,
            "expected_duration": self.duration_draws,
            "share_of_days": self.share_draws,
        }
        columns = {}
        for name, draws in quantities.items():
            lo, hi = np.quantile(draws, [0.03, 0.97], axis=0)
            columns.update({name: draws.mean(0), f"{name}_q3": lo, f"{name}_q97": hi})
        table = pd.DataFrame(columns, index=self.regime_index)
        weights = self.expert_weight_draws  # (S, K, M)
        ranked = np.argsort(-weights.mean(0), axis=-1)[:, :top_experts]  # (K, n)
        lo, hi = np.quantile(weights, [0.03, 0.97], axis=0)
        rows = np.arange(self.n_regimes)
        for i in range(ranked.shape[1]):
            m = ranked[:, i]
            table[f"expert_{i + 1}"] = [self.experts[j] for j in m]
            table[f"expert_{i + 1}_weight"] = weights.mean(0)[rows, m]
            table[f"expert_{i + 1}_weight_q3"] = lo[rows, m]
            table[f"expert_{i + 1}_weight_q97"] = hi[rows, m]
        return table

    @property
    def expert_weights(self) -> pd.DataFrame:
        """Posterior mean gate weight of each expert within each regime: regime x expert."""
        return pd.DataFrame(
            self.expert_weight_draws.mean(0),
            index=self.regime_index,
            columns=pd.Index(self.experts, name="expert"),
        )

    def current(self) -> dict:
        """The regime on the last day (filtered): label, probability and its sd."""
        probs = self.last_filtered_draws
        k = int(probs.mean(0).argmax())
        return {
            "date": self.dates[-1],
            "regime": k,
            "probability": float(probs[:, k].mean()),
            "probability_sd": float(probs[:, k].std()),
        }

    def diagnostics(self) -> dict:
        """How distinct and persistent the regimes are, in numbers a user can check.

        Returns
        -------
        dict
            ``volatility`` (posterior mean per regime), ``volatility_ratio`` (most
            turbulent over calmest), ``mean_max_filtered`` (mean over days of the
            largest filtered probability: 1 is certainty, ``1/K`` is no information),
            ``share_of_days`` (per regime, as the most probable filtered regime),
            ``switches_per_year`` (changes of the most probable filtered regime per
            252 days) and ``expected_duration`` (posterior mean per regime, days).
        """
        vol = self.volatility_draws.mean(0)
        best = self.most_probable.to_numpy()
        duration = self.duration_draws.mean(0)
        return {
            "volatility": vol.tolist(),
            "volatility_ratio": float(vol[-1] / vol[0]),
            "mean_max_filtered": float(self.filtered.to_numpy().max(1).mean()),
            "share_of_days": np.bincount(best, minlength=self.n_regimes)
            .astype(float)
            .__truediv__(len(best))
            .tolist(),
            "switches_per_year": float(np.count_nonzero(np.diff(best)) * 252 / len(best)),
            "expected_duration": duration.tolist(),
        }

    def to_dataset(self) -> xr.Dataset:
        """The per-day posteriors as an xarray Dataset.

        Variables ``filtered_mean``, ``filtered_sd``, ``smoothed_mean``, ``smoothed_sd``
        and ``viterbi_share`` ``(date, regime)`` summarize all draws; ``filtered``,
        ``smoothed`` ``(draw, date, regime)`` and ``viterbi`` ``(draw, date)`` are the
        kept draws, whose ``draw`` coordinate holds their indices among all draws.
        """
        day, drawn = ("date", "regime"), ("draw", "date", "regime")
        coords = {
            "draw": self.draw_index,
            "date": self.dates.rename("date"),
            "regime": np.arange(self.n_regimes),
        }
        return xr.Dataset(
            {
                "filtered_mean": (day, self.filtered_mean),
                "filtered_sd": (day, self.filtered_std),
                "smoothed_mean": (day, self.smoothed_mean),
                "smoothed_sd": (day, self.smoothed_std),
                "viterbi_share": (day, self.viterbi_share),
                "filtered": (drawn, self.filtered_draws),
                "smoothed": (drawn, self.smoothed_draws),
                "viterbi": (("draw", "date"), self.viterbi_draws),
            },
            coords=coords,
        )


def _summarize(draws: np.ndarray, index: pd.Index) -> pd.DataFrame:
    lo, hi = np.quantile(draws, [0.03, 0.97], axis=0)
    return pd.DataFrame(
        {"mean": draws.mean(0), "sd": draws.std(0), "q3%": lo, "q97%": hi}, index=index
    )
