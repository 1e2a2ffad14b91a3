"""Cost of the neural experts, and the time to fit a mixture of all of them.

Part one (default), per neural expert at its default size:

* parameter count (trunk, head and scale model, one target);
* forward + backward time of the trunk over the full sample (every origin of the
  S&P 500, 4,945 windows of L = 64 days), float32 and float64, one thread: what one
  SVI step would cost if the trunk were trained jointly in full batch;
* as the window grows, L = 64 .. 4096, over a batch of 256 windows (float32): time of
  forward + backward, the memory autograd saves for the backward pass (distinct
  storages, counted exactly: the part that grows with L) and the peak resident memory
  of a fresh process measuring that expert alone; and the slopes of log time and log
  memory on log L fitted over L >= 256 (1: linear, 2: quadratic). Exact attention is
  measured while its score tensors fit a 6 GiB budget (to L = 1024).

Part two (``--fit``): the mixture of every registered expert (``experts="all"``), 3
regimes, window 64, fitted on the S&P 500 (1999-2018) with the default two-stage
strategy; wall time of each stage and the ELBO reached.

Writes ``results/experts.json`` and ``results/experts.png`` (part one; ``--experts``
re-measures a subset and keeps the others' rows) and ``results/experts_fit.json``
(part two), atomically.

Usage::

    python benchmarks/experts.py             # part one, ~15 minutes
    python benchmarks/experts.py --experts attention,performer,linformer  # a subset
    python benchmarks/experts.py --fit       # part two, ~5-15 minutes
    python benchmarks/experts.py --quick     # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import bayes_moe as bm  # noqa: E402
from bayes_moe.io import atomic_path, write_json  # noqa: E402
from bayes_moe.models.experts import make_expert  # noqa: E402
from bayes_moe.models.experts.long_range import LONG_RANGE_EXPERTS  # noqa: E402
from bayes_moe.models.experts.neural import NEURAL_EXPERTS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = [cls.name for cls in (*NEURAL_EXPERTS, *LONG_RANGE_EXPERTS)]
LONG_RANGE_NAMES = {cls.name for cls in LONG_RANGE_EXPERTS}
#: Lengths whose exact-attention score tensors would need more are skipped.
MEMORY_BUDGET_MIB = 6144
LENGTHS = [64, 128, 256, 512, 1024, 2048, 4096]
SCALING_BATCH = 256


def _fwd_bwd_seconds(trunk, x, repeats):
    """Median wall time of forward + backward of ``trunk(x)[:, -1].sum()``."""
    times = []
    for i in range(repeats + 1):
        trunk.zero_grad(set_to_none=True)
        start = time.perf_counter()
        trunk(x)[:, -1].pow(2).sum().backward()
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def full_sample(name, inputs, repeats):
    """Parameter count and full-sample forward + backward time at the model's window."""
    expert = make_expert(name)
    n_params = expert.n_parameters(inputs)
    x = expert.window_batch(inputs)
    out = {"n_parameters": n_params, "n_windows": int(x.shape[0]), "window": int(x.shape[1])}
    for dtype in (torch.float32, torch.float64):
        trunk = expert.trunk.to(dtype)
        out[f"fwd_bwd_s_{str(dtype)[6:]}"] = _fwd_bwd_seconds(trunk, x.to(dtype), repeats)
    return out


def saved_activation_mib(trunk, x):
    """MiB of the distinct tensors autograd saves for backward in ``trunk(x)``.

    What training holds in memory beyond the weights, counted exactly (each storage
    once) with :func:`torch.autograd.graph.saved_tensors_hooks`.
    """
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trunk(x)[:, -1].pow(2).sum()
    return sum(storages.values()) / 2**20


def make_trunk(name, length):
    """The default trunk of expert ``name`` over one channel for windows of ``length``."""
    torch.manual_seed(0)
    expert = make_expert(name)
    options = dict(expert.trunk_options)
    if getattr(expert.trunk_class, "window_dependent", False):
        options["length"] = length
    return expert.trunk_class(1, **options)


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def scaling(name, lengths, repeats, batch):
    """Forward + backward time, saved activations and peak memory as ``L`` grows.

    Runs in a fresh process per expert, lengths in increasing order, so the process's
    peak resident memory after length ``L`` is the peak of ``L`` (memory grows with L);
    the peak before the first length is subtracted. A length whose attention-size
    tensors alone would pass :data:`MEMORY_BUDGET_MIB` is skipped and marked so.
    """
    torch.set_num_threads(1)
    base = _peak_rss_mib()
    rows = []
    for L in lengths:
        trunk = make_trunk(name, L)
        if _quadratic(name) and _quadratic_mib(L, batch) > MEMORY_BUDGET_MIB:
            rows.append({"length": L, "skipped": f"needs > {MEMORY_BUDGET_MIB} MiB (L^2 scores)"})
            continue
        done = [r for r in rows if "peak_rss_mib" in r]
        if done and done[-1]["peak_rss_mib"] * L / done[-1]["length"] > MEMORY_BUDGET_MIB:
            # memory grows at least linearly in L: this length would pass the budget
            rows.append({"length": L, "skipped": f"would need > {MEMORY_BUDGET_MIB} MiB"})
            continue
        x = torch.randn(batch, L, 1)
        seconds = _fwd_bwd_seconds(trunk, x, repeats)
        memory = saved_activation_mib(trunk, x)
        rows.append(
            {
                "length": L,
                "fwd_bwd_s": seconds,
                "memory_mib": memory,
                "peak_rss_mib": _peak_rss_mib() - base,
            }
        )
    return rows


def _quadratic(name):
    return name == "attention"


def _quadratic_mib(L, batch):
    """Bytes of one float32 ``(batch, heads, L, L)`` score tensor per layer, times 4 (saved
    scores and probabilities, two layers), in MiB, for the exact-attention trunk."""
    heads = getattr(make_trunk("attention", 64), "heads", 1)
    return 4 * batch * heads * L * L * 4 / 2**20


def fitted_slopes(rows, key, min_length=256):
    """Least-squares slope of ``log key`` on ``log L`` over ``L >= min_length``."""
    points = [(r["length"], r[key]) for r in rows if key in r and r["length"] >= min_length]
    if len(points) < 2:
        return None
    L, v = np.log([p[0] for p in points]), np.log([max(p[1], 1e-9) for p in points])
    return float(np.polyfit(L, v, 1)[0])


def _scaling_worker(name, lengths, repeats, batch, queue):
    queue.put(scaling(name, lengths, repeats, batch))


def scaling_in_process(name, lengths, repeats, batch):
    """:func:`scaling` in a fresh process (its own peak-memory counter)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_scaling_worker, args=(name, lengths, repeats, batch, queue))
    process.start()
    rows = queue.get()
    process.join()
    return rows


def part_one(args):
    torch.set_num_threads(1)
    frame = bm.data.load_sp500()
    data = bm.BayesianMoE(experts="ar", window=64).prepare(frame)
    lengths = LENGTHS[:3] if args.quick else LENGTHS
    repeats = 1 if args.quick else 3
    names = NAMES if args.experts is None else args.experts.split(",")
    results = {}
    for name in tqdm(names, desc="experts"):
        results[name] = full_sample(name, data.inputs, repeats)
        rows = scaling_in_process(name, lengths, repeats, SCALING_BATCH)
        results[name]["scaling"] = rows
        results[name]["slope_time"] = fitted_slopes(rows, "fwd_bwd_s")
        results[name]["slope_memory"] = fitted_slopes(rows, "memory_mib")
        results[name]["slope_peak_rss"] = fitted_slopes(rows, "peak_rss_mib")
    if args.experts is not None and (RESULTS / "experts.json").exists():
        # A subset re-measured: keep the other experts' earlier rows.
        earlier = json.loads((RESULTS / "experts.json").read_text())["experts"]
        results = {**{k: v for k, v in earlier.items() if k not in results}, **results}
        for r in results.values():
            r.setdefault("slope_time", fitted_slopes(r["scaling"], "fwd_bwd_s"))
            r.setdefault("slope_memory", fitted_slopes(r["scaling"], "memory_mib"))
    doc = {
        "threads": 1,
        "scaling_batch": SCALING_BATCH,
        "slopes": "least-squares slope of log(value) on log(L) for L >= 256",
        "experts": results,
    }
    write_json(doc, RESULTS / "experts.json")
    _plot(results, RESULTS / "experts.png")
    print(
        f"{'expert':<18}{'params':>8}{'f32 s':>8}{'f64 s':>8}  slope t  slope mem   "
        "s at L=64..max  (MiB saved at max)"
    )
    for name, r in results.items():
        done = [row for row in r["scaling"] if "fwd_bwd_s" in row]
        tail = (
            f"{done[0]['fwd_bwd_s']:.3f}..{done[-1]['fwd_bwd_s']:.3f} at L={done[-1]['length']}"
            f" ({done[-1]['memory_mib']:.0f})"
        )
        slope_t = "-" if r["slope_time"] is None else f"{r['slope_time']:.2f}"
        slope_m = "-" if r["slope_memory"] is None else f"{r['slope_memory']:.2f}"
        print(
            f"{name:<18}{r['n_parameters']:>8}{r['fwd_bwd_s_float32']:>8.2f}"
            f"{r['fwd_bwd_s_float64']:>8.2f}  {slope_t:>7}  {slope_m:>9}   {tail}"
        )


def _plot(results, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = plt.get_cmap("tab20").colors
    for i, (name, r) in enumerate(results.items()):
        rows = [row for row in r["scaling"] if "fwd_bwd_s" in row]
        L = [row["length"] for row in rows]
        style = {"lw": 1, "color": colors[i % len(colors)]}
        if name in LONG_RANGE_NAMES:
            style["ls"] = "--"
        if name == "attention":
            style = {"lw": 2.5, "color": "k"}
        slope_t = r.get("slope_time")
        slope_m = r.get("slope_memory")
        axes[0].loglog(
            L,
            [row["fwd_bwd_s"] for row in rows],
            marker="o",
            ms=3,
            label=f"{name} ({slope_t:.2f})" if slope_t is not None else name,
            **style,
        )
        axes[1].loglog(
            L,
            [max(row["memory_mib"], 0.1) for row in rows],
            marker="o",
            ms=3,
            label=f"{name} ({slope_m:.2f})" if slope_m is not None else name,
            **style,
        )
    axes[0].set(
        xlabel="window length L",
        ylabel="forward + backward (s)",
        title=f"time, {SCALING_BATCH} windows, float32, 1 thread (slope)",
    )
    axes[1].set(
        xlabel="window length L",
        ylabel="saved activations (MiB)",
        title="memory held for backward (slope); dashed: long-range experts",
    )
    for ax in axes:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def part_two(args):
    frame = bm.data.load_sp500()
    model = bm.BayesianMoE(experts="all", n_regimes=3, window=64)
    experts = [e.name for e in model.experts]
    start = time.perf_counter()
    fit = model.fit(
        frame,
        num_steps=20 if args.quick else 1500,
        pretrain_steps=20 if args.quick else 400,
        num_draws=200,
        seed=0,
    )
    wall = time.perf_counter() - start
    d = fit.diagnostics
    out = {
        "experts": experts,
        "n_days": int(fit.data.n_observed),
        "wall_s": wall,
        "pretrain_s": d.pretrain_s,
        "joint_s": d.elapsed_s,
        "joint_steps": d.num_steps,
        "joint_step_s": d.step_time_s,
        "elbo_per_day": -d.final_loss / d.n_observations,
        "units": "nats per day of the standardized returns",
        "in_sample_log_score_standardized": float(fit.posterior.log_predictive_density.mean()),
    }
    write_json(out, RESULTS / "experts_fit.json")
    print(json.dumps(out, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit the mixture of all experts")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--experts", default=None, help="comma list (default: every window expert)")
    args = parser.parse_args(argv)
    (part_two if args.fit else part_one)(args)


if __name__ == "__main__":
    main()
