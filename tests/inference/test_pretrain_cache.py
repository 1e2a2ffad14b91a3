"""The stage-one cache: a hit reproduces training exactly, and mixtures share trunks.

Oracle: the same fit with no cache (bit-identical trunk weights and posterior draws).
Real S&P 500 returns (arch.data), small sizes.
"""

from __future__ import annotations

import pytest
import torch

import bayes_moe as bm
from bayes_moe.inference.pretrain_cache import PretrainCache

OPTIONS = {"num_steps": 8, "num_draws": 4, "seed": 3, "progress": False, "pretrain_steps": 6}


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.iloc[:300]


def _fit(frame, experts, **options):
    model = bm.BayesianMoE(experts=experts, n_regimes=2 if len(experts) > 1 else 1, window=24)
    return model.fit(frame, **{**OPTIONS, **options})


def _trunk(fit, name):
    expert = next(e for e in fit.program.experts if e.name == name)
    return {k: v.clone() for k, v in expert.trunk.state_dict().items()}


def test_a_hit_gives_the_fit_of_training_again(frame, tmp_path):
    cache = PretrainCache(tmp_path)
    plain = _fit(frame, ["ar", "tcn"])
    first = _fit(frame, ["ar", "tcn"], pretrain_cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    second = _fit(frame, ["ar", "tcn"], pretrain_cache=cache)
    assert (cache.hits, cache.misses) == (1, 1)
    for fit in (first, second):
        for k, v in _trunk(plain, "tcn").items():
            assert torch.equal(_trunk(fit, "tcn")[k], v)
        for site, value in plain.draws.items():
            assert torch.equal(fit.draws[site], value), site


def test_mixtures_that_differ_in_other_experts_share_the_trunk(frame, tmp_path):
    # What a leave-one-expert-out study needs: the same gate, so the same expert inputs.
    # (An expert alone, with one regime, reads other scale features: another entry.)
    cache = PretrainCache(tmp_path)
    full = _fit(frame, ["ar", "cnn", "tcn"], pretrain_cache=cache)
    without_cnn = _fit(frame, ["ar", "tcn"], pretrain_cache=cache)
    assert (cache.hits, cache.misses) == (1, 2)
    for k, v in _trunk(full, "tcn").items():
        assert torch.equal(_trunk(without_cnn, "tcn")[k], v)
    _fit(frame, ["tcn"], pretrain_cache=cache)
    assert cache.misses == 3


def test_other_data_or_options_miss_and_a_broken_file_is_retrained(frame, tmp_path):
    cache = PretrainCache(tmp_path)
    _fit(frame, ["cnn"], pretrain_cache=cache)
    _fit(frame.iloc[:-1], ["cnn"], pretrain_cache=cache)  # one day less
    _fit(frame, [{"name": "cnn", "channels": 8}], pretrain_cache=cache)
    _fit(frame, ["cnn"], pretrain_cache=cache, pretrain_steps=7)
    assert (cache.hits, cache.misses) == (0, 4)
    entries = sorted(tmp_path.glob("*.safetensors"))
    assert len(entries) == 4
    for path in entries:
        path.write_bytes(b"not a safetensors file")
    _fit(frame, ["cnn"], pretrain_cache=cache)
    assert (cache.hits, cache.misses) == (0, 5)
    _fit(frame, ["cnn"], pretrain_cache=cache)  # the broken entry was replaced
    assert cache.hits == 1
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
