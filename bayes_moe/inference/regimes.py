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
    """Regime posteriors for ``S`` draws over ``N`` days and ``K`` regimes.

    Attributes
    ----------
    dates : DatetimeIndex (N,)
    filtered_draws, smoothed_draws : ndarray ``(S, N, K)``
    viterbi_draws : ndarray ``(S, N)`` int
    transition_draws : ndarray ``(S, K, K)``
    expert_weight_draws : ndarray ``(S, K, M)``
        Gate weights of each regime averaged over days.
    volatility_draws : ndarray ``(S, K)``
        Mean predictive standard deviation of each regime, data units.
    experts : tuple of str
    """

    dates: pd.DatetimeIndex
    filtered_draws: np.ndarray
    smoothed_draws: np.ndarray
    viterbi_draws: np.ndarray
    transition_draws: np.ndarray
    expert_weight_draws: np.ndarray
    volatility_draws: np.ndarray
    experts: tuple[str, ...]

    @property
    def n_regimes(self) -> int:
        """``K``."""
        return self.filtered_draws.shape[-1]

    @property
    def regime_index(self) -> pd.Index:
        """Regime labels 0..K-1 (0 = calmest)."""
        return pd.Index(range(self.n_regimes), name="regime")

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=self.dates.rename("date"), columns=self.regime_index)

    @property
    def filtered(self) -> pd.DataFrame:
        """Posterior mean of P(z_t = k | y_{1:t}) (causal): date x regime."""
        return self._frame(self.filtered_draws.mean(0))

    @property
    def filtered_sd(self) -> pd.DataFrame:
        """Posterior sd across draws of the filtered probabilities."""
        return self._frame(self.filtered_draws.std(0))

    @property
    def smoothed(self) -> pd.DataFrame:
        """Posterior mean of P(z_t = k | y_{1:T}) (uses the whole sample): date x regime."""
        return self._frame(self.smoothed_draws.mean(0))

    @property
    def smoothed_sd(self) -> pd.DataFrame:
        """Posterior sd across draws of the smoothed probabilities."""
        return self._frame(self.smoothed_draws.std(0))

    @property
    def viterbi(self) -> pd.DataFrame:
        """Share of posterior draws whose Viterbi path is in regime k on day t."""
        K = self.n_regimes
        share = (self.viterbi_draws[..., None] == np.arange(K)).mean(0)
        return self._frame(share)

    @property
    def viterbi_path(self) -> pd.Series:
        """The most common regime across the draws' Viterbi paths, per day."""
        return self.viterbi.idxmax(axis=1).rename("regime")

    @property
    def transition(self) -> pd.DataFrame:
        """Posterior mean transition matrix (row: from, column: to)."""
        idx = self.regime_index
        return pd.DataFrame(
            self.transition_draws.mean(0), index=idx.rename("from"), columns=idx.rename("to")
        )

    @property
    def expected_duration(self) -> pd.DataFrame:
        r"""Expected stay in each regime, :math:`1 / (1 - \Pi_{kk})` days.

        Returns mean, sd and the 94% interval over posterior draws.
        """
        stay = np.diagonal(self.transition_draws, axis1=1, axis2=2)
        duration = 1.0 / np.clip(1.0 - stay, 1e-12, None)
        return _summarize(duration, self.regime_index)

    @property
    def volatility(self) -> pd.DataFrame:
        """Mean predictive standard deviation of each regime: mean, sd, 94% interval."""
        return _summarize(self.volatility_draws, self.regime_index)

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
        probs = self.filtered_draws[:, -1, :]
        k = int(probs.mean(0).argmax())
        return {
            "date": self.dates[-1],
            "regime": k,
            "probability": float(probs[:, k].mean()),
            "probability_sd": float(probs[:, k].std()),
        }

    def to_dataset(self) -> xr.Dataset:
        """All draws as an xarray Dataset with dims ``(draw, date, regime)``."""
        coords = {
            "draw": np.arange(self.filtered_draws.shape[0]),
            "date": self.dates.rename("date"),
            "regime": np.arange(self.n_regimes),
        }
        return xr.Dataset(
            {
                "filtered": (("draw", "date", "regime"), self.filtered_draws),
                "smoothed": (("draw", "date", "regime"), self.smoothed_draws),
                "viterbi": (("draw", "date"), self.viterbi_draws),
            },
            coords=coords,
        )


def _summarize(draws: np.ndarray, index: pd.Index) -> pd.DataFrame:
    lo, hi = np.quantile(draws, [0.03, 0.97], axis=0)
    return pd.DataFrame(
        {"mean": draws.mean(0), "sd": draws.std(0), "q3%": lo, "q97%": hi}, index=index
    )
