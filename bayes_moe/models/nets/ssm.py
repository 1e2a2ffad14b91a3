r"""Selective state space trunk: Mamba (Gu and Dao 2023).

:class:`Mamba` maps a channels-last window batch ``x`` ``(N, L, c)`` to hidden states
``(N, L, E)``, ``E = d_model``, from a zero initial state. Every operation along time
is causal (a left-padded convolution, a recurrence from :math:`h_0 = 0`), so the
state at step ``t`` reads inputs ``<= t`` only (``causal = "masked"``), for any
window length (``window_dependent = False``).

The kernel is the selective scan (:func:`selective_scan`): per channel ``d`` of the
inner width, a diagonal linear state space of ``S`` states whose step size
:math:`\Delta_t` and matrices :math:`B_t, C_t` are functions of the input,

.. math::

    h_t = \bar A_t \odot h_{t-1} + \bar B_t\, x_t, \qquad
    y_t = C_t h_t + D x_t, \qquad h_0 = 0,

discretised by the zero-order hold of the continuous system
:math:`\dot h = A h + B u` (:func:`zoh_discretize`). Since the coefficients do not
depend on :math:`h`, this is a linear recurrence and runs either as a parallel prefix
scan (``mode="scan"``, :func:`~bayes_moe.models.nets.recurrent.linear_recurrence` on
:func:`~bayes_moe.kernels.scan.associative_scan`, ``2 log2 L`` sequential steps) or
step by step (``mode="loop"``, the reference); both give the same states.

Which is faster depends on the hardware. On this CPU the loop wins (see
:class:`Mamba`'s Notes for the figures): the scan makes ``O(log L)`` passes over
``(L, N, D, S)`` tensors, the loop ``L`` passes over one step's ``(N, D, S)`` slab,
which stays in cache. So the default is the loop; the scan is kept for hardware where
a step's launch cost dominates.

The trunk has ``config()``, ``receptive_field`` (None: the recurrence reaches the whole
window) and ``n_params(in_channels, **options)``, and can be evaluated under
:func:`torch.func.vmap` over stacked parameter draws with
:func:`torch.func.functional_call`.

References
----------
A. Gu and T. Dao, "Mamba: linear-time sequence modeling with selective state
spaces", arXiv:2312.00752, 2023.

A. Gu, A. Gupta, K. Goel and C. Re, "On the parameterization and initialization of
diagonal state space models" (S4D), NeurIPS 2022.

E. Martin and C. Cundy, "Parallelizing linear recurrent neural nets over sequence
length", ICLR 2018.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bayes_moe.models.nets.conv import causal_conv1d
from bayes_moe.models.nets.options import positive_int
from bayes_moe.models.nets.recurrent import linear_recurrence

#: Ways the selective scan is evaluated.
MODES: tuple[str, ...] = ("scan", "loop")
#: Elements ``n L D S`` of a state tensor a trunk evaluates at once (16 MiB in float32);
#: larger batches go in chunks of windows.
CHUNK_STATE_ELEMENTS: int = 2**22
#: Epsilon of the RMS normalisation (as in Mamba).
RMS_EPS: float = 1e-5


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def zoh_discretize(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Zero-order-hold discretisation of a diagonal state space, applied to one input.

    For :math:`\dot h = A h + B u` with diagonal :math:`A` and :math:`u` held at
    :math:`x` over a step of length :math:`\Delta`, the state after the step is
    exactly :math:`\bar A h + \bar B x` with

    .. math::

        \bar A = e^{\Delta A}, \qquad
        \bar B = \Big(\int_0^\Delta e^{\tau A}\, d\tau\Big) B
               = \frac{e^{\Delta A} - 1}{A}\, B,

    elementwise in the state (``expm1`` keeps :math:`\bar B` accurate for small
    :math:`\Delta A`). Gu and Dao's code takes the Euler step :math:`\bar B = \Delta B`
    instead; this is the exact hold of their equation (4).

    Parameters
    ----------
    delta : Tensor, shape ``(..., D)``
        Step sizes :math:`\Delta > 0`, one per channel.
    A : Tensor, shape ``(D, S)``
        Diagonal state matrix of each channel, entries :math:`< 0`.
    B : Tensor, shape ``(..., S)``
        Input matrix, shared by the channels.
    x : Tensor, shape ``(..., D)``
        Input of each channel.

    Returns
    -------
    a, b : Tensor, shape ``(..., D, S)``
        :math:`\bar A` and :math:`\bar B x`: the state update is :math:`h \to a h + b`.
    """
    e = torch.expm1(delta.unsqueeze(-1) * A)  # e^{dA} - 1
    return e + 1, e * (x.unsqueeze(-1) * B.unsqueeze(-2) / A)


def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    mode: str = "loop",
) -> torch.Tensor:
    r"""Outputs of the selective state space model (Gu and Dao 2023, Algorithm 2).

    Per channel :math:`d` and state :math:`s`, from :math:`h_0 = 0`,

    .. math::

        h_{t,ds} &= e^{\Delta_{t,d} A_{ds}}\, h_{t-1,ds}
                  + \frac{e^{\Delta_{t,d} A_{ds}} - 1}{A_{ds}}\, B_{t,s}\, x_{t,d}, \\
        y_{t,d} &= \sum_s C_{t,s}\, h_{t,ds} + D_d\, x_{t,d}

    (:func:`zoh_discretize`), so that

    .. math::

        h_t = \sum_{u \le t} \Big(\prod_{u < v \le t} \bar A_v\Big) \bar B_u x_u.

    Parameters
    ----------
    x : Tensor, shape ``(N, L, D)``
    delta : Tensor, shape ``(N, L, D)``
        Step sizes, positive.
    A : Tensor, shape ``(D, S)``
        Negative diagonal state matrices.
    B, C : Tensor, shape ``(N, L, S)``
    D : Tensor, shape ``(D,)``
        Skip connection.
    mode : {"loop", "scan"}
        Step-by-step recursion, or the prefix scan of :math:`(\bar A_t, \bar B_t x_t)`
        under :math:`(a_1, b_1) \otimes (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)`
        (:func:`~bayes_moe.models.nets.recurrent.linear_recurrence`), which holds the
        ``(N, L, D, S)`` states at once.

    Returns
    -------
    Tensor, shape ``(N, L, D)``: :math:`y_1, \dots, y_L`.
    """
    _check_mode(mode)
    # Time-major views: transposes of time-major tensors cost nothing here.
    x, delta, B, C = (v.transpose(0, 1) for v in (x, delta, B, C))  # (L, N, .)
    if mode == "scan":
        a, b = zoh_discretize(delta, A, B, x)  # (L, N, D, S)
        h = linear_recurrence(a.transpose(0, 1), b.transpose(0, 1), "scan").transpose(0, 1)
        y = torch.matmul(h, C.unsqueeze(-1)).squeeze(-1)  # (L, N, D)
    else:
        outputs, h = [], None
        # unbind, not x[t]: the backward of unbind is one stack (linear in L).
        for x_t, delta_t, B_t, C_t in zip(x.unbind(0), delta.unbind(0), B.unbind(0), C.unbind(0)):
            a_t, b_t = zoh_discretize(delta_t, A, B_t, x_t)  # (N, D, S)
            h = b_t if h is None else torch.addcmul(b_t, a_t, h)
            outputs.append(torch.matmul(h, C_t.unsqueeze(-1)).squeeze(-1))
        y = torch.stack(outputs, dim=0)
    return torch.addcmul(y, x, D).transpose(0, 1)


def rms_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    r"""RMS normalisation over the last dimension with gain :math:`1 + g`.

    .. math:: \mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\overline{x^2} + \epsilon}} \odot (1 + g)

    Parameters
    ----------
    x : Tensor, shape ``(..., E)``
    gain : Tensor, shape ``(E,)``
        :math:`g`, zero at initialisation.
    """
    return F.rms_norm(x, (x.shape[-1],), 1 + gain, RMS_EPS)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``x`` with ``softplus(x) = y``: ``y + log(1 - exp(-y))``."""
    return y + torch.log(-torch.expm1(-y))


class MambaBlock(nn.Module):
    r"""One residual Mamba block on time-major states ``(L, N, E)``.

    .. math::

        [u; z] &= W_{\mathrm{in}}\, \mathrm{RMSNorm}(r_t), \qquad
        x = \mathrm{SiLU}(\mathrm{conv}_k(u)), \\
        [\delta; B_t; C_t] &= W_x x_t, \qquad
        \Delta_t = \mathrm{softplus}(W_\Delta \delta + b_\Delta), \qquad
        A = -\exp(A_{\log}), \\
        y &= \mathrm{SelectiveScan}(x, \Delta, A, B, C, D), \qquad
        r_t \leftarrow r_t + W_{\mathrm{out}} \big(y_t \odot \mathrm{SiLU}(z_t)\big),

    with :math:`\mathrm{conv}_k` a causal depthwise convolution of kernel ``k`` (with
    bias) and :math:`\delta` of rank ``R``. Widths: :math:`u, z, x, y` ``D``
    (``inner``), :math:`B_t, C_t` ``S``. Parameters: ``norm`` (:math:`g`, ``E``),
    ``in_proj`` (``(2D, E)``, no bias), ``conv`` (``(D, 1, k)`` and ``(D,)``),
    ``x_proj`` (``(R + 2S, D)``, no bias), ``dt_proj`` (``(D, R)`` and ``(D,)``),
    ``A_log`` (``(D, S)``), ``D`` (``(D,)``), ``out_proj`` (``(E, D)``, no bias).

    Initialisation as in the paper: :math:`A_{\log, ds} = \log(s + 1)` (S4D-real,
    :math:`A_{ds} = -(s + 1)`), :math:`D = 1`, :math:`b_\Delta` the inverse softplus
    of step sizes drawn log-uniformly in ``[dt_min, dt_max]`` (so :math:`\Delta`
    starts there when :math:`W_\Delta \delta` is small), :math:`W_\Delta` uniform in
    :math:`\pm R^{-1/2}`, ``out_proj`` scaled by :math:`1 / \sqrt{\text{layers}}`.
    """

    def __init__(
        self,
        d_model: int,
        inner: int,
        d_state: int,
        d_conv: int,
        dt_rank: int,
        dt_min: float,
        dt_max: float,
        layers: int,
    ):
        super().__init__()
        self.inner, self.d_state, self.dt_rank = inner, d_state, dt_rank
        self.norm = nn.Parameter(torch.zeros(d_model))
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=False)
        self.conv = nn.Conv1d(inner, inner, d_conv, groups=inner)
        self.x_proj = nn.Linear(inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, d_model, bias=False)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
            log_dt = torch.empty(inner).uniform_(math.log(dt_min), math.log(dt_max))
            self.dt_proj.bias.copy_(_inverse_softplus(log_dt.exp()))
            self.out_proj.weight.div_(math.sqrt(layers))

    def forward(self, r: torch.Tensor, mode: str) -> torch.Tensor:
        """Residual update of time-major states ``(L, N, E) -> (L, N, E)``."""
        D, S, R = self.inner, self.d_state, self.dt_rank
        u, z = self.in_proj(rms_norm(r, self.norm)).split(D, dim=-1)  # (L, N, D) each
        u = causal_conv1d(u.transpose(0, 1), self.conv.weight, self.conv.bias, groups=D)
        x = F.silu(u.transpose(0, 1)).contiguous()  # (L, N, D)
        delta, B, C = self.x_proj(x).split([R, S, S], dim=-1)
        delta = F.softplus(self.dt_proj(delta))  # (L, N, D)
        A = -torch.exp(self.A_log)
        # mypy cannot count the arguments a starred generator gives (two each here).
        y = selective_scan(  # type: ignore[call-arg]
            *(v.transpose(0, 1) for v in (x, delta)),  # type: ignore[arg-type]
            A,
            *(v.transpose(0, 1) for v in (B, C)),
            self.D,
            mode,
        ).transpose(0, 1)  # (L, N, D)
        return r + self.out_proj(y * F.silu(z))


class Mamba(nn.Module):
    r"""Mamba: residual blocks of selective state spaces (Gu and Dao 2023).

    .. math::

        r^{(0)}_t = W_e x_t + b_e, \qquad
        r^{(l)} = r^{(l-1)} + \mathrm{Mixer}_l\big(\mathrm{RMSNorm}(r^{(l-1)})\big), \qquad
        h_t = \mathrm{RMSNorm}(r^{(\text{layers})}_t),

    where each mixer is a Mamba block (:class:`MambaBlock`): input projection to the
    inner width ``D = expand * d_model`` and a gate branch :math:`z`, a causal
    depthwise convolution of kernel ``d_conv`` and SiLU, the selective scan
    (:func:`selective_scan`) with input-dependent :math:`\Delta_t, B_t, C_t` and
    S4D-real :math:`A`, output gated by :math:`\mathrm{SiLU}(z)` and projected back to
    ``d_model``. ``embed`` is the initial projection of the ``c`` input channels.

    Departures from the paper, on purpose: (1) :math:`\bar B` is the exact zero-order
    hold :math:`(e^{\Delta A} - 1) A^{-1} B` (the paper's equation 4), not the Euler
    step :math:`\Delta B` of its code; (2) the RMSNorm gains are parametrised as
    :math:`1 + g` with :math:`g = 0` at initialisation (the same function), so that
    the zero-mean priors of a fully Bayesian window expert are centred on the
    identity gain.

    Parameters
    ----------
    in_channels : int
    d_model : int
        Residual width ``E`` (``out_features``).
    d_state : int
        States ``S`` per channel.
    expand : int
        Inner width ``D = expand * d_model``.
    d_conv : int
        Kernel of the causal depthwise convolution.
    dt_rank : int or None
        Rank ``R`` of the :math:`\Delta` projection; None: :math:`\lceil E / 16 \rceil`.
    layers : int
        Residual blocks.
    dt_min, dt_max : float
        Range of the initial step sizes, ``0 < dt_min <= dt_max``.
    mode : {"loop", "scan"}
        How the selective scan is evaluated (same states; see the Notes).

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, E)``. Parameters:
    :math:`(c + 2) E + \text{layers}\,\big(E + 3 D E + D (k + 1) + D (R + 2S)
    + D (R + 1) + D S + D\big)`, ``k = d_conv``. Batches are evaluated in chunks of
    windows of about :data:`CHUNK_STATE_ELEMENTS` state elements (the same values up to
    rounding).

    Cost, one CPU thread, forward + backward (plain autograd) over the full sample
    ``(4945, 64, 1)``, defaults (2,656 parameters at ``c = 1``): loop 1.8-2.2 s, scan
    3.3-4.3 s (the first call of a process about twice that, while the allocator maps
    fresh memory), on a shared machine where the GRU took 0.41-0.8 s in the same
    minutes: the trunk is over the budget of about 1 s, by a factor of about 2.
    Forward alone without gradients: 0.46 s (loop), 0.8 s (scan). Memory: autograd
    keeps about five ``(N, L, D, S)`` tensors per block for the backward, and the
    process peaked at 3.0 GB (loop) and 4.2 GB (scan) for that full-sample step
    (minibatches of 256 windows need a twentieth); without gradients the batch goes
    in chunks of 16 MiB states and the peak grew by 55 MB (loop) and 200 MB (scan).
    Two blocks cost more than twice as much (loop 5.6-6.6 s), ``d_state = 4`` about
    two thirds.

    References
    ----------
    A. Gu and T. Dao, "Mamba: linear-time sequence modeling with selective state
    spaces", arXiv:2312.00752, 2023.
    """

    out_features: int
    #: Each state reads inputs up to its own step only (see :mod:`bayes_moe.models.nets`).
    causal: ClassVar[str] = "masked"
    #: The weights do not depend on the window length.
    window_dependent: ClassVar[bool] = False

    def __init__(
        self,
        in_channels: int,
        *,
        d_model: int = 16,
        d_state: int = 8,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        layers: int = 1,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        mode: str = "loop",
    ):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.d_model = positive_int("d_model", d_model)
        self.d_state = positive_int("d_state", d_state)
        self.expand = positive_int("expand", expand)
        self.d_conv = positive_int("d_conv", d_conv)
        self.dt_rank = _dt_rank(self.d_model, dt_rank)
        self.layers = positive_int("layers", layers)
        self.dt_min, self.dt_max = _step_range(dt_min, dt_max)
        self.mode = _check_mode(mode)
        self.out_features = self.d_model
        self.inner = self.expand * self.d_model
        self.embed = nn.Linear(self.in_channels, self.d_model)
        self.blocks = nn.ModuleList(
            MambaBlock(
                self.d_model,
                self.inner,
                self.d_state,
                self.d_conv,
                self.dt_rank,
                self.dt_min,
                self.dt_max,
                self.layers,
            )
            for _ in range(self.layers)
        )
        self.norm = nn.Parameter(torch.zeros(self.d_model))

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            "d_model": self.d_model,
            "d_state": self.d_state,
            "expand": self.expand,
            "d_conv": self.d_conv,
            "dt_rank": self.dt_rank,
            "layers": self.layers,
            "dt_min": self.dt_min,
            "dt_max": self.dt_max,
            "mode": self.mode,
        }

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        d_model: int = 16,
        d_state: int = 8,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        layers: int = 1,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        mode: str = "loop",
    ) -> int:
        """The parameter count, in closed form (the formula of the Notes)."""
        E, S, k = d_model, d_state, d_conv
        D, R = expand * d_model, _dt_rank(d_model, dt_rank)
        block = E + 3 * D * E + D * (k + 1) + D * (R + 2 * S) + D * (R + 1) + D * S + D
        return (in_channels + 2) * E + layers * block

    @property
    def receptive_field(self) -> None:
        """None: every step of the window can reach the last state."""
        return None

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Hidden states ``(N, L, E)`` of a batch ``(N, L, c)``; ``mode`` overrides the trunk's."""
        mode = self.mode if mode is None else _check_mode(mode)
        rows = max(1, CHUNK_STATE_ELEMENTS // max(1, x.shape[1] * self.inner * self.d_state))
        if x.shape[0] <= rows:
            return self._forward_chunk(x, mode)
        return torch.cat([self._forward_chunk(part, mode) for part in x.split(rows)])

    def _forward_chunk(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        r = self.embed(x.transpose(0, 1))  # time-major (L, n, E)
        for block in self.blocks:
            r = block(r, mode)
        return rms_norm(r, self.norm).transpose(0, 1)

    def forward_sequential(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x, mode="loop")``: the step-by-step recursion (the reference)."""
        return self(x, mode="loop")


def _dt_rank(d_model: int, dt_rank: int | None) -> int:
    """The rank of the step-size projection; None: ``ceil(d_model / 16)``."""
    if dt_rank is None:
        return math.ceil(d_model / 16)
    return positive_int("dt_rank", dt_rank)


def _step_range(dt_min: float, dt_max: float) -> tuple[float, float]:
    """``(dt_min, dt_max)`` as floats, or ValueError unless ``0 < dt_min <= dt_max``."""
    for name, value in (("dt_min", dt_min), ("dt_max", dt_max)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if dt_min > dt_max:
        raise ValueError(f"dt_min must be <= dt_max, got dt_min={dt_min!r} > dt_max={dt_max!r}")
    return float(dt_min), float(dt_max)


SSM_TRUNKS: dict[str, type[nn.Module]] = {"mamba": Mamba}
