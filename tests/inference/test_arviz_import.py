"""Importing bayes_moe survives ArviZ's once-a-day stamp being written by another process.

ArviZ 0.23 writes the date of its import notice to ``daily_warning`` in the user's cache
through a shared temporary file. Dask workers that import bayes_moe together on a new day
race on that file, and the loser's rename raises ``FileNotFoundError`` (seen in CI when a
backtest with two workers ran across midnight). The race is replayed here in a fresh
interpreter with an empty cache: the rename moves the file, as the winning process did,
and then raises, as the losing process saw.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RACE = textwrap.dedent(
    """
    import pathlib
    import warnings

    real_replace = pathlib.Path.replace
    lost = []

    def replace_after_another_process(self, target):
        result = real_replace(self, target)
        if self.name == "daily_warning.tmp" and not lost:
            lost.append(str(self))
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return result

    pathlib.Path.replace = replace_after_another_process
    warnings.simplefilter("ignore")
    import bayes_moe  # noqa: F401
    from bayes_moe.inference.arviz import ARVIZ_VERSION

    print("raced" if lost else "no-stamp", ARVIZ_VERSION)
    """
)


def test_import_survives_the_daily_stamp_race(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", RACE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome, version = done.stdout.split()[-2:]
    if outcome == "no-stamp":
        pytest.skip(f"ArviZ {version} writes no daily stamp on import")
    stamps = list(tmp_path.rglob("daily_warning"))
    assert len(stamps) == 1 and stamps[0].read_text().strip()
