"""The options of an SVI fit as one typed, checked value.

:class:`SVIOptions` is what travels from a backtest forecaster through
:meth:`bayes_moe.BayesianMoE.fit` to :func:`~bayes_moe.inference.svi.fit_svi`: a frozen
dataclass, checked when it is made (a bad value or an unknown name fails before any
work), picklable (it goes to Dask workers with the forecaster). The keyword arguments
of ``fit(frame, num_steps=..., seed=...)`` are a shorthand for it:
:meth:`SVIOptions.merge` turns them into one, naming an unknown keyword together with
the known ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from bayes_moe.data.placement import as_device, as_fit_dtype

if TYPE_CHECKING:
    from bayes_moe.inference.pretrain_cache import PretrainCache

#: Training strategies for window experts (module docstring of ``svi``).
STRATEGIES: tuple[str, ...] = ("two_stage", "joint")

#: Guide families by name (:func:`~bayes_moe.inference.svi.make_guide`).
GUIDES = {
    "normal": AutoNormal,
    "mvn": AutoMultivariateNormal,
    "lowrank": AutoLowRankMultivariateNormal,
}


@dataclass(frozen=True)
class SVIOptions:
    """Everything that shapes an SVI fit besides the model and the data.

    Attributes
    ----------
    num_steps : int
        Maximum optimisation steps.
    learning_rate, final_lr_fraction : float
        Initial learning rate and the fraction of it reached after ``num_steps``
        (exponential decay).
    guide : {"normal", "mvn", "lowrank"}
        Autoguide family.
    init_scale : float
        Initial standard deviation of the guide.
    seed : int
        Seeds Pyro, torch, numpy and Python; a fit is reproducible for a given seed.
    num_draws : int
        Posterior draws kept for forecasts, regimes and ArviZ.
    convergence_tol : float or None
        Early-stopping threshold in nats per scored response (None: run every step).
    check_every : int
        Window of the convergence check.
    progress : bool
        Show a tqdm progress bar.
    num_threads : int or None
        Torch intra-op threads while fitting (None: as they are).
    strategy : {"two_stage", "joint"}
        How window (neural) experts are trained.
    pretrain_steps, pretrain_batch : int
        Stage one of ``"two_stage"``: most minibatch steps per window expert and
        origins per minibatch.
    pretrain_holdout : float
        Share of the latest origins stage one holds out for early stopping, in [0, 1).
    pretrain_cache : PretrainCache, optional
        Stage-one results to reuse and to add to.
    init_values : mapping of str to Tensor, optional
        Initial guide locations by site name (a warm start).
    memory_budget_mib : float, optional
        Bound on the working memory of evaluating the draws afterwards, MiB.
    checkpoint : path, optional
        Where to save the optimisation state (:mod:`~bayes_moe.inference.svi_state`).
    checkpoint_every : int
        Steps between saves.
    resume : bool
        Continue from ``checkpoint`` if it exists.
    device : str or torch.device
        Where the optimisation runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``): the data, the
        networks and every tensor the model makes go there. The posterior draws come
        back to the CPU when the fit ends, where the fit is evaluated (forecasts,
        regimes, ArviZ) by the CPU-compiled kernels.
    dtype : torch.dtype or {"float32", "float64"}
        The precision of the optimisation: the data, the sample sites and the model's
        arithmetic (the neural trunks run in float32 either way). The draws come back
        in float64. ``float32`` halves the memory and speeds up a GPU; on a CPU the
        statistical experts gain little (measure before choosing).

    Raises
    ------
    ValueError
        When made with a value out of its range, naming it.
    """

    num_steps: int = 1500
    learning_rate: float = 0.02
    final_lr_fraction: float = 0.1
    guide: str = "normal"
    init_scale: float = 0.02
    seed: int = 0
    num_draws: int = 200
    convergence_tol: float | None = 1e-5
    check_every: int = 100
    progress: bool = True
    num_threads: int | None = 1
    strategy: str = "two_stage"
    pretrain_steps: int = 400
    pretrain_batch: int = 256
    pretrain_holdout: float = 0.2
    pretrain_cache: PretrainCache | None = field(default=None, compare=False)
    init_values: Mapping[str, torch.Tensor] | None = field(default=None, compare=False)
    memory_budget_mib: float | None = None
    checkpoint: str | Path | None = None
    checkpoint_every: int = 100
    resume: bool = False
    device: str | torch.device = "cpu"
    dtype: torch.dtype | str = torch.float64

    def __post_init__(self) -> None:
        problems = []
        try:  # stored normalised: torch.dtype and torch.device
            object.__setattr__(self, "dtype", as_fit_dtype(self.dtype))
        except ValueError as error:
            problems.append(str(error))
        try:
            object.__setattr__(self, "device", as_device(self.device))
        except ValueError as error:
            problems.append(str(error))
        for name in ("num_steps", "num_draws", "check_every", "pretrain_steps", "pretrain_batch"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 1:
            problems.append(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if not self.learning_rate > 0 or not 0 < self.final_lr_fraction <= 1:
            problems.append(
                f"learning_rate must be > 0 and final_lr_fraction in (0, 1], got "
                f"{self.learning_rate} and {self.final_lr_fraction}"
            )
        if self.memory_budget_mib is not None and not self.memory_budget_mib > 0:
            problems.append(f"memory_budget_mib must be positive, got {self.memory_budget_mib}")
        if self.guide not in GUIDES:
            problems.append(f"unknown guide {self.guide!r}; choose one of {list(GUIDES)}")
        if self.strategy not in STRATEGIES:
            problems.append(f"unknown strategy {self.strategy!r}; choose one of {list(STRATEGIES)}")
        if not 0.0 <= self.pretrain_holdout < 1.0:
            problems.append(f"pretrain_holdout must be in [0, 1), got {self.pretrain_holdout}")
        if self.resume and self.checkpoint is None:
            problems.append("resume=True needs the checkpoint path to resume from")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def merge(
        cls, options: SVIOptions | None = None, keywords: Mapping[str, Any] | None = None
    ) -> SVIOptions:
        """``options`` (default: the defaults) with ``keywords`` replacing fields.

        Raises
        ------
        TypeError
            For a keyword that is not an option, listing the options.
        ValueError
            For a value out of range (:meth:`__post_init__`).
        """
        base = options if options is not None else cls()
        if not isinstance(base, SVIOptions):
            raise TypeError(f"options must be an SVIOptions, got {type(base).__name__}")
        keywords = dict(keywords or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise TypeError(f"unknown SVI option(s) {unknown}; the options are {sorted(known)}")
        return dataclasses.replace(base, **keywords) if keywords else base

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (shallow: the cache and initial values are not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
