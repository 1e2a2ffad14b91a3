"""Parallel prefix scan over time for associative operators.

The forward algorithm of a hidden Markov model, the Kalman filter and the Viterbi
backtrace are all prefix "products" of per-time elements under an associative
operator. Computing them with :func:`associative_scan` takes ``O(log T)`` sequential
tensor operations instead of a Python loop over ``T`` steps.

Convention: every leaf tensor of ``elems`` holds time on dimension 0 (time-major);
any further dimensions are batch or event dimensions that ``combine`` understands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Elements = tuple[torch.Tensor, ...]


def associative_scan(
    combine: Callable[[Elements, Elements], Elements],
    elems: Sequence[torch.Tensor],
    *,
    reverse: bool = False,
) -> Elements:
    r"""Inclusive prefix scan of ``elems`` along dimension 0.

    .. math::

        s_t = e_1 \otimes e_2 \otimes \dots \otimes e_t
        \qquad (\text{reverse: } s_t = e_t \otimes \dots \otimes e_T)

    for an associative operator :math:`\otimes` given by ``combine``. The recursion
    pairs neighbours, scans the half-length sequence and fills in the rest
    (Blelloch 1990; the same scheme as ``jax.lax.associative_scan``): ``O(T)`` work,
    ``2 log2 T`` sequential steps, differentiable with autograd.

    Parameters
    ----------
    combine : callable
        ``combine(a, b)`` returns :math:`a \otimes b` where ``a`` holds elements that
        come *earlier* in time than ``b``. Both are tuples of tensors with a leading
        dimension of equal length; the result must have the same structure.
    elems : sequence of Tensor
        Leaves of shape ``(T, ...)``.
    reverse : bool
        Scan from the end: :math:`s_t = e_t \otimes \dots \otimes e_T`.

    Returns
    -------
    tuple of Tensor
        Leaves of shape ``(T, ...)`` holding :math:`s_t`.

    References
    ----------
    G. E. Blelloch, "Prefix sums and their applications", CMU-CS-90-190, 1990.
    """
    elems = tuple(elems)
    if not elems:
        raise ValueError("associative_scan needs at least one tensor")
    length = elems[0].shape[0]
    if any(leaf.shape[0] != length for leaf in elems):
        raise ValueError("all tensors passed to associative_scan need the same length on dim 0")
    if reverse:
        flipped = tuple(leaf.flip(0) for leaf in elems)
        result = _scan(lambda a, b: combine(b, a), flipped)
        return tuple(leaf.flip(0) for leaf in result)
    return _scan(combine, elems)


def linear_recurrence(
    decay: torch.Tensor, drive: torch.Tensor, initial: torch.Tensor
) -> torch.Tensor:
    r"""The first-order linear recurrence :math:`x_t = a_t x_{t-1} + b_t`, by a parallel scan.

    .. math::

        x_t = a_t x_{t-1} + b_t, \quad t = 1, \dots, T, \qquad
        (a, b) \otimes (a', b') = (a a',\ a' b + b'),

    the affine maps :math:`x \mapsto a x + b` composed by :func:`associative_scan`
    (earlier map first), started from :math:`x_0`. A GARCH variance recursion given its
    residuals is of this form (:func:`bayes_moe.kernels.garch.garch_variance`).
    Differentiable; no Python loop over time.

    Parameters
    ----------
    decay, drive : Tensor ``(T, ...)``
        :math:`a_t` and :math:`b_t`, time on dimension 0 (broadcastable to each other).
    initial : Tensor
        :math:`x_0`, broadcastable to ``decay.shape[1:]``.

    Returns
    -------
    Tensor ``(T, ...)``
        :math:`x_1, \dots, x_T`.
    """
    decay, drive = torch.broadcast_tensors(decay, drive)
    if decay.shape[0] == 0:
        return drive.clone()
    # Fold x_0 into the first map: x_1 = a_1 x_0 + b_1.
    first = decay[:1] * initial + drive[:1]
    drive = torch.cat([first, drive[1:]], dim=0)
    _, x = associative_scan(
        lambda early, late: (early[0] * late[0], late[0] * early[1] + late[1]), (decay, drive)
    )
    return x


def _scan(combine: Callable[[Elements, Elements], Elements], elems: Elements) -> Elements:
    length = elems[0].shape[0]
    if length < 2:
        return elems
    # Combine neighbouring pairs (e_0 e_1), (e_2 e_3), ... and scan the half sequence:
    # its entries are the prefixes ending at the odd positions 1, 3, 5, ...
    paired = combine(
        tuple(leaf[0:-1:2] for leaf in elems),
        tuple(leaf[1::2] for leaf in elems),
    )
    odd = _scan(combine, paired)
    # Prefixes at even positions 2, 4, ... are the previous odd prefix times e_even.
    n_even_rest = (length - 1) // 2
    even_rest = combine(
        tuple(leaf[:n_even_rest] for leaf in odd),
        tuple(leaf[2::2] for leaf in elems),
    )
    even = tuple(torch.cat([leaf[:1], rest], dim=0) for leaf, rest in zip(elems, even_rest))
    return tuple(_interleave(e, o, length) for e, o in zip(even, odd))


def _interleave(even: torch.Tensor, odd: torch.Tensor, length: int) -> torch.Tensor:
    """Merge ``even`` (positions 0, 2, ...) and ``odd`` (positions 1, 3, ...) on dim 0."""
    out = even.new_empty((length,) + even.shape[1:])
    out[0::2] = even
    out[1::2] = odd
    return out
