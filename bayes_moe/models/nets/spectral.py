r"""Frequency-domain trunks: a learned filter on the window's spectrum, and Hyena.

================  ==================  ==========  ==========================================
registry key      class               ``causal``  what it computes, cost per channel
================  ==================  ==========  ==========================================
``timesnet``      :class:`TimesNet`   last        a learned complex gain per frequency bin of
                                                  the window (seed 6.1), an MLP over the last
                                                  filtered steps; ``O(L log L)``; needs
                                                  ``length``
``hyena``         :class:`Hyena`      masked      order-``N`` Hyena operator: gated implicit
                                                  long convolutions by FFT (seed 6.3),
                                                  ``O(L log L)``, any ``L``
================  ==================  ==========  ==========================================

:class:`TimesNet` multiplies the discrete Fourier transform of the (projected) window
by a learned frequency response :math:`G(\omega)` and transforms back
(:func:`spectral_filter`): a circular convolution with a learned real impulse
response of length ``L``. It mixes the whole window, so it has no causal form; it
returns the last step's state only, ``(N, 1, E)``. The window ends at the forecast
origin, so there is no look-ahead.

:class:`Hyena` returns every state ``(N, L, E)``; the state at step ``t`` reads inputs
``<= t`` only, up to the rounding of the FFT: its long convolutions are *linear*
convolutions computed by FFT with zero padding to ``2L`` (:func:`causal_fft_conv`),
so no output reads a later input through wrap-around, but an earlier state moves by
float rounding (about ``1e-7`` relative in float32, ``1e-16`` in float64) when a later
input moves: causal to rounding, not bit for bit like a direct convolution;
:func:`causal_direct_conv` is the ``O(L^2)`` reference it is tested against.

Both trunks' kernels are pure functions (:func:`spectral_filter`,
:func:`causal_fft_conv`, :func:`hyena_positions`, :func:`decay_window`). Every trunk
has ``config()``, ``receptive_field`` (None: every step of the window can reach the
last state) and ``n_params(in_channels, **options)``, and runs under
:func:`torch.func.vmap` over stacked parameter draws with
:func:`torch.func.functional_call` (``torch.fft`` has batching rules). Batches are
evaluated in chunks of about :data:`BATCH_STEPS` window steps (cut by shape only; no
operation mixes windows).

References
----------
H. Wu, T. Hu, Y. Liu, H. Zhou, J. Wang and M. Long, "TimesNet: temporal 2D-variation
modeling for general time series analysis", ICLR 2023.

M. Poli, S. Massaroli, E. Nguyen, D. Y. Fu, T. Dao, S. Baccus, Y. Bengio, S. Ermon and
C. Re, "Hyena hierarchy: towards larger convolutional language models", ICML 2023
(arXiv:2302.10866).

V. Sitzmann, J. N. P. Martel, A. W. Bergman, D. B. Lindell and G. Wetzstein,
"Implicit neural representations with periodic activation functions", NeurIPS 2020
(the sine activations of Hyena's filter network).
"""

from __future__ import annotations

import math
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from bayes_moe.models.nets.conv import ACTIVATIONS, causal_conv1d
from bayes_moe.models.nets.options import positive_int

#: Window steps ``N L`` a trunk evaluates at once; larger batches go in chunks.
BATCH_STEPS: int = 2**14
#: Hyena's decay window falls to this fraction of its start ...
DECAY_TARGET: float = 1e-2
#: ... after this many ``filter_scale`` units for the fastest channel ...
FAST_DECAY: float = 0.3
#: ... and after this many for the slowest (the reference implementation's defaults).
SLOW_DECAY: float = 1.5


# ---------------------------------------------------------------------- kernels


def spectral_filter(x: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    r"""Filter a real sequence by a frequency response: DFT, gain per bin, inverse DFT.

    .. math::

        X_\omega = \sum_{t=0}^{L-1} x_t\, e^{-2\pi i \omega t / L}, \qquad
        Y_\omega = G_\omega X_\omega, \qquad
        \tilde x_t = \frac1L \sum_{\omega=0}^{L-1} Y_\omega\, e^{2\pi i \omega t / L},

    for the bins :math:`\omega = 0, \dots, \lfloor L/2 \rfloor` of the real FFT (the
    others are their conjugates). Equivalently :math:`\tilde x_t = \sum_s
    g_{(t - s) \bmod L}\, x_s`, a circular convolution with the impulse response
    :math:`g = \mathcal F^{-1} G`, real because the inverse real FFT discards the
    imaginary parts of :math:`G_0` and (``L`` even) :math:`G_{L/2}`. :math:`G = 1`
    returns ``x``.

    Parameters
    ----------
    x : Tensor, shape ``(..., L, d)``
        Real sequences, time on the second-last dimension.
    response : Tensor, shape ``(L // 2 + 1, d)``, complex
        :math:`G_\omega`, one gain per bin and channel.

    Returns
    -------
    Tensor, shape ``(..., L, d)``: :math:`\tilde x`.
    """
    length = x.shape[-2]
    spectrum = torch.fft.rfft(x, dim=-2)  # (..., L // 2 + 1, d)
    return torch.fft.irfft(spectrum * response, n=length, dim=-2)


def causal_fft_conv(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r"""Causal (linear) convolution of sequences with per-channel filters, by FFT.

    .. math::

        y_t = \sum_{s=0}^{t} h_s\, u_{t-s}, \qquad t = 0, \dots, L - 1,

    per channel. Both are zero-padded to ``2L`` before the real FFT, so the circular
    convolution of the padded sequences equals the linear one on the first ``L``
    steps: no output reads a later input (wrap-around would need ``>= 2L - 1``
    steps). Cost :math:`O(L \log L)` per channel; no ``L x L`` tensor is formed.

    Parameters
    ----------
    u : Tensor, shape ``(..., L, D)``
        Sequences (e.g. ``(N, L, D)``), time on the second-last dimension.
    h : Tensor, shape ``(L, D)``
        Filter taps :math:`h_0, \dots, h_{L-1}` per channel.

    Returns
    -------
    Tensor, shape ``(..., L, D)``.
    """
    length = u.shape[-2]
    n_fft = 2 * length
    # FFTs along the last dimension of the transposed views: when ``u`` is a
    # time-contiguous view (as the short convolution's output is), no copy is made,
    # and the result is again a time-contiguous view.
    spectrum = torch.fft.rfft(u.mT, n=n_fft) * torch.fft.rfft(h.mT, n=n_fft)
    return torch.fft.irfft(spectrum, n=n_fft)[..., :length].mT


def causal_direct_conv(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r"""The reference of :func:`causal_fft_conv`: the same sum, by an ``L x L`` Toeplitz matrix.

    .. math:: y_t = \sum_{s=0}^{t} h_s\, u_{t-s} = \sum_{r \le t} T_{t r} u_r,
        \qquad T_{t r} = h_{t - r}.

    ``O(L^2)`` time and memory per channel: for tests only.

    Parameters
    ----------
    u : Tensor, shape ``(..., L, D)``
    h : Tensor, shape ``(L, D)``

    Returns
    -------
    Tensor, shape ``(..., L, D)``.
    """
    length = u.shape[-2]
    steps = torch.arange(length, device=u.device)
    lag = steps[:, None] - steps[None, :]  # (L, L): t - r
    toeplitz = h[lag.clamp(min=0)] * (lag >= 0).unsqueeze(-1).to(h.dtype)  # (L, L, D)
    return torch.einsum("trd,...rd->...td", toeplitz, u)


def hyena_positions(
    length: int, bands: int, scale: float, *, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    r"""Positional features of the lags :math:`t = 0, \dots, L-1` of Hyena's implicit filters.

    .. math::

        \mathrm{PE}(t) = \Big(\frac{t}{T},\ \cos\frac{2\pi k t}{T},\
        \sin\frac{2\pi k t}{T}\Big)_{k = 1, \dots, K} \in \mathbb R^{2K + 1},

    with :math:`T` = ``scale`` steps. A lag's features do not depend on ``L``, so a
    filter tap is the same whatever the window length (the reference implementation
    normalises time by a maximum length fixed when the model is built; ``T`` plays
    that part).

    Parameters
    ----------
    length : int
        ``L``.
    bands : int
        ``K``.
    scale : float
        ``T``.
    dtype, device
        Of the result.

    Returns
    -------
    Tensor, shape ``(L, 2K + 1)``.
    """
    t = torch.arange(length, dtype=dtype, device=device) / scale
    k = torch.arange(1, bands + 1, dtype=dtype, device=device)
    angle = 2 * math.pi * t[:, None] * k  # (L, K)
    return torch.cat([t[:, None], torch.cos(angle), torch.sin(angle)], dim=-1)


def decay_window(
    length: int, channels: int, scale: float, *, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    r"""Hyena's exponential-decay window, one rate per channel.

    .. math::

        w_d(t) = e^{-\alpha_d t / T}, \qquad
        \alpha_d \text{ evenly spaced from } \frac{|\log \epsilon|}{1.5}
        \text{ to } \frac{|\log \epsilon|}{0.3},

    with :math:`\epsilon` = :data:`DECAY_TARGET`: the slowest channel falls to
    :math:`\epsilon` after ``1.5 T`` steps, the fastest after ``0.3 T``
    (:data:`SLOW_DECAY`, :data:`FAST_DECAY`). Fixed, not learned, as in the reference
    implementation.

    Parameters
    ----------
    length : int
        ``L``.
    channels : int
        ``D``.
    scale : float
        ``T`` (steps).
    dtype, device
        Of the result.

    Returns
    -------
    Tensor, shape ``(L, D)``.
    """
    target = abs(math.log(DECAY_TARGET))
    rates = torch.linspace(
        target / SLOW_DECAY, target / FAST_DECAY, channels, dtype=dtype, device=device
    )
    t = torch.arange(length, dtype=dtype, device=device) / scale
    return torch.exp(-t[:, None] * rates)


def _in_batches(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` over chunks of about :data:`BATCH_STEPS` window steps of ``x`` ``(N, L, c)``."""
    rows = max(1, BATCH_STEPS // max(1, x.shape[1]))
    if x.shape[0] <= rows:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(rows)])


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return name


def _positive_float(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------- TimesNet


class TimesNet(nn.Module):
    r"""A learned filter on the window's spectrum, then an MLP (seed 6.1).

    .. math::

        u_t &= A x_t + a \in \mathbb R^{d}, \\
        \tilde u &= \mathcal F^{-1}\big(G \odot \mathcal F u\big),
            \qquad G_\omega \in \mathbb C^{d}, \\
        z &= \big(\tilde u_{L-k+1}, \dots, \tilde u_L\big) \in \mathbb R^{k d}, \\
        h &= \sigma\big(W_J \cdots \sigma(W_1 z + b_1) \cdots + b_J\big) \in \mathbb R^{H},

    the filter per channel by :func:`spectral_filter`, with
    :math:`G_\omega = \mathrm{filter\_real}_\omega + i\, \mathrm{filter\_imag}_\omega`,
    initialised to :math:`G = 1` (the identity). The imaginary part is a parameter
    for the bins :math:`1 \le \omega < L/2` only: at :math:`\omega = 0` and (``L``
    even) :math:`\omega = L/2` the spectrum of a real sequence is real and the inverse
    real FFT discards an imaginary gain, so such a parameter would get no gradient.
    That leaves exactly ``L`` real numbers per channel, and the filter is a general
    real circular convolution of the window (an impulse response of length ``L``).

    The MLP reads the last ``k`` = ``steps`` filtered steps, not the flattened window:
    a dense layer over all ``L`` steps would be a linear map of the window that
    absorbs the (linear) filter, which would then be redundant and unidentifiable.
    Over the last steps, the filter is what brings the rest of the window in: each
    channel's :math:`\tilde u_L` is a learned linear functional of the whole window
    (a band-pass picks out a period), its neighbours are the same functional one and
    more steps earlier (the phase of that period), and ``d`` channels learn ``d``
    frequency responses (several periods at once). At initialisation (:math:`G = 1`)
    the state reads the last ``k`` steps only; the gradient with respect to :math:`G`
    involves every step, so training opens the whole window.

    Wu et al. (2023) model multi-periodicity differently: each TimesBlock picks the
    top-``k`` frequencies of the batch-averaged FFT amplitude, folds the 1D series
    into a 2D (cycles x period) array for each, applies a 2D Inception convolution,
    and mixes the results with softmax weights of those amplitudes. That selection is
    data-dependent (the 2D shapes follow the detected periods, read back as Python
    integers), which evaluation under :func:`torch.func.vmap` over weight draws does
    not allow, and its Inception blocks are far beyond this parameter budget. This
    trunk is the seed's form instead: a
    learned, per-channel frequency response, fixed across windows (linear and
    time-invariant), with the nonlinearity after it.

    Parameters
    ----------
    in_channels : int
        ``c``.
    length : int
        Window length ``L`` (the expert passes it); the filter has ``L // 2 + 1`` bins.
    channels : int
        ``d``: projected channels, each with its own filter.
    steps : int
        ``k <= L``: filtered steps the MLP reads.
    hidden : int
        ``H``: width of the MLP (``out_features``).
    layers : int
        ``J``: dense layers of the MLP.
    activation : {"relu", "gelu", "silu", "tanh"}
        :math:`\sigma`.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, 1, H)``; ``L`` must equal ``length``. Parameters:
    :math:`(c + 1) d + L d + (k d + 1) H + (J - 1)(H + 1) H` (4,192 at ``c = 1``,
    ``L = 64``, defaults). One CPU thread, forward + backward over ``(4945, 64, 1)``,
    defaults: 0.06-0.10 s (a shared machine).

    References
    ----------
    H. Wu et al., "TimesNet: temporal 2D-variation modeling for general time series
    analysis", ICLR 2023.
    """

    out_features: int
    #: Only the last step's state, which reads the whole window.
    causal: ClassVar[str] = "last"
    #: The filter has one gain per frequency bin of a window of length ``length``.
    window_dependent: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        *,
        length: int,
        channels: int = 16,
        steps: int = 4,
        hidden: int = 32,
        layers: int = 2,
        activation: str = "gelu",
    ):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.length = positive_int("length", length)
        self.channels = positive_int("channels", channels)
        self.steps = positive_int("steps", steps)
        if self.steps > self.length:
            raise ValueError(f"steps must be <= length = {self.length}, got {steps!r}")
        self.hidden = positive_int("hidden", hidden)
        self.layers = positive_int("layers", layers)
        self.activation = _activation(activation)
        self.out_features = self.hidden
        d, bins = self.channels, self.length // 2 + 1
        self.project = nn.Linear(self.in_channels, d)
        self.filter_real = nn.Parameter(torch.ones(bins, d))
        self.filter_imag = nn.Parameter(torch.zeros((self.length - 1) // 2, d))
        widths = [self.steps * d] + [self.hidden] * self.layers
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def config(self) -> dict:
        """Constructor options (all but ``in_channels`` and ``length``)."""
        return {
            "channels": self.channels,
            "steps": self.steps,
            "hidden": self.hidden,
            "layers": self.layers,
            "activation": self.activation,
        }

    @property
    def receptive_field(self) -> None:
        """None: through the filter, every step of the window can reach the state."""
        return None

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        length: int,
        channels: int = 16,
        steps: int = 4,
        hidden: int = 32,
        layers: int = 2,
        activation: str = "gelu",
    ) -> int:
        r""":math:`(c + 1) d + L d + (k d + 1) H + (J - 1)(H + 1) H`."""
        c, d, H = in_channels, channels, hidden
        return (c + 1) * d + length * d + (steps * d + 1) * H + (layers - 1) * (H + 1) * H

    def prior_locations(self) -> dict[str, float]:
        """Prior means of a fully Bayesian expert that are not zero: the identity filter."""
        return {"filter_real": 1.0}

    def frequency_response(self) -> torch.Tensor:
        r""":math:`G_\omega`, complex, shape ``(L // 2 + 1, d)`` (real at DC and Nyquist)."""
        nyquist = 1 - self.length % 2  # a Nyquist bin exists when L is even
        imag = F.pad(self.filter_imag, (0, 0, 1, nyquist))
        return torch.complex(self.filter_real, imag)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Last state ``(N, 1, H)`` of a batch ``(N, L, c)`` with ``L = length``."""
        if x.shape[1] != self.length:
            raise ValueError(f"window length {x.shape[1]} != the trunk's length {self.length}")
        response = self.frequency_response()
        return _in_batches(lambda part: self._forward_chunk(part, response), x)

    def _forward_chunk(self, x: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        filtered = spectral_filter(self.project(x), response)  # (n, L, d)
        h = filtered[:, -self.steps :].flatten(1)  # (n, k d)
        act = ACTIVATIONS[self.activation]
        for layer in self.mlp:
            h = act(layer(h))
        return h.unsqueeze(1)


# ---------------------------------------------------------------------- Hyena


class HyenaFilter(nn.Module):
    r"""Hyena's implicit long filters: an FFN with sine activations of the lag, times a window.

    .. math::

        \hat h(t) &= W_{\mathrm{out}}\, \sin\!\big(\nu \odot (W_J \cdots
            \sin(\nu \odot (W_1 \mathrm{PE}(t) + b_1)) \cdots + b_J)\big)
            \in \mathbb R^{N D}, \\
        h^{n}_d(t) &= w_d(t)\, \hat h_{n d}(t) + [t = 0]\, D^n_d,
            \qquad t = 0, \dots, L - 1,

    with :math:`\mathrm{PE}` of :func:`hyena_positions`, the window :math:`w` of
    :func:`decay_window`, and one learned frequency vector :math:`\nu \in \mathbb
    R^{F}` shared by the sine layers (as in the reference implementation; initialised
    to ``frequency``). :math:`W_{\mathrm{out}}` has no bias. Evaluated at call time for
    the ``L`` at hand, so the filters (and the trunk) work for any window length, and
    tap ``t`` is the same for every ``L``. ``skip`` (:math:`D^n`, :math:`N \times D`)
    is the reference implementation's per-channel bias term,
    :math:`y = h * u + D \odot u`, added here to the tap at lag 0 (the same
    convolution, one elementwise pass fewer).

    Parameters
    ----------
    order, width, bands, filter_width, filter_layers, scale, frequency
        ``N``, ``D``, ``K``, ``F``, ``J``, ``T`` and the initial :math:`\nu`.
    """

    def __init__(
        self,
        order: int,
        width: int,
        bands: int,
        filter_width: int,
        filter_layers: int,
        scale: float,
        frequency: float,
    ):
        super().__init__()
        self.order, self.width, self.bands, self.scale = order, width, bands, scale
        widths = [2 * bands + 1] + [filter_width] * filter_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.frequency = nn.Parameter(torch.full((filter_width,), float(frequency)))
        self.out = nn.Linear(filter_width, order * width, bias=False)
        self.skip = nn.Parameter(torch.randn(order, width))

    def forward(self, length: int) -> torch.Tensor:
        """Filters ``(N, L, D)``: :math:`h^n_d(t)` for ``t = 0 .. length - 1``."""
        ref = self.out.weight
        z = hyena_positions(length, self.bands, self.scale, dtype=ref.dtype, device=ref.device)
        for layer in self.layers:
            z = torch.sin(self.frequency * layer(z))
        taps = self.out(z).unflatten(-1, (self.order, self.width)).transpose(0, 1)  # (N, L, D)
        window = decay_window(length, self.width, self.scale, dtype=ref.dtype, device=ref.device)
        lag_zero = F.pad(self.skip.unsqueeze(1), (0, 0, 0, length - 1))  # D^n at t = 0
        return taps * window + lag_zero


class HyenaOperator(nn.Module):
    r"""The order-``N`` Hyena operator (Poli et al. 2023, Algorithm 3) on a ``D``-wide sequence.

    .. math::

        (x^1, \dots, x^N, v)_t &= \textstyle\sum_{i=0}^{k-1} w_i \odot
            (W_{\mathrm{in}} u_{t-i} + b_{\mathrm{in}}) + b_{\mathrm{short}}
            \quad \text{(projection, short causal depthwise convolution)}, \\
        z^1 = v, \qquad
        z^{n+1}_t &= x^n_t \odot \Big(\sum_{s=0}^{t} h^n_s \odot z^n_{t-s}
            + D^n \odot z^n_t\Big), \quad n = 1, \dots, N, \\
        y_t &= W_{\mathrm{out}} z^{N+1}_t + b_{\mathrm{out}},

    the long convolutions by :func:`causal_fft_conv` with the filters of
    :class:`HyenaFilter`. (The reference implementation arranges the same products as
    :math:`x^1 \odot (h * (x^2 \odot v))` for order 2, with one filter fewer; this
    follows the paper's recurrence, one long filter per order.)
    Shapes ``(N_b, L, D) -> (N_b, L, D)``.
    """

    def __init__(
        self,
        width: int,
        order: int,
        short_kernel: int,
        bands: int,
        filter_width: int,
        filter_layers: int,
        scale: float,
        frequency: float,
    ):
        super().__init__()
        self.width, self.order = width, order
        inner = (order + 1) * width
        self.project = nn.Linear(width, inner)
        self.short = nn.Parameter(torch.empty(inner, 1, short_kernel))
        self.short_bias = nn.Parameter(torch.empty(inner))
        bound = 1.0 / math.sqrt(short_kernel)  # torch's Conv1d init, fan-in k per group
        nn.init.uniform_(self.short, -bound, bound)
        nn.init.uniform_(self.short_bias, -bound, bound)
        self.filters = HyenaFilter(
            order, width, bands, filter_width, filter_layers, scale, frequency
        )
        self.out = nn.Linear(width, width)

    def forward(self, u: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """Operator output ``(N_b, L, D)`` for ``u`` ``(N_b, L, D)``, ``filters`` ``(N, L, D)``."""
        groups = self.short.shape[0]
        branches = causal_conv1d(self.project(u), self.short, self.short_bias, groups=groups)
        *gates, z = branches.split(self.width, dim=-1)  # x^1 .. x^N, v: (N_b, L, D) each
        for n, gate in enumerate(gates):
            z = gate * causal_fft_conv(z, filters[n])
        return self.out(z)


class Hyena(nn.Module):
    r"""Hyena: residual blocks of the order-``N`` Hyena operator (Poli et al. 2023).

    .. math::

        h^{(0)}_t = A x_t + a, \qquad
        h^{(l)} = h^{(l-1)} + \mathcal H^{(l)}\big(\mathrm{LN}(h^{(l-1)})\big),
        \quad l = 1, \dots, n_\text{layers},

    with :math:`\mathcal H` the :class:`HyenaOperator` (projection to ``N + 1``
    branches, short causal depthwise convolutions, implicit long filters
    :math:`h^n(t) = w(t)\, \mathrm{FFN}(\mathrm{PE}(t))` of :class:`HyenaFilter`,
    long causal convolutions by FFT, element-wise gating, output projection) and LN a
    per-step layer normalisation without gain or bias (pre-norm, as in the paper's
    blocks; it reads one step, so it keeps causality). The paper's blocks also have an
    MLP after the operator; the operator's gating and output projection are this
    trunk's nonlinearity and mixing, to stay within the parameter budget.

    Parameters
    ----------
    in_channels : int
        ``c``.
    width : int
        ``D`` (``out_features``).
    order : int
        ``N``: long convolutions (and gates) per operator.
    layers : int
        Residual blocks.
    short_kernel : int
        Taps ``k`` of the short depthwise convolutions.
    bands : int
        ``K``: sine/cosine pairs of the positional features.
    filter_width : int
        ``F``: width of the filter FFN.
    filter_layers : int
        ``J``: sine layers of the filter FFN.
    filter_scale : float
        ``T`` steps: time unit of the positional features and the decay window (the
        slowest channel's window falls to 1 % after ``1.5 T`` steps, the fastest's
        after ``0.3 T``).
    frequency : float
        Initial frequency :math:`\nu` of the sine activations (learned afterwards; 1 in
        the reference implementation, larger values give filters more high-frequency
        content).

    Notes
    -----
    Shapes ``(N_b, L, c) -> (N_b, L, D)``, any ``L``. Parameters: :meth:`n_params`
    (4,576 at ``c = 1`` with the defaults). Cost per block :math:`O(L \log L)` per
    channel for the long convolutions and :math:`O(L)` for the rest. One CPU thread,
    forward + backward over ``(4945, 64, 1)``, defaults: 0.7-0.8 s (a shared machine;
    the FFTs and the complex products are about half of it), and about 90 MB to
    evaluate it without gradients.
    """

    out_features: int
    #: Each state reads inputs up to its own step only (up to FFT rounding).
    causal: ClassVar[str] = "masked"
    #: The filters are evaluated for the window length at hand.
    window_dependent: ClassVar[bool] = False

    def __init__(
        self,
        in_channels: int,
        *,
        width: int = 16,
        order: int = 2,
        layers: int = 2,
        short_kernel: int = 3,
        bands: int = 4,
        filter_width: int = 16,
        filter_layers: int = 2,
        filter_scale: float = 64.0,
        frequency: float = 1.0,
    ):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.width = positive_int("width", width)
        self.order = positive_int("order", order)
        self.layers = positive_int("layers", layers)
        self.short_kernel = positive_int("short_kernel", short_kernel)
        self.bands = positive_int("bands", bands)
        self.filter_width = positive_int("filter_width", filter_width)
        self.filter_layers = positive_int("filter_layers", filter_layers)
        self.filter_scale = _positive_float("filter_scale", filter_scale)
        self.frequency = _positive_float("frequency", frequency)
        self.out_features = self.width
        self.lift = nn.Linear(self.in_channels, self.width)
        self.blocks = nn.ModuleList(
            HyenaOperator(
                self.width,
                self.order,
                self.short_kernel,
                self.bands,
                self.filter_width,
                self.filter_layers,
                self.filter_scale,
                self.frequency,
            )
            for _ in range(self.layers)
        )

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            "width": self.width,
            "order": self.order,
            "layers": self.layers,
            "short_kernel": self.short_kernel,
            "bands": self.bands,
            "filter_width": self.filter_width,
            "filter_layers": self.filter_layers,
            "filter_scale": self.filter_scale,
            "frequency": self.frequency,
        }

    def prior_locations(self) -> dict[str, float]:
        """Prior means of a fully Bayesian expert that are not zero: the sine frequencies."""
        return {f"blocks.{i}.filters.frequency": self.frequency for i in range(self.layers)}

    @property
    def receptive_field(self) -> None:
        """None: the long filters span the whole window."""
        return None

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        width: int = 16,
        order: int = 2,
        layers: int = 2,
        short_kernel: int = 3,
        bands: int = 4,
        filter_width: int = 16,
        filter_layers: int = 2,
        filter_scale: float = 64.0,
        frequency: float = 1.0,
    ) -> int:
        r"""Parameter count.

        .. math::

            (c + 1) D + n_\text{layers}\big[(N + 1) D (D + k + 2)
            + (2K + 2) F + (J - 1)(F + 1) F + F + (F + 1) N D + (D + 1) D\big]

        (projection, short convolution and its bias; filter FFN and its frequencies;
        output taps and skip; output projection).
        """
        c, D, N, k, K, F_, J = (
            in_channels,
            width,
            order,
            short_kernel,
            bands,
            filter_width,
            filter_layers,
        )
        block = (
            (N + 1) * D * (D + k + 2)
            + (2 * K + 2) * F_
            + (J - 1) * (F_ + 1) * F_
            + F_
            + (F_ + 1) * N * D
            + (D + 1) * D
        )
        return (c + 1) * D + layers * block

    def implicit_filters(self, length: int) -> list[torch.Tensor]:
        """Each block's long filters for windows of ``length`` steps: ``(N, L, D)`` each."""
        return [cast(HyenaOperator, block).filters(length) for block in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(N_b, L, D)`` of a batch ``(N_b, L, c)``."""
        filters = self.implicit_filters(x.shape[1])
        return _in_batches(lambda part: self._forward_chunk(part, filters), x)

    def _forward_chunk(self, x: torch.Tensor, filters: list[torch.Tensor]) -> torch.Tensor:
        h = self.lift(x)
        for block, taps in zip(self.blocks, filters):
            h = h + block(F.layer_norm(h, (self.width,)), taps)
        return h


#: Registry of the frequency-domain trunks (keys are the window experts' names).
SPECTRAL_TRUNKS: dict[str, type[nn.Module]] = {"timesnet": TimesNet, "hyena": Hyena}
