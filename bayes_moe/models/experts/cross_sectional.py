r"""The cross-sectional expert [seed 12]: asset embeddings and attention across assets.

.. math::

    h_{i,t} &= \text{CrossSectionalAttention}(x_{\cdot,t}, e, A_t)_i \in \mathbb R^{D}, \\
    y_{i,t+h} &= b + w^\top h_{i,t} + s_{i,t}\, e^{v^\top h_{i,t}}\, \varepsilon_{i,t+h},
    \qquad \varepsilon \sim t_\nu \text{ or } \mathcal N(0, 1),

(with ``location="intercept"`` the term :math:`w^\top h_{i,t}` is left out: the attention
then moves only the scale, volatility spilling over between assets, and the location
is the shared intercept :math:`b`)
with the network of :mod:`bayes_moe.models.nets.cross_sectional` (the seed's equations
5.3: embeddings :math:`e_i`, attention across the assets observed on day ``t``) and
:math:`s_{i,t}` the heteroscedastic scale of :class:`~bayes_moe.models.experts.noise.NoiseModel`
on asset ``i``'s own volatility summaries. The head :math:`b, w, v`, the scale model and
:math:`\nu` have priors and are shared by every asset (one site each), like a window
expert's head (:mod:`bayes_moe.models.experts.window`): :math:`b \sim \mathcal N(0, 1)`,
:math:`w_j \sim \mathcal N(0, 1/D)`, :math:`v_j \sim \mathcal N(0, 0.25/D)`. The network
weights and the embeddings are point estimates optimised with the ELBO (Bayesian in
the output layer). The network runs in float32.

On a panel (``fit(..., panel=True)``) the assets are the panel's; on a single frame the
target columns are the assets (with one target, attention over one asset is the
identity and the expert is a small network on the window with a learned bias).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from bayes_moe.data.panel_windows import PanelInputs
from bayes_moe.data.windows import VOL_FEATURES, ExpertInputs
from bayes_moe.models.experts.base import PanelExpert
from bayes_moe.models.experts.noise import NoiseModel
from bayes_moe.models.experts.window import BIAS_PRIOR_SCALE
from bayes_moe.models.nets.cross_sectional import CrossSectionalAttention

#: Returns per window by default. The defaults (10 returns and the volatility summaries,
#: D = 8, d_e = 4) were chosen on the 2011-2014 validation years of
#: ``benchmarks/panel_sp500.py --period validation`` among four configurations.
DEFAULT_LENGTH: int = 10

#: What the network drives: the location and the scale, or the scale only.
LOCATIONS: tuple[str, ...] = ("network", "intercept")


class CrossSectional(PanelExpert):
    r"""Cross-sectional expert: embeddings plus attention across the assets of a day.

    Parameters
    ----------
    length : int, optional
        ``L``, returns per window; default :data:`DEFAULT_LENGTH` or the model's window
        if shorter.
    embedding_dim : int
        :math:`d_e`, the width of each asset's embedding.
    hidden : int
        ``D``, the width of the features.
    attention : bool
        Attend across assets; False keeps each asset alone (an ablation).
    weight_prior : bool
        Put the priors of a fully Bayesian trunk on the network's weights,
        :math:`\psi_j \sim \mathcal N(0, 1/\mathrm{fan\_in}_j)` (embeddings
        :math:`\mathcal N(0, 1)`, biases :math:`\mathcal N(0, 0.1^2)`), and fit them by
        maximum a posteriori (a ``pyro.factor`` of their log density) instead of
        maximum likelihood: shrinkage against fitting the noise of the training days.
    location : {"network", "intercept"}
        ``"network"`` (default): the location is :math:`b + w^\top h_{i,t}`;
        ``"intercept"``: the location is :math:`b` and the network drives the scale only
        (0.007 nats per stock-day worse on the 2011-2014 validation years of
        ``benchmarks/panel_sp500.py``).
    vol_inputs : bool
        The features :math:`x_{i,t}` hold the asset's centred volatility summaries at
        ``t`` (:data:`~bayes_moe.data.windows.VOL_FEATURES`) besides its ``L`` returns.
    family, heteroscedastic, scale_features
        The predictive's noise family and scale model (:class:`NoiseModel`).
    """

    name = "cross_sectional"
    group = "feature"
    capacity = 1
    param_dims = {
        "intercept": ("output",),
        "head": ("output", "embedding"),
        "head_scale": ("output", "embedding"),
        "scale": ("output",),
        "vol_coef": ("output", "scale_feature"),
        "df": ("output",),
    }

    def __init__(
        self,
        length: int | None = None,
        *,
        embedding_dim: int = 4,
        hidden: int = 8,
        attention: bool = True,
        location: str = "network",
        vol_inputs: bool = True,
        weight_prior: bool = False,
        family: str = "studentt",
        heteroscedastic: bool = True,
        scale_features=None,
    ):
        super().__init__()
        if length is not None and int(length) < 1:
            raise ValueError(f"cross_sectional: length must be >= 1, got {length}")
        if int(embedding_dim) < 1 or int(hidden) < 2:
            raise ValueError(
                f"cross_sectional: need embedding_dim >= 1 and hidden >= 2, got "
                f"{embedding_dim} and {hidden}"
            )
        if location not in LOCATIONS:
            raise ValueError(
                f"cross_sectional: location must be one of {list(LOCATIONS)}, got {location!r}"
            )
        self.length = None if length is None else int(length)
        self.embedding_dim = int(embedding_dim)
        self.hidden = int(hidden)
        self.attention = bool(attention)
        self.location = location
        self.vol_inputs = bool(vol_inputs)
        self.weight_prior = bool(weight_prior)
        self.noise = NoiseModel(family, heteroscedastic, scale_features)
        self.net: CrossSectionalAttention | None = None
        self.asset_names: tuple[str, ...] = ()
        self._window_cache: tuple | None = None
        self.window_length: int = 0  # L, set when built

    def config(self) -> dict:
        """Constructor arguments."""
        return {
            "length": self.length,
            "embedding_dim": self.embedding_dim,
            "hidden": self.hidden,
            "attention": self.attention,
            "location": self.location,
            "vol_inputs": self.vol_inputs,
            "weight_prior": self.weight_prior,
            **self.noise.config(),
        }

    # ------------------------------------------------------------------ structure

    def _build(self, window: int, names: tuple[str, ...]) -> None:
        if self.length is not None and self.length > window:
            raise ValueError(
                f"cross_sectional: window length {self.length} > the model's window {window}"
            )
        if self.net is None:
            default = min(DEFAULT_LENGTH, window)
            self.window_length = self.length if self.length is not None else default
            width = self.window_length + (len(VOL_FEATURES) if self.vol_inputs else 0)
            self.net = CrossSectionalAttention(
                width, len(names), self.embedding_dim, self.hidden, self.attention
            )
            self.asset_names = names
        elif names != self.asset_names:
            raise ValueError(
                f"cross_sectional: built for assets {list(self.asset_names)}, got {list(names)}"
            )

    def build(self, inputs: ExpertInputs) -> None:
        """On a single frame the targets are the assets."""
        self._build(inputs.window, inputs.targets)

    def build_panel(self, inputs: PanelInputs) -> None:
        """One embedding per asset of the panel."""
        self._build(inputs.window, inputs.names)

    def embeddings(self) -> torch.Tensor:
        """The learned asset embeddings :math:`e_i`: ``(A, d_e)``."""
        if self.net is None:
            raise ValueError("cross_sectional: not built yet (fit it first)")
        return self.net.embedding.detach().clone()

    # ------------------------------------------------------------------ model

    def _features(self, windows: torch.Tensor, vol: torch.Tensor) -> torch.Tensor:
        """:math:`x_{i,t}`: returns ``(N, A, L)``, with ``vol_inputs`` summaries ``(N, A, V)``."""
        parts = [windows, vol] if self.vol_inputs else [windows]
        return torch.cat(parts, dim=-1).float()

    def _panel_windows(self, inputs: PanelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The float32 features ``(N, A, F)`` and their mask ``(N, A)``, cached per inputs.

        They do not depend on any parameter, so SVI, which passes the same tensors at
        every step, builds them once (the cache is keyed by tensor identity).
        """
        assert self.net is not None  # made by build_panel
        key = (inputs.origins, inputs.observed, *(a.series for a in inputs.assets))
        cached = self._window_cache
        if cached is not None and len(cached[0]) == len(key):
            if all(a is b for a, b in zip(cached[0], key)):
                return cached[1], cached[2]
        windows = self._features(inputs.stacked_windows(self.window_length), inputs.stacked_vol())
        present = inputs.window_observed(self.window_length)
        self._window_cache = (key, windows, present)
        return windows, present

    def _predict(
        self, windows: torch.Tensor, present: torch.Tensor, vol: torch.Tensor, available
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Sample the head; ``(loc, scale, df)`` with ``loc, scale`` ``S + (N, A)``.

        ``windows`` the features ``(N, A, F)``, ``present`` ``(N, A)``, ``vol`` ``(N, A, V)``.
        """
        assert self.net is not None  # made by build / build_panel
        dtype, device = vol.dtype, vol.device
        N, A = present.shape
        h = self.net(windows.float(), present).to(dtype).reshape(N * A, -1)  # (N A, D)
        if self.weight_prior and self.training:  # a penalty of the optimisation only
            pyro.factor("weight_prior", self._weight_log_prior().to(dtype))
        D = h.shape[-1]
        one = torch.ones((), dtype=dtype, device=device)
        intercept = pyro.sample("intercept", dist.Normal(0 * one, one).expand([1]).to_event(1))
        loc = intercept.unsqueeze(-2).expand(intercept.shape[:-1] + (N * A, 1))  # S + (N A, 1)
        if self.location == "network":
            w_prior = dist.Normal(0 * one, one / math.sqrt(D)).expand([1, D]).to_event(2)
            loc = loc + torch.einsum("...ne,...de->...nd", h, pyro.sample("head", w_prior))
        v = pyro.sample(
            "head_scale", dist.Normal(0 * one, 0.5 * one / math.sqrt(D)).expand([1, D]).to_event(2)
        )
        scale = self.noise.sample_scale(vol.reshape(N * A, 1, -1), dtype=dtype, available=available)
        scale = scale * torch.einsum("...ne,...de->...nd", h, v).exp()
        df = self.noise.sample_df(1, dtype=dtype, device=device)
        batch = loc.shape[:-2]
        return loc.reshape(batch + (N, A)), scale.reshape(batch + (N, A)), df

    def _weight_log_prior(self) -> torch.Tensor:
        r""":math:`\sum_j \log \mathcal N(\psi_j; 0, s_j^2)` up to a constant (``weight_prior``)."""
        assert self.net is not None  # made by build / build_panel
        total = torch.zeros((), device=self.net.embedding.device)
        for name, p in self.net.named_parameters():
            if name == "embedding":
                sd = 1.0
            elif p.dim() >= 2:
                sd = 1.0 / math.sqrt(p.shape[-1])
            else:
                sd = BIAS_PRIOR_SCALE
            total = total - 0.5 * (p / sd).square().sum()
        return total

    def model(self, inputs: ExpertInputs) -> dist.TorchDistribution:
        """Single frame: the ``d_y`` targets are the assets, all observed."""
        self.build(inputs)
        returns = inputs.windows(self.window_length).transpose(-1, -2)  # (N, d_y, L)
        windows = self._features(returns, inputs.origin_vol)
        present = torch.ones(windows.shape[:2], dtype=torch.bool, device=windows.device)
        loc, scale, df = self._predict(windows, present, inputs.origin_vol, inputs.scale_features)
        return self.noise.predictive(loc, scale, df)  # event (d_y,): df broadcasts

    def panel_model(self, inputs: PanelInputs) -> list[torch.distributions.Distribution]:
        """Every asset's predictive: ``A`` distributions of batch ``S + (N,)``, event ``(1,)``."""
        self.build_panel(inputs)
        windows, present = self._panel_windows(inputs)
        scale_features = inputs.assets[0].scale_features
        loc, scale, df = self._predict(windows, present, inputs.stacked_vol(), scale_features)
        return [
            self.noise.predictive(loc[..., a : a + 1], scale[..., a : a + 1], df)
            for a in range(inputs.n_assets)
        ]
