"""The rolling-origin backtest loop: alignment, refit schedule, and no look-ahead."""

import numpy as np
import pandas as pd
import pytest

import bayes_moe as bm
from bayes_moe.data import DataError
from bayes_moe.evaluation.backtest import BlockForecast, backtest, origin_rows, realized_sums
from bayes_moe.evaluation.baselines import BASELINES
from bayes_moe.evaluation.distributions import LocationScaleMixture
from bayes_moe.evaluation.moe_forecaster import MoEForecaster


class SpyForecaster:
    """A Normal forecaster (sample mean and sd of what it was shown) that records its inputs."""

    name = "spy"

    def __init__(self):
        self.trains, self.visible = [], []

    def __call__(self, train):
        self.trains.append(train.index[-1])
        mean, sd = train["ret"].mean(), train["ret"].std()

        def predict(frame, origins, horizon):
            self.visible.append((frame.index[-1], origins[-1]))
            n = len(origins)
            dates = pd.bdate_range(origins[0], periods=n)
            return LocationScaleMixture.normal(
                np.full(n, horizon * mean), np.full(n, np.sqrt(horizon) * sd), dates
            )

        return predict


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.loc["2012-01-01":"2016-12-31"]


def test_blocks_refit_on_the_past_and_see_nothing_after_their_last_origin(frame):
    spy = SpyForecaster()
    result = backtest(
        frame, spy, test_start="2015-01-02", refit_every=100, horizon=3, progress=False
    )
    origins, realized = origin_rows(frame, test_start="2015-01-02", horizon=3)
    assert len(result.table) == len(origins) == len(result.y)
    assert result.table.index[0] == pd.Timestamp("2015-01-02")
    # Each refit trains on rows up to the block's first origin.
    assert spy.trains == list(frame.index[origins[::100]])
    assert result.refit_dates == spy.trains
    # predict only ever sees rows up to the last origin of its block.
    for last_row, last_origin in spy.visible:
        assert last_row == last_origin
    # The realized values are the 3-day sums after each origin.
    ret = frame["ret"].to_numpy()
    t = origins[5]
    assert result.y[5] == pytest.approx(ret[t + 1 : t + 4].sum(), rel=1e-12)
    np.testing.assert_allclose(realized_sums(frame, "ret", origins, 3), result.y)


def test_per_day_extras_are_dated_by_the_realized_days(frame):
    # A forecaster can only guess the dates of the last h realized days of a block (it
    # sees no later row); its guesses (business days, blind to holidays) may repeat a
    # real date. The backtest dates per-day extras as it dates the scores.
    class Guessing(SpyForecaster):
        def __call__(self, train):
            inner = super().__call__(train)

            def predict(frame, origins, horizon):
                out = inner(frame, origins, horizon)
                guessed = origins + pd.offsets.BDay(horizon)  # wrong across holidays
                probs = pd.DataFrame({"p": np.ones(len(origins))}, guessed)
                return BlockForecast(out, extras={"probs": probs})

            return predict

    result = backtest(
        frame, Guessing(), test_start="2015-11-02", refit_every=20, horizon=5, progress=False
    )
    probs = result.extras["probs"]
    assert probs.index.equals(result.table.index) and probs.index.is_unique


def test_sliding_window_keeps_the_last_rows(frame):
    spy = SpyForecaster()
    backtest(frame, spy, test_start="2016-01-04", refit_every=200, window=250, progress=False)
    result = backtest(
        frame,
        BASELINES["constant_normal"](),
        test_start="2016-01-04",
        refit_every=200,
        window=250,
        progress=False,
    )
    first = frame.index.get_loc(pd.Timestamp("2016-01-04")) - 1
    train = frame["ret"].iloc[first + 1 - 250 : first + 1]
    # constant Normal on the sliding window: its mean is the window's sample mean.
    np.testing.assert_allclose(result.predictive.mean()[0], train.mean(), rtol=1e-12)


def test_scores_are_those_of_the_predictive(frame):
    result = backtest(frame, BASELINES["garch_t"](), test_start="2016-01-04", progress=False)
    np.testing.assert_allclose(result.table["log_score"], result.predictive.log_prob(result.y))
    np.testing.assert_allclose(result.table["pit"], result.predictive.cdf(result.y))
    assert result.summary()["n_days"] == len(result.y)


def test_no_look_ahead_for_the_mixture(sp500):
    # Perturb every row after a test origin t: the forecasts of all days whose origin
    # is <= t must not move (same seed, same refits before t), later ones must.
    frame = sp500.loc["2016-01-01":"2016-12-31"]
    kwargs = dict(test_start="2016-10-03", refit_every=30, progress=False)

    def run(data):
        model = bm.BayesianMoE(experts=["ar", "kalman"], n_regimes=2, window=16)
        forecaster = MoEForecaster(model, num_steps=15, num_draws=8, seed=0)
        return backtest(data, forecaster, **kwargs)

    base = run(frame)
    t = base.origins[40]
    changed = frame.copy()
    rng = np.random.default_rng(0)
    after = changed.index > t
    changed.loc[after] = changed.loc[after] * rng.uniform(0.5, 1.5, size=(after.sum(), 1))
    other = run(changed)
    upto = base.origins <= t
    np.testing.assert_allclose(
        base.predictive.log_prob(base.y)[upto],
        other.predictive.log_prob(base.y)[upto],
        rtol=1e-12,
    )
    assert not np.allclose(base.predictive.mean()[~upto], other.predictive.mean()[~upto])


def test_bad_arguments(frame):
    with pytest.raises(DataError, match="no test days"):
        backtest(frame, SpyForecaster(), test_start="2030-01-01", progress=False)
    with pytest.raises(DataError, match="missing"):
        backtest(frame, SpyForecaster(), test_start="2016-01-04", target="nope", progress=False)
    with pytest.raises(ValueError, match="positive"):
        backtest(frame, SpyForecaster(), test_start="2016-01-04", refit_every=0, progress=False)
