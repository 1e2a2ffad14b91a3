"""Multi-horizon forecasts on P1's data: h = 1, 5 and 20 days, last 1,000 days out of sample.

For each horizon the mixture is fitted to the ``h``-day cumulative return (the direct
strategy of ``fit(..., horizon=[1, 5, 20])``: one fit per horizon, the gate's horizon
prior favouring short experts at h = 1 and long ones at h = 20) and backtested beside
GARCH(1,1)-t and the constant Normal at the same horizon, rolling origin, expanding
window, refit every ``--refit-every`` test days. The realised targets of consecutive
origins are overlapping ``h``-day sums, so every Newey-West lag of the paired
comparisons is at least ``h - 1`` (the calibration reports say so).

Writes ``results/multi_horizon.json``, ``results/multi_horizon.md`` and one
calibration report per horizon in ``results/multi_horizon/h<h>/``.

    python benchmarks/multi_horizon.py                      # experts ar,var,kalman
    python benchmarks/multi_horizon.py --quick              # smoke run
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path

import torch
from _options import RESULTS_DIR, add_mixture_options, mixture_protocol
from _parallel import run_tasks
from p1_sp500 import load_frame, print_scores  # benchmarks/ is on sys.path

import bayes_moe as bm
from bayes_moe.evaluation.backtest import backtest
from bayes_moe.evaluation.baselines import BASELINES
from bayes_moe.evaluation.moe_forecaster import MoEForecaster
from bayes_moe.io import atomic_path, write_json
from bayes_moe.report import write_backtest_report

BASELINE_NAMES = ("garch_t", "constant_normal")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mixture_options(parser, regimes=2)
    parser.set_defaults(num_steps=500, num_draws=100)
    parser.add_argument("--horizons", default="1,5,20", help="comma list of horizons (days)")
    parser.add_argument("--test-days", type=int, default=1000, help="last days scored")
    parser.add_argument("--refit-every", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1, help="backtests run at once")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 test days")
    parser.add_argument("--out", default=None, help="default benchmarks/results/multi_horizon")
    args = parser.parse_args(argv)
    args.horizons = [int(h) for h in args.horizons.split(",")]
    if args.quick:
        args.test_days, args.refit_every, args.num_steps, args.num_draws = 60, 60, 30, 20
        args.window = 32
    return args


def run_one(task: str, model_name: str, horizon: int, args):
    """Backtest one model at one horizon: ``(task, result or None, error or None)``."""
    torch.set_num_threads(1)
    frame, covariates = load_frame()
    test_start = frame.index[-args.test_days]
    if model_name == "bayes_moe":
        model = bm.BayesianMoE(
            experts=args.experts.split(","), n_regimes=args.regimes, window=args.window
        )
        forecaster = MoEForecaster(
            model,
            covariates=covariates,
            num_steps=args.num_steps,
            num_draws=args.num_draws,
            seed=args.seed,
            horizon=horizon,
        )
    else:
        forecaster = BASELINES[model_name]()
    try:
        result = backtest(
            frame,
            forecaster,
            test_start=test_start,
            refit_every=args.refit_every,
            horizon=horizon,
            name=model_name,
            progress=args.jobs == 1,
        )
    except Exception as err:  # reported; the other backtests go on
        return task, None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    print_scores(task, result)
    return task, result, None


def main(argv=None) -> int:
    args = parse_args(argv)
    stem = "multi_horizon_quick" if args.quick else "multi_horizon"
    out = Path(args.out or RESULTS_DIR / stem)
    started = time.perf_counter()
    models = ("bayes_moe", *BASELINE_NAMES)
    tasks = [(f"{m}_h{h}", m, h, args) for h in args.horizons for m in models]
    results, failures = run_tasks(run_one, tasks, jobs=args.jobs, desc="backtests")
    rows, lines = {}, []
    for h in args.horizons:
        by_model = {m: results[f"{m}_h{h}"] for m in models if f"{m}_h{h}" in results}
        protocol = {
            "name": f"multi-horizon, h = {h}",
            **mixture_protocol(args, test_days=args.test_days, refit_every=args.refit_every),
            "horizon": h,
        }
        reference = "bayes_moe" if "bayes_moe" in by_model else next(iter(by_model), None)
        if reference is None:
            continue
        doc = write_backtest_report(by_model, out / f"h{h}", protocol=protocol, reference=reference)
        rows[h] = {"models": doc["models"], "comparisons": doc.get("comparisons", {})}
        for name in models:
            if name not in doc["models"]:
                continue
            m = doc["models"][name]
            comp = doc.get("comparisons", {}).get(name, {})
            versus = ""
            if comp:
                versus = f"{comp['mean_diff']:+.4f} ({comp['t_stat']:+.2f}, lag {int(comp['lag'])})"
            lines.append(
                f"| {h} | {name} | {m['log_score']:.4f} | {m['crps']:.4f} | "
                f"{m['coverage_90']:.3f} | {versus} | {m['n_days']} |"
            )
    doc = {
        "horizons": args.horizons,
        "results": rows,
        "failures": {task: error.splitlines()[0] for task, error in failures.items()},
        "wall_time_s": time.perf_counter() - started,
        "note": "mean_diff = log score of bayes_moe minus the baseline's; Newey-West lag "
        "at least h - 1 (overlapping h-day targets)",
    }
    write_json(doc, Path(f"{out}.json"))
    table = "\n".join(
        [
            "| h | model | log score | CRPS | 90% cov. | bayes_moe minus it (NW t, lag) | days |",
            "|---:|---|---:|---:|---:|---|---:|",
            *lines,
        ]
    )
    with atomic_path(Path(f"{out}.md")) as tmp:
        tmp.write_text(
            "# Multi-horizon forecasts (direct strategy)\n\n"
            f"experts {args.experts}, {args.regimes} regimes, last {args.test_days} days, "
            f"refit every {args.refit_every}; log score and CRPS of the h-day sum (nats, "
            "percent).\n\n" + table + "\n"
        )
    print(table)
    print(f"written to {out}.json and {out}.md in {doc['wall_time_s'] / 60:.1f} min")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
