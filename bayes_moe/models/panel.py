r"""The mixture on a panel of assets: one market regime path, per-asset emissions.

.. math::

    p(y \mid \theta) = \sum_{z_{1:N}} \pi_{z_1} \prod_n \Pi_{z_{n-1} z_n}
    \prod_{i \in O_n} \sum_{m=1}^{M} g_{n, z_n, m}\, p_m^{(z_n)}(y_{i,n} \mid X_{i,n}; \theta_m),

one regime path :math:`z` shared by every asset (the market regime), the gate's weights
:math:`g` read from the market's volatility summaries
(:mod:`bayes_moe.data.panel_windows`), and the emission of day ``n`` the product over the
assets :math:`O_n` scored that day (response and window observed): a missing asset-day
contributes the factor 1, so it changes nothing else's likelihood. The path is still
marginalised exactly by the forward algorithm over days
(:func:`~bayes_moe.kernels.hmm.hmm_log_evidence`).

Every expert that is not a :class:`~bayes_moe.models.experts.base.PanelExpert` runs per
asset with one set of parameters (:func:`shared_over_assets`): its sites are sampled
once, on the first asset, and every other asset is evaluated at the same values. An
expert whose targets are independent (:attr:`Expert.targets_independent`: AR, Kalman)
evaluates the other assets in one call, as the targets of one input
(:func:`stack_assets`), its per-target parameters repeated for each
(:func:`stacked_sites` finds them, once, when the program is built): one Kalman filter
over ``(A, T)`` instead of ``A`` filters over ``T``, with the same numbers. The regimes'
volatility levels stretch every asset's predictive alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.contrib.autoname import scope

from bayes_moe.data.panel_windows import PanelInputs
from bayes_moe.data.windows import ExpertInputs
from bayes_moe.kernels.hmm import hmm_log_evidence
from bayes_moe.models.distributions import (
    decompose,
    first_marginal,
    regime_log_prob_margins,
)
from bayes_moe.models.experts.base import PanelExpert
from bayes_moe.models.gate import GateOutput
from bayes_moe.models.moe import MixtureComponents, MoEProgram


def shared_over_assets(
    run: Callable[[ExpertInputs], torch.distributions.Distribution],
    inputs: Sequence[ExpertInputs],
    per_target: frozenset[str] | None = None,
) -> list[torch.distributions.Distribution]:
    """``run`` on every asset's inputs with one set of parameters.

    The first call samples the sites as usual (SVI and posterior evaluation see them
    once); the others are conditioned on the values it drew and hidden from every
    outer handler, so the parameters are shared and counted once in the ELBO.

    ``per_target``: the expert's per-target sites (:func:`stacked_sites`); given, the
    other assets run in one call on :func:`stack_assets` with those sites' values
    repeated along their target axis, and the joint predictive is split by asset
    (:func:`split_targets`). None: one call per asset.
    """
    traced = poutine.trace(run)
    first = traced(inputs[0])
    nodes = cast(dict[str, dict[str, Any]], traced.trace.nodes)
    values = {name: site["value"] for name, site in nodes.items() if site["type"] == "sample"}
    if len(inputs) == 1:
        return [first]
    if per_target is not None:
        n = len(inputs) - 1
        for name in per_target:
            site = nodes[name]
            axis = site["value"].dim() - site["fn"].event_dim  # the first event dimension
            shape = list(site["value"].shape)
            shape[axis] = n
            values[name] = site["value"].expand(shape)
        with poutine.block(), poutine.condition(data=values):
            joint = run(stack_assets(inputs[1:]))
        return [first, *split_targets(joint, n)]
    rest = []
    with poutine.block(), poutine.condition(data=values):
        for each in inputs[1:]:
            rest.append(run(each))
    return [first, *rest]


def stack_assets(inputs: Sequence[ExpertInputs]) -> ExpertInputs:
    """The assets' inputs as the targets of one: series ``(T, A)``, vol ``(T, A, V)``.

    Each input must hold its target column alone (a panel asset's input), with the same
    calendar, origins and scale features.
    """
    first = inputs[0]
    for each in inputs:
        if each.series.shape[1] != 1 or each.n_targets != 1 or each.observed is not None:
            raise ValueError("stack_assets takes inputs of one target column each")
    return replace(
        first,
        series=torch.cat([each.series for each in inputs], dim=1),
        columns=tuple(c for each in inputs for c in each.columns),
        n_targets=len(inputs),
        vol=torch.cat([each.vol for each in inputs], dim=1),
        column_loc=tuple(v for each in inputs for v in each.column_loc),
        column_scale=tuple(v for each in inputs for v in each.column_scale),
    )


def split_targets(
    joint: torch.distributions.Distribution, n: int
) -> list[torch.distributions.Distribution]:
    """The ``n`` one-target margins of a predictive with independent targets, event ``(n,)``."""
    build, params = decompose(joint)
    return [build(*[p[..., j : j + 1] for p in params]) for j in range(n)]


def join_margins(
    per_asset: Sequence[torch.distributions.Distribution],
) -> torch.distributions.Distribution:
    """One predictive with event ``(A,)`` from ``A`` one-target predictives (event ``(1,)``).

    The assets are independent given the parameters and the regime, so the joint is the
    product of the margins: an ``Independent`` Normal or Student-t whose ``j``-th margin
    is asset ``j``'s (a one-dimensional multivariate family becomes its margin, the same
    density).
    """
    families, params = set(), []
    for d in per_asset:
        if isinstance(d, dist.Independent):
            families.add(type(d.base_dist))
            params.append(decompose(d)[1])  # each S + (N, 1)
        else:
            nu, loc, scale = first_marginal(d)  # each S + (N,)
            families.add(dist.Normal if nu is None else dist.StudentT)
            params.append([p.unsqueeze(-1) for p in (loc, scale) if p is not None])
            if nu is not None:
                params[-1].insert(0, nu.unsqueeze(-1))
    if len(families) != 1:
        raise TypeError(f"the assets' predictives differ in family: {sorted(map(str, families))}")
    shape = torch.broadcast_shapes(*(p.shape for parts in params for p in parts))
    joined = [torch.cat([p.expand(shape) for p in parts], dim=-1) for parts in zip(*params)]
    return families.pop()(*joined).to_event(1)


def stacked_sites(
    run: Callable[[ExpertInputs], torch.distributions.Distribution], single: ExpertInputs
) -> frozenset[str] | None:
    """The per-target sites of ``run``, or None if its sites do not allow stacking.

    Traces ``run`` under its prior on one asset's inputs and on two stacked copies: a
    site whose event shape goes from ``(1, ...)`` to ``(2, ...)`` is per-target, one whose
    shape stays is shared by the targets; any other change (a parameter that grows with
    the targets in another way) means the expert cannot be stacked. Run once, when the
    program is built.
    """
    few = single.at(single.origins[:8])

    def shapes(inputs: ExpertInputs) -> dict[str, tuple[torch.Size, int]]:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block():
            trace = poutine.trace(run).get_trace(inputs)
        nodes = cast(dict[str, dict[str, Any]], trace.nodes)
        return {
            name: (site["value"].shape, site["fn"].event_dim)
            for name, site in nodes.items()
            if site["type"] == "sample"
        }

    one, two = shapes(few), shapes(stack_assets([few, few]))
    if set(one) != set(two):
        return None
    per_target = set()
    for name, (shape, event_dim) in one.items():
        stacked, _ = two[name]
        axis = len(shape) - event_dim
        if stacked == shape:
            continue
        grown = list(shape)
        if event_dim > 0 and shape[axis] == 1:
            grown[axis] = 2
        if list(stacked) != grown:
            return None
        per_target.add(name)
    return frozenset(per_target)


@dataclass(frozen=True)
class PanelComponents:
    r"""What the panel mixture computes for one set of parameters (or a batch ``S``).

    Attributes
    ----------
    experts : list of list of Distribution
        ``experts[m][i]``: expert ``m``'s predictive for asset ``i``, batch ``S + (N,)``,
        event ``(1,)``.
    gate : GateOutput
        The market gate, shared by every asset.
    loading : Tensor ``S + (A,)``, optional
        Each asset's loading :math:`\rho_i` on the regimes' volatility levels
        (:attr:`PanelProgram.asset_levels`); None: every asset has the market's levels.
    """

    experts: list
    gate: GateOutput
    loading: torch.Tensor | None = None

    @property
    def asset_log_scale(self) -> torch.Tensor:
        r"""Each asset's levels :math:`\lambda_{k,i} = \rho_i \lambda_k`: ``S + (K, A)``."""
        log_scale = self.gate.log_scale.unsqueeze(-1)  # S + (K, 1)
        if self.loading is None:
            return log_scale.expand(*log_scale.shape[:-1], len(self.experts[0]))
        return log_scale * self.loading.unsqueeze(-2)

    def asset(self, i: int) -> MixtureComponents:
        """The mixture of asset ``i`` (its experts, the gate with its own levels)."""
        gate = self.gate
        if self.loading is not None:
            gate = replace(gate, log_scale=self.asset_log_scale[..., i])
        return MixtureComponents([per_asset[i] for per_asset in self.experts], gate)


class PanelProgram(MoEProgram):
    """The Pyro model of the mixture on a panel (:class:`MoEProgram` with an asset axis).

    Takes :class:`~bayes_moe.data.panel_windows.PanelInputs` where the single-series
    program takes :class:`~bayes_moe.data.windows.ExpertInputs`, and a response ``(N, A)``
    with NaN where an asset-day is not scored.
    """

    def check_panel(self) -> None:
        """ValueError for what a panel fit does not support, before any data is read.

        (Experts or a gate that read covariates are refused by
        :meth:`~bayes_moe.models.moe.BayesianMoE.prepare_panel`, which knows the columns.)
        """
        if self.energy is not None:
            raise ValueError("energy gating is not available for panel fits yet")
        if self.asset_levels and not self.gate.volatility_levels:
            raise ValueError(
                "asset_levels loads each asset on the regimes' volatility levels; the gate "
                "has none (MarkovGate(volatility_levels=True))"
            )

    def expert_inputs(self, inputs):  # type: ignore[override]
        """Per-asset inputs with the scale features the gate leaves to the experts."""
        if isinstance(inputs, PanelInputs):
            single = MoEProgram.expert_inputs
            return replace(inputs, assets=tuple(single(self, a) for a in inputs.assets))
        return super().expert_inputs(inputs)

    #: Evaluate the experts with independent targets on all assets at once (False: one
    #: call per asset, the reference the tests compare the stacked route with).
    batch_assets: bool = True
    #: Each asset loads on the regimes' volatility levels with its own
    #: :math:`\rho_i` (:meth:`sample_loading`; ``BayesianMoE(asset_levels=True)``).
    asset_levels: bool = False

    def build(self, inputs) -> PanelProgram:  # type: ignore[override]
        """Build every expert for the panel (its first asset stands for every asset).

        Also finds, for each expert with independent targets, its per-target sites
        (:func:`stacked_sites`), which let it run on every asset in one call.
        """
        self.check_panel()
        expert_inputs = self.expert_inputs(inputs)
        self.per_target_sites: dict[int, frozenset[str] | None] = {}
        for m, expert in enumerate(self.expert_modules):
            if isinstance(expert, PanelExpert):
                expert.build_panel(expert_inputs)
                continue
            expert.build(expert_inputs.assets[0])
            if expert.targets_independent:
                self.per_target_sites[m] = stacked_sites(
                    self._expert_on(m), expert_inputs.assets[0]
                )
        return self

    def components(self, inputs, skip: Sequence[int] = ()) -> PanelComponents:  # type: ignore[override]
        """Sample every parameter once; every expert's predictive for every asset."""
        expert_inputs = self.expert_inputs(inputs)
        experts = []
        for m, expert in enumerate(self.expert_modules):
            if isinstance(expert, PanelExpert):
                with scope(prefix=self.labels[m], inner=False):
                    experts.append(expert.panel_model(expert_inputs))
            else:
                per_target = self.per_target_sites.get(m) if self.batch_assets else None
                experts.append(
                    shared_over_assets(self._expert_on(m), expert_inputs.assets, per_target)
                )
        with scope(prefix="gate", inner=False):
            gate = self.gate.model(inputs.market, self.groups)
            loading = (
                self.sample_loading(inputs.n_assets, gate.log_scale) if self.asset_levels else None
            )
        return PanelComponents(experts, gate, loading)

    def sample_loading(self, n_assets: int, log_scale: torch.Tensor) -> torch.Tensor:
        r"""Sample the loadings :math:`\rho_i \sim \mathrm{LogNormal}(0, 0.5^2)`: ``(A,)``.

        Site ``asset_level_loading`` (in the gate's scope).

        Asset ``i``'s regime levels are :math:`\rho_i \lambda_k`: its predictive in
        regime ``k`` is stretched by :math:`e^{\rho_i \lambda_k}`, so an asset with
        :math:`\rho_i > 1` swings more between calm and turbulent markets than the
        typical one. :math:`\lambda_0 = 0 < \lambda_1 < \dots` keeps its order for every
        asset (the regimes stay labelled calm to turbulent), and the prior's median 1 is
        the shared-levels model.
        """
        one = torch.ones((), dtype=log_scale.dtype, device=log_scale.device)
        prior = dist.LogNormal(0 * one, 0.5 * one).expand([n_assets]).to_event(1)
        return pyro.sample("asset_level_loading", prior)

    def _expert_on(self, m: int) -> Callable[[ExpertInputs], torch.distributions.Distribution]:
        def run(inputs: ExpertInputs) -> torch.distributions.Distribution:
            with scope(prefix=self.labels[m], inner=False):
                return self.expert_modules[m].model(inputs)

        return run

    def log_emission(
        self, comps: PanelComponents, response: torch.Tensor, log_weights: torch.Tensor
    ) -> torch.Tensor:
        r"""Day emissions :math:`\sum_{i \in O_n} \log p(y_{i,n} \mid z_n = k)`: ``S + (N, K)``.

        ``response`` ``(N, A)`` with NaN where an asset-day is not scored (factor 1).
        Every asset at once: each expert's per-asset predictives joined into one with
        event ``(A,)`` (:func:`join_margins`), each asset's regime densities
        (:func:`~bayes_moe.models.distributions.regime_log_prob_margins`), the mixture
        over experts per asset, then the sum over the scored assets.
        """
        scored = torch.isfinite(response)
        filled = torch.where(scored, response, torch.zeros_like(response))
        log_scale = comps.asset_log_scale  # S + (K, A)
        log_p = torch.stack(
            [
                regime_log_prob_margins(join_margins(per_asset), filled, log_scale)
                for per_asset in comps.experts
            ],
            dim=-1,
        )  # S + (N, K, A, M)
        emit = torch.logsumexp(log_weights.unsqueeze(-2) + log_p, dim=-1)  # S + (N, K, A)
        emit = torch.where(scored.unsqueeze(-2), emit, torch.zeros_like(emit))
        return emit.sum(-1)

    def forward(self, inputs, response: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``pyro.factor`` of the exact marginal likelihood of the panel ``response`` ``(N, A)``."""
        comps = self.components(inputs)
        log_weights = comps.gate.log_weights
        if self.training and self.expert_dropout > 0:
            log_weights = self._drop(log_weights)
        log_emit = self.log_emission(comps, response, log_weights)
        scored = self.scored_origins(inputs)
        if not bool(scored.all()):
            log_emit = log_emit.masked_fill(~scored.unsqueeze(-1), 0.0)
        gate = comps.gate
        log_evidence = hmm_log_evidence(
            gate.log_init, gate.hmm_trans, log_emit, time_varying=gate.time_varying
        )
        pyro.factor("log_evidence", log_evidence)
        return log_evidence

    def count_scored(self, inputs, response: torch.Tensor) -> int:
        """Asset-days in the likelihood."""
        scored = self.scored_origins(inputs).unsqueeze(-1) & torch.isfinite(response)
        return int(scored.sum())
