r"""Kalman filter for linear Gaussian state-space models, parallel over time.

The model, with the conventions of statsmodels' ``MLEModel`` (selection matrix = I):

.. math::

    x_t &= F x_{t-1} + c + w_t,   &\qquad w_t &\sim \mathcal N(0, Q)
        &\qquad& \text{(state, dim } k)\\
    y_t &= H x_t + d + v_t,       &\qquad v_t &\sim \mathcal N(0, R_t)
        &\qquad& \text{(observation, dim } p)\\
    x_1 &\sim \mathcal N(m_1, P_1)

:math:`m_1, P_1` are the *predicted* state at :math:`t = 1`, before :math:`y_1` is
seen (statsmodels' ``initialize_known``, the first column of its ``predicted_state``).

Shapes (the convention of this module, pointed to by every function below):

===============  ===========================  ==========================================
argument         shape                        meaning
===============  ===========================  ==========================================
``y``            ``(..., T, p)``              observations :math:`y_1, \dots, y_T`
``F``            ``(..., k, k)``              transition matrix
``c``            ``(..., k)``                 state intercept
``H``            ``(..., p, k)``              design (observation) matrix
``d``            ``(..., p)``                 observation intercept
``Q``            ``(..., k, k)``              state noise covariance
``R``            ``(..., p, p)`` or           observation noise covariance, constant or
                 ``(..., T, p, p)``           time-varying (known)
``init_mean``    ``(..., k)``                 :math:`m_1`
``init_cov``     ``(..., k, k)``              :math:`P_1`
===============  ===========================  ==========================================

=========  ==================================================================
dims       role
=========  ==================================================================
``...``    batch: posterior draws, independent series; broadcast between all
           arguments (numpy rules), absent dims are size 1
``T``      time: dim -2 of ``y`` and of every ``(..., T, ·)`` result, dim -3 of a
           time-varying ``R`` and of ``(..., T, ·, ·)`` results
``k, p``   event: state and observation dimension, rightmost
=========  ==================================================================

Any float dtype (arguments are promoted to a common one); everything the parallel
route returns is differentiable with autograd. Covariance arguments are symmetrized on
entry, so a gradient with respect to ``Q`` is that of :math:`(Q + Q^\top)/2`.
:math:`H Q H^\top + R_t` and :math:`H P_1 H^\top + R_1` must be positive definite.

:func:`kalman_filter` runs the filter as a parallel prefix scan
(:func:`~bayes_moe.kernels.scan.associative_scan`): ``O(log T)`` sequential tensor
operations; for a scalar state and observation on the CPU with no gradient asked for
it runs the compiled loop of :mod:`bayes_moe.kernels.kalman_sequential` instead
(its ``method`` keyword). :func:`reference_kalman_filter` is the textbook sequential loop with the
same signature and result, the oracle beside it.

References
----------
S. Särkkä and Á. F. García-Fernández, "Temporal parallelization of Bayesian
smoothers", IEEE Transactions on Automatic Control 66(1), 299-306, 2021.

J. Durbin and S. J. Koopman, *Time Series Analysis by State Space Methods*, 2nd ed.,
Oxford University Press, 2012, ch. 4.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from bayes_moe.kernels.dispatch import choose_method
from bayes_moe.kernels.kalman_sequential import scalar_filter_loop
from bayes_moe.kernels.scan import associative_scan

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "KalmanFilterResult",
    "aggregated_observation_forecast",
    "forecast_state",
    "kalman_filter",
    "reference_kalman_filter",
]


class KalmanFilterResult(NamedTuple):
    r"""Output of :func:`kalman_filter` and :func:`reference_kalman_filter`.

    Shapes follow the table in the module docstring.

    Attributes
    ----------
    filtered_mean : Tensor, shape ``(..., T, k)``
        :math:`E[x_t \mid y_{1:t}]`.
    filtered_cov : Tensor, shape ``(..., T, k, k)``
        :math:`\operatorname{Cov}[x_t \mid y_{1:t}]`.
    predicted_state_mean : Tensor, shape ``(..., T, k)``
        :math:`E[x_t \mid y_{1:t-1}]`; row ``t = 1`` is ``init_mean``.
    predicted_state_cov : Tensor, shape ``(..., T, k, k)``
        :math:`\operatorname{Cov}[x_t \mid y_{1:t-1}]`; row ``t = 1`` is ``init_cov``.
    predicted_obs_mean : Tensor, shape ``(..., T, p)``
        :math:`E[y_t \mid y_{1:t-1}]`.
    predicted_obs_cov : Tensor, shape ``(..., T, p, p)``
        :math:`\operatorname{Cov}[y_t \mid y_{1:t-1}]`.
    log_likelihood_terms : Tensor, shape ``(..., T)``
        :math:`\log \mathcal N(y_t; E[y_t \mid y_{1:t-1}],
        \operatorname{Cov}[y_t \mid y_{1:t-1}])`.
    log_likelihood : Tensor, shape ``(...)``
        :math:`\log p(y_{1:T})`, the sum of the terms.
    """

    filtered_mean: torch.Tensor
    filtered_cov: torch.Tensor
    predicted_state_mean: torch.Tensor
    predicted_state_cov: torch.Tensor
    predicted_obs_mean: torch.Tensor
    predicted_obs_cov: torch.Tensor
    log_likelihood_terms: torch.Tensor
    log_likelihood: torch.Tensor


# --------------------------------------------------------------------------------------
# small linear-algebra helpers (all act on the two rightmost dims and broadcast)


def _sym(a: torch.Tensor) -> torch.Tensor:
    r"""Symmetric part :math:`(A + A^\top) / 2`."""
    return 0.5 * (a + a.mT)


def _mv(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Matrix-vector product ``a @ v`` with broadcasting batch dims."""
    return (a @ v.unsqueeze(-1)).squeeze(-1)


def _quad(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    r"""Symmetric sandwich :math:`A M A^\top`."""
    return _sym(a @ m @ a.mT)


class _Model(NamedTuple):
    """Inputs after dtype promotion, symmetrization and batch broadcasting."""

    y: torch.Tensor  # (B, T, p)
    F: torch.Tensor  # (B, k, k)
    c: torch.Tensor  # (B, k)
    H: torch.Tensor  # (B, p, k)
    d: torch.Tensor  # (B, p)
    Q: torch.Tensor  # (B, k, k)
    R: torch.Tensor  # (B, T, p, p)  (time-varying or expanded along T)
    init_mean: torch.Tensor  # (B, k)
    init_cov: torch.Tensor  # (B, k, k)


def _prepare(y, F, c, H, d, Q, R, init_mean, init_cov, time_varying_obs_cov: bool | None) -> _Model:
    args = [torch.as_tensor(a) for a in (y, F, c, H, d, Q, R, init_mean, init_cov)]
    dtype = args[0].dtype
    for a in args[1:]:
        dtype = torch.promote_types(dtype, a.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    y, F, c, H, d, Q, R, init_mean, init_cov = (a.to(dtype) for a in args)

    if y.dim() < 2:
        raise ValueError(f"y must have shape (..., T, p), got {tuple(y.shape)}")
    T, p = y.shape[-2:]
    k = F.shape[-1]
    if time_varying_obs_cov is None:
        time_varying_obs_cov = R.dim() >= 3 and R.shape[-3] == T
    expected = {
        "F": (F, (k, k)),
        "c": (c, (k,)),
        "H": (H, (p, k)),
        "d": (d, (p,)),
        "Q": (Q, (k, k)),
        "R": (R, (T, p, p) if time_varying_obs_cov else (p, p)),
        "init_mean": (init_mean, (k,)),
        "init_cov": (init_cov, (k, k)),
    }
    for name, (a, tail) in expected.items():
        if a.dim() < len(tail) or tuple(a.shape[a.dim() - len(tail) :]) != tail:
            raise ValueError(
                f"{name} must end in shape {tail} (k={k}, p={p}, T={T}), got {tuple(a.shape)}"
            )
    batch = torch.broadcast_shapes(
        y.shape[:-2],
        F.shape[:-2],
        c.shape[:-1],
        H.shape[:-2],
        d.shape[:-1],
        Q.shape[:-2],
        R.shape[:-3] if time_varying_obs_cov else R.shape[:-2],
        init_mean.shape[:-1],
        init_cov.shape[:-2],
    )
    R = _sym(R)
    if not time_varying_obs_cov:
        R = R.unsqueeze(-3)
    return _Model(
        y=y.expand(batch + (T, p)),
        F=F.expand(batch + (k, k)),
        c=c.expand(batch + (k,)),
        H=H.expand(batch + (p, k)),
        d=d.expand(batch + (p,)),
        Q=_sym(Q).expand(batch + (k, k)),
        R=R.expand(batch + (T, p, p)),
        init_mean=init_mean.expand(batch + (k,)),
        init_cov=_sym(init_cov).expand(batch + (k, k)),
    )


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \mathcal N(x; \mu, \Sigma)` via the Cholesky factor of :math:`\Sigma`."""
    chol = torch.linalg.cholesky(cov)
    err = (x - mean).unsqueeze(-1)
    white = torch.linalg.solve_triangular(chol, err, upper=False).squeeze(-1)
    half_logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    p = x.shape[-1]
    return -0.5 * (white.square().sum(-1) + p * math.log(2 * math.pi)) - half_logdet


def _predictions(
    model: _Model, filtered_mean: torch.Tensor, filtered_cov: torch.Tensor
) -> KalmanFilterResult:
    """Everything else in :class:`KalmanFilterResult`, elementwise over time."""
    F, c, H, d = model.F, model.c, model.H, model.d
    Fu = F.unsqueeze(-3)
    pred_mean = torch.cat(
        [
            model.init_mean.unsqueeze(-2),
            _mv(Fu, filtered_mean[..., :-1, :]) + c.unsqueeze(-2),
        ],
        dim=-2,
    )
    pred_cov = torch.cat(
        [
            model.init_cov.unsqueeze(-3),
            _quad(Fu, filtered_cov[..., :-1, :, :]) + model.Q.unsqueeze(-3),
        ],
        dim=-3,
    )
    Hu = H.unsqueeze(-3)
    obs_mean = _mv(Hu, pred_mean) + d.unsqueeze(-2)
    obs_cov = _quad(Hu, pred_cov) + model.R
    terms = _gaussian_log_prob(model.y, obs_mean, obs_cov)
    return KalmanFilterResult(
        filtered_mean=filtered_mean,
        filtered_cov=filtered_cov,
        predicted_state_mean=pred_mean,
        predicted_state_cov=pred_cov,
        predicted_obs_mean=obs_mean,
        predicted_obs_cov=obs_cov,
        log_likelihood_terms=terms,
        log_likelihood=terms.sum(-1),
    )


# --------------------------------------------------------------------------------------
# parallel filter


def _filtering_elements(model: _Model) -> tuple[torch.Tensor, ...]:
    r"""Per-time elements :math:`(A_t, b_t, C_t, \eta_t, J_t)`.

    Shapes ``(..., T, k, k)``, ``(..., T, k)``, ``(..., T, k, k)``, ``(..., T, k)``,
    ``(..., T, k, k)``. See :func:`kalman_filter` for the formulas.
    """
    y, F, c, H, d, Q, R = model.y, model.F, model.c, model.H, model.d, model.Q, model.R
    k = F.shape[-1]
    eye = torch.eye(k, dtype=F.dtype, device=F.device)
    Fu, Hu, Qu = F.unsqueeze(-3), H.unsqueeze(-3), Q.unsqueeze(-3)  # broadcast over T
    cu, du = c.unsqueeze(-2), d.unsqueeze(-2)

    # t >= 2: condition x_t ~ N(F x_{t-1} + c, Q) on y_t.
    S = _quad(Hu, Qu) + R  # (B, T, p, p)
    chol = torch.linalg.cholesky(S)
    HQ = Hu @ Qu  # (B, 1, p, k)
    gain = torch.cholesky_solve(HQ.expand(S.shape[:-1] + (k,)), chol).mT  # Q H' S^-1
    resid = y - _mv(Hu, cu) - du  # (B, T, p)
    A = (eye - gain @ Hu) @ Fu
    b = cu + _mv(gain, resid)
    C = _sym(Qu - gain @ HQ)
    HF = Hu @ Fu
    S_inv_HF = torch.cholesky_solve(HF.expand(S.shape[:-1] + (k,)), chol)  # S^-1 H F
    eta = _mv(S_inv_HF.mT, resid)
    J = _sym(HF.mT @ S_inv_HF)

    # t = 1: condition the prior x_1 ~ N(m_1, P_1) on y_1; nothing flows in from t = 0.
    m1, P1 = model.init_mean, model.init_cov
    S1 = _quad(H, P1) + R[..., 0, :, :]
    chol1 = torch.linalg.cholesky(S1)
    HP1 = H @ P1
    gain1 = torch.cholesky_solve(HP1, chol1).mT
    b1 = m1 + _mv(gain1, y[..., 0, :] - _mv(H, m1) - d)
    C1 = _sym(P1 - gain1 @ HP1)

    A = torch.cat([torch.zeros_like(A[..., :1, :, :]), A[..., 1:, :, :]], dim=-3)
    b = torch.cat([b1.unsqueeze(-2), b[..., 1:, :]], dim=-2)
    C = torch.cat([C1.unsqueeze(-3), C[..., 1:, :, :]], dim=-3)
    eta = torch.cat([torch.zeros_like(eta[..., :1, :]), eta[..., 1:, :]], dim=-2)
    J = torch.cat([torch.zeros_like(J[..., :1, :, :]), J[..., 1:, :, :]], dim=-3)
    return A, b, C, eta, J


# The five element tensors travel through the scan packed side by side in one tensor
# of shape (T, ..., k, 3k + 2) = [A | C | J | b | eta]: one leaf keeps the scan's
# bookkeeping (slicing, concatenation, interleaving) to one tensor per step. (It also
# keeps clear of scan.py's multi-leaf path, which at the time of writing drops all but
# the first leaf: ``odd[:n_odd]`` there slices the tuple of leaves, not time.)


def _pack(A, b, C, eta, J) -> torch.Tensor:
    return torch.cat([A, C, J, b.unsqueeze(-1), eta.unsqueeze(-1)], dim=-1)


def _unpack(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    k = x.shape[-2]
    A, C, J = x[..., :k], x[..., k : 2 * k], x[..., 2 * k : 3 * k]
    return A, x[..., 3 * k], C, x[..., 3 * k + 1], J


def _combine_packed(
    earlier: tuple[torch.Tensor, ...], later: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    return (_pack(*_combine(_unpack(earlier[0]), _unpack(later[0]))),)


def _combine(
    earlier: tuple[torch.Tensor, ...], later: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Associative operator on filtering elements (Särkkä & García-Fernández 2021)."""
    A_i, b_i, C_i, eta_i, J_i = earlier
    A_j, b_j, C_j, eta_j, J_j = later
    k = A_i.shape[-1]
    eye = torch.eye(k, dtype=A_i.dtype, device=A_i.device)
    M = eye + C_i @ J_j  # I + C_i J_j; I + J_j C_i = M^T as C, J are symmetric
    if k == 1:
        A_j_Minv = A_j / M
        Minv_A_i = A_i / M
    else:
        A_j_Minv = torch.linalg.solve(M, A_j, left=False)  # A_j M^-1
        Minv_A_i = torch.linalg.solve(M, A_i)  # M^-1 A_i, so A_i^T M^-T = its transpose
    A = A_j_Minv @ A_i
    b = _mv(A_j_Minv, b_i + _mv(C_i, eta_j)) + b_j
    C = _sym(A_j_Minv @ C_i @ A_j.mT) + C_j
    eta = _mv(Minv_A_i.mT, eta_j - _mv(J_j, b_i)) + eta_i
    J = _sym(Minv_A_i.mT @ J_j @ A_i) + J_i
    return A, b, C, eta, J


def kalman_filter(
    y: torch.Tensor,
    F: torch.Tensor,
    c: torch.Tensor,
    H: torch.Tensor,
    d: torch.Tensor,
    Q: torch.Tensor,
    R: torch.Tensor,
    init_mean: torch.Tensor,
    init_cov: torch.Tensor,
    *,
    time_varying_obs_cov: bool | None = None,
    method: str = "auto",
) -> KalmanFilterResult:
    r"""Kalman filter by a parallel prefix scan over time, or a compiled loop.

    Each time step is an element :math:`a_t = (A_t, b_t, C_t, \eta_t, J_t)` that
    stands for :math:`p(x_t \mid x_{t-1}, y_t) = \mathcal N(x_t; A_t x_{t-1} + b_t,
    C_t)` and :math:`p(y_t \mid x_{t-1}) \propto \mathcal N_I(x_{t-1}; \eta_t, J_t)`
    (information form). With :math:`e_t = y_t - H c - d`, for :math:`t \ge 2`

    .. math::

        S_t &= H Q H^\top + R_t, \qquad K_t = Q H^\top S_t^{-1}, \\
        A_t &= (I - K_t H) F, \quad b_t = c + K_t e_t, \quad C_t = (I - K_t H) Q, \\
        \eta_t &= F^\top H^\top S_t^{-1} e_t, \quad J_t = F^\top H^\top S_t^{-1} H F,

    and at :math:`t = 1`, conditioning the prior on :math:`y_1`:
    :math:`S_1 = H P_1 H^\top + R_1`, :math:`K_1 = P_1 H^\top S_1^{-1}`,
    :math:`A_1 = 0`, :math:`b_1 = m_1 + K_1 (y_1 - H m_1 - d)`,
    :math:`C_1 = P_1 - K_1 S_1 K_1^\top`, :math:`\eta_1 = 0`, :math:`J_1 = 0`.
    The associative operator (:math:`a_i` earlier than :math:`a_j`,
    :math:`M = I + C_i J_j`) is

    .. math::

        A_{ij} &= A_j M^{-1} A_i, \qquad
        b_{ij} = A_j M^{-1} (b_i + C_i \eta_j) + b_j, \qquad
        C_{ij} = A_j M^{-1} C_i A_j^\top + C_j, \\
        \eta_{ij} &= A_i^\top M^{-\top} (\eta_j - J_j b_i) + \eta_i, \qquad
        J_{ij} = A_i^\top M^{-\top} J_j A_i + J_i,

    and the prefix :math:`a_1 \otimes \dots \otimes a_t` has :math:`b = E[x_t \mid
    y_{1:t}]`, :math:`C = \operatorname{Cov}[x_t \mid y_{1:t}]`. The one-step
    predictions and the log-likelihood then follow for all :math:`t` at once:

    .. math::

        m_{t|t-1} = F m_{t-1|t-1} + c, \quad P_{t|t-1} = F P_{t-1|t-1} F^\top + Q,
        \quad y_t \mid y_{1:t-1} \sim \mathcal N(H m_{t|t-1} + d,\;
        H P_{t|t-1} H^\top + R_t).

    Parameters
    ----------
    y, F, c, H, d, Q, R, init_mean, init_cov : Tensor
        The model, shapes as in the module docstring's table.
    time_varying_obs_cov : bool, optional
        Whether ``R`` has a time dim ``(..., T, p, p)``. By default it does when
        ``R.dim() >= 3 and R.shape[-3] == T``; pass it when a batch dim of ``R`` could
        equal ``T``.
    method : {"auto", "parallel", "sequential"}
        ``"parallel"``: the scan above, differentiable, any device. ``"sequential"``:
        the recursion compiled with numba (:mod:`bayes_moe.kernels.kalman_sequential`),
        for a scalar state and observation (``k = p = 1``) on the CPU, with no
        gradient; tens of times faster there. ``"auto"`` takes it where it can
        (:func:`~bayes_moe.kernels.dispatch.choose_method`: CPU, no gradient asked
        for, ``k = p = 1``), the scan otherwise.

    Returns
    -------
    KalmanFilterResult
        Filtered and predicted moments and the log-likelihood; shapes as documented
        on :class:`KalmanFilterResult`, ``...`` being the broadcast batch shape.

    References
    ----------
    S. Särkkä and Á. F. García-Fernández, "Temporal parallelization of Bayesian
    smoothers", IEEE TAC 66(1), 2021 (the parallel Kalman filter).
    """
    model = _prepare(y, F, c, H, d, Q, R, init_mean, init_cov, time_varying_obs_cov)
    scalar = model.F.shape[-1] == 1 and model.H.shape[-2] == 1
    if method == "sequential" and not scalar:
        raise ValueError(
            "method='sequential' runs a scalar state and observation (k = p = 1) only; "
            f"got k = {model.F.shape[-1]}, p = {model.H.shape[-2]}: use 'parallel' or 'auto'"
        )
    route = choose_method(method, *model) if scalar else "parallel"
    if route == "sequential":
        return _sequential_scalar_filter(model)
    if scalar:
        return _scalar_filter(model)
    return _matrix_filter(model)


def _sequential_scalar_filter(model: _Model) -> KalmanFilterResult:
    """The compiled loop of :mod:`~bayes_moe.kernels.kalman_sequential` on ``k = p = 1``."""
    dtype = model.y.dtype
    batch, T = model.y.shape[:-2], model.y.shape[-2]

    def flat(x: torch.Tensor, time: bool = False) -> np.ndarray:
        return x.reshape((-1, T) if time else (-1,)).detach().to(torch.float64).numpy()

    out = scalar_filter_loop(
        flat(model.y[..., 0], True),
        flat(model.F[..., 0, 0]),
        flat(model.c[..., 0]),
        flat(model.H[..., 0, 0]),
        flat(model.d[..., 0]),
        flat(model.Q[..., 0, 0]),
        flat(model.R[..., 0, 0], True),
        flat(model.init_mean[..., 0]),
        flat(model.init_cov[..., 0, 0]),
    )
    mean, cov, pred_mean, pred_cov, obs_mean, obs_var, terms = (
        torch.from_numpy(a).to(dtype).reshape(batch + (T,)) for a in out
    )
    return _scalar_result(mean, cov, pred_mean, pred_cov, obs_mean, obs_var, terms)


def _scalar_result(mean, cov, pred_mean, pred_cov, obs_mean, obs_var, terms) -> KalmanFilterResult:
    """The result of a ``k = p = 1`` filter from its ``(..., T)`` scalar sequences."""
    return KalmanFilterResult(
        filtered_mean=mean.unsqueeze(-1),
        filtered_cov=cov[..., None, None],
        predicted_state_mean=pred_mean.unsqueeze(-1),
        predicted_state_cov=pred_cov[..., None, None],
        predicted_obs_mean=obs_mean.unsqueeze(-1),
        predicted_obs_cov=obs_var[..., None, None],
        log_likelihood_terms=terms,
        log_likelihood=terms.sum(-1),
    )


def _matrix_filter(model: _Model) -> KalmanFilterResult:
    """The general parallel filter (any ``k``, ``p``)."""
    elems = _pack(*_filtering_elements(model)).movedim(-3, 0)  # time-major
    (prefix,) = associative_scan(_combine_packed, (elems,))
    _, b, C, _, _ = _unpack(prefix.movedim(0, -3))
    return _predictions(model, b, C)


def _combine_scalar(earlier, later):
    """:func:`_combine` for ``k = 1``: the same operator on scalars, elementwise."""
    A_i, b_i, C_i, eta_i, J_i = earlier
    A_j, b_j, C_j, eta_j, J_j = later
    M = 1.0 + C_i * J_j
    return (
        A_j * A_i / M,
        A_j * (b_i + C_i * eta_j) / M + b_j,
        A_j.square() * C_i / M + C_j,
        A_i * (eta_j - J_j * b_i) / M + eta_i,
        A_i.square() * J_j / M + J_i,
    )


def _scalar_filter(model: _Model) -> KalmanFilterResult:
    """The parallel filter for a scalar state and observation (``k = p = 1``).

    The same elements and operator as :func:`_filtering_elements` and
    :func:`_combine`, written with elementwise arithmetic on ``(..., T)`` tensors:
    no 1x1 matrix products or solves, several times faster for the common
    one-dimensional models.
    """
    y, R = model.y[..., 0], model.R[..., 0, 0]  # (B, T)
    F, c, H, d = model.F[..., 0, :], model.c, model.H[..., 0, :], model.d  # (B, 1)
    Q = model.Q[..., 0, :]  # (B, 1)
    m1, P1 = model.init_mean, model.init_cov[..., 0, :]  # (B, 1)
    # t >= 2
    S = H.square() * Q + R
    gain = Q * H / S
    resid = y - H * c - d
    A = (1.0 - gain * H) * F
    b = c + gain * resid
    C = (1.0 - gain * H) * Q
    eta = F * H * resid / S
    J = (F * H).square() / S
    # t = 1
    S1 = H.square() * P1 + R[..., :1]
    gain1 = P1 * H / S1
    b1 = m1 + gain1 * (y[..., :1] - H * m1 - d)
    C1 = P1 * (1.0 - gain1 * H)
    zero = torch.zeros_like(b1)
    A = torch.cat([zero, A[..., 1:]], dim=-1)
    b = torch.cat([b1, b[..., 1:]], dim=-1)
    C = torch.cat([C1, C[..., 1:]], dim=-1)
    eta = torch.cat([zero, eta[..., 1:]], dim=-1)
    J = torch.cat([zero, J[..., 1:]], dim=-1)
    elems = tuple(x.movedim(-1, 0) for x in (A, b, C, eta, J))  # time-major
    _, mean, cov, _, _ = (x.movedim(0, -1) for x in associative_scan(_combine_scalar, elems))

    pred_mean = torch.cat([m1, F * mean[..., :-1] + c], dim=-1)
    pred_cov = torch.cat([P1, F.square() * cov[..., :-1] + Q], dim=-1)
    obs_mean = H * pred_mean + d
    obs_var = H.square() * pred_cov + R
    terms = -0.5 * (math.log(2 * math.pi) + obs_var.log() + (y - obs_mean).square() / obs_var)
    return _scalar_result(mean, cov, pred_mean, pred_cov, obs_mean, obs_var, terms)


def reference_kalman_filter(
    y: torch.Tensor,
    F: torch.Tensor,
    c: torch.Tensor,
    H: torch.Tensor,
    d: torch.Tensor,
    Q: torch.Tensor,
    R: torch.Tensor,
    init_mean: torch.Tensor,
    init_cov: torch.Tensor,
    *,
    time_varying_obs_cov: bool | None = None,
) -> KalmanFilterResult:
    r"""Kalman filter as a plain sequential loop over time; the oracle for :func:`kalman_filter`.

    .. math::

        S_t &= H P_{t|t-1} H^\top + R_t, \qquad K_t = P_{t|t-1} H^\top S_t^{-1}, \\
        m_{t|t} &= m_{t|t-1} + K_t (y_t - H m_{t|t-1} - d), \qquad
        P_{t|t} = P_{t|t-1} - K_t S_t K_t^\top, \\
        m_{t+1|t} &= F m_{t|t} + c, \qquad P_{t+1|t} = F P_{t|t} F^\top + Q,

    starting from :math:`m_{1|0} = m_1`, :math:`P_{1|0} = P_1`. Same parameters and
    result as :func:`kalman_filter`.
    """
    model = _prepare(y, F, c, H, d, Q, R, init_mean, init_cov, time_varying_obs_cov)
    T = model.y.shape[-2]
    mean, cov = model.init_mean, model.init_cov
    means, covs = [], []
    for t in range(T):
        HP = model.H @ cov
        S = _quad(model.H, cov) + model.R[..., t, :, :]
        gain = torch.linalg.solve(S, HP).mT  # P H' S^-1
        err = model.y[..., t, :] - _mv(model.H, mean) - model.d
        mean = mean + _mv(gain, err)
        cov = _sym(cov - gain @ HP)
        means.append(mean)
        covs.append(cov)
        mean = _mv(model.F, mean) + model.c
        cov = _quad(model.F, cov) + model.Q
    return _predictions(model, torch.stack(means, dim=-2), torch.stack(covs, dim=-3))


# --------------------------------------------------------------------------------------
# forecasting


def forecast_state(
    mean: torch.Tensor,
    cov: torch.Tensor,
    F: torch.Tensor,
    c: torch.Tensor,
    Q: torch.Tensor,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Propagate a state distribution ``steps`` transitions ahead.

    .. math::

        m \leftarrow F m + c, \qquad P \leftarrow F P F^\top + Q
        \qquad (\text{repeated } \texttt{steps} \text{ times}),

    so a filtered :math:`x_t \sim \mathcal N(m, P)` becomes the predictive of
    :math:`x_{t+\text{steps}} \mid y_{1:t}`.

    Parameters
    ----------
    mean : Tensor, shape ``(..., k)``
        State mean now.
    cov : Tensor, shape ``(..., k, k)``
        State covariance now.
    F, c, Q : Tensor
        Shapes ``(..., k, k)``, ``(..., k)``, ``(..., k, k)``; batch dims broadcast.
    steps : int
        Number of transitions, ``>= 0``.

    Returns
    -------
    mean : Tensor, shape ``(..., k)``
    cov : Tensor, shape ``(..., k, k)``
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    Q = _sym(Q)
    for _ in range(steps):
        mean = _mv(F, mean) + c
        cov = _quad(F, cov) + Q
    return mean, cov


def aggregated_observation_forecast(
    mean: torch.Tensor,
    cov: torch.Tensor,
    F: torch.Tensor,
    c: torch.Tensor,
    H: torch.Tensor,
    d: torch.Tensor,
    Q: torch.Tensor,
    R: torch.Tensor,
    horizon: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Predictive distribution of the sum :math:`y_{t+1} + \dots + y_{t+h}`.

    Given the filtered state :math:`x_t \sim \mathcal N(m, P)` and :math:`R` held
    constant, unroll the transition: for :math:`j \ge 1`

    .. math::

        x_{t+j} = F^j x_t + G_j c + \sum_{i=1}^{j} F^{j-i} w_{t+i},
        \qquad G_n = \sum_{l=0}^{n-1} F^l .

    Summing over :math:`j = 1..h` and swapping the sums
    (:math:`\sum_{j=i}^{h} F^{j-i} = G_{h-i+1}`, then :math:`n = h - i + 1`),

    .. math::

        \sum_{j=1}^{h} x_{t+j} = \Phi_h x_t + \sum_{n=1}^{h} G_n c
            + \sum_{n=1}^{h} G_n w_{t+h-n+1},
        \qquad \Phi_h = \sum_{j=1}^{h} F^j = F G_h,

    with independent noises, so :math:`Y = \sum_{j=1}^h y_{t+j} = H \sum_j x_{t+j}
    + h d + \sum_j v_{t+j}` is Gaussian with

    .. math::

        E[Y] &= H \Big(\Phi_h m + \sum_{n=1}^{h} G_n c\Big) + h d, \\
        \operatorname{Cov}[Y] &= H \Big(\Phi_h P \Phi_h^\top
            + \sum_{n=1}^{h} G_n Q G_n^\top\Big) H^\top + h R .

    At :math:`h = 1` (:math:`G_1 = I`, :math:`\Phi_1 = F`) this is the one-step
    predictive :math:`\mathcal N(H(Fm + c) + d, H(FPF^\top + Q)H^\top + R)`.

    Parameters
    ----------
    mean : Tensor, shape ``(..., k)``
        Filtered mean :math:`m` at time :math:`t`.
    cov : Tensor, shape ``(..., k, k)``
        Filtered covariance :math:`P` at time :math:`t`.
    F, c, H, d, Q, R : Tensor
        Shapes ``(..., k, k)``, ``(..., k)``, ``(..., p, k)``, ``(..., p)``,
        ``(..., k, k)``, ``(..., p, p)`` (constant ``R`` only); batch dims broadcast.
    horizon : int
        :math:`h \ge 1`.

    Returns
    -------
    mean : Tensor, shape ``(..., p)``
    cov : Tensor, shape ``(..., p, p)``
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    k = F.shape[-1]
    eye = torch.eye(k, dtype=F.dtype, device=F.device)
    Q = _sym(Q)
    G = eye.expand(F.shape)  # G_1
    sum_G = G
    noise = _quad(G, Q)
    for _ in range(horizon - 1):
        G = eye + F @ G  # G_{n+1} = I + F G_n
        sum_G = sum_G + G
        noise = noise + _quad(G, Q)
    Phi = F @ G  # F G_h
    state_mean = _mv(Phi, mean) + _mv(sum_G, c)
    state_cov = _quad(Phi, cov) + noise
    out_mean = _mv(H, state_mean) + horizon * d
    out_cov = _quad(H, state_cov) + horizon * _sym(R)
    return out_mean, out_cov
