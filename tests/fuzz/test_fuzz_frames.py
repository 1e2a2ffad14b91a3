"""Fuzzing frames given to a model: refused by name before fitting, or clean tensors.

Each example starts from a clean synthetic series (Student-t(4) returns from a drawn
seed, with an unread text column and an unread column with gaps) and applies drawn
corruptions. The oracle is an independent list of what DESIGN.md and issue 13 say must
be refused (NaN or inf in a read column, duplicate or unsorted dates, too few rows, a
constant or non-numeric target, a missing target, a value beyond the magnitude limit,
an outlier); a frame with none of them must be accepted. Either way only
:class:`DataError` may escape, its message is a sentence (no tensor dump), and the
caller's frame is left as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import bayes_moe as bm
from bayes_moe.data.errors import DataError
from bayes_moe.data.plausibility import MAX_MAGNITUDE

pytestmark = pytest.mark.fuzz

WINDOW = 8
MODEL = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=WINDOW)
MIN_ROWS = WINDOW + 1 + 30  # a window, the horizon and 30 observed responses (prepare)

# Corruptions and whether the model must refuse the frame afterwards.
MUST_REFUSE = {
    "nan": True,
    "inf": True,
    "duplicate_date": True,
    "unsorted": True,
    "constant": True,
    "text_value": True,
    "drop_target": True,
    "beyond_magnitude": True,
    "outlier": True,
    "junk_unread_column": False,  # issue 13, 3: columns no expert reads are not checked
    "gap_in_unread_column": False,
    "moderate_rescale": False,  # x 10^e, |e| <= 6
}

#: Corruptions that rewrite the whole target, applied before those that change a point.
WHOLE_COLUMN = ("constant", "moderate_rescale")


@st.composite
def frames(draw):
    """``(frame, corruptions applied)`` from a clean series of drawn length and seed."""
    n = draw(st.integers(0, 90))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n, name="date")
    frame = pd.DataFrame({"ret": rng.standard_t(4, n)}, index=dates)
    frame["ticker"] = "SPX"
    frame["volume"] = np.where(rng.random(n) < 0.1, np.nan, 1e6)
    applied = draw(st.lists(st.sampled_from(sorted(MUST_REFUSE)), max_size=3, unique=True))
    applied.sort(key=lambda name: name not in WHOLE_COLUMN)  # so no point is undone
    first = draw(st.integers(0, max(n - 1, 0)))
    for j, name in enumerate(applied):
        # Distinct rows (7 apart) whenever the frame is long enough to be accepted, so
        # that no corruption overwrites another.
        frame = _corrupt(frame, name, (first + 7 * j) % max(n, 1), draw, rng)
    return frame, applied


def _corrupt(frame: pd.DataFrame, name: str, row: int, draw, rng) -> pd.DataFrame:
    n = len(frame)
    if n == 0:
        return frame
    frame = frame.copy()
    if name in ("nan", "inf") and "ret" in frame:
        frame.iloc[row, frame.columns.get_loc("ret")] = np.nan if name == "nan" else -np.inf
    elif name == "duplicate_date" and n >= 2:
        index = frame.index.to_list()
        index[max(row, 1)] = index[max(row, 1) - 1]
        frame.index = pd.DatetimeIndex(index, name="date")
    elif name == "unsorted" and n >= 2:
        order = np.arange(n)
        i = max(row, 1)
        order[i - 1], order[i] = order[i], order[i - 1]
        frame = frame.iloc[order]
    elif name == "constant" and "ret" in frame:
        frame["ret"] = draw(st.floats(-1e3, 1e3, allow_nan=False))
    elif name == "text_value" and "ret" in frame:
        frame["ret"] = frame["ret"].astype(object)
        frame.iloc[row, frame.columns.get_loc("ret")] = draw(st.sampled_from(["n/a", "1,5", ""]))
    elif name == "drop_target":
        frame = frame.drop(columns=["ret"], errors="ignore")
    elif name == "beyond_magnitude" and "ret" in frame and frame["ret"].dtype != object:
        sign = draw(st.sampled_from([-1.0, 1.0]))
        frame.iloc[row, frame.columns.get_loc("ret")] = sign * MAX_MAGNITUDE * 10
    elif name == "outlier" and "ret" in frame and frame["ret"].dtype != object:
        # The issue's 1e6 % return, relative to the series' own size.
        size = max(float(frame["ret"].abs().max()), 1e-3)
        frame.iloc[row, frame.columns.get_loc("ret")] = 1e6 * size
    elif name == "junk_unread_column":
        frame["note"] = rng.choice(["a", None, "b"], size=n)
    elif name == "gap_in_unread_column":
        frame["vix"] = np.where(np.arange(n) == row, np.nan, 20.0)
    elif name == "moderate_rescale" and "ret" in frame and frame["ret"].dtype != object:
        frame["ret"] = frame["ret"] * 10.0 ** draw(st.integers(-6, 6))
    return frame


def _must_refuse(frame: pd.DataFrame, applied: list[str]) -> bool | None:
    """What the contract says, computed without the package's own checks.

    ``None`` where either answer is right: a constant target with one outlier put back
    into it is a series of a single informative value (refused only when that value is
    beyond the magnitude limit or not a number).
    """
    if "ret" not in frame.columns or len(frame) < MIN_ROWS:
        return True
    hard = {"nan", "inf", "duplicate_date", "unsorted", "text_value", "beyond_magnitude"}
    if "constant" in applied and "outlier" in applied and not hard & set(applied):
        return None
    return any(MUST_REFUSE[name] for name in applied)


@given(frames(), st.sampled_from([None, ["ret"], ["ret", "vix"]]))
def test_frame_is_refused_by_name_or_prepared_clean(example, offered):
    frame, applied = example
    offered = None if offered is None else [c for c in offered if c != "ret"]
    before = frame.copy()
    refuse = _must_refuse(frame, applied)  # "vix" offered or not: no expert reads it
    try:
        data = MODEL.prepare(frame, target="ret", covariates=offered)
    except DataError as err:
        message = str(err)
        assert 0 < len(message) < 800, message
        assert "tensor(" not in message and "\n" not in message.strip(), message
        assert refuse is not False, f"a clean frame ({applied}) was refused: {message}"
    else:
        assert refuse is not True, f"a frame with {applied} was accepted"
        assert torch.isfinite(data.inputs.series).all()
        observed = data.response[: data.n_observed]
        assert torch.isfinite(observed).all()
        standardized = data.inputs.series[:, 0]
        assert abs(float(standardized.mean())) < 1e-6 and abs(float(standardized.std()) - 1) < 0.05
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is untouched


@given(
    seed=st.integers(0, 2**32 - 1),
    exponent=st.integers(-320, 320),
    n=st.integers(MIN_ROWS, 60),
)
def test_any_scale_is_prepared_finite_or_refused_by_name(seed, exponent, n):
    # The 1e200 and 1e-300 series: finite standardized tensors or a named error.
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore", under="ignore"):
        ret = rng.standard_t(4, n) * np.float64(10.0) ** exponent  # inf beyond 1e308
    frame = pd.DataFrame({"ret": ret}, index=pd.bdate_range("2015-01-01", periods=n))
    try:
        data = MODEL.prepare(frame, target="ret")
    except DataError as err:
        assert "ret" in str(err) and "tensor(" not in str(err)
        assert not -6 <= exponent <= 6, f"a series at the 1e{exponent} scale was refused: {err}"
    else:
        assert torch.isfinite(data.inputs.series).all()
        assert torch.isfinite(data.response[: data.n_observed]).all()
