"""The report folder of a fit: forecast, regimes, plots, InferenceData, metrics.

Used by ``bayes-moe demo`` and ``bayes-moe fit``. Every file is written atomically.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from bayes_moe import plotting
from bayes_moe.io import atomic_path, write_csv, write_json

COVERAGE_LEVELS = (0.5, 0.9)


def in_sample_calibration(fit, *, num_samples: int = 1000) -> dict:
    """Mean one-step log score and empirical coverage of central intervals, in sample.

    Each day is scored under the causal predictive from the previous close with the
    fitted posterior draws (regimes filtered, not smoothed). It is in-sample: the
    parameters saw these days; out-of-sample scores come from backtests.
    """
    data = fit.data
    realized = data.unstandardize(data.observed_response.numpy())[:, 0]
    log_lik = fit.pointwise_log_likelihood().to_numpy()  # (N_obs, S)
    log_score = np.logaddexp.reduce(log_lik, axis=1) - np.log(log_lik.shape[1])
    mixture = fit.predictive(end=data.origin_dates[data.n_observed - 1])
    samples = mixture.sample(num_samples, seed=1)[..., 0]  # (num_samples, N_obs)
    out = {"mean_log_score": float(log_score.mean()), "n_days": int(len(realized))}
    for level in COVERAGE_LEVELS:
        lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out[f"coverage_{int(level * 100)}"] = float(np.mean((realized >= lo) & (realized <= hi)))
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


def summary(fit, forecast, regimes) -> dict:
    """A JSON-serializable summary of the fit: data, diagnostics, regime now, forecast."""
    data = fit.data
    current = regimes.current()
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
            "date": str(current["date"].date()),
            "regime": current["regime"],
            "filtered_probability": current["probability"],
            "filtered_probability_sd": current["probability_sd"],
            "volatility": float(regimes.volatility["mean"].iloc[current["regime"]]),
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
            "expert_weights": forecast.expert_weights.to_dict(),
        },
    }


def write_report(fit, out, *, price: pd.Series | None = None, num_samples: int = 2000) -> dict:
    """Write the report folder ``out`` and return the metrics dictionary.

    Files: ``forecast.json``, ``forecast.csv``, ``fan_chart.png``, ``regimes.png``,
    ``regime_posterior.png``, ``expert_weights.png``, ``elbo.png``,
    ``regime_summary.csv``, ``regimes_filtered.csv``, ``regimes_smoothed.csv``,
    ``regimes_viterbi.csv``, ``inference_data.nc``, ``fit.safetensors`` (checkpoint)
    and ``metrics.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    forecast = fit.forecast(num_samples=num_samples, seed=0)
    regimes = fit.regimes()
    metrics = summary(fit, forecast, regimes)
    metrics["in_sample"] = in_sample_calibration(fit)

    idata = fit.to_inference_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings are reported in the numbers
        loo = az.loo(idata)
    metrics["in_sample"].update(
        elpd_loo=float(loo["elpd_loo"]),
        p_loo=float(loo["p_loo"]),
        pareto_k_above_0_7=int(np.sum(np.asarray(loo["pareto_k"]) > 0.7)),
    )
    with atomic_path(out / "inference_data.nc") as tmp:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
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


def write_backtest_report(results: dict, out, *, protocol: dict, reference="bayes_moe") -> dict:
    """Write a calibration study of backtest results to ``out``; return the metrics.

    Files: ``metrics.json`` (the documented shape, see
    :func:`bayes_moe.evaluation.calibration.metrics`), ``report.md``,
    ``scores_<model>.csv`` (per-day scores), ``pit_histograms.png``,
    ``coverage_curves.png``, and with the mixture present ``score_differences.png``
    and ``calibration_by_regime.png``.
    """
    from bayes_moe.evaluation import calibration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = calibration.metrics(results, protocol=protocol, reference=reference)
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
            "n_days",
            "elapsed_s",
        )
        if c in models.columns
    ]
    models = models[columns].sort_values("log_score", ascending=False)
    lines = [
        "# Calibration study",
        "",
        "## Protocol",
        "",
        *[f"- **{k}**: {v}" for k, v in protocol.items()],
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
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(doc, out / "metrics.json")
    return doc
