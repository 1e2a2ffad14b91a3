"""Every ```python block of README.md runs as written, each on its own.

Issue 13, defect 3: the README's backtest example failed (``bm`` not imported, then a NaN
``vix`` column the mixture did not even read) and its ``fit.update(new_rows)`` used an
undefined name. Each block is executed in a fresh namespace (so it must import what it
uses) inside a temporary working directory (files it writes land there), under the
suite's warning filters (warnings are errors).

How the cost is capped: the snippets fit real mixtures on 20 years of S&P 500 data with
the settings a user should use (``num_steps=1500``, 200 draws, refits every 250 days).
The test runs them unchanged except that :meth:`bayes_moe.BayesianMoE.fit`, which every
fit goes through (directly, in backtests and in ``bm.compare``), is wrapped to cap
``num_steps`` at :data:`MAX_STEPS` and ``num_draws`` at :data:`MAX_DRAWS` and to hide the
progress bar. Everything else (data, windows, refit schedule, forecasts, regimes, ArviZ,
plots, checkpoints) runs as written; the three blocks take about half a minute.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import bayes_moe as bm

README = Path(__file__).resolve().parents[2] / "README.md"
#: SVI steps and posterior draws a README fit gets at most in this test.
MAX_STEPS = 10
MAX_DRAWS = 8


def python_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced ```python block of a Markdown text: (the section it is in, its code)."""
    pattern = re.compile(r"^## (.*?)$|^```python\n(.*?)^```", flags=re.M | re.S)
    section, blocks = "", []
    for match in pattern.finditer(text):
        if match.group(1) is not None:
            section = match.group(1).strip()
        else:
            blocks.append((section, match.group(2)))
    return blocks


BLOCKS = python_blocks(README.read_text())


@pytest.fixture
def capped_fits(monkeypatch):
    """Wrap ``BayesianMoE.fit`` so that no README fit costs more than a few seconds."""
    fit = bm.BayesianMoE.fit

    def capped(self, *args, **options):
        options["num_steps"] = min(options.get("num_steps", MAX_STEPS), MAX_STEPS)
        options["num_draws"] = min(options.get("num_draws", MAX_DRAWS), MAX_DRAWS)
        options["progress"] = False
        return fit(self, *args, **options)

    monkeypatch.setattr(bm.BayesianMoE, "fit", capped)


def test_the_readme_has_the_python_blocks_this_test_expects():
    """Guards the extraction: the five blocks (API tour, backtest, sweep, comparison, panel)."""
    codes = [code for _, code in BLOCKS]
    assert len(codes) == 5
    assert "model.fit(" in codes[0] and "backtest(" in codes[1]
    assert "sweep(" in codes[2] and "bm.compare(" in codes[3]
    assert "panel=True" in codes[4]


@pytest.mark.parametrize(
    ("section", "code"), BLOCKS, ids=[f"{i}:{section}" for i, (section, _) in enumerate(BLOCKS)]
)
def test_readme_python_block_runs_as_written(section, code, capped_fits, tmp_path, monkeypatch):
    if "load_sp500_stocks" in code:
        pytest.importorskip(
            "skfolio", reason="needs the panel extra: pip install 'bayes-moe[panel]'"
        )
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    try:
        exec(compile(code, f"README.md, python block in {section!r}", "exec"), namespace)
    finally:
        plt.close("all")
    check_claims(namespace, tmp_path)


def check_claims(namespace: dict, folder: Path) -> None:
    """What the README's comments say about the objects a block made."""
    if "stocks" in namespace:  # the panel
        fit, stocks = namespace["fit"], namespace["stocks"]
        assert list(fit.forecast(num_samples=100).to_frame().index) == list(stocks.columns)
        assert namespace["idata"]["observed_data"]["y"].dims == ("date", "asset")
        assert namespace["later"].draws is fit.draws  # "the same draws"
    elif "fit" in namespace:  # the API tour
        fit, newer = namespace["fit"], namespace["newer"]
        assert fit.data.inputs.columns == ("ret", "ret_nasdaq")  # "only the columns ... read"
        moved = fit.update(newer)
        assert moved.data.dates[-1] == newer.index[-1]  # filtered forward over the new rows
        assert moved.draws is fit.draws  # "no refit"
        assert (folder / "fit.safetensors").is_file()
    if "ours" in namespace:  # the backtest
        ours, egarch = namespace["ours"], namespace["egarch"]
        assert ours.table.index[0] >= pd.Timestamp("2015-01-02")
        assert ours.table.index.equals(egarch.table.index)  # scored on the same days
    if "configs" in namespace:  # the sweep: one row per data set, config and horizon
        table = namespace["table"]
        assert len(table) == 2 * len(namespace["configs"]) * 2
        assert (table["error"] == "").all() and (table["n_days"] > 0).all()
        assert namespace["result"].table.columns[-1] == "squared_error"
    elif "table" in namespace:  # the comparison
        assert set(namespace["table"].index) == {"K=2", "K=3"}
        assert (folder / "compare.png").is_file()
