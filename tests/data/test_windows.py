"""prepare(): responses, windows, standardization and their errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from bayes_moe.data import DataError
from bayes_moe.data.windows import VOL_FEATURES, VOL_SPANS, Preprocessor, prepare


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.iloc[:400]


def test_responses_are_h_day_sums_of_standardized_targets(frame):
    data = prepare(frame, targets=["ret"], window=10, horizon=5)
    loc, scale = data.preprocessor.loc[0], data.preprocessor.scale[0]
    ret = frame["ret"].to_numpy()
    for n in (0, 17, data.n_observed - 1):
        t = int(data.inputs.origins[n])
        expected = (ret[t + 1 : t + 6].sum() - 5 * loc) / scale
        assert data.response[n, 0].item() == pytest.approx(expected, rel=1e-12)
    assert torch.isnan(data.response[data.n_observed :]).all()
    assert data.response.shape[0] - data.n_observed == 5
    # unstandardize maps back to the 5-day return in percent.
    t = int(data.inputs.origins[3])
    np.testing.assert_allclose(
        data.unstandardize(data.response[3].numpy()), ret[t + 1 : t + 6].sum(), rtol=1e-12
    )


def test_windows_hold_the_last_rows_up_to_each_origin(frame):
    data = prepare(frame, targets=["ret"], window=20)
    inputs = data.inputs
    cols = ["ret", "ret_nasdaq"]
    win = inputs.windows(7, cols)
    idx = inputs.column_index(cols)
    for n in (0, 50, inputs.n_origins - 1):
        t = int(inputs.origins[n])
        torch.testing.assert_close(win[n], inputs.series[t - 6 : t + 1, idx])
    assert int(inputs.origins[0]) == 19  # the first origin with a full window
    with pytest.raises(ValueError, match="window length"):
        inputs.windows(21)


def test_standardization_uses_training_constants(frame):
    data = prepare(frame, targets=["ret"], window=5)
    values = frame[list(data.inputs.columns)].to_numpy()
    np.testing.assert_allclose(data.preprocessor.loc, values.mean(0))
    np.testing.assert_allclose(data.preprocessor.scale, values.std(0))
    z = data.inputs.series.numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-10)
    # Volatility summaries: centered log realized variance over 1, 5, 22, 252 days
    # (averaging over the rows available so far before a full span).
    zr = z[:, 0]
    t = 300
    assert VOL_SPANS == (1, 5, 22, 252) and len(zr) > t
    for v, w in enumerate(VOL_SPANS):
        raw = np.log(np.mean(zr[t - w + 1 : t + 1] ** 2) + 0.01)
        expected = raw - data.preprocessor.vol_center[0][v]
        assert data.inputs.vol[t, 0, v].item() == pytest.approx(expected, rel=1e-10)
    # JSON round trip of the constants.
    assert Preprocessor.from_json(data.preprocessor.to_json()) == data.preprocessor


def test_reused_preprocessor_requires_the_same_targets(frame):
    data = prepare(frame, targets=["ret"], window=5)
    with pytest.raises(DataError, match="targets"):
        prepare(frame, targets=["ret_nasdaq"], window=5, preprocessor=data.preprocessor)


def test_errors_name_the_problem(frame):
    with pytest.raises(DataError, match="missing|not found|no column"):
        prepare(frame, targets=["nope"], window=5)
    text = frame.assign(ticker="SPX")
    with pytest.raises(DataError, match="ticker"):
        prepare(text, targets=["ret"], window=5)
    with pytest.raises(DataError, match=r"400.*|rows"):
        prepare(frame, targets=["ret"], window=390)
    with pytest.raises(DataError, match="positive"):
        prepare(frame, targets=["ret"], window=0)
    const = frame.assign(flat=1.0)
    with pytest.raises(DataError, match="flat"):
        prepare(const, targets=["ret"], window=5)
    shuffled = frame.iloc[[1, 0] + list(range(2, len(frame)))]
    with pytest.raises(DataError, match="sorted|order"):
        prepare(shuffled, targets=["ret"], window=5)
    assert isinstance(frame.index, pd.DatetimeIndex)


def test_ewma_and_leverage_features_by_hand(frame):
    data = prepare(frame, targets=["ret"], window=5)
    z = data.inputs.series[:, 0].numpy()
    names = list(VOL_FEATURES)
    center = np.asarray(data.preprocessor.vol_center[0])
    # EWMA recursion v_t = 0.94 v_{t-1} + 0.06 z_t^2 started at z_0^2 (RiskMetrics).
    v = z[0] ** 2
    for t in range(1, 200):
        v = 0.94 * v + 0.06 * z[t] ** 2
    k = names.index("log_ewma_var")
    assert data.inputs.vol[199, 0, k].item() == pytest.approx(np.log(v + 0.01) - center[k])
    k = names.index("ret_5")
    assert data.inputs.vol[199, 0, k].item() == pytest.approx(z[195:200].mean() - center[k])
    k = names.index("ret_1")
    assert data.inputs.vol[199, 0, k].item() == pytest.approx(z[199] - center[k])
