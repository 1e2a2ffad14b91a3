"""The report folder of a panel fit (``bayes-moe fit --panel`` or ``--asset-col``).

Written whole, like a single-series report (:func:`bayes_moe.io.atomic_folder`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_moe import plotting
from bayes_moe.inference.arviz import compact, loo, to_netcdf
from bayes_moe.inference.panel_fit import PanelFit
from bayes_moe.inference.posterior import DEFAULT_KEEP_DRAWS
from bayes_moe.io import atomic_folder, atomic_path, write_csv, write_json
from bayes_moe.report import _markdown_table, format_regime_summary, regime_now, write_regime_tables


def write_panel_report(
    fit: PanelFit,
    out,
    *,
    num_samples: int = 2000,
    started: float | None = None,
    keep_draws: int | None = DEFAULT_KEEP_DRAWS,
) -> dict:
    """Write the report folder ``out`` of a panel fit; return the metrics dictionary.

    Files: ``report.md`` (the per-asset forecast table, the market regimes),
    ``forecast.csv`` (one row per asset), ``in_sample.csv`` (per asset: mean one-step
    log score in sample, scored days; with ``asset_levels`` the posterior mean and sd of
    each asset's loading on the regime levels), ``regime_summary.csv``, ``regimes_filtered.csv``,
    ``regimes_smoothed.csv``, ``regimes_viterbi.csv``, ``regimes.png`` (the equal-weight
    market's cumulative return with the filtered and smoothed regime probabilities),
    ``expert_weights.png``, ``elbo.png``, ``embeddings.csv`` (with a cross-sectional
    expert), ``inference_data.nc`` (with the ``asset`` dimension), ``metrics.json`` and
    ``fit.safetensors`` (the checkpoint: ``bm.load_panel_fit``,
    ``bayes-moe forecast --model``) and ``manifest.json``.
    """
    with atomic_folder(out) as folder:
        return _write_files(fit, folder, num_samples, started, keep_draws)


def market_path(fit: PanelFit) -> pd.Series:
    """Cumulative equal-weight return of the scored stocks (data units), by response date."""
    data = fit.data
    values = np.stack(
        [
            data.unstandardize(data.observed_response[:, i].numpy(), i)
            for i in range(len(fit.assets))
        ],
        axis=1,
    )
    return pd.Series(
        np.cumsum(np.nanmean(values, axis=1)),
        index=data.response_dates,
        name="cumulative equal-weight return (%)",
    )


def _write_files(fit: PanelFit, out: Path, num_samples, started, keep_draws) -> dict:
    regimes = fit.regimes(keep_draws)
    forecast = fit.forecast(num_samples=num_samples, seed=0)
    table = forecast.to_frame()
    in_sample = fit.pointwise_log_likelihood()
    per_asset = pd.DataFrame(
        {"mean_log_score": in_sample.mean(), "scored_days": in_sample.notna().sum()}
    )
    per_asset.index.name = "asset"
    if "gate/asset_level_loading" in fit.draws:  # asset_levels: each asset's loading
        loading = fit.draws["gate/asset_level_loading"]
        per_asset["level_loading"] = loading.mean(0).numpy()
        per_asset["level_loading_sd"] = loading.std(0, correction=0).numpy()
    idata = fit.to_inference_data(keep_draws=keep_draws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings are reported in the numbers
        psis = loo(idata)
    metrics = {
        "data": {
            "assets": list(fit.assets),
            "first_date": str(fit.data.dates[0].date()),
            "last_date": str(fit.data.dates[-1].date()),
            "days": fit.data.n_observed,
            "scored_asset_days": int(fit.data.scored.sum()),
        },
        "model": fit.model.config(),
        "fit": fit.diagnostics.to_dict(),
        "regime_now": regime_now(regimes.current()),
        "forecast_regime_probabilities": forecast.regime_probs["mean"].tolist(),
        "forecast": table.reset_index()
        .assign(origin_date=lambda f: f["origin_date"].astype(str))
        .to_dict(orient="records"),
        "in_sample": {
            "mean_log_score": float(np.nanmean(in_sample.to_numpy())),
            "elpd_loo": psis.elpd_loo,
            "pareto_k_above_0_7": int(np.sum(psis.pareto_k > 0.7)),
        },
        "regimes": regimes.summary().reset_index().to_dict(orient="records"),
    }
    with atomic_path(out / "inference_data.nc") as tmp:
        to_netcdf(compact(idata), tmp)
    fit.save(out / "fit.safetensors")
    write_csv(table, out / "forecast.csv")
    write_csv(per_asset, out / "in_sample.csv")
    write_regime_tables(regimes, out)
    try:
        write_csv(fit.embeddings(), out / "embeddings.csv")
    except ValueError:
        pass  # no cross-sectional expert
    for name, draw in (
        ("regimes.png", lambda p: plotting.plot_regimes(fit, regimes, p, price=market_path(fit))),
        ("expert_weights.png", lambda p: plotting.plot_expert_weights(regimes, p)),
        ("elbo.png", lambda p: plotting.plot_elbo(fit.diagnostics, p)),
    ):
        with atomic_path(out / name) as tmp:
            draw(tmp)
    if started is not None:
        metrics["elapsed_s"] = time.perf_counter() - started
    write_json(metrics, out / "metrics.json")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_markdown(fit, table, per_asset, regimes, metrics))
    return metrics


def _markdown(fit: PanelFit, table, per_asset, regimes, metrics) -> str:
    now = metrics["regime_now"]
    columns = ["mean", "std", "q0.05", "q0.5", "q0.95"]
    forecasts = table[columns].join(per_asset.astype({"scored_days": str}))
    unit = "%/day" if fit.horizon == 1 else f"% per {fit.horizon} days"
    return "\n".join(
        [
            f"# Panel fit: {len(fit.assets)} assets, {metrics['data']['first_date']} .. "
            f"{metrics['data']['last_date']}",
            "",
            f"Experts {fit.program.labels}, {fit.model.n_regimes} market regimes shared by "
            f"every asset; SVI {metrics['fit']['num_steps']} steps.",
            "",
            f"## Forecasts from {table['origin_date'].iloc[0].date()}, horizon {fit.horizon} "
            f"({unit})",
            "",
            "In-sample columns: mean one-step log score (nats per scored day) and scored days.",
            "",
            _markdown_table(forecasts),
            "",
            "## Market regimes (posterior mean [94% interval])",
            "",
            "```",
            format_regime_summary(regimes.summary(), unit=unit),
            "```",
            "",
            f"Regime on {now['date']}: {now['regime']} (filtered probability "
            f"{now['filtered_probability']:.3f} +/- {now['filtered_probability_sd']:.3f}).",
            "",
        ]
    )
