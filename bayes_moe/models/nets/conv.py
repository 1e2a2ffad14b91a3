r"""Causal convolutional trunks: plain CNN, depthwise-separable, MobileNet, EfficientNet-Lite, TCN.

Every trunk maps a channels-last window batch ``x`` of shape ``(N, L, c)`` to hidden
states of shape ``(N, L, E)``, ``E = out_features``. Convolutions are causal (left
padding only), so the state at step ``t`` reads inputs ``<= t`` only; there is no
batch or time normalisation and no pooling over time. A causal convolution of
kernel ``k`` and dilation ``d`` is

.. math::

    y_t = b + \sum_{i=0}^{k-1} W_i\, x_{t - d i},
    \qquad x_{t} = 0 \text{ for } t < 1,

with :math:`W_i` = ``weight[..., k - 1 - i]`` (PyTorch's cross-correlation order).
All parameters are convolution kernels, matrices and biases (no normalisation
gains), so the mean-field priors of a fully Bayesian window expert apply to each of
them, and every trunk can be evaluated under :func:`torch.func.vmap` over stacked
parameter draws with :func:`torch.func.functional_call`.

Each trunk has ``config()`` (its constructor options), ``receptive_field`` (how
many of the most recent input steps can reach the last state) and
``n_params(in_channels, **options)`` (the closed-form parameter count).

References
----------
S. Bai, J. Z. Kolter and V. Koltun, "An empirical evaluation of generic
convolutional and recurrent networks for sequence modeling", arXiv:1803.01271, 2018.

A. G. Howard et al., "MobileNets: efficient convolutional neural networks for mobile
vision applications", arXiv:1704.04861, 2017.

M. Sandler, A. Howard, M. Zhu, A. Zhmoginov and L.-C. Chen, "MobileNetV2: inverted
residuals and linear bottlenecks", CVPR 2018.

M. Tan and Q. V. Le, "EfficientNet: rethinking model scaling for convolutional neural
networks", ICML 2019; EfficientNet-Lite (TensorFlow model garden, 2020) removes
squeeze-excite and uses ReLU6.

J. Hu, L. Shen and G. Sun, "Squeeze-and-excitation networks", CVPR 2018.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bayes_moe.models.nets.options import positive_int

#: Activations of the plain CNN, the depthwise-separable trunk and the TCN.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return name


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    dilation: int = 1,
    groups: int = 1,
) -> torch.Tensor:
    r"""Causal 1D convolution of a channels-last sequence batch.

    .. math::

        y_t = b + \sum_{i=0}^{k-1} W_i\, x_{t - d i}

    with ``d (k - 1)`` zeros padded on the left. The padded channels-last batch is
    viewed, without a copy, as a channels-last image of height one for ``conv2d``
    (faster on a CPU than a channels-first ``conv1d``).

    Parameters
    ----------
    x : Tensor
        Shape ``(N, L, C_in)``.
    weight : Tensor
        Shape ``(C_out, C_in / groups, k)``, as for :func:`torch.nn.functional.conv1d`.
    bias : Tensor, optional
        Shape ``(C_out,)``.
    dilation, groups : int

    Returns
    -------
    Tensor
        Shape ``(N, L, C_out)``.
    """
    pad = dilation * (weight.shape[-1] - 1)
    x = F.pad(x, (0, 0, pad, 0)).transpose(1, 2).unsqueeze(2)  # (N, C_in, 1, L + pad)
    y = F.conv2d(x, weight.unsqueeze(2), bias, dilation=(1, dilation), groups=groups)
    return y.squeeze(2).transpose(1, 2)


class CausalConv1d(nn.Conv1d):
    """A :class:`torch.nn.Conv1d` on channels-last input with causal left padding.

    Shapes ``(N, L, C_in) -> (N, L, C_out)``; see :func:`causal_conv1d`. The
    ``padding`` of the base class stays 0 and is not used.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal convolution ``(N, L, C_in) -> (N, L, C_out)``."""
        return causal_conv1d(
            x, self.weight, self.bias, dilation=self.dilation[0], groups=self.groups
        )


#: Window steps ``N L`` a trunk evaluates at once; larger batches go in chunks.
CHUNK_STEPS: int = 2**14


class ConvTrunk(nn.Module):
    """Base of the trunks: evaluates a batch in chunks of about :data:`CHUNK_STEPS` steps.

    Subclasses implement :meth:`forward_chunk`. Chunks are cut by shape only (no data
    dependence, so ``vmap`` is unaffected); they keep every intermediate tensor small,
    which on a CPU is up to twice as fast for batches of hundreds of thousands of steps
    (fewer cache misses and fresh page mappings) and gives the same values, since no
    operation mixes windows.
    """

    out_features: int
    #: Each state reads inputs up to its own step only (see :mod:`bayes_moe.models.nets`).
    causal: ClassVar[str] = "masked"
    #: The weights do not depend on the window length.
    window_dependent: ClassVar[bool] = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(N, L, out_features)`` of a batch ``(N, L, c)``."""
        rows = max(1, CHUNK_STEPS // max(1, x.shape[1]))
        if x.shape[0] <= rows:
            return self.forward_chunk(x)
        return torch.cat([self.forward_chunk(part) for part in x.split(rows)])

    def forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states of a chunk ``(n, L, c)`` of the batch."""
        raise NotImplementedError


# ---------------------------------------------------------------------- plain CNN


class CausalCNN(ConvTrunk):
    r"""Plain causal 1D CNN: a stack of dense causal convolutions.

    .. math::

        h^{(0)}_t = x_t, \qquad
        h^{(l)}_t = \sigma\Big(\sum_{i=0}^{k-1} W^{(l)}_i\, h^{(l-1)}_{t-i}
        + b^{(l)}\Big), \quad l = 1, \dots, n_\text{layers}.

    Parameters
    ----------
    in_channels : int
        Input columns ``c``.
    channels : int
        Width ``C`` of every layer (``out_features``).
    layers : int
        Number of convolutions.
    kernel_size : int
        ``k``.
    activation : {"relu", "gelu", "silu", "tanh"}
        :math:`\sigma`.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, C)``; receptive field ``1 + n_layers (k - 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int = 32,
        layers: int = 2,
        kernel_size: int = 5,
        activation: str = "relu",
    ):
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        self.channels = positive_int("channels", channels)
        self.layers = positive_int("layers", layers)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.activation = _activation(activation)
        self.out_features = self.channels
        widths = [in_channels] + [self.channels] * self.layers
        self.convs = nn.ModuleList(
            CausalConv1d(a, b, self.kernel_size) for a, b in zip(widths[:-1], widths[1:])
        )

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            "channels": self.channels,
            "layers": self.layers,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }

    @property
    def receptive_field(self) -> int:
        """``1 + n_layers (k - 1)`` input steps."""
        return 1 + self.layers * (self.kernel_size - 1)

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        channels: int = 32,
        layers: int = 2,
        kernel_size: int = 5,
        activation: str = "relu",
    ) -> int:
        r"""Parameter count :math:`(c k + 1) C + (n_\text{layers} - 1)(C k + 1) C`."""
        c, C, k = in_channels, channels, kernel_size
        return (c * k + 1) * C + (layers - 1) * (C * k + 1) * C

    def forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(n, L, C)`` of a chunk ``(n, L, c)`` of the batch."""
        act = ACTIVATIONS[self.activation]
        for conv in self.convs:
            x = act(conv(x))
        return x


# ---------------------------------------------------------------------- depthwise-separable


class DepthwiseSeparableBlock(nn.Module):
    r"""Depthwise causal convolution, pointwise mixing, activation, residual.

    .. math::

        u_t = \sum_{i=0}^{k-1} w_i \odot h_{t-i}, \qquad
        h'_t = h_t + \sigma(P u_t + b)

    with one kernel :math:`w_i \in \mathbb R^C` per channel (a grouped convolution,
    ``groups=C``, without bias: :math:`b` absorbs it) and :math:`P \in \mathbb
    R^{C \times C}`. Without ``residual`` the :math:`h_t +` term is dropped.
    Shapes ``(N, L, C) -> (N, L, C)``; :math:`(k + C + 1) C` parameters.
    """

    def __init__(self, channels: int, kernel_size: int, activation: str, residual: bool = True):
        super().__init__()
        self.depthwise = CausalConv1d(channels, channels, kernel_size, groups=channels, bias=False)
        self.pointwise = nn.Linear(channels, channels)
        self.activation = activation
        self.residual = bool(residual)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The block's output for states ``h`` of shape ``(N, L, C)``."""
        out = ACTIVATIONS[self.activation](self.pointwise(self.depthwise(h)))
        return h + out if self.residual else out


class DepthwiseSeparableCNN(ConvTrunk):
    r"""Depthwise-separable causal convolutions (MobileNet v1 style, 1D).

    .. math::

        h^{(0)}_t = A x_t + a, \qquad
        h^{(l)}_t = h^{(l-1)}_t + \sigma\Big(P^{(l)} \sum_{i=0}^{k-1}
        w^{(l)}_i \odot h^{(l-1)}_{t-i} + b^{(l)}\Big)

    (:class:`DepthwiseSeparableBlock`): a 1x1 lift to ``C`` channels, then blocks of
    a per-channel causal convolution and a pointwise ``C -> C`` mixing.

    Parameters
    ----------
    in_channels : int
        Input columns ``c``.
    channels : int
        Width ``C`` (``out_features``).
    blocks : int
        Number of blocks.
    kernel_size : int
        ``k`` of the depthwise convolutions.
    activation : {"relu", "gelu", "silu", "tanh"}
    residual : bool
        Add each block's input to its output.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, C)``; receptive field ``1 + n_blocks (k - 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int = 24,
        blocks: int = 3,
        kernel_size: int = 5,
        activation: str = "relu",
        residual: bool = True,
    ):
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        self.channels = positive_int("channels", channels)
        self.blocks = positive_int("blocks", blocks)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.activation = _activation(activation)
        self.residual = bool(residual)
        self.out_features = self.channels
        self.lift = nn.Linear(in_channels, self.channels)
        self.layers = nn.ModuleList(
            DepthwiseSeparableBlock(self.channels, self.kernel_size, self.activation, self.residual)
            for _ in range(self.blocks)
        )

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            "channels": self.channels,
            "blocks": self.blocks,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
            "residual": self.residual,
        }

    @property
    def receptive_field(self) -> int:
        """``1 + n_blocks (k - 1)`` input steps."""
        return 1 + self.blocks * (self.kernel_size - 1)

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        channels: int = 24,
        blocks: int = 3,
        kernel_size: int = 5,
        activation: str = "relu",
        residual: bool = True,
    ) -> int:
        r"""Parameter count :math:`(c + 1) C + n_\text{blocks} (k + C + 1) C`."""
        c, C, k = in_channels, channels, kernel_size
        return (c + 1) * C + blocks * (k + C + 1) * C

    def forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(n, L, C)`` of a chunk ``(n, L, c)`` of the batch."""
        h = self.lift(x)
        for block in self.layers:
            h = block(h)
        return h


# ---------------------------------------------------------------------- inverted residuals


class CausalSqueezeExcite(nn.Module):
    r"""Squeeze-excite gate with a causal squeeze: the running mean over time.

    .. math::

        s_t = \frac{1}{t} \sum_{\tau \le t} h_\tau, \qquad
        h'_t = h_t \odot \operatorname{sigmoid}\big(W_2\, \mathrm{ReLU}(W_1 s_t + b_1)
        + b_2\big)

    (Hu et al. squeeze with a global average, which would let a state read the future.)
    :math:`W_1` is linear, so it is applied before the running mean,
    :math:`W_1 s_t = \frac1t \sum_{\tau \le t} W_1 h_\tau`, and the cumulative sum
    runs over the ``r`` reduced channels only. Shapes ``(N, L, C) -> (N, L, C)``;
    :math:`2 C r + C + r` parameters for ``r`` reduced channels.
    """

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Linear(channels, reduced)
        self.expand = nn.Linear(reduced, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Gated states ``(N, L, C)`` for states ``h`` of shape ``(N, L, C)``."""
        count = torch.arange(1, h.shape[1] + 1, dtype=h.dtype, device=h.device)
        squeezed = F.linear(h, self.reduce.weight).cumsum(1) / count.unsqueeze(-1)
        gate = torch.sigmoid(self.expand(F.relu(squeezed + self.reduce.bias)))
        return h * gate


class InvertedResidual(nn.Module):
    r"""MobileNetV2 / EfficientNet inverted residual block (MBConv) on causal steps.

    .. math::

        e_t &= \mathrm{ReLU6}(W_e h_t + b_e) \in \mathbb R^{t_x C},\\
        d_t &= \mathrm{ReLU6}\Big(\sum_{i=0}^{k-1} w_i \odot e_{t-i} + b_d\Big),\\
        h'_t &= [h_t +]\; W_p\, \mathrm{SE}(d)_t + b_p \in \mathbb R^{C'}

    with expansion factor :math:`t_x` (no expansion layer when it is 1, :math:`e = h`),
    an optional :class:`CausalSqueezeExcite` on the depthwise output, a linear
    bottleneck projection and the residual when ``C' = C``. Shapes
    ``(N, L, C) -> (N, L, C')``; parameters in :meth:`n_params`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expansion: int,
        kernel_size: int,
        squeeze_excite: bool = False,
        se_ratio: float = 0.25,
    ):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = nn.Linear(in_channels, hidden) if expansion != 1 else None
        self.depthwise = CausalConv1d(hidden, hidden, kernel_size, groups=hidden)
        self.se = (
            CausalSqueezeExcite(hidden, _se_width(in_channels, se_ratio))
            if squeeze_excite
            else None
        )
        self.project = nn.Linear(hidden, out_channels)
        self.residual = in_channels == out_channels

    @staticmethod
    def n_params(
        in_channels: int,
        out_channels: int,
        *,
        expansion: int,
        kernel_size: int,
        squeeze_excite: bool = False,
        se_ratio: float = 0.25,
    ) -> int:
        r"""Parameters of one block.

        .. math::

            [t_x > 1]\,(C + 1) H + (k + 1) H + [\text{SE}]\,(2 H r + H + r) + (H + 1) C'

        with hidden width :math:`H = t_x C` and SE width
        :math:`r = \max(1, \lfloor \rho C \rfloor)`, :math:`\rho` = ``se_ratio``.
        """
        C, H, k = in_channels, in_channels * expansion, kernel_size
        n = (C + 1) * H * (expansion != 1) + (k + 1) * H + (H + 1) * out_channels
        if squeeze_excite:
            r = _se_width(C, se_ratio)
            n += 2 * H * r + H + r
        return n

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The block's output for states ``h`` of shape ``(N, L, C)``."""
        e = h if self.expand is None else F.relu6(self.expand(h))
        d = F.relu6(self.depthwise(e))
        if self.se is not None:
            d = self.se(d)
        out = self.project(d)
        return h + out if self.residual else out


def _se_width(channels: int, ratio: float) -> int:
    """Reduced width of a squeeze-excite gate: ``max(1, floor(ratio * channels))``."""
    return max(1, int(ratio * channels))


class MobileNet1d(ConvTrunk):
    r"""MobileNetV2-style trunk: a 1x1 lift and identical causal inverted residual blocks.

    .. math::

        h^{(0)}_t = A x_t + a, \qquad
        h^{(l)}_t = h^{(l-1)}_t + W_p^{(l)}\, \mathrm{ReLU6}\Big(\sum_{i=0}^{k-1}
        w^{(l)}_i \odot \mathrm{ReLU6}(W_e^{(l)} h^{(l-1)}_{t-i} + b_e^{(l)})
        + b_d^{(l)}\Big) + b_p^{(l)}

    (:class:`InvertedResidual`: expansion ``C -> t C``, depthwise causal convolution,
    linear projection ``t C -> C``, residual).

    Parameters
    ----------
    in_channels : int
        Input columns ``c``.
    channels : int
        Bottleneck width ``C`` (``out_features``).
    expansion : int
        Expansion factor ``t``.
    blocks : int
        Number of blocks.
    kernel_size : int
        ``k`` of the depthwise convolutions.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, C)``; receptive field ``1 + n_blocks (k - 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int = 16,
        expansion: int = 2,
        blocks: int = 4,
        kernel_size: int = 3,
    ):
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        self.channels = positive_int("channels", channels)
        self.expansion = positive_int("expansion", expansion)
        self.blocks = positive_int("blocks", blocks)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.out_features = self.channels
        self.lift = nn.Linear(in_channels, self.channels)
        self.layers = nn.ModuleList(
            InvertedResidual(
                self.channels,
                self.channels,
                expansion=self.expansion,
                kernel_size=self.kernel_size,
            )
            for _ in range(self.blocks)
        )

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            "channels": self.channels,
            "expansion": self.expansion,
            "blocks": self.blocks,
            "kernel_size": self.kernel_size,
        }

    @property
    def receptive_field(self) -> int:
        """``1 + n_blocks (k - 1)`` input steps."""
        return 1 + self.blocks * (self.kernel_size - 1)

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        channels: int = 16,
        expansion: int = 2,
        blocks: int = 4,
        kernel_size: int = 3,
    ) -> int:
        r"""Parameter count :math:`(c + 1) C + n_\text{blocks}\, n_\text{block}`.

        :math:`n_\text{block}` from :meth:`InvertedResidual.n_params`; for
        :math:`t > 1`, :math:`n_\text{block} = (C + 1) t C + (k + 1) t C + (t C + 1) C`.
        """
        block = InvertedResidual.n_params(
            channels, channels, expansion=expansion, kernel_size=kernel_size
        )
        return (in_channels + 1) * channels + blocks * block

    def forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(n, L, C)`` of a chunk ``(n, L, c)`` of the batch."""
        h = self.lift(x)
        for block in self.layers:
            h = block(h)
        return h


class EfficientNetLite1d(ConvTrunk):
    r"""EfficientNet-Lite-style trunk: causal stem, MBConv stages, 1x1 head.

    .. math::

        h^{(0)}_t &= \mathrm{ReLU6}\Big(\sum_{i=0}^{k_0-1} S_i x_{t-i} + s\Big)
        \in \mathbb R^{C_0},\\
        h^{(j)} &= \mathrm{MBConv}_j(h^{(j-1)}) \in \mathbb R^{C_j},
        \quad j = 1, \dots, J,\\
        z_t &= \mathrm{ReLU6}(W_z h^{(J)}_t + b_z) \in \mathbb R^{E},

    each :math:`\mathrm{MBConv}_j` an :class:`InvertedResidual` with its own width
    :math:`C_j`, expansion and kernel (residual when :math:`C_j = C_{j-1}`). As in
    EfficientNet-Lite, the activation is ReLU6 and squeeze-excite is off by default;
    with ``squeeze_excite=True`` every block gates its depthwise output with a
    :class:`CausalSqueezeExcite` (running-mean squeeze, so still causal).

    Parameters
    ----------
    in_channels : int
        Input columns ``c``.
    stem_channels : int
        :math:`C_0`.
    stem_kernel_size : int
        :math:`k_0`.
    channels, expansions, kernel_sizes : sequence of int
        Per block (equal lengths): output width :math:`C_j`, expansion factor,
        depthwise kernel.
    head_channels : int
        :math:`E` (``out_features``).
    squeeze_excite : bool
        Gate every block's depthwise output (EfficientNet; Lite drops it).
    se_ratio : float
        Squeeze-excite width as a fraction of the block's input width.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, E)``; receptive field
    :math:`1 + (k_0 - 1) + \sum_j (k_j - 1)` without squeeze-excite, every earlier
    step with it.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        stem_channels: int = 16,
        stem_kernel_size: int = 3,
        channels: Sequence[int] = (16, 16, 24),
        expansions: Sequence[int] = (1, 2, 2),
        kernel_sizes: Sequence[int] = (3, 3, 5),
        head_channels: int = 32,
        squeeze_excite: bool = False,
        se_ratio: float = 0.25,
    ):
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        self.stem_channels = positive_int("stem_channels", stem_channels)
        self.stem_kernel_size = positive_int("stem_kernel_size", stem_kernel_size)
        self.channels = [positive_int("channels", c) for c in channels]
        self.expansions = [positive_int("expansions", t) for t in expansions]
        self.kernel_sizes = [positive_int("kernel_sizes", k) for k in kernel_sizes]
        if not len(self.channels) == len(self.expansions) == len(self.kernel_sizes):
            raise ValueError(
                "channels, expansions and kernel_sizes need one entry per block, got "
                f"{len(self.channels)}, {len(self.expansions)}, {len(self.kernel_sizes)}"
            )
        self.head_channels = positive_int("head_channels", head_channels)
        self.squeeze_excite = bool(squeeze_excite)
        if not 0 < se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1], got {se_ratio!r}")
        self.se_ratio = float(se_ratio)
        self.out_features = self.head_channels
        self.stem = CausalConv1d(in_channels, self.stem_channels, self.stem_kernel_size)
        widths = [self.stem_channels, *self.channels]
        self.layers = nn.ModuleList(
            InvertedResidual(
                a,
                b,
                expansion=t,
                kernel_size=k,
                squeeze_excite=self.squeeze_excite,
                se_ratio=self.se_ratio,
            )
            for a, b, t, k in zip(widths[:-1], widths[1:], self.expansions, self.kernel_sizes)
        )
        self.head = nn.Linear(widths[-1], self.head_channels)

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            "stem_channels": self.stem_channels,
            "stem_kernel_size": self.stem_kernel_size,
            "channels": list(self.channels),
            "expansions": list(self.expansions),
            "kernel_sizes": list(self.kernel_sizes),
            "head_channels": self.head_channels,
            "squeeze_excite": self.squeeze_excite,
            "se_ratio": self.se_ratio,
        }

    @property
    def receptive_field(self) -> int:
        r""":math:`1 + (k_0 - 1) + \sum_j (k_j - 1)` input steps.

        With squeeze-excite the running mean reaches every earlier step, so the
        receptive field is unbounded: ``sys.maxsize``.
        """
        if self.squeeze_excite:
            return sys.maxsize
        return self.stem_kernel_size + sum(k - 1 for k in self.kernel_sizes)

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        stem_channels: int = 16,
        stem_kernel_size: int = 3,
        channels: Sequence[int] = (16, 16, 24),
        expansions: Sequence[int] = (1, 2, 2),
        kernel_sizes: Sequence[int] = (3, 3, 5),
        head_channels: int = 32,
        squeeze_excite: bool = False,
        se_ratio: float = 0.25,
    ) -> int:
        r"""Parameter count.

        .. math::

            (c k_0 + 1) C_0 + \sum_{j=1}^{J} n_j + (C_J + 1) E

        with :math:`n_j` the block counts of :meth:`InvertedResidual.n_params`.
        """
        widths = [stem_channels, *channels]
        blocks = sum(
            InvertedResidual.n_params(
                a, b, expansion=t, kernel_size=k, squeeze_excite=squeeze_excite, se_ratio=se_ratio
            )
            for a, b, t, k in zip(widths[:-1], widths[1:], expansions, kernel_sizes)
        )
        stem = (in_channels * stem_kernel_size + 1) * stem_channels
        return stem + blocks + (widths[-1] + 1) * head_channels

    def forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(n, L, E)`` of a chunk ``(n, L, c)`` of the batch."""
        h = F.relu6(self.stem(x))
        for block in self.layers:
            h = block(h)
        return F.relu6(self.head(h))


# ---------------------------------------------------------------------- TCN


class TCN(ConvTrunk):
    r"""Temporal convolutional network: dilated causal residual blocks (Bai et al. 2018).

    .. math::

        h^{(0)}_t = A x_t + a, \qquad
        h^{(l)}_t = h^{(l-1)}_t + \sigma\Big(\sum_{i=0}^{k-1} W^{(l)}_i\,
        h^{(l-1)}_{t - 2^{l-1} i} + b^{(l)}\Big), \quad l = 1, \dots, n_\text{levels},

    one dilated convolution per block, dilations :math:`1, 2, 4, \dots,
    2^{n_\text{levels}-1}`.

    Parameters
    ----------
    in_channels : int
        Input columns ``c``.
    channels : int
        Width ``C`` (``out_features``).
    levels : int
        Number of blocks.
    kernel_size : int
        ``k``.
    activation : {"relu", "gelu", "silu", "tanh"}
        :math:`\sigma`.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, C)``; receptive field
    :math:`1 + (k - 1)(2^{n_\text{levels}} - 1)` (63 steps by default).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int = 24,
        levels: int = 5,
        kernel_size: int = 3,
        activation: str = "relu",
    ):
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        self.channels = positive_int("channels", channels)
        self.levels = positive_int("levels", levels)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.activation = _activation(activation)
        self.out_features = self.channels
        self.lift = nn.Linear(in_channels, self.channels)
        self.convs = nn.ModuleList(
            CausalConv1d(self.channels, self.channels, self.kernel_size, dilation=2**level)
            for level in range(self.levels)
        )

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            "channels": self.channels,
            "levels": self.levels,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }

    @property
    def receptive_field(self) -> int:
        r""":math:`1 + (k - 1)(2^{n_\text{levels}} - 1)` input steps."""
        return 1 + (self.kernel_size - 1) * (2**self.levels - 1)

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        channels: int = 24,
        levels: int = 5,
        kernel_size: int = 3,
        activation: str = "relu",
    ) -> int:
        r"""Parameter count :math:`(c + 1) C + n_\text{levels} (C k + 1) C`."""
        c, C, k = in_channels, channels, kernel_size
        return (c + 1) * C + levels * (C * k + 1) * C

    def forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(n, L, C)`` of a chunk ``(n, L, c)`` of the batch."""
        act = ACTIVATIONS[self.activation]
        h = self.lift(x)
        for conv in self.convs:
            h = h + act(conv(h))
        return h


#: Registry of the convolutional trunks (keys are the window experts' names).
CONV_TRUNKS: dict[str, type[nn.Module]] = {
    "cnn": CausalCNN,
    "depthwise": DepthwiseSeparableCNN,
    "mobilenet": MobileNet1d,
    "efficientnet_lite": EfficientNetLite1d,
    "tcn": TCN,
}
