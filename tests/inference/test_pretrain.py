"""Stage one: minibatch SVI of one window expert with early stopping on a held-out block.

Oracles: the held-out loss recomputed from the returned trunk equals the best one
recorded (the best state, not the last, is handed on); the split leaves a gap of
``h - 1`` origins so that no training response overlaps a held-out one. Real S&P 500
returns (arch.data), small sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro import poutine

from bayes_moe.data.windows import prepare
from bayes_moe.inference.pretrain import MIN_HOLDOUT, holdout_split, pretrain_expert
from bayes_moe.models.experts import make_expert


@pytest.mark.parametrize("horizon", [1, 5, 20])
def test_holdout_split_is_a_final_block_with_a_gap_of_h_minus_1(horizon):
    train, held = holdout_split(1000, 0.2, horizon)
    assert held.tolist() == list(range(800, 1000))
    assert train.tolist() == list(range(800 - (horizon - 1)))
    # Origin t's response covers rows t+1..t+h: the last training response ends
    # before the first held-out one starts.
    assert int(train[-1]) + horizon < int(held[0]) + 1


def test_no_holdout_when_the_block_would_be_too_small():
    train, held = holdout_split(MIN_HOLDOUT * 2, 0.2, 1)
    assert len(held) == 0 and len(train) == MIN_HOLDOUT * 2
    train, held = holdout_split(1000, 0.0, 1)
    assert len(held) == 0 and len(train) == 1000
    with pytest.raises(ValueError, match="holdout"):
        holdout_split(1000, 1.0, 1)


def test_early_stopping_hands_on_the_best_held_out_state(sp500):
    data = prepare(sp500.iloc[:700], targets=["ret"], window=24)
    inputs, response = (
        data.inputs.at(data.inputs.origins[: data.n_observed]),
        data.observed_response,
    )
    expert = make_expert("tcn")
    result = pretrain_expert(
        expert, inputs, response, num_steps=300, eval_every=10, patience=3, progress=False
    )
    losses = result.holdout_losses
    best = int(np.argmin(losses))
    assert result.best_step == 10 * (best + 1)
    assert len(losses) - 1 - best <= 3  # stopped after `patience` evaluations, or ran out
    _, held = holdout_split(inputs.n_origins, 0.2, 1)
    with torch.no_grad():
        d = poutine.condition(expert.model, data=result.init_values)(
            inputs.at(inputs.origins[held])
        )
        recomputed = -float(d.log_prob(response[held]).mean())
    assert recomputed == pytest.approx(losses[best], rel=1e-6)


def test_holdout_zero_trains_every_step(sp500):
    data = prepare(sp500.iloc[:300], targets=["ret"], window=16)
    inputs, response = (
        data.inputs.at(data.inputs.origins[: data.n_observed]),
        data.observed_response,
    )
    result = pretrain_expert(
        make_expert("cnn"), inputs, response, num_steps=30, holdout=0.0, progress=False
    )
    assert len(result.losses) == 30 and result.best_step == 30 and len(result.holdout_losses) == 0
