"""Reports of several forecast horizons: one report per horizon and a table across them.

``bayes-moe fit --horizon 1,5,20`` and ``bayes-moe backtest --horizon 1,5,20`` write
one folder per horizon, ``OUT/h1/``, ``OUT/h5/``, ``OUT/h20/``, each the report of a
single horizon (:func:`~bayes_moe.report.write_report`,
:func:`~bayes_moe.report.write_backtest_report`), and at the top of ``OUT`` a
``report.md``, a ``metrics.json`` and a CSV that set the horizons side by side. Each
horizon is its own fit (the direct strategy, :mod:`bayes_moe.inference.multi_horizon`).
``OUT`` is written whole (:func:`~bayes_moe.io.atomic_folder`): an existing report is
replaced only once every horizon's report is complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from bayes_moe.io import atomic_folder, atomic_path, write_csv, write_json
from bayes_moe.report import _markdown_table, write_backtest_report, write_report


def horizon_folder(horizon: int) -> str:
    """The sub-folder of horizon ``h``'s report: ``h<h>``."""
    return f"h{horizon}"


def forecast_row(metrics: dict) -> dict:
    """One row of ``forecasts.csv`` from a single-horizon report's ``metrics.json``."""
    forecast, in_sample = metrics["forecast"], metrics["in_sample"]
    return {
        "horizon": forecast["horizon"],
        "origin_date": forecast["origin_date"],
        "mean": forecast["mean"],
        "std": forecast["std"],
        **{f"q{q}": value for q, value in forecast["quantiles"].items()},
        "in_sample_log_score": in_sample["mean_log_score"],
        "in_sample_coverage_90": in_sample["coverage_90"],
        "elpd_loo": in_sample["elpd_loo"],
    }


def write_horizons_report(fits: Mapping, out, **options) -> dict:
    """Write the report of every horizon's fit and the forecasts side by side.

    Parameters
    ----------
    fits : mapping of int to MoEFit
        One fit per horizon (``MultiHorizonFit.fits``).
    out : path
        The report folder: ``h<h>/`` per horizon (:func:`~bayes_moe.report.write_report`
        with ``options``), ``forecasts.csv`` (one row per horizon: mean, sd, quantiles
        of the ``h``-day return, in-sample log score, coverage and elpd_loo),
        ``metrics.json`` (``{"horizons": [...], "forecasts": [rows], "reports": {h:
        folder}}``) and ``report.md``.

    Returns
    -------
    dict
        ``{"horizons": {h: that horizon's metrics}, "forecasts": DataFrame}``.
    """
    with atomic_folder(out) as folder:
        per = {
            h: write_report(fit, folder / horizon_folder(h), **options) for h, fit in fits.items()
        }
        table = pd.DataFrame([forecast_row(metrics) for metrics in per.values()])
        table = table.set_index("horizon")
        write_csv(table, folder / "forecasts.csv")
        write_json(
            {
                "horizons": list(per),
                "forecasts": table.reset_index().to_dict(orient="records"),
                "reports": {str(h): horizon_folder(h) for h in per},
            },
            folder / "metrics.json",
        )
        lines = [
            "# Forecasts at several horizons",
            "",
            "One fit per horizon h (the direct strategy: the target is the h-day cumulative "
            "return, in percent); mean, sd and quantiles of the forecast from the last close. "
            "In-sample scores are per h-day response.",
            "",
            _markdown_table(table),
            "",
            *[f"- h = {h}: [{horizon_folder(h)}/]({horizon_folder(h)}/fan_chart.png)" for h in per],
        ]
        _write_markdown(folder / "report.md", lines)
    return {"horizons": per, "forecasts": table}


def score_rows(docs: Mapping[int, dict], reference: str) -> pd.DataFrame:
    """Every model's scores at every horizon, with the reference's Diebold-Mariano test.

    ``docs``: horizon -> the backtest metrics of that horizon
    (:func:`bayes_moe.evaluation.calibration.metrics`). One row per (horizon, model):
    log score, CRPS, 90% coverage, days, and against the reference the mean daily
    log-score difference (reference minus model), its Newey-West t statistic and lag.
    """
    rows = []
    for h, doc in docs.items():
        for model, scores in doc["models"].items():
            row = {"horizon": h, "model": model}
            row |= {k: scores.get(k) for k in ("log_score", "crps", "coverage_90", "n_days")}
            test = doc["comparisons"].get(model, {})
            row |= {
                f"{reference}_minus_model": test.get("mean_diff"),
                "t_stat": test.get("t_stat"),
                "nw_lag": test.get("lag"),
            }
            rows.append(row)
    return pd.DataFrame(rows).set_index(["horizon", "model"])


def write_horizons_backtest_report(
    results: Mapping[int, dict],
    out,
    *,
    protocols: Mapping[int, dict],
    reference: str = "bayes_moe",
    failures: Mapping[int, Sequence] | None = None,
) -> dict:
    """Write each horizon's calibration study and the scores of all horizons together.

    Parameters
    ----------
    results : mapping of int to dict
        Horizon -> the backtest results of that horizon, by model.
    out : path
        The report folder: ``h<h>/`` per horizon
        (:func:`~bayes_moe.report.write_backtest_report` with ``protocols[h]``),
        ``scores_by_horizon.csv`` (:func:`score_rows`), ``metrics.json``
        (``{"horizons": [...], "scores": [rows], "failures": {h: [...]}}``) and
        ``report.md``. Overlapping ``h``-day targets: each comparison's Newey-West lag
        is at least ``h - 1`` (:func:`~bayes_moe.evaluation.scoring.newey_west_lag`).

    Returns
    -------
    dict
        ``{"horizons": {h: that horizon's metrics}, "scores": DataFrame, "failures": {h:
        [...]}}``.
    """
    failures = failures or {}
    with atomic_folder(out) as folder:
        docs = {
            h: write_backtest_report(
                results[h],
                folder / horizon_folder(h),
                protocol=protocols[h],
                reference=reference,
                failures=failures.get(h, ()),
            )
            for h in results
        }
        table = score_rows(docs, reference)
        write_csv(table, folder / "scores_by_horizon.csv")
        failed = {str(h): doc["failures"] for h, doc in docs.items() if doc["failures"]}
        write_json(
            {
                "horizons": list(docs),
                "reference": reference,
                "scores": table.reset_index().to_dict(orient="records"),
                "failures": failed,
            },
            folder / "metrics.json",
        )
        lines = [
            "# Calibration study at several horizons",
            "",
            "Log score: nats per h-day target, higher is better; CRPS: lower is better. "
            f"`{reference}_minus_model`: mean of log p_{reference}(y) - log p_model(y) over the "
            "test days, with its Newey-West t statistic; consecutive h-day targets overlap "
            "by h - 1 days, so the Newey-West lag is at least h - 1.",
            "",
            _markdown_table(table.reset_index(level="model")),
            "",
            *[
                f"- h = {h}: [{horizon_folder(h)}/report.md]({horizon_folder(h)}/report.md)"
                for h in docs
            ],
        ]
        if failed:
            lines += ["", f"Failures at horizon(s) {', '.join(failed)}: see their reports."]
        _write_markdown(folder / "report.md", lines)
    return {"horizons": docs, "scores": table, "failures": failed}


def _write_markdown(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
