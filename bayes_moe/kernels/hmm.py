r"""Hidden Markov model kernels: a parallel scan for gradients, compiled loops otherwise.

Pure functions for a discrete latent regime :math:`z_t \in \{1, \dots, K\}` with a
time-homogeneous Markov prior and arbitrary emission log-likelihoods: the log evidence,
the filter, the forward-backward smoother, the Viterbi path, multi-step propagation and
the stationary distribution. No function loops over time in Python. Each of the four
kernels has two routes, chosen by its ``method`` keyword (:func:`choose_method`):

* ``"parallel"``: the forward and backward recursions as prefix products of
  :math:`K \times K` matrices under an associative operator, computed with
  :func:`bayes_moe.kernels.scan.associative_scan` (or a pairwise tree reduction when
  only the total product is needed) in ``O(log T)`` sequential tensor operations
  (Särkkä & García-Fernández 2021); differentiable, on any device.
* ``"sequential"``: the textbook recursions compiled with numba and looped over the
  batch (:mod:`bayes_moe.kernels.hmm_sequential`): ``O(K^2)`` work per step instead
  of ``O(K^3)``, CPU only. Of its results only the log evidence carries a gradient
  (exact, from the smoothed and pairwise marginals).
* ``"auto"`` (the default) takes the sequential route on the CPU unless a gradient is
  asked of the filter or the smoother, and the parallel one otherwise and on a GPU: so
  on the CPU SVI and regime inspection both run the recursion. On the 2-core CPU this
  was written on the sequential route is 10-100 times faster (``benchmarks/kernels.py``).

The two routes agree to rounding (tests run every oracle against both); they differ
only below the smallest normal float64: the sequential route returns a probability
under about 1e-308 as zero (``-inf``), the log-space scan its logarithm.

Conventions
-----------
=============================  ==================  =========================================
argument / result              shape               meaning
=============================  ==================  =========================================
``log_init``                   ``(..., K)``        :math:`\log p(z_1 = k)`, the prior of the
                                                   *first* step's state, before its emission
``log_trans``                  ``(..., K, K)``     ``[..., i, j]`` is
                                                   :math:`\log p(z_t = j \mid z_{t-1} = i)`
                                                   (rows sum to one in probability space)
``log_trans`` (time-varying)   ``(..., T, K, K)``  with ``time_varying=True``: entry ``t``
                                                   is the transition *into* step ``t``
                                                   (an input-output HMM); entry 0 is
                                                   not used. Without the flag, a
                                                   ``(T - 1 or T, K, K)`` tensor and one
                                                   emission sequence is an error, not
                                                   ``T`` chains
``log_emit``                   ``(..., T, K)``     :math:`\log p(y_t \mid z_t = k)`, computed
                                                   by the caller (any emission model)
``log_filtered``               ``(..., T, K)``     :math:`\log p(z_t = k \mid y_{1:t})`
``log_predicted``              ``(..., T, K)``     :math:`\log p(z_t = k \mid y_{1:t-1})`;
                                                   ``log_init`` at :math:`t = 1`
``log_evidence_increments``    ``(..., T)``        :math:`\log p(y_t \mid y_{1:t-1})`
``log_evidence``               ``(...)``           :math:`\log p(y_{1:T})`
``log_smoothed``               ``(..., T, K)``     :math:`\log p(z_t = k \mid y_{1:T})`
``path``                       ``(..., T)`` int64  most probable regime path, values ``0..K-1``
=============================  ==================  =========================================

``K`` is the number of regimes, ``T`` the number of time steps and ``...`` any leading
batch dimensions (posterior draws, assets), which broadcast between the arguments with
the usual torch rules. In the parallel route everything is in log space and every
scan element is rescaled to a largest entry of zero, and the sequential route rescales
its messages at every step, so ``T = 100,000`` does not underflow in any floating
dtype (the parallel route in float32 still carries its ~1e-7 relative error on a log
evidence of order ``T``; the sequential route computes in float64 and returns the
input's dtype). Through the parallel route every function except the discrete Viterbi
path is differentiable with autograd; through the sequential one the log evidence and
the Viterbi ``log_max``. Structural zeros (``-inf`` entries of ``log_trans``) are
allowed in both routes and give finite gradients.

Time runs on dimension ``-2`` of ``log_emit`` (batch-major, as in Pyro's
``DiscreteHMM``); the scans move it to dimension 0 internally, as
:func:`~bayes_moe.kernels.scan.associative_scan` requires.

References
----------
L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
recognition", Proceedings of the IEEE 77(2), 257-286, 1989.

S. Särkkä and Á. F. García-Fernández, "Temporal parallelization of Bayesian smoothers",
IEEE Transactions on Automatic Control 66(1), 299-306, 2021.

S. S. Hassan, S. Särkkä and Á. F. García-Fernández, "Temporal parallelization of
inference in hidden Markov models", IEEE Transactions on Signal Processing 69,
4875-4887, 2021; the ``hmm_filter`` / ``hmm_smoother`` / ``hmm_posterior_mode`` functions
of dynamax (``dynamax.hidden_markov_model.inference``) are the software precedent.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from bayes_moe.kernels.dispatch import KERNEL_METHODS, choose_method
from bayes_moe.kernels.hmm_sequential import (
    batch_shape_of,
    sequential_filter,
    sequential_log_evidence,
    sequential_viterbi,
)
from bayes_moe.kernels.scan import associative_scan

__all__ = [
    "HMMFilterResult",
    "HMMSmootherResult",
    "HMMViterbiResult",
    "HMM_METHODS",
    "STATIONARY_RESTART",
    "choose_method",
    "hmm_filter",
    "hmm_log_evidence",
    "hmm_propagate",
    "hmm_smoother",
    "hmm_viterbi",
    "log_matmul_exp",
    "stationary_distribution",
]


class HMMFilterResult(NamedTuple):
    r"""Output of :func:`hmm_filter` (shapes in the module's convention table).

    Attributes
    ----------
    log_filtered : Tensor
        ``(..., T, K)``, :math:`\log p(z_t = k \mid y_{1:t})`, normalized over ``k``.
    log_predicted : Tensor
        ``(..., T, K)``, :math:`\log p(z_t = k \mid y_{1:t-1})`; ``log_init`` at ``t = 1``.
    log_evidence_increments : Tensor
        ``(..., T)``, :math:`\log p(y_t \mid y_{1:t-1})`.
    log_evidence : Tensor
        ``(...)``, :math:`\log p(y_{1:T})`, the sum of the increments.
    """

    log_filtered: torch.Tensor
    log_predicted: torch.Tensor
    log_evidence_increments: torch.Tensor
    log_evidence: torch.Tensor


class HMMSmootherResult(NamedTuple):
    r"""Output of :func:`hmm_smoother`: the :class:`HMMFilterResult` fields plus one.

    Attributes
    ----------
    log_filtered, log_predicted, log_evidence_increments, log_evidence : Tensor
        As in :class:`HMMFilterResult`.
    log_smoothed : Tensor
        ``(..., T, K)``, :math:`\log p(z_t = k \mid y_{1:T})`, normalized over ``k``.
    """

    log_filtered: torch.Tensor
    log_predicted: torch.Tensor
    log_evidence_increments: torch.Tensor
    log_evidence: torch.Tensor
    log_smoothed: torch.Tensor


class HMMViterbiResult(NamedTuple):
    r"""Output of :func:`hmm_viterbi`; unpacks as ``path, log_max = hmm_viterbi(...)``.

    Attributes
    ----------
    path : Tensor
        ``(..., T)`` int64, the most probable regime path :math:`\hat z_{1:T}`.
    log_max : Tensor
        ``(...)``, :math:`\log p(\hat z_{1:T}, y_{1:T}) = \max_{z} \log p(z, y_{1:T})`.
    """

    path: torch.Tensor
    log_max: torch.Tensor


# --------------------------------------------------------------------------------------
# Semiring helpers
# --------------------------------------------------------------------------------------


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    """Replace non-finite entries (an all ``-inf`` slice's max) by zero."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _log_tiny(dtype: torch.dtype) -> float:
    """Log of the smallest positive normal number of a floating dtype."""
    return math.log(torch.finfo(dtype).tiny)


def _logsumexp(x: torch.Tensor, dim: int | tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """``torch.logsumexp`` whose gradient stays finite when a slice is all ``-inf``.

    ``torch.logsumexp`` returns ``-inf`` for such a slice but back-propagates ``nan``
    (``exp(-inf - (-inf))``), which would poison every gradient of a model with a
    structural zero in its transition matrix. Here the empty slice gets ``-inf`` and a
    zero gradient.
    """
    shift = _finite_or_zero(x.detach().amax(dim=dim, keepdim=True))
    shifted = x - shift
    # Terms below the smallest normal number change a sum whose largest term is one by
    # less than K * tiny, but exp() of them takes a slow path (subnormal results,
    # underflow) that made long, confidently-switching series several times slower.
    shifted = shifted.masked_fill(shifted < _log_tiny(x.dtype), -torch.inf)
    total = shifted.exp().sum(dim=dim, keepdim=True)
    positive = total > 0
    safe_total = torch.where(positive, total, torch.ones_like(total))
    out = torch.where(positive, safe_total.log(), torch.full_like(total, -torch.inf)) + shift
    if not keepdim:
        dims = (dim,) if isinstance(dim, int) else dim
        out = out.squeeze(dims)
    return out


def _normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Subtract the log normalizer over ``dim``: ``x - logsumexp(x, dim)``."""
    return x - _logsumexp(x, dim, keepdim=True)


def log_matmul_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Matrix product in the log semiring, :math:`\log(\exp(a) \exp(b))`.

    .. math::

        c_{ik} = \log \sum_j \exp(a_{ij} + b_{jk})

    computed as a log-sum-exp over ``j`` of the broadcast sum, so no entry underflows
    however far apart the magnitudes are (unlike shifting each factor and calling
    ``matmul``), and ``-inf`` entries are allowed. Costs ``O(I J K)`` memory per batch
    element, which is nothing for the regime counts of a Markov-switching model.

    Parameters
    ----------
    a : Tensor
        ``(..., I, J)`` log-matrix.
    b : Tensor
        ``(..., J, K)`` log-matrix; batch dimensions broadcast with ``a``'s.

    Returns
    -------
    Tensor
        ``(..., I, K)``.
    """
    return _logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)


def _log_matmul_max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Matrix product in the (max, +) semiring, :math:`c_{ik} = \max_j a_{ij} + b_{jk}`."""
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).amax(dim=-2)


def _matrix_shift(x: torch.Tensor) -> torch.Tensor:
    """Largest entry of each ``(..., K, K)`` matrix (detached, zero if all ``-inf``)."""
    return _finite_or_zero(x.detach().amax(dim=(-2, -1), keepdim=True))


def _combine_sum_product(
    a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Associative operator of the forward/backward scans: a normalized log-matmul.

    Subtracting each product's largest entry keeps the entries near zero however long
    the stretch of time it spans, so no precision is lost to large magnitudes in
    float32. The dropped constant only rescales the product, so the operator stays
    associative on the projective classes the filter and smoother need.
    """
    # Elements carry their largest entry at zero, so exp() of them lies in [0, 1] and
    # one batched matmul replaces the (..., K, K, K) log-sum-exp. Entries more than
    # ~700 nats (float64; ~87 in float32) below the largest underflow and are floored
    # at log(tiny): they are negligible next to the dominant path by that very margin.
    tiny = torch.finfo(a[0].dtype).tiny
    product = (a[0].exp() @ b[0].exp()).clamp_min(tiny).log()
    return (product - _matrix_shift(product),)


def _combine_max_product(
    a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Associative operator of the Viterbi forward scan: a normalized (max, +) matmul."""
    product = _log_matmul_max(a[0], b[0])
    return (product - _matrix_shift(product),)


def _compose_maps(
    a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Compose back-pointer maps: ``(a o b)[k] = a[b[k]]`` (``a`` is earlier in time)."""
    return (torch.gather(a[0], -1, b[0]),)


# --------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------


def _check_shapes(
    log_init: torch.Tensor,
    log_trans: torch.Tensor,
    log_emit: torch.Tensor,
    time_varying: bool = False,
) -> tuple[tuple[int, ...], int, int]:
    """Check the shapes of the three arguments; return ``(batch_shape, T, K)``."""
    if log_emit.dim() < 2:
        raise ValueError(f"log_emit must have shape (..., T, K), got {tuple(log_emit.shape)}")
    num_steps, num_states = log_emit.shape[-2:]
    if num_steps == 0:
        raise ValueError("log_emit has no time steps (T = 0)")
    if log_init.dim() < 1 or log_init.shape[-1] != num_states:
        raise ValueError(
            f"log_init must have shape (..., K) with K = {num_states}, got {tuple(log_init.shape)}"
        )
    event = (num_steps, num_states, num_states) if time_varying else (num_states, num_states)
    if log_trans.dim() < len(event) or log_trans.shape[-len(event) :] != event:
        expected = "(..., T, K, K)" if time_varying else "(..., K, K)"
        raise ValueError(
            f"log_trans must have shape {expected} with T = {num_steps}, K = {num_states}, "
            f"got {tuple(log_trans.shape)}"
        )
    _refuse_steps_as_batch(log_trans, log_emit, time_varying)
    try:
        batch_shape = batch_shape_of(log_init, log_trans, log_emit, time_varying)
    except ValueError as error:
        shapes = [tuple(t.shape) for t in (log_init, log_trans, log_emit)]
        raise ValueError(f"batch dimensions do not broadcast: {shapes}") from error
    return batch_shape, num_steps, num_states


def _refuse_steps_as_batch(
    log_trans: torch.Tensor, log_emit: torch.Tensor, time_varying: bool
) -> None:
    """ValueError for per-step transitions passed without ``time_varying=True``.

    A ``(T - 1, K, K)`` or ``(T, K, K)`` tensor with one emission sequence would
    otherwise broadcast as ``T - 1`` (or ``T``) separate chains and give as many log
    evidences. Refused when ``log_trans`` has a batch dimension of that length in
    front of its ``(K, K)`` that ``log_emit`` does not have; a genuine batch of chains
    of that size can be passed with ``log_emit`` expanded to it.
    """
    if time_varying or log_trans.dim() < 3:
        return
    num_steps = log_emit.shape[-2]
    steps = log_trans.shape[-3]
    emit_batch = log_emit.shape[-3] if log_emit.dim() >= 3 else 1
    if num_steps > 1 and steps in (num_steps - 1, num_steps) and emit_batch != steps:
        raise ValueError(
            f"log_trans has shape {tuple(log_trans.shape)}: {steps} matrices in front of "
            f"(K, K) with one emission sequence of T = {num_steps} steps. For transitions "
            "that vary over time pass time_varying=True and shape (..., T, K, K) (entry t "
            "leads into step t); for a batch of chains give log_emit the same batch "
            "dimension"
        )


def _broadcast(
    log_init: torch.Tensor,
    log_trans: torch.Tensor,
    log_emit: torch.Tensor,
    time_varying: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and broadcast the batch dimensions of the three arguments.

    Returns ``log_init (..., K)``, the per-step transitions ``(..., T - 1, K, K)``
    (entry ``t - 1`` leads into step ``t``, homogeneous ones expanded without a copy)
    and ``log_emit (..., T, K)``.
    """
    batch, num_steps, num_states = _check_shapes(log_init, log_trans, log_emit, time_varying)
    batch_shape = torch.Size(batch)
    event = (num_steps, num_states, num_states) if time_varying else (num_states, num_states)
    steps = batch_shape + (num_steps - 1, num_states, num_states)
    if time_varying:
        step_trans = log_trans.expand(batch_shape + event)[..., 1:, :, :]
    else:
        step_trans = log_trans.expand(batch_shape + event).unsqueeze(-3).expand(steps)
    return (
        log_init.expand(batch_shape + (num_states,)),
        step_trans,
        log_emit.expand(batch_shape + (num_steps, num_states)),
    )


def _transition_elements(step_trans: torch.Tensor, log_emit: torch.Tensor) -> torch.Tensor:
    r"""Per-step log-matrices :math:`A_t[i, j] = \log P^{(t)}_{ij} + \log p(y_t \mid z_t = j)`.

    For ``t = 2..T``, shape ``(..., T - 1, K, K)``; ``step_trans`` as :func:`_broadcast`
    returns it.
    """
    return step_trans + log_emit[..., 1:, :].unsqueeze(-2)


def _forward_scan(
    log_init: torch.Tensor, step_trans: torch.Tensor, log_emit: torch.Tensor, combine
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Prefix products of the forward elements; returns ``(prefix row, A_{2:T})``.

    The first element :math:`A_1[i, j] = \log p(z_1 = j) + \log p(y_1 \mid z_1 = j)`
    has identical rows, so every prefix product has identical rows too: row 0 of the
    prefix ending at ``t`` is the forward message :math:`\alpha_t` up to a constant.
    """
    num_states = log_emit.shape[-1]
    alpha_1 = log_init + log_emit[..., 0, :]
    first = alpha_1.unsqueeze(-2).expand(alpha_1.shape[:-1] + (num_states, num_states))
    rest = _transition_elements(step_trans, log_emit)
    elems = torch.cat([first.unsqueeze(-3), rest], dim=-3)
    elems = (elems - _matrix_shift(elems)).movedim(-3, 0)  # projective: rows only matter
    (prefix,) = associative_scan(combine, (elems,))
    return prefix[..., 0, :].movedim(0, -2), rest


#: Values of the ``method`` keyword of the public kernels (:func:`choose_method`, from
#: :mod:`bayes_moe.kernels.dispatch`).
HMM_METHODS = KERNEL_METHODS


# --------------------------------------------------------------------------------------
# Public kernels
# --------------------------------------------------------------------------------------


def hmm_log_evidence(
    log_init: torch.Tensor,
    log_trans: torch.Tensor,
    log_emit: torch.Tensor,
    *,
    time_varying: bool = False,
    method: str = "auto",
) -> torch.Tensor:
    r"""Log marginal likelihood :math:`\log p(y_{1:T})` of a hidden Markov model.

    The forward algorithm written as one matrix product,

    .. math::

        p(y_{1:T}) = \alpha_1^\top A_2 A_3 \cdots A_T \mathbf{1}, \qquad
        \alpha_1(j) = p(z_1 = j)\, p(y_1 \mid z_1 = j), \qquad
        A_t[i, j] = P_{ij}\, p(y_t \mid z_t = j),

    evaluated by a pairwise tree reduction: ``ceil(log2 T)`` levels, each multiplying
    neighbouring matrices in one batched (linear-space) matmul. Every matrix starts as
    :math:`\exp` of its log entries minus their maximum, and after every level each
    product is divided by its largest entry, the log of which is carried in a separate
    scale: entries stay in [0, 1] with the largest equal to one, so only terms below
    ``tiny`` relative to the dominant path can underflow, and those do not change the
    result.
    This is the cheapest kernel here (no prefixes are kept), for use in every SVI step.
    Its gradient with respect to ``log_emit[..., t, k]`` is the smoothed probability
    :math:`p(z_t = k \mid y_{1:T})`.

    Parameters
    ----------
    log_init : Tensor
        ``(..., K)``, :math:`\log p(z_1)`.
    log_trans : Tensor
        ``(..., K, K)``, :math:`\log p(z_t = j \mid z_{t-1} = i)` at ``[..., i, j]``;
        ``(..., T, K, K)`` with ``time_varying=True``.
    log_emit : Tensor
        ``(..., T, K)``, :math:`\log p(y_t \mid z_t = k)`.
    time_varying : bool
        ``log_trans`` has a time axis (module docstring).
    method : {"auto", "parallel", "sequential"}
        Route: the parallel scan or the compiled sequential recursion
        (:func:`choose_method`; ``"auto"`` picks the faster one that can give what
        is asked, gradients included).

    Returns
    -------
    Tensor
        ``(...)``, the broadcast batch shape of the arguments.

    References
    ----------
    Rabiner (1989), eq. (19)-(21); Särkkä & García-Fernández (2021), Sec. IV.
    """
    route = choose_method(method, log_init, log_trans, log_emit, sequential_gradient=True)
    if route == "sequential":
        _check_shapes(log_init, log_trans, log_emit, time_varying)
        return sequential_log_evidence(log_init, log_trans, log_emit, time_varying)
    log_init, step_trans, log_emit = _broadcast(log_init, log_trans, log_emit, time_varying)
    alpha_1 = log_init + log_emit[..., 0, :]
    if log_emit.shape[-2] == 1:
        return _logsumexp(alpha_1, -1)
    mats = _transition_elements(step_trans, log_emit)  # (..., T - 1, K, K)
    shift = _matrix_shift(mats)
    # Each level multiplies in linear space (one batched matmul) and divides every
    # product by its largest entry, whose log is carried in ``scale``: entries stay in
    # [0, 1] with the largest equal to one, so nothing that matters can underflow.
    mats = (mats - shift).exp()
    scale = shift[..., 0, 0].sum(-1)  # (...)
    tiny = torch.finfo(mats.dtype).tiny
    while mats.shape[-3] > 1:
        length = mats.shape[-3]
        paired = mats[..., 0 : length - 1 : 2, :, :] @ mats[..., 1::2, :, :]
        peak = paired.detach().amax(dim=(-2, -1), keepdim=True).clamp_min(tiny)
        paired = paired / peak
        scale = scale + peak.log().sum(dim=(-3, -2, -1))
        if length % 2:
            paired = torch.cat([paired, mats[..., -1:, :, :]], dim=-3)
        mats = paired
    alpha_shift = _finite_or_zero(alpha_1.detach().amax(dim=-1, keepdim=True))
    weights = (alpha_1 - alpha_shift).exp().unsqueeze(-1)  # (..., K, 1)
    total = (weights * mats[..., 0, :, :]).sum(dim=(-2, -1))
    return total.log() + alpha_shift[..., 0] + scale


def hmm_filter(
    log_init: torch.Tensor,
    log_trans: torch.Tensor,
    log_emit: torch.Tensor,
    *,
    time_varying: bool = False,
    method: str = "auto",
) -> HMMFilterResult:
    r"""Forward filter of a hidden Markov model, parallel over time.

    The filtered, predicted and evidence terms of the forward recursion

    .. math::

        p(z_t \mid y_{1:t-1}) = \sum_i p(z_{t-1} = i \mid y_{1:t-1})\, P_{i z_t},
        \qquad
        p(y_t \mid y_{1:t-1}) = \sum_k p(z_t = k \mid y_{1:t-1})\, p(y_t \mid z_t = k),

        p(z_t \mid y_{1:t}) =
        \frac{p(z_t \mid y_{1:t-1})\, p(y_t \mid z_t)}{p(y_t \mid y_{1:t-1})}.

    The unnormalized forward messages :math:`\alpha_t = \alpha_1^\top A_2 \cdots A_t`
    (see :func:`hmm_log_evidence`) are the prefix products of the per-step matrices and
    come from one inclusive associative scan; the filtered distributions are their
    normalized rows. The predicted distributions and the evidence increments follow
    from them in one batched step, so the increments are exact in every dtype.

    Parameters
    ----------
    log_init : Tensor
        ``(..., K)``, :math:`\log p(z_1)`.
    log_trans : Tensor
        ``(..., K, K)``, :math:`\log p(z_t = j \mid z_{t-1} = i)` at ``[..., i, j]``;
        ``(..., T, K, K)`` with ``time_varying=True``.
    log_emit : Tensor
        ``(..., T, K)``, :math:`\log p(y_t \mid z_t = k)`.
    time_varying : bool
        ``log_trans`` has a time axis (module docstring).
    method : {"auto", "parallel", "sequential"}
        Route: the parallel scan or the compiled sequential recursion
        (:func:`choose_method`; ``"auto"`` picks the faster one that can give what
        is asked, gradients included).

    Returns
    -------
    HMMFilterResult
        ``log_filtered (..., T, K)``, ``log_predicted (..., T, K)``,
        ``log_evidence_increments (..., T)``, ``log_evidence (...)``.

    References
    ----------
    Rabiner (1989), Sec. III-A and V-A (scaling); Särkkä & García-Fernández (2021);
    Hassan, Särkkä & García-Fernández (2021), Sec. III.
    """
    route = choose_method(method, log_init, log_trans, log_emit)
    if route == "sequential":
        _check_shapes(log_init, log_trans, log_emit, time_varying)
        return HMMFilterResult(
            *sequential_filter(log_init, log_trans, log_emit, time_varying, smooth=False)
        )
    log_init, step_trans, log_emit = _broadcast(log_init, log_trans, log_emit, time_varying)
    log_alpha, _ = _forward_scan(log_init, step_trans, log_emit, _combine_sum_product)
    return _filter_from_alpha(log_alpha, log_init, step_trans, log_emit)


def _filter_from_alpha(
    log_alpha: torch.Tensor,
    log_init: torch.Tensor,
    step_trans: torch.Tensor,
    log_emit: torch.Tensor,
) -> HMMFilterResult:
    """Compute the filtered, predicted and evidence terms from unnormalized messages."""
    log_filtered = _normalize(log_alpha)
    ahead = log_matmul_exp(log_filtered[..., :-1, :].unsqueeze(-2), step_trans).squeeze(-2)
    log_predicted = torch.cat([log_init.unsqueeze(-2), ahead], dim=-2)
    increments = _logsumexp(log_predicted + log_emit, -1)
    return HMMFilterResult(log_filtered, log_predicted, increments, increments.sum(-1))


def hmm_smoother(
    log_init: torch.Tensor,
    log_trans: torch.Tensor,
    log_emit: torch.Tensor,
    *,
    time_varying: bool = False,
    method: str = "auto",
) -> HMMSmootherResult:
    r"""Forward-backward smoother of a hidden Markov model, parallel over time.

    .. math::

        \beta_T(i) = 1, \qquad
        \beta_t(i) = \sum_j P_{ij}\, p(y_{t+1} \mid z_{t+1} = j)\, \beta_{t+1}(j)
        = \big(A_{t+1} A_{t+2} \cdots A_T \mathbf{1}\big)_i,

        p(z_t = k \mid y_{1:T}) \propto p(z_t = k \mid y_{1:t})\, \beta_t(k).

    The backward messages :math:`\beta_t = p(y_{t+1:T} \mid z_t)` (up to a constant
    per ``t``) are suffix products of the same matrices as the filter's, computed with
    a reverse associative scan.

    Parameters
    ----------
    log_init : Tensor
        ``(..., K)``, :math:`\log p(z_1)`.
    log_trans : Tensor
        ``(..., K, K)``, :math:`\log p(z_t = j \mid z_{t-1} = i)` at ``[..., i, j]``;
        ``(..., T, K, K)`` with ``time_varying=True``.
    log_emit : Tensor
        ``(..., T, K)``, :math:`\log p(y_t \mid z_t = k)`.
    time_varying : bool
        ``log_trans`` has a time axis (module docstring).
    method : {"auto", "parallel", "sequential"}
        Route: the parallel scan or the compiled sequential recursion
        (:func:`choose_method`; ``"auto"`` picks the faster one that can give what
        is asked, gradients included).

    Returns
    -------
    HMMSmootherResult
        The :func:`hmm_filter` fields plus ``log_smoothed (..., T, K)``.

    References
    ----------
    Rabiner (1989), eq. (24)-(27); Särkkä & García-Fernández (2021), Sec. IV.
    """
    route = choose_method(method, log_init, log_trans, log_emit)
    if route == "sequential":
        _check_shapes(log_init, log_trans, log_emit, time_varying)
        return HMMSmootherResult(
            *sequential_filter(log_init, log_trans, log_emit, time_varying, smooth=True)
        )
    log_init, step_trans, log_emit = _broadcast(log_init, log_trans, log_emit, time_varying)
    log_alpha, rest = _forward_scan(log_init, step_trans, log_emit, _combine_sum_product)
    filtered = _filter_from_alpha(log_alpha, log_init, step_trans, log_emit)
    log_beta = torch.zeros_like(log_alpha)
    if log_emit.shape[-2] > 1:
        # suffix[t] = A_{t+2} ... A_T (0-based t = 0..T-2), so beta_t is its row sum.
        rest = rest - _matrix_shift(rest)
        (suffix,) = associative_scan(_combine_sum_product, (rest.movedim(-3, 0),), reverse=True)
        log_beta_head = _logsumexp(suffix, -1).movedim(0, -2)
        log_beta = torch.cat([log_beta_head, log_beta[..., -1:, :]], dim=-2)
    log_smoothed = _normalize(filtered.log_filtered + log_beta)
    return HMMSmootherResult(*filtered, log_smoothed)


def hmm_viterbi(
    log_init: torch.Tensor,
    log_trans: torch.Tensor,
    log_emit: torch.Tensor,
    *,
    time_varying: bool = False,
    method: str = "auto",
) -> HMMViterbiResult:
    r"""Most probable regime path (Viterbi), parallel over time in both passes.

    .. math::

        \delta_1(j) = \log p(z_1 = j) + \log p(y_1 \mid z_1 = j), \qquad
        \delta_t(k) = \max_j \big[\delta_{t-1}(j) + \log P_{jk}\big]
                      + \log p(y_t \mid z_t = k),

        \psi_t(k) = \operatorname{arg\,max}_j \big[\delta_{t-1}(j) + \log P_{jk}\big],
        \qquad \hat z_T = \operatorname{arg\,max}_k \delta_T(k), \qquad
        \hat z_{t-1} = \psi_t(\hat z_t).

    The forward pass is the filter's associative scan in the (max, +) semiring. The
    backtrace is also a scan: the back-pointers :math:`\psi_t` are computed for all
    ``t`` at once from the :math:`\delta_{t-1}`, and since composition of maps
    :math:`\{1..K\} \to \{1..K\}` (a ``gather``) is associative, a reverse scan gives
    :math:`\psi_{t+1} \circ \cdots \circ \psi_T` for every ``t``, which maps
    :math:`\hat z_T` to :math:`\hat z_t`. ``log_max`` is the log joint density of the
    returned path, evaluated directly (and differentiable in the parameters).

    Parameters
    ----------
    log_init : Tensor
        ``(..., K)``, :math:`\log p(z_1)`.
    log_trans : Tensor
        ``(..., K, K)``, :math:`\log p(z_t = j \mid z_{t-1} = i)` at ``[..., i, j]``;
        ``(..., T, K, K)`` with ``time_varying=True``.
    log_emit : Tensor
        ``(..., T, K)``, :math:`\log p(y_t \mid z_t = k)`.
    time_varying : bool
        ``log_trans`` has a time axis (module docstring).
    method : {"auto", "parallel", "sequential"}
        Route: the parallel scan or the compiled sequential recursion
        (:func:`choose_method`; ``"auto"`` picks the faster one that can give what
        is asked, gradients included).

    Returns
    -------
    HMMViterbiResult
        ``path (..., T)`` int64 with values in ``0..K-1``, and
        ``log_max (...)`` = :math:`\max_{z_{1:T}} \log p(z_{1:T}, y_{1:T})`.
        Ties are broken towards the lowest state index at each step.

    References
    ----------
    Rabiner (1989), Sec. III-B; Hassan, Särkkä & García-Fernández (2021), Sec. IV-C;
    ``hmm_posterior_mode`` in dynamax.
    """
    route = choose_method(method, log_init, log_trans, log_emit, sequential_gradient=True)
    if route == "sequential":
        _check_shapes(log_init, log_trans, log_emit, time_varying)
        path, log_max = sequential_viterbi(log_init, log_trans, log_emit, time_varying)
        if torch.is_grad_enabled() and any(
            t.requires_grad for t in (log_init, log_trans, log_emit)
        ):
            broadcast = _broadcast(log_init, log_trans, log_emit, time_varying)
            log_max = _path_log_joint(path, *broadcast)  # the same value, differentiable
        return HMMViterbiResult(path, log_max)
    log_init, step_trans, log_emit = _broadcast(log_init, log_trans, log_emit, time_varying)
    num_steps, num_states = log_emit.shape[-2:]
    with torch.no_grad():
        delta, _ = _forward_scan(log_init, step_trans, log_emit, _combine_max_product)
        last = delta[..., -1, :].argmax(-1)  # (...)
        if num_steps == 1:
            path = last.unsqueeze(-1)
        else:
            # scores[..., t, j, k] = delta_t(j) + log P_jk; back-pointers for z_{t+1} = k.
            scores = delta[..., :-1, :].unsqueeze(-1) + step_trans
            pointers = scores.argmax(-2).movedim(-2, 0)  # (T - 1, ..., K)
            (maps,) = associative_scan(_compose_maps, (pointers,), reverse=True)
            index = last.unsqueeze(-1).expand((num_steps - 1,) + last.shape + (1,))
            head = torch.gather(maps, -1, index)[..., 0].movedim(0, -1)  # (..., T - 1)
            path = torch.cat([head, last.unsqueeze(-1)], dim=-1)
    log_max = _path_log_joint(path, log_init, step_trans, log_emit)
    return HMMViterbiResult(path, log_max)


def _path_log_joint(
    path: torch.Tensor, log_init: torch.Tensor, step_trans: torch.Tensor, log_emit: torch.Tensor
) -> torch.Tensor:
    r""":math:`\log p(z_{1:T}, y_{1:T})` of a given path ``(..., T)``."""
    num_states = log_emit.shape[-1]
    total = torch.gather(log_init, -1, path[..., :1])[..., 0]
    total = total + torch.gather(log_emit, -1, path.unsqueeze(-1))[..., 0].sum(-1)
    if path.shape[-1] > 1:
        pair_index = (path[..., :-1] * num_states + path[..., 1:]).unsqueeze(-1)
        flat_trans = step_trans.flatten(-2)  # (..., T - 1, K * K)
        total = total + torch.gather(flat_trans, -1, pair_index)[..., 0].sum(-1)
    return total


def hmm_propagate(log_probs: torch.Tensor, log_trans: torch.Tensor, steps: int) -> torch.Tensor:
    r"""Propagate a regime distribution ``steps`` transitions ahead.

    .. math::

        p(z_{t+h} = k \mid \cdot) = \sum_i p(z_t = i \mid \cdot)\, (P^h)_{ik}

    with :math:`P^h` computed in log space by repeated squaring (``O(log h)`` log-matmuls).
    Used for ``h``-step-ahead regime forecasts from the last filtered distribution.

    Parameters
    ----------
    log_probs : Tensor
        ``(..., K)``, :math:`\log p(z_t \mid \cdot)`.
    log_trans : Tensor
        ``(..., K, K)``, :math:`\log p(z_t = j \mid z_{t-1} = i)` at ``[..., i, j]``;
        batch dimensions broadcast with ``log_probs``'.
    steps : int
        Number of transitions :math:`h \ge 0`; ``0`` returns ``log_probs``.

    Returns
    -------
    Tensor
        ``(..., K)``, :math:`\log p(z_{t+h} \mid \cdot)`.
    """
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    result = log_probs.unsqueeze(-2)
    power = log_trans
    while steps:
        if steps & 1:
            result = log_matmul_exp(result, power)
        steps >>= 1
        if steps:
            power = log_matmul_exp(power, power)
    return result.squeeze(-2)


#: Restart probability :math:`\delta` of :func:`stationary_distribution`: the chain is
#: read as restarting from the uniform distribution with this probability per step, which
#: makes every chain irreducible; the answer moves by about ``delta / gap`` for a chain
#: with spectral gap ``gap`` and satisfies :math:`\|\pi P - \pi\|_1 \le 2\delta`.
STATIONARY_RESTART = 1e-12


def causal_regime(
    log_init, log_filtered, step_trans, horizon: int, log_predicted=None
) -> torch.Tensor:
    r"""Regime probabilities at every origin from the information at its close.

    .. math::

        P(z_n \mid \mathcal F_n) = p(z_{n-h} \mid y_{1:n-h})\,
        \Pi_{n-h+1} \Pi_{n-h+2} \cdots \Pi_n,

    with :math:`\Pi_m` the transition into origin ``m``'s regime (known at the close
    of ``m``, so at ``n``); the first ``h`` origins start from the initial distribution.
    The products are taken in probability space (batched matrix products); a
    probability below the smallest normal float64 comes back as ``-inf``.

    Parameters
    ----------
    log_init : Tensor ``(S, K)``
    log_filtered : Tensor ``(S, N - h, K)``
        Filtered probabilities of the observed origins.
    step_trans : Tensor ``(S, N, K, K)``, or ``(S, 1, K, K)`` for the same matrix at
        every origin
    horizon : int
    log_predicted : Tensor ``(S, N - h, K)``, optional
        The filter's predicted probabilities :math:`p(z_n \mid y_{1:n-1})`. At
        ``horizon = 1`` they are the first ``N - 1`` rows of the result (the filter has
        already taken the products), so only the last row is computed.

    Returns
    -------
    Tensor ``(S, N, K)``
    """
    n_obs = log_filtered.shape[1]
    if horizon == 1 and log_predicted is not None:
        last = log_filtered[:, -1:].exp()
        into = step_trans[:, -1:].exp()  # the transition into the last origin
        ahead = (last.unsqueeze(-1) * into).sum(-2)  # (S, 1, K)
        return torch.cat([log_predicted, ahead.log()], dim=1)
    N = n_obs + horizon
    trans = step_trans.exp()
    homogeneous = trans.shape[1] == 1

    def step(probs, first):
        """``probs (S, n, K)`` one transition ahead, into origins ``first, first + 1, ...``."""
        if homogeneous:
            return probs @ trans[:, 0]
        into = trans[:, first : first + probs.shape[1]]
        return (probs.unsqueeze(-1) * into).sum(-2)

    early = [log_init.exp().unsqueeze(1)]
    for n in range(1, min(horizon, N)):
        early.append(step(early[-1], n))
    late = log_filtered.exp()
    for j in range(1, horizon + 1):
        late = step(late, j)
    return torch.cat(early + [late], dim=1).log()


def stationary_distribution(trans: torch.Tensor) -> torch.Tensor:
    r"""Stationary distribution :math:`\pi` of a row-stochastic matrix, for every chain.

    The stationary distribution of the chain that restarts from the uniform distribution
    :math:`u` with probability :math:`\delta` (:data:`STATIONARY_RESTART`, 1e-12) per step,

    .. math::

        P_\delta = (1 - \delta) P + \delta\, \mathbf{1} u^\top, \qquad
        \pi_\delta = \delta \sum_{n \ge 0} (1 - \delta)^n\, u P^n,

    computed by the Grassmann-Taksar-Heyman (GTH) state reduction, which uses only
    additions, multiplications and divisions of non-negative numbers and so is accurate
    entry by entry even for nearly reducible chains (no ``I - P`` is ever formed).

    * Irreducible :math:`P`: :math:`\pi_\delta` is the unique stationary distribution up
      to about :math:`\delta / \mathrm{gap}` (``gap`` the spectral gap of :math:`P`).
    * Reducible :math:`P` with several closed classes (the identity, a block-diagonal
      matrix, several absorbing states), where every mixture of the classes' stationary
      distributions is stationary: :math:`\pi_\delta` tends, as :math:`\delta \to 0`, to
      the Cesaro limit :math:`\lim_N \frac1N \sum_{n<N} u P^n` from the uniform start:
      each closed class gets the probability that the chain started uniformly ends in it
      (the identity gives :math:`u`).
    * Nearly reducible :math:`P` (leaving probabilities far below :math:`\delta`) is
      treated as reducible; with leaving probabilities far above :math:`\delta` the answer
      is the exact one.

    Always a probability vector with :math:`\|\pi P - \pi\|_1 \le 2\delta`, continuous and
    differentiable in the off-diagonal entries (gradients grow like :math:`1/\delta` only
    next to a reducible matrix). Only the off-diagonal entries are read: the diagonal is
    taken as one minus the row's other entries. Computed in float64 and returned in the
    input's dtype; use it as an initial distribution, ``log_init =
    stationary_distribution(log_trans.exp()).log()``.

    Parameters
    ----------
    trans : Tensor
        ``(..., K, K)`` transition probabilities, ``trans[..., i, j] = P(z_t = j | z_{t-1} = i)``.

    Returns
    -------
    Tensor
        ``(..., K)``, probabilities (not logs).

    References
    ----------
    W. K. Grassmann, M. I. Taksar and D. P. Heyman, "Regenerative analysis and steady
    state distributions for Markov chains", Operations Research 33(5), 1107-1116, 1985.

    J. R. Norris, *Markov Chains*, Cambridge University Press, 1997, Thm. 1.7.7 and 1.10.2.
    """
    num_states = trans.shape[-1]
    if trans.dim() < 2 or trans.shape[-2] != num_states:
        raise ValueError(f"trans must have shape (..., K, K), got {tuple(trans.shape)}")
    if num_states == 1:
        return torch.ones(trans.shape[:-1], dtype=trans.dtype, device=trans.device)
    delta = STATIONARY_RESTART
    restart = delta / ((1.0 - delta) * num_states)  # P_delta's off-diagonals / (1 - delta)
    rates = trans.to(torch.float64).clamp_min(0.0) + restart
    return _gth_stationary(rates).to(trans.dtype)


def _gth_stationary(rates: torch.Tensor) -> torch.Tensor:
    r"""GTH state reduction: stationary distribution of positive off-diagonal ``rates``.

    ``rates`` ``(..., K, K)``: off-diagonal entries positive (the diagonal is ignored);
    the result ``(..., K)`` is the stationary distribution of the chain whose
    transition probabilities are proportional to them (Grassmann, Taksar and Heyman 1985).
    States are removed from the last one down, censoring the chain on the rest; then the
    censored chains' stationary masses are built back up from the first state.
    """
    exits, columns = [], []
    reduced = rates
    for n in range(rates.shape[-1] - 1, 0, -1):
        exit_rate = reduced[..., n, :n].sum(-1)  # (...,): leaving state n for states < n
        into = reduced[..., :n, n]  # (..., n): entering state n from states < n
        exits.append(exit_rate)
        columns.append(into)
        reduced = reduced[..., :n, :n] + into.unsqueeze(-1) * (
            reduced[..., n, :n] / exit_rate.unsqueeze(-1)
        ).unsqueeze(-2)
    mass = torch.ones(rates.shape[:-2] + (1,), dtype=rates.dtype, device=rates.device)
    for exit_rate, into in zip(reversed(exits), reversed(columns), strict=True):
        mass = torch.cat([mass, ((mass * into).sum(-1) / exit_rate).unsqueeze(-1)], dim=-1)
    return mass / mass.sum(-1, keepdim=True)
