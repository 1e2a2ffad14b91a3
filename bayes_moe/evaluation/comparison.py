r"""Model comparison by leave-future-out cross-validation (LFO-CV).

For time series the quantity to compare models by is the expected log predictive
density of *future* observations given the past,

.. math::

    \mathrm{elpd}_{\mathrm{LFO}} = \sum_{i \in \text{test}} \log p(y_i \mid y_{1:i-1}),

not PSIS-LOO (``az.loo``), which conditions each left-out day on the days after it and,
for a latent Markov chain, on its neighbours' regimes. Two estimators:

``method="exact"``
    A rolling-origin backtest (:func:`~bayes_moe.evaluation.backtest.backtest`): refit
    every ``refit_every`` test days on all data before the day, filter the regimes
    forward in between. Exact LFO when ``refit_every=1``; with larger blocks the
    parameters are held fixed within a block (what practitioners do), which is
    cheaper and slightly pessimistic. Works for any forecaster, baselines included.
``method="psis"``
    Approximate LFO-CV (Bürkner, Gabry and Vehtari 2020): fit once on the data before
    the first test day; for each later day reweight the posterior draws by the
    likelihood of the days seen since the last fit,

    .. math::

        \log r_i^{(s)} = \sum_{j = i^\star + 1}^{i - 1} \log p(y_j \mid y_{1:j-1}, \theta^{(s)}),

    smooth the ratios with Pareto-smoothed importance sampling (PSIS) and estimate
    :math:`p(y_i \mid y_{1:i-1}) \approx \sum_s w_i^{(s)} p(y_i \mid y_{1:i-1}, \theta^{(s)})`;
    refit (and set :math:`i^\star = i - 1`) only when the Pareto :math:`\hat k` of the
    ratios exceeds ``threshold`` (0.7 by default, as in the paper). The one-step
    densities per draw are exact for the mixture: the regime filter runs through the
    whole history with each draw's parameters. Far fewer refits than exact LFO; the
    draws are SVI's, so the reweighting corrects an approximate posterior.

When to use which: ``exact`` with a moderate ``refit_every`` for final numbers and
for models without posterior draws (baselines); ``psis`` to choose among mixtures
(such as the number of regimes) when a refit per day is too expensive and a refit per
block too coarse. :func:`compare` turns either into a table in the shape of
``az.compare``.

References
----------
P.-C. Bürkner, J. Gabry and A. Vehtari, "Approximate leave-future-out
cross-validation for Bayesian time series models", Journal of Statistical
Computation and Simulation 90(14), 2020.
A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry, "Pareto smoothed importance
sampling", JMLR 25(72), 2024.
Y. Yao, A. Vehtari, D. Simpson and A. Gelman, "Using stacking to average Bayesian
predictive distributions", Bayesian Analysis 13(3), 2018.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
from scipy import optimize, special
from tqdm.auto import tqdm

from bayes_moe.data.errors import DataError
from bayes_moe.evaluation.backtest import backtest, origin_rows
from bayes_moe.evaluation.moe_forecaster import MoEForecaster
from bayes_moe.inference.arviz import psislw
from bayes_moe.models.moe import BayesianMoE

if TYPE_CHECKING:
    from bayes_moe.inference.results import MoEFit

METHODS = ("exact", "psis")


@dataclass(frozen=True)
class LFOResult:
    r"""Pointwise leave-future-out log predictive densities of one model.

    Attributes
    ----------
    name : str
    method : {"exact", "psis"}
    log_density : Series (n,)
        :math:`\log p(y_i \mid y_{1:i-1})` per test day (data units), indexed by date.
    refit_dates : list of Timestamp
        Last training day of every fit.
    pareto_k : Series (n,) or None
        PSIS :math:`\hat k` of each day's ratios (``psis`` only; 0 right after a fit).
    """

    name: str
    method: str
    log_density: pd.Series
    refit_dates: list
    pareto_k: pd.Series | None = None

    @property
    def elpd(self) -> float:
        """Sum of the pointwise log densities."""
        return float(self.log_density.sum())

    @property
    def se(self) -> float:
        r"""Standard error of :attr:`elpd`, :math:`\sqrt{n}\,\mathrm{sd}(\log p_i)`."""
        values = self.log_density.to_numpy()
        return float(np.sqrt(len(values)) * values.std(ddof=1)) if len(values) > 1 else 0.0


def exact_lfo(
    frame: pd.DataFrame,
    forecaster,
    *,
    test_start,
    test_end=None,
    refit_every: int = 1,
    horizon: int = 1,
    target: str = "ret",
    name: str | None = None,
    progress: bool = True,
) -> LFOResult:
    """LFO by refitting: the per-day log scores of a rolling-origin backtest.

    ``forecaster`` is a backtest factory or a :class:`~bayes_moe.BayesianMoE` (wrapped
    in a :class:`~bayes_moe.evaluation.moe_forecaster.MoEForecaster`). Exact LFO for
    ``refit_every=1``; see the module docstring for larger blocks.
    """
    if isinstance(forecaster, BayesianMoE):
        forecaster = MoEForecaster(forecaster, target=target)
    result = backtest(
        frame,
        forecaster,
        test_start=test_start,
        test_end=test_end,
        refit_every=refit_every,
        horizon=horizon,
        target=target,
        name=name,
        progress=progress,
    )
    return LFOResult(
        name=result.name,
        method="exact",
        log_density=result.table["log_score"].rename("log_density"),
        refit_dates=list(result.refit_dates),
    )


def psis_lfo(
    frame: pd.DataFrame,
    model: BayesianMoE,
    *,
    test_start,
    test_end=None,
    target: str = "ret",
    covariates: Sequence[str] | None = None,
    threshold: float = 0.7,
    name: str = "bayes_moe",
    progress: bool = True,
    **fit_options,
) -> LFOResult:
    r"""Approximate one-step LFO-CV of a mixture by PSIS (module docstring).

    Parameters
    ----------
    frame : DataFrame
        Date-indexed data; the test days are its rows in ``[test_start, test_end]``.
    model : BayesianMoE
    threshold : float
        Refit when the Pareto :math:`\hat k` of a day's ratios exceeds it.
    **fit_options
        Passed to :meth:`BayesianMoE.fit` (``num_steps``, ``num_draws``, ``seed``...);
        ``horizon`` must be 1 (the estimator is for one-step-ahead predictions).

    Returns
    -------
    LFOResult
    """
    if fit_options.pop("horizon", 1) != 1:
        raise ValueError("psis_lfo estimates one-step-ahead LFO; use exact_lfo for horizon > 1")
    origins, realized = origin_rows(frame, test_start=test_start, test_end=test_end)
    options = {"progress": False, **fit_options}
    visible = frame.iloc[: realized[-1] + 1]
    log_density, pareto_k, refit_dates = [], [], []
    loglik, last_fit_row, first_row = None, 0, 0
    bar = tqdm(total=len(realized), desc=f"PSIS-LFO {name}", disable=not progress, leave=False)
    for origin, day in zip(origins, realized):
        if loglik is not None:
            # Days realized after the fit and before this one reweight the draws.
            seen = loglik.iloc[last_fit_row + 1 - first_row : day - first_row]
            log_ratio = seen.sum(axis=0).to_numpy()
            log_weights, k = _psis(log_ratio)
        if loglik is None or k > threshold:
            # horizon 1 (checked above): one MoEFit, not a MultiHorizonFit
            fit = cast(
                "MoEFit",
                model.fit(frame.iloc[: origin + 1], target, covariates=covariates, **options),
            )
            refit_dates.append(frame.index[origin])
            table = fit.update(visible).pointwise_log_likelihood()  # date x draw
            first_row = frame.index.get_loc(table.index[0])
            loglik, last_fit_row = table, origin
            log_weights = np.full(table.shape[1], -np.log(table.shape[1]))
            k = 0.0
        current = loglik.iloc[day - first_row].to_numpy()
        log_density.append(float(special.logsumexp(log_weights + current)))
        pareto_k.append(float(k))
        bar.update()
    bar.close()
    dates = pd.DatetimeIndex(frame.index[realized], name="date")
    return LFOResult(
        name=name,
        method="psis",
        log_density=pd.Series(log_density, index=dates, name="log_density"),
        refit_dates=refit_dates,
        pareto_k=pd.Series(pareto_k, index=dates, name="pareto_k"),
    )


def _psis(log_ratio: np.ndarray) -> tuple[np.ndarray, float]:
    r"""Pareto-smoothed normalized log weights and :math:`\hat k` (ArviZ ``psislw``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns on large k; the caller acts on k
        log_weights, k = psislw(log_ratio - log_ratio.max())
    return np.asarray(log_weights), float(k)


def stacking_weights(log_density: np.ndarray) -> np.ndarray:
    r"""Stacking weights of predictive distributions (Yao et al. 2018).

    .. math:: \hat w = \arg\max_{w \in \Delta} \sum_i \log \sum_m w_m\, p_m(y_i \mid y_{1:i-1})

    Parameters
    ----------
    log_density : ndarray ``(n, M)``
        Pointwise log predictive densities of ``M`` models.

    Returns
    -------
    ndarray ``(M,)``, non-negative, summing to one.
    """
    n_models = log_density.shape[1]
    if n_models == 1:
        return np.ones(1)

    def loss(z):
        log_w = z - special.logsumexp(z)
        mixed = special.logsumexp(log_density + log_w, axis=1)
        prob = np.exp(log_density + log_w - mixed[:, None])  # (n, M) responsibilities
        grad = -(prob.sum(0) - len(mixed) * np.exp(log_w))
        return -mixed.sum(), grad

    res = optimize.minimize(loss, np.zeros(n_models), jac=True, method="L-BFGS-B")
    weights = np.exp(res.x - special.logsumexp(res.x))
    return weights / weights.sum()


def compare_lfo(results: Mapping[str, LFOResult] | Sequence[LFOResult]) -> pd.DataFrame:
    """Rank models by their LFO elpd, in the shape of ``az.compare``.

    All results must cover the same test days.

    Returns
    -------
    DataFrame
        Indexed by model name, best first, with ``rank``, ``elpd`` (sum of the
        pointwise log densities), ``se``, ``elpd_diff`` (from the best model),
        ``dse`` (standard error of the difference, from the paired pointwise
        differences), ``weight`` (stacking), ``n_days``, ``method``, ``refits`` and
        ``max_pareto_k`` (``psis`` only).
    """
    if not isinstance(results, Mapping):
        results = {r.name: r for r in results}
    if not results:
        raise ValueError("nothing to compare")
    first = next(iter(results.values())).log_density.index
    for name, result in results.items():
        if not result.log_density.index.equals(first):
            raise DataError(f"model {name!r} was scored on other days than the others")
    pointwise = np.column_stack([r.log_density.to_numpy() for r in results.values()])
    names = list(results)
    elpd = pointwise.sum(0)
    best = int(np.argmax(elpd))
    n = pointwise.shape[0]
    diff = pointwise[:, [best]] - pointwise
    table = pd.DataFrame(
        {
            "elpd": elpd,
            "se": [r.se for r in results.values()],
            "elpd_diff": elpd[best] - elpd,
            "dse": np.sqrt(n) * diff.std(0, ddof=1) if n > 1 else np.zeros(len(names)),
            "weight": stacking_weights(pointwise),
            "n_days": n,
            "method": [r.method for r in results.values()],
            "refits": [len(r.refit_dates) for r in results.values()],
            "max_pareto_k": [
                float(r.pareto_k.max()) if r.pareto_k is not None else np.nan
                for r in results.values()
            ],
        },
        index=pd.Index(names, name="model"),
    ).sort_values("elpd", ascending=False)
    table.insert(0, "rank", np.arange(len(table)))
    return table


def compare(
    frame: pd.DataFrame,
    models: Mapping[str, BayesianMoE | object],
    *,
    test_start,
    test_end=None,
    method: str = "exact",
    refit_every: int = 250,
    target: str = "ret",
    covariates: Sequence[str] | None = None,
    threshold: float = 0.7,
    progress: bool = True,
    **fit_options,
) -> pd.DataFrame:
    r"""Compare models by leave-future-out cross-validation on ``frame``.

    Parameters
    ----------
    frame : DataFrame
    models : mapping of str to BayesianMoE or forecaster
        Mixtures to fit (``{"K=1": bm.BayesianMoE(n_regimes=1), ...}``) or, for
        ``method="exact"``, any backtest forecaster (baselines).
    test_start, test_end : date-like
        The days predicted.
    method : {"exact", "psis"}
        See the module docstring.
    refit_every : int
        Test days between refits for ``exact`` (1 is exact LFO).
    threshold : float
        Pareto :math:`\hat k` above which ``psis`` refits.
    **fit_options
        Passed to :meth:`BayesianMoE.fit` of every mixture.

    Returns
    -------
    DataFrame
        :func:`compare_lfo` of the models.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not models:
        raise ValueError("models is empty")
    if target not in frame.columns:
        raise DataError(f"target column {target!r} is missing; columns: {list(frame.columns)}")
    for label, model in models.items():
        if method == "psis" and not isinstance(model, BayesianMoE):
            raise TypeError(f"method='psis' needs a BayesianMoE, but {label!r} is {model!r}")
    origin_rows(frame, test_start=test_start, test_end=test_end)  # fails early if no test days
    results = {}
    for label, model in models.items():
        if method == "psis":
            results[label] = psis_lfo(
                frame,
                cast(BayesianMoE, model),  # checked above
                test_start=test_start,
                test_end=test_end,
                target=target,
                covariates=covariates,
                threshold=threshold,
                name=label,
                progress=progress,
                **fit_options,
            )
            continue
        if isinstance(model, BayesianMoE):
            model = MoEForecaster(
                model, target=target, covariates=covariates, name=label, **fit_options
            )
        results[label] = exact_lfo(
            frame,
            model,
            test_start=test_start,
            test_end=test_end,
            refit_every=refit_every,
            target=target,
            name=label,
            progress=progress,
        )
    return compare_lfo(results)
