r"""Recurrent trunks: GRU, MinimalRNN and SRU.

Each maps a channels-last window batch ``x`` ``(N, L, c)`` to hidden states
``(N, L, H)`` from a zero initial state, so the state at step ``t`` reads inputs
``<= t`` only. Layers stack: layer ``l + 1`` reads the states of layer ``l``.

The GRU's gates read the previous state, so it runs step by step. MinimalRNN and
SRU here have gates that read the input only, so each layer is a *linear*
recurrence in its state,

.. math:: c_t = a_t \odot c_{t-1} + b_t, \qquad c_0 = 0,

which is a prefix product under the associative operator
:math:`(a_1, b_1) \otimes (a_2, b_2) = (a_1 a_2,\ a_2 b_1 + b_2)` and runs as a
parallel scan (Martin and Cundy 2018) with
:func:`~bayes_moe.inference.scan.associative_scan` in ``2 log2 L`` sequential steps,
or step by step (``mode="loop"``); both give the same states.

Every trunk has ``config()``, ``receptive_field`` (None: a recurrence reaches the
whole window) and ``n_params(in_channels, **options)``, and can be evaluated under
:func:`torch.func.vmap` over stacked parameter draws with
:func:`torch.func.functional_call`.

References
----------
K. Cho et al., "Learning phrase representations using RNN encoder-decoder for
statistical machine translation", EMNLP 2014.

M. Chen, "MinimalRNN: toward more interpretable and trainable recurrent neural
networks", arXiv:1711.06788, 2017.

T. Lei, Y. Zhang, S. I. Wang, H. Dai and Y. Artzi, "Simple recurrent units for
highly parallelizable recurrence", EMNLP 2018.

E. Martin and C. Cundy, "Parallelizing linear recurrent neural nets over sequence
length", ICLR 2018.

G. E. Blelloch, "Prefix sums and their applications", CMU-CS-90-190, 1990.
"""

from __future__ import annotations

import torch
from torch import nn

from bayes_moe.inference.scan import associative_scan

#: Ways a linear recurrence is evaluated.
MODES: tuple[str, ...] = ("scan", "loop")
#: Ways the GRU is evaluated.
GRU_MODES: tuple[str, ...] = ("fused", "loop")


def _positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _combine(first, second):
    """``(a1, b1) (x) (a2, b2) = (a1 a2, a2 b1 + b2)``: apply step 1, then step 2."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, mode: str = "scan") -> torch.Tensor:
    r"""States of :math:`c_t = a_t \odot c_{t-1} + b_t` from :math:`c_0 = 0`.

    Parameters
    ----------
    a, b : Tensor, shape ``(N, L, H)``
    mode : {"scan", "loop"}
        Parallel prefix scan over time, or the step-by-step recursion.

    Returns
    -------
    Tensor, shape ``(N, L, H)``: :math:`c_1, \dots, c_L`.
    """
    if mode == "scan":
        _, c = associative_scan(_combine, (a.transpose(0, 1), b.transpose(0, 1)))
        return c.transpose(0, 1)
    if mode != "loop":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    c = torch.zeros_like(b[:, 0])
    states = []
    for t in range(b.shape[1]):
        c = a[:, t] * c + b[:, t]
        states.append(c)
    return torch.stack(states, dim=1)


class _Recurrent(nn.Module):
    """Shared options of the recurrent trunks."""

    out_features: int

    def __init__(self, in_channels: int, hidden: int, layers: int, mode: str, modes: tuple):
        super().__init__()
        self.in_channels = _positive("in_channels", in_channels)
        self.hidden = _positive("hidden", hidden)
        self.layers = _positive("layers", layers)
        if mode not in modes:
            raise ValueError(f"mode must be one of {modes}, got {mode!r}")
        self.mode = mode
        self.out_features = self.hidden

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {"hidden": self.hidden, "layers": self.layers, "mode": self.mode}

    def _widths(self) -> list[int]:
        """Input width of each layer."""
        return [self.in_channels] + [self.hidden] * (self.layers - 1)

    @property
    def receptive_field(self) -> None:
        """None: every step of the window can reach the last state."""
        return None


class GRU(_Recurrent):
    r"""Gated recurrent unit in PyTorch's convention.

    .. math::

        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}), \\
        n_t &= \tanh\big(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})\big), \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}.

    The seed's equation 3.1 is the same cell with :math:`z \to 1 - z`. The weights
    live in a ``torch.nn.GRU`` (``cell``: ``weight_ih_l{k}`` ``(3H, c)`` in r, z, n
    order, ``weight_hh_l{k}`` ``(3H, H)``, ``bias_ih_l{k}``, ``bias_hh_l{k}``).

    Two evaluations, the same states: ``mode="fused"`` (default) runs PyTorch's fused
    GRU kernel, ``mode="loop"`` the equations above step by step (the input
    projections of all steps in one matrix product). Under :func:`torch.func.vmap`
    over weight draws, which the fused kernel does not support, the loop is used.

    Parameters
    ----------
    in_channels : int
    hidden : int
        ``H`` (``out_features``).
    layers : int
    mode : {"fused", "loop"}

    Notes
    -----
    Parameters: :math:`\sum_l 3H(c_l + H + 2)`, with :math:`c_0 = c`, else ``H``.
    Measured on one CPU thread, forward + backward over ``(5000, 64, 1)``, ``H = 32``:
    fused 0.28 s, loop 4.3 s.
    """

    def __init__(self, in_channels: int, *, hidden: int = 32, layers: int = 1, mode: str = "fused"):
        super().__init__(in_channels, hidden, layers, mode, GRU_MODES)
        self.cell = nn.GRU(self.in_channels, self.hidden, self.layers, batch_first=True)

    @staticmethod
    def n_params(
        in_channels: int, *, hidden: int = 32, layers: int = 1, mode: str = "fused"
    ) -> int:
        r""":math:`\sum_l 3H(c_l + H + 2)`."""
        widths = [in_channels] + [hidden] * (layers - 1)
        return sum(3 * hidden * (w + hidden + 2) for w in widths)

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Hidden states ``(N, L, H)`` of a batch ``(N, L, c)``; ``mode`` overrides the trunk's."""
        if (mode or self.mode) == "fused" and not _is_batched(self.cell.weight_ih_l0):
            return self.cell(x)[0]
        for k in range(self.layers):
            x = self._loop_layer(x, k)
        return x

    def _loop_layer(self, x: torch.Tensor, k: int) -> torch.Tensor:
        cell = self.cell
        w_hh, b_hh = getattr(cell, f"weight_hh_l{k}"), getattr(cell, f"bias_hh_l{k}")
        gi = x @ getattr(cell, f"weight_ih_l{k}").T + getattr(cell, f"bias_ih_l{k}")
        i_r, i_z, i_n = gi.chunk(3, dim=-1)  # each (N, L, H)
        h = x.new_zeros(x.shape[0], self.hidden)
        states = []
        for t in range(x.shape[1]):
            h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
            r = torch.sigmoid(i_r[:, t] + h_r)
            z = torch.sigmoid(i_z[:, t] + h_z)
            n = torch.tanh(i_n[:, t] + r * h_n)
            h = (1 - z) * n + z * h
            states.append(h)
        return torch.stack(states, dim=1)


def _is_batched(tensor: torch.Tensor) -> bool:
    """True inside :func:`torch.func.vmap` when ``tensor`` carries the mapped dimension."""
    return torch._C._functorch.is_batchedtensor(tensor)


class MinimalRNN(_Recurrent):
    r"""MinimalRNN with an input-driven update gate (a parallel linear recurrence).

    .. math::

        u_t = \tanh(W_u x_t + b_u), \qquad
        f_t = \sigma(W_f x_t + b_f), \qquad
        h_t = f_t \odot h_{t-1} + (1 - f_t) \odot u_t,

    the seed's equations 3.2 (:math:`c_t = f_t c_{t-1} + (1 - f_t) u_t`) with the
    state as output. Chen's MinimalRNN also feeds :math:`h_{t-1}` to the gate; reading
    the input only is what makes the recurrence linear in :math:`h` and lets it run as
    a scan (Martin and Cundy 2018). :math:`h_t` is an input-weighted exponential
    average of :math:`u`, with a memory :math:`1 / (1 - f_t)` set by the data.

    Parameters
    ----------
    in_channels : int
    hidden : int
        ``H``.
    layers : int
    mode : {"scan", "loop"}
        How the recurrence is evaluated (same result).

    Notes
    -----
    Parameters: :math:`\sum_l 2H(c_l + 1)`.
    """

    def __init__(self, in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "scan"):
        super().__init__(in_channels, hidden, layers, mode, MODES)
        self.projections = nn.ModuleList(nn.Linear(w, 2 * self.hidden) for w in self._widths())

    @staticmethod
    def n_params(in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "scan") -> int:
        r""":math:`\sum_l 2H(c_l + 1)`."""
        widths = [in_channels] + [hidden] * (layers - 1)
        return sum(2 * hidden * (w + 1) for w in widths)

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Hidden states ``(N, L, H)``; ``mode`` overrides the trunk's."""
        for projection in self.projections:
            u, f = projection(x).chunk(2, dim=-1)
            f = torch.sigmoid(f)
            x = linear_recurrence(f, (1 - f) * torch.tanh(u), mode or self.mode)
        return x


class SRU(_Recurrent):
    r"""Simple recurrent unit (Lei et al. 2018) with input-only gates.

    .. math::

        \tilde x_t &= W x_t, \quad
        f_t = \sigma(W_f x_t + b_f), \quad
        r_t = \sigma(W_r x_t + b_r), \\
        c_t &= f_t \odot c_{t-1} + (1 - f_t) \odot \tilde x_t, \\
        h_t &= r_t \odot \tanh(c_t) + (1 - r_t) \odot x'_t,

    with the highway input :math:`x'_t = x_t` when the layer's input width equals
    ``H`` and a projection :math:`x'_t = W_s x_t` otherwise (the first layer over a
    few columns). Lei et al.'s final version adds peephole terms
    :math:`v \odot c_{t-1}` to the gates; they make the recurrence nonlinear in
    :math:`c` and defeat the scan, so they are left out (the form of the seed's 3.2
    and of their first version).

    Parameters
    ----------
    in_channels : int
    hidden : int
        ``H``.
    layers : int
    mode : {"scan", "loop"}

    Notes
    -----
    Parameters: :math:`\sum_l \big(3H c_l + 2H + [c_l \ne H]\, H c_l\big)`.
    """

    def __init__(self, in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "scan"):
        super().__init__(in_channels, hidden, layers, mode, MODES)
        H = self.hidden
        self.inputs = nn.ModuleList(nn.Linear(w, H, bias=False) for w in self._widths())
        self.gates = nn.ModuleList(nn.Linear(w, 2 * H) for w in self._widths())
        self.highways = nn.ModuleList(
            nn.Identity() if w == H else nn.Linear(w, H, bias=False) for w in self._widths()
        )

    @staticmethod
    def n_params(in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "scan") -> int:
        r""":math:`\sum_l (3H c_l + 2H + [c_l \ne H] H c_l)`."""
        widths = [in_channels] + [hidden] * (layers - 1)
        return sum(3 * hidden * w + 2 * hidden + (hidden * w if w != hidden else 0) for w in widths)

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Hidden states ``(N, L, H)``; ``mode`` overrides the trunk's."""
        for inp, gate, highway in zip(self.inputs, self.gates, self.highways):
            f, r = torch.sigmoid(gate(x)).chunk(2, dim=-1)
            c = linear_recurrence(f, (1 - f) * inp(x), mode or self.mode)
            x = r * torch.tanh(c) + (1 - r) * highway(x)
        return x


RECURRENT_TRUNKS: dict[str, type[nn.Module]] = {"gru": GRU, "minimalrnn": MinimalRNN, "sru": SRU}
