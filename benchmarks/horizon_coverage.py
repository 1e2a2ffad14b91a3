"""Are h-day posteriors honest? Interval coverage on SYNTHETIC data with known parameters.

Consecutive origins' h-day sums share h - 1 days. Scored as independent observations
(``horizon_likelihood="overlapping"``, what fits did before) each day counts about h
times and the posterior is too narrow; the default likelihood scores disjoint h-day
sums (``"non_overlapping"``, ``bayes_moe.models.moe.MoEProgram.forward``), each day
once.

For each seed, ``--days`` i.i.d. Normal daily returns with mean ``MU`` and sd
``SIGMA`` (SYNTHETIC: the truth is known) are fitted at h = 5 and h = 20 with both
likelihoods by the one-regime mixture of one constant-mean, constant-scale Normal
expert (the correctly specified model). The daily mean and sd follow from the h-day
sum's intercept and scale (mean / h, sd / sqrt(h), in data units). Reported per
horizon and likelihood: the share of seeds whose 94% posterior interval covers the
truth (nominal 0.94; with 40 seeds its binomial sd is about 0.04), the mean interval
width, and the posterior sd of the mean against the textbook standard error
sigma / sqrt(T). Beside it, the oracle: the coverage, on the same simulated days, of the
exact classical 94% intervals from the daily returns (the sample mean plus or minus
1.88 sigma / sqrt(T); the chi-square interval for sigma), which tells a calibration
failure from a set of seeds whose sample means happen to fall far from the truth.
Writes ``benchmarks/results/horizon_coverage.json`` and ``.md``; ``--summarize-only``
rebuilds both from the fits stored in the JSON.

    python benchmarks/horizon_coverage.py                 # about 15 minutes on 2 cores
    python benchmarks/horizon_coverage.py --seeds 5 --out /tmp/coverage.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _options import RESULTS_DIR  # benchmarks/ is on sys.path
from _parallel import run_tasks
from scipy import stats

import bayes_moe as bm
from bayes_moe.io import atomic_path, write_json

MU, SIGMA = 0.05, 1.0
HORIZONS = (5, 20)
LIKELIHOODS = ("non_overlapping", "overlapping")
INTERVAL = (3.0, 97.0)  # the 94% interval
EXPERT = {"name": "ar", "order": 0, "family": "normal", "heteroscedastic": False}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=40, help="simulated data sets")
    parser.add_argument("--days", type=int, default=2500, help="daily returns per data set")
    parser.add_argument("--num-steps", type=int, default=400, help="SVI steps per fit")
    parser.add_argument("--num-draws", type=int, default=400, help="posterior draws per fit")
    parser.add_argument("--jobs", type=int, default=1, help="fits at once, in processes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "horizon_coverage.json")
    parser.add_argument(
        "--summarize-only", action="store_true", help="rebuild the tables from --out's fits"
    )
    return parser.parse_args(argv)


def simulate(seed: int, days: int) -> pd.DataFrame:
    """SYNTHETIC i.i.d. N(MU, SIGMA^2) daily returns."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2000-01-03", periods=days, name="date")
    return pd.DataFrame({"ret": MU + SIGMA * rng.standard_normal(days)}, index=index)


def fit_one(name: str, seed: int, horizon: int, likelihood: str, args) -> tuple:
    """One fit; returns ``(name, record, None)`` or ``(name, None, error)``."""
    torch.set_num_threads(1)
    try:
        model = bm.BayesianMoE(
            experts=[EXPERT], n_regimes=1, window=1, horizon_likelihood=likelihood
        )
        fit = model.fit(
            simulate(seed, args.days),
            horizon=horizon,
            num_steps=args.num_steps,
            learning_rate=0.05,
            convergence_tol=None,
            num_draws=args.num_draws,
            seed=seed,
            progress=False,
        )
    except Exception as err:  # reported, the other fits go on
        return name, None, f"{type(err).__name__}: {err}"
    loc, scale = fit.data.preprocessor.target_loc[0], fit.data.preprocessor.target_scale[0]
    mean = loc + scale * fit.draws["ar/intercept"][:, 0].numpy() / horizon
    sd = scale * fit.draws["ar/scale"][:, 0].numpy() / np.sqrt(horizon)
    record = {"seed": seed, "horizon": horizon, "likelihood": likelihood}
    for param, draws, truth in (("mean", mean, MU), ("sd", sd, SIGMA)):
        lo, hi = np.percentile(draws, INTERVAL)
        record[param] = {
            "posterior_mean": float(draws.mean()),
            "posterior_sd": float(draws.std()),
            "q3": float(lo),
            "q97": float(hi),
            "covered": bool(lo <= truth <= hi),
        }
    return name, record, None


def oracle_covered(seed: int, days: int) -> dict[str, bool]:
    """Whether the exact classical 94% intervals from the daily returns cover the truth."""
    y = simulate(seed, days)["ret"].to_numpy()
    z = stats.norm.ppf(INTERVAL[1] / 100)
    var_lo, var_hi = (
        (days - 1) * y.var(ddof=1) / stats.chi2.ppf(q / 100, days - 1) for q in INTERVAL[::-1]
    )
    return {
        "mean": abs(y.mean() - MU) <= z * SIGMA / np.sqrt(days),
        "sd": var_lo <= SIGMA**2 <= var_hi,
    }


def summarize(records: list[dict], days: int) -> list[dict]:
    """Coverage, width and posterior sd per (horizon, likelihood, parameter), and the oracle's."""
    oracle = {seed: oracle_covered(seed, days) for seed in sorted({r["seed"] for r in records})}
    rows = []
    for horizon, likelihood in itertools.product(HORIZONS, LIKELIHOODS):
        runs = [r for r in records if r["horizon"] == horizon and r["likelihood"] == likelihood]
        for param in ("mean", "sd"):
            if not runs:
                continue
            values = [r[param] for r in runs]
            rows.append(
                {
                    "horizon": horizon,
                    "likelihood": likelihood,
                    "parameter": param,
                    "seeds": len(runs),
                    "coverage_94": float(np.mean([v["covered"] for v in values])),
                    "oracle_coverage_94": float(np.mean([oracle[r["seed"]][param] for r in runs])),
                    "mean_width": float(np.mean([v["q97"] - v["q3"] for v in values])),
                    "mean_posterior_sd": float(np.mean([v["posterior_sd"] for v in values])),
                    "sd_of_posterior_means": float(np.std([v["posterior_mean"] for v in values])),
                }
            )
    return rows


def markdown(doc: dict) -> str:
    lines = [
        "# Coverage of 94% posterior intervals for h-day fits (SYNTHETIC i.i.d. Normal returns)",
        "",
        f"{doc['config']['seeds']} seeds, {doc['config']['days']} days each, true daily mean "
        f"{MU} and sd {SIGMA}; textbook standard error of the mean sigma / sqrt(T) = "
        f"{doc['textbook_se_mean']:.4f}. Nominal coverage 0.94 (binomial sd "
        f"{doc['coverage_binomial_sd']:.3f} at this number of seeds).",
        "",
        "| h | likelihood | parameter | coverage | oracle coverage | mean width "
        "| mean posterior sd | sd of posterior means over seeds |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["summary"]:
        lines.append(
            f"| {r['horizon']} | {r['likelihood']} | {r['parameter']} | {r['coverage_94']:.3f} "
            f"| {r['oracle_coverage_94']:.3f} | {r['mean_width']:.4f} "
            f"| {r['mean_posterior_sd']:.4f} | {r['sd_of_posterior_means']:.4f} |"
        )
    if doc["failures"]:
        lines += ["", "Failed fits: " + "; ".join(f"{k}: {v}" for k, v in doc["failures"].items())]
    return "\n".join(lines) + "\n"


def write(doc: dict, out: Path) -> str:
    """Write the JSON and the markdown table; return the markdown."""
    write_json(doc, out)
    text = markdown(doc)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summarize_only:
        doc = json.loads(args.out.read_text())
        doc["summary"] = summarize(doc["fits"], doc["config"]["days"])
        print(write(doc, args.out))
        return 0
    start = time.perf_counter()
    tasks = [
        (f"seed={seed} h={horizon} {likelihood}", seed, horizon, likelihood, args)
        for seed, horizon, likelihood in itertools.product(range(args.seeds), HORIZONS, LIKELIHOODS)
    ]
    results, failures = run_tasks(fit_one, tasks, jobs=args.jobs, desc="fits")
    records = list(results.values())
    doc = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "truth": {"mean": MU, "sd": SIGMA},
        "textbook_se_mean": SIGMA / np.sqrt(args.days),
        "coverage_binomial_sd": float(np.sqrt(0.94 * 0.06 / max(1, args.seeds))),
        "summary": summarize(records, args.days),
        "fits": records,
        "failures": failures,
        "wall_s": time.perf_counter() - start,
    }
    print(write(doc, args.out))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
