"""Expert selection: each expert's weight in each regime, and what leaving it out costs on P1.

For a mixture (default: every registered expert, 3 regimes), under protocol P1
(S&P 500, test 2015-2018, refit every 250 days, filtering in between):

1. The full mixture is backtested. At every refit its posterior medians are saved
   (``fits/<last training day>.safetensors``) and, per posterior draw, each expert's
   mixture weight in each regime averaged over the training days,
   :math:`\\bar g^{(s)}_{k,m} = \\frac1N \\sum_t g^{(s)}_{t,k,m}`; the report gives its
   posterior mean and 94% interval (3% and 97% quantiles over draws) at the first
   refit (training days 1999-2014).
2. Leave-one-expert-out: for every expert ``m`` the mixture without ``m`` is backtested
   through the same protocol. Each refit reuses the full mixture's stage-one trunks
   (the :class:`~bayes_moe.inference.pretrain_cache.PretrainCache` gives them exactly)
   and starts stage two warm from the full fit's posterior medians of the same refit
   with ``m``'s sites, column of ``gate/bias`` and row of ``gate/coef`` removed; it then
   runs ``--loo-steps`` SVI steps.
3. Control: the full mixture refitted the same way (stage-one trunks from the cache,
   stage two warm-started from its own posterior medians, ``--loo-steps`` steps). The
   log score lost is the mean daily difference control minus without-``m`` (positive:
   ``m`` helps), with a Newey-West standard error, so that a shorter warm-started stage
   two is on both sides of the comparison; the difference full minus without-``m`` is
   reported as well.

Writes ``expert_selection.json``, ``expert_selection.md`` and ``expert_selection.png``
into ``--out`` (atomically). Each finished backtest's per-day scores are kept in
``--out/runs/<name>.csv`` next to the protocol they were run under; a run that is
stopped and started again with the same options skips what is done (``--fresh``
starts over).

    python benchmarks/expert_selection.py --experts all --jobs 2
    python benchmarks/expert_selection.py --experts ar,var,tcn --validation  # 2011-2014
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _options import add_mixture_options  # noqa: E402  (benchmarks/ is on sys.path)
from _parallel import run_tasks  # noqa: E402
from p1_sp500 import TEST, VALIDATION, expert_names, load_frame  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import bayes_moe as bm  # noqa: E402
from bayes_moe.evaluation.backtest import backtest  # noqa: E402
from bayes_moe.evaluation.calibration import comparisons  # noqa: E402
from bayes_moe.evaluation.moe_forecaster import MoEForecaster  # noqa: E402
from bayes_moe.evaluation.scoring import summarize  # noqa: E402
from bayes_moe.inference.pretrain_cache import PretrainCache  # noqa: E402
from bayes_moe.io import atomic_path, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "expert_selection"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mixture_options(parser)
    parser.set_defaults(experts="all")
    parser.add_argument("--validation", action="store_true", help="test on 2011-2014 instead")
    parser.add_argument("--refit-every", type=int, default=250)
    parser.add_argument(
        "--loo-steps", type=int, default=400, help="SVI steps of each warm-started refit"
    )
    parser.add_argument("--leave-out", default=None, help="comma list (default: every expert)")
    parser.add_argument("--jobs", type=int, default=1, help="left-out experts run at once")
    parser.add_argument("--pretrain-cache", default=None, help="stage-one folder to reuse")
    parser.add_argument("--out", default=None, help=f"default {RESULTS}")
    parser.add_argument("--fresh", action="store_true", help="discard finished runs in --out")
    return parser.parse_args(argv)


class SavedRun:
    """The per-day score table of a finished backtest, as kept in ``runs/<name>.csv``.

    ``horizon``: of the forecasts (one-step in this benchmark), read by the paired
    comparisons for their Newey-West lag.
    """

    def __init__(self, table, horizon: int = 1):
        self.table = table
        self.horizon = horizon

    def summary(self) -> dict:
        return summarize(self.table)


class RunStore:
    """Finished backtests of one protocol in ``folder``; another protocol is refused.

    ``protocol.json`` records the options the runs were made under; each run's score
    table is written atomically, so a stopped job resumes at the first missing run.
    """

    def __init__(self, folder: Path, protocol: dict, *, fresh: bool = False):
        self.folder = Path(folder)
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "protocol.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved != protocol:
                changed = sorted(k for k in protocol if saved.get(k) != protocol[k])
                raise SystemExit(
                    f"{self.folder} holds runs of another protocol (differs in {changed}); "
                    "pass --fresh to discard them or --out to use another folder"
                )
        else:
            write_json(protocol, path)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.csv"

    def load(self, name: str) -> SavedRun | None:
        path = self._path(name)
        if not path.exists():
            return None
        return SavedRun(pd.read_csv(path, index_col=0, parse_dates=True))

    def save(self, name: str, result) -> SavedRun:
        with atomic_path(self._path(name)) as tmp:
            result.table.to_csv(tmp)
        return SavedRun(result.table)


def fit_file(folder: Path, train_end) -> Path:
    """Where the full mixture's posterior medians of one refit are kept."""
    return Path(folder) / f"{train_end.date()}.safetensors"


def expert_weights(fit) -> np.ndarray:
    """Per draw, each expert's gate weight in each regime averaged over days: ``(S, K, M)``.

    The weight :math:`g_{t,k,m}` within regime ``k`` (rows sum to one over experts),
    regimes labelled by volatility level, regime 0 the calmest.
    """
    return fit.posterior.regime_expert_weights.numpy()


def without_expert(values: dict, labels: list[str], left_out: str) -> dict:
    """Posterior medians of the full mixture as initial values of the mixture without one.

    Drops ``left_out``'s sites, its column of ``gate/bias`` ``(K, M)`` and its row of
    ``gate/coef`` ``(M, V)``.
    """
    m = labels.index(left_out)
    keep = [i for i in range(len(labels)) if i != m]
    out = {}
    for name, value in values.items():
        if name.startswith(f"{left_out}/"):
            continue
        if name == "gate/bias":
            value = value[:, keep]
        elif name == "gate/coef":
            value = value[keep]
        out[name] = value
    return out


class SavingForecaster(MoEForecaster):
    """The full mixture; saves each refit's posterior medians and expert weights."""

    def __init__(self, model, *, folder: Path, **options):
        super().__init__(model, name="full", **options)
        self.folder = Path(folder)

    def __call__(self, train):
        predict = super().__call__(train)
        fit = predict.fit
        medians = {k: v.median(0).values.contiguous() for k, v in fit.draws.items()}
        medians["__weights__"] = torch.from_numpy(expert_weights(fit))
        path = fit_file(self.folder, train.index[-1])
        with atomic_path(path) as tmp:
            save_file(medians, str(tmp), metadata={"labels": ",".join(fit.program.labels)})
        return predict


CONTROL = "control"


def run_name(left_out: str | None) -> str:
    """``without_<expert>``, or :data:`CONTROL` for the full mixture refitted warm."""
    return CONTROL if left_out is None else f"without_{left_out}"


class WarmForecaster(MoEForecaster):
    """A mixture warm-started from the full fit of the same refit.

    Without one expert (``left_out``), or the full mixture itself (``left_out=None``,
    the control).
    """

    def __init__(self, model, *, folder: Path, labels: list[str], left_out: str | None, **options):
        super().__init__(model, name=run_name(left_out), **options)
        self.folder, self.labels, self.left_out = Path(folder), labels, left_out

    def __call__(self, train):
        values = load_file(str(fit_file(self.folder, train.index[-1])))
        values.pop("__weights__")
        init = values
        if self.left_out is not None:
            init = without_expert(values, self.labels, self.left_out)
        return self.replace(init_values=init)(train)


def _protocol(args):
    test_start, test_end = VALIDATION if args.validation else TEST
    return test_start, test_end


def run_full(args, folder: Path, cache_dir: str):
    """Phase 1: the full mixture through the backtest."""
    test_start, test_end = _protocol(args)
    frame, covariates = load_frame()
    experts = expert_names(args.experts)
    model = bm.BayesianMoE(experts=experts, n_regimes=args.regimes, window=args.window)
    forecaster = SavingForecaster(
        model,
        folder=folder,
        covariates=covariates,
        num_steps=args.num_steps,
        num_draws=args.num_draws,
        seed=args.seed,
        pretrain_cache=PretrainCache(cache_dir),
    )
    return backtest(
        frame.loc[:test_end],
        forecaster,
        test_start=test_start,
        test_end=test_end,
        refit_every=args.refit_every,
        name="full",
    )


def run_without(left_out: str | None, args, folder: str, cache_dir: str, threads: int = 1):
    """Phase 2, one expert (``None``: the control): ``(left_out, result or None, error or
    None)``; runs in a worker process, or in the main one for the control."""
    torch.set_num_threads(threads)
    test_start, test_end = _protocol(args)
    frame, covariates = load_frame()
    labels = expert_names(args.experts)
    rest = [e for e in labels if e != left_out]
    model = bm.BayesianMoE(experts=rest, n_regimes=args.regimes, window=args.window)
    forecaster = WarmForecaster(
        model,
        folder=Path(folder),
        labels=labels,
        left_out=left_out,
        covariates=covariates,
        num_steps=args.loo_steps,
        num_draws=args.num_draws,
        seed=args.seed,
        pretrain_cache=PretrainCache(cache_dir),
    )
    try:
        result = backtest(
            frame.loc[:test_end],
            forecaster,
            test_start=test_start,
            test_end=test_end,
            refit_every=args.refit_every,
            name=run_name(left_out),
            progress=args.jobs == 1 or left_out is None,
        )
    except Exception as err:  # reported; the other experts go on
        return left_out, None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    return left_out, result, None


def weight_table(folder: Path, labels: list[str]) -> dict:
    """Posterior mean and 94% interval of each expert's weight per regime, first refit."""
    first = sorted(Path(folder).glob("*.safetensors"))[0]
    weights = load_file(str(first))["__weights__"].numpy()  # (S, K, M)
    mean = weights.mean(0)
    lo, hi = np.quantile(weights, [0.03, 0.97], axis=0)
    return {
        "refit": first.stem,
        "experts": {
            label: {
                f"regime_{k}": {
                    "mean": float(mean[k, m]),
                    "hdi_3%": float(lo[k, m]),
                    "hdi_97%": float(hi[k, m]),
                }
                for k in range(weights.shape[1])
            }
            for m, label in enumerate(labels)
        },
    }


def markdown(doc: dict) -> str:
    """The report: one row per expert, weights per regime and the log score lost."""
    K = len(next(iter(doc["weights"]["experts"].values())))
    head = "| expert | " + " | ".join(f"weight in regime {k} (94% interval)" for k in range(K))
    reference = doc.get("reference", "full")
    head += f" | log score lost when left out, vs {reference} (NW se) | t | vs full (t) |"
    lines = [
        f"# Expert selection, {doc['protocol']['name']}",
        "",
        f"Full mixture: log score {doc['full']['log_score']:.4f}, CRPS "
        f"{doc['full']['crps']:.4f}, 90% coverage {doc['full']['coverage_90']:.3f}. Weights "
        f"from the refit on data up to {doc['weights']['refit']}, averaged over its "
        "training days; regime 0 is the calmest.",
        "",
        control_line(doc),
        "",
        head,
        "|---" * (K + 4) + "|",
    ]
    rows = []
    for label, regimes in doc["weights"]["experts"].items():
        cells = [
            f"{w['mean']:.3f} ({w['hdi_3%']:.3f}-{w['hdi_97%']:.3f})" for w in regimes.values()
        ]
        loo = doc["left_out"].get(label)
        missing = "failed" if label in doc["failures"] else "not run"
        lost = missing if loo is None else f"{loo['mean_diff']:+.4f} ({loo['nw_se']:.4f})"
        t = "" if loo is None else f"{loo['t_stat']:+.2f}"
        full = loo and loo.get("vs_full")
        vs_full = "" if not full else f"{full['mean_diff']:+.4f} ({full['t_stat']:+.2f})"
        row = f"| {label} | " + " | ".join(cells) + f" | {lost} | {t} | {vs_full} |"
        rows.append((loo["mean_diff"] if loo else -np.inf, row))
    lines += [row for _, row in sorted(rows, key=lambda r: -r[0])]
    lines += ["", f"Wall time {doc['elapsed_min']:.1f} min, {doc['jobs']} job(s)."]
    return "\n".join(lines) + "\n"


def control_line(doc: dict) -> str:
    """What the log score lost is measured against."""
    control = doc.get("control")
    if control is None:
        return (
            "Reference: the full mixture (the control run is missing), so the loss mixes "
            "leaving the expert out with a shorter, warm-started refit."
        )
    return (
        f"Reference: the control, the full mixture refitted the way each left-out mixture "
        f"is (warm start from the full fit's medians, {doc['protocol']['loo_steps']} "
        f"steps): log score {control['log_score']:.4f}, CRPS {control['crps']:.4f}, 90% "
        f"coverage {control['coverage_90']:.3f}."
    )


def plot(doc: dict, path: Path) -> None:
    """Weights per regime (points with 94% intervals) and the log score lost (bars, 2 se)."""
    labels = list(doc["weights"]["experts"])
    K = len(next(iter(doc["weights"]["experts"].values())))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.35 * len(labels) + 2), sharey=True)
    y = np.arange(len(labels))
    for k in range(K):
        w = [doc["weights"]["experts"][e][f"regime_{k}"] for e in labels]
        mean = np.array([v["mean"] for v in w])
        err = np.array([[v["mean"] - v["hdi_3%"], v["hdi_97%"] - v["mean"]] for v in w]).T
        offset = 0.2 * (k - (K - 1) / 2)
        left.errorbar(mean, y + offset, xerr=err, fmt="o", ms=3, label=f"regime {k}")
    left.set_xlabel("mixture weight (posterior mean, 94% interval)")
    left.set_yticks(y, labels)
    left.legend(fontsize=8)
    lost = np.array([doc["left_out"].get(e, {}).get("mean_diff", np.nan) for e in labels])
    se = np.array([doc["left_out"].get(e, {}).get("nw_se", np.nan) for e in labels])
    right.barh(y, lost, xerr=2 * se, color=np.where(lost > 0, "tab:blue", "tab:red"))
    right.axvline(0, color="k", lw=0.8)
    reference = doc.get("reference", "full")
    right.set_xlabel(f"log score lost when left out, vs {reference} (nats/day, bars: 2 NW se)")
    fig.suptitle(f"Expert selection, {doc['protocol']['name']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def protocol(args, labels: list[str]) -> dict:
    """The options every run of one report shares."""
    return {
        "name": "P1-validation" if args.validation else "P1",
        "test": [str(d) for d in _protocol(args)],
        "refit_every": args.refit_every,
        "experts": labels,
        "n_regimes": args.regimes,
        "window": args.window,
        "num_steps": args.num_steps,
        "loo_steps": args.loo_steps,
        "num_draws": args.num_draws,
        "seed": args.seed,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    labels = expert_names(args.experts)  # unknown names fail here
    leave_out = labels if args.leave_out is None else args.leave_out.split(",")
    leave_out = [e.strip() for e in leave_out if e.strip()]
    unknown = sorted(set(leave_out) - set(labels))
    if unknown:
        raise SystemExit(f"--leave-out names experts not in the mixture: {unknown}")
    out = Path(args.out or (str(RESULTS) + ("_validation" if args.validation else "")))
    out.mkdir(parents=True, exist_ok=True)
    folder = out / "fits"
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    store = RunStore(out / "runs", protocol(args, labels), fresh=args.fresh)
    with tempfile.TemporaryDirectory(prefix="selection-pretrain-") as tmp_cache:
        cache_dir = args.pretrain_cache or tmp_cache
        full = store.load("full")
        if full is None:
            print("full mixture ...", flush=True)
            full = store.save("full", run_full(args, folder, cache_dir))
        control, control_error = store.load(CONTROL), None
        if control is None:
            print("control: the full mixture refitted warm ...", flush=True)
            threads = torch.get_num_threads()
            _, result, control_error = run_without(None, args, str(folder), cache_dir, threads)
            if result is not None:
                control = store.save(CONTROL, result)
        todo = [m for m in leave_out if store.load(run_name(m)) is None]
        print(f"left out: {len(leave_out) - len(todo)} done, {len(todo)} to run", flush=True)
        tasks = [(m, args, str(folder), cache_dir) for m in todo]
        results, failures = run_tasks(
            run_without, tasks, jobs=args.jobs, desc="left out", on_result=_saver(store)
        )
    if control_error is not None:
        failures[CONTROL] = control_error
    runs = {m: store.load(run_name(m)) for m in leave_out}
    runs = {m: r for m, r in runs.items() if r is not None}
    doc = {
        "protocol": protocol(args, labels),
        "full": full.summary(),
        "control": None if control is None else control.summary(),
        "reference": "full" if control is None else CONTROL,
        "weights": weight_table(folder, labels),
        "left_out": left_out_table(full, control, runs),
        "failures": {m: e.splitlines()[0] for m, e in failures.items()},
        "jobs": args.jobs,
        "elapsed_min": (time.perf_counter() - start) / 60,
    }
    write_json(doc, out / "expert_selection.json")
    with atomic_path(out / "expert_selection.md") as tmp:
        tmp.write_text(markdown(doc))
    plot(doc, out / "expert_selection.png")
    print(markdown(doc))
    return 0 if not failures else 1


def left_out_table(full: SavedRun, control: SavedRun | None, runs: dict) -> dict:
    """Per left-out expert: the paired comparison with the reference and with ``full``.

    The reference is the control when it ran (``mean_diff``, ``nw_se``, ``t_stat`` of
    control minus without-``m``), otherwise the full mixture; ``vs_full`` always holds
    full minus without-``m``.
    """
    named = {run_name(m): r for m, r in runs.items()}
    vs_full = comparisons({"full": full, **named}, "full")
    reference = vs_full if control is None else comparisons({CONTROL: control, **named}, CONTROL)
    return {
        m: {
            **reference[run_name(m)],
            "log_score": r.summary()["log_score"],
            "vs_full": vs_full[run_name(m)],
        }
        for m, r in runs.items()
    }


def _saver(store: RunStore):
    """Keep each left-out run's scores as soon as it finishes."""

    def save(left_out: str, result) -> None:
        store.save(run_name(left_out), result)

    return save


if __name__ == "__main__":
    raise SystemExit(main())
