r"""Window experts: a neural trunk over the last ``L`` rows and a Bayesian head.

.. math::

    h_t &= \mathrm{LN}\big(f_\psi(X_{t-L+1:t})_{L}\big) \in \mathbb R^{E}, \\
    y_{t+h} &= b + W h_t + s_t\, e^{V h_t}\, \varepsilon_{t+h},
    \qquad \varepsilon \sim \mathcal N(0,1) \text{ or } t_\nu,

where :math:`f_\psi` is a causal sequence trunk (:mod:`bayes_moe.models.nets`) read
at its last step, LN a layer normalisation without parameters (unit-scale features,
so one prior fits every trunk), :math:`s_t` the heteroscedastic scale of
:class:`~bayes_moe.models.experts.noise.NoiseModel`, and :math:`W, V \in
\mathbb R^{d_y \times E}` the head. The expert is a Pyro model with a predictive
distribution, never a point forecast.

Priors (standardized units): :math:`b \sim \mathcal N(0, 1)`,
:math:`W_{ij} \sim \mathcal N(0, 1/E)` (the location term has prior variance one),
:math:`V_{ij} \sim \mathcal N(0, 0.25/E)`.

Two degrees of Bayesianity (``bayesian=``):

``"head"`` (default)
    :math:`b, W, V`, the scale model and ``df`` have priors; the trunk weights
    :math:`\psi` are point estimates optimised with the ELBO (type-II maximum
    likelihood).
``"full"``
    Mean-field priors on every trunk weight as well,
    :math:`\psi_j \sim \mathcal N(0, 1/\mathrm{fan\_in}_j)` for weight matrices and
    :math:`\mathcal N(0, 0.1^2)` for vectors (biases), centred instead where a trunk's
    ``prior_locations()`` says so (TimesNet's identity filter :math:`G = 1`, Hyena's sine
    frequencies). Posterior draws carry leading
    batch dimensions ``S``; they are evaluated with :func:`torch.func.vmap` over
    :func:`torch.func.functional_call`, in chunks of :attr:`WindowExpert.draw_chunk`.

Trunks run in float32 (the head, the scale model and the mixture stay in the
series' float64). Frozen trunks (the two-stage training strategy of
:mod:`bayes_moe.inference.svi`) cache their features for a given set of origins, so
a training step costs no more than a linear expert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, cast

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.func import functional_call, vmap

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.models.experts.base import Expert
from bayes_moe.models.experts.noise import NoiseModel

#: Degrees of Bayesianity a window expert offers.
BAYESIAN_MODES: tuple[str, ...] = ("head", "full")
#: Prior scale of one-dimensional trunk parameters (biases) under ``bayesian="full"``.
BIAS_PRIOR_SCALE: float = 0.1
#: Window length of the probe trunk built to validate options before data are read.
PROBE_LENGTH: int = 64


class WindowExpert(Expert):
    """Base class of the neural experts: a trunk over a window and a Bayesian head.

    Subclasses set :attr:`trunk_class` (a trunk of :mod:`bayes_moe.models.nets`) and
    the class attributes of :class:`Expert`; their keyword options are the trunk's. A
    trunk whose weights depend on the window length (``window_dependent = True``, e.g.
    Linformer's projections along time) is built with ``length=L``.

    Parameters
    ----------
    length : int, optional
        Window length ``L`` the trunk reads; default the model's window.
    columns : sequence of str, optional
        Model columns the trunk reads; default the targets.
    bayesian : {"head", "full"}
        Priors on the head only, or mean-field priors on every trunk weight too.
    family, heteroscedastic, scale_features
        The predictive's noise family and scale model (:class:`NoiseModel`).
    **trunk_options
        Passed to the trunk's constructor (e.g. ``channels=16`` for a TCN).

    Attributes
    ----------
    trunk : nn.Module or None
        Built by :meth:`build` once the number of input columns is known.
    frozen : bool
        Trunk weights fixed and features cached (set by :meth:`freeze`).
    """

    trunk_class: ClassVar[type[nn.Module]]
    #: Posterior draws evaluated at once by ``vmap`` under ``bayesian="full"``.
    draw_chunk: ClassVar[int] = 8
    param_dims = {
        "intercept": ("target",),
        "head": ("target", "embedding"),
        "head_scale": ("target", "embedding"),
        "scale": ("target",),
        "vol_coef": ("target", "scale_feature"),
        "df": ("target",),
    }

    def __init__(
        self,
        length: int | None = None,
        *,
        columns: Sequence[str] | None = None,
        bayesian: str = "head",
        family: str = "studentt",
        heteroscedastic: bool = True,
        scale_features: Sequence[str] | None = None,
        **trunk_options,
    ):
        super().__init__()
        if length is not None and int(length) < 2:
            raise ValueError(f"{self.name}: window length must be >= 2, got {length}")
        if bayesian not in BAYESIAN_MODES:
            raise ValueError(
                f"{self.name}: bayesian must be one of {BAYESIAN_MODES}, got {bayesian!r}"
            )
        if columns is not None and (isinstance(columns, str) or not len(columns)):
            raise ValueError(
                f"{self.name}: columns must be a non-empty list of names, got {columns!r}"
            )
        self.length = None if length is None else int(length)
        self.columns = None if columns is None else tuple(columns)
        self.bayesian = bayesian
        self.noise = NoiseModel(family, heteroscedastic, scale_features)
        self.trunk_options = dict(trunk_options)
        try:  # bad trunk options fail here, before any data is read
            probe = self.trunk_class(1, **self._length_option(self.length or PROBE_LENGTH))
        except TypeError as err:
            raise ValueError(
                f"{self.name}: invalid trunk options {self.trunk_options}: {err}"
            ) from None
        self.embedding_dim = int(cast(int, probe.out_features))
        self.trunk: nn.Module | None = None
        self.frozen = False
        self._cache: tuple | None = None

    # ------------------------------------------------------------------ structure

    def config(self) -> dict:
        """Constructor arguments (the trunk's options included)."""
        return {
            "length": self.length,
            "columns": None if self.columns is None else list(self.columns),
            "bayesian": self.bayesian,
            **self.noise.config(),
            **self.trunk_options,
        }

    def reads(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The columns of the window."""
        return self.columns if self.columns is not None else inputs.targets

    def window_length(self, inputs: ExpertInputs) -> int:
        """``L``: :attr:`length`, or the model's window."""
        return self.length if self.length is not None else inputs.window

    def build(self, inputs: ExpertInputs) -> None:
        """Create the trunk for the number of columns read (idempotent).

        Raises ValueError when a column is missing or the window is too long.
        """
        try:
            inputs.column_index(self.reads(inputs))
        except KeyError as err:
            raise ValueError(f"{self.name}: {err.args[0]}") from None
        if self.window_length(inputs) > inputs.window:
            raise ValueError(
                f"{self.name}: window length {self.length} > the model's window {inputs.window}"
            )
        if self.trunk is None:
            options = self._length_option(self.window_length(inputs))
            self.trunk = self.trunk_class(len(self.reads(inputs)), **options)

    def _length_option(self, length: int) -> dict:
        """The trunk's options, with ``length=L`` for a trunk whose weights depend on ``L``."""
        if getattr(self.trunk_class, "window_dependent", False):
            return {**self.trunk_options, "length": int(length)}
        return self.trunk_options

    def freeze(self) -> None:
        """Fix the trunk weights and cache its features (two-stage training)."""
        if self.bayesian == "full":
            raise ValueError(f"{self.name}: a fully Bayesian trunk has no fixed weights to freeze")
        if self.trunk is not None:
            self.trunk.requires_grad_(False)
        self.frozen = True
        self._cache = None

    def n_parameters(self, inputs: ExpertInputs) -> int:
        """Trunk weights plus head and scale-model parameters (``E`` per target twice)."""
        self.build(inputs)
        d_y = inputs.n_targets
        scale = (
            len(self.noise.feature_names(inputs.scale_features))
            if self.noise.heteroscedastic
            else 0
        )
        head = d_y * (1 + 2 * self.embedding_dim + 1 + scale + (self.noise.family == "studentt"))
        assert self.trunk is not None  # made by build
        return sum(p.numel() for p in self.trunk.parameters()) + head

    # ------------------------------------------------------------------ features

    def window_batch(self, inputs: ExpertInputs) -> torch.Tensor:
        """The trunk's input, shape ``(N, L, c)``, float32."""
        return inputs.windows(self.window_length(inputs), self.reads(inputs)).float()

    def features(self, inputs: ExpertInputs) -> torch.Tensor:
        r"""Deterministic-trunk features :math:`h_t`: shape ``(N, E)`` in the series dtype."""
        self.build(inputs)
        assert self.trunk is not None  # made by build
        if self.frozen:
            cache = self._cache
            if cache is not None and cache[0] is inputs.series and cache[1] is inputs.origins:
                return cache[2]
            with torch.no_grad():
                h = self._normalize(self.trunk(self.window_batch(inputs))[:, -1])
            h = h.to(inputs.series.dtype)
            self._cache = (inputs.series, inputs.origins, h)
            return h
        return self._normalize(self.trunk(self.window_batch(inputs))[:, -1]).to(inputs.series.dtype)

    def _normalize(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(h, (h.shape[-1],))

    def _sample_trunk(self) -> dict[str, torch.Tensor]:
        """Sample every trunk weight from its prior: sites ``trunk_<name>``.

        Prior means are zero except where the trunk's ``prior_locations()`` names a
        parameter whose neutral value is not (TimesNet's identity filter, Hyena's sine
        frequencies).
        """
        assert self.trunk is not None  # made by build, which model runs first
        params = {}
        locations: dict[str, float] = getattr(self.trunk, "prior_locations", dict)()
        for name, p in self.trunk.named_parameters():
            fan_in = p[0].numel() if p.dim() >= 2 else 0
            sd = 1.0 / math.sqrt(fan_in) if fan_in else BIAS_PRIOR_SCALE
            loc = torch.tensor(float(locations.get(name, 0.0)), dtype=p.dtype)
            prior = dist.Normal(loc, sd).expand(p.shape)
            params[name] = pyro.sample("trunk_" + name.replace(".", "_"), prior.to_event(p.dim()))
        return params

    def _full_features(self, inputs: ExpertInputs, params: dict) -> torch.Tensor:
        """Features under sampled trunk weights: ``S + (N, E)`` (``S`` from the draws)."""
        assert self.trunk is not None  # made by build, which model runs first
        x = self.window_batch(inputs)
        shapes = {n: p.shape for n, p in self.trunk.named_parameters()}
        name, value = next(iter(params.items()))
        batch = value.shape[: value.dim() - len(shapes[name])]

        def last_state(weights):
            return self._normalize(functional_call(self.trunk, weights, (x,))[:, -1])

        if not batch:
            h = last_state(params)
        else:
            flat = {n: v.reshape((-1,) + shapes[n]).float() for n, v in params.items()}
            h = vmap(last_state, chunk_size=self.draw_chunk)(flat).reshape(batch + (x.shape[0], -1))
        return h.to(inputs.series.dtype)

    # ------------------------------------------------------------------ model

    def model(self, inputs: ExpertInputs) -> dist.TorchDistribution:
        """Sample the head (and trunk) weights; return the predictive (:meth:`Expert.model`)."""
        self.build(inputs)
        dtype, device = inputs.series.dtype, inputs.series.device
        d_y, E = inputs.n_targets, self.embedding_dim
        one = torch.ones((), dtype=dtype, device=device)
        if self.bayesian == "full":
            h = self._full_features(inputs, self._sample_trunk())  # S + (N, E)
        else:
            h = self.features(inputs)  # (N, E)
        intercept = pyro.sample("intercept", dist.Normal(0 * one, one).expand([d_y]).to_event(1))
        w = pyro.sample(
            "head", dist.Normal(0 * one, one / math.sqrt(E)).expand([d_y, E]).to_event(2)
        )  # S + (d_y, E)
        v = pyro.sample(
            "head_scale",
            dist.Normal(0 * one, 0.5 * one / math.sqrt(E)).expand([d_y, E]).to_event(2),
        )
        loc = intercept.unsqueeze(-2) + torch.einsum("...ne,...de->...nd", h, w)  # S + (N, d_y)
        scale = self.noise.sample_scale(
            inputs.origin_vol, dtype=dtype, available=inputs.scale_features
        )
        scale = scale * torch.einsum("...ne,...de->...nd", h, v).exp()
        df = self.noise.sample_df(d_y, dtype=dtype, device=device)
        return self.noise.predictive(loc, scale, df)
