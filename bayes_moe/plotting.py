"""Plots of a fit, written to PNG files (matplotlib, Agg backend).

Numerics never import this module; it reads a fitted :class:`~bayes_moe.MoEFit`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bayes_moe.inference.arviz import plot_forest  # noqa: E402

REGIME_COLORS = ["#4c9a2a", "#e0a526", "#c0392b", "#6c3483", "#1f618d", "#7f8c8d"]
BANDS = ((0.05, 0.95), (0.25, 0.75))


def _regime_color(k: int) -> str:
    return REGIME_COLORS[k % len(REGIME_COLORS)]


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_fan_chart(fit, forecast, path, *, days: int = 250, num_samples: int = 2000) -> Path:
    """Realized returns of the last ``days`` days with their one-step predictive bands.

    The bands at each day come from the causal predictive made at the previous
    close (filtered regimes, fitted draws); the last band is the forecast.
    """
    target = fit.targets[0]
    origins = fit.data.origin_dates[: fit.data.n_observed][-days:]
    mixture = fit.predictive(start=origins[0], end=origins[-1])
    samples = mixture.sample(num_samples, seed=0)[..., 0]  # (num_samples, days)
    realized_dates = fit.data.response_dates[-len(origins) :]
    realized = fit.data.unstandardize(fit.data.observed_response.numpy())[-len(origins) :, 0]
    next_day = realized_dates[-1] + pd.tseries.offsets.BDay(fit.horizon)  # plotting position only

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for (lo, hi), alpha in zip(BANDS, (0.25, 0.45)):
        q_lo, q_hi = np.quantile(samples, [lo, hi], axis=0)
        ax.fill_between(
            realized_dates,
            q_lo,
            q_hi,
            color="#1f77b4",
            alpha=alpha,
            lw=0,
            label=f"{round(100 * (hi - lo))}% one-step predictive interval",
        )
        f_lo, f_hi = np.quantile(forecast.samples, [lo, hi])
        ax.fill_between(
            [realized_dates[-1], next_day],
            [q_lo[-1], f_lo],
            [q_hi[-1], f_hi],
            color="#ff7f0e",
            alpha=alpha,
            lw=0,
        )
    ax.plot(realized_dates, realized, color="black", lw=0.7, label=f"realized {target}")
    ax.errorbar(
        [next_day],
        [np.median(forecast.samples)],
        yerr=[
            [np.median(forecast.samples) - np.quantile(forecast.samples, 0.05)],
            [np.quantile(forecast.samples, 0.95) - np.median(forecast.samples)],
        ],
        fmt="o",
        color="#ff7f0e",
        label=(
            f"forecast from the {forecast.origin_date.date()} close, h={fit.horizon} (median, 90%)"
        ),
    )
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title(
        f"{target}: one-step posterior predictive, last {len(origins)} days, and the forecast"
    )
    ax.set_ylabel(f"{target} (data units)")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_regimes(fit, regimes, path, *, price: pd.Series | None = None) -> Path:
    """Price (or cumulative return) with filtered and smoothed regime probabilities."""
    dates = regimes.dates
    if price is None:
        cum = np.cumsum(fit.data.unstandardize(fit.data.observed_response.numpy())[:, 0])
        price = pd.Series(cum, index=dates, name=f"cumulative {fit.targets[0]}")
    price = price.reindex(dates)
    filtered, smoothed = regimes.filtered, regimes.smoothed
    K = regimes.n_regimes

    fig, axes = plt.subplots(
        3, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]}
    )
    ax = axes[0]
    ax.plot(dates, price.to_numpy(), color="black", lw=0.7)
    current = filtered.to_numpy().argmax(axis=1)
    volatility = regimes.volatility["mean"]
    unit = "" if fit.horizon == 1 else f" per {fit.horizon} days"
    for k in range(K):
        ax.fill_between(
            dates,
            price.min(),
            price.max(),
            where=current == k,
            step="mid",
            color=_regime_color(k),
            alpha=0.18,
            lw=0,
            label=f"regime {k}: volatility {volatility.iloc[k]:.2f}{unit}",
        )
    ax.set_ylabel(price.name or "price")
    ax.set_title("Most probable regime by filtered probability (causal), calm = 0")
    ax.legend(loc="upper left", fontsize=8, ncol=K)
    for ax, probs, title in (
        (axes[1], filtered, "filtered P(z_t = k | y_1..t)  (causal: usable for trading)"),
        (axes[2], smoothed, "smoothed P(z_t = k | y_1..T)  (uses the whole sample: look-ahead)"),
    ):
        ax.stackplot(
            dates, probs.to_numpy().T, colors=[_regime_color(k) for k in range(K)], alpha=0.85, lw=0
        )
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


_FOREST_TITLES = {
    "regime_volatility": "volatility (%/day)",
    "regime_duration": "expected duration (days)",
    "regime_expert_weight": "expert weight within the regime",
}


def plot_regime_posterior(idata, path) -> Path:
    """ArviZ forest plot of each regime's volatility, expected duration and expert weights.

    Posterior means with 94% HDIs, from the InferenceData of
    :meth:`~bayes_moe.MoEFit.to_inference_data`, one panel per variable
    (:func:`bayes_moe.inference.arviz.plot_forest`, under ArviZ 0.x or 1.x).
    """
    return plot_forest(idata, list(_FOREST_TITLES), path, titles=list(_FOREST_TITLES.values()))


def plot_expert_weights(regimes, path) -> Path:
    """Heatmap of the posterior mean gate weight of each expert within each regime."""
    weights = regimes.expert_weights
    fig, ax = plt.subplots(figsize=(1.2 * weights.shape[1] + 2, 0.6 * weights.shape[0] + 1.5))
    image = ax.imshow(weights.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    for (k, m), value in np.ndenumerate(weights.to_numpy()):
        ax.text(
            m,
            k,
            f"{value:.2f}",
            ha="center",
            va="center",
            color="white" if value > 0.6 else "black",
        )
    ax.set_xticks(range(weights.shape[1]), weights.columns)
    ax.set_yticks(range(weights.shape[0]), [f"regime {k}" for k in weights.index])
    ax.set_title("Expert weight within each regime (posterior mean)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_elbo(diagnostics, path) -> Path:
    """Negative ELBO per observation over the SVI steps."""
    losses = diagnostics.losses / diagnostics.n_observations
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(losses, lw=0.6, color="grey")
    window = max(1, len(losses) // 50)
    smooth = pd.Series(losses).rolling(window, min_periods=1).mean()
    ax.plot(smooth, color="black", lw=1.2)
    ax.set_xlabel("SVI step")
    ax.set_ylabel("-ELBO / observation (nats)")
    lo, hi = np.quantile(losses, [0.0, 0.9])
    ax.set_ylim(lo - 0.02 * abs(lo), hi)
    ax.set_title("SVI convergence")
    return _save(fig, path)


def plot_energy(fit, energy: pd.DataFrame, path, *, vix: pd.Series | None = None) -> Path:
    """Energy over time against realized absolute returns, VIX and the heavy experts' weight.

    ``energy``: the frame of :meth:`~bayes_moe.MoEFit.energy`. Top: the energy with
    its posterior mean +/- one sd and its two parts (predictive and regime entropy).
    Middle: the absolute realized response of each origin, ``|y_{t+h}|`` (20-day mean
    in black), with ``vix`` (a date-indexed series, e.g. ``bm.data.load_vix()["vix"]``;
    else the fit's ``vix`` column if it has one) on a second axis. Bottom, when the
    mixture has more than one capacity class: the weight of the heaviest class. The
    titles give the Spearman rank correlations of the energy with both.
    """
    observed = energy.iloc[: fit.data.n_observed]
    dates = observed.index
    realized = np.abs(fit.data.unstandardize(fit.data.observed_response.numpy())[:, 0])
    realized = pd.Series(realized, index=dates)
    if vix is None and "vix" in fit.data.frame.columns:
        vix = fit.data.frame["vix"]
    vix = None if vix is None else vix.reindex(dates)
    if vix is not None and vix.notna().sum() < 2:
        vix = None
    two_classes = len(set(fit.program.capacity)) > 1

    fig, axes = plt.subplots(
        3 if two_classes else 2, 1, figsize=(12, 8 if two_classes else 6), sharex=True
    )
    ax = axes[0]
    mean, sd = observed["energy"], observed["energy_sd"]
    ax.fill_between(dates, mean - sd, mean + sd, color="#c0392b", alpha=0.25, lw=0)
    ax.plot(dates, mean, color="#c0392b", lw=0.8, label="energy E_t (mean +/- sd)")
    ax.plot(dates, observed["predictive_entropy"], color="#1f77b4", lw=0.5, label="H[predictive]")
    ax.plot(dates, observed["regime_entropy"], color="#4c9a2a", lw=0.5, label="H[regime]")
    ax.set_ylabel("nats (standardized)")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.set_title("Energy: entropy of the predictive made at t plus entropy of P(z_t | data to t)")

    ax = axes[1]
    rho = mean.corr(realized, method="spearman")
    ax.plot(dates, realized, color="grey", lw=0.3, alpha=0.6)
    ax.plot(dates, realized.rolling(20, min_periods=1).mean(), color="black", lw=0.9)
    ax.set_ylabel(f"|{fit.targets[0]}| over the horizon")
    title = f"realized absolute response (20-day mean in black); Spearman(E, |y|) = {rho:.2f}"
    if vix is not None:
        twin = ax.twinx()
        twin.plot(dates, vix, color="#e0a526", lw=0.8)
        twin.set_ylabel("VIX", color="#e0a526")
        title += f", Spearman(E, VIX) = {mean.corr(vix, method='spearman'):.2f}"
    ax.set_title(title, fontsize=9)

    if two_classes:
        ax = axes[2]
        heavy, heavy_sd = observed["heavy_weight"], observed["heavy_weight_sd"]
        ax.fill_between(dates, heavy - heavy_sd, heavy + heavy_sd, color="#6c3483", alpha=0.25)
        ax.plot(dates, heavy, color="#6c3483", lw=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("weight")
        rho = mean.corr(heavy, method="spearman")
        ax.set_title(
            f"weight of the heaviest capacity class (causal); Spearman(E, weight) = {rho:.2f}",
            fontsize=9,
        )
    return _save(fig, path)


# ------------------------------------------------------------------ calibration studies
def plot_pit_histograms(results, path, *, bins: int = 20) -> Path:
    """PIT histogram of every model (uniform when calibrated), with a 95% band."""
    names = list(results)
    cols = min(3, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pit = results[name].table["pit"].to_numpy()
        n = len(pit)
        expected = n / bins
        band = 1.96 * np.sqrt(expected * (1 - 1 / bins))
        ax.hist(pit, bins=bins, range=(0, 1), color="#1f77b4", alpha=0.8)
        ax.axhspan(expected - band, expected + band, color="grey", alpha=0.2, lw=0)
        ax.axhline(expected, color="black", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("PIT histograms (flat = calibrated; grey: 95% band under uniformity)")
    fig.tight_layout()
    return _save(fig, path)


def plot_coverage_curves(curves: pd.DataFrame, path) -> Path:
    """Empirical vs nominal coverage of central intervals, 5% to 99%."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    nominal = curves.index.to_numpy()
    for name in curves.columns:
        lw = 2.0 if name == "bayes_moe" else 1.0
        axes[0].plot(nominal, curves[name], lw=lw, label=name)
        axes[1].plot(nominal, curves[name] - nominal, lw=lw, label=name)
    axes[0].plot([0, 1], [0, 1], color="black", lw=0.6, ls="--")
    axes[0].set_xlabel("nominal coverage")
    axes[0].set_ylabel("empirical coverage")
    axes[1].axhline(0, color="black", lw=0.6, ls="--")
    axes[1].set_xlabel("nominal coverage")
    axes[1].set_ylabel("empirical - nominal")
    axes[0].legend(fontsize=7)
    fig.suptitle("Coverage of central predictive intervals")
    fig.tight_layout()
    return _save(fig, path)


def plot_regime_calibration(table: pd.DataFrame, path) -> Path:
    """Coverage and mean PIT of the days grouped by their most probable regime."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    regimes = [f"regime {k}\n(n={int(n)})" for k, n in zip(table.index, table["n_days"])]
    colors = [_regime_color(k) for k in table.index]
    axes[0].bar(regimes, table["coverage_90"], color=colors)
    axes[0].axhline(0.9, color="black", ls="--", lw=0.8)
    axes[0].set_title("90% interval coverage")
    axes[1].bar(regimes, table["mean_pit"], color=colors)
    axes[1].axhline(0.5, color="black", ls="--", lw=0.8)
    axes[1].set_title("mean PIT (0.5 if unbiased)")
    axes[2].bar(regimes, table["log_score"], color=colors)
    axes[2].set_title("mean log score (nats/day)")
    fig.suptitle("Calibration by the regime the forecast was made in (filtered)")
    fig.tight_layout()
    return _save(fig, path)


def plot_score_differences(results, reference: str, baseline: str, path) -> Path:
    """Per-day log-score difference against a baseline, cumulated over the test period."""
    ref = results[reference].table["log_score"]
    other = results[baseline].table["log_score"].reindex(ref.index)
    diff = ref - other
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    axes[0].plot(diff.index, diff.to_numpy(), lw=0.5, color="grey")
    axes[0].plot(
        diff.index,
        diff.rolling(60, min_periods=10).mean(),
        color="black",
        lw=1.2,
        label="60-day mean",
    )
    axes[0].axhline(0, color="black", lw=0.5)
    axes[0].set_ylabel("log score difference")
    axes[0].legend(fontsize=8)
    axes[1].plot(diff.index, diff.cumsum().to_numpy(), color="#1f77b4")
    axes[1].axhline(0, color="black", lw=0.5)
    axes[1].set_ylabel("cumulative (nats)")
    axes[0].set_title(
        f"{reference} minus {baseline}: daily log predictive score (> 0: {reference} better)"
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_lfo_compare(table: pd.DataFrame, path) -> Path:
    """Leave-future-out comparison in the style of ``az.plot_compare``.

    Open circles: each model's elpd with its standard error; grey triangles: the
    difference from the best model with the standard error of the difference
    (:func:`bayes_moe.evaluation.comparison.compare_lfo`).
    """
    table = table.sort_values("rank")
    n = len(table)
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.6 * n))
    y = -np.arange(n, dtype=float)
    ax.errorbar(
        table["elpd"], y, xerr=table["se"], fmt="o", mfc="white", color="black", label="elpd (± se)"
    )
    best = table["elpd"].iloc[0]
    others = table.iloc[1:]
    ax.errorbar(
        best - others["elpd_diff"],
        y[1:] - 0.25,
        xerr=others["dse"],
        fmt="^",
        color="grey",
        label="difference from the best (± dse)",
    )
    ax.axvline(best, color="grey", ls="--", lw=0.8)
    labels = [f"{name}  (w={w:.2f})" for name, w in zip(table.index, table["weight"])]
    ax.set_yticks(y, labels)
    method = ", ".join(sorted(set(table["method"])))
    ax.set_xlabel(f"elpd, leave-future-out ({method}), {int(table['n_days'].iloc[0])} days")
    ax.set_title("Model comparison by one-step predictive density (higher is better)")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)
