"""Panel backtest on the 20 S&P 500 stocks of the panel extra (skfolio), 2019-2022.

Rolling origin: the test days 2019-01-02 .. 2022-12-28 (``--period validation``: the
validation years 2011-2014, on which the configuration is chosen) are cut into blocks of
``--refit-every`` trading days; before each block every model is fitted on the
``--train-days`` days before it (a rolling window) and then forecasts each test day of
the block one step ahead from the previous close, with the fitted parameters
(:meth:`PanelFit.apply <bayes_moe.inference.panel_fit.PanelFit.apply>`; the regime filter
runs on through the block). Models:

``cross_sectional``
    The mixture of AR and the cross-sectional expert (asset embeddings, attention across
    the stocks of each day), one market regime path shared by every stock.
``no_attention``
    The same with the attention removed (each stock alone, with its embedding).
``garch_t``
    GARCH(1,1) with Student-t innovations per stock (``arch``), refitted on the same
    windows.

Scores per stock and pooled: mean log score (nats per stock-day), CRPS and 90% interval
coverage; the pooled comparison is a Diebold-Mariano test on the daily cross-sectional
mean log score (Newey-West lag from :func:`~bayes_moe.evaluation.scoring.newey_west_lag`).
The learned embeddings of the last refit are plotted (first two principal components,
coloured by GICS sector, :data:`bayes_moe.data.SP500_STOCK_SECTORS`).

``--speed`` times a fit of the default mixture plus the cross-sectional expert on
2000-2018 (about 4,750 days x 20 stocks) instead.

Writes ``results/panel_sp500.json``, ``results/panel_sp500.md`` and
``results/panel_sp500_embeddings.png`` (``results/panel_speed.json`` with ``--speed``).

    python benchmarks/panel_sp500.py            # the backtest (about 20 minutes)
    python benchmarks/panel_sp500.py --speed    # the fit-time check
    python benchmarks/panel_sp500.py --quick    # smoke run: one short block
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from _options import RESULTS_DIR, add_run_options, output_path
from tqdm.auto import tqdm

import bayes_moe as bm
from bayes_moe.data import SP500_STOCK_SECTORS
from bayes_moe.evaluation.baselines import BASELINES
from bayes_moe.evaluation.moe_forecaster import to_location_scale
from bayes_moe.evaluation.scoring import diebold_mariano, newey_west_lag
from bayes_moe.io import atomic_path, write_json

#: Test years of the issue, and the validation years on which configurations are chosen.
PERIODS = {"test": ("2019-01-01", "2022-12-31"), "validation": ("2011-01-01", "2014-12-31")}
MODELS = ("cross_sectional", "no_attention", "garch_t")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refit-every", type=int, default=250, help="test days per block")
    parser.add_argument("--train-days", type=int, default=2000, help="rolling training window")
    parser.add_argument("--regimes", type=int, default=3)
    parser.add_argument("--window", type=int, default=20, help="context window L (days)")
    parser.add_argument("--num-steps", type=int, default=600)
    parser.add_argument("--num-draws", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--period", choices=sorted(PERIODS), default="test", help="test or validation years"
    )
    parser.add_argument(
        "--cross-sectional",
        default="{}",
        metavar="JSON",
        help="options of the cross_sectional expert, e.g. '{\"vol_inputs\": false}'",
    )
    parser.add_argument("--speed", action="store_true", help="time the 2000-2018 default fit")
    add_run_options(parser, "panel_sp500")
    return parser.parse_args(argv)


def mixture(name: str, args) -> bm.BayesianMoE:
    """The panel mixtures compared (the configuration was fixed before looking at 2019+)."""
    options = json.loads(args.cross_sectional)
    cs = {"name": "cross_sectional", **options, "attention": name == "cross_sectional"}
    return bm.BayesianMoE(experts=["ar", cs], n_regimes=args.regimes, window=args.window)


def score_mixture(fit, test: pd.DataFrame, stocks: pd.DataFrame) -> pd.DataFrame:
    """One row per (date, asset) of the block: log score, CRPS, 90% interval hit."""
    origins = stocks.index[stocks.index.get_indexer(test.index) - 1]
    rows = []
    for asset in fit.assets:
        mixture_ = fit.predictive(asset, start=origins[0], end=origins[-1])
        predictive = to_location_scale(mixture_, test.index)
        rows.append(_scores(predictive, test[asset].to_numpy(), test.index, asset))
    return pd.concat(rows)


def score_garch(train: pd.DataFrame, frame: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """GARCH(1,1)-t per stock, fitted on ``train``, one-step forecasts for ``test``."""
    rows = []
    origins = frame.index[frame.index.get_indexer(test.index) - 1]
    for asset in test.columns:
        fitted = BASELINES["garch_t"]()(_single(train, asset))
        predictive = fitted(_single(frame, asset), origins, 1)
        rows.append(_scores(predictive, test[asset].to_numpy(), test.index, asset))
    return pd.concat(rows)


def _single(frame: pd.DataFrame, asset: str) -> pd.DataFrame:
    """One stock as a single-series frame (column ``ret``)."""
    return frame[[asset]].rename(columns={asset: "ret"}).dropna()


def _scores(predictive, y, dates, asset) -> pd.DataFrame:
    lo, hi = predictive.interval(0.9)
    return pd.DataFrame(
        {
            "date": dates,
            "asset": asset,
            "log_score": predictive.log_prob(y),
            "crps": predictive.crps(y),
            "covered_90": ((y >= lo) & (y <= hi)).astype(float),
        }
    )


def blocks(stocks: pd.DataFrame, args) -> list[tuple[int, int]]:
    """``(first, stop)`` row positions of each test block."""
    start, end = PERIODS[args.period]
    test = np.flatnonzero((stocks.index >= start) & (stocks.index <= end))
    first, last = int(test[0]), int(test[-1]) + 1
    if args.quick:
        return [(first, first + 40)]
    starts = list(range(first, last, args.refit_every))
    return [(s, min(s + args.refit_every, last)) for s in starts]


def run_backtest(args) -> dict:
    stocks = bm.data.load_sp500_stocks()
    if args.quick:
        args.num_steps, args.num_draws, args.train_days = 30, 10, 300
    scores = {name: [] for name in MODELS}
    fit_times = {name: [] for name in MODELS}
    failures = []
    last_fit = None
    for first, stop in tqdm(blocks(stocks, args), desc="blocks", disable=args.no_progress):
        train = stocks.iloc[first - args.train_days : first]
        frame = stocks.iloc[first - args.train_days : stop]
        test = stocks.iloc[first:stop]
        for name in MODELS:
            start = time.perf_counter()
            try:
                if name == "garch_t":
                    scores[name].append(score_garch(train, frame, test))
                else:
                    fit = mixture(name, args).fit(
                        train,
                        panel=True,
                        seed=args.seed,
                        num_steps=args.num_steps,
                        num_draws=args.num_draws,
                        progress=not args.no_progress,
                    )
                    scores[name].append(score_mixture(fit.apply(frame), test, stocks))
                    if name == "cross_sectional":
                        last_fit = fit
            except Exception:  # one failed refit is reported, the others are kept
                failures.append(
                    {
                        "model": name,
                        "block": str(test.index[0].date()),
                        "error": traceback.format_exc(),
                    }
                )
            fit_times[name].append(time.perf_counter() - start)
    tables = {name: pd.concat(parts) for name, parts in scores.items() if parts}
    result = {"protocol": _protocol(args), "failures": failures, "time_s": fit_times}
    result.update(summarize(tables))
    if last_fit is not None:
        result["embeddings"] = plot_embeddings(last_fit, args)
    return result


def summarize(tables: dict[str, pd.DataFrame]) -> dict:
    """Per-stock and pooled scores; Diebold-Mariano on the daily mean log score."""
    per_asset = {
        name: t.groupby("asset")[["log_score", "crps", "covered_90"]].mean().round(4).to_dict()
        for name, t in tables.items()
    }
    pooled = {
        name: {
            "log_score": float(t["log_score"].mean()),
            "crps": float(t["crps"].mean()),
            "coverage_90": float(t["covered_90"].mean()),
            "stock_days": len(t),
        }
        for name, t in tables.items()
    }
    daily = {name: t.groupby("date")["log_score"].mean() for name, t in tables.items()}
    comparisons = {}
    for a, b in (("cross_sectional", "no_attention"), ("cross_sectional", "garch_t")):
        if a in daily and b in daily:
            x, y = daily[a].align(daily[b], join="inner")
            test = diebold_mariano(x.to_numpy(), y.to_numpy(), lag=newey_west_lag(len(x)))
            comparisons[f"{a}_vs_{b}"] = {k: float(v) for k, v in test.items()}
    return {"pooled": pooled, "per_asset": per_asset, "comparisons": comparisons}


def plot_embeddings(fit, args) -> dict:
    """First two principal components of the asset embeddings, coloured by sector."""
    emb = fit.embeddings()
    centred = emb.to_numpy() - emb.to_numpy().mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:2].T
    sectors = [SP500_STOCK_SECTORS.get(a, "unknown") for a in emb.index]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for sector in sorted(set(sectors)):
        rows = [i for i, s in enumerate(sectors) if s == sector]
        ax.scatter(pcs[rows, 0], pcs[rows, 1], label=sector, s=40)
    for i, asset in enumerate(emb.index):
        ax.annotate(asset, pcs[i], fontsize=8, xytext=(3, 3), textcoords="offset points")
    explained = sv**2 / (sv**2).sum()
    ax.set_xlabel(f"PC1 ({explained[0]:.0%})")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%})")
    ax.set_title("cross_sectional expert: learned asset embeddings (last refit)")
    ax.legend(fontsize=7, loc="best")
    path = RESULTS_DIR / (
        "panel_sp500_embeddings_quick.png" if args.quick else "panel_sp500_embeddings.png"
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return {
        "explained": [float(e) for e in explained[:2]],
        "pc": {a: [float(pcs[i, 0]), float(pcs[i, 1])] for i, a in enumerate(emb.index)},
        "sector": dict(zip(emb.index, sectors)),
        "same_sector_distance": _sector_distances(pcs, sectors),
    }


def _sector_distances(pcs: np.ndarray, sectors: list[str]) -> dict:
    """Mean PC-plane distance between stocks of the same sector and of different ones."""
    same, other = [], []
    for i in range(len(sectors)):
        for j in range(i + 1, len(sectors)):
            (same if sectors[i] == sectors[j] else other).append(np.linalg.norm(pcs[i] - pcs[j]))
    return {"same_sector": float(np.mean(same)), "different_sector": float(np.mean(other))}


def run_speed(args) -> dict:
    """The default mixture plus the cross-sectional expert on 2000-2018, timed."""
    stocks = bm.data.load_sp500_stocks().loc["2000":"2018"]
    if args.quick:
        stocks = stocks.iloc[-400:]
    model = bm.BayesianMoE(experts=["ar", "var", "kalman", "cross_sectional"])
    start = time.perf_counter()
    threads = 1  # the package's default for a fit; recorded below
    fit = model.fit(
        stocks,
        panel=True,
        seed=args.seed,
        num_steps=20 if args.quick else 1500,
        num_threads=threads,
        progress=not args.no_progress,
    )
    total = time.perf_counter() - start
    d = fit.diagnostics
    return {
        "data": {
            "days": len(stocks),
            "stocks": stocks.shape[1],
            "from": str(stocks.index[0].date()),
            "to": str(stocks.index[-1].date()),
        },
        "experts": fit.program.labels,
        "steps": d.num_steps,
        "converged": d.converged,
        "step_time_s": d.step_time_s,
        "svi_s": d.elapsed_s,
        "total_fit_s": total,
        "torch_threads": threads,
    }


def _protocol(args) -> dict:
    return {
        "period": args.period,
        "test": list(PERIODS[args.period]),
        "cross_sectional": json.loads(args.cross_sectional),
        "refit_every": args.refit_every,
        "train_days": args.train_days,
        "regimes": args.regimes,
        "window": args.window,
        "num_steps": args.num_steps,
        "num_draws": args.num_draws,
        "seed": args.seed,
        "quick": args.quick,
    }


def markdown(result: dict) -> str:
    lines = [
        "| model | log score | CRPS | 90% coverage | stock-days |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in result["pooled"].items():
        lines.append(
            f"| {name} | {s['log_score']:.4f} | {s['crps']:.4f} | {s['coverage_90']:.3f} "
            f"| {s['stock_days']} |"
        )
    lines.append("")
    for name, c in result["comparisons"].items():
        lines.append(
            f"- {name}: mean difference {c['mean_diff']:.4f} nats/day, "
            f"Newey-West t {c['t_stat']:.2f} (lag {c['lag']:.0f})"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.speed:
        result = run_speed(args)
        out = args.out or RESULTS_DIR / (
            "panel_speed_quick.json" if args.quick else "panel_speed.json"
        )
        write_json(result, out)
        print(result)
        return
    result = run_backtest(args)
    out = output_path(args, "panel_sp500")
    write_json(result, out)
    table = markdown(result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(table)
    print(table)
    if result["failures"]:
        print(f"{len(result['failures'])} failed refit(s); see {out}")


if __name__ == "__main__":
    main()
