"""The ``bayes-moe`` command: demo, fit, forecast, regimes.

Examples
--------
::

    bayes-moe demo --out report
    bayes-moe fit --dataset sp500 --out runs/sp500
    bayes-moe fit --data prices.csv --date-col Date --price-col Close --out runs/mine
    bayes-moe fit --data prices.csv --price-col Close --columns ret_ndx --out runs/mine
    bayes-moe fit --data prices.csv --price-col Close --drop-columns Volume --out runs/mine
    bayes-moe fit --dataset sp500 --with-macro --experts ar,var,kalman,macro --out runs/macro
    bayes-moe forecast --model runs/sp500/fit.safetensors
    bayes-moe regimes --model runs/sp500/fit.safetensors --out runs/sp500/regimes
    bayes-moe backtest --dataset sp500 --test-start 2015-01-02 --refit-every 250 --out bt
    bayes-moe fit --dataset sp500 --horizon 1,5,20 --out runs/horizons
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pandas as pd

from bayes_moe import data as bm_data
from bayes_moe.data.errors import DataError
from bayes_moe.inference.checkpoint import PANEL_FORMAT, CheckpointError, checkpoint_kind, load_fit
from bayes_moe.inference.divergence import NonFiniteLossError
from bayes_moe.inference.multi_horizon import check_horizons
from bayes_moe.inference.panel_checkpoint import load_panel_fit
from bayes_moe.inference.posterior import DEFAULT_KEEP_DRAWS
from bayes_moe.io import atomic_path, check_output_folder, write_csv, write_json
from bayes_moe.models.energy import EnergyGate
from bayes_moe.models.gate import MarkovGate
from bayes_moe.models.moe import BayesianMoE

DATASETS = bm_data.DATASETS


def _add_data_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("data (an embedded dataset or your own CSV/Parquet file)")
    source = group.add_mutually_exclusive_group(required=required)
    source.add_argument("--dataset", choices=sorted(DATASETS), help="embedded real data")
    source.add_argument("--data", type=Path, help="CSV or Parquet file with a date column")
    group.add_argument("--date-col", default="date", help="date column of --data")
    group.add_argument("--price-col", help="price column: percent log returns become 'ret'")
    group.add_argument("--return-col", help="column that already holds returns")
    for col in ("open", "high", "low", "close"):
        group.add_argument(f"--{col}-col", help=f"{col} prices for range-volatility features")
    group.add_argument(
        "--with-macro",
        action="store_true",
        help="add the macro expert's inputs (core CPI year on year, Baa-Aaa spread, WTI "
        "returns; bayes_moe.data.add_macro_features), each as known after its publication lag",
    )
    group.add_argument(
        "--allow-outliers",
        action="store_true",
        help="accept target values more than 100 robust standard deviations from the "
        "median (refused by default as likely data errors)",
    )


def _add_column_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "columns (the model reads only the columns its experts read; these narrow the offer)"
    )
    group.add_argument(
        "--columns",
        help="comma list: the only columns offered to the model besides the target "
        "(names as loaded: ret, open, high, low, close and the file's other columns)",
    )
    group.add_argument(
        "--drop-columns", help="comma list: columns removed from the data before anything else"
    )


def _column_list(text: str | None) -> list[str] | None:
    """A comma list of column names (None when the flag is absent)."""
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def _choose_columns(args, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str] | None]:
    """Apply ``--drop-columns`` to the frame; return it and the ``--columns`` offer (or None).

    DataError names unknown columns (with the available ones) and a dropped target.
    """
    drop = _column_list(args.drop_columns) or []
    _require_known(drop, frame, "--drop-columns")
    if args.target in drop:
        raise DataError(f"--drop-columns removes the target column {args.target!r}")
    frame = frame.drop(columns=drop)
    offer = _column_list(args.columns)
    if offer is None:
        return frame, None
    _require_known(offer, frame, "--columns")
    return frame, [c for c in frame.columns if c in offer and c != args.target]


def _require_known(names: list[str], frame: pd.DataFrame, flag: str) -> None:
    unknown = [name for name in names if name not in frame.columns]
    if unknown:
        raise DataError(
            f"{flag}: unknown column(s) {unknown}; the data has columns "
            f"{[str(c) for c in frame.columns]}"
        )


def _load_frame(args) -> pd.DataFrame | None:
    """The ``--dataset`` or ``--data`` frame (None for neither), with ``--with-macro``."""
    frame = _read_source(args)
    if frame is not None and getattr(args, "with_macro", False):
        frame = bm_data.add_macro_features(frame)
    return frame


def _read_source(args) -> pd.DataFrame | None:
    if getattr(args, "dataset", None):
        return DATASETS[args.dataset]()
    if getattr(args, "data", None) is not None:
        return bm_data.read_frame(
            args.data,
            date_col=args.date_col,
            price_col=args.price_col,
            return_col=args.return_col,
            open_col=args.open_col,
            high_col=args.high_col,
            low_col=args.low_col,
            close_col=args.close_col,
        )
    return None


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and fitting")
    group.add_argument("--target", default="ret", help="column to forecast (default: ret)")
    group.add_argument(
        "--experts", default="ar,var,kalman", help="comma-separated expert names, or all"
    )
    group.add_argument("--regimes", type=int, default=3, help="number of regimes K")
    group.add_argument(
        "--transition-features",
        metavar="NAMES",
        help="comma list of what drives the regime switches (an input-output HMM): "
        "volatility summaries (log_rv_1, log_rv_5, log_rv_22, log_rv_252, log_ewma_var, "
        "ret_1, ret_5) and columns of the data (credit_spread with --with-macro, vix with "
        "--with-vix; read as their training mean on days without a value); 'none' for a "
        "time-homogeneous chain (default: log_rv_5,log_rv_22,log_ewma_var)",
    )
    group.add_argument(
        "--energy-gate",
        action="store_true",
        help="tilt the gate's weights by the energy (predictive plus regime entropy) and "
        "each expert's capacity class, beta and tau fitted by SVI; needs experts of two "
        "classes (e.g. --experts ar,tcn,nystromformer)",
    )
    group.add_argument(
        "--sparse",
        type=float,
        metavar="THRESHOLD",
        help="with --energy-gate: sparse inference, heavier experts are not evaluated on "
        "days where their tilted weight is below THRESHOLD (e.g. 0.05); fitting stays dense",
    )
    group.add_argument(
        "--energy",
        action="store_true",
        help="write energy.csv and energy.png (energy vs |returns| and VIX) even without "
        "--energy-gate (one more pass over the draws)",
    )
    group.add_argument("--window", type=int, default=64, help="context window L (days)")
    group.add_argument(
        "--horizon",
        type=_horizons,
        default=(1,),
        metavar="H",
        help="forecast horizon h (days), or several as a comma list (1,5,20): one fit per "
        "horizon, the report of each in OUT/h<h>/ and a table of all in OUT/",
    )
    group.add_argument("--num-steps", type=int, default=1500, help="maximum SVI steps")
    group.add_argument("--num-draws", type=int, default=200, help="posterior draws kept")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--strategy",
        choices=["two_stage", "joint"],
        default="two_stage",
        help="training of neural experts: trunks pretrained alone, then frozen (two_stage), "
        "or trained jointly at every step (joint)",
    )
    group.add_argument(
        "--device",
        default="cpu",
        help="where the optimisation runs: cpu, cuda, cuda:1 (the fit is evaluated on the CPU)",
    )
    group.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="precision of the optimisation (the draws come back in float64)",
    )


def _horizons(text: str) -> tuple[int, ...]:
    """``--horizon``: one positive integer or a comma list of distinct ones, ascending."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
        return check_horizons(values)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of days or a comma list of them (1,5,20), got {text!r}"
            f" ({error})"
        ) from error


def _one_horizon(args, what: str) -> int:
    """The horizon of a command that takes one (ValueError naming ``what`` otherwise)."""
    if len(args.horizon) > 1:
        raise ValueError(f"{what} takes one --horizon, got {','.join(map(str, args.horizon))}")
    return args.horizon[0]


def _fit_settings(args) -> dict:
    """The SVI options the model arguments give (fields of :class:`SVIOptions`)."""
    return {
        "num_steps": args.num_steps,
        "num_draws": args.num_draws,
        "seed": args.seed,
        "strategy": args.strategy,
        "device": args.device,
        "dtype": args.dtype,
    }


def _build_model(args) -> BayesianMoE:
    """The mixture the model arguments describe (experts, regimes, window, gate)."""
    names = args.transition_features
    gate = None
    if names is not None:
        chosen = () if names.strip() == "none" else _column_list(names)
        gate = MarkovGate(args.regimes, transition_features=chosen)
    energy_gate = None
    if args.sparse is not None and not args.energy_gate:
        raise ValueError("--sparse needs --energy-gate (the tilted weights decide what runs)")
    if args.energy_gate:
        energy_gate = EnergyGate(sparse=args.sparse)
    return BayesianMoE(
        experts=args.experts,
        n_regimes=args.regimes,
        window=args.window,
        gate=gate,
        energy_gate=energy_gate,
        asset_levels=getattr(args, "asset_levels", False),
    )


def _keep_draws(text: str) -> int | None:
    """``--keep-draws``: a positive integer, or ``all`` (None)."""
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return int(text)


def _add_keep_draws_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-draws",
        type=_keep_draws,
        default=DEFAULT_KEEP_DRAWS,
        metavar="N",
        help="posterior draws whose per-day values (regime probabilities, Viterbi paths, "
        "predictive samples, log-likelihood) are written to the NetCDF file; summaries use "
        f"every draw (default: {DEFAULT_KEEP_DRAWS}; 'all' keeps every draw)",
    )


def _unit(horizon: int) -> str:
    return "%/day" if horizon == 1 else f"% per {horizon} days"


def _print_summary(metrics: dict, elapsed: float, out: Path) -> None:
    from bayes_moe.report import format_regime_summary

    now, fc = metrics["regime_now"], metrics["forecast"]
    table = pd.DataFrame(metrics["regimes"]).set_index("regime")
    print("regimes (posterior mean [94% interval]):")
    print(format_regime_summary(table, unit=_unit(fc["horizon"])))
    quantiles = ", ".join(f"q{q}={v:+.3f}" for q, v in fc["quantiles"].items())
    ins = metrics["in_sample"]
    print(
        f"regime on {now['date']}, the forecast origin: {now['regime']} of "
        f"{len(metrics['expected_duration_days'])} (filtered probability "
        f"{now['filtered_probability']:.3f} +/- {now['filtered_probability_sd']:.3f}; "
        f"regime volatility {now['volatility']:.2f})\n"
        f"regime {now['regime']} on the next trading day after {now['date']}: predicted "
        f"probability {now['next_day_probability']:.3f} +/- {now['next_day_probability_sd']:.3f}"
        "\n"
        f"forecast from {fc['origin_date']} for h={fc['horizon']}: mean {fc['mean']:+.4f}, "
        f"sd {fc['std']:.4f}; {quantiles}\n"
        f"in-sample one-step: log score {ins['mean_log_score']:.4f} nats/day, "
        f"90% coverage {ins['coverage_90']:.3f}, elpd_loo {ins['elpd_loo']:.1f}\n"
        f"SVI: {metrics['fit']['num_steps']} steps, "
        f"{metrics['fit']['step_time_s'] * 1e3:.1f} ms/step; "
        f"elapsed {elapsed:.1f} s\n"
        f"report written to {out}/"
    )


def _fit_and_report(
    args, frame: pd.DataFrame, out: Path, price=None, covariates=None, vix=None
) -> dict:
    """Fit at each ``--horizon`` and write the report (several: one per horizon and a table).

    Returns the metrics of the report (several horizons: :func:`write_horizons_report`'s
    dictionary).
    """
    from bayes_moe.horizon_report import horizon_folder, write_horizons_report
    from bayes_moe.inference.multi_horizon import fit_horizons, horizon_options
    from bayes_moe.inference.svi import SVIOptions, fit_svi
    from bayes_moe.report import write_report

    start = time.perf_counter()
    model = _build_model(args)
    several = len(args.horizon) > 1
    if getattr(args, "workers", None) is not None or getattr(args, "scheduler", None):
        if not several:
            raise ValueError("--workers and --scheduler fit several --horizon values at once")
        _check_dask_arguments(args)
    # validates the columns the experts read and their values at every horizon, before fitting
    prepared = {
        h: model.prepare(
            frame,
            args.target,
            covariates=covariates,
            horizon=h,
            allow_outliers=getattr(args, "allow_outliers", False),  # demo: embedded data
        )
        for h in args.horizon
    }
    check_output_folder(out)  # before fitting: the report replaces it whole at the end
    data = prepared[args.horizon[0]]
    print(
        f"fitting {model.labels} with {model.n_regimes} regimes on {data.n_observed} days "
        f"({data.dates[0].date()} .. {data.dates[-1].date()}), reading columns "
        f"{list(data.inputs.columns)}" + (f", horizons {list(args.horizon)}" if several else ""),
        flush=True,
    )
    settings = SVIOptions.merge(
        None,
        {
            **_fit_settings(args),
            "checkpoint": svi_state_path(out) if hasattr(args, "checkpoint_every") else None,
            "checkpoint_every": getattr(args, "checkpoint_every", 100),
            "resume": getattr(args, "resume", False),
        },
    )
    # several horizons: OUT.svi.h<h>.safetensors, the path svi_state_path(out, h) gives
    states = {h: horizon_options(settings, h) if several else settings for h in prepared}
    for each in states.values():
        if each.resume and each.checkpoint is not None and Path(each.checkpoint).exists():
            print(f"resuming from {each.checkpoint}", flush=True)
    if several:
        with _dask_client(args) as client:
            fits = fit_horizons(model, prepared, settings, client=client).fits
    else:
        fits = {h: fit_svi(model, data, settings) for h, data in prepared.items()}
    print("evaluating the posterior and writing the report ...", flush=True)
    options = {
        "price": price,
        "started": start,
        "keep_draws": args.keep_draws,
        "energy": args.energy or args.energy_gate,
        "vix": vix,
    }
    if several:
        doc = write_horizons_report(fits, out, **options)
        reports = {h: (metrics, out / horizon_folder(h)) for h, metrics in doc["horizons"].items()}
    else:
        metrics = doc = write_report(fits[args.horizon[0]], out, **options)
        reports = {args.horizon[0]: (metrics, out)}
    for each in states.values():
        if each.checkpoint is not None:  # the report's fit.safetensors has it all now
            Path(each.checkpoint).unlink(missing_ok=True)
    for metrics, folder in reports.values():
        _print_summary(metrics, metrics["elapsed_s"], folder)
    if several:
        table = doc["forecasts"][["origin_date", "mean", "std", "q0.05", "q0.95"]]
        print(f"forecasts of the h-day return (%), one fit per horizon:\n{table.to_string()}")
        print(f"report written to {out}/")
    return doc


def svi_state_path(out: Path, horizon: int | None = None) -> Path:
    """Where ``bayes-moe fit --out OUT`` keeps its SVI state: ``OUT.svi.safetensors``.

    Beside the report folder, not in it: the report folder is replaced whole when the
    report is written (:func:`~bayes_moe.io.atomic_folder`), and a killed fit must
    leave the previous report as it was. With several horizons, one file per horizon:
    ``OUT.svi.h<h>.safetensors``.
    """
    out = Path(os.path.abspath(out))
    tag = "" if horizon is None else f".h{horizon}"
    return out.with_name(f"{out.name}.svi{tag}.safetensors")


def cmd_demo(args) -> int:
    """Fit the default mixture on the embedded S&P 500 data and write a report.

    The demo's report always has the energy plot (energy against |returns| and VIX).
    """
    args.energy = True
    frame = bm_data.load_sp500()
    price = frame["adj_close"].rename("S&P 500 (adjusted close)")
    _fit_and_report(args, frame, Path(args.out), price=price, vix=bm_data.load_vix()["vix"])
    return 0


def cmd_fit(args) -> int:
    """Fit on a dataset or a user file and write a report with the checkpoint."""
    if args.panel or args.asset_col is not None:
        return _fit_panel(args)
    frame = cast(pd.DataFrame, _load_frame(args))  # fit requires --dataset or --data
    price = vix = None
    if args.dataset == "sp500":
        price = frame["adj_close"].rename("S&P 500 (adjusted close)")
        vix = bm_data.load_vix()["vix"]  # for the energy plot (2014-2018 only)
    elif args.price_col and args.price_col in frame.columns:
        price = frame[args.price_col]
    frame, covariates = _choose_columns(args, frame)
    _fit_and_report(args, frame, Path(args.out), price=price, covariates=covariates, vix=vix)
    return 0


def _fit_panel(args) -> int:
    """``fit --panel`` / ``--asset-col``: a panel of assets, one shared market regime."""
    from bayes_moe.panel_report import write_panel_report

    if args.data is None:
        raise DataError("a panel fit reads --data FILE (a wide or, with --asset-col, long panel)")
    start = time.perf_counter()
    wide = bm_data.read_panel(
        args.data, asset_col=args.asset_col, value_col=args.value_col, date_col=args.date_col
    )
    model = _build_model(args)
    if args.workers is not None or args.scheduler is not None:
        raise ValueError("--workers and --scheduler fit several --horizon values at once")
    # every check, before fitting
    data = model.prepare_panel(wide, horizon=_one_horizon(args, "a panel fit"))
    out = Path(args.out)
    check_output_folder(out)
    print(
        f"fitting {model.labels} with {model.n_regimes} market regimes on {len(data.assets)} "
        f"assets, {data.n_observed} days ({data.dates[0].date()} .. {data.dates[-1].date()}), "
        f"{int(data.scored.sum())} scored asset-days",
        flush=True,
    )
    from bayes_moe.inference.panel_fit import fit_panel

    fit = fit_panel(model, data, **_fit_settings(args))
    print("evaluating the posterior and writing the report ...", flush=True)
    metrics = write_panel_report(fit, out, started=start, keep_draws=args.keep_draws)
    table = pd.DataFrame(metrics["forecast"]).set_index("asset")
    print(table[["mean", "std", "q0.05", "q0.95"]].round(4).to_string())
    now = metrics["regime_now"]
    print(
        f"market regime on {now['date']}: {now['regime']} (filtered probability "
        f"{now['filtered_probability']:.3f}); elapsed {metrics['elapsed_s']:.1f} s\n"
        f"report written to {out}/"
    )
    return 0


def _fit_from_checkpoint(args, *, panel: bool = True):
    """The fit in ``--model``, conditioned on ``--data`` when given.

    A panel fit's checkpoint is read too (``panel``): ``--data`` is then a wide panel of
    the same assets, whose days after the fit's are filtered with the fitted draws.
    """
    if checkpoint_kind(args.model) == PANEL_FORMAT:
        if not panel:
            raise ValueError(
                f"{args.model} is a panel fit: its regimes are in its report "
                "(regimes_*.csv, regimes.png) and in Python, bm.load_panel_fit(path).regimes()"
            )
        panel_fit = load_panel_fit(args.model)
        if args.data is None:
            return panel_fit
        return panel_fit.apply(bm_data.read_panel(args.data, date_col=args.date_col))
    fit = load_fit(args.model)
    frame = _load_frame(args)
    if frame is None:
        return fit
    return fit.update(frame, allow_outliers=args.allow_outliers)


def cmd_forecast(args) -> int:
    """Forecast from a checkpoint (optionally conditioned on newer data); a panel's too."""
    fit = _fit_from_checkpoint(args)
    forecast = fit.forecast(num_samples=args.num_samples, seed=args.seed)
    table = forecast.to_frame(qs=tuple(args.quantiles))
    print(table.to_string())
    if args.out is not None:
        out = Path(args.out)
        if out.suffix == ".csv":
            write_csv(table, out)
        else:
            write_json(table.reset_index().to_dict(orient="records"), out)
        print(f"written to {out}")
    return 0


def cmd_regimes(args) -> int:
    """Regime posteriors from a checkpoint: CSV tables, a plot and NetCDF."""
    from bayes_moe import plotting
    from bayes_moe.inference.arviz import compact_dataset
    from bayes_moe.report import format_regime_summary, write_regime_tables

    fit = _fit_from_checkpoint(args, panel=False)
    regimes = fit.regimes(args.keep_draws)
    out = Path(args.out)
    write_regime_tables(regimes, out)
    write_csv(regimes.transition, out / "transition.csv")
    write_csv(regimes.expert_weights, out / "expert_weights.csv")
    dataset = compact_dataset(regimes.to_dataset())  # float32, int8 Viterbi paths
    with atomic_path(out / "regimes.nc") as tmp:
        dataset.to_netcdf(
            str(tmp), engine="h5netcdf", encoding={v: {"zlib": True} for v in dataset.data_vars}
        )
    with atomic_path(out / "regimes.png") as tmp:
        plotting.plot_regimes(fit, regimes, tmp)
    current = regimes.current()
    print("regimes (posterior mean [94% interval]):")
    print(format_regime_summary(regimes.summary(), unit=_unit(fit.horizon)))
    print("transition matrix (posterior mean, row: from):")
    print(regimes.transition.round(4).to_string())
    print(
        f"regime on {current['date'].date()}: {current['regime']} "
        f"(filtered probability {current['probability']:.3f} +/- {current['probability_sd']:.3f})"
    )
    print(f"written to {out}/")
    return 0


def cmd_backtest(args) -> int:
    """Rolling-origin backtest of the mixture and the baselines; calibration report.

    Before any fit: the data, each requested baseline's inputs, the test period, the
    first training sample and the output folder are checked (exit status 2 with the
    problem named). During the backtest a refit or a model that raises is recorded and
    the others go on; the report lists the failures, and the exit status is then 1.
    With ``--workers N`` or ``--scheduler ADDRESS`` the refit blocks run as Dask tasks
    (one torch thread each); the results equal the serial run's. With several
    ``--horizon`` values, every horizon is checked first, then backtested in turn (the
    mixture refitted for each), and the report has one study per horizon in
    ``OUT/h<h>/`` and the scores of all of them in ``OUT/report.md``.
    """
    from bayes_moe.evaluation.baselines import BASELINES
    from bayes_moe.evaluation.moe_forecaster import MoEForecaster
    from bayes_moe.horizon_report import write_horizons_backtest_report
    from bayes_moe.report import write_backtest_report

    _check_dask_arguments(args)
    frame = _load_frame(args)
    if args.dataset == "sp500" and args.with_vix:
        frame = bm_data.add_vix(frame)
    frame, covariates = _choose_columns(args, frame)
    names = _baseline_names(args, frame)  # unknown baselines or missing inputs: refused
    model = _build_model(args)
    protocols = {h: _backtest_protocol(args, frame, covariates, model, h) for h in args.horizon}
    out = check_output_folder(Path(args.out))
    results, failed = {}, {}
    with _dask_client(args) as client:
        for h in args.horizon:
            forecasters: dict[str, Callable] = {
                "bayes_moe": MoEForecaster(
                    model,
                    target=args.target,
                    covariates=covariates,
                    **_fit_settings(args),
                    horizon=h,
                    allow_outliers=args.allow_outliers,
                )
            }
            forecasters.update({name: BASELINES[name]() for name in names})
            results[h], failed[h] = _run_backtests(frame, forecasters, args, h, client)
    if len(args.horizon) == 1:
        (h,) = args.horizon
        doc = write_backtest_report(results[h], out, protocol=protocols[h], failures=failed[h])
        tables = {h: doc["models"]}
        n_failed, where = len(doc["failures"]), f"{args.out}/report.md"
    else:
        doc = write_horizons_backtest_report(results, out, protocols=protocols, failures=failed)
        tables = {h: each["models"] for h, each in doc["horizons"].items()}
        n_failed = sum(len(each["failures"]) for each in doc["horizons"].values())
        where = f"the reports in {args.out}/h<h>/"
    for h, models in tables.items():
        if not models:
            continue
        if len(tables) > 1:
            print(f"horizon {h} (log score per {h}-day target):")
        table = pd.DataFrame(models).T[["log_score", "crps", "coverage_90", "n_days"]]
        table["n_days"] = table["n_days"].astype(int)
        print(table.sort_values("log_score", ascending=False).to_string(float_format="%.4f"))
    print(f"report written to {args.out}/")
    if n_failed:
        print(
            f"bayes-moe backtest: {n_failed} part(s) failed; the others are "
            f"reported (see 'Failures' in {where})",
            file=sys.stderr,
        )
        return 1
    return 0


def _backtest_protocol(args, frame: pd.DataFrame, covariates, model, horizon: int) -> dict:
    """Check the backtest at ``horizon`` before any fit; return its protocol record.

    The data and the smallest training sample are prepared as the mixture will see them
    (columns the experts read, values, enough rows), and the test period is checked.
    """
    from bayes_moe.evaluation.backtest import origin_rows

    # validates the columns the experts read (vix, with gaps, is read by har_vix alone)
    data = model.prepare(
        frame,
        args.target,
        covariates=covariates,
        horizon=horizon,
        allow_outliers=args.allow_outliers,
    )
    origins, realized = origin_rows(
        frame, test_start=args.test_start, test_end=args.test_end, horizon=horizon
    )
    first_train = frame.iloc[: origins[0] + 1]  # the smallest training sample
    model.prepare(
        first_train,
        args.target,
        covariates=covariates,
        horizon=horizon,
        allow_outliers=args.allow_outliers,
    )
    return {
        "data": str(args.data) if args.data else args.dataset,
        "target": args.target,
        "test_start": str(frame.index[realized[0]].date()),
        "test_end": str(frame.index[realized[-1]].date()),
        "n_test_days": len(realized),
        "refit_every": args.refit_every,
        "window": "expanding",
        "horizon": horizon,
        "experts": model.labels,
        "columns": list(data.inputs.columns),
        "n_regimes": model.n_regimes,
        "dask": _dask_protocol(args),
    }


def _baseline_names(args, frame: pd.DataFrame) -> list[str]:
    """The baselines ``--baselines`` asks for, each checked against the data's columns."""
    from bayes_moe.evaluation.baselines import applicable_baselines, check_baselines

    if args.baselines == "all":
        return applicable_baselines(frame)
    if args.baselines == "none":
        return []
    names = [b.strip() for b in args.baselines.split(",") if b.strip()]
    check_baselines(names, frame)
    return names


def _add_dask_arguments(parser: argparse.ArgumentParser, work: str) -> None:
    """``--workers N`` (a local Dask cluster) or ``--scheduler ADDRESS``, running ``work``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        help=f"run {work} as Dask tasks on a local cluster of this many single-threaded "
        "worker processes (needs the dask extra)",
    )
    where.add_argument(
        "--scheduler", help=f"run {work} on the Dask cluster whose scheduler is at ADDRESS"
    )


def _check_dask_arguments(args) -> None:
    """``--workers`` is positive, and dask.distributed is there if either flag is given."""
    from bayes_moe.evaluation import fanout

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.workers is not None or args.scheduler is not None:
        try:
            fanout.require_distributed()
        except ImportError as error:  # reported like any other bad request, before work
            raise ValueError(str(error)) from error


@contextlib.contextmanager
def _dask_client(args):
    """The Dask client ``--workers`` / ``--scheduler`` ask for (None: run here)."""
    from bayes_moe.evaluation import fanout

    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is not None:
        print(f"starting a local Dask cluster of {workers} workers ...", flush=True)
        with fanout.local_cluster(workers) as client:
            yield client
    elif scheduler is not None:
        with fanout.connect(scheduler) as client:
            yield client
    else:
        yield None


def _dask_protocol(args) -> dict | None:
    """The Dask set-up of a backtest, for its report (None: serial)."""
    if args.workers is not None:
        return {"cluster": "local", "workers": args.workers, "threads_per_worker": 1}
    if args.scheduler is not None:
        return {"cluster": "scheduler", "address": args.scheduler}
    return None


def _run_backtests(
    frame: pd.DataFrame, forecasters: dict, args, horizon: int, client=None
) -> tuple[dict, list]:
    """Backtest each forecaster at ``horizon`` in turn; a failure is recorded, the others go on.

    Returns the results of the forecasters that produced any forecast and the
    :class:`~bayes_moe.evaluation.backtest.BacktestFailure` records of those that did not
    (failed refits of the others are in their results). Each failure is printed to stderr.
    """
    from bayes_moe.evaluation.backtest import BacktestError, BacktestFailure, backtest

    results, failed = {}, []
    for name, forecaster in forecasters.items():
        print(
            f"backtesting {name}" + (f" at h={horizon}" if horizon > 1 else "") + " ...", flush=True
        )
        try:
            results[name] = backtest(
                frame,
                forecaster,
                test_start=args.test_start,
                test_end=args.test_end,
                refit_every=args.refit_every,
                horizon=horizon,
                target=args.target,
                name=name,
                on_error="record",
                client=client,
            )
            records = results[name].failures
        except BacktestError as err:  # every refit failed
            records = err.failures
            failed += records
        except Exception as err:  # outside the refits: scoring, say
            records = [BacktestFailure.from_exception(name, err)]
            failed += records
        for record in records:
            when = record.refit_date
            where = "" if when is None else f" (refit on data up to {when.date()})"
            message = f"{record.error_type}: {record.message}"
            print(f"bayes-moe backtest: {name} failed{where}: {message}", file=sys.stderr)
    return results, failed


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bayes-moe``."""
    parser = argparse.ArgumentParser(prog="bayes-moe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fit on the embedded S&P 500 data and write a report")
    demo.add_argument("--out", default="report", help="report folder (default: report)")
    _add_model_arguments(demo)
    _add_keep_draws_argument(demo)
    demo.set_defaults(func=cmd_demo)

    fit = sub.add_parser("fit", help="fit on a dataset or your own file and write a report")
    _add_data_arguments(fit, required=True)
    _add_column_arguments(fit)
    _add_model_arguments(fit)
    fit.add_argument("--out", required=True, help="report folder (gets fit.safetensors)")
    panel = fit.add_argument_group("panels (many assets, one market regime path)")
    panel.add_argument(
        "--panel",
        action="store_true",
        help="--data is a wide panel: a date column and one column of returns per asset "
        "(NaN where an asset has no value)",
    )
    panel.add_argument(
        "--asset-col",
        metavar="COLUMN",
        help="--data is a long panel with this asset column (implies --panel)",
    )
    panel.add_argument(
        "--asset-levels",
        action="store_true",
        help="each asset loads on the market regimes' volatility levels with its own "
        "factor (fitted; default: every asset has the market's levels)",
    )
    panel.add_argument(
        "--value-col",
        metavar="COLUMN",
        help="the returns column of a long panel (default: its only other column)",
    )
    _add_keep_draws_argument(fit)
    fit.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        help="SVI steps between saves of the optimisation state, beside --out as "
        "OUT.svi.safetensors (removed once the report is written)",
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed fit from OUT.svi.safetensors (same data and options)",
    )
    _add_dask_arguments(fit, "the fits of several --horizon values at once")
    fit.set_defaults(func=cmd_fit)

    forecast = sub.add_parser("forecast", help="forecast from a fitted checkpoint")
    forecast.add_argument("--model", required=True, type=Path, help="fit.safetensors checkpoint")
    _add_data_arguments(forecast, required=False)
    forecast.add_argument("--num-samples", type=int, default=2000)
    forecast.add_argument("--seed", type=int, default=0)
    forecast.add_argument(
        "--quantiles", type=float, nargs="+", default=[0.05, 0.25, 0.5, 0.75, 0.95]
    )
    forecast.add_argument("--out", help="write the table to this .json or .csv file")
    forecast.set_defaults(func=cmd_forecast)

    bt = sub.add_parser("backtest", help="rolling-origin backtest against the baselines")
    _add_data_arguments(bt, required=True)
    _add_column_arguments(bt)
    _add_model_arguments(bt)
    bt.add_argument("--test-start", required=True, help="first test day (YYYY-MM-DD)")
    bt.add_argument("--test-end", help="last test day (default: the last row)")
    bt.add_argument("--refit-every", type=int, default=250, help="test days between refits")
    bt.add_argument("--baselines", default="all", help="comma-separated baselines, 'all' or 'none'")
    bt.add_argument(
        "--with-vix", action="store_true", help="--dataset sp500: add VIX (2014-) for har_vix"
    )
    bt.add_argument("--out", required=True, help="report folder")
    _add_dask_arguments(bt, "the refits")
    bt.set_defaults(func=cmd_backtest)

    regimes = sub.add_parser("regimes", help="regime posteriors from a fitted checkpoint")
    regimes.add_argument("--model", required=True, type=Path, help="fit.safetensors checkpoint")
    _add_data_arguments(regimes, required=False)
    regimes.add_argument("--out", required=True, help="output folder")
    _add_keep_draws_argument(regimes)
    regimes.set_defaults(func=cmd_regimes)
    return parser


def _warning_printer(command: str):
    """A :func:`warnings.showwarning` that prints ``bayes-moe <command>: warning: ...``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        kind = "" if category is UserWarning else f" ({category.__name__})"
        print(f"bayes-moe {command}: warning{kind}: {message}", file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits with status 2 and a message naming the problem.

    A fit whose optimisation diverges (:class:`~bayes_moe.NonFiniteLossError`) exits
    with status 1 and the message naming the step and the parameters concerned.
    Warnings (a model with more parameters than observations, say) are printed to
    stderr as ``bayes-moe <command>: warning: ...`` and do not stop the command.
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.command)
            return args.func(args)
    except (DataError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"bayes-moe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"bayes-moe {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
