"""Calibration studies: summaries of backtests side by side (numbers only, no plotting).

The plots and the report files built from these tables are in :mod:`bayes_moe.plotting`
and :mod:`bayes_moe.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from bayes_moe.evaluation.backtest import BacktestFailure, BacktestResult
from bayes_moe.evaluation.scoring import (
    coverage_curve,
    diebold_mariano,
    newey_west_lag,
    pit_ks_test,
)

COMPARISON_KEYS = ("mean_diff", "nw_se", "t_stat")


def best_baseline(results: Mapping[str, BacktestResult], reference: str) -> str:
    """The model other than ``reference`` with the highest mean log score."""
    others = {k: v.summary()["log_score"] for k, v in results.items() if k != reference}
    if not others:
        raise ValueError("no baseline to compare with")
    return max(others, key=cast("Callable[[str], float]", others.get))


def comparisons(results: Mapping[str, BacktestResult], reference: str) -> dict[str, dict]:
    r"""Paired log-score comparison of ``reference`` with every other model.

    For each baseline ``b``: :math:`d_t = \log p_{ref}(y_t) - \log p_b(y_t)` over the
    common test days (``n``: fewer than the test period when a refit of either model
    failed), its mean, Newey-West standard error and t statistic (Diebold-Mariano); a
    positive ``t_stat`` favours the reference. The Newey-West lag is at least
    ``h - 1`` for ``h``-day forecasts, whose realised sums overlap
    (:func:`~bayes_moe.evaluation.scoring.newey_west_lag`). A baseline with fewer than 2
    days in common with the reference is left out.
    """
    ref = results[reference].table["log_score"]
    out = {}
    for name, result in results.items():
        if name == reference:
            continue
        other = result.table["log_score"]
        common = ref.index.intersection(other.index)
        if len(common) < 2:
            continue
        lag = newey_west_lag(len(common), results[reference].horizon)
        dm = diebold_mariano(ref.loc[common].to_numpy(), other.loc[common].to_numpy(), lag=lag)
        out[name] = {key: float(dm[key]) for key in dm}
    return out


def coverage_curves(results: Mapping[str, BacktestResult], levels=None) -> pd.DataFrame:
    """Empirical coverage of central intervals, one column per model, indexed by level."""
    columns = {}
    for name, result in results.items():
        kwargs = {} if levels is None else {"levels": levels}
        curve = coverage_curve(result.predictive, result.y, **kwargs)
        columns[name] = curve.set_index("nominal")["empirical"]
    return pd.DataFrame(columns)


def calibration_by_regime(result: BacktestResult) -> pd.DataFrame:
    """Scores and calibration of the days grouped by their most probable (causal) regime.

    Needs ``result.extras["regime_probs"]`` (the filtered regime probabilities the
    forecast was made with, as the mixture forecaster records them).
    """
    probs = result.extras.get("regime_probs")
    if probs is None:
        raise ValueError(f"{result.name} recorded no regime probabilities")
    probs = probs.reindex(result.table.index)
    regime = probs.to_numpy().argmax(axis=1)
    rows: list[dict[str, Any]] = []
    for k in range(probs.shape[1]):
        days = result.table[regime == k]
        if len(days) == 0:
            rows.append({"regime": k, "n_days": 0})
            continue
        ks = pit_ks_test(days["pit"].to_numpy())[1] if len(days) > 1 else np.nan
        rows.append(
            {
                "regime": k,
                "n_days": len(days),
                "log_score": days["log_score"].mean(),
                "crps": days["crps"].mean(),
                "coverage_90": days["covered_90"].mean(),
                "coverage_95": days["covered_95"].mean(),
                "mean_pit": days["pit"].mean(),
                "pit_ks_pvalue": ks,
                "mean_abs_return": np.abs(result.y[regime == k]).mean(),
            }
        )
    return pd.DataFrame(rows).set_index("regime")


def metrics(
    results: Mapping[str, BacktestResult],
    *,
    protocol: dict,
    reference: str = "bayes_moe",
    failures: Sequence[BacktestFailure] = (),
) -> dict:
    """The ``metrics.json`` document: protocol, per-model summaries, comparisons, failures.

    Shape (scripts read these keys)::

        {"protocol": {...},
         "models": {"<name>": {"log_score", "crps", "coverage_90", "coverage_95",
                               "pit_ks_pvalue", "n_days", "failed_refits",
                               "n_days_missing", ...}, ...},
         "comparisons": {"<baseline>": {"mean_diff", "nw_se", "t_stat", ...}, ...},
         "failures": [{"model", "error_type", "message", "refit_date", "first_day",
                       "last_day", "n_days"}, ...],
         "failed_models": ["<name>", ...]}

    ``failures`` lists the failed refits of the models in ``results`` (their
    ``BacktestResult.failures``: those days are missing from the model's scores, so
    ``n_days`` is smaller, and the comparisons use the days both models have) and the
    records of the models that produced no result at all (the ``failures`` argument;
    their names are in ``failed_models`` and they have no entry in ``models``).
    """
    models = {}
    for name, result in results.items():
        summary = result.summary()
        summary["elapsed_s"] = result.elapsed_s
        summary["refits"] = len(result.refit_dates)
        summary["failed_refits"] = len(result.failures)
        summary["n_days_missing"] = sum(f.n_days or 0 for f in result.failures)
        models[name] = summary
    failed_models = sorted({f.model for f in failures} - set(results))
    records = [f for result in results.values() for f in result.failures] + list(failures)
    doc = {
        "protocol": dict(protocol),
        "models": models,
        "comparisons": {},
        "failures": [f.to_dict() for f in records],
        "failed_models": failed_models,
    }
    if reference in results and len(results) > 1:
        doc["comparisons"] = comparisons(results, reference)
        doc["best_baseline"] = best_baseline(results, reference)
    return doc
