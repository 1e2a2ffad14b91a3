r"""The Bayesian mixture of experts with a Markov-switching gate.

.. math::

    p(y_{1:N} \mid \theta) = \sum_{z_{1:N}} \pi_{z_1} \prod_{n} \Pi_{z_{n-1} z_n}
    \sum_{m=1}^{M} g_{n, z_n, m}\, p_m^{(z_n)}(y_n \mid X_n; \theta_m),

where :math:`p_m^{(k)}` is expert ``m``'s predictive stretched by regime ``k``'s
volatility level (:mod:`bayes_moe.models.gate`),
with the regime path marginalised exactly by the forward algorithm
(:func:`bayes_moe.kernels.hmm.hmm_log_evidence`: on the CPU the compiled recursion
with its exact gradient, on a GPU a parallel scan over time), entering the Pyro model
as one ``pyro.factor``. :class:`BayesianMoE` is the model
specification (experts, gate, window); fitting returns a separate results object
and leaves the specification unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import pyro
import torch
from pyro.contrib.autoname import scope
from torch import nn
from torch.distributions.constraints import Constraint

from bayes_moe.data.errors import DataError
from bayes_moe.data.panel import panel_frame
from bayes_moe.data.panel_windows import PanelData, prepare_panel
from bayes_moe.data.windows import ExpertInputs, ModelData, non_overlapping_origins, prepare
from bayes_moe.kernels.entropy import DEFAULT_ENTROPY_NODES
from bayes_moe.kernels.hmm import hmm_log_evidence
from bayes_moe.models.distributions import regime_log_prob
from bayes_moe.models.energy import (
    EnergyGate,
    EnergyParts,
    EnergyTilt,
    as_energy_gate,
    energy_parts,
    tilt_weights,
)
from bayes_moe.models.experts import Expert, expert_list, expert_spec
from bayes_moe.models.gate import GateOutput, MarkovGate

if TYPE_CHECKING:
    from bayes_moe.data.panel_windows import PanelInputs
    from bayes_moe.inference.multi_horizon import MultiHorizonFit
    from bayes_moe.inference.panel_fit import PanelFit
    from bayes_moe.inference.results import MoEFit
    from bayes_moe.inference.svi_options import SVIOptions
    from bayes_moe.models.panel import PanelProgram


@dataclass(frozen=True)
class MixtureComponents:
    r"""Everything the mixture computes for one set of parameters (or a batch ``S``).

    Attributes
    ----------
    experts : list of Distribution
        Predictive of each expert, batch ``S + (N,)``, event ``(d_y,)``.
    gate : GateOutput
        The untilted gate.
    tilt : EnergyTilt or None
        The energy gate's :math:`\beta, \tau` (None without energy gating).
    """

    experts: list
    gate: GateOutput
    tilt: EnergyTilt | None = None

    def expert_log_probs(self, response: torch.Tensor) -> torch.Tensor:
        """``log p_m(y_n)`` at the experts' own scale: shape ``S + (N, M)``.

        ``response`` ``(N, d_y)`` must be finite.
        """
        return torch.stack([d.log_prob(response) for d in self.experts], dim=-1)

    def regime_log_probs(self, response: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p_m^{(k)}(y_n)`, each expert at each regime's level: ``S + (N, K, M)``."""
        log_scale = self.gate.log_scale
        return torch.stack([regime_log_prob(d, response, log_scale) for d in self.experts], dim=-1)

    def log_emission(self, response: torch.Tensor) -> torch.Tensor:
        r"""Regime emissions :math:`\log \sum_m g_{n,k,m} p^{(k)}_m(y_n)`: shape ``S + (N, K)``."""
        return torch.logsumexp(self.gate.log_weights + self.regime_log_probs(response), dim=-1)


#: The default experts of a mixture: AR, VAR and Kalman (the best P1 set measured so far).
DEFAULT_EXPERTS: tuple[str, ...] = ("ar", "var", "kalman")


def as_targets(target: str | Sequence[str]) -> list[str]:
    """The target column names as a list (one name or a sequence of names)."""
    return [target] if isinstance(target, str) else list(target)


def describe_readers(labels: Sequence[str]) -> str:
    """``"expert 'var'"``, ``"experts 'var', 'tcn'"`` or ``"expert 'var' and the gate"``.

    The readers of a column, for errors; the label ``"gate"`` is the Markov gate.
    """
    experts = [label for label in labels if label != "gate"]
    names = ", ".join(repr(label) for label in experts)
    text = f"expert {names}" if len(experts) == 1 else f"experts {names}" if experts else ""
    if len(experts) < len(labels):
        text = f"{text} and the gate" if text else "the gate"
    return text


def expert_labels(experts: Sequence[Expert]) -> list[str]:
    """Unique labels: the expert name, numbered when a name repeats (``ar_1``, ``ar_2``)."""
    names = [e.name for e in experts]
    labels: list[str] = []
    seen: dict[str, int] = {}
    for name in names:
        if names.count(name) == 1:
            labels.append(name)
        else:
            seen[name] = seen.get(name, 0) + 1
            labels.append(f"{name}_{seen[name]}")
    return labels


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site of the mixture: one draw's shape, its dtype, its support.

    ``support.check(x)`` holds everywhere for a draw ``x`` the prior could give (e.g.
    ``positive`` for a scale, ``simplex`` for transition rows).
    """

    shape: torch.Size
    dtype: torch.dtype
    support: Constraint


#: How ``h``-day responses enter the likelihood for ``h > 1`` (:meth:`MoEProgram.forward`).
HORIZON_LIKELIHOODS: tuple[str, ...] = ("non_overlapping", "overlapping")


def check_horizon_likelihood(name: str) -> str:
    """``name`` if it is one of :data:`HORIZON_LIKELIHOODS`, else a ValueError naming them."""
    if name not in HORIZON_LIKELIHOODS:
        raise ValueError(
            f"horizon_likelihood must be one of {list(HORIZON_LIKELIHOODS)}, got {name!r}"
        )
    return name


class MoEProgram(nn.Module):
    """The Pyro model of the mixture (an ``nn.Module`` so SVI sees expert weights).

    Parameters
    ----------
    experts : sequence of Expert
    gate : MarkovGate
    expert_dropout : float
        Probability of dropping each expert from the mixture at a training step
        (weights renormalised over the kept experts; at least one is kept).
    horizon_likelihood : {"non_overlapping", "overlapping"}
        Which ``h``-day responses enter the likelihood when ``h > 1``
        (:data:`HORIZON_LIKELIHOODS`, :meth:`forward`).
    energy : EnergyGate, optional
        Tilt the gate's weights by the energy (:mod:`bayes_moe.models.energy`).
    """

    def __init__(
        self,
        experts: Sequence[Expert],
        gate: MarkovGate,
        expert_dropout: float = 0.0,
        horizon_likelihood: str = "non_overlapping",
        energy: EnergyGate | None = None,
    ):
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.labels = expert_labels(experts)
        self.groups = [e.group for e in experts]
        self.capacity = [e.capacity for e in experts]
        #: Positions of the light experts (lowest capacity class), which measure the energy.
        self.light = [m for m, c in enumerate(self.capacity) if c == min(self.capacity)]
        self.gate = gate
        self.expert_dropout = float(expert_dropout)
        self.horizon_likelihood = check_horizon_likelihood(horizon_likelihood)
        self.energy = energy

    def expert_inputs(self, inputs: ExpertInputs) -> ExpertInputs:
        """``inputs`` with the scale features the gate leaves to the experts.

        When the regimes carry the volatility level, the slow summaries drive the
        transitions and the experts' scale models read the others by default
        (:attr:`MarkovGate.expert_features`).
        """
        return inputs.with_scale_features(self.gate.expert_features)

    def build(self, inputs: ExpertInputs) -> MoEProgram:
        """Let every expert create its data-shaped parts (:meth:`Expert.build`); returns self."""
        expert_inputs = self.expert_inputs(inputs)
        for expert in self.expert_modules:
            expert.build(expert_inputs)
        return self

    @property
    def expert_modules(self) -> list[Expert]:
        """The experts, typed (``self.experts`` is their ``nn.ModuleList``)."""
        return cast(list[Expert], list(self.experts))

    def components(self, inputs: ExpertInputs, skip: Sequence[int] = ()) -> MixtureComponents:
        """Sample every parameter (sites ``"<label>/<param>"``, ``"gate/<param>"``).

        Experts at the positions ``skip`` are not run: their entry of
        :attr:`MixtureComponents.experts` is None (sparse inference evaluates them
        later, at some origins only: :meth:`expert_predictive`).
        """
        dists = [
            None if m in skip else self.expert_predictive(m, inputs)
            for m in range(len(self.experts))
        ]
        with scope(prefix="gate", inner=False):
            gate = self.gate.model(inputs, self.groups)
        tilt = None
        if self.energy is not None:
            with scope(prefix="energy", inner=False):
                tilt = self.energy.model(
                    inputs.horizon, self.gate.n_regimes, inputs.series.dtype, inputs.series.device
                )
        return MixtureComponents(dists, gate, tilt)

    def expert_predictive(self, m: int, inputs: ExpertInputs) -> torch.distributions.Distribution:
        """Expert ``m``'s parameters (sites ``"<label>/<param>"``) and predictive at ``inputs``."""
        with scope(prefix=self.labels[m], inner=False):
            return self.expert_modules[m].model(self.expert_inputs(inputs))

    def energy_parts(
        self, comps: MixtureComponents, log_p: torch.Tensor, inputs: ExpertInputs
    ) -> EnergyParts:
        r"""The energy :math:`E_n` of every origin from the light experts' untilted mixture.

        See :func:`~bayes_moe.models.energy.energy_parts`; ``log_p``
        (:meth:`MixtureComponents.regime_log_probs`, ``S + (N, K, M)``, or already the
        light experts' ``M_L`` columns) is read for the first ``N - h`` origins only,
        whose responses are known at the last close. Only the light experts' entries
        of ``comps.experts`` are read.
        """
        gate = comps.gate
        light = self.light
        if log_p.shape[-1] != len(light):
            log_p = log_p[..., light]
        return energy_parts(
            gate.log_init,
            gate.hmm_trans,
            gate.time_varying,
            gate.log_weights,
            log_p,
            self.scored_origins(inputs),
            [comps.experts[m] for m in light],
            gate.log_scale,
            inputs.horizon,
            light=light,
            n_nodes=self.energy.n_nodes if self.energy is not None else DEFAULT_ENTROPY_NODES,
        )

    def tilted_weights(self, comps: MixtureComponents, energy: EnergyParts) -> torch.Tensor:
        """The gate's log weights tilted by ``energy`` (``S + (N, K, M)``); untilted without it."""
        if comps.tilt is None:
            return comps.gate.log_weights
        weights = comps.gate.log_weights
        capacity = torch.tensor(self.capacity, dtype=weights.dtype, device=weights.device)
        return tilt_weights(weights, energy.total, comps.tilt, capacity)

    def latent_shapes(self, inputs: ExpertInputs) -> dict[str, torch.Size]:
        """Shape of every latent sample site (``"<label>/<param>"``, ``"gate/<param>"``).

        Every site is a global parameter (the regime path is marginalised, nothing is
        sampled per day), so the shapes do not depend on the number of origins and the
        first few origins of ``inputs`` are traced, once, from the prior. The global
        torch random state is left as it was.

        Parameters
        ----------
        inputs : ExpertInputs
            Inputs the program was built for (:meth:`build`).

        Returns
        -------
        dict of str to torch.Size
            In the order the sites are sampled; ``S`` draws of site ``name`` have shape
            ``(S, *shapes[name])``.
        """
        return {name: site.shape for name, site in self.latent_sites(inputs).items()}

    def latent_sites(self, inputs: ExpertInputs | PanelInputs) -> dict[str, LatentSite]:
        """Shape, dtype and prior support of every latent sample site (a panel's too).

        Sites and order as :meth:`latent_shapes`, from the same prior trace; the
        checkpoint reader checks stored draws against them.
        """
        few = inputs.at(inputs.origins[:8])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            trace = pyro.poutine.trace(self.components).get_trace(few)
        nodes = cast(dict[str, dict[str, Any]], trace.nodes)
        return {
            name: LatentSite(site["value"].shape, site["value"].dtype, site["fn"].support)
            for name, site in nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
        }

    def forward(self, inputs: ExpertInputs, response: torch.Tensor) -> torch.Tensor:
        r"""The model: ``pyro.factor`` of the exact marginal likelihood of ``response``.

        With ``h > 1`` the responses of consecutive origins overlap in ``h - 1`` days.
        ``horizon_likelihood="non_overlapping"`` (the default) lets only the origins of
        :func:`~bayes_moe.data.windows.non_overlapping_origins` emit: the regime chain
        still runs over every origin, the others get the emission 1 (no information),
        so the likelihood is exact for disjoint ``h``-day sums that count every day
        once, ending with the most recent one. ``"overlapping"`` scores every origin's
        sum as if they were independent observations, which counts each day about
        ``h`` times and makes the posterior overconfident (kept for comparisons:
        ``benchmarks/horizon_coverage.py``).

        The experts see ``inputs`` with ``fitting=True``: one that models other data
        beside the response (the ``volatility`` expert's measurement equation for the
        next day's range variance) adds its ``pyro.factor`` here, and only here.

        Parameters
        ----------
        inputs : ExpertInputs
            Origins whose response is observed.
        response : Tensor, shape ``(N, d_y)``
        """
        comps = self.components(replace(inputs, fitting=True))
        log_p = comps.regime_log_probs(response)  # S + (N, K, M)
        log_weights = comps.gate.log_weights
        if comps.tilt is not None:
            log_weights = self.tilted_weights(comps, self.energy_parts(comps, log_p, inputs))
        if self.training and self.expert_dropout > 0:
            log_weights = self._drop(log_weights)
        gate = comps.gate
        log_emit = torch.logsumexp(log_weights + log_p, dim=-1)  # S + (N, K)
        scored = self.scored_origins(inputs)
        if not bool(scored.all()):
            log_emit = log_emit.masked_fill(~scored.unsqueeze(-1), 0.0)
        log_evidence = hmm_log_evidence(
            gate.log_init, gate.hmm_trans, log_emit, time_varying=gate.time_varying
        )
        pyro.factor("log_evidence", log_evidence)
        return log_evidence

    def count_scored(self, inputs: ExpertInputs, response: torch.Tensor) -> int:
        """Responses in the likelihood (:meth:`scored_origins`)."""
        return int(self.scored_origins(inputs).sum())

    def scored_origins(self, inputs: ExpertInputs) -> torch.Tensor:
        """Which origins' responses enter the likelihood (:meth:`forward`): BoolTensor ``(N,)``."""
        if inputs.horizon > 1 and self.horizon_likelihood == "non_overlapping":
            return non_overlapping_origins(inputs.n_origins, inputs.horizon).to(
                inputs.origins.device
            )
        return torch.ones(inputs.n_origins, dtype=torch.bool, device=inputs.origins.device)

    def _drop(self, log_weights: torch.Tensor) -> torch.Tensor:
        M = log_weights.shape[-1]
        keep = torch.rand(M) >= self.expert_dropout
        if not keep.any():
            keep[torch.randint(M, ())] = True
        masked = log_weights.masked_fill(~keep, float("-inf"))
        return masked - torch.logsumexp(masked, dim=-1, keepdim=True)


def _values_in(column: pd.Series) -> int:
    """Number of values (not NaN) of a numeric column; a non-numeric one counts as full."""
    if not pd.api.types.is_numeric_dtype(column.dtype):
        return len(column)  # left to validation, which names it
    return int(column.notna().sum())


class BayesianMoE:
    r"""Bayesian mixture of experts with a Markov-switching gate (model specification).

    Parameters
    ----------
    experts : str or sequence of str, mapping or Expert
        ``"all"`` (every family of ``bm.list_experts()``), comma-separated names
        (``"ar,tcn,gru"``), or a sequence of names, config mappings
        (``{"name": "ar", "order": 0}``) and instances.
    n_regimes : int
        Number of regimes ``K`` (ignored when ``gate`` is given).
    window : int
        Context window ``L``.
    gate : MarkovGate, optional
        Custom gate (e.g. with a fixed assignment); default ``MarkovGate(n_regimes)``:
        regimes with ordered volatility levels whose transitions respond to the
        weekly, monthly and EWMA realized variance (:mod:`bayes_moe.models.gate`).
    expert_dropout : float
        See :class:`MoEProgram`.
    horizon_likelihood : {"non_overlapping", "overlapping"}
        For ``h > 1``: the likelihood of disjoint ``h``-day sums (default, honest) or
        of every origin's overlapping sum (overconfident; for comparisons). See
        :meth:`MoEProgram.forward`.
    energy_gate : EnergyGate, dict, bool, optional
        Energy-based gating (:mod:`bayes_moe.models.energy`): ``True`` fits
        :math:`\beta` and :math:`\tau` with their priors, ``EnergyGate(beta=...,
        tau=...)`` or a dict of its options fixes or re-scales them;
        ``EnergyGate(sparse=0.05)`` adds sparse inference. The experts must span at
        least two capacity classes (else the tilt is the identity).
    asset_levels : bool, default False
        Panels only: each asset loads on the market regimes' volatility levels with its
        own :math:`\rho_i \sim \mathrm{LogNormal}(0, 0.5^2)`, its levels
        :math:`\rho_i \lambda_k` (:meth:`~bayes_moe.models.panel.PanelProgram.sample_loading`);
        default: every asset has the market's levels.

    Examples
    --------
    >>> import bayes_moe as bm
    >>> model = bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=3, window=64)
    >>> frame = bm.data.load_sp500()
    >>> fit = model.fit(frame, target="ret", num_steps=1500, seed=0)  # doctest: +SKIP
    """

    def __init__(
        self,
        experts: str | Sequence[str | Mapping | Expert] = DEFAULT_EXPERTS,
        n_regimes: int = 3,
        window: int = 64,
        *,
        gate: MarkovGate | None = None,
        expert_dropout: float = 0.0,
        horizon_likelihood: str = "non_overlapping",
        energy_gate: EnergyGate | dict | bool | None = None,
        asset_levels: bool = False,
    ):
        self.experts = expert_list(experts)
        self.asset_levels = bool(asset_levels)
        self.gate = gate if gate is not None else MarkovGate(n_regimes)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        if not 0.0 <= expert_dropout < 1.0:
            raise ValueError(f"expert_dropout must be in [0, 1), got {expert_dropout}")
        self.expert_dropout = float(expert_dropout)
        self.horizon_likelihood = check_horizon_likelihood(horizon_likelihood)
        self.energy_gate = as_energy_gate(energy_gate)
        if self.energy_gate is not None and len({e.capacity for e in self.experts}) < 2:
            labels = zip(self.labels, self.experts)
            classes = ", ".join(f"{label} {e.capacity}" for label, e in labels)
            raise ValueError(
                "energy gating tilts weights between capacity classes, but every expert "
                f"has the same one ({classes}); add a heavier or lighter expert"
            )
        for e in self.experts:
            needed = max(getattr(e, "order", 0), getattr(e, "length", None) or 0)
            if needed > self.window:
                raise ValueError(
                    f"expert {e.name!r} needs {needed} days of history but the window is "
                    f"{self.window}"
                )

    @property
    def n_regimes(self) -> int:
        """``K``."""
        return self.gate.n_regimes

    @property
    def labels(self) -> list[str]:
        """Labels of the experts, in order (parameter sites are ``"<label>/<param>"``)."""
        return expert_labels(self.experts)

    def config(self) -> dict:
        """JSON-serializable specification (used by checkpoints)."""
        return {
            "experts": [expert_spec(e) for e in self.experts],
            "gate": self.gate.config(),
            "window": self.window,
            "expert_dropout": self.expert_dropout,
            "horizon_likelihood": self.horizon_likelihood,
            "energy_gate": None if self.energy_gate is None else self.energy_gate.config(),
            "asset_levels": self.asset_levels,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> BayesianMoE:
        """Inverse of :meth:`config`.

        Configurations written before regimes had volatility levels (checkpoint format
        1) have no ``volatility_levels`` key; they describe gates without levels. Those
        written before ``horizon_likelihood`` existed were fitted with ``"overlapping"``.
        """
        gate = {"volatility_levels": False, **config["gate"]}
        return cls(
            experts=config["experts"],
            window=config["window"],
            gate=MarkovGate(**gate),
            expert_dropout=config.get("expert_dropout", 0.0),
            horizon_likelihood=config.get("horizon_likelihood", "overlapping"),
            energy_gate=config.get("energy_gate"),
            asset_levels=config.get("asset_levels", False),
        )

    def program(self) -> MoEProgram:
        """A fresh Pyro program with copies of the experts (the spec stays untouched)."""
        if self.asset_levels:
            raise ValueError(
                "asset_levels gives each asset of a panel its own regime levels; fit a "
                "panel (panel=True or asset_col=...) or leave it False"
            )
        return MoEProgram(
            copy.deepcopy(self.experts),
            self.gate,
            self.expert_dropout,
            self.horizon_likelihood,
            self.energy_gate,
        )

    def panel_program(self) -> PanelProgram:
        """A fresh panel program (:mod:`bayes_moe.models.panel`) with copies of the experts."""
        from bayes_moe.models.panel import PanelProgram

        program = PanelProgram(
            copy.deepcopy(self.experts),
            self.gate,
            self.expert_dropout,
            self.horizon_likelihood,
            self.energy_gate,
        )
        program.asset_levels = self.asset_levels
        return program

    def prepare_panel(
        self,
        frame: pd.DataFrame,
        *,
        horizon: int = 1,
        asset_col: str | None = None,
        value_col: str | None = None,
    ) -> PanelData:
        """Validate a panel and build its tensors (:mod:`bayes_moe.data.panel_windows`).

        Parameters
        ----------
        frame : DataFrame
            Wide (one column of returns per asset, NaN where an asset has no value) or,
            with ``asset_col``, long (a date index, an asset column and a value column).
        horizon : int
        asset_col, value_col : str, optional
            See :func:`~bayes_moe.data.panel_frame`.

        Raises
        ------
        DataError
            For every bad input, naming the asset and the date, before any fitting; also
            when an expert reads a covariate or the model has an energy gate
            (ValueError), which panel fits do not support.
        """
        self.panel_program().check_panel()
        wide = panel_frame(frame, asset_col=asset_col, value_col=value_col)
        asset = str(wide.columns[0])
        for label, read in self._reads(ExpertInputs.header([asset], 1, window=self.window)):
            extra = [c for c in read if c != asset]
            if extra:
                who = "the gate" if label == "gate" else f"expert {label!r}"
                raise DataError(
                    f"{who} reads columns {extra}; on a panel every expert reads each "
                    "asset's returns only"
                )
        return prepare_panel(wide, window=self.window, horizon=horizon)

    def column_readers(
        self, target: str | Sequence[str], covariates: Sequence[str]
    ) -> dict[str, list[str]]:
        """The offered covariates that some expert reads, each with its experts' labels.

        Every expert is asked :meth:`Expert.reads` on the column names alone
        (:meth:`ExpertInputs.header`), before any value is read; the gate's transition
        columns (:meth:`MarkovGate.reads`) are listed with the label ``"gate"``.

        Parameters
        ----------
        target : str or sequence of str
            Target column(s); every expert reads them, so they are not listed.
        covariates : sequence of str
            Columns offered to the experts besides the targets.

        Returns
        -------
        dict of str to list of str
            In the order of ``covariates``, each covariate some expert reads mapped to
            the labels of the experts that read it; covariates no expert reads are left out.

        Raises
        ------
        DataError
            If an expert reads a column that is not offered, naming the expert, the
            column and the offered columns.
        """
        targets = as_targets(target)
        offered = targets + [c for c in dict.fromkeys(covariates) if c not in targets]
        header = ExpertInputs.header(offered, len(targets), window=self.window)
        readers: dict[str, list[str]] = {}
        for label, read in self._reads(header):
            unknown = [c for c in read if c not in offered]
            if unknown:
                who = "the gate" if label == "gate" else f"expert {label!r}"
                raise DataError(
                    f"{who} reads column(s) {unknown}, which are not among the "
                    f"columns offered to the model {offered}"
                )
            for column in read:
                readers.setdefault(column, []).append(label)
        return {c: readers[c] for c in offered[len(targets) :] if c in readers}

    def _reads(self, header: ExpertInputs) -> list[tuple[str, tuple[str, ...]]]:
        """``(label, columns read)`` of every expert, then of the gate (label ``"gate"``)."""
        read = [(label, tuple(e.reads(header))) for label, e in zip(self.labels, self.experts)]
        return read + [("gate", self.gate.reads())]

    def columns_with_gaps(
        self, target: str | Sequence[str], covariates: Sequence[str]
    ) -> list[str]:
        """The read covariates that may have gaps: every expert reading them accepts them.

        (:meth:`Expert.optional_columns`; the gate accepts gaps in its transition
        columns, :meth:`MarkovGate.reads`); asked on the column names alone, like
        :meth:`column_readers`. A NaN in any other read column is refused, naming it.
        """
        targets = as_targets(target)
        offered = targets + [c for c in dict.fromkeys(covariates) if c not in targets]
        header = ExpertInputs.header(offered, len(targets), window=self.window)
        accepted: dict[str, bool] = {}
        for expert in self.experts:
            optional = set(expert.optional_columns(header))
            for column in expert.reads(header):
                accepted[column] = accepted.get(column, True) and column in optional
        for column in self.gate.reads():  # the gate reads every covariate with gaps
            accepted[column] = accepted.get(column, True)
        return [c for c in offered[len(targets) :] if accepted.get(c, False)]

    def prepare(
        self,
        frame: pd.DataFrame,
        target: str | Sequence[str] = "ret",
        *,
        covariates: Sequence[str] | None = None,
        horizon: int = 1,
        allow_outliers: bool = False,
    ) -> ModelData:
        """Validate the columns the experts read and build the model's tensors.

        Only the targets and the offered covariates that some expert reads
        (:meth:`column_readers`) become model columns; the other columns of ``frame``
        (a ticker, a volume with gaps) are neither read nor checked, and an error about a
        column that is read names the experts that read it (see :func:`prepare`). A read
        covariate may have gaps (NaN) when every expert reading it accepts them
        (:meth:`columns_with_gaps`): the VIX, which starts in 2014 in ``arch.data``, for
        the ``volatility`` expert. Such a column with fewer than two values in ``frame``
        (the VIX in a training window that ends before 2014) is not offered: the fit
        does not read it, then or when it is updated with newer rows.

        Parameters
        ----------
        frame : DataFrame
        target : str or sequence of str
        covariates : sequence of str, optional
            Columns offered to the experts; default every column of ``frame`` besides the
            targets.
        horizon : int
        allow_outliers : bool, default False
            Accept target values far from the rest (a robust z-score over
            :data:`~bayes_moe.data.plausibility.OUTLIER_THRESHOLD`), which are refused by
            default as likely data errors; see
            :func:`~bayes_moe.data.plausibility.check_plausible_values`.

        Raises
        ------
        DataError
            For any bad input, before any fitting (:func:`prepare`).
        """
        targets = as_targets(target)
        offered = list(frame.columns) if covariates is None else list(covariates)
        readers = self.column_readers(targets, offered)
        with_gaps = self.columns_with_gaps(targets, list(readers))
        # A column with gaps that has (almost) no values here cannot inform the fit:
        # it is not offered, so the fit neither reads it now nor later.
        empty = [c for c in with_gaps if c in frame.columns and _values_in(frame[c]) < 2]
        if empty:
            offered = [c for c in offered if c not in empty]
            readers = self.column_readers(targets, offered)
            with_gaps = [c for c in with_gaps if c not in empty]
        return prepare(
            frame,
            targets=targets,
            covariates=list(readers),
            window=self.window,
            horizon=horizon,
            readers={column: describe_readers(labels) for column, labels in readers.items()},
            allow_outliers=allow_outliers,
            optional=with_gaps,
        )

    def fit(
        self,
        frame: pd.DataFrame,
        target: str | Sequence[str] = "ret",
        *,
        covariates: Sequence[str] | None = None,
        horizon: int | Sequence[int] = 1,
        allow_outliers: bool = False,
        panel: bool = False,
        asset_col: str | None = None,
        options: SVIOptions | None = None,
        client=None,
        **svi_options,
    ) -> MoEFit | MultiHorizonFit | PanelFit:
        """Fit by SVI; see :func:`bayes_moe.inference.svi.fit_svi` for the options.

        Parameters
        ----------
        frame : DataFrame
            Date-indexed frame (e.g. ``bm.data.load_sp500()``).
        target : str or sequence of str
            Column(s) to forecast.
        covariates : sequence of str, optional
            Columns offered to the experts; default every other column. Only those some
            expert reads become model inputs and must be clean (see :meth:`prepare`).
        horizon : int or sequence of int
            Forecast horizon ``h`` in rows (days); the response is the ``h``-day sum.
            Several (``[1, 5, 20]``): one fit per horizon, every horizon's data
            validated before the first fit starts
            (:mod:`bayes_moe.inference.multi_horizon`), one after the other or, with
            ``client``, at once.
        allow_outliers : bool, default False
            Accept implausible target values (see :meth:`prepare`); without it a value
            like a 1e6 % return stops the fit before it starts, naming its date.
        panel : bool, default False
            ``frame`` is a panel of assets, one column of returns each (``target`` and
            ``covariates`` are then unused): one market regime path shared by every
            asset, every expert per asset with shared parameters
            (:mod:`bayes_moe.models.panel`); returns a
            :class:`~bayes_moe.inference.panel_fit.PanelFit`.
        asset_col : str, optional
            ``frame`` is a long panel with this asset column (implies ``panel=True``).
        options : SVIOptions, optional
            The SVI settings as one value
            (:class:`~bayes_moe.inference.svi_options.SVIOptions`, which documents them).
        client : distributed.Client, optional
            With several horizons: fit them as tasks on this Dask cluster, all at once
            (:func:`~bayes_moe.inference.multi_horizon.fit_horizons`); the fits equal
            the serial ones with the same options. Ignored for one horizon.
        **svi_options
            Fields of :class:`SVIOptions` replacing those of ``options``: ``num_steps``,
            ``seed``, ``num_draws``...; ``checkpoint="svi.safetensors"``,
            ``checkpoint_every=100`` and ``resume=True`` make a fit survive being killed
            (:mod:`bayes_moe.inference.svi_state`; with several horizons, one file per
            horizon, ``svi.h5.safetensors``). An unknown name is a TypeError, before
            any work.

        Returns
        -------
        MoEFit, MultiHorizonFit for a sequence of horizons, or PanelFit for a panel

        Raises
        ------
        DataError
            For any bad input, before any fitting (:meth:`prepare`).
        NonFiniteLossError
            If the optimisation diverges (:func:`~bayes_moe.inference.svi.fit_svi`).
        """
        from bayes_moe.inference.multi_horizon import check_horizons, fit_horizons
        from bayes_moe.inference.svi import SVIOptions, fit_svi

        settings = SVIOptions.merge(options, svi_options)  # unknown names: before any work
        if panel or asset_col is not None:
            from bayes_moe.inference.panel_fit import fit_panel

            if not isinstance(horizon, int):
                raise ValueError(f"a panel fit takes one horizon, got {horizon}")
            return fit_panel(
                self, self.prepare_panel(frame, horizon=horizon, asset_col=asset_col), settings
            )
        horizons = check_horizons(horizon)
        prepared = {
            h: self.prepare(
                frame, target, covariates=covariates, horizon=h, allow_outliers=allow_outliers
            )
            for h in horizons
        }
        if isinstance(horizon, int):
            return fit_svi(self, prepared[horizon], settings)
        return fit_horizons(self, prepared, settings, client=client)
