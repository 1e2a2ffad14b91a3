"""Fits that survive being killed: SVI checkpoints, resume, and the CLI's --resume.

The oracle is the uninterrupted run with the same seed: a fit killed (SIGKILL in a
subprocess, or an exception here) and resumed from its last checkpoint must give the
same loss trace, bit for bit, and the same posterior draws.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import bayes_moe as bm
import bayes_moe.inference.svi as svi_module
from bayes_moe.cli import main, svi_state_path
from bayes_moe.inference.checkpoint import load_fit
from bayes_moe.inference.checkpoint_checks import CheckpointError
from bayes_moe.inference.svi_state import SVIState

MODEL = dict(experts=["ar", "kalman"], n_regimes=2, window=16)
OPTIONS = dict(num_steps=60, num_draws=10, seed=4, progress=False, convergence_tol=None)


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.loc["2017-01-01":"2018-06-29"]


@pytest.fixture(scope="module")
def uninterrupted(frame):
    return bm.BayesianMoE(**MODEL).fit(frame, **OPTIONS)


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


def interrupt_after(monkeypatch, n_steps: int):
    """Make the ``n_steps + 1``-th SVI step (counting the initialisation call) die."""
    real, calls = svi_module.svi_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) > n_steps + 1:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(svi_module, "svi_step", step)


def assert_same_fit(fit, reference):
    np.testing.assert_array_equal(fit.diagnostics.losses, reference.diagnostics.losses)
    for name, draws in reference.draws.items():
        torch.testing.assert_close(fit.draws[name], draws, rtol=0, atol=0)


def test_a_fit_resumed_from_its_checkpoint_equals_the_uninterrupted_one(
    frame, uninterrupted, tmp_path, monkeypatch
):
    path = tmp_path / "svi.safetensors"
    model = bm.BayesianMoE(**MODEL)
    interrupt_after(monkeypatch, 37)
    with pytest.raises(Killed):
        model.fit(frame, checkpoint=path, checkpoint_every=10, **OPTIONS)
    monkeypatch.undo()
    state = SVIState.load(path)
    assert state.step == 30  # the last multiple of checkpoint_every before the kill
    np.testing.assert_array_equal(state.losses, uninterrupted.diagnostics.losses[:30])
    resumed = model.fit(frame, checkpoint=path, checkpoint_every=10, resume=True, **OPTIONS)
    assert_same_fit(resumed, uninterrupted)
    assert resumed.diagnostics.resumed_from_step == 30
    assert uninterrupted.diagnostics.resumed_from_step == 0
    assert SVIState.load(path).step == 60  # the end is saved too
    again = model.fit(frame, checkpoint=path, resume=True, **OPTIONS)  # nothing left to run
    assert_same_fit(again, uninterrupted)


def test_resume_without_a_checkpoint_starts_from_the_beginning(frame, uninterrupted, tmp_path):
    path = tmp_path / "none_yet.safetensors"
    fit = bm.BayesianMoE(**MODEL).fit(frame, checkpoint=path, resume=True, **OPTIONS)
    assert_same_fit(fit, uninterrupted)
    assert path.exists()


def test_early_stopping_is_resumed_too(frame, tmp_path, monkeypatch):
    options = {**OPTIONS, "convergence_tol": 1e-1, "num_steps": 90, "check_every": 10}
    model = bm.BayesianMoE(**MODEL)
    reference = model.fit(frame, **options)
    assert reference.diagnostics.converged and len(reference.diagnostics.losses) < 90
    path = tmp_path / "svi.safetensors"
    interrupt_after(monkeypatch, len(reference.diagnostics.losses) - 5)
    with pytest.raises(Killed):
        model.fit(frame, checkpoint=path, checkpoint_every=7, **options)
    monkeypatch.undo()
    resumed = model.fit(frame, checkpoint=path, checkpoint_every=7, resume=True, **options)
    assert resumed.diagnostics.converged
    assert_same_fit(resumed, reference)


def test_the_checkpoint_of_another_fit_is_refused_before_any_work(frame, tmp_path):
    path = tmp_path / "svi.safetensors"
    model = bm.BayesianMoE(**MODEL)
    model.fit(frame, checkpoint=path, **{**OPTIONS, "num_steps": 5})
    with pytest.raises(CheckpointError, match="'seed' differs"):
        model.fit(frame, checkpoint=path, resume=True, **{**OPTIONS, "num_steps": 5, "seed": 5})
    with pytest.raises(CheckpointError, match="'response_sha256' differs"):
        model.fit(frame.iloc[1:], checkpoint=path, resume=True, **{**OPTIONS, "num_steps": 5})
    with pytest.raises(CheckpointError, match="'model' differs"):
        bm.BayesianMoE(experts=["ar"], n_regimes=2, window=16).fit(
            frame, checkpoint=path, resume=True, **{**OPTIONS, "num_steps": 5}
        )
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable SVI checkpoint"):
        model.fit(frame, checkpoint=damaged, resume=True, **OPTIONS)
    with pytest.raises(ValueError, match="checkpoint path"):
        model.fit(frame, resume=True, **OPTIONS)
    with pytest.raises(ValueError, match="checkpoint_every"):
        model.fit(frame, checkpoint=path, checkpoint_every=0, **OPTIONS)


CHILD = """
import sys, time
import bayes_moe as bm
import bayes_moe.inference.svi as svi

real = svi.svi_step
def slow(*args, **kwargs):  # slow enough for the parent to kill it half-way
    time.sleep(0.02)
    return real(*args, **kwargs)
svi.svi_step = slow
frame = bm.data.load_sp500().loc["2017-01-01":"2018-06-29"]
bm.BayesianMoE(**{model}).fit(frame, checkpoint=sys.argv[1], checkpoint_every=10, **{options})
print("finished")
"""


def test_a_fit_killed_with_sigkill_resumes_to_the_uninterrupted_result(
    frame, uninterrupted, tmp_path
):
    path = tmp_path / "svi.safetensors"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(model=MODEL, options=OPTIONS)))
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if path.exists() and SVIState.load(path).step >= 20:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the child wrote no checkpoint in time")
    finally:
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL and b"finished" not in out
    state = SVIState.load(path)
    assert 20 <= state.step < OPTIONS["num_steps"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries
    resumed = bm.BayesianMoE(**MODEL).fit(frame, checkpoint=path, resume=True, **OPTIONS)
    assert_same_fit(resumed, uninterrupted)


def test_cli_fit_killed_leaves_the_old_report_and_resumes(frame, tmp_path):
    data = tmp_path / "returns.csv"
    frame[["ret"]].rename_axis("date").to_csv(data)
    common = [
        "fit", "--data", str(data), "--return-col", "ret", "--experts", "ar,kalman",
        "--regimes", "2", "--window", "16", "--num-steps", "80", "--num-draws", "10",
        "--keep-draws", "10", "--checkpoint-every", "10",
    ]  # fmt: skip
    reference, out = tmp_path / "reference", tmp_path / "report"
    assert main([*common, "--out", str(reference)]) == 0
    assert not svi_state_path(reference).exists()  # removed once the report is written
    assert main([*common, "--num-steps", "20", "--out", str(out)]) == 0  # an older report
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    wrapper = tmp_path / "slow_cli.py"
    wrapper.write_text(
        "import sys, time\n"
        "import bayes_moe.inference.svi as svi\n"
        "from bayes_moe.cli import main\n"
        "real = svi.svi_step\n"
        "svi.svi_step = lambda *a, **k: (time.sleep(0.02), real(*a, **k))[1]\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    child = subprocess.Popen(
        [sys.executable, str(wrapper), *common, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = svi_state_path(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state.exists() and SVIState.load(state).step >= 20):
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old report, whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert main([*common, "--resume", "--out", str(out)]) == 0
    resumed, whole = (load_fit(Path(f) / "fit.safetensors") for f in (out, reference))
    np.testing.assert_array_equal(resumed.diagnostics.losses, whole.diagnostics.losses)
    assert resumed.diagnostics.resumed_from_step >= 20  # read back from the checkpoint
    assert not state.exists()


def test_a_float32_fit_resumes_exactly_and_is_not_resumed_in_float64(frame, tmp_path, monkeypatch):
    options = {**OPTIONS, "dtype": "float32"}
    path = tmp_path / "svi.safetensors"
    model = bm.BayesianMoE(**MODEL)
    reference = model.fit(frame, **options)
    interrupt_after(monkeypatch, 37)
    with pytest.raises(Killed):
        model.fit(frame, checkpoint=path, checkpoint_every=10, **options)
    monkeypatch.undo()
    resumed = model.fit(frame, checkpoint=path, checkpoint_every=10, resume=True, **options)
    assert resumed.diagnostics.resumed_from_step == 30
    assert_same_fit(resumed, reference)
    with pytest.raises(CheckpointError, match="'dtype' differs"):
        model.fit(frame, checkpoint=path, resume=True, **OPTIONS)


def test_a_cuda_generator_state_travels_with_the_checkpoint(tmp_path, monkeypatch):
    """A fit on a GPU draws the guide's samples from the CUDA generator: it is saved too.

    (No GPU here: torch.cuda's state functions are replaced by recorders.)
    """
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(module.parameters())
    cuda_state = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": cuda_state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": restored.append(s))
    args = (3, [1.0, 2.0, 3.0], False, {"model": "m"}, module, optimizer)
    assert "cuda" not in SVIState.capture(*args, device="cpu").rng
    SVIState.capture(*args, device="cuda:0").save(tmp_path / "svi.safetensors")
    loaded = SVIState.load(tmp_path / "svi.safetensors")
    assert torch.equal(loaded.rng["cuda"], cuda_state)
    loaded.restore(module, optimizer, "cpu")  # resumed on the CPU: no CUDA generator
    assert restored == []
    loaded.restore(module, optimizer, "cuda:0")
    assert len(restored) == 1 and torch.equal(restored[0], cuda_state)
