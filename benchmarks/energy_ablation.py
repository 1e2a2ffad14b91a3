"""Energy-gating ablation on protocol P1's data: the last 1,000 days out of sample.

The same mixture (light and heavy experts) backtested several ways, everything else
equal: plain gating; energy gating (the gate's weights tilted by the energy and each
expert's capacity class, beta and tau fitted by SVI, :mod:`bayes_moe.models.energy`);
energy gating with sparse inference (the energy fits replayed, no refit, with
``EnergyGate(sparse=threshold)``: a heavy expert is not evaluated on the days its
tilted weight is below the threshold); expert dropout with p = 0.1 and p = 0.3 during
fitting. Rolling origin on an expanding window, one-step densities from the previous
close, refit every ``--refit-every`` test days, every configuration fitted with each
seed of ``--seeds`` (single fits differ by SVI noise of the order of 0.01 nats/day, so
one seed cannot tell configurations apart).

Reported per configuration: mean over seeds of the mean log score (nats/day), CRPS and
90% coverage, the paired log-score difference from the plain mixture of the same seed
(mean and spread over seeds, Newey-West t of each seed), the backtest's wall time
(fits and forecasts); for energy gating the posterior of beta and tau at every refit;
for sparse inference a sweep of thresholds (:func:`sparse_sweep`).

Writes ``results/energy_ablation.json``, ``results/energy_ablation.md`` and the
calibration report of the first seed in ``results/energy_ablation/``.

``--fixed-betas 1,2`` adds energy gates with beta fixed by the user (``energy_beta1``,
...; tau still fitted), each with its own sparse sweep: a positive beta is the design's
"wake the heavy experts when the market is uncertain", where the fitted beta follows
the data's sign. ``--validation`` scores protocol P1's validation years 2011-2014
instead of the last days (choose configurations there, then run the test period).

    python benchmarks/energy_ablation.py                 # experts ar,tcn,nystromformer,hyena
    python benchmarks/energy_ablation.py --validation --seeds 0 --fixed-betas 1,2,4
    python benchmarks/energy_ablation.py --quick         # smoke run: 60 test days
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _options import RESULTS_DIR, add_mixture_options, mixture_protocol
from _parallel import run_tasks
from p1_sp500 import VALIDATION, load_frame, print_scores  # benchmarks/ is on sys.path

import bayes_moe as bm
from bayes_moe.evaluation.backtest import backtest
from bayes_moe.evaluation.calibration import comparisons
from bayes_moe.evaluation.moe_forecaster import FittedForecaster, MoEForecaster
from bayes_moe.inference.pretrain_cache import PretrainCache
from bayes_moe.io import atomic_path, write_json
from bayes_moe.models.energy import EnergyGate
from bayes_moe.report import write_backtest_report

#: name -> (energy gate, expert dropout p); ``--fixed-betas`` adds ``energy_beta<v>``
CONFIGS = {
    "plain": (False, 0.0),
    "energy": (True, 0.0),
    "dropout_0.1": (False, 0.1),
    "dropout_0.3": (False, 0.3),
}
FIXED_BETA = "energy_beta"


def energy_gate(name: str) -> EnergyGate | None:
    """The energy gate of configuration ``name`` (``energy_beta2``: beta fixed at 2)."""
    if name.startswith(FIXED_BETA):
        return EnergyGate(beta=float(name.removeprefix(FIXED_BETA)))
    return EnergyGate() if CONFIGS[name][0] else None


def is_energy(name: str) -> bool:
    return name == "energy" or name.startswith(FIXED_BETA)


METRICS = ("log_score", "crps", "coverage_90", "coverage_95")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mixture_options(parser, regimes=2)
    parser.set_defaults(experts="ar,tcn,nystromformer,hyena", num_steps=500, num_draws=100)
    parser.add_argument("--seeds", default="0,1,2", help="comma list of SVI seeds")
    parser.add_argument("--test-days", type=int, default=1000, help="last days scored")
    parser.add_argument("--refit-every", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=0.05, help="sparse threshold")
    parser.add_argument(
        "--sweep",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[0.0, 0.05, 0.1, 0.2, 0.3],
        help="thresholds replayed on the energy fits (the first, 0, is the dense reference)",
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list of configs")
    parser.add_argument(
        "--fixed-betas",
        default="",
        help="comma list of beta values: an energy gate with beta fixed at each (tau fitted)",
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help=f"score the validation years {VALIDATION[0]}..{VALIDATION[1]} instead of the last "
        "--test-days days",
    )
    parser.add_argument("--jobs", type=int, default=1, help="fits run at once")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 test days")
    parser.add_argument("--out", default=None, help="default benchmarks/results/energy_ablation")
    args = parser.parse_args(argv)
    betas = [float(v) for v in args.fixed_betas.split(",") if v.strip()]
    args.configs += "".join(f",{FIXED_BETA}{beta:g}" for beta in betas)
    unknown = {c for c in args.configs.split(",") if not c.startswith(FIXED_BETA)} - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {list(CONFIGS)}")
    if "plain" not in args.configs.split(","):
        parser.error("the configs must include plain (the reference)")
    if args.threshold not in args.sweep or args.sweep[0] != 0.0:
        parser.error("--sweep must start with 0 and contain --threshold")
    args.seeds = [int(v) for v in args.seeds.split(",")]
    if args.quick:
        args.test_days, args.refit_every, args.num_steps, args.num_draws = 60, 30, 30, 20
        args.window, args.seeds = 32, args.seeds[:1]
    return args


def energy_posterior(fits) -> list[dict]:
    """Posterior mean and sd of the energy gate's beta and tau at every refit."""
    rows = []
    for fit in fits:
        row = {"train_end": str(fit.data.dates[-1].date())}
        for name in ("beta", "tau"):
            draws = fit.draws.get(f"energy/{name}")
            if draws is not None:
                row[name] = float(draws.mean())
                row[f"{name}_sd"] = float(draws.std(correction=0))
        rows.append(row)
    return rows


def sparse_sweep(fits, frame, test_start, test_end, args) -> list[dict]:
    """Sparse inference at several thresholds on the energy fits, no refitting.

    The fits of the energy-gated backtest are replayed
    (:class:`~bayes_moe.evaluation.moe_forecaster.FittedForecaster`) through the same
    backtest with each threshold of ``--sweep`` (0 is the dense evaluation, to the
    bit); per threshold: log score, CRPS, 90% coverage, the wall time of the replayed
    backtest (forecasting only), and the share of expert evaluations skipped over the
    test origins (the last fit's draws conditioned on the whole frame; all days, calm
    days with the energy at or below its median, and the others).
    """
    rows = []
    for threshold in args.sweep:
        for fit in fits:
            fit.program.energy.sparse = threshold
        result = backtest(
            frame,
            FittedForecaster(fits),
            test_start=test_start,
            test_end=test_end,
            refit_every=args.refit_every,
            name=f"sparse_{threshold}",
            progress=False,
        )
        # the scored days are realised days; each one's origin is the trading day before
        origins = frame.index[frame.index.get_indexer(result.table.index) - 1]
        table = fits[-1].update(frame).energy().reindex(origins)
        assert table["energy"].notna().all(), "an origin of the test period has no energy"
        calm = table["energy"] <= table["energy"].median()
        skipped = 1.0 - table["experts_evaluated"] / len(fits[-1].program.labels)
        summary = result.summary()
        rows.append(
            {
                "threshold": threshold,
                "log_score": float(summary["log_score"]),
                "crps": float(summary["crps"]),
                "coverage_90": float(summary["coverage_90"]),
                "forecast_s": float(result.elapsed_s),
                "skipped_share_all_days": float(skipped.mean()),
                "skipped_share_calm_days": float(skipped[calm].mean()),
                "skipped_share_other_days": float(skipped[~calm].mean()),
                "mean_heavy_weight": float(table["heavy_weight"].mean()),
            }
        )
    for fit in fits:
        fit.program.energy.sparse = args.threshold
    dense = rows[0]
    for row in rows:
        row["log_score_change"] = row["log_score"] - dense["log_score"]
        row["forecast_time_ratio"] = row["forecast_s"] / dense["forecast_s"]
    return rows


def run_config(task: str, name: str, seed: int, args, cache_dir: str):
    """Backtest configuration ``name`` with ``seed``: ``(task, (result, extra) or None, error)``."""
    torch.set_num_threads(1)
    dropout = 0.0 if name.startswith(FIXED_BETA) else CONFIGS[name][1]
    energy = is_energy(name)
    frame, covariates = load_frame()
    test_start, test_end = test_period(frame, args)
    model = bm.BayesianMoE(
        experts=args.experts.split(","),
        n_regimes=args.regimes,
        window=args.window,
        expert_dropout=dropout,
        energy_gate=energy_gate(name),
    )
    forecaster = MoEForecaster(
        model,
        covariates=covariates,
        name=name,
        num_steps=args.num_steps,
        num_draws=args.num_draws,
        seed=seed,
        # a cache of its own: every configuration pays stage one, so the times compare
        pretrain_cache=PretrainCache(Path(cache_dir) / task),
    )
    try:
        result = backtest(
            frame,
            forecaster,
            test_start=test_start,
            test_end=test_end,
            refit_every=args.refit_every,
            name=name,
            progress=args.jobs == 1,
            keep_fits=energy,
        )
        extra = {}
        if energy:
            extra["refits"] = energy_posterior(result.fits)
            extra["sparse_sweep"] = sparse_sweep(result.fits, frame, test_start, test_end, args)
    except Exception as err:  # reported; the other configurations go on
        return task, None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    print_scores(task, result)
    return task, (result, extra), None


def test_period(frame, args) -> tuple:
    """``(test_start, test_end)``: the validation years, or the last ``--test-days`` days."""
    if args.validation:
        return tuple(map(pd.Timestamp, VALIDATION))
    return frame.index[-args.test_days], None


def config_rows(names, seeds, results, failures, args) -> dict:
    """Per configuration: the seeds' scores, their means and the paired differences."""
    configs = {}
    for name in names:
        runs = {}
        for seed in seeds:
            task = f"{name}_s{seed}"
            if task in failures:
                runs[seed] = {"error": failures[task].splitlines()[0]}
                continue
            result, extra = results[task]
            summary = result.summary()
            run = {key: float(summary[key]) for key in METRICS}
            run["elapsed_s"] = float(result.elapsed_s)
            plain = results.get(f"plain_s{seed}")
            if name != "plain" and plain is not None:
                dm = comparisons({"self": result, "plain": plain[0]}, "self")["plain"]
                run["diff_vs_plain"] = dm["mean_diff"]  # self minus plain
                run["t_stat_vs_plain"] = dm["t_stat"]
            run.update(extra)
            runs[seed] = run
        configs[name] = {"seeds": runs, **seed_means(runs)}
    for name in [n for n in names if is_energy(n)]:
        sparse = {}
        for seed, run in configs[name]["seeds"].items():
            for row in run.get("sparse_sweep", []):
                if row["threshold"] == args.threshold:
                    sparse[seed] = {**row, "diff_vs_plain": run.get("diff_vs_plain", np.nan)}
                    sparse[seed]["diff_vs_plain"] += row["log_score_change"]
        if sparse:
            configs[f"{name}_sparse"] = {
                "threshold": args.threshold,
                "sparse_of": name,
                "seeds": sparse,
                **seed_means(
                    sparse,
                    keys=("log_score", "crps", "coverage_90", "log_score_change", "diff_vs_plain"),
                ),
                "skipped_share_all_days": mean_of(sparse, "skipped_share_all_days"),
                "skipped_share_calm_days": mean_of(sparse, "skipped_share_calm_days"),
                "forecast_time_ratio": mean_of(sparse, "forecast_time_ratio"),
            }
    return configs


def mean_of(runs: dict, key: str) -> float:
    values = [run[key] for run in runs.values() if key in run]
    return float(np.mean(values)) if values else float("nan")


def seed_means(runs: dict, keys=(*METRICS, "elapsed_s", "diff_vs_plain")) -> dict:
    """Mean over seeds of each ``key`` (and the spread of the paired difference)."""
    out = {key: mean_of(runs, key) for key in keys}
    diffs = [run["diff_vs_plain"] for run in runs.values() if "diff_vs_plain" in run]
    if len(diffs) > 1:
        out["diff_vs_plain_sd"] = float(np.std(diffs, ddof=1))
    return {key: value for key, value in out.items() if not np.isnan(value)}


def markdown(doc: dict) -> str:
    """The tables of ``energy_ablation.md``."""
    seeds = doc["protocol"]["seeds"]
    lines = [
        f"Means over {len(seeds)} seed(s); vs plain: mean paired difference of the mean "
        "log score, sd over seeds in brackets, then each seed's Newey-West t.",
        "",
        "| configuration | log score | vs plain | NW t per seed | CRPS | 90% cov. | time (s) |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, row in doc["configs"].items():
        if "sparse_of" in row:
            change = row.get("log_score_change", float("nan"))
            lines.append(
                f"| {row['sparse_of']} + sparse ({row['threshold']:g}) | {row['log_score']:.4f} "
                f"| {change:+.4f} vs dense, {row.get('diff_vs_plain', float('nan')):+.4f} vs "
                f"plain | | {row['crps']:.4f} | {row['coverage_90']:.3f} | "
                f"forecasting x{row['forecast_time_ratio']:.2f}; skipped on calm days "
                f"{100 * row['skipped_share_calm_days']:.1f}% |"
            )
            continue
        if "log_score" not in row:
            lines.append(f"| {name} | failed | | | | | |")
            continue
        diff = ""
        if "diff_vs_plain" in row:
            diff = f"{row['diff_vs_plain']:+.4f}"
            if "diff_vs_plain_sd" in row:
                diff += f" ({row['diff_vs_plain_sd']:.4f})"
        ts = ", ".join(
            f"{run['t_stat_vs_plain']:+.2f}"
            for run in row["seeds"].values()
            if "t_stat_vs_plain" in run
        )
        lines.append(
            f"| {name} | {row['log_score']:.4f} | {diff} | {ts} | {row['crps']:.4f} | "
            f"{row['coverage_90']:.3f} | {row['elapsed_s']:.0f} |"
        )
    sweeps = [
        (name, seed, run["sparse_sweep"])
        for name, row in doc["configs"].items()
        if is_energy(name)
        for seed, run in row.get("seeds", {}).items()
        if run.get("sparse_sweep")
    ]
    for name, seed, sweep in sweeps:
        lines += [
            "",
            f"Sparse inference on the {name} fits of seed {seed}, replayed (no refit) at "
            "each threshold; skipped: share of expert evaluations not run over the test "
            "origins, calm = energy at or below its median:",
            "",
            "| threshold | log score | change | CRPS | 90% cov. | skipped (all) | skipped "
            "(calm) | forecast time (s) | ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sweep:
            lines.append(
                f"| {r['threshold']:g} | {r['log_score']:.4f} | {r['log_score_change']:+.4f} | "
                f"{r['crps']:.4f} | {r['coverage_90']:.3f} | "
                f"{100 * r['skipped_share_all_days']:.1f}% | "
                f"{100 * r['skipped_share_calm_days']:.1f}% | {r['forecast_s']:.1f} | "
                f"{r['forecast_time_ratio']:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    stem = "energy_ablation" + ("_validation" if args.validation else "")
    stem += "_quick" if args.quick else ""
    out = args.out or str(RESULTS_DIR / stem)
    names = args.configs.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="energy-pretrain-") as cache_dir:
        tasks = [
            (f"{name}_s{seed}", name, seed, args, cache_dir)
            for seed in args.seeds
            for name in names
        ]
        results, failures = run_tasks(run_config, tasks, jobs=args.jobs, desc="fits")
    protocol = {
        "name": "energy ablation (P1 data, "
        + ("validation years 2011-2014)" if args.validation else "last days)"),
        **mixture_protocol(args, test_days=args.test_days, refit_every=args.refit_every),
        "seeds": args.seeds,
        "sparse_threshold": args.threshold,
    }
    first = {
        name: results[f"{name}_s{args.seeds[0]}"][0]
        for name in names
        if f"{name}_s{args.seeds[0]}" in results
    }
    if "plain" in first:
        write_backtest_report(first, out, protocol=protocol, reference="plain")
    configs = config_rows(names, args.seeds, results, failures, args)
    doc = {
        "protocol": protocol,
        "test_start": str(next(iter(first.values())).table.index[0].date()) if first else None,
        "configs": configs,
        "wall_time_s": time.perf_counter() - started,
        "diff_sign": "diff_vs_plain = config minus plain of the same seed, mean log score",
        "torch_threads_per_fit": 1,
        "jobs": args.jobs,
    }
    json_path = Path(f"{out}.json")
    write_json(doc, json_path)
    with atomic_path(Path(f"{out}.md")) as tmp:
        tmp.write_text(
            "# Energy-gating ablation\n\n"
            + "\n".join(f"- **{k}**: {v}" for k, v in protocol.items())
            + f"\n- **test start**: {doc['test_start']}\n\n"
            + markdown(doc)
            + "\n"
        )
    print(markdown(doc))
    print(f"written to {json_path} and {out}.md in {doc['wall_time_s'] / 60:.1f} min")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
