"""Protocol P1 serially and on a 2-worker Dask LocalCluster: wall time and equal numbers.

The P1 study (S&P 500, test 2015-01-02..2018-12-31, refit every 250 test days on an
expanding window, one-step densities) for the mixture (``--experts``, default the
package's three) and GARCH(1,1)-t, run twice in one process through
``bm.evaluation.sweep``: first serially (one torch and BLAS thread per refit), then with
every refit block a task on a ``LocalCluster`` of ``--workers`` single-threaded worker
processes. Reports both wall times, their ratio (with and without the cluster's start),
and the largest per-day difference of the log scores (zero: the same seeds and thread
counts give the same numbers).

Writes ``results/dask_p1.json`` and ``results/dask_p1.md``.

    python benchmarks/dask_p1.py                 # the full protocol, about 20 min on 2 cores
    python benchmarks/dask_p1.py --quick         # smoke run: 60 test days, 50 SVI steps
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _options import RESULTS_DIR, add_mixture_options, mixture_protocol
from p1_sp500 import TEST, load_frame, make_forecaster  # benchmarks/ is on sys.path

import bayes_moe as bm
from bayes_moe.evaluation.baselines import BASELINES
from bayes_moe.evaluation.fanout import local_cluster
from bayes_moe.evaluation.scoring import summarize
from bayes_moe.inference.pretrain_cache import PretrainCache
from bayes_moe.io import atomic_path, write_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mixture_options(parser)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--refit-every", type=int, default=250)
    parser.add_argument("--quick", action="store_true", help="60 test days, 50 SVI steps")
    parser.add_argument("--out", default=None, help="default benchmarks/results/dask_p1.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_steps, args.num_draws, args.refit_every = 50, 20, 20
    return args


def configs(args, covariates, cache) -> dict:
    """The mixture of ``--experts`` (P1's spec) and GARCH(1,1)-t."""
    experts = tuple(e.strip() for e in args.experts.split(","))
    spec = ("mixture", experts, args.regimes, 0.0, None)
    return {
        "bayes_moe": make_forecaster("bayes_moe", spec, args, covariates, cache),
        "garch_t": BASELINES["garch_t"](),
    }


def run(frame, forecasters, args, client=None):
    """``(per-day table, seconds)`` of the P1 sweep, here or on ``client``."""
    test_start, test_end = TEST
    if args.quick:
        test_start, test_end = frame.index[-60], frame.index[-1]
    start = time.perf_counter()
    table = bm.evaluation.sweep(
        {"sp500": frame.loc[:test_end]},
        forecasters,
        [1],
        test_start=test_start,
        test_end=test_end,
        refit_every=args.refit_every,
        client=client,
        per_day=True,
        on_error="raise",
    )
    return table, time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    frame, covariates = load_frame()
    with tempfile.TemporaryDirectory(prefix="dask-p1-") as tmp:
        forecasters = configs(args, covariates, PretrainCache(tmp))
        print("serial ...", flush=True)
        serial, serial_s = run(frame, forecasters, args)
        print(f"serial: {serial_s:.1f} s; starting {args.workers} workers ...", flush=True)
        started = time.perf_counter()
        with local_cluster(args.workers) as client:
            startup_s = time.perf_counter() - started
            fanned, fanned_s = run(frame, forecasters, args, client)
        print(f"cluster: {fanned_s:.1f} s (+{startup_s:.1f} s start)", flush=True)
    difference = float(np.max(np.abs(serial["log_score"] - fanned["log_score"])))
    models = {name: summarize(group.set_index("date")) for name, group in serial.groupby("config")}
    doc = {
        "protocol": mixture_protocol(
            args,
            name="P1" if not args.quick else "P1 (quick: last 60 days)",
            test_start=str(serial["date"].min().date()),
            test_end=str(serial["date"].max().date()),
            refit_every=args.refit_every,
            models=list(forecasters),
            workers=args.workers,
            threads_per_worker=1,
            torch_threads_per_refit=1,
        ),
        "serial_s": serial_s,
        "cluster_s": fanned_s,
        "cluster_start_s": startup_s,
        "ratio": serial_s / fanned_s,
        "ratio_with_start": serial_s / (fanned_s + startup_s),
        "max_abs_log_score_difference": difference,
        "models": {
            name: {k: s[k] for k in ("log_score", "crps", "coverage_90", "n_days")}
            for name, s in models.items()
        },
    }
    out = RESULTS_DIR / ("dask_p1_quick.json" if args.quick else "dask_p1.json")
    if args.out:
        out = type(out)(args.out)
    write_json(doc, out)
    lines = [
        "# P1 serially and on a Dask LocalCluster",
        "",
        f"Test {doc['protocol']['test_start']} .. {doc['protocol']['test_end']}, refit every "
        f"{args.refit_every} days; models {', '.join(forecasters)} (experts {args.experts}, "
        f"{args.regimes} regimes, {args.num_steps} SVI steps, {args.num_draws} draws); one "
        "torch and BLAS thread per refit.",
        "",
        "| run | wall time (s) | ratio serial / this |",
        "|---|---:|---:|",
        f"| serial | {serial_s:.1f} | 1.00 |",
        f"| LocalCluster, {args.workers} workers | {fanned_s:.1f} | {doc['ratio']:.2f} |",
        f"| the same, with the cluster's start ({startup_s:.1f} s) | {fanned_s + startup_s:.1f} "
        f"| {doc['ratio_with_start']:.2f} |",
        "",
        f"Largest per-day difference of the log scores, serial vs cluster: {difference:.1e}.",
        "",
        "| model | log score | CRPS | 90% coverage | days |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in doc["models"].items():
        lines.append(
            f"| {name} | {s['log_score']:.4f} | {s['crps']:.4f} | {s['coverage_90']:.3f} "
            f"| {s['n_days']} |"
        )
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
