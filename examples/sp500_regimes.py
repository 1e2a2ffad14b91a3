"""Market regimes of the S&P 500 and tomorrow's return distribution.

Fits the Bayesian mixture of experts (by default an AR, a VAR and a Kalman expert
mixed by a 3-regime sticky Markov gate) to the daily S&P 500 percentage log returns
bundled with ``arch`` (1999-2018, works offline), then prints what a quant looks at:

* the regime report (``fit.regimes().summary()``): each regime's volatility, its
  volatility level (the factor on every expert's scale), mean return, expected
  duration in days, share of days as the most probable regime and its top experts,
  each with a 94% credible interval; then the transition matrix at average
  conditions (the transitions also respond to the weekly and monthly realized
  variance); regimes are labelled 0 (calmest) to K-1 (most turbulent);
* the regime on the last day: the filtered probability P(z_T | y_1..T) and its sd
  across posterior draws, so the regime call carries its own uncertainty;
* the next-day forecast from the last close: mean, sd, 90% interval and quantiles of
  the posterior predictive (a mixture over posterior draws, regimes and experts);
* filtered versus smoothed regime probabilities. Filtered P(z_t | y_1..t) is what a
  trader could have known at the close of day t; smoothed P(z_t | y_1..T) uses the
  whole sample, so it looks ahead and must never drive a backtest. They coincide on
  the last day and differ before it; the script prints both for the last five days
  and the share of days on which their most probable regime differs.

Files written into ``--out``: ``fan_chart.png`` (one-step predictive bands and the
forecast), ``regimes.png`` (price with filtered and smoothed regime probabilities),
``expert_weights.png`` (expert weight per regime), ``inference_data.nc`` (ArviZ
InferenceData: posterior, posterior predictive, log-likelihood, regime posteriors;
open it with ``arviz.from_netcdf``) and ``summary.json`` (every number printed).

Examples
--------
::

    python examples/sp500_regimes.py --out sp500_regimes
    python examples/sp500_regimes.py --start 2007-01-01 --regimes 2 --out since_2007
    python examples/sp500_regimes.py --num-steps 300 --num-draws 50 --out quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

import bayes_moe as bm
from bayes_moe import plotting
from bayes_moe.inference.arviz import to_netcdf
from bayes_moe.io import atomic_path, write_json
from bayes_moe.report import format_regime_summary

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fit the mixture on the S&P 500 and inspect its regimes and forecast."
    )
    parser.add_argument(
        "--experts",
        default="ar,var,kalman",
        help="comma-separated expert names (bm.list_experts())",
    )
    parser.add_argument("--regimes", type=int, default=3, help="number of regimes K")
    parser.add_argument("--window", type=int, default=64, help="context window L (days)")
    parser.add_argument("--num-steps", type=int, default=1500, help="maximum SVI steps")
    parser.add_argument("--num-draws", type=int, default=200, help="posterior draws kept")
    parser.add_argument("--num-samples", type=int, default=4000, help="forecast samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", help="first date to fit on (YYYY-MM-DD), e.g. 2007-01-01")
    parser.add_argument("--out", type=Path, default=Path("sp500_regimes"), help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the SVI progress bar")
    args = parser.parse_args(argv)
    args.expert_list = [e.strip() for e in args.experts.split(",") if e.strip()]
    if not args.expert_list:
        parser.error("--experts needs at least one expert name")
    if args.start is not None:
        try:
            args.start = pd.Timestamp(args.start)
        except ValueError:
            parser.error(f"--start {args.start!r} is not a date (use YYYY-MM-DD)")
    return args


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))


def filtered_vs_smoothed(regimes, days: int = 5) -> tuple[pd.DataFrame, float]:
    """Both posteriors side by side for the last ``days`` days, and the disagreement share."""
    filtered, smoothed = regimes.filtered, regimes.smoothed
    table = pd.concat({"filtered": filtered, "smoothed": smoothed}, axis=1).tail(days)
    differs = filtered.to_numpy().argmax(axis=1) != smoothed.to_numpy().argmax(axis=1)
    return table, float(differs.mean())


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    frame = bm.data.load_sp500()
    if args.start is not None:
        frame = frame.loc[args.start :]
    price = frame["adj_close"].rename("S&P 500 (adjusted close)")

    model = bm.BayesianMoE(experts=args.expert_list, n_regimes=args.regimes, window=args.window)
    print(
        f"fitting {model.labels} with {model.n_regimes} regimes, window {model.window}, "
        f"on S&P 500 daily returns {frame.index[0].date()} .. {frame.index[-1].date()}",
        flush=True,
    )
    fit = model.fit(
        frame,
        target="ret",
        num_steps=args.num_steps,
        num_draws=args.num_draws,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(fit)
    regimes = fit.regimes()
    forecast = fit.forecast(num_samples=args.num_samples, seed=args.seed)

    # ---------------------------------------------------------------- regime posterior
    section("regime posterior (0 = calmest)")
    print("regime report, posterior mean [94% interval]:")
    print(format_regime_summary(regimes.summary()))
    print("\ntransition matrix P(z_t = to | z_t-1 = from) at average conditions, posterior mean:")
    print(regimes.transition.round(4).to_string())
    print("\nexpected duration (days), mean, sd and 94% interval:")
    print(regimes.expected_duration.round(2).to_string())
    print("\nexpert weight within each regime (posterior mean):")
    print(regimes.expert_weights.round(3).to_string())

    current = regimes.current()
    section("regime now")
    print(
        f"{current['date'].date()}: regime {current['regime']} of {regimes.n_regimes}, "
        f"filtered probability {current['probability']:.3f} "
        f"(sd {current['probability_sd']:.3f} across {fit.n_draws} posterior draws)"
    )

    # ------------------------------------------------------------------------ forecast
    section(
        f"forecast of the next day's return (%), from the close of {forecast.origin_date.date()}"
    )
    lo, hi = forecast.interval(0.9)
    quantiles = forecast.quantiles(QUANTILES)
    print(f"mean {forecast.mean:+.4f}, sd {forecast.std:.4f}, 90% interval [{lo:+.3f}, {hi:+.3f}]")
    print("quantiles: " + ", ".join(f"q{q:g} {v:+.3f}" for q, v in quantiles.items()))
    print("regime probabilities for the forecast day (mean, sd over draws):")
    print(forecast.regime_probs.round(3).to_string())
    print("expert weights in the forecast:")
    print(forecast.expert_weights.round(3).to_string())

    # ------------------------------------------------------------ filtered vs smoothed
    table, share = filtered_vs_smoothed(regimes)
    section("filtered (causal) vs smoothed (look-ahead) regime probabilities")
    print(table.round(3).to_string())
    print(
        f"the most probable regime differs on {share:.1%} of {len(regimes.dates)} days; "
        "on the last day the two coincide (nothing after it to look at)"
    )

    # --------------------------------------------------------------------------- files
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "fan_chart.png": lambda p: plotting.plot_fan_chart(fit, forecast, p),
        "regimes.png": lambda p: plotting.plot_regimes(fit, regimes, p, price=price),
        "expert_weights.png": lambda p: plotting.plot_expert_weights(regimes, p),
    }
    for name, draw in files.items():
        with atomic_path(out / name) as tmp:
            draw(tmp)
    idata = fit.to_inference_data()
    with atomic_path(out / "inference_data.nc") as tmp:
        to_netcdf(idata, tmp)

    duration = regimes.expected_duration
    summary = {
        "period": {
            "first_response_date": str(regimes.dates[0].date()),
            "last_response_date": str(regimes.dates[-1].date()),
            "n_days": len(regimes.dates),
        },
        "model": fit.model.config(),
        "fit": fit.diagnostics.to_dict(),
        "transition": regimes.transition.to_numpy().tolist(),
        "expected_duration_days": {
            "mean": duration["mean"].tolist(),
            "sd": duration["sd"].tolist(),
            "q3%": duration["q3%"].tolist(),
            "q97%": duration["q97%"].tolist(),
        },
        "regime_volatility": regimes.volatility["mean"].tolist(),
        "regime_summary": regimes.summary().reset_index().to_dict(orient="records"),
        "expert_weights": {
            "experts": list(regimes.expert_weights.columns),
            "by_regime": regimes.expert_weights.to_numpy().tolist(),
        },
        "regime_now": {
            "date": str(current["date"].date()),
            "regime": current["regime"],
            "filtered_probability": current["probability"],
            "filtered_probability_sd": current["probability_sd"],
        },
        "forecast": {
            "origin_date": str(forecast.origin_date.date()),
            "mean": forecast.mean,
            "std": forecast.std,
            "interval_90": [lo, hi],
            "quantiles": {f"{q:g}": float(v) for q, v in quantiles.items()},
            "regime_probabilities": forecast.regime_probs["mean"].tolist(),
            "regime_probabilities_days_after_origin": forecast.horizon,
            "expert_weights": forecast.expert_weights.to_dict(),
        },
        "filtered_vs_smoothed": {
            "dates": [str(d.date()) for d in table.index],
            "filtered": table["filtered"].to_numpy().tolist(),
            "smoothed": table["smoothed"].to_numpy().tolist(),
            "share_days_argmax_differs": share,
        },
        "files": sorted([*files, "inference_data.nc", "summary.json"]),
    }
    write_json(summary, out / "summary.json")
    section("files")
    print(f"written to {out}/: " + ", ".join(summary["files"]))
    return summary


if __name__ == "__main__":
    try:
        main()
    except bm.data.DataError as err:  # bad input, e.g. a --start too close to the end
        sys.exit(f"sp500_regimes.py: error: {err}")
