"""The report folder of a fit: forecast, regimes, plots, InferenceData, metrics.

Used by ``bayes-moe demo`` and ``bayes-moe fit``. Every file is written atomically, and
the folder as a whole (:func:`bayes_moe.io.atomic_folder`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_moe import plotting
from bayes_moe.inference.arviz import compact, loo, to_netcdf
from bayes_moe.inference.posterior import DEFAULT_KEEP_DRAWS
from bayes_moe.io import atomic_folder, atomic_path, write_csv, write_json

COVERAGE_LEVELS = (0.5, 0.9)


def in_sample_calibration(fit, summary=None) -> dict:
    """Mean one-step log score and empirical coverage of central intervals, in sample.

    Each day is scored under the causal predictive from the previous close with the
    fitted posterior draws (regimes filtered, not smoothed). A day lies in the central
    interval of level ``a`` when its PIT, the exact predictive CDF at the realized value
    (:attr:`~bayes_moe.inference.posterior.PosteriorSummary.pit`), lies in
    ``[(1 - a) / 2, (1 + a) / 2]``: no sampling, and no per-day draws held. It is
    in-sample: the parameters saw these days; out-of-sample scores come from backtests.
    ``summary``: the fit's posterior summary to read (default
    :meth:`MoEFit.posterior_summary`).
    """
    summary = fit.posterior_summary() if summary is None else summary
    log_lik = summary.log_predictive_density.numpy()  # (S, N_obs), standardized
    log_lik = log_lik - np.log(fit.data.preprocessor.target_scale).sum()
    log_score = np.logaddexp.reduce(log_lik, axis=0) - np.log(log_lik.shape[0])
    pit = summary.pit.numpy()  # (N_obs,)
    out = {"mean_log_score": float(log_score.mean()), "n_days": int(len(pit))}
    for level in COVERAGE_LEVELS:
        inside = (pit >= (1 - level) / 2) & (pit <= (1 + level) / 2)
        out[f"coverage_{int(level * 100)}"] = float(np.mean(inside))
    return out


def format_regime_summary(table: pd.DataFrame, *, unit: str = "%/day") -> str:
    """The regime report of :meth:`RegimePosterior.summary` as lines of text.

    One line per regime: volatility, volatility level, mean return, expected duration,
    share of days, each with its 94% interval, then the top experts' weights.
    """

    def cell(name, fmt):
        return lambda row: (
            f"{row[name]:{fmt}} [{row[name + '_q3']:{fmt}}, {row[name + '_q97']:{fmt}}]"
        )

    columns = [
        (f"volatility {unit}", cell("volatility", ".2f")),
        ("level", cell("volatility_level", ".2f")),
        ("mean return", cell("mean_return", "+.3f")),
        ("duration (days)", cell("expected_duration", ".0f")),
        ("share of days", cell("share_of_days", ".2f")),
    ]
    experts = sorted(c for c in table.columns if c.startswith("expert_") and c[7:].isdigit())
    lines = []
    for k, row in table.iterrows():
        parts = [f"{name} {fmt(row)}" for name, fmt in columns]
        top = ", ".join(f"{row[e]} {row[e + '_weight']:.2f}" for e in experts)
        lines.append(f"regime {k}: " + "; ".join(parts) + f"; experts: {top}")
    return "\n".join(lines)


def regime_now(current: dict) -> dict:
    """JSON fields of the most probable regime on the last day (`RegimePosterior.current`)."""
    return {
        "date": str(current["date"].date()),
        "regime": current["regime"],
        "filtered_probability": current["probability"],
        "filtered_probability_sd": current["probability_sd"],
    }


def summary(fit, forecast, regimes) -> dict:
    """A JSON-serializable summary of the fit: data, diagnostics, regime now, forecast.

    Two regime probabilities are reported, each with the day it is for:
    ``regime_now["filtered_probability"]`` is P(regime on ``regime_now["date"]``, the
    last close and the forecast origin | data up to that close), and
    ``regime_now["next_day_probability"]`` is P(the same regime on the next trading
    day | the same data) (:meth:`MoEFit.regime_forecast` with ``steps=1``).
    ``forecast["regime_probabilities"]`` are for the day the forecast is for,
    ``forecast["regime_probabilities_days_after_origin"]`` (= ``h``) trading days after
    ``forecast["origin_date"]``; ``forecast["filtered_regime_probabilities"]`` are those
    of the origin itself.
    """
    data = fit.data
    current = regimes.current()
    next_day = fit.regime_forecast(1)
    filtered_at_origin = regimes.last_filtered_draws.mean(0)
    quantiles = forecast.quantiles((0.05, 0.25, 0.5, 0.75, 0.95))
    return {
        "data": {
            "targets": list(fit.targets),
            "first_date": str(data.dates[0].date()),
            "last_date": str(data.dates[-1].date()),
            "n_days_fitted": data.n_observed,
        },
        "model": fit.model.config(),
        "fit": fit.diagnostics.to_dict(),
        "regime_now": {
            **regime_now(current),
            "volatility": float(regimes.volatility["mean"].iloc[current["regime"]]),
            "next_day_probability": float(next_day["mean"].iloc[current["regime"]]),
            "next_day_probability_sd": float(next_day["sd"].iloc[current["regime"]]),
        },
        "transition_mean": regimes.transition.to_numpy().tolist(),
        "expected_duration_days": regimes.expected_duration["mean"].tolist(),
        "regimes": regimes.summary().reset_index().to_dict(orient="records"),
        "regime_diagnostics": regimes.diagnostics(),
        "forecast": {
            "origin_date": str(forecast.origin_date.date()),
            "horizon": forecast.horizon,
            "mean": forecast.mean,
            "std": forecast.std,
            "quantiles": {f"{q:g}": float(v) for q, v in quantiles.items()},
            "regime_probabilities": forecast.regime_probs["mean"].tolist(),
            "regime_probabilities_days_after_origin": forecast.horizon,
            "filtered_regime_probabilities": filtered_at_origin.tolist(),
            "expert_weights": forecast.expert_weights.to_dict(),
        },
    }


def write_report(
    fit,
    out,
    *,
    price: pd.Series | None = None,
    num_samples: int = 2000,
    started: float | None = None,
    keep_draws: int | None = DEFAULT_KEEP_DRAWS,
    energy: bool | None = None,
    vix: pd.Series | None = None,
) -> dict:
    """Write the report folder ``out`` and return the metrics dictionary.

    Files: ``forecast.json``, ``forecast.csv``, ``fan_chart.png``, ``regimes.png``,
    ``regime_posterior.png``, ``expert_weights.png``, ``elbo.png``,
    ``regime_summary.csv``, ``regimes_filtered.csv``, ``regimes_smoothed.csv``,
    ``regimes_viterbi.csv``, ``inference_data.nc``, ``fit.safetensors`` (checkpoint),
    ``metrics.json`` and ``manifest.json``. The folder is written whole
    (:func:`bayes_moe.io.atomic_folder`): an existing report folder ``out`` is replaced
    only once the new one is complete. With ``started`` (a :func:`time.perf_counter`
    reading), ``metrics["elapsed_s"]`` is the time from it to the writing of the metrics.

    ``inference_data.nc`` holds every posterior draw of the global parameters, per-day
    summaries over all draws and the per-day values (predictive samples, regime
    probabilities, Viterbi paths, log-likelihood) of ``keep_draws`` thinned draws
    (None: every draw), per-day values in float32, compressed
    (:func:`~bayes_moe.inference.arviz.to_inference_data`,
    :func:`~bayes_moe.inference.arviz.compact`). ``elpd_loo`` in ``metrics.json`` is
    computed from every draw's log-likelihood before thinning.

    ``energy`` (default: when the model has an energy gate) adds ``energy.csv``
    (:meth:`~bayes_moe.MoEFit.energy`), ``energy.png``
    (:func:`~bayes_moe.plotting.plot_energy`, with ``vix`` where given) and
    ``metrics["energy"]`` (:func:`energy_summary`); without a gate it costs one more
    pass over the draws.
    """
    if energy is None:
        energy = fit.model.energy_gate is not None
    with atomic_folder(out) as folder:
        return _write_report_files(
            fit,
            folder,
            price=price,
            num_samples=num_samples,
            started=started,
            keep_draws=keep_draws,
            energy=energy,
            vix=vix,
        )


def energy_summary(fit, table: pd.DataFrame) -> dict:
    """What ``metrics.json`` says about the energy (``table``: :meth:`MoEFit.energy`).

    Mean energy and heavy-class weight over the observed origins, the Spearman rank
    correlation of the energy with the next absolute response, and, with an energy
    gate, the posterior mean and sd of its ``beta`` and ``tau``.
    """
    observed = table.iloc[: fit.data.n_observed]
    realized = np.abs(fit.data.unstandardize(fit.data.observed_response.numpy())[:, 0])
    out: dict[str, float | dict[str, float]] = {
        "mean_energy": float(observed["energy"].mean()),
        "mean_heavy_weight": float(observed["heavy_weight"].mean()),
        "spearman_energy_abs_response": float(
            observed["energy"].corr(pd.Series(realized, index=observed.index), method="spearman")
        ),
        "energy_now": float(table["energy"].iloc[-1]),
        "heavy_weight_now": float(table["heavy_weight"].iloc[-1]),
    }
    for name in ("beta", "tau"):
        site = f"energy/{name}"
        if site in fit.draws:
            out[name] = {
                "mean": float(fit.draws[site].mean()),
                "sd": float(fit.draws[site].std(correction=0)),
            }
    return out


def _write_report_files(
    fit, out: Path, *, price, num_samples: int, started, keep_draws, energy=False, vix=None
) -> dict:
    """The files of :func:`write_report`, written into the (new, empty) folder ``out``."""
    regimes = fit.regimes(keep_draws)  # first: the forecast reads its posterior summary
    forecast = fit.forecast(num_samples=num_samples, seed=0)
    metrics = summary(fit, forecast, regimes)
    metrics["in_sample"] = in_sample_calibration(fit, fit.posterior_summary(keep_draws))

    idata = fit.to_inference_data(keep_draws=keep_draws, energy=energy)  # every draw's log-lik
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings are reported in the numbers
        psis_loo = loo(idata)
    metrics["in_sample"].update(
        elpd_loo=psis_loo.elpd_loo,
        p_loo=psis_loo.p_loo,
        pareto_k_above_0_7=int(np.sum(psis_loo.pareto_k > 0.7)),
    )
    metrics["inference_data"] = {
        "draws": fit.n_draws,
        "kept_draws": int(idata.posterior_predictive.sizes["draw"]),
    }
    with atomic_path(out / "inference_data.nc") as tmp:
        to_netcdf(compact(idata, log_likelihood="kept"), tmp)
    fit.save(out / "fit.safetensors")

    write_json(metrics["forecast"], out / "forecast.json")
    write_csv(forecast.to_frame(), out / "forecast.csv")
    write_regime_tables(regimes, out)
    for name, draw in (
        ("fan_chart.png", lambda p: plotting.plot_fan_chart(fit, forecast, p)),
        ("regimes.png", lambda p: plotting.plot_regimes(fit, regimes, p, price=price)),
        ("regime_posterior.png", lambda p: plotting.plot_regime_posterior(idata, p)),
        ("expert_weights.png", lambda p: plotting.plot_expert_weights(regimes, p)),
        ("elbo.png", lambda p: plotting.plot_elbo(fit.diagnostics, p)),
    ):
        with atomic_path(out / name) as tmp:
            draw(tmp)
    if energy:
        table = fit.energy()
        write_csv(table, out / "energy.csv")
        with atomic_path(out / "energy.png") as tmp:
            plotting.plot_energy(fit, table, tmp, vix=vix)
        metrics["energy"] = energy_summary(fit, table)
    if started is not None:
        metrics["elapsed_s"] = time.perf_counter() - started
    write_json(metrics, out / "metrics.json")
    return metrics


def write_regime_tables(regimes, out) -> None:
    """``regime_summary.csv`` and the filtered, smoothed and Viterbi date x regime tables."""
    out = Path(out)
    write_csv(regimes.summary(), out / "regime_summary.csv")
    write_csv(regimes.filtered, out / "regimes_filtered.csv")
    write_csv(regimes.smoothed, out / "regimes_smoothed.csv")
    write_csv(regimes.viterbi, out / "regimes_viterbi.csv")


# ---------------------------------------------------------------------------- backtests
def _markdown_table(frame: pd.DataFrame, floatfmt: str = ".4f") -> str:
    header = "| " + " | ".join([frame.index.name or ""] + [str(c) for c in frame.columns]) + " |"
    rule = "|" + "---|" * (frame.shape[1] + 1)
    lines = [header, rule]
    for idx, row in frame.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float | np.floating) else str(v) for v in row]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def write_backtest_report(
    results: dict, out, *, protocol: dict, reference="bayes_moe", failures=()
) -> dict:
    """Write a calibration study of backtest results to ``out``; return the metrics.

    Files: ``metrics.json`` (the documented shape, see
    :func:`bayes_moe.evaluation.calibration.metrics`), ``report.md``,
    ``scores_<model>.csv`` (per-day scores), ``pit_histograms.png``,
    ``coverage_curves.png``, with the mixture present ``score_differences.png``
    and ``calibration_by_regime.png``, and ``manifest.json``. ``failures``: the
    :class:`~bayes_moe.evaluation.backtest.BacktestFailure` records of models that
    produced no result; they and the failed refits of the others are listed in
    ``metrics.json`` and in a "Failures" section of ``report.md``. The folder is written
    whole (:func:`bayes_moe.io.atomic_folder`): an existing report folder ``out`` is
    replaced only once the new one is complete.
    """
    with atomic_folder(out) as folder:
        return _write_backtest_files(results, folder, protocol, reference, failures)


def _write_backtest_files(results: dict, out: Path, protocol, reference, failures) -> dict:
    """The files of :func:`write_backtest_report`, written into the new folder ``out``."""
    from bayes_moe.evaluation import calibration

    doc = calibration.metrics(results, protocol=protocol, reference=reference, failures=failures)
    lines = ["# Calibration study", "", "## Protocol", ""]
    lines += [f"- **{k}**: {v}" for k, v in protocol.items()]
    lines += _failure_lines(doc)
    if results:
        lines += _score_lines(results, out, doc, reference)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(doc, out / "metrics.json")
    return doc


def _failure_lines(doc: dict) -> list[str]:
    """The "Failures" section of ``report.md`` (empty when nothing failed)."""
    if not doc["failures"]:
        return []
    table = pd.DataFrame(doc["failures"]).set_index("model").astype(object)
    failed = ", ".join(doc["failed_models"]) or "none"
    return [
        "",
        "## Failures",
        "",
        "A failed refit leaves the test days of its block without a forecast from that model: "
        "its scores below are means over its remaining days (`n_days`; `n_days_missing` "
        "counts the others), so they are not directly comparable with a complete model's, "
        "and the paired comparisons use the days both models have. A model all of whose "
        f"refits failed has no scores (here: {failed}).",
        "",
        _markdown_table(table.where(table.notna(), "")),
    ]


def _overlap_note(horizon: int) -> list[str]:
    """The report's line on the Newey-West lag of overlapping ``h``-day targets."""
    if horizon <= 1:
        return []
    return [
        f"The targets are overlapping {horizon}-day sums (consecutive ones share "
        f"{horizon - 1} days), so the Newey-West lag is at least h - 1 = {horizon - 1}.",
    ]


def _score_lines(results: dict, out: Path, doc: dict, reference: str) -> list[str]:
    """Write the score tables and plots into ``out``; return their ``report.md`` lines."""
    from bayes_moe.evaluation import calibration

    for name, result in results.items():
        write_csv(result.table, out / f"scores_{name}.csv")
    curves = calibration.coverage_curves(results)
    write_csv(curves, out / "coverage_curves.csv")
    with atomic_path(out / "pit_histograms.png") as tmp:
        plotting.plot_pit_histograms(results, tmp)
    with atomic_path(out / "coverage_curves.png") as tmp:
        plotting.plot_coverage_curves(curves, tmp)

    models = pd.DataFrame(doc["models"]).T
    models.index.name = "model"
    columns = [
        c
        for c in (
            "log_score",
            "crps",
            "coverage_90",
            "coverage_95",
            "pit_ks_pvalue",
            "berkowitz_pvalue",
            "interval_score_90",
            "variance_correlation",
            "n_days",
            "n_days_missing",
            "elapsed_s",
        )
        if c in models.columns and (c != "n_days_missing" or models[c].any())
    ]
    models = models[columns].sort_values("log_score", ascending=False)
    for count in {"n_days", "n_days_missing"} & set(columns):
        models[count] = models[count].astype(int)
    lines = [
        "",
        "## Scores (log score: nats/day, higher is better; CRPS: lower is better)",
        "",
        _markdown_table(models),
        "",
        "![PIT histograms](pit_histograms.png)",
        "",
        "![Coverage](coverage_curves.png)",
    ]
    if doc["comparisons"]:
        comp = pd.DataFrame(doc["comparisons"]).T
        comp.index.name = "baseline"
        lines += [
            "",
            f"## {reference} against each baseline: daily log-score difference",
            "",
            "Mean of d_t = log p_ref(y_t) - log p_baseline(y_t), Newey-West standard error,",
            "t statistic (Diebold-Mariano); positive favours the reference.",
            *_overlap_note(results[reference].horizon),
            "",
            _markdown_table(
                comp[[c for c in comp.columns if c in ("mean_diff", "nw_se", "t_stat", "pvalue")]]
            ),
        ]
        best = doc["best_baseline"]
        with atomic_path(out / "score_differences.png") as tmp:
            plotting.plot_score_differences(results, reference, best, tmp)
        lines += ["", f"![Against {best}](score_differences.png)"]
    if reference in results and "regime_probs" in results[reference].extras:
        by_regime = calibration.calibration_by_regime(results[reference])
        write_csv(by_regime, out / "calibration_by_regime.csv")
        with atomic_path(out / "calibration_by_regime.png") as tmp:
            plotting.plot_regime_calibration(by_regime, tmp)
        doc["calibration_by_regime"] = by_regime.reset_index().to_dict(orient="records")
        lines += [
            "",
            "## Calibration by the (filtered) regime each forecast was made in",
            "",
            _markdown_table(by_regime),
            "",
            "![By regime](calibration_by_regime.png)",
        ]
    return lines
