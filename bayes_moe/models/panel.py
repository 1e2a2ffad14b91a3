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
once, on the first asset, and every other asset is evaluated at the same values. The
regimes' volatility levels stretch every asset's predictive alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import pyro
import torch
from pyro import poutine
from pyro.contrib.autoname import scope

from bayes_moe.data.panel_windows import PanelInputs
from bayes_moe.data.windows import ExpertInputs
from bayes_moe.kernels.hmm import hmm_log_evidence
from bayes_moe.models.distributions import regime_log_prob
from bayes_moe.models.experts.base import PanelExpert
from bayes_moe.models.gate import GateOutput
from bayes_moe.models.moe import MixtureComponents, MoEProgram


def shared_over_assets(
    run: Callable[[ExpertInputs], torch.distributions.Distribution],
    inputs: Sequence[ExpertInputs],
) -> list[torch.distributions.Distribution]:
    """``run`` on every asset's inputs with one set of parameters.

    The first call samples the sites as usual (SVI and posterior evaluation see them
    once); the others are conditioned on the values it drew and hidden from every
    outer handler, so the parameters are shared and counted once in the ELBO.
    """
    traced = poutine.trace(run)
    first = traced(inputs[0])
    nodes = cast(dict[str, dict[str, Any]], traced.trace.nodes)
    values = {name: site["value"] for name, site in nodes.items() if site["type"] == "sample"}
    rest = []
    with poutine.block(), poutine.condition(data=values):
        for each in inputs[1:]:
            rest.append(run(each))
    return [first, *rest]


@dataclass(frozen=True)
class PanelComponents:
    """What the panel mixture computes for one set of parameters (or a batch ``S``).

    Attributes
    ----------
    experts : list of list of Distribution
        ``experts[m][i]``: expert ``m``'s predictive for asset ``i``, batch ``S + (N,)``,
        event ``(1,)``.
    gate : GateOutput
        The market gate, shared by every asset.
    """

    experts: list
    gate: GateOutput

    def asset(self, i: int) -> MixtureComponents:
        """The mixture of asset ``i`` (its experts, the shared gate)."""
        return MixtureComponents([per_asset[i] for per_asset in self.experts], self.gate)

    def asset_log_emission(
        self, i: int, response: torch.Tensor, log_weights: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`\log \sum_m g_{n,k,m} p^{(k)}_m(y_{i,n})`: ``S + (N, K)``.

        ``response`` ``(N, 1)`` finite (placeholders where not scored).
        """
        log_scale = self.gate.log_scale
        log_p = torch.stack(
            [regime_log_prob(per_asset[i], response, log_scale) for per_asset in self.experts],
            dim=-1,
        )  # S + (N, K, M)
        return torch.logsumexp(log_weights + log_p, dim=-1)


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

    def expert_inputs(self, inputs):  # type: ignore[override]
        """Per-asset inputs with the scale features the gate leaves to the experts."""
        if isinstance(inputs, PanelInputs):
            single = MoEProgram.expert_inputs
            return replace(inputs, assets=tuple(single(self, a) for a in inputs.assets))
        return super().expert_inputs(inputs)

    def build(self, inputs) -> PanelProgram:  # type: ignore[override]
        """Build every expert for the panel (its first asset stands for every asset)."""
        self.check_panel()
        expert_inputs = self.expert_inputs(inputs)
        for expert in self.expert_modules:
            if isinstance(expert, PanelExpert):
                expert.build_panel(expert_inputs)
            else:
                expert.build(expert_inputs.assets[0])
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
                experts.append(shared_over_assets(self._expert_on(m), expert_inputs.assets))
        with scope(prefix="gate", inner=False):
            gate = self.gate.model(inputs.market, self.groups)
        return PanelComponents(experts, gate)

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
        """
        scored = torch.isfinite(response)
        filled = torch.where(scored, response, torch.zeros_like(response))
        total = torch.zeros((), dtype=log_weights.dtype, device=log_weights.device)
        for i in range(response.shape[-1]):
            emit = comps.asset_log_emission(i, filled[:, i : i + 1], log_weights)
            total = total + torch.where(scored[:, i : i + 1], emit, torch.zeros_like(emit))
        return total

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
