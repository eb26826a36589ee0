"""Run directories: creation, atomic writes and the files other parts rely on.

A run directory holds `config.yaml` (fully resolved), `metrics.jsonl` (one object per epoch),
`summary.json`, `checkpoint.pt` and TensorBoard event files. Every file that must survive a
crash is written to a temporary file in the same folder and renamed into place.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)
CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Call `write(file)` on a temporary file next to `path`, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give it a normal file's mode
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a line cut short by a crash is dropped)."""
    rows = []
    try:
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    except FileNotFoundError:
        pass
    return rows


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


LOCK = ".lock"


def is_locked(folder: Path) -> bool:
    """Whether a live process holds `folder`'s lock (see `locked`), on this machine or another
    that shares the filesystem."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def locked(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (its `.lock` file) or fail at once with a UserError.
    The kernel drops the lock when the process dies, even by kill -9."""
    fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{folder}: {what} is in use by another lrn process; wait for it to finish "
                        "or stop it first") from None
    try:
        yield
    finally:
        os.close(fd)


def new_run_dir(out: str | Path, name: str) -> Path:
    """Create `out/name` (or `out/name-2`, `-3` ... if taken); never reuses an existing folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory name under {out} for {name}")


def default_run_name(config_name: str) -> str:
    return f"{config_name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def git_commit() -> str | None:
    """The commit of the lrn source tree, where it is a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(threads: int, device: str, nproc: int = 1) -> dict[str, Any]:
    """Where a run ran; threads are per process, nproc the processes it trained on."""
    import torch

    from . import __version__, perf

    return {
        "lrn": __version__, "git_commit": git_commit(), "torch": torch.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "threads": threads, "device": device, "nproc": nproc, "malloc_keeps_freed_memory": perf.applied(),
    }
