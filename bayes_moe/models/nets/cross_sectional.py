r"""Attention across the assets observed on the same day, with learned asset embeddings.

The network of the ``cross_sectional`` expert (seed item 12, equations 5.3). For asset
``i`` at origin ``t``, with :math:`x_{i,t}` its features (its last ``L`` standardized
returns, and its volatility summaries at ``t`` when the expert reads them) and
:math:`e_i \in \mathbb R^{d_e}` its learned embedding,

.. math::

    \tilde x_{i,t} &= [x_{i,t};\ e_i], \qquad
    u_{i,t} = \mathrm{GELU}(W_{in} \tilde x_{i,t} + b_{in}) \in \mathbb R^{D}, \\
    q_{i,t} &= W_q u_{i,t},\quad k_{j,t} = W_k u_{j,t},\quad v_{j,t} = W_v u_{j,t}, \\
    \alpha_{i,j,t} &= \frac{\exp(q_{i,t}^\top k_{j,t} / \sqrt{D})\, [j \in A_t \cup \{i\}]}
        {\sum_{j'} \exp(q_{i,t}^\top k_{j',t} / \sqrt{D})\, [j' \in A_t \cup \{i\}]}, \\
    h_{i,t} &= \mathrm{LN}\Big(u_{i,t} + W_o \sum_j \alpha_{i,j,t} v_{j,t}\Big),

where :math:`A_t` are the assets whose whole window is observed on day ``t`` (a missing
asset is masked out of every other asset's attention; an asset always sees itself, so
the weights are defined on any day) and LN a layer normalisation without parameters.
With ``attention=False`` the sum is dropped, :math:`h_{i,t} = \mathrm{LN}(u_{i,t})`: each
asset alone, with its embedding (the ablation that measures what attention adds).
The seed's :math:`\tilde x` enters through one GELU layer so that the queries and keys
compare learned features, not raw returns. Every operation is per day: no day reads
another day's values, and the windows end at the origin, so there is no look-ahead.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CrossSectionalAttention(nn.Module):
    """Asset embeddings and one attention layer across assets.

    Parameters
    ----------
    in_features : int
        Width of each asset's features :math:`x_{i,t}` (its ``L`` returns, and its
        volatility summaries when the expert reads them).
    n_assets : int
        ``A``; asset ``i`` has embedding row ``i``.
    embedding_dim : int
        :math:`d_e`.
    hidden : int
        ``D``, the width of :math:`u` and of the output.
    attention : bool
        Attend across assets (else each asset alone).
    """

    def __init__(
        self, in_features: int, n_assets: int, embedding_dim: int, hidden: int, attention: bool
    ):
        super().__init__()
        self.in_features, self.n_assets = int(in_features), int(n_assets)
        self.attention = bool(attention)
        self.out_features = int(hidden)
        self.embedding = nn.Parameter(0.1 * torch.randn(n_assets, embedding_dim))
        # W_in [x; e] + b as W_x x + (W_e e + b): the embedding part once per asset
        self.inp = nn.Linear(in_features, hidden)
        self.inp_embedding = nn.Linear(embedding_dim, hidden, bias=False)
        if self.attention:
            self.query = nn.Linear(hidden, hidden, bias=False)
            self.key = nn.Linear(hidden, hidden, bias=False)
            self.value = nn.Linear(hidden, hidden, bias=False)
            self.out = nn.Linear(hidden, hidden)

    def forward(self, windows: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        r"""Features :math:`h_{i,t}`.

        Parameters
        ----------
        windows : Tensor ``(N, A, in_features)``
            Each asset's features, float32.
        present : BoolTensor ``(N, A)``
            :math:`j \in A_t`: the asset's window is observed.

        Returns
        -------
        Tensor ``(N, A, D)``
        """
        u = self._embed(windows)
        if self.attention:
            u = u + self.out(self._weights(u, present) @ self.value(u))
        return nn.functional.layer_norm(u, (u.shape[-1],))

    def attention_weights(self, windows: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        r""":math:`\alpha_{i,j,t}` ``(N, A, A)`` (the identity without attention)."""
        N, A, _ = windows.shape
        if not self.attention:
            return torch.eye(A).expand(N, A, A).clone()
        return self._weights(self._embed(windows), present)

    def _embed(self, windows: torch.Tensor) -> torch.Tensor:
        """:math:`u_{i,t}` ``(N, A, D)`` from the windows and the embeddings."""
        return nn.functional.gelu(self.inp(windows) + self.inp_embedding(self.embedding))

    def _weights(self, u: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Masked softmax over the assets ``j`` of each day: ``(N, A, A)``."""
        A = u.shape[-2]
        scores = self.query(u) @ self.key(u).transpose(-1, -2) / math.sqrt(u.shape[-1])
        visible = present.unsqueeze(-2) | torch.eye(
            A, dtype=torch.bool, device=present.device
        )  # j in A_t, or j = i
        return scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
