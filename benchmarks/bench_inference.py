"""Wall-clock benchmarks of the inference kernels and of one SVI step.

Measures, on the machine it runs on:

* the parallel forward-backward smoother ``hmm_smoother(method="parallel")`` and the
  gradient of the log evidence (``hmm_log_evidence`` forward + ``backward()``) through
  the parallel scan (``benchmarks/kernels.py`` times the compiled sequential route, which
  ``method="auto"`` takes on the CPU, against hmmlearn, Pyro and dynamax),
  for ``K = 3`` regimes in float64 at ``T = 5,000`` and ``T = 100,000``, against the
  sequential numpy reference ``reference_smoother`` (Rabiner's scaled recursion);
* the parallel Kalman filter ``kalman_filter``, forward + backward of
  ``log_likelihood.sum()``, at ``T = 5,000`` for a scalar (``k = 1``) and a 2-dim
  (``k = 2``) state with ``p = 1``, against the sequential ``reference_kalman_filter``;
* one SVI step of the default mixture (``ar``, ``var``, ``kalman`` experts, 3 regimes,
  window 64) on the embedded S&P 500 data, and the evaluation of 200 posterior draws
  (``fit.posterior``: regimes, predictive, log-likelihood for every draw and day).

Every kernel timing is the median (and minimum) of several repeats after one
untimed warm-up call; ratios are reference / parallel medians measured in the same
run. Timings use one torch intra-op thread (``torch.set_num_threads(1)``, the
package's default while fitting); in full mode the parallel kernels and the SVI step
are timed again at the default thread count. Results go to a JSON file, written
atomically, and a table is printed.

Usage::

    python benchmarks/bench_inference.py            # full run, ~1-3 minutes
    python benchmarks/bench_inference.py --quick    # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import pyro
import torch
from _options import add_run_options, output_path  # benchmarks/ is on sys.path
from tqdm.auto import tqdm

import bayes_moe as bm
from bayes_moe.inference.posterior import evaluation_threads
from bayes_moe.io import write_json
from bayes_moe.kernels.hmm import hmm_log_evidence, hmm_smoother
from bayes_moe.kernels.hmm_reference import reference_smoother
from bayes_moe.kernels.kalman import kalman_filter, reference_kalman_filter

DTYPE = torch.float64
K = 3

# (T, repeats of the parallel kernels, repeats of the sequential reference)
FULL = {
    "hmm": [(5_000, 9, 5), (100_000, 5, 3)],
    "kalman": [(5_000, 7, 2)],
    "svi_steps": 60,
    "svi_steps_default_threads": 20,  # often far slower: OpenMP threads contend
    "posterior_draws": 200,
    "default_threads": True,
}
QUICK = {
    "hmm": [(2_000, 3, 1)],
    "kalman": [(300, 3, 1)],
    "svi_steps": 5,
    "svi_steps_default_threads": 5,
    "posterior_draws": 10,
    "default_threads": False,
}


# --------------------------------------------------------------------------------------
# timing


def time_call(fn: Callable[[], object], repeats: int, *, warmup: int = 1) -> dict:
    """Median and minimum wall time of ``fn()`` over ``repeats`` calls, after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": repeats,
        "warmup": warmup,
        "times_s": times,
    }


# --------------------------------------------------------------------------------------
# problems


def hmm_problem(T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A sticky 3-regime HMM with Gaussian emissions of scales 0.5, 1, 2.5, simulated.

    Returns ``log_init (K,)``, ``log_trans (K, K)`` and ``log_emit (T, K)`` in float64.
    """
    rng = np.random.default_rng(seed)
    trans = np.full((K, K), 0.02 / (K - 1))
    np.fill_diagonal(trans, 0.98)
    path = np.empty(T, dtype=np.int64)
    path[0] = 0
    u = rng.random(T)
    cum = trans.cumsum(axis=1)
    for t in range(1, T):
        path[t] = min(int(np.searchsorted(cum[path[t - 1]], u[t])), K - 1)
    scales = np.array([0.5, 1.0, 2.5])
    y = rng.standard_normal(T) * scales[path]
    log_emit = -0.5 * (y[:, None] / scales) ** 2 - np.log(scales) - 0.5 * math.log(2 * math.pi)
    log_init = np.full(K, -math.log(K))
    return (
        torch.as_tensor(log_init, dtype=DTYPE),
        torch.as_tensor(np.log(trans), dtype=DTYPE),
        torch.as_tensor(log_emit, dtype=DTYPE),
    )


def kalman_problem(T: int, k: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stable ``k``-state, 1-observation model (a local level for ``k = 1``), simulated."""
    rng = np.random.default_rng(seed)
    F = np.diag(np.linspace(0.95, 0.6, k))
    if k > 1:
        F[0, 1] = 0.1
    Q = 0.1 * np.eye(k)
    H = np.ones((1, k))
    R = np.eye(1)
    x = np.zeros(k)
    y = np.empty((T, 1))
    for t in range(T):
        x = F @ x + rng.multivariate_normal(np.zeros(k), Q)
        y[t] = H @ x + rng.standard_normal(1)
    arrays = {
        "y": y,
        "F": F,
        "c": np.zeros(k),
        "H": H,
        "d": np.zeros(1),
        "Q": Q,
        "R": R,
        "init_mean": np.zeros(k),
        "init_cov": np.eye(k),
    }
    return {name: torch.as_tensor(a, dtype=DTYPE) for name, a in arrays.items()}


# --------------------------------------------------------------------------------------
# benchmarks


def bench_hmm(T: int, repeats: int, ref_repeats: int, *, threads: int, reference: bool) -> list:
    """Parallel smoother, log-evidence gradient and (optionally) the numpy reference."""
    log_init, log_trans, log_emit = hmm_problem(T)
    records = []

    def smoother():
        with torch.no_grad():
            return hmm_smoother(log_init, log_trans, log_emit, method="parallel")

    leaves = [x.clone().requires_grad_() for x in (log_init, log_trans, log_emit)]

    def evidence_grad():
        for leaf in leaves:
            leaf.grad = None
        hmm_log_evidence(*leaves, method="parallel").backward()

    common = {"T": T, "K": K, "dtype": "float64", "threads": threads}
    records.append(
        {"name": "hmm_smoother", **common, **time_call(smoother, repeats)},
    )
    records.append(
        {"name": "hmm_log_evidence_fwd_bwd", **common, **time_call(evidence_grad, repeats)}
    )
    if reference:
        args = [x.numpy() for x in (log_init, log_trans, log_emit)]
        timing = time_call(lambda: reference_smoother(*args), ref_repeats, warmup=0)
        ref = reference_smoother(*args)
        par = smoother()
        diff = np.abs(np.exp(ref.log_smoothed) - par.log_smoothed.exp().numpy()).max()
        ev_diff = abs(float(ref.log_evidence) - float(par.log_evidence))
        records.append(
            {
                "name": "reference_smoother_numpy",
                **common,
                **timing,
                "max_abs_diff_smoothed_vs_parallel": float(diff),
                "abs_diff_log_evidence_vs_parallel": ev_diff,
            }
        )
    return records


def bench_kalman(
    T: int, k: int, repeats: int, ref_repeats: int, *, threads: int, reference: bool
) -> list:
    """Forward + backward of ``log_likelihood.sum()``, parallel and (optionally) sequential."""
    problem = kalman_problem(T, k)
    grad_names = ("F", "Q", "R")  # what a fitted Kalman expert differentiates

    def run(fn):
        args = {
            name: x.clone().requires_grad_() if name in grad_names else x
            for name, x in problem.items()
        }
        result = fn(**args)
        result.log_likelihood.sum().backward()
        return result

    common = {"T": T, "k": k, "p": 1, "dtype": "float64", "threads": threads}
    records = [
        {
            "name": "kalman_filter_fwd_bwd",
            **common,
            **time_call(lambda: run(kalman_filter), repeats),
        }
    ]
    if reference:
        timing = time_call(lambda: run(reference_kalman_filter), ref_repeats, warmup=0)
        with torch.no_grad():
            diff = abs(
                float(kalman_filter(**problem).log_likelihood)
                - float(reference_kalman_filter(**problem).log_likelihood)
            )
        records.append(
            {
                "name": "reference_kalman_filter_fwd_bwd",
                **common,
                **timing,
                "abs_diff_log_likelihood_vs_parallel": diff,
            }
        )
    return records


def bench_svi(
    frame, num_steps: int, num_draws: int, *, num_threads: int | None, posterior: bool
) -> dict:
    """Fit the default mixture for ``num_steps`` steps; time a step and the posterior."""
    model = bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=3, window=64)
    start = time.perf_counter()
    fit = model.fit(
        frame,
        target="ret",
        num_steps=num_steps,
        num_draws=num_draws,
        seed=0,
        progress=False,
        convergence_tol=None,
        num_threads=num_threads,
    )
    wall = time.perf_counter() - start
    d = fit.diagnostics
    record = {
        "name": "svi_step",
        "experts": fit.program.labels,
        "n_regimes": 3,
        "window": 64,
        "n_observations": d.n_observations,
        "num_steps": d.num_steps,
        "threads": num_threads if num_threads is not None else torch.get_num_threads(),
        "step_time_s": d.step_time_s,
        "loop_elapsed_s": d.elapsed_s,
        "fit_wall_s": wall,
    }
    if posterior:
        start = time.perf_counter()
        _ = fit.posterior
        record["posterior_draws"] = fit.n_draws
        record["posterior_eval_s"] = time.perf_counter() - start
        # evaluate_posterior's default: one thread per torch thread (1 in this script).
        record["posterior_eval_threads"] = evaluation_threads(None)
    return record


# --------------------------------------------------------------------------------------
# reporting


def machine() -> dict:
    """Where the numbers come from."""
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:  # Linux only; platform.processor() is often empty
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "bayes_moe": bm.__version__,
        "cuda_available": torch.cuda.is_available(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def ratios(records: list) -> list:
    """Reference / parallel median ratios, pairing records of the same size and threads."""
    pairs = [
        ("reference_smoother_numpy", "hmm_smoother", ("T",)),
        ("reference_kalman_filter_fwd_bwd", "kalman_filter_fwd_bwd", ("T", "k")),
    ]
    out = []
    for ref_name, par_name, keys in pairs:
        for ref in (r for r in records if r["name"] == ref_name):
            for par in records:
                if (
                    par["name"] == par_name
                    and par["threads"] == ref["threads"]
                    and all(par[key] == ref[key] for key in keys)
                ):
                    out.append(
                        {
                            "reference": ref_name,
                            "parallel": par_name,
                            **{key: ref[key] for key in keys},
                            "threads": ref["threads"],
                            "ratio_reference_over_parallel": ref["median_s"] / par["median_s"],
                        }
                    )
    return out


def _size(record: dict) -> str:
    if "k" in record:
        return f"T={record['T']:,} k={record['k']}"
    return f"T={record['T']:,} K={record['K']}"


def print_table(result: dict) -> None:
    """A short human-readable table of ``result``."""
    rows = [("benchmark", "size", "threads", "median", "min", "n")]
    for r in result["kernels"]:
        rows.append(
            (
                r["name"],
                _size(r),
                str(r["threads"]),
                f"{r['median_s'] * 1e3:.1f} ms",
                f"{r['min_s'] * 1e3:.1f} ms",
                str(r["repeats"]),
            )
        )
    for r in result["svi"]:
        rows.append(
            (
                "svi_step (mean)",
                f"N={r['n_observations']:,}",
                str(r["threads"]),
                f"{r['step_time_s'] * 1e3:.1f} ms",
                "",
                str(r["num_steps"]),
            )
        )
        if "posterior_eval_s" in r:
            rows.append(
                (
                    "fit.posterior",
                    f"S={r['posterior_draws']}",
                    str(r["posterior_eval_threads"]),
                    f"{r['posterior_eval_s']:.2f} s",
                    "",
                    "1",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for r in result["ratios"]:
        size = ", ".join(f"{key}={r[key]:,}" for key in ("T", "k") if key in r)
        print(
            f"{r['reference']} / {r['parallel']} ({size}, threads={r['threads']}): "
            f"{r['ratio_reference_over_parallel']:.1f}x"
        )


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_options(parser, "inference")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    out = output_path(args, "inference")

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tasks: list[tuple[str, Callable[[], object]]] = []
    kernels: list[dict] = []
    svi: list[dict] = []
    frame = {}

    def load():
        start = time.perf_counter()
        frame["sp500"] = bm.data.load_sp500()
        frame["load_s"] = time.perf_counter() - start

    for T, rep, ref_rep in config["hmm"]:
        tasks.append(
            (
                f"hmm T={T:,}",
                lambda T=T, rep=rep, ref_rep=ref_rep: kernels.extend(
                    bench_hmm(T, rep, ref_rep, threads=1, reference=True)
                ),
            )
        )
    for T, rep, ref_rep in config["kalman"]:
        for k in (1, 2):
            tasks.append(
                (
                    f"kalman T={T:,} k={k}",
                    lambda T=T, k=k, rep=rep, ref_rep=ref_rep: kernels.extend(
                        bench_kalman(T, k, rep, ref_rep, threads=1, reference=True)
                    ),
                )
            )
    tasks.append(("load S&P 500", load))
    tasks.append(
        (
            "SVI",
            lambda: svi.append(
                bench_svi(
                    frame["sp500"],
                    config["svi_steps"],
                    config["posterior_draws"],
                    num_threads=1,
                    posterior=True,
                )
            ),
        )
    )
    if config["default_threads"] and default_threads > 1:

        def at_default(fn):
            def run():
                torch.set_num_threads(default_threads)
                try:
                    fn()
                finally:
                    torch.set_num_threads(1)

            return run

        for T, rep, _ in config["hmm"]:
            reps = max(3, rep // 2)
            tasks.append(
                (
                    f"hmm T={T:,} ({default_threads} threads)",
                    at_default(
                        lambda T=T, reps=reps: kernels.extend(
                            bench_hmm(T, reps, 0, threads=default_threads, reference=False)
                        )
                    ),
                )
            )
        for T, rep, _ in config["kalman"]:
            for k in (1, 2):
                tasks.append(
                    (
                        f"kalman T={T:,} k={k} ({default_threads} threads)",
                        at_default(
                            lambda T=T, k=k, rep=rep: kernels.extend(
                                bench_kalman(T, k, rep, 0, threads=default_threads, reference=False)
                            )
                        ),
                    )
                )
        tasks.append(
            (
                f"SVI ({default_threads} threads)",
                at_default(
                    lambda: svi.append(
                        bench_svi(
                            frame["sp500"],
                            config["svi_steps_default_threads"],
                            config["posterior_draws"],
                            num_threads=None,
                            posterior=False,
                        )
                    )
                ),
            )
        )

    start = time.perf_counter()
    with tqdm(tasks, desc="benchmarks", disable=args.no_progress, leave=False) as bar:
        for label, task in bar:
            bar.set_postfix_str(label)
            task()

    result = {
        "benchmark": "bayes_moe inference",
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "settings": {
            "torch_num_threads": 1,
            "note_threads": "torch.set_num_threads(1) for every timing whose 'threads' is 1; "
            f"entries with threads={default_threads} use the default thread count",
            "default_num_threads": default_threads,
            "dtype": "float64",
            "timing": "median and min over 'repeats' calls after 'warmup' untimed calls "
            "(no warm-up for the sequential references); ratios are reference / parallel "
            "medians from this run",
            "sp500_load_s": frame.get("load_s"),
        },
        "kernels": kernels,
        "ratios": ratios(kernels),
        "svi": svi,
        "total_s": time.perf_counter() - start,
    }
    write_json(result, out)
    print_table(result)
    print(f"\ntotal {result['total_s']:.1f} s; written to {out}")
    return result


if __name__ == "__main__":
    main()
