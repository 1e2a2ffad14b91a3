r"""The expert interface: a Pyro model whose output is a predictive distribution.

An expert maps the history available at each forecast origin to a predictive
distribution of the response :math:`y_{t+h}`,

.. math:: p_m(y_{t+h} \mid \mathcal{F}_t;\ \theta_m), \qquad \theta_m \sim p(\theta_m),

never a point forecast. Its parameters are sampled with ``pyro.sample`` inside
:meth:`Expert.model`, so the expert is a Pyro model; the mixture scopes its sites
under the expert's label (``"ar/coef"``).

Batch convention: during SVI every parameter has its prior's shape; when the
mixture evaluates posterior draws the parameters carry extra leading batch
dimensions ``S`` (they are substituted by :func:`pyro.poutine.condition`). Expert
code must therefore index parameters from the right (``coef[..., i]``) and return
a distribution of batch shape ``S + (N,)`` and event shape ``(d_y,)``, one of
``Independent(Normal | StudentT, 1)``, ``MultivariateNormal`` or
``MultivariateStudentT`` (the families :mod:`bayes_moe.models.distributions`
knows how to index and mix). See :mod:`bayes_moe.data.windows` for the shape table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn

from bayes_moe.data.windows import ExpertInputs

if TYPE_CHECKING:
    from bayes_moe.data.panel_windows import PanelInputs

#: Horizon groups an expert may declare (the gate prior uses them).
HORIZON_GROUPS: tuple[str, ...] = ("short", "medium", "long", "linear", "feature")
#: Capacity (cost) classes: 0 light (AR, TCN), 1 medium, 2 heavy (attention, SSM).
CAPACITY_CLASSES: tuple[int, ...] = (0, 1, 2)

Family = Literal["normal", "studentt"]


class Expert(nn.Module, ABC):
    """Base class of every expert.

    Subclasses declare three class attributes and implement :meth:`model`.

    Attributes
    ----------
    name : str
        Registry key (``bm.list_experts()``).
    group : str
        Horizon group, one of :data:`HORIZON_GROUPS`.
    capacity : int
        Cost class, one of :data:`CAPACITY_CLASSES`; the energy gate tilts weights
        toward high capacity when the market is uncertain.
    param_dims : dict of str to tuple of str
        Optional dimension names of each parameter site (for ArviZ), e.g.
        ``{"coef": ("target", "lag")}``.
    targets_independent : bool
        True when target ``j``'s predictive reads only target ``j``'s column and
        summaries and the ``j``-th entry of each per-target parameter (event shape
        ``(d_y, ...)``): then a panel evaluates every asset in one call, the assets as
        targets of one input, with the parameters shared
        (:func:`~bayes_moe.models.panel.shared_over_assets`). Default False.

    Notes
    -----
    Deterministic weights (for neural experts) are ordinary ``nn.Module``
    parameters: the mixture is an ``nn.Module`` and SVI optimizes them with the
    guide. The model object itself is never fitted in place: fitting works on a copy.
    """

    name: ClassVar[str]
    group: ClassVar[str]
    capacity: ClassVar[int]
    param_dims: ClassVar[dict[str, tuple[str, ...]]] = {}
    targets_independent: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "__abstractmethods__", None) or getattr(cls, "name", None) is None:
            return  # an abstract class, or a base class (WindowExpert) that names no family
        if getattr(cls, "group", None) not in HORIZON_GROUPS:
            raise TypeError(f"{cls.__name__}.group must be one of {HORIZON_GROUPS}")
        if getattr(cls, "capacity", None) not in CAPACITY_CLASSES:
            raise TypeError(f"{cls.__name__}.capacity must be one of {CAPACITY_CLASSES}")

    def reads(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """Columns this expert reads, targets included.

        The mixture asks every expert before it reads any data
        (:meth:`bayes_moe.BayesianMoE.column_readers`, on
        :meth:`ExpertInputs.header <bayes_moe.data.windows.ExpertInputs.header>`, whose
        :attr:`~ExpertInputs.columns` are the offered columns and which has no rows): only
        the columns some expert names become model inputs and are validated, and an error
        about one of them names its experts. Contract: the answer depends on
        ``inputs.columns`` and ``inputs.n_targets`` only, never on values, and asking
        again on the chosen columns gives the same answer.

        The default is the targets alone; experts that read covariates override it.
        """
        return inputs.targets

    def optional_columns(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """Columns among :meth:`reads` this expert accepts with gaps (missing days).

        A frame may hold NaN in a column only if every expert that reads it lists it
        here. Such an expert gets the column with a mask
        (:meth:`ExpertInputs.observed_mask <bayes_moe.data.windows.ExpertInputs.observed_mask>`)
        and must use the value where it is observed and its own documented fallback
        where it is not: the series holds the column's training mean (0 standardized)
        there, a placeholder, not data. Same contract as :meth:`reads` (the answer
        depends on ``inputs.columns`` and ``inputs.n_targets`` only). Targets never
        have gaps. The default accepts none.
        """
        return ()

    @abstractmethod
    def model(self, inputs: ExpertInputs) -> torch.distributions.Distribution:
        """Sample the parameters from their priors and return the predictive.

        Contract: call ``pyro.sample`` once per parameter site (site names are
        local, e.g. ``"coef"``; the mixture adds the expert's label), read only rows
        ``<= t`` of ``inputs.series`` for origin ``t``, and return a distribution of
        batch shape ``S + (N,)``, event shape ``(d_y,)`` over the standardized
        response, where ``S`` are the leading batch dimensions the parameters carry.

        Parameters
        ----------
        inputs : ExpertInputs
            History and origins.

        Returns
        -------
        Distribution
            ``p_m(y_{t+h} | F_t)`` for every origin.
        """

    def build(self, inputs: ExpertInputs) -> None:
        """Create what depends on the data's shape (a neural trunk's input width).

        Called before fitting and before a checkpoint's weights are loaded; the
        default has nothing to build. Raises ValueError for inputs the expert cannot read.
        """

    def config(self) -> dict:
        """Constructor arguments, JSON-serializable (used by checkpoints)."""
        return {}

    def param_coords(self, inputs: ExpertInputs) -> dict[str, list]:
        """Coordinate values of the dimensions in :attr:`param_dims` (for ArviZ).

        Dimensions not listed get integer coordinates; ``target`` and ``vol_feature``
        are filled in by the mixture. The default names ``scale_feature``, the
        volatility summaries of the expert's scale model, when it has one (``noise``).
        Subclasses extend the returned dict.
        """
        noise = getattr(self, "noise", None)
        if noise is None:
            return {}
        return {"scale_feature": list(noise.feature_names(inputs.scale_features))}

    def extra_repr(self) -> str:
        """Constructor arguments in ``repr``."""
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


class PanelExpert(Expert):
    """An expert that reads every asset of a panel at once (the cross-sectional expert).

    Other experts run per asset with shared parameters
    (:class:`~bayes_moe.models.panel.PanelProgram`); a panel expert sees the whole
    :class:`~bayes_moe.data.panel_windows.PanelInputs` and returns one predictive per asset.
    On a single series it reads the targets as the assets (:meth:`Expert.model`).
    """

    @abstractmethod
    def build_panel(self, inputs: PanelInputs) -> None:
        """Create what depends on the panel's shape (the number of assets)."""

    @abstractmethod
    def panel_model(self, inputs: PanelInputs) -> list[torch.distributions.Distribution]:
        """Sample the parameters once and return every asset's predictive.

        Returns
        -------
        list of Distribution
            ``A`` predictives, each of batch ``S + (N,)`` and event ``(1,)``.
        """
