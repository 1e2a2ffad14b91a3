r"""Posterior predictive distributions: a mixture over draws, regimes and experts.

At a set of origins the posterior predictive is the finite mixture

.. math::

    p(y_{n} \mid \mathcal F_n, \text{data}) \approx \frac1S \sum_{s=1}^{S} \sum_{k=1}^{K}
    \sum_{m=1}^{M} w^{(s)}_{n,k,m}\; p^{(k)}_m\big(y_n \mid \mathcal F_n; \theta^{(s)}_m\big),

with :math:`w^{(s)}_{n,k,m} = P(z_n = k \mid \mathcal F_n, \theta^{(s)})\,
g^{(s)}_{n,k,m}` (regime probabilities propagated through the transition matrix)
and :math:`p^{(k)}_m` expert ``m``'s predictive stretched about its location by
regime ``k``'s volatility level :math:`e^{\lambda_k}`. Its density is exact (no
sampling); samples draw a posterior draw, then a regime and an expert, then a value.
Everything is returned in data units (e.g. percent log returns).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from bayes_moe.kernels.mixture_kernels import pick_components
from bayes_moe.models.distributions import (
    index_batch,
    location,
    mean_and_variance,
    per_row,
    regime_cdf,
    regime_log_prob,
    sample_picked,
)


def sample_mixture(log_weights, log_scale, experts, generators=None) -> torch.Tensor:
    r"""One value per row of ``log_weights`` from the regime-scaled expert mixture.

    Picks a (regime, expert) pair with probability :math:`w_{n,k,m}` (inverse CDF of
    a uniform), samples :math:`x \sim p_m` and returns
    :math:`\mu_m + e^{\lambda_k} (x - \mu_m)`.

    Parameters
    ----------
    log_weights : Tensor ``(S, n, K, M)``
    log_scale : Tensor ``(S, K)``
        :math:`\lambda_k` of each row's draw.
    experts : list of ``M`` distributions, batch ``(S, n)``
    generators : sequence of ``S`` ``torch.Generator``, optional
        Row ``s`` is drawn with ``generators[s]`` alone (its sample then does not depend
        on the other rows); None draws every row from torch's global generator.

    Returns
    -------
    Tensor ``(S, n, d_y)``
    """
    S, n, _, M = log_weights.shape
    generators = [None] * S if generators is None else list(generators)
    if len(generators) != S:
        raise ValueError(f"{len(generators)} generators for {S} rows")
    u = per_row(generators, lambda i, g: torch.rand(n, generator=g, dtype=torch.float64))
    picks = pick_components(log_weights.flatten(-2), u)  # (S, n)
    regime, expert = picks // M, picks % M
    x = sample_picked(experts, expert, generators)  # (S, n, d_y)
    locs = torch.stack([location(d) for d in experts], dim=2)
    mu = torch.take_along_dim(locs, expert[..., None, None], dim=2).squeeze(2)
    stretch = torch.take_along_dim(log_scale, regime, dim=1).exp().unsqueeze(-1)  # (S, n, 1)
    return mu + stretch * (x - mu)


def mixture_moments(log_weights, log_scale, experts) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean and second moment of each draw's regime-scaled expert mixture.

    .. math:: m_n = \sum_{k,m} w_{n,k,m} \mu_m, \qquad
              s_n = \sum_{k,m} w_{n,k,m} \big(e^{2\lambda_k} \sigma_m^2 + \mu_m^2\big)

    Parameters
    ----------
    log_weights : Tensor ``(S, n, K, M)``
    log_scale : Tensor ``(S, K)``
    experts : list of ``M`` distributions, batch ``(S, n)``, event ``(d_y,)``

    Returns
    -------
    tuple of Tensor ``(S, n, d_y)``
        Per draw; the posterior predictive's mean is the average of ``m`` over draws
        and its variance the average of ``s`` minus the squared mean.
    """
    w = log_weights.exp().unsqueeze(-1)  # (S, n, K, M, 1)
    moments = [mean_and_variance(d) for d in experts]
    means = torch.stack([m for m, _ in moments], dim=2).unsqueeze(2)  # (S, n, 1, M, d)
    variances = torch.stack([v for _, v in moments], dim=2).unsqueeze(2)
    stretch = (2 * log_scale)[:, None, :, None, None].exp()  # (S, 1, K, 1, 1)
    mean = (w * means).sum((2, 3))
    second = (w * (stretch * variances + means.square())).sum((2, 3))
    return mean, second


def mixture_cdf(log_weights, log_scale, experts, value) -> torch.Tensor:
    r"""Each draw's mixture CDF of the first target at ``value``.

    .. math:: F_n(y) = \sum_{k,m} w_{n,k,m} F^{(k)}_m(y)

    with :math:`F^{(k)}_m` expert ``m``'s marginal CDF of the first target at regime
    ``k``'s level (:func:`~bayes_moe.models.distributions.regime_cdf`).

    Parameters
    ----------
    log_weights : Tensor ``(S, n, K, M)``
    log_scale : Tensor ``(S, K)``
    experts : list of ``M`` distributions, batch ``(S, n)``
    value : Tensor ``(n,)``
        Standardized first target.

    Returns
    -------
    Tensor ``(S, n)``
    """
    cdf = torch.stack([regime_cdf(d, value, log_scale) for d in experts], dim=-1)
    return (log_weights.exp() * cdf).sum((-2, -1))


class PredictiveMixture:
    """Posterior predictive at ``n`` origins.

    Parameters
    ----------
    log_weights : Tensor ``(S, n, K, M)``
        Log mixture weights per draw, origin, regime and expert.
    log_scale : Tensor ``(S, K)``
        Log volatility level of each regime per draw.
    experts : list of Distribution
        Each with batch ``(S, n)``, event ``(d_y,)``, over the standardized response,
        at the expert's own scale.
    loc, scale : ndarray ``(d_y,)``
        Affine map back to data units: ``y = loc + scale * z``.
    dates : DatetimeIndex, length ``n``
        Origin dates.
    targets : tuple of str
    """

    def __init__(self, log_weights, log_scale, experts, loc, scale, dates, targets):
        self.log_weights = log_weights
        self.log_scale = log_scale
        self.experts = experts
        self.loc = np.asarray(loc, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.dates = pd.DatetimeIndex(dates)
        self.targets = tuple(targets)

    @property
    def n_draws(self) -> int:
        """``S``."""
        return self.log_weights.shape[0]

    @property
    def expert_weights(self) -> torch.Tensor:
        """Weight of each expert summed over regimes: ``(S, n, M)``."""
        return self.log_weights.exp().sum(-2)

    @property
    def regime_weights(self) -> torch.Tensor:
        """Probability of each regime: ``(S, n, K)``."""
        return self.log_weights.exp().sum(-1)

    def log_prob(self, y) -> np.ndarray:
        r"""Exact log density of ``y`` (data units): shape ``(n,)``.

        Parameters
        ----------
        y : array, shape ``(n,)`` or ``(n, d_y)``
        """
        z = (np.asarray(y, dtype=np.float64).reshape(len(self.dates), -1) - self.loc) / self.scale
        z = torch.as_tensor(z, dtype=self.log_weights.dtype)
        log_p = torch.stack(
            [regime_log_prob(d, z, self.log_scale) for d in self.experts], dim=-1
        )  # (S, n, K, M)
        mixed = torch.logsumexp((self.log_weights + log_p).flatten(-2), dim=-1)  # (S, n)
        out = torch.logsumexp(mixed, dim=0) - math.log(self.n_draws)
        return out.numpy() - np.log(self.scale).sum()

    def sample(self, num_samples: int, *, seed: int | None = None) -> np.ndarray:
        """Samples in data units: shape ``(num_samples, n, d_y)``."""
        generator_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        try:
            draw = torch.randint(self.n_draws, (num_samples,))
            z = sample_mixture(
                self.log_weights[draw],
                self.log_scale[draw],
                [index_batch(d, (draw,)) for d in self.experts],
            )  # (num_samples, n, d_y)
        finally:
            if seed is not None:
                torch.random.set_rng_state(generator_state)
        return self.loc + self.scale * z.numpy()

    def _moments(self):
        """Per draw and origin: mean and second moment ``(S, n, d_y)`` (:func:`mixture_moments`)."""
        return mixture_moments(self.log_weights, self.log_scale, self.experts)

    @property
    def mean(self) -> np.ndarray:
        """Exact mixture mean in data units: ``(n, d_y)``."""
        mean, _ = self._moments()
        return self.loc + self.scale * mean.mean(0).numpy()

    @property
    def variance(self) -> np.ndarray:
        """Exact mixture variance in data units (law of total variance): ``(n, d_y)``."""
        mean, second = self._moments()
        mean, second = mean.mean(0), second.mean(0)
        return (second - mean.square()).numpy() * self.scale**2

    def cdf(self, y) -> np.ndarray:
        """Exact mixture CDF of the first target at ``y`` (data units): shape ``(n,)``.

        At the realized values it is the probability integral transform (PIT).

        Parameters
        ----------
        y : array, shape ``(n,)`` (first target) or ``(n, d_y)``
        """
        y = np.asarray(y, dtype=np.float64).reshape(len(self.dates), -1)[:, 0]
        z = torch.as_tensor((y - self.loc[0]) / self.scale[0], dtype=self.log_weights.dtype)
        cdf = mixture_cdf(self.log_weights, self.log_scale, self.experts, z).mean(0)
        return cdf.clamp(0.0, 1.0).numpy()


class Forecast:
    """The forecast distribution from the last close, for a horizon of ``h`` days.

    Attributes
    ----------
    samples : ndarray
        ``(num_samples,)`` for one target, else ``(num_samples, d_y)``.
    mean, std : float or ndarray ``(d_y,)``
    origin_date : Timestamp
        The close whose information the forecast uses.
    horizon : int
    regime_probs : DataFrame
        Posterior mean and sd of P(z = k) for the forecast day, per regime.
    expert_weights : Series
        Posterior mean mixture weight of each expert.
    """

    def __init__(self, mixture, *, num_samples, seed, horizon, regime_probs, expert_weights):
        self.mixture = mixture
        self.horizon = horizon
        self.origin_date = mixture.dates[0]
        raw = mixture.sample(num_samples, seed=seed)[:, 0, :]
        self._samples = raw
        self.regime_probs = regime_probs
        self.expert_weights = expert_weights

    @property
    def targets(self) -> tuple[str, ...]:
        """Target names."""
        return self.mixture.targets

    def _squeeze(self, x):
        x = np.asarray(x)
        return x[..., 0] if len(self.targets) == 1 else x

    @property
    def samples(self) -> np.ndarray:
        """Draws from the forecast distribution (data units)."""
        return self._squeeze(self._samples)

    @property
    def mean(self):
        """Exact predictive mean."""
        value = self._squeeze(self.mixture.mean[0])
        return float(value) if np.ndim(value) == 0 else value

    @property
    def std(self):
        """Exact predictive standard deviation."""
        value = self._squeeze(np.sqrt(self.mixture.variance[0]))
        return float(value) if np.ndim(value) == 0 else value

    def quantiles(self, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> pd.Series | pd.DataFrame:
        """Sample quantiles: a Series indexed by ``q`` (DataFrame ``q x target`` if ``d_y > 1``)."""
        qs = np.atleast_1d(np.asarray(qs, dtype=np.float64))
        if np.any((qs < 0) | (qs > 1)):
            raise ValueError(f"quantile levels must lie in [0, 1], got {qs}")
        values = np.quantile(self._samples, qs, axis=0)  # (Q, d_y)
        frame = pd.DataFrame(values, index=pd.Index(qs, name="q"), columns=list(self.targets))
        return frame.iloc[:, 0].rename("quantile") if len(self.targets) == 1 else frame

    def interval(self, prob: float = 0.9):
        """Central interval with coverage ``prob``: ``(lower, upper)``."""
        if not 0 < prob < 1:
            raise ValueError(f"prob must be in (0, 1), got {prob}")
        lo, hi = np.quantile(self._samples, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        return (float(lo[0]), float(hi[0])) if len(self.targets) == 1 else (lo, hi)

    def log_prob(self, y) -> float:
        """Exact log predictive density of a realized value ``y`` (data units)."""
        return float(self.mixture.log_prob(np.reshape(y, (1, -1)))[0])

    def to_frame(self, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> pd.DataFrame:
        """One row per target: mean, std and quantiles."""
        quant = np.quantile(self._samples, qs, axis=0)
        mean = np.atleast_1d(self.mixture.mean[0])
        std = np.atleast_1d(np.sqrt(self.mixture.variance[0]))
        data = {"mean": mean, "std": std}
        data.update({f"q{q:g}": quant[i] for i, q in enumerate(qs)})
        frame = pd.DataFrame(data, index=pd.Index(self.targets, name="target"))
        frame.insert(0, "horizon", self.horizon)
        frame.insert(0, "origin_date", self.origin_date)
        return frame

    def __repr__(self) -> str:
        lo, hi = self.interval(0.9)
        return (
            f"Forecast(origin={self.origin_date.date()}, horizon={self.horizon}, "
            f"mean={np.round(self.mean, 4)}, 90% interval=({np.round(lo, 3)}, {np.round(hi, 3)}))"
        )
