"""Protocol P1: the headline S&P 500 calibration study.

S&P 500 from arch.data, percentage log returns 100*diff(log(Adj Close)); test
2015-01-02..2018-12-31 (1,006 days); one-step-ahead densities from information up to
the previous close; refit every 250 test days on an expanding window, filtering
forward in between. The mixture (default experts), each of its experts alone (one
regime) and the practitioners' baselines run through the same backtest and are
scored identically. ``--validation`` runs the same protocol on 2011-2014 (training
up to 2010) for choosing configurations without touching the test period.

Writes ``metrics.json`` (shape documented in ``bayes_moe.evaluation.calibration``),
``report.md`` with the targets of the issue checked, and the calibration plots.

    python benchmarks/p1_sp500.py                      # the full protocol (< 60 min, 2 cores)
    python benchmarks/p1_sp500.py --validation --models bayes_moe --regimes 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _options import add_mixture_options  # benchmarks/ is on sys.path

import bayes_moe as bm
from bayes_moe.evaluation.backtest import backtest
from bayes_moe.evaluation.baselines import BASELINES, P1_ANCHORS
from bayes_moe.evaluation.moe_forecaster import MoEForecaster
from bayes_moe.io import atomic_path
from bayes_moe.report import write_backtest_report

TEST = ("2015-01-02", "2018-12-31")
VALIDATION = ("2011-01-03", "2014-12-31")
TARGETS = {
    "log_score_min": -1.018,
    "crps_max": 0.423,
    "coverage_90": (0.88, 0.92),
    "pit_ks_pvalue_min": 0.05,
    "t_stat_vs_egarch_min": 2.0,
}
ANCHORS = P1_ANCHORS  # (mean log score, mean CRPS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validation", action="store_true", help="test on 2011-2014 instead")
    parser.add_argument(
        "--models",
        default="bayes_moe,experts,baselines",
        help="comma list of: bayes_moe, experts, baselines, or single names",
    )
    add_mixture_options(parser)
    parser.add_argument("--refit-every", type=int, default=250)
    parser.add_argument("--out", default=None, help="default benchmarks/results/p1[_validation]")
    return parser.parse_args(argv)


def forecasters(args, covariates):
    """The forecasters requested by ``--models``."""
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    experts = [e.strip() for e in args.experts.split(",") if e.strip()]
    fit_options = {"num_steps": args.num_steps, "num_draws": args.num_draws, "seed": args.seed}
    out = {}
    if "bayes_moe" in wanted:
        model = bm.BayesianMoE(experts=experts, n_regimes=args.regimes, window=args.window)
        out["bayes_moe"] = MoEForecaster(model, covariates=covariates, **fit_options)
    for expert in experts:
        if "experts" in wanted or f"expert_{expert}" in wanted:
            alone = bm.BayesianMoE(experts=[expert], n_regimes=1, window=args.window)
            out[f"expert_{expert}"] = MoEForecaster(
                alone, covariates=covariates, name=f"expert_{expert}", **fit_options
            )
    for name, make in BASELINES.items():
        if "baselines" in wanted or name in wanted:
            out[name] = make()
    return out


def targets_section(doc: dict, validation: bool) -> list[str]:
    """Markdown lines checking the issue's targets and the baseline anchors."""
    lines = ["", "## Targets (issue: calibration studies and backtests)", ""]
    models, comps = doc["models"], doc.get("comparisons", {})
    if "bayes_moe" in models:
        m = models["bayes_moe"]
        lo, hi = TARGETS["coverage_90"]
        t_egarch = comps.get("egarch_t", {}).get("t_stat", float("nan"))
        checks = [
            ("mean log score >= -1.018", m["log_score"], m["log_score"] >= -1.018),
            ("mean CRPS <= 0.423", m["crps"], m["crps"] <= 0.423),
            ("90% coverage in [0.88, 0.92]", m["coverage_90"], lo <= m["coverage_90"] <= hi),
            ("PIT KS p-value > 0.05", m["pit_ks_pvalue"], m["pit_ks_pvalue"] > 0.05),
            ("log score above EGARCH-t, NW t > 2", t_egarch, t_egarch > 2.0),
        ]
        lines += ["| target | value | met |", "|---|---|---|"]
        lines += [
            f"| {name} | {value:.4f} | {'yes' if ok else 'no'} |" for name, value, ok in checks
        ]
    if not validation:
        lines += [
            "",
            "Baseline anchors (measured with this protocol when the issue was filed):",
            "",
            "| baseline | log score | anchor | CRPS | anchor |",
            "|---|---|---|---|---|",
        ]
        for name, (ls, crps) in ANCHORS.items():
            if name in models:
                lines.append(
                    f"| {name} | {models[name]['log_score']:.4f} | {ls:.4f} | "
                    f"{models[name]['crps']:.4f} | {crps:.4f} |"
                )
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    start_all = time.perf_counter()
    test_start, test_end = VALIDATION if args.validation else TEST
    out = Path(
        args.out
        or ("benchmarks/results/p1_validation" if args.validation else "benchmarks/results/p1")
    )
    frame = bm.data.add_vix(bm.data.load_sp500())
    # The mixture reads returns only (and range features); VIX (2014-) is left to har_vix.
    covariates = [c for c in frame.columns if c != "ret" and frame[c].notna().all()]
    results = {}
    for name, forecaster in forecasters(args, covariates).items():
        print(f"{name} ...", flush=True)
        results[name] = backtest(
            frame.loc[:test_end],
            forecaster,
            test_start=test_start,
            test_end=test_end,
            refit_every=args.refit_every,
            name=name,
        )
        summary = results[name].summary()
        print(
            f"  log score {summary['log_score']:.4f}  CRPS {summary['crps']:.4f}  "
            f"cov90 {summary['coverage_90']:.3f}  ({results[name].elapsed_s:.0f} s)",
            flush=True,
        )
    protocol = {
        "name": "P1-validation" if args.validation else "P1",
        "data": "S&P 500, arch.data, ret = 100*diff(log(Adj Close)); mixture frame from "
        "1999-02-04 (feature warm-up)",
        "test_start": str(results[next(iter(results))].table.index[0].date()),
        "test_end": str(results[next(iter(results))].table.index[-1].date()),
        "n_test_days": len(results[next(iter(results))].table),
        "refit_every": args.refit_every,
        "window": "expanding",
        "horizon": 1,
        "mixture": {
            "experts": args.experts,
            "n_regimes": args.regimes,
            "window": args.window,
            "num_steps": args.num_steps,
            "num_draws": args.num_draws,
            "seed": args.seed,
        },
    }
    doc = write_backtest_report(results, out, protocol=protocol)
    report = out / "report.md"
    text = report.read_text() + "\n".join(targets_section(doc, args.validation)) + "\n"
    elapsed = time.perf_counter() - start_all
    text += f"\nTotal wall time: {elapsed / 60:.1f} min.\n"
    with atomic_path(report) as tmp:
        tmp.write_text(text)
    print(f"written to {out}/ in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
