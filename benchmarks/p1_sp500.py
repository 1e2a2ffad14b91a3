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
    python benchmarks/p1_sp500.py --experts all --jobs 2   # every expert alone, the full
                                                          # mixture and the default one
    python benchmarks/p1_sp500.py --validation --experts ar,var,kalman,garch,volatility,macro \
        --models bayes_moe,expert_macro --out benchmarks/results/p1_macro_validation
    python benchmarks/p1_sp500.py --vix-validation --refit-every 63 --experts volatility \
        --models expert_volatility --seed 1    # 2014: the one validation year with the VIX
    python benchmarks/p1_sp500.py --returns-only --experts ar,var,kalman,garch,volatility \
        --models bayes_moe,egarch_t            # no range, VIX or macro columns
    python benchmarks/p1_sp500.py --validation --experts ar,var,kalman,garch,volatility \
        --transition-features log_rv_5,log_rv_22,log_ewma_var,credit_spread \
        --models bayes_moe --out benchmarks/results/p1_io_validation
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from pathlib import Path

import torch
from _options import add_mixture_options  # benchmarks/ is on sys.path
from _parallel import run_tasks

import bayes_moe as bm
from bayes_moe.evaluation.backtest import backtest
from bayes_moe.evaluation.baselines import BASELINES, P1_ANCHORS
from bayes_moe.evaluation.moe_forecaster import MoEForecaster
from bayes_moe.inference.pretrain_cache import PretrainCache
from bayes_moe.io import atomic_path
from bayes_moe.models.experts import expert_list
from bayes_moe.models.moe import DEFAULT_EXPERTS
from bayes_moe.report import write_backtest_report

TEST = ("2015-01-02", "2018-12-31")
VALIDATION = ("2011-01-03", "2014-12-31")
#: The one validation year with the VIX (arch.data's starts in 2014): with quarterly
#: refits (``--refit-every 63``) the later refits learn from its first months.
VIX_VALIDATION = ("2014-01-02", "2014-12-31")
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
        "--vix-validation",
        action="store_true",
        help="test on 2014 instead, the one validation year with the VIX (with "
        "--refit-every 63, so that later refits see its first months)",
    )
    parser.add_argument(
        "--models",
        default="bayes_moe,default,experts,baselines",
        help="comma list of: bayes_moe (the --experts mixture), default (the default "
        "mixture, when --experts differs from it), experts (each alone), baselines, "
        "ms_garch (the Bayesian Markov-switching GARCH, bm.ms_garch(2)), or single names "
        "(expert_tcn, garch_t, ...)",
    )
    add_mixture_options(parser)
    parser.add_argument(
        "--expert-dropout",
        type=float,
        default=0.0,
        help="expert dropout p of the --experts mixture during fitting (0: none)",
    )
    parser.add_argument(
        "--transition-features",
        default=None,
        help="comma list of what drives the --experts mixture's regime switches: "
        "volatility summaries and columns (credit_spread, vix; see bm.MarkovGate); "
        "'none' for a homogeneous chain (default: the gate's)",
    )
    parser.add_argument(
        "--returns-only",
        action="store_true",
        help="offer the mixtures the S&P 500 and NASDAQ returns only (no range, VIX or "
        "macro columns): the issue's returns-only configuration",
    )
    parser.add_argument("--refit-every", type=int, default=250)
    parser.add_argument(
        "--jobs", type=int, default=1, help="models backtested at once, in processes"
    )
    parser.add_argument(
        "--pretrain-cache",
        default=None,
        help="folder of stage-one results to reuse (default: a temporary one for the run)",
    )
    parser.add_argument("--out", default=None, help="default benchmarks/results/p1[_validation]")
    return parser.parse_args(argv)


def expert_names(experts: str) -> list[str]:
    """``--experts`` as a list of names (``all``: every registered expert)."""
    return [e.name for e in expert_list(experts)]


def model_specs(args) -> dict[str, tuple]:
    """The models requested by ``--models``: name -> picklable spec, longest first."""
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    experts = expert_names(args.experts)
    specs = {}
    if "bayes_moe" in wanted:
        specs["bayes_moe"] = (
            "mixture",
            tuple(experts),
            args.regimes,
            args.expert_dropout,
            transition_features(args.transition_features),
        )
    if "default" in wanted and experts != list(DEFAULT_EXPERTS):
        specs["bayes_moe_default"] = ("mixture", tuple(DEFAULT_EXPERTS), args.regimes, 0.0, None)
    for expert in experts:
        if "experts" in wanted or f"expert_{expert}" in wanted:
            specs[f"expert_{expert}"] = ("mixture", (expert,), 1, 0.0, None)
    if "ms_garch" in wanted:
        specs["ms_garch"] = ("ms_garch", 2)
    for name in BASELINES:
        if "baselines" in wanted or name in wanted:
            specs[name] = ("baseline", name)
    return specs


def transition_features(text: str | None) -> tuple[str, ...] | None:
    """``--transition-features`` as names (None: the gate's default; 'none': empty)."""
    if text is None:
        return None
    if text.strip() == "none":
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


def make_forecaster(name: str, spec: tuple, args, covariates, cache):
    """The forecaster of one spec of :func:`model_specs`."""
    if spec[0] == "baseline":
        return BASELINES[spec[1]]()
    if spec[0] == "ms_garch":
        model = bm.ms_garch(spec[1], window=args.window)
    else:
        _, experts, regimes, dropout, transitions = spec
        gate = (
            None if transitions is None else bm.MarkovGate(regimes, transition_features=transitions)
        )
        model = bm.BayesianMoE(
            experts=list(experts),
            n_regimes=regimes,
            window=args.window,
            expert_dropout=dropout,
            gate=gate,
        )
    return MoEForecaster(
        model,
        covariates=covariates,
        name=name,
        num_steps=args.num_steps,
        num_draws=args.num_draws,
        seed=args.seed,
        pretrain_cache=cache,
    )


def load_frame(returns_only: bool = False):
    """S&P 500 with NASDAQ, range features, VIX and macro features (arch.data).

    ``returns_only``: the S&P 500 and NASDAQ returns alone. Otherwise every column is
    offered; each expert reads its own (the returns-only experts none of
    the range or macro columns). The VIX starts in 2014: only experts that accept gaps
    read it (the ``volatility`` expert, with its documented fallback before then). The
    ``macro`` expert reads core CPI year on year, the Baa-Aaa spread and WTI returns,
    each as known after its publication lag (``bm.data.add_macro_features``).
    """
    if returns_only:
        return bm.data.load_sp500()[["ret", "ret_nasdaq"]], ["ret_nasdaq"]
    frame = bm.data.add_macro_features(bm.data.add_vix(bm.data.load_sp500()))
    covariates = [c for c in frame.columns if c != "ret"]
    return frame, covariates


def run_model(name: str, spec: tuple, args, cache_dir: str):
    """Backtest one model; returns ``(name, BacktestResult or None, error or None)``.

    Runs in a worker process with ``--jobs > 1``: it loads the data itself, and a
    failure is returned, not raised, so that the other models' results are kept.
    """
    torch.set_num_threads(1)
    test_start, test_end = test_period(args)
    frame, covariates = load_frame(args.returns_only)
    cache = PretrainCache(cache_dir)
    try:
        forecaster = make_forecaster(name, spec, args, covariates, cache)
        result = backtest(
            frame.loc[:test_end],
            forecaster,
            test_start=test_start,
            test_end=test_end,
            refit_every=args.refit_every,
            name=name,
            progress=args.jobs == 1,
        )
    except Exception as err:  # reported in the report, the other models go on
        return name, None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    print_scores(name, result)
    return name, result, None


def test_period(args) -> tuple[str, str]:
    """First and last test day: the test years, or one of the validation periods."""
    if args.vix_validation:
        return VIX_VALIDATION
    return VALIDATION if args.validation else TEST


def protocol_name(args) -> str:
    """``P1``, ``P1-validation`` or ``P1-vix-validation``."""
    if args.vix_validation:
        return "P1-vix-validation"
    return "P1-validation" if args.validation else "P1"


def print_scores(name: str, result) -> None:
    """One line: ``name``'s mean log score, CRPS, 90% coverage and wall time."""
    summary = result.summary()
    print(
        f"{name}: log score {summary['log_score']:.4f}  CRPS {summary['crps']:.4f}  "
        f"cov90 {summary['coverage_90']:.3f}  ({result.elapsed_s:.0f} s)",
        flush=True,
    )


def run_all(specs: dict, args, cache_dir: str):
    """Every model, serially or in ``--jobs`` processes; results in the order of ``specs``."""
    tasks = [(name, spec, args, cache_dir) for name, spec in specs.items()]
    return run_tasks(run_model, tasks, jobs=args.jobs, desc="P1 models")


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
    if args.validation and args.vix_validation:
        raise SystemExit("p1_sp500.py: choose one of --validation and --vix-validation")
    start_all = time.perf_counter()
    period_name = protocol_name(args)
    out = Path(args.out or f"benchmarks/results/{period_name.lower().replace('-', '_')}")
    specs = model_specs(args)  # unknown expert names fail here, before any work
    with tempfile.TemporaryDirectory(prefix="p1-pretrain-") as tmp_cache:
        results, failures = run_all(specs, args, args.pretrain_cache or tmp_cache)
    if not results:
        print("every model failed; nothing written")
        return 1
    first = results[next(iter(results))]
    protocol = {
        "name": period_name,
        "data": "S&P 500, arch.data, ret = 100*diff(log(Adj Close)); mixture frame from "
        "1999-02-04 (feature warm-up)",
        "test_start": str(first.table.index[0].date()),
        "test_end": str(first.table.index[-1].date()),
        "n_test_days": len(first.table),
        "refit_every": args.refit_every,
        "window": "expanding",
        "horizon": 1,
        "mixture": {
            "experts": ",".join(expert_names(args.experts)),
            "n_regimes": args.regimes,
            "window": args.window,
            "num_steps": args.num_steps,
            "num_draws": args.num_draws,
            "seed": args.seed,
            "expert_dropout": args.expert_dropout,
            "transition_features": args.transition_features or "the gate's default",
            "returns_only": args.returns_only,
        },
        "failures": {name: error.splitlines()[0] for name, error in failures.items()},
    }
    doc = write_backtest_report(results, out, protocol=protocol)
    report = out / "report.md"
    text = report.read_text() + "\n".join(targets_section(doc, period_name != "P1")) + "\n"
    for name, error in failures.items():
        text += f"\n**{name} failed** (the other models are reported above):\n\n```\n{error}```\n"
    elapsed = time.perf_counter() - start_all
    text += f"\nTotal wall time: {elapsed / 60:.1f} min ({args.jobs} job(s)).\n"
    with atomic_path(report) as tmp:
        tmp.write_text(text)
    print(f"written to {out}/ in {elapsed / 60:.1f} min")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
