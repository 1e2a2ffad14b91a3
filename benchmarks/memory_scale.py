"""Peak memory and time of fitting, evaluating and reporting a mixture at 5k to 200k days.

For each series length ``T`` a fresh Python process (so that no size inherits another's
memory) fits the mixture to synthetic daily returns, evaluates its posterior draws and
writes the report folder, recording for each phase its wall time and its peak resident
set size (RSS):

``fit``
    :func:`bayes_moe.inference.svi.fit_svi` with the default experts (``ar``, ``var``,
    ``kalman``), 3 regimes, window 64 and 200 posterior draws (``--num-draws``).
``evaluation``
    :meth:`MoEFit.posterior_summary`: every draw evaluated in chunks whose working memory
    is bounded by the memory budget (``--memory-budget-mib``), reduced to per-day summaries
    plus the kept draws.
``report``
    :func:`bayes_moe.report.write_report` (forecast, in-sample calibration, InferenceData
    with LOO, NetCDF, checkpoint, plots), with ``--keep-draws`` per-day draws in the file.

Peak RSS per phase is the kernel's high-water mark (``VmHWM``), reset at the start of
the phase through ``/proc/self/clear_refs`` (Linux); elsewhere it is the process's
``ru_maxrss`` so far. The largest phase peak is the process peak. The sizes of
``inference_data.nc`` and of the report folder are recorded too. With ``--demo`` (the
default) the script also runs ``bayes-moe demo`` (default settings) and
``bayes-moe regimes`` on its checkpoint, each in a fresh process, recording the demo
folder, ``inference_data.nc`` and ``regimes.nc`` sizes and the demo's peak RSS (its
``ru_maxrss``). ``--sizes ""`` measures the demo alone.

Data (synthetic, labelled): returns in percent, ``r_t = sigma_{z_t} e_t`` with
``e_t`` standard Student-t(5) scaled to unit variance, ``sigma = (0.7, 1.4, 2.8)`` and a
3-state sticky Markov chain ``z`` (stay probability 0.995), dated daily from 1700-01-01
(calendar days: 200,000 trading days would pass pandas' last nanosecond date).

Usage::

    python benchmarks/memory_scale.py                       # T = 5k, 50k, 200k and the demo
    python benchmarks/memory_scale.py --sizes 5000 --num-steps 50 --out quick.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _options import add_mixture_options  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIZES = (5_000, 50_000, 200_000)
VOLATILITIES = (0.7, 1.4, 2.8)
STAY = 0.995


def synthetic_returns(n_days: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic regime-switching daily returns (module docstring): a ``ret`` column."""
    rng = np.random.default_rng(seed)
    switch = rng.random(n_days) > STAY
    moves = rng.integers(1, len(VOLATILITIES), n_days)  # to another regime
    regime = np.cumsum(np.where(switch, moves, 0)) % len(VOLATILITIES)
    shocks = rng.standard_t(5, n_days) / np.sqrt(5 / 3)
    returns = np.asarray(VOLATILITIES)[regime] * shocks
    index = pd.date_range("1700-01-01", periods=n_days, freq="D", name="date")
    return pd.DataFrame({"ret": returns}, index=index)


def _peak_reset() -> bool:
    """Reset the kernel's RSS high-water mark; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_mib(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``), MiB; None elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def _peak_mib() -> float:
    """The RSS high-water mark of this process, MiB."""
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(record: dict, name: str, work):
    """Run ``work()``; record its wall time, peak RSS and RSS after it under ``name``."""
    _peak_reset()
    start = time.perf_counter()
    result = work()
    record[f"{name}_s"] = round(time.perf_counter() - start, 2)
    record[f"{name}_peak_rss_mib"] = round(_peak_mib(), 1)
    after = _status_mib("VmRSS")
    record[f"{name}_rss_after_mib"] = None if after is None else round(after, 1)
    print(f"  {name}: {record[f'{name}_s']} s, peak RSS {record[f'{name}_peak_rss_mib']} MiB")
    return result


def _folder_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 3)


def run_size(args) -> dict:
    """One series length, in this process: the worker's record."""
    import torch

    import bayes_moe as bm
    from bayes_moe.inference.posterior import draws_per_chunk
    from bayes_moe.inference.svi import fit_svi
    from bayes_moe.report import write_report

    torch.set_num_threads(1)
    record = {"T": args.worker, "peak_reset": _peak_reset()}
    frame = synthetic_returns(args.worker, args.seed)
    experts = args.experts.split(",")
    model = bm.BayesianMoE(experts=experts, n_regimes=args.regimes, window=args.window)
    data = _phase(record, "prepare", lambda: model.prepare(frame, "ret"))
    fit = _phase(
        record,
        "fit",
        lambda: fit_svi(
            model,
            data,
            num_steps=args.num_steps,
            num_draws=args.num_draws,
            seed=args.seed,
            progress=False,
            memory_budget_mib=args.memory_budget_mib,
        ),
    )
    record.update(
        n_observed=data.n_observed,
        num_steps=fit.diagnostics.num_steps,
        svi_step_s=round(fit.diagnostics.step_time_s, 4),
        draws_per_chunk=draws_per_chunk(
            data.inputs.n_origins,
            args.regimes,
            len(experts),
            memory_budget_mib=args.memory_budget_mib,
        ),
    )
    _phase(record, "evaluation", lambda: fit.posterior_summary(args.keep_draws))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        _phase(record, "report", lambda: write_report(fit, out, keep_draws=args.keep_draws))
        record["inference_data_nc_mb"] = round((out / "inference_data.nc").stat().st_size / 1e6, 3)
        record["report_folder_mb"] = _folder_mb(out)
    phases = ("prepare", "fit", "evaluation", "report")
    record["peak_rss_mib"] = max(record[f"{p}_peak_rss_mib"] for p in phases)
    return record


def run_demo_worker(out: Path, record_path: Path) -> None:
    """``bayes-moe demo --out out`` in this process; its peak RSS (``ru_maxrss``) to JSON."""
    from bayes_moe.cli import main as cli_main

    with open(os.devnull, "w") as devnull:
        saved, sys.stdout = sys.stdout, devnull
        try:
            status = cli_main(["demo", "--out", str(out)])
        finally:
            sys.stdout = saved
    if status != 0:
        raise SystemExit(status)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    record_path.write_text(json.dumps({"demo_peak_rss_mib": round(peak, 1)}))


def run_demo(args) -> dict:
    """``bayes-moe demo`` and ``bayes-moe regimes`` in child processes: sizes and peak RSS."""
    record = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        peak = Path(tmp) / "demo.json"
        command = [sys.executable, __file__, "--demo-worker", str(out), "--worker-out", str(peak)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        record["demo_s"] = round(time.perf_counter() - start, 1)
        record.update(json.loads(peak.read_text()))
        record["demo_folder_mb"] = _folder_mb(out)
        record["demo_inference_data_nc_mb"] = round(
            (out / "inference_data.nc").stat().st_size / 1e6, 3
        )
        regimes = Path(tmp) / "regimes"
        command = [sys.executable, "-m", "bayes_moe.cli", "regimes", "--model"]
        command += [str(out / "fit.safetensors"), "--out", str(regimes)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        record["regimes_nc_mb"] = round((regimes / "regimes.nc").stat().st_size / 1e6, 3)
    print(f"  demo: {record}")
    return record


def _machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
    }


def _worker_command(args, size: int, path: Path) -> list[str]:
    command = [sys.executable, __file__, "--worker", str(size), "--worker-out", str(path)]
    for name in ("experts", "regimes", "window", "num_steps", "num_draws", "seed"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    command += ["--memory-budget-mib", str(args.memory_budget_mib)]
    command += ["--keep-draws", str(args.keep_draws)]
    return command


def main(argv: list[str] | None = None) -> dict:
    from bayes_moe.inference.posterior import DEFAULT_KEEP_DRAWS, DEFAULT_MEMORY_BUDGET_MIB
    from bayes_moe.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_mixture_options(parser)
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="comma-separated series lengths"
    )
    parser.add_argument("--memory-budget-mib", type=float, default=DEFAULT_MEMORY_BUDGET_MIB)
    parser.add_argument("--keep-draws", type=int, default=DEFAULT_KEEP_DRAWS)
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "memory_scale.json")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--demo-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.demo_worker is not None:
        run_demo_worker(args.demo_worker, args.worker_out)
        return {}

    if args.worker is not None:
        record = run_size(args)
        args.worker_out.write_text(json.dumps(record))
        return record

    sizes = [int(s) for s in args.sizes.split(",") if s]
    result = {
        "machine": _machine(),
        "settings": {
            "experts": args.experts,
            "regimes": args.regimes,
            "window": args.window,
            "num_steps": args.num_steps,
            "num_draws": args.num_draws,
            "seed": args.seed,
            "memory_budget_mib": args.memory_budget_mib,
            "keep_draws": args.keep_draws,
            "torch_num_threads": 1,
            "data": "synthetic: 3-regime sticky Markov volatility (0.7, 1.4, 2.8 %/day), t(5)",
        },
        "sizes": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            print(f"T = {size:,}", flush=True)
            path = Path(tmp) / f"{size}.json"
            subprocess.run(_worker_command(args, size, path), check=True)
            result["sizes"].append(json.loads(path.read_text()))
    if args.demo:
        print("demo", flush=True)
        result["demo"] = run_demo(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out)
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
