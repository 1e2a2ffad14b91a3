"""Markov-switching regression forecasters (Hamilton 1989).

statsmodels' likelihood; the forecast is the Normal mixture of the filtered regime
probabilities propagated through the transition matrix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize

from bayes_moe.evaluation.backtest import realized_dates
from bayes_moe.evaluation.baselines._common import (
    _finite_column,
    _origin_positions,
    _train_returns,
)
from bayes_moe.evaluation.distributions import LocationScaleMixture


def regime_sum_mixture(
    predicted: np.ndarray,
    transition: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    horizon: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Exact distribution of an ``h``-day sum of a Markov-switching Normal series.

    Given the regime path :math:`s_{t+1}, \dots, s_{t+h}` the sum is Normal with mean
    :math:`\sum_k n_k \mu_k` and variance :math:`\sum_k n_k \sigma^2_k`, where
    :math:`n_k` counts the days spent in regime :math:`k`; so the sum is a Normal
    mixture over the occupation counts :math:`n` (:math:`\binom{h+K-1}{K-1}`
    components), whose weights are computed exactly by a forward recursion over
    (current regime, counts so far):

    .. math::

        a_1(k, e_k) = p_{t+1|t}(k), \qquad
        a_{j+1}(k', n + e_{k'}) = \sum_k a_j(k, n)\, P_{k k'}, \qquad
        w(n) = \sum_k a_h(k, n).

    Parameters
    ----------
    predicted : ndarray (N, K)
        :math:`p_{t+1|t}`, regime probabilities of the first forecast day.
    transition : ndarray (K, K)
        Row-stochastic, ``transition[j, i] = P(s_{t+1} = i | s_t = j)``.
    mean, variance : ndarray (K,)
        Per-regime daily mean and variance.
    horizon : int

    Returns
    -------
    weights, loc, scale : ndarray (N, C)
        The Normal mixture of the sum (for ``h = 1``: ``C = K``, weights ``predicted``).
    """
    k = predicted.shape[1]
    eye = np.eye(k, dtype=np.int64)
    alpha = {tuple(eye[i]): predicted * eye[i] for i in range(k)}  # counts -> (N, K)
    counts: tuple | np.ndarray  # a key of alpha, then all of them stacked
    for _ in range(horizon - 1):
        new: dict[tuple, np.ndarray] = {}
        for counts, a in alpha.items():
            step = a @ transition  # (N, K): probability of the next regime
            for i in range(k):
                key = tuple(np.asarray(counts) + eye[i])
                contribution = step * eye[i]
                new[key] = new[key] + contribution if key in new else contribution
        alpha = new
    counts = np.array(list(alpha), dtype=np.float64)  # (C, K)
    weights = np.stack([a.sum(axis=1) for a in alpha.values()], axis=1)  # (N, C)
    n = predicted.shape[0]
    loc = np.broadcast_to(counts @ mean, (n, len(counts)))
    scale = np.broadcast_to(np.sqrt(counts @ variance), (n, len(counts)))
    return weights, np.array(loc), np.array(scale)


@dataclass(frozen=True)
class MarkovSwitchingFit:
    r"""A fitted Markov-switching mean and variance model.

    One step: :math:`p(r_{t+1} \mid \mathcal F_t) = \sum_k p_{t+1|t}(k)\,
    N(\mu_k, \sigma^2_k)` with :math:`p_{t+1|t} = P^\top p_{t|t}`, where
    :math:`p_{t|t}` are the filtered regime probabilities of statsmodels' Hamilton
    filter (``MarkovRegression(...).filter(params)``) run over ``frame`` with the fitted
    parameters (starting from the ergodic distribution, statsmodels' default) and
    :math:`P` the row-stochastic transition matrix. ``h`` steps: the exact Normal
    mixture of :func:`regime_sum_mixture`.

    Attributes
    ----------
    k_regimes : int
    params : ndarray
        statsmodels' parameter vector (names in ``param_names``).
    param_names : tuple of str
    transition : ndarray (K, K)
        ``transition[j, i] = P(s_{t+1} = i | s_t = j)``.
    mean, variance : ndarray (K,)
    llf : float
        Training log-likelihood.
    converged : bool
    """

    k_regimes: int
    params: np.ndarray = field(repr=False)
    param_names: tuple[str, ...] = field(repr=False)
    transition: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    llf: float
    converged: bool

    def filtered_probabilities(self, frame: pd.DataFrame, stop: int) -> np.ndarray:
        """:math:`p_{t|t}` for rows ``0 .. stop-1`` of ``frame``: ``(stop, K)``."""
        r = _finite_column(frame, "ret", stop, "frame")
        model = _markov_model(r, self.k_regimes)
        return np.asarray(model.filter(self.params).filtered_marginal_probabilities)

    def __call__(self, frame: pd.DataFrame, origins, horizon: int = 1) -> LocationScaleMixture:
        """Predictive distributions at ``origins`` (module docstring)."""
        pos = _origin_positions(frame, origins, horizon)
        filtered = self.filtered_probabilities(frame, pos.max() + 1)[pos]
        predicted = filtered @ self.transition
        weights, loc, scale = regime_sum_mixture(
            predicted, self.transition, self.mean, self.variance, horizon
        )
        return LocationScaleMixture(
            weights=weights,
            loc=loc,
            scale=scale,
            df=np.full(weights.shape, np.inf),
            dates=realized_dates(frame.index, pos, horizon),
        )


def _markov_model(r: np.ndarray, k: int):
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    return MarkovRegression(r, k_regimes=k, trend="c", switching_variance=True)


def _markov_lbfgs(model, r: np.ndarray, k: int, max_iter: int):
    r"""Maximize the likelihood of ``model`` by L-BFGS with exact (autograd) gradients.

    The likelihood is statsmodels' (Hamilton filter started from the stationary
    distribution), computed with :func:`bayes_moe.kernels.hmm.hmm_log_evidence`:
    unconstrained parameters are the means, the log variances and row-wise softmax
    logits of the transition matrix, started from statsmodels' ``start_params``.

    Returns
    -------
    params : ndarray
        In statsmodels' order (``model.param_names``).
    llf : float
    converged : bool
    """
    import torch

    from bayes_moe._runtime import torch_threads
    from bayes_moe.kernels.hmm import hmm_log_evidence, stationary_distribution

    start = dict(zip(model.param_names, np.asarray(model.start_params, dtype=np.float64)))
    trans0 = np.asarray(model.regime_transition_matrix(model.start_params))[:, :, 0].T
    x0 = np.concatenate(
        [
            [start[f"const[{i}]"] for i in range(k)],
            np.log([start[f"sigma2[{i}]"] for i in range(k)]),
            np.log(np.clip(trans0, 1e-12, None)).ravel(),
        ]
    )
    y = torch.tensor(np.array(r, dtype=np.float64))
    half_log_2pi = 0.5 * float(np.log(2.0 * np.pi))

    def objective(x):
        theta = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        mean, log_var = theta[:k], theta[k : 2 * k]
        log_trans = torch.log_softmax(theta[2 * k :].reshape(k, k), dim=-1)
        log_emit = -half_log_2pi - 0.5 * (log_var + (y[:, None] - mean) ** 2 / log_var.exp())
        log_init = stationary_distribution(log_trans.exp()).log()
        loss = -hmm_log_evidence(log_init, log_trans, log_emit) / len(r)
        loss.backward()
        return loss.item(), theta.grad.numpy().copy()

    with torch_threads(1):  # small tensors: one intra-op thread is fastest
        res = optimize.minimize(
            objective,
            x0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-9},
        )
    x = res.x
    trans = np.exp(x[2 * k :].reshape(k, k))
    trans /= trans.sum(axis=1, keepdims=True)
    values = {}
    for i in range(k):
        values[f"const[{i}]"] = x[i]
        values[f"sigma2[{i}]"] = np.exp(x[k + i])
        for j in range(k):
            values[f"p[{i}->{j}]"] = trans[i, j]
    params = np.array([values[name] for name in model.param_names])
    return params, -float(res.fun) * len(r), bool(res.success)


def _markov_statsmodels(model, em_iter: int):
    """Fit with statsmodels' own optimizer (EM, then BFGS); returns ``params, llf, converged``."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        res = model.fit(em_iter=em_iter, cov_type="none", disp=False)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    converged = bool(res.mle_retvals.get("converged", True)) if res.mle_retvals else True
    return np.asarray(res.params, dtype=np.float64), float(res.llf), converged


@dataclass(frozen=True)
class MarkovSwitching:
    r"""Hamilton's Markov-switching model with a regime-dependent mean and variance.

    .. math::

        r_t = \mu_{s_t} + \sigma_{s_t} \epsilon_t, \quad \epsilon_t \sim N(0, 1), \quad
        P(s_t = i \mid s_{t-1} = j) = P_{ji}

    The model of statsmodels ``MarkovRegression(r, k_regimes=K, trend="c",
    switching_variance=True)``, fitted by maximum likelihood on the training returns.
    Two optimizers reach the same maximum:

    * ``"lbfgs"`` (default): L-BFGS-B on statsmodels' likelihood with exact autograd
      gradients (:func:`~bayes_moe.kernels.hmm.hmm_log_evidence`, stationary initial
      distribution as in statsmodels), from statsmodels' ``start_params``. About ten
      times faster than statsmodels' optimizer, whose gradients are complex-step
      numerical derivatives; on the four P1 training samples of the 3-regime model it
      reaches statsmodels' log-likelihood to 1e-3 or exceeds it by up to 0.013.
    * ``"statsmodels"``: ``model.fit(em_iter=em_iter, cov_type="none")`` (EM, then
      BFGS). With ``em_iter=20`` BFGS converges on the P1 training samples; with
      statsmodels' default of 5 it stops at its iteration limit slightly short of the
      maximum.

    A fit that does not converge warns (:class:`RuntimeWarning`).

    Parameters
    ----------
    k_regimes : int
    optimizer : {"lbfgs", "statsmodels"}
    em_iter : int
        EM iterations before BFGS (``optimizer="statsmodels"`` only).
    max_iter : int
        L-BFGS iterations (``optimizer="lbfgs"`` only).
    name : str
    """

    k_regimes: int = 2
    optimizer: str = "lbfgs"
    em_iter: int = 20
    max_iter: int = 2000
    name: str = "ms2"

    def __call__(self, train: pd.DataFrame) -> MarkovSwitchingFit:
        """Fit on ``train`` (needs 100 returns)."""
        r = _train_returns(train, 100)
        k = self.k_regimes
        model = _markov_model(r, k)
        if self.optimizer == "lbfgs":
            params, llf, converged = _markov_lbfgs(model, r, k, self.max_iter)
        elif self.optimizer == "statsmodels":
            params, llf, converged = _markov_statsmodels(model, self.em_iter)
        else:
            raise ValueError(f"optimizer must be 'lbfgs' or 'statsmodels', got {self.optimizer!r}")
        if not converged:
            warnings.warn(
                f"{self.name}: the Markov-switching maximum likelihood fit did not converge "
                f"(log-likelihood {llf:.3f}); forecasts use the last iterate",
                RuntimeWarning,
                stacklevel=2,
            )
        names = tuple(model.param_names)
        by_name = dict(zip(names, params))
        return MarkovSwitchingFit(
            k_regimes=k,
            params=params,
            param_names=names,
            transition=np.asarray(model.regime_transition_matrix(params))[:, :, 0].T.copy(),
            mean=np.array([by_name[f"const[{i}]"] for i in range(k)]),
            variance=np.array([by_name[f"sigma2[{i}]"] for i in range(k)]),
            llf=llf,
            converged=converged,
        )
