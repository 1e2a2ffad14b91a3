"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or an error half-way never leaves a half-written file behind, and an
existing file is replaced only by a complete new one. Report folders are written the
same way, whole (:func:`atomic_folder`), and checked before any work starts
(:func:`check_output_folder`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    The file gets the permissions of any new file (``0o666`` less the umask: ``0o644``
    under the usual umask ``022``), not the private ``0o600`` of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create_temporary(path: Path, attempts: int = 100) -> Path:
    """Create an empty, uniquely named hidden file beside ``path`` and return its path.

    Created like any new file (mode ``0o666``, which the kernel reduces by the umask),
    exclusively, so that two writers never share a temporary file.
    """
    for _ in range(attempts):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path} after {attempts} attempts")


def write_json(obj, path) -> Path:
    """Write ``obj`` as indented standard JSON, atomically.

    Standard JSON (RFC 8259) has no NaN or infinity, and the bare ``NaN`` and
    ``Infinity`` tokens Python's :mod:`json` would write by default are refused by strict
    parsers (JavaScript's ``JSON.parse``, ``jq``, many others). So every non-finite
    number is written as ``null``: NaN silently, as the usual mark of a value that is not
    available (a score with no test day), and +-inf with a :class:`RuntimeWarning`
    naming where it was (``"forecast.std"``), since an infinite number in a report is a
    numerical failure, never a result. Objects JSON does not know are written as their
    ``str``. Nothing is written when serialising fails.

    Parameters
    ----------
    obj : object
        Dicts, lists, tuples, numbers (Python, NumPy or 0-d tensors), strings, None.
    path : str or path-like
        The file; its folder is created if needed.

    Returns
    -------
    Path
        ``path``.

    Warns
    -----
    RuntimeWarning
        When ``obj`` holds +-inf, naming the first few places.
    """
    infinite: list[str] = []
    text = json.dumps(_clean(obj, "", infinite), indent=2, default=str, allow_nan=False)
    if infinite:
        warnings.warn(
            f"{Path(path).name}: infinite number(s) at {_preview(infinite)} written as null",
            RuntimeWarning,
            stacklevel=2,
        )
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def write_csv(frame: pd.DataFrame, path) -> Path:
    """Write a DataFrame to CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp)
    return Path(path)


# ---------------------------------------------------------------------------- folders
#: Written last into every folder :func:`atomic_folder` creates: the list of its files.
#: A folder with this file and nothing unlisted is a report a later run may replace.
MANIFEST = "manifest.json"
_WRITER = "bayes-moe"


class OutputError(ValueError):
    """An output folder that cannot be written or replaced; the message names it."""


@contextlib.contextmanager
def atomic_folder(path) -> Iterator[Path]:
    """Yield a new folder beside ``path`` to write into; on success it becomes ``path``.

    The folder is created as ``<name>.incomplete-<random>`` beside ``path``. When the
    block ends without an exception, :data:`MANIFEST` is written into it last and it is
    renamed to ``path``. An existing report folder ``path`` is first renamed aside, to
    ``<name>.replaced-<random>``, removed once the new folder is in place; a report
    that holds more than its manifest lists, or one without a manifest (written before
    manifests existed), goes to ``<name>.previous-<random>`` and is kept, with a
    warning. A folder that is not a report is never touched (OutputError, see
    :func:`check_output_folder`). On an exception the new folder is removed and ``path``
    is untouched. A ``kill -9`` at any moment leaves ``path`` either as it was or
    complete and new, never a mixture: at worst an ``<name>.incomplete-*`` or
    ``<name>.replaced-*`` folder stays beside it.

    Raises
    ------
    OutputError
        Before anything is written, when ``path`` cannot be created or replaced.
    """
    path = Path(os.path.abspath(path))
    _old_folder_fate(path)  # raises before anything is written
    _make_parents(path)
    new = _create_temporary_folder(path, "incomplete")
    try:
        yield new
        files = sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file())
        write_json({"writer": _WRITER, "files": files}, new / MANIFEST)
        _move_into_place(new, path)
    finally:
        shutil.rmtree(new, ignore_errors=True)


def check_output_folder(path) -> Path:
    """Refuse, before any work, an output folder that :func:`atomic_folder` cannot write.

    ``path`` must be missing, an empty folder, or a report folder (one with a
    :data:`MANIFEST` or a ``metrics.json``; what :func:`atomic_folder` does with it is
    described there). Its parent must be creatable and writable: the check creates a
    probe folder beside ``path``, writes a file into it and removes both (and any parent
    it created).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        Naming the folder and the reason.
    """
    path = Path(os.path.abspath(path))
    _old_folder_fate(path)
    created = _make_parents(path)
    try:
        probe = _create_temporary_folder(path, "probe")
        try:
            (probe / "probe.txt").write_text("probe\n")
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    except OSError as err:
        raise OutputError(f"cannot write the output folder {path}: {err.strerror or err}") from err
    finally:
        for folder in reversed(created):
            folder.rmdir()
    return path


def _old_folder_fate(path: Path) -> str | None:
    """What :func:`atomic_folder` does with an existing ``path`` when the new one is ready.

    None: nothing is there (missing or an empty folder). ``"remove"``: a report folder
    whose :data:`MANIFEST` lists every entry. ``"keep"``: a report with other entries too
    (files added since, another command's output), or one written before manifests (it
    has a ``metrics.json``): renamed aside to ``<name>.previous-<random>`` and kept.
    Anything else raises OutputError: a folder that is not a report is never moved.
    """
    if path in (Path.cwd(), *Path.cwd().parents):
        raise OutputError(f"the output folder {path} is the working folder or one above it")
    if not path.exists():
        return None
    if not path.is_dir():
        raise OutputError(f"the output folder {path} exists and is not a folder")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return None
    listed = _manifest_entries(path)
    if listed is None and "metrics.json" not in entries:
        raise OutputError(
            f"the output folder {path} already holds files ({_preview(entries)}) and is not "
            "a bayes-moe report; choose a new or empty folder"
        )
    if listed is None or any(e != MANIFEST and e not in listed for e in entries):
        return "keep"
    return "remove"


def _manifest_entries(path: Path) -> set[str] | None:
    """Top-level names listed by ``path``'s :data:`MANIFEST`; None without a valid one."""
    try:
        doc = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("writer") != _WRITER:
        return None
    return {Path(str(name)).parts[0] for name in doc.get("files", []) if str(name)}


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parents of ``path``, top first; return those created."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create the output folder {path}: {parent} is not a folder")
    created = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
    except OSError as err:
        for folder in reversed(created):
            folder.rmdir()
        raise OutputError(f"cannot create the output folder {path}: {err.strerror or err}") from err
    return created


def _create_temporary_folder(path: Path, kind: str, attempts: int = 100) -> Path:
    """Create an empty, uniquely named folder ``<name>.<kind>-<random>`` beside ``path``.

    Created like any new folder (mode ``0o777`` less the umask).
    """
    for _ in range(attempts):
        folder = path.with_name(f"{path.name}.{kind}-{secrets.token_hex(4)}")
        try:
            folder.mkdir(0o777)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free temporary name beside {path} after {attempts} attempts")


def _move_into_place(new: Path, path: Path) -> None:
    """Rename the folder ``new`` to ``path``; an old ``path`` goes aside first.

    The old folder is then removed, or kept as ``<name>.previous-<random>`` with a
    warning when it holds more than its report (see :func:`_old_folder_fate`, asked
    again now: something may have been added during the run).
    """
    fate = _old_folder_fate(path)
    if fate is None:
        os.rename(new, path)  # POSIX rename replaces an empty folder
        return
    kind = "replaced" if fate == "remove" else "previous"
    aside = path.with_name(f"{path.name}.{kind}-{secrets.token_hex(4)}")
    os.rename(path, aside)
    os.rename(new, path)
    if fate == "remove":
        shutil.rmtree(aside, ignore_errors=True)
    else:
        warnings.warn(
            f"{path} held more than a bayes-moe report (or one without {MANIFEST}); "
            f"the old folder is kept as {aside}",
            UserWarning,
            stacklevel=4,
        )


def _clean(obj, where: str, infinite: list[str]):
    """``obj`` with every non-finite float as None; the places of +-inf go to ``infinite``.

    ``where`` is the place of ``obj`` in the document (``"regimes[0].volatility"``).
    """
    if isinstance(obj, dict):
        return {
            str(k): _clean(v, f"{where}.{k}" if where else str(k), infinite) for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_clean(v, f"{where}[{i}]", infinite) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        if obj == obj:
            infinite.append(where or "the top level")
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item(), where, infinite)
    return obj
