"""One run directory, one writer.

A folder that aekit writes results into (a training run, a bench's results) is owned by one
process at a time: `writer_lock` holds an OS lock on `FOLDER/.lock` for as long as the work
lasts. The OS drops the lock when the process dies, even by `kill -9`, so a lock file left
behind is recognised as stale and taken over; a live holder makes the second writer stop
with a message naming its process.

`claim_run_dir` decides whether `--out` may be used for a new run: it must be absent, empty,
or hold an unfinished run of the same model and data (a first epoch cut short, with nothing
to resume). Anything else — a finished run, another run's files, files that are not a run — is
refused, and `overwrite=True` replaces only a folder that is an aekit run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aekit.errors import AekitError

LOCK = ".lock"

COMPARED_SECTIONS = ("kind", "model", "data", "activations")
"""What makes a folder's unfinished run "the same run": the training flags may differ (they
may change on resume too); the model, the data and the run's kind may not."""

UNFINISHED_FILES = {"config.json", "metrics.jsonl", "steps.jsonl", LOCK}
"""What a run holds before its first checkpoint: nothing there can be resumed, so a new run
of the same configuration starts over on top of it."""

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True


_held: dict[Path, list[int]] = {}
"""Locks this process holds: folder -> [descriptor, depth], so nested owners (the command
and the Trainer inside it) share one lock instead of refusing each other."""


@contextlib.contextmanager
def writer_lock(folder: str | Path, what: str = "run directory") -> Iterator[Path]:
    """Hold `folder` (created if needed) for this process; another process holding it gets
    an AekitError naming the holder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AekitError(f"{folder} is a file, not a folder for a {what}")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AekitError(f"cannot create the {what} {folder}: {e.strerror}") from None
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    try:
        fd = _acquire(folder / LOCK, what)
    except PermissionError:
        raise AekitError(f"cannot write into the {what} {folder}: permission denied") from None
    _held[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _held[key]
        # Unlinked before the unlock: a process waiting on this inode then finds it gone and
        # retries on a fresh file, so two holders never lock two different files.
        with contextlib.suppress(OSError):
            (folder / LOCK).unlink()
        os.close(fd)
        if created:  # a command refused before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                folder.rmdir()


def _acquire(path: Path, what: str) -> int:
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            holder = _holder(fd)
            os.close(fd)
            raise AekitError(
                f"{path.parent} is in use by another aekit process ({holder}); wait for it to "
                f"finish or stop it — two writers would mix their files in one {what}"
            )
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(_identity()).encode())
            return fd
        os.close(fd)  # the holder released and removed it between our open and lock: retry
    raise AekitError(f"could not take the lock {path}: it keeps being replaced")


def _identity() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"process {int(info['pid'])} on {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


def claim_run_dir(run_dir: Path, sections: dict[str, Any], *, overwrite: bool = False) -> None:
    """Make `run_dir` ready for a new run described by config sections `sections`, or refuse
    with a message saying what it holds. The caller holds `writer_lock(run_dir)`."""
    from aekit.train import checkpoint as ckpt

    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    entries = [name for name in entries if name != LOCK and not _temporary(name)]
    if not entries:
        return
    if (run_dir / ckpt.LAST).is_file():
        if not overwrite:
            raise AekitError(
                f"{run_dir} already holds a run; resume it (aekit train --resume {run_dir}), "
                "choose another --out, or pass --overwrite to replace it"
            )
    elif not overwrite and _same_unfinished_run(run_dir, entries, sections):
        return
    saved = _saved_config(run_dir)
    if saved is None:
        raise AekitError(
            f"--out {run_dir} holds files that are not an aekit run ({', '.join(entries[:3])}"
            f"{', ...' if len(entries) > 3 else ''}); choose an empty or new folder"
        )
    if not overwrite:
        what = "a finished run" if (run_dir / ckpt.WEIGHTS).exists() else "another run"
        raise AekitError(
            f"--out {run_dir} holds {what} ({_describe(saved)}); choose another --out, or pass "
            "--overwrite to replace it"
        )
    for name in entries:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _same_unfinished_run(run_dir: Path, entries: list[str], sections: dict[str, Any]) -> bool:
    checkpoints = run_dir / "checkpoints"
    if set(entries) - UNFINISHED_FILES - {"checkpoints"} or (
        checkpoints.is_dir() and any(not _temporary(p.name) for p in checkpoints.iterdir())
    ):
        return False
    saved = _saved_config(run_dir)
    if saved is None:
        return False
    # Through JSON, so tuples and lists compare as the saved file holds them.
    wanted = json.loads(json.dumps({k: sections.get(k) for k in COMPARED_SECTIONS}))
    return all(saved.get(k) == wanted[k] for k in COMPARED_SECTIONS)


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and "aekit_version" in saved else None


def _describe(saved: dict[str, Any]) -> str:
    model = saved.get("model")
    recipe = model.get("recipe") if isinstance(model, dict) else None
    return f"a {recipe} model" if isinstance(recipe, str) else "its config.json"


def _temporary(name: str) -> bool:
    """A temporary file of `io.atomic_path`: `.NAME.<random>.tmp`."""
    return name.startswith(".") and name.endswith(".tmp")


TRAINER_FILES = (
    "config.json",
    "model.safetensors",
    "last.safetensors",
    "metrics.jsonl",
    "steps.jsonl",
)
"""The files the trainer writes atomically; only their temporaries are its to clean up (an
`aekit eval` of the run may be writing eval.json beside it)."""


def remove_temporaries(run_dir: Path) -> None:
    """Temporary files that a trainer killed mid-write left behind (up to a checkpoint's
    size each). Only the lock holder calls this, so no live trainer owns them."""
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            name = path.name
            if _temporary(name) and any(name.startswith(f".{t}.") for t in TRAINER_FILES):
                with contextlib.suppress(OSError):
                    path.unlink()
