"""Fuzzing checkpoint files: refused by name, or loaded into a fit that forecasts.

A small fit (AR and Kalman experts, 2 regimes, real S&P 500 returns 2016-2018) is saved
once; each example damages a copy of the file and loads it with pickle and
``torch.load`` replaced by functions that fail the test, so that a file is never
unpickled whatever it holds. Damage: the bytes (cut anywhere, bytes of the header
overwritten, garbage appended, a foreign file), one metadata field (replaced by drawn
text or JSON, or one value deep inside its JSON changed) or one tensor (removed,
reshaped, cast, a value made NaN, negative or huge). Only :class:`CheckpointError` may
escape ``load``; a file that loads must forecast a finite mean and standard deviation.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import struct
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import bayes_moe as bm
from bayes_moe.inference.checkpoint import CheckpointError

pytestmark = pytest.mark.fuzz


class CheckpointBytes(bytes):
    """The bytes of a file, shown by their length in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<checkpoint of {len(self)} bytes>"


@pytest.fixture(scope="module")
def checkpoint(sp500, tmp_path_factory) -> CheckpointBytes:
    """The bytes of a small fitted checkpoint (real data)."""
    model = bm.BayesianMoE(experts=["ar", "kalman"], n_regimes=2, window=8)
    fit = model.fit(sp500.loc["2016-01-01":], num_steps=30, num_draws=8, seed=0, progress=False)
    path = tmp_path_factory.mktemp("checkpoint") / "fit.safetensors"
    fit.save(path)
    return CheckpointBytes(path.read_bytes())


def _unpickling(*args, **kwargs):
    raise AssertionError("a checkpoint went through pickle")


@contextlib.contextmanager
def _no_pickle():
    with (
        mock.patch.object(pickle, "loads", _unpickling),
        mock.patch.object(pickle, "load", _unpickling),
        mock.patch.object(torch, "load", _unpickling),
    ):
        yield


def _load_or_refuse(data: bytes, name: str = "fit.safetensors"):
    """``(fit, None)`` or ``(None, message)``: only CheckpointError may escape load."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        with _no_pickle():
            try:
                fit = bm.MoEFit.load(path)
            except CheckpointError as err:
                message = str(err)
                assert message and "Traceback" not in message
                return None, message
    return fit, None


def _forecasts_finite(fit) -> None:
    forecast = fit.forecast(num_samples=200)
    assert np.isfinite(np.asarray(forecast.mean, dtype=float)).all()
    assert np.isfinite(np.asarray(forecast.std, dtype=float)).all()


def _header_length(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


@given(st.data())
def test_damaged_bytes_are_refused_or_load_a_working_fit(checkpoint, data):
    kind = data.draw(st.sampled_from(["cut", "overwrite_header", "append", "foreign"]))
    if kind == "cut":
        damaged = checkpoint[: data.draw(st.integers(0, len(checkpoint) - 1))]
    elif kind == "overwrite_header":
        start = data.draw(st.integers(0, _header_length(checkpoint) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=16))
        damaged = checkpoint[:start] + patch + checkpoint[start + len(patch) :]
    elif kind == "append":
        damaged = checkpoint + data.draw(st.binary(min_size=1, max_size=64))
    else:  # a pickle payload, JSON or random bytes under a .safetensors name
        damaged = data.draw(
            st.one_of(
                st.just(pickle.dumps({"draws": [1.0, 2.0]})),
                st.just(b'{"format": "bayes-moe-fit"}'),
                st.binary(max_size=256),
            )
        )
    fit, message = _load_or_refuse(damaged)
    if fit is not None:
        _forecasts_finite(fit)
    elif kind == "foreign":
        assert "not a bayes-moe checkpoint" in message or "not a readable" in message


def _json_paths(value, prefix=()):
    """Every leaf of a JSON value with the keys / indices leading to it."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_paths(item, (*prefix, i))
    else:
        yield prefix


def _set_path(value, path, new):
    if not path:
        return new
    value[path[0]] = _set_path(value[path[0]], path[1:], new)
    return value


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(
    pick=st.integers(0, 2**16),
    how=st.sampled_from(["leaf", "json", "text"]),
    leaf_pick=st.integers(0, 2**16),
    json_value=JSON_VALUES,
    text=st.text(max_size=40),
)
def test_a_damaged_metadata_field_is_refused_by_name_or_harmless(
    checkpoint, pick, how, leaf_pick, json_value, text
):
    metadata, tensors = _read(checkpoint)
    field = sorted(metadata)[pick % len(metadata)]
    try:
        parsed = json.loads(metadata[field])
    except json.JSONDecodeError:
        parsed = None
    leaves = list(_json_paths(parsed)) if isinstance(parsed, (dict, list)) else []
    if how == "leaf" and leaves:
        leaf = leaves[leaf_pick % len(leaves)]
        metadata[field] = json.dumps(_set_path(parsed, leaf, json_value))
    elif how in ("leaf", "json"):
        metadata[field] = json.dumps(json_value)
    else:
        metadata[field] = text
    fit, _ = _load_or_refuse(_write(metadata, tensors))
    if fit is not None:
        _forecasts_finite(fit)


DAMAGES = ["remove", "reshape", "cast", "nan", "negate", "huge", "empty"]


@given(
    pick=st.integers(0, 2**16),
    kind=st.sampled_from(DAMAGES),
    dtype=st.sampled_from([torch.int64, torch.float16, torch.bool]),
    position=st.floats(0, 1, exclude_max=True),
)
def test_a_damaged_tensor_is_refused_by_name_or_harmless(checkpoint, pick, kind, dtype, position):
    metadata, tensors = _read(checkpoint)
    name = sorted(tensors)[pick % len(tensors)]
    value = tensors[name]
    if kind == "remove":
        del tensors[name]
    elif kind == "reshape":
        tensors[name] = value.reshape(-1).contiguous() if value.dim() != 1 else value[:, None]
    elif kind == "cast":
        tensors[name] = value.to(dtype)
    elif kind == "empty":
        tensors[name] = value[:0].contiguous()
    elif value.numel() and value.is_floating_point():
        flat = value.clone().reshape(-1)
        i = int(position * flat.numel())
        flat[i] = {"nan": float("nan"), "negate": -flat[i] - 1.0, "huge": 1e30}[kind]
        tensors[name] = flat.reshape(value.shape)
    fit, message = _load_or_refuse(_write(metadata, tensors))
    if fit is not None:
        _forecasts_finite(fit)
    elif kind in ("remove", "reshape", "cast", "empty", "nan"):
        assert name in message, message


def _read(data: bytes) -> tuple[dict, dict]:
    """The metadata and tensors of a checkpoint's bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fit.safetensors"
        path.write_bytes(data)
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata())
        return metadata, load_file(str(path))


def _write(metadata: dict, tensors: dict) -> bytes:
    """The bytes of a safetensors file of ``tensors`` and ``metadata``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fit.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        return path.read_bytes()
