r"""Sequential hidden Markov model kernels, compiled with numba, batched over draws.

The forward filter, the forward-backward smoother and the Viterbi path as the textbook
recursions (Rabiner 1989), one time step after another, compiled to machine code with
numba and looped over a flat batch of sequences (posterior draws, assets). They are the
evaluation route of :mod:`bayes_moe.kernels.hmm`: a step costs :math:`O(K^2)`
multiply-adds against :math:`O(K^3)` for an element of the parallel scan, and on a CPU
with few cores the batch of draws, not the time axis, is where the parallelism is.
They compute no gradients (the parallel scan does, for SVI).

Arithmetic
----------
The forward and backward messages are kept in probability space and rescaled at every
step (Rabiner's scaling): each day's emission likelihoods are divided by their largest
value, :math:`\tilde e_t(k) = \exp(\log p(y_t \mid z_t = k) - m_t)`, the filtered
message is normalised to sum to one and the backward message to a largest entry of one,
and :math:`\log c_t + m_t` is the evidence increment. Emission ratios below
:math:`e^{-708}` are set to zero instead of entering the slow subnormal range. Nothing
underflows over any length of series; a probability below the smallest normal float64
(about 1e-308) is returned as zero (``-inf`` in log space), where the log-space scan
would return its logarithm. Viterbi works in log space with (max, +). Every kernel
computes in float64 whatever the input dtype.

Array conventions (all C-contiguous float64 unless stated): ``B`` sequences, ``T`` steps,
``K`` regimes; an argument whose leading size is 1 is shared by all ``B`` sequences, and
a transition array whose second size is 1 is the same at every step (otherwise entry
``t`` is the transition *into* step ``t`` and entry 0 is not read), as in
:mod:`bayes_moe.kernels.hmm`.

References
----------
L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
recognition", Proceedings of the IEEE 77(2), 257-286, 1989, Sec. III and V-A.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import torch

__all__ = [
    "backward_smooth",
    "forward_filter",
    "scaled_emissions",
    "sequential_filter",
    "sequential_log_evidence",
    "sequential_viterbi",
    "viterbi_path",
]

# Reassociation lets the compiler vectorise sums and maxima; ``nnan``/``ninf`` are left
# out on purpose: structural zeros of the transition matrix are -inf in log space.
#: Emission log-ratios below this are taken as zero probability: exp() of them would be
#: subnormal (a slow path) and they change a sum whose largest term is one by < 1e-307.
LOG_RATIO_FLOOR = -708.0

_JIT: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": {"nsz", "contract", "reassoc"}}


@numba.njit(**_JIT)
def _load_step(trans, b, t, out, transpose):
    r"""Copy the transition into step ``t`` of sequence ``b`` into ``out`` (K, K).

    Indexing a local copy is faster than slicing ``trans`` at every step; with
    ``transpose`` the copy is :math:`P^\top`, so a loop over the previous state reads
    memory in order.
    """
    step = trans[b if trans.shape[0] > 1 else 0, t if trans.shape[1] > 1 else 0]
    n_states = out.shape[0]
    for i in range(n_states):
        for j in range(n_states):
            if transpose:
                out[j, i] = step[i, j]
            else:
                out[i, j] = step[i, j]


@numba.njit(**_JIT)
def forward_filter(init, trans, scaled_emit, filtered, predicted, norms):
    r"""Scaled forward recursion (Rabiner 1989, eq. 91-92), in place.

    .. math::

        \hat\alpha_{t \mid t-1} = \hat\alpha_{t-1}^\top P^{(t)}, \qquad
        c_t = \sum_k \hat\alpha_{t \mid t-1}(k)\, \tilde e_t(k), \qquad
        \hat\alpha_t(k) = \hat\alpha_{t \mid t-1}(k)\, \tilde e_t(k) / c_t,

    with :math:`\hat\alpha_{1 \mid 0}` the initial distribution; the evidence
    increment is :math:`\log p(y_t \mid y_{1:t-1}) = \log c_t + m_t`.

    Parameters
    ----------
    init : ndarray ``(1 or B, K)``
        :math:`p(z_1)`, probabilities.
    trans : ndarray ``(1 or B, 1 or T, K, K)``
        :math:`P^{(t)}_{ij} = p(z_t = j \mid z_{t-1} = i)`, probabilities.
    scaled_emit : ndarray ``(1 or B, T, K)``
        :math:`\tilde e_t(k)` (:func:`scaled_emissions`).
    filtered, predicted : ndarray ``(B, T, K)`` or ``(0, 0, 0)``
        Each written unless empty: :math:`p(z_t \mid y_{1:t})` and
        :math:`p(z_t \mid y_{1:t-1})`.
    norms : ndarray ``(B, T)``
        Written: :math:`c_t`; zero on a day that every regime the filter allows gives
        zero likelihood (the message then carries the prediction on unchanged).
    """
    n_seq, n_steps = norms.shape
    n_states = scaled_emit.shape[2]
    keep_filtered = filtered.shape[0] > 0
    keep_predicted = predicted.shape[0] > 0
    varying = trans.shape[1] > 1
    step = np.empty((n_states, n_states))
    prev = np.empty(n_states)
    pred = np.empty(n_states)
    for b in range(n_seq):
        ib = b if init.shape[0] > 1 else 0
        eb = b if scaled_emit.shape[0] > 1 else 0
        _load_step(trans, b, 0, step, False)
        for t in range(n_steps):
            if t == 0:
                for k in range(n_states):
                    pred[k] = init[ib, k]
            else:
                if varying:
                    _load_step(trans, b, t, step, False)
                for j in range(n_states):
                    pred[j] = 0.0
                for i in range(n_states):
                    weight = prev[i]
                    for j in range(n_states):
                        pred[j] += weight * step[i, j]
            total = 0.0
            for k in range(n_states):
                prev[k] = pred[k] * scaled_emit[eb, t, k]
                total += prev[k]
            norms[b, t] = total
            if total > 0.0:
                scale = 1.0 / total
                for k in range(n_states):
                    prev[k] *= scale
            else:
                for k in range(n_states):
                    prev[k] = pred[k]
            if keep_predicted:
                for k in range(n_states):
                    predicted[b, t, k] = pred[k]
            if keep_filtered:
                for k in range(n_states):
                    filtered[b, t, k] = prev[k]


@numba.njit(**_JIT)
def backward_smooth(trans, filtered, scaled_emit, smoothed, pair_probs):
    r"""Scaled backward recursion, smoothed marginals and pairwise marginals, in place.

    .. math::

        \hat\beta_T = \mathbf 1, \qquad
        \hat\beta_t(i) \propto \sum_j P^{(t+1)}_{ij}\, \tilde e_{t+1}(j)\, \hat\beta_{t+1}(j),
        \qquad p(z_t = k \mid y_{1:T}) \propto \hat\alpha_t(k)\, \hat\beta_t(k),

        \xi_{t+1}(i, j) = p(z_t = i, z_{t+1} = j \mid y_{1:T}) \propto
        \hat\alpha_t(i)\, P^{(t+1)}_{ij}\, \tilde e_{t+1}(j)\, \hat\beta_{t+1}(j)

    (Rabiner 1989, eq. 24-27 and 37), each :math:`\hat\beta_t` divided by its largest
    entry (the constant cancels in the normalised marginals).

    Parameters
    ----------
    trans : ndarray ``(1 or B, 1 or T, K, K)``
        As in :func:`forward_filter`.
    filtered : ndarray ``(B, T, K)``
        From :func:`forward_filter`.
    scaled_emit : ndarray ``(1 or B, T, K)``
        As in :func:`forward_filter`.
    smoothed : ndarray ``(B, T, K)``
        Written: :math:`p(z_t = k \mid y_{1:T})`.
    pair_probs : ndarray ``(B, 1, K, K)``, ``(B, T, K, K)`` or ``(0, 0, 0, 0)``
        Unless empty, written: :math:`\sum_{t \ge 2} \xi_t` (second size 1) or each
        :math:`\xi_t` at entry ``t`` (entry 0 zero). They are the gradient of the log
        evidence with respect to the log transition probabilities.
    """
    n_seq, n_steps, n_states = filtered.shape
    pairs = pair_probs.shape[0] > 0
    varying = trans.shape[1] > 1
    step = np.empty((n_states, n_states))
    beta = np.empty(n_states)
    weighted = np.empty(n_states)
    xi = np.empty((n_states, n_states))
    for b in range(n_seq):
        eb = b if scaled_emit.shape[0] > 1 else 0
        _load_step(trans, b, 0, step, False)
        if pairs:
            pair_probs[b] = 0.0
        for k in range(n_states):
            beta[k] = 1.0
            smoothed[b, n_steps - 1, k] = filtered[b, n_steps - 1, k]
        for t in range(n_steps - 2, -1, -1):
            if varying:
                _load_step(trans, b, t + 1, step, False)
            for j in range(n_states):
                weighted[j] = scaled_emit[eb, t + 1, j] * beta[j]
            peak = 0.0
            pair_total = 0.0
            for i in range(n_states):
                acc = 0.0
                for j in range(n_states):
                    acc += step[i, j] * weighted[j]
                beta[i] = acc
                peak = max(peak, acc)
                if pairs:
                    alpha = filtered[b, t, i]
                    pair_total += alpha * acc
                    for j in range(n_states):
                        xi[i, j] = alpha * step[i, j] * weighted[j]
            if pairs and pair_total > 0.0:
                into = t + 1 if pair_probs.shape[1] > 1 else 0
                scale = 1.0 / pair_total
                for i in range(n_states):
                    for j in range(n_states):
                        pair_probs[b, into, i, j] += xi[i, j] * scale
            scale = 1.0 / peak if peak > 0.0 else 1.0
            total = 0.0
            for k in range(n_states):
                beta[k] *= scale
                smoothed[b, t, k] = filtered[b, t, k] * beta[k]
                total += smoothed[b, t, k]
            if total > 0.0:
                scale = 1.0 / total
                for k in range(n_states):
                    smoothed[b, t, k] *= scale
            else:  # a day with zero likelihood after t: nothing to smooth with
                for k in range(n_states):
                    smoothed[b, t, k] = filtered[b, t, k]


@numba.njit(**_JIT)
def viterbi_path(log_init, log_trans, log_emit, path, log_max, lattice):
    r"""Viterbi recursion and backtrace in log space (Rabiner 1989, eq. 30-35).

    .. math::

        \delta_1(j) = \log p(z_1 = j) + \log p(y_1 \mid z_1 = j), \qquad
        \delta_t(k) = \max_j \big[\delta_{t-1}(j) + \log P^{(t)}_{jk}\big]
                      + \log p(y_t \mid z_t = k),

        \hat z_T = \arg\max_k \delta_T(k), \qquad
        \hat z_{t-1} = \arg\max_j \big[\delta_{t-1}(j) + \log P^{(t)}_{j \hat z_t}\big]

    (the lowest ``j`` on a tie). The forward pass keeps the whole lattice
    :math:`\delta` and computes maxima only (a branch-free running maximum over ``j``
    on the transposed log transition matrix, read in memory order); the backtrace
    recomputes the one arg max it needs per step from the same sums, so it finds the
    back-pointers the forward pass would have stored (hmmlearn's C kernel works the
    same way).

    Parameters
    ----------
    log_init : ndarray ``(1 or B, K)``
    log_trans : ndarray ``(1 or B, 1 or T, K, K)``
        Log probabilities.
    log_emit : ndarray ``(1 or B, T, K)``
    path : ndarray ``(B, T)`` int64
        Written: the most probable path.
    log_max : ndarray ``(B,)``
        Written: :math:`\max_k \delta_T(k) = \log p(\hat z_{1:T}, y_{1:T})`.
    lattice : ndarray ``(T, K)``
        Scratch for :math:`\delta` of one sequence.
    """
    n_seq, n_steps = path.shape
    n_states = log_emit.shape[2]
    varying = log_trans.shape[1] > 1
    into = np.empty((n_states, n_states))  # into[k, j] = log P_jk
    for b in range(n_seq):
        ib = b if log_init.shape[0] > 1 else 0
        eb = b if log_emit.shape[0] > 1 else 0
        _load_step(log_trans, b, 0, into, True)
        for k in range(n_states):
            lattice[0, k] = log_init[ib, k] + log_emit[eb, 0, k]
        for t in range(1, n_steps):
            if varying:
                _load_step(log_trans, b, t, into, True)
            for k in range(n_states):
                top = lattice[t - 1, 0] + into[k, 0]
                for j in range(1, n_states):
                    score = lattice[t - 1, j] + into[k, j]
                    top = score if score > top else top
                lattice[t, k] = top + log_emit[eb, t, k]
        state = 0
        for k in range(1, n_states):
            if lattice[n_steps - 1, k] > lattice[n_steps - 1, state]:
                state = k
        log_max[b] = lattice[n_steps - 1, state]
        path[b, n_steps - 1] = state
        for t in range(n_steps - 1, 0, -1):
            if varying:
                _load_step(log_trans, b, t, into, True)
            arg = 0
            top = lattice[t - 1, 0] + into[state, 0]
            for j in range(1, n_states):
                score = lattice[t - 1, j] + into[state, j]
                if score > top:
                    top = score
                    arg = j
            state = arg
            path[b, t - 1] = state


@numba.njit(**_JIT)
def _log_ratios(log_emit, ratio, peak):
    """``peak[b, t] = max_k log_emit[b, t, k]``, ``ratio = log_emit - peak`` (floored)."""
    n_seq, n_steps, n_states = log_emit.shape
    for b in range(n_seq):
        for t in range(n_steps):
            row = log_emit[b, t]
            top = -np.inf
            for k in range(n_states):
                top = max(top, row[k])
            peak[b, t] = top
            shift = top if top > -np.inf else 0.0
            for k in range(n_states):
                r = row[k] - shift
                ratio[b, t, k] = r if r >= LOG_RATIO_FLOOR else -np.inf


def scaled_emissions(log_emit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Emission likelihoods relative to each day's largest, and that largest.

    :math:`m_t = \max_k \log p(y_t \mid z_t = k)` and
    :math:`\tilde e_t(k) = \exp(\log p(y_t \mid z_t = k) - m_t) \in [0, 1]`; the
    ``exp`` is numpy's vectorised one (the kernels then only multiply and add). A day
    whose emissions are all ``-inf`` gets :math:`m_t = -\infty` and
    :math:`\tilde e_t = 0`.

    Parameters
    ----------
    log_emit : ndarray ``(B, T, K)``, float64, C-contiguous

    Returns
    -------
    tuple of ndarray
        ``scaled (B, T, K)`` and ``peak (B, T)``.
    """
    scaled = np.empty_like(log_emit)
    peak = np.empty(log_emit.shape[:2])
    _log_ratios(log_emit, scaled, peak)
    np.exp(scaled, out=scaled)
    return scaled, peak


# --------------------------------------------------------------------------------------
# Torch in, torch out
# --------------------------------------------------------------------------------------


def _as_batch_array(x: torch.Tensor, batch_shape: tuple, event_ndim: int) -> np.ndarray:
    """``x`` broadcast to ``batch_shape + event`` as a C-contiguous float64 array.

    Shape ``(1, *event)`` when ``x`` is the same for the whole batch (the broadcast is
    not copied), else ``(B, *event)`` with ``B`` the product of ``batch_shape``.
    """
    event = tuple(x.shape[x.dim() - event_ndim :])
    own = tuple(x.shape[: x.dim() - event_ndim])
    x = x.detach()
    if math.prod(own) == 1:
        x = x.reshape((1,) + event)
    elif own == tuple(batch_shape):
        x = x.reshape((-1,) + event)
    else:  # partly broadcast: materialise the batch
        x = x.expand(tuple(batch_shape) + event).reshape((-1,) + event)
    return np.ascontiguousarray(x.to(torch.float64).numpy())


def batch_shape_of(log_init, log_trans, log_emit, time_varying: bool) -> tuple:
    """Broadcast batch shape of the three arguments (numpy's rules, which are torch's)."""
    event = 3 if time_varying else 2
    return np.broadcast_shapes(
        tuple(log_init.shape[:-1]), tuple(log_trans.shape[:-event]), tuple(log_emit.shape[:-2])
    )


def _transitions(log_trans, batch_shape, time_varying: bool) -> np.ndarray:
    """``log_trans`` as a ``(1 or B, 1 or T, K, K)`` float64 array of log probabilities."""
    trans = _as_batch_array(log_trans, batch_shape, 3 if time_varying else 2)
    return trans if time_varying else trans[:, None]


def _result_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _forward(log_init, log_trans, log_emit, time_varying: bool, keep: tuple[str, ...]):
    """Run :func:`forward_filter`; return what the callers below assemble results from.

    ``keep`` names the ``(B, T, K)`` outputs to write (``"filtered"``, ``"predicted"``);
    the others come back as empty arrays.
    """
    batch_shape = batch_shape_of(log_init, log_trans, log_emit, time_varying)
    emit, peak = scaled_emissions(_as_batch_array(log_emit, batch_shape, 2))
    num_steps, num_states = emit.shape[1:]
    size = (math.prod(batch_shape), num_steps, num_states)
    trans = np.exp(_transitions(log_trans, batch_shape, time_varying))
    init = np.exp(_as_batch_array(log_init, batch_shape, 1))
    filtered = np.empty(size if "filtered" in keep else (0, 0, 0))
    predicted = np.empty(size if "predicted" in keep else (0, 0, 0))
    norms = np.empty(size[:2])
    forward_filter(init, trans, emit, filtered, predicted, norms)
    with np.errstate(divide="ignore"):  # a zero-likelihood day: log 0 = -inf
        increments = np.log(norms, out=norms) + peak  # peak (1 or B, T) broadcasts
    return batch_shape, trans, emit, filtered, predicted, increments


class _LogEvidence(torch.autograd.Function):
    r""":math:`\log p(y_{1:T})` by the compiled recursions, with its exact gradient.

    The forward pass runs the filter and the smoother (with pairwise marginals); the
    backward pass is then one multiplication, because the log evidence is the log of a
    sum over paths of :math:`\exp(\log p(z_1) + \sum_t \log P^{(t)}_{z_{t-1} z_t} +
    \sum_t \log p(y_t \mid z_t))`:

    .. math::

        \frac{\partial \log p(y_{1:T})}{\partial \log p(y_t \mid z_t = k)}
        = p(z_t = k \mid y_{1:T}), \qquad
        \frac{\partial \log p(y_{1:T})}{\partial \log p(z_1 = k)}
        = p(z_1 = k \mid y_{1:T}),

        \frac{\partial \log p(y_{1:T})}{\partial \log P_{ij}}
        = \sum_{t \ge 2} p(z_{t-1} = i, z_t = j \mid y_{1:T})

    (one term per step for time-varying transitions).
    """

    @staticmethod
    def forward(ctx, log_init, log_trans, log_emit, time_varying):
        dtype = _result_dtype(log_init, log_trans, log_emit)
        batch_shape, trans, emit, filtered, _, increments = _forward(
            log_init, log_trans, log_emit, time_varying, keep=("filtered",)
        )
        n_seq, num_steps, num_states = filtered.shape
        smoothed = np.empty_like(filtered)
        pairs = np.empty((n_seq, num_steps if time_varying else 1, num_states, num_states))
        backward_smooth(trans, filtered, emit, smoothed, pairs)
        pair_event = pairs.shape[1:] if time_varying else pairs.shape[2:]
        ctx.save_for_backward(
            torch.from_numpy(smoothed).reshape(batch_shape + tuple(smoothed.shape[1:])),
            torch.from_numpy(pairs).reshape(batch_shape + tuple(pair_event)),
        )
        ctx.inputs = [(x.shape, x.dtype) for x in (log_init, log_trans, log_emit)]
        return torch.from_numpy(increments.sum(-1)).reshape(batch_shape).to(dtype)

    @staticmethod
    def backward(ctx, grad):
        smoothed, pairs = ctx.saved_tensors
        grad = grad.to(torch.float64)
        terms = (smoothed[..., 0, :], pairs, smoothed)  # init, trans, emit
        grads = []
        for needed, term, (shape, dtype) in zip(ctx.needs_input_grad, terms, ctx.inputs):
            if not needed:
                grads.append(None)
                continue
            scaled = grad.reshape(grad.shape + (1,) * (term.dim() - grad.dim())) * term
            grads.append(scaled.sum_to_size(shape).to(dtype))
        return (*grads, None)


def sequential_log_evidence(log_init, log_trans, log_emit, time_varying: bool = False):
    r""":math:`\log p(y_{1:T})` by the compiled forward recursion.

    Arguments and result as :func:`bayes_moe.kernels.hmm.hmm_log_evidence`. When grad
    mode is on and an input requires grad, the smoother runs too and the result
    carries the exact gradient (:class:`_LogEvidence`); otherwise only the filter runs.
    """
    tensors = (log_init, log_trans, log_emit)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _LogEvidence.apply(log_init, log_trans, log_emit, time_varying)
    dtype = _result_dtype(*tensors)
    batch_shape, *_, increments = _forward(log_init, log_trans, log_emit, time_varying, keep=())
    return torch.from_numpy(increments.sum(-1)).reshape(batch_shape).to(dtype)


def sequential_filter(log_init, log_trans, log_emit, time_varying: bool = False, *, smooth: bool):
    r"""Filter, and with ``smooth=True`` smoother, by the compiled recursions.

    Arguments as :func:`bayes_moe.kernels.hmm.hmm_filter`; returns the tensors
    ``(log_filtered, log_predicted, log_evidence_increments, log_evidence)`` and, with
    ``smooth=True``, ``log_smoothed`` after them, in the arguments' promoted dtype,
    without gradient (the evidence summed in float64).
    """
    dtype = _result_dtype(log_init, log_trans, log_emit)
    batch_shape, trans, emit, filtered, predicted, increments = _forward(
        log_init, log_trans, log_emit, time_varying, keep=("filtered", "predicted")
    )
    smoothed = None
    if smooth:
        smoothed = np.empty_like(filtered)
        backward_smooth(trans, filtered, emit, smoothed, np.empty((0, 0, 0, 0)))

    def as_tensor(array: np.ndarray | None, log: bool = True) -> torch.Tensor | None:
        if array is None:
            return None
        if log:
            with np.errstate(divide="ignore"):  # probability 0: -inf
                np.log(array, out=array)
        return torch.from_numpy(array).reshape(batch_shape + tuple(array.shape[1:])).to(dtype)

    result = (
        as_tensor(filtered),
        as_tensor(predicted),
        as_tensor(increments, log=False),
        torch.from_numpy(increments.sum(-1)).reshape(batch_shape).to(dtype),
    )
    return result + (as_tensor(smoothed),) if smooth else result


def sequential_viterbi(log_init, log_trans, log_emit, time_varying: bool = False):
    r"""Viterbi path ``(..., T)`` int64 and its log joint ``(...)``, compiled recursion.

    Arguments as :func:`bayes_moe.kernels.hmm.hmm_viterbi`; ``log_max`` carries no
    gradient.
    """
    dtype = _result_dtype(log_init, log_trans, log_emit)
    batch_shape = batch_shape_of(log_init, log_trans, log_emit, time_varying)
    emit = _as_batch_array(log_emit, batch_shape, 2)
    num_steps, num_states = emit.shape[1:]
    n_seq = math.prod(batch_shape)
    path = np.empty((n_seq, num_steps), dtype=np.int64)
    log_max = np.empty(n_seq)
    lattice = np.empty((num_steps, num_states))
    viterbi_path(
        _as_batch_array(log_init, batch_shape, 1),
        _transitions(log_trans, batch_shape, time_varying),
        emit,
        path,
        log_max,
        lattice,
    )
    return (
        torch.from_numpy(path).reshape(batch_shape + (num_steps,)),
        torch.from_numpy(log_max).reshape(batch_shape).to(dtype),
    )
