"""The Bayesian GARCH(1,1)-t expert and the Markov-switching GARCH on the real S&P 500.

On the embedded 1999-2018 S&P 500 returns (percent log returns, arch.data):

1. The variance recursion (a parallel scan) against ``arch`` at arch's maximum
   likelihood parameters and backcast: largest relative difference of the
   conditional variances (target 1e-8).
2. ``bm.BayesianMoE(experts=["garch"], n_regimes=1)`` fitted by SVI against arch's
   GARCH(1,1)-t MLE on the same returns: posterior mean, sd and 94% interval of every
   parameter beside the MLE and its standard error (target: posterior means of alpha
   and beta within 0.02 of the MLE).
3. ``bm.ms_garch(2)``, the Markov-switching GARCH of Haas, Mittnik and Paolella
   (2004): each regime's persistence, unconditional variance (data units), alpha,
   beta, nu, mean and expected duration with 94% intervals, and whether the intervals
   of persistence and of unconditional variance are disjoint (distinct regimes).
4. How well each model's one-step variance tracks the next day's squared return
   (Pearson correlation, in sample), and the in-sample log predictive density per day.

Writes ``benchmarks/results/garch_sp500.json``, ``.md`` and ``.png`` (the MS-GARCH
regimes over time).

    python benchmarks/garch_sp500.py                 # about a minute on 2 cores
    python benchmarks/garch_sp500.py --num-draws 100 --out /tmp/garch.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _options import RESULTS_DIR  # benchmarks/ is on sys.path
from arch import arch_model
from scipy.special import logsumexp

import bayes_moe as bm
from bayes_moe.io import atomic_path, write_json
from bayes_moe.kernels.garch import arch_backcast, garch_variance
from bayes_moe.models.experts.garch import garch_coefficients
from bayes_moe.plotting import plot_regimes

TARGETS = {"recursion_rel_diff_max": 1e-8, "alpha_beta_abs_diff_max": 0.02}
INTERVAL = (3.0, 97.0)  # the 94% interval


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-steps", type=int, default=1500, help="maximum SVI steps")
    parser.add_argument("--num-draws", type=int, default=200, help="posterior draws kept")
    parser.add_argument("--regimes", type=int, default=2, help="regimes of the MS-GARCH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "garch_sp500.json")
    parser.add_argument("--no-plot", action="store_true", help="skip the regime plot")
    return parser.parse_args(argv)


def describe(values: np.ndarray) -> dict:
    """Posterior mean, sd and 94% interval of draws."""
    lo, hi = np.percentile(values, INTERVAL)
    return {"mean": float(values.mean()), "sd": float(values.std()), "q3": lo, "q97": hi}


def arch_fit(returns):
    """arch's constant-mean GARCH(1,1) with standardized Student-t innovations."""
    return arch_model(returns, mean="Constant", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")


def recursion_check(returns: np.ndarray, res) -> float:
    """Largest relative difference of our scan's variances from arch's at arch's MLE."""
    mu, omega, alpha, beta = (
        torch.tensor(float(res.params[k]), dtype=torch.float64)
        for k in ("mu", "omega", "alpha[1]", "beta[1]")
    )
    y = torch.as_tensor(returns, dtype=torch.float64)
    # arch backcasts from the residuals of its starting values (the sample mean).
    backcast = arch_backcast(y - y.mean())
    ours = garch_variance(y - mu, omega, alpha, beta, backcast)[:-1].numpy()
    reference = np.asarray(res.conditional_volatility) ** 2
    return float(np.max(np.abs(ours / reference - 1.0)))


def garch_draws(fit, label: str) -> dict[str, np.ndarray]:
    """One GARCH expert's parameters per draw, in data units (percent returns)."""
    draws = {
        k.split("/", 1)[1]: v[..., 0].numpy()
        for k, v in fit.draws.items()
        if k.startswith(f"{label}/")
    }
    scale = float(fit.data.preprocessor.target_scale[0])
    loc = float(fit.data.preprocessor.target_loc[0])
    omega, alpha, beta = garch_coefficients(
        draws["persistence"], draws["alpha_share"], draws["unconditional_variance"]
    )
    return {
        "mu": loc + scale * draws["mean"],
        "omega": omega * scale**2,
        "alpha": alpha,
        "beta": beta,
        "nu": draws["df"],
        "persistence": draws["persistence"],
        "unconditional_variance": draws["unconditional_variance"] * scale**2,
    }


def variance_tracking(fit, returns) -> dict:
    """Correlation of the one-step predictive variance with the next squared return."""
    predictive = fit.predictive()
    variance = predictive.variance[: fit.data.n_observed, 0]
    realized = returns.reindex(fit.data.response_dates).to_numpy()
    log_lik = fit.pointwise_log_likelihood().to_numpy()  # day x draw
    lppd = logsumexp(log_lik, axis=1) - np.log(log_lik.shape[1])
    return {
        "variance_correlation": float(np.corrcoef(variance, realized**2)[0, 1]),
        "log_predictive_density_per_day": float(lppd.mean()),
        "dates": realized.shape[0],
    }, variance


def timed_fit(model, frame, args):
    """``model`` fitted to the returns with the script's SVI settings, and the wall time."""
    start = time.perf_counter()
    fit = model.fit(
        frame,
        target="ret",
        num_steps=args.num_steps,
        num_draws=args.num_draws,
        seed=args.seed,
        progress=False,
    )
    return fit, time.perf_counter() - start


def single_garch(frame, args, res) -> dict:
    """Item 2: the one-regime Bayesian GARCH-t against arch's MLE."""
    fit, wall = timed_fit(bm.BayesianMoE(experts=["garch"], n_regimes=1), frame, args)
    draws = garch_draws(fit, "garch")
    names = {"mu": "mu", "omega": "omega", "alpha": "alpha[1]", "beta": "beta[1]", "nu": "nu"}
    mle = {ours: float(res.params[theirs]) for ours, theirs in names.items()}
    se = {ours: float(res.std_err[theirs]) for ours, theirs in names.items()}
    mle["persistence"] = mle["alpha"] + mle["beta"]
    mle["unconditional_variance"] = mle["omega"] / (1.0 - mle["persistence"])
    rows = {
        name: describe(values)
        | {
            "mle": float(mle[name]),
            "mle_se": float(se[name]) if name in se else None,
            "abs_diff": abs(float(values.mean()) - float(mle[name])),
        }
        for name, values in draws.items()
    }
    return {"fit": fit, "wall_s": wall, "steps": fit.diagnostics.num_steps, "parameters": rows}


def ms_garch(frame, args) -> dict:
    """Item 3: the Markov-switching GARCH's regimes, with intervals."""
    fit, wall = timed_fit(bm.ms_garch(args.regimes), frame, args)
    regimes = fit.regimes()
    stay = torch.diagonal(fit.draws["gate/transition"], dim1=-2, dim2=-1).numpy()
    rows = []
    for k, label in enumerate(fit.model.labels):
        draws = garch_draws(fit, label)
        row = {"regime": k, "expert": label}
        row |= {name: describe(values) for name, values in draws.items()}
        row["expected_duration"] = describe(1.0 / (1.0 - stay[:, k]))
        row["share_of_days"] = float((regimes.filtered.to_numpy().argmax(1) == k).mean())
        rows.append(row)

    def disjoint(name):
        spans = sorted((r[name]["q3"], r[name]["q97"]) for r in rows)
        return all(a[1] < b[0] for a, b in zip(spans, spans[1:]))

    return {
        "fit": fit,
        "regimes": regimes,
        "wall_s": wall,
        "steps": fit.diagnostics.num_steps,
        "rows": rows,
        "distinct": {name: disjoint(name) for name in ("persistence", "unconditional_variance")},
    }


def markdown(doc: dict) -> str:
    """The tables of the JSON as markdown."""
    lines = ["# GARCH(1,1)-t and Markov-switching GARCH on the S&P 500", ""]
    lines += [
        f"Data: {doc['data']}. Recursion against arch at arch's MLE: largest relative "
        f"difference {doc['recursion_rel_diff_max']:.1e} (target 1e-8).",
        "",
        "## Bayesian GARCH(1,1)-t (one regime) against arch's MLE",
        "",
        "| parameter | arch MLE (s.e.) | posterior mean | sd | 94% interval | abs. diff |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in doc["garch"]["parameters"].items():
        se = "" if r["mle_se"] is None else f" ({r['mle_se']:.4f})"
        lines.append(
            f"| {name} | {r['mle']:.4f}{se} | {r['mean']:.4f} | {r['sd']:.4f} | "
            f"[{r['q3']:.4f}, {r['q97']:.4f}] | {r['abs_diff']:.4f} |"
        )
    ms = doc["ms_garch"]
    lines += [
        "",
        f"## Markov-switching GARCH, {len(ms['rows'])} regimes (Haas, Mittnik and Paolella 2004)",
        "",
        "Posterior mean [94% interval]; variances in %^2 per day.",
        "",
        "| regime | persistence | unconditional variance | alpha | beta | nu | mu "
        "| expected duration | share of days |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r):
        return f"{r['mean']:.4f} [{r['q3']:.4f}, {r['q97']:.4f}]"

    for r in ms["rows"]:
        lines.append(
            f"| {r['regime']} | {cell(r['persistence'])} | {cell(r['unconditional_variance'])} | "
            f"{cell(r['alpha'])} | {cell(r['beta'])} | {cell(r['nu'])} | {cell(r['mu'])} | "
            f"{r['expected_duration']['mean']:.0f} [{r['expected_duration']['q3']:.0f}, "
            f"{r['expected_duration']['q97']:.0f}] | {r['share_of_days']:.2f} |"
        )
    lines += [
        "",
        "94% intervals disjoint across regimes: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in ms["distinct"].items()),
        "",
        "## One-step variance against the next day's squared return (in sample)",
        "",
        "| model | corr(variance, r^2) | log predictive density per day |",
        "|---|---|---|",
    ]
    for name, r in doc["tracking"].items():
        lines.append(
            f"| {name} | {r['variance_correlation']:.4f} "
            f"| {r['log_predictive_density_per_day']:.4f} |"
        )
    lines += ["", "## Targets", "", "| target | value | met |", "|---|---|---|"]
    for name, t in doc["targets"].items():
        lines.append(f"| {name} | {t['value']:.3g} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    frame = bm.data.load_sp500()
    returns = frame["ret"]
    res = arch_fit(returns)
    rel = recursion_check(returns.to_numpy(copy=True), res)

    single = single_garch(frame, args, res)
    switching = ms_garch(frame, args)
    tracking, variances = {}, {}
    for name, fit in (
        ("garch (Bayesian)", single["fit"]),
        ("ms_garch (Bayesian)", switching["fit"]),
    ):
        tracking[name], variances[name] = variance_tracking(fit, returns)
    # arch's one-step variance for day t+1 is its conditional variance at t+1.
    dates = single["fit"].data.response_dates
    arch_var = (res.conditional_volatility**2).reindex(dates).to_numpy()
    realized = returns.reindex(dates).to_numpy()
    arch_log_lik = pd.Series(
        res.model.distribution.loglikelihood(
            [res.params["nu"]],
            np.asarray(res.resid),
            np.asarray(res.conditional_volatility) ** 2,
            individual=True,
        ),
        index=returns.index,
    )
    tracking["garch_t (arch MLE)"] = {
        "variance_correlation": float(np.corrcoef(arch_var, realized**2)[0, 1]),
        "log_predictive_density_per_day": float(arch_log_lik.reindex(dates).mean()),
        "dates": len(dates),
    }
    params = single["parameters"]
    worst = max(params["alpha"]["abs_diff"], params["beta"]["abs_diff"])
    doc = {
        "data": f"bm.data.load_sp500() 'ret', "
        f"{returns.index[0].date()}..{returns.index[-1].date()}, "
        f"{len(returns)} days (the Bayesian fits score {len(dates)} after the 64-day window)",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "recursion_rel_diff_max": rel,
        "garch": {k: v for k, v in single.items() if k != "fit"},
        "ms_garch": {k: v for k, v in switching.items() if k not in ("fit", "regimes")},
        "tracking": tracking,
        "targets": {
            "recursion_rel_diff_max": {
                "value": rel,
                "met": rel <= TARGETS["recursion_rel_diff_max"],
            },
            "alpha_beta_abs_diff_max": {
                "value": worst,
                "met": worst <= TARGETS["alpha_beta_abs_diff_max"],
            },
            **{
                f"ms_garch_distinct_{k}": {"value": float(v), "met": bool(v)}
                for k, v in switching["distinct"].items()
            },
        },
    }
    out = Path(args.out)
    write_json(doc, out)
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(markdown(doc))
    if not args.no_plot:
        plot_regimes(switching["fit"], switching["regimes"], out.with_suffix(".png"))
    print(markdown(doc))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
