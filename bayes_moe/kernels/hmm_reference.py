r"""Sequential reference implementations of the hidden Markov model kernels.

Plain numpy loops over time, written to be read next to the textbook (Rabiner 1989),
with the same signatures and result types as the parallel kernels in
:mod:`bayes_moe.kernels.hmm` (shapes and conventions: see the table there), but
numpy arrays in and out and no batch dimensions. They exist as an oracle for the tests
and as documentation of what the scans compute; they are ``O(T)`` Python steps, so do
not use them inside a model.

The forward and backward passes work in probability space with Rabiner's scaling:
each step's emission likelihoods are divided by their largest value and each message
is renormalized, and the logs of those factors are accumulated, so nothing underflows
for long series. Viterbi works in log space.

References
----------
L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
recognition", Proceedings of the IEEE 77(2), 257-286, 1989.
"""

from __future__ import annotations

import numpy as np

from bayes_moe.kernels.hmm import HMMFilterResult, HMMSmootherResult, HMMViterbiResult

__all__ = ["reference_filter", "reference_smoother", "reference_viterbi"]


def _check(log_init: np.ndarray, log_trans: np.ndarray, log_emit: np.ndarray) -> np.ndarray:
    """Validate the shapes; return the transition into each step, ``(T, K, K)``."""
    num_steps, num_states = log_emit.shape
    if num_steps == 0:
        raise ValueError("log_emit has no time steps (T = 0)")
    square = (num_states, num_states)
    if log_init.shape != (num_states,) or log_trans.shape not in (square, (num_steps, *square)):
        raise ValueError("expected log_init (K,), log_trans (K, K) or (T, K, K), log_emit (T, K)")
    return np.broadcast_to(log_trans, (num_steps, *square))


def reference_filter(
    log_init: np.ndarray, log_trans: np.ndarray, log_emit: np.ndarray
) -> HMMFilterResult:
    r"""Forward filter, one time step at a time (Rabiner 1989, Sec. V-A).

    .. math::

        \hat\alpha_{t \mid t-1} = \hat\alpha_{t-1}^\top P, \qquad
        c_t = \sum_k \hat\alpha_{t \mid t-1}(k)\, p(y_t \mid z_t = k), \qquad
        \hat\alpha_t(k) = \hat\alpha_{t \mid t-1}(k)\, p(y_t \mid z_t = k) / c_t,

    with :math:`\hat\alpha_{1 \mid 0}` the initial distribution and
    :math:`\log p(y_{1:T}) = \sum_t \log c_t`.

    Parameters
    ----------
    log_init : ndarray
        ``(K,)``, :math:`\log p(z_1)`.
    log_trans : ndarray
        ``(K, K)``, :math:`\log p(z_t = j \mid z_{t-1} = i)` at ``[i, j]``; or
        ``(T, K, K)``, time-varying, entry ``t`` leading into step ``t`` (entry 0 unused;
        the parallel kernels take this form with ``time_varying=True``).
    log_emit : ndarray
        ``(T, K)``, :math:`\log p(y_t \mid z_t = k)`.

    Returns
    -------
    HMMFilterResult
        Fields as in :func:`bayes_moe.kernels.hmm.hmm_filter`, as numpy arrays.
    """
    log_init, log_trans, log_emit = (
        np.asarray(x, dtype=float) for x in (log_init, log_trans, log_emit)
    )
    trans = np.exp(_check(log_init, log_trans, log_emit))
    num_steps, num_states = log_emit.shape
    filtered = np.empty((num_steps, num_states))
    predicted = np.empty((num_steps, num_states))
    increments = np.empty(num_steps)

    prediction = np.exp(log_init)
    for t in range(num_steps):
        emit_max = log_emit[t].max()
        likelihood = np.exp(log_emit[t] - emit_max)  # p(y_t | z_t) / max_k p(y_t | z_t = k)
        joint = prediction * likelihood
        scale = joint.sum()
        predicted[t] = prediction
        filtered[t] = joint / scale
        increments[t] = np.log(scale) + emit_max
        if t + 1 < num_steps:
            prediction = filtered[t] @ trans[t + 1]

    with np.errstate(divide="ignore"):  # structural zeros become -inf, as intended
        # The oracle fills the kernels' result types with numpy arrays, not tensors.
        return HMMFilterResult(np.log(filtered), np.log(predicted), increments, increments.sum())  # type: ignore[arg-type]


def reference_smoother(
    log_init: np.ndarray, log_trans: np.ndarray, log_emit: np.ndarray
) -> HMMSmootherResult:
    r"""Forward-backward smoother, one time step at a time (Rabiner 1989, eq. 24-27).

    .. math::

        \hat\beta_T = \mathbf{1}, \qquad
        \hat\beta_t \propto P \big(p(y_{t+1} \mid z_{t+1}) \odot \hat\beta_{t+1}\big),
        \qquad p(z_t \mid y_{1:T}) \propto \hat\alpha_t \odot \hat\beta_t,

    each :math:`\hat\beta_t` renormalized to sum to one (its scale cancels).

    Parameters
    ----------
    log_init, log_trans, log_emit : ndarray
        As in :func:`reference_filter`.

    Returns
    -------
    HMMSmootherResult
        Fields as in :func:`bayes_moe.kernels.hmm.hmm_smoother`, as numpy arrays.
    """
    filtered = reference_filter(log_init, log_trans, log_emit)
    log_init, log_trans, log_emit = (
        np.asarray(x, dtype=float) for x in (log_init, log_trans, log_emit)
    )
    trans = np.exp(_check(log_init, log_trans, log_emit))
    num_steps, num_states = log_emit.shape

    beta = np.empty((num_steps, num_states))
    beta[-1] = 1.0
    for t in range(num_steps - 2, -1, -1):
        likelihood = np.exp(log_emit[t + 1] - log_emit[t + 1].max())
        message = trans[t + 1] @ (likelihood * beta[t + 1])
        beta[t] = message / message.sum()

    smoothed = np.exp(filtered.log_filtered) * beta
    smoothed /= smoothed.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        return HMMSmootherResult(*filtered, np.log(smoothed))  # type: ignore[arg-type]


def reference_viterbi(
    log_init: np.ndarray, log_trans: np.ndarray, log_emit: np.ndarray
) -> HMMViterbiResult:
    r"""Viterbi path by the textbook max-product recursion and backtrace (Rabiner 1989).

    .. math::

        \delta_t(k) = \max_j \big[\delta_{t-1}(j) + \log P_{jk}\big]
                      + \log p(y_t \mid z_t = k), \qquad
        \psi_t(k) = \operatorname{arg\,max}_j \big[\delta_{t-1}(j) + \log P_{jk}\big],

    then :math:`\hat z_T = \arg\max_k \delta_T(k)` and
    :math:`\hat z_{t-1} = \psi_t(\hat z_t)`.

    Parameters
    ----------
    log_init, log_trans, log_emit : ndarray
        As in :func:`reference_filter`.

    Returns
    -------
    HMMViterbiResult
        ``path (T,)`` int64 and ``log_max`` (a float),
        :math:`\max_{z} \log p(z_{1:T}, y_{1:T})`.
    """
    log_init, log_trans, log_emit = (
        np.asarray(x, dtype=float) for x in (log_init, log_trans, log_emit)
    )
    steps = _check(log_init, log_trans, log_emit)
    num_steps, num_states = log_emit.shape
    pointers = np.zeros((num_steps, num_states), dtype=np.int64)

    delta = log_init + log_emit[0]
    for t in range(1, num_steps):
        scores = delta[:, None] + steps[t]  # scores[j, k]: come from j, land in k
        pointers[t] = scores.argmax(axis=0)
        delta = scores.max(axis=0) + log_emit[t]

    path = np.empty(num_steps, dtype=np.int64)
    path[-1] = delta.argmax()
    for t in range(num_steps - 1, 0, -1):
        path[t - 1] = pointers[t, path[t]]
    return HMMViterbiResult(path, float(delta.max()))  # type: ignore[arg-type]
