"""Run directories: creation, atomic writes and the files other parts rely on.

A run directory holds `config.yaml` (fully resolved), `metrics.jsonl` (one object per epoch),
`summary.json`, `checkpoint.pt`, `predictions.npy` and `test_labels.npy`, and TensorBoard event
files. Every file that must survive a
crash is written to a temporary file in the same folder and renamed into place.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)
CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"
# the last epoch's top-1 class of every test image and its true class (int16, the test split's
# order): what paired tests between runs on the same test images need (report.py)
PREDICTIONS, TEST_LABELS = "predictions.npy", "test_labels.npy"


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


def _flock(path: Path, exclusive: bool, wait: bool) -> int | None:
    """An open descriptor of `path` that holds its flock (exclusive: the file is created if
    missing; shared: FileNotFoundError if it is), or None when, without `wait`, another process
    holds a conflicting lock. The kernel drops the lock when its holder dies, even by kill -9,
    and NFS/Lustre extend it to every machine that mounts the file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        return fd
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def flock(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the file `path` (created if missing) for the with-block -> True;
    with wait=False, -> False at once (holding nothing) when another process holds it."""
    fd = _flock(Path(path), exclusive=True, wait=wait)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def is_locked(folder: Path) -> bool:
    """Whether a live process holds `folder`'s lock (see `locked`), on this machine or another
    that shares the filesystem. A shared lock probes it: reading needs no write access."""
    try:
        fd = _flock(Path(folder) / LOCK, exclusive=False, wait=False)
    except FileNotFoundError:
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


@contextmanager
def locked(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (its `.lock` file) or fail at once with a UserError.
    A few retries over 0.2 s let a reader's `is_locked` probe (microseconds) pass."""
    for _ in range(10):
        with flock(Path(folder) / LOCK, wait=False) as held:
            if held:
                yield
                return
        time.sleep(0.02)
    raise UserError(f"{folder}: {what} is in use by another lrn process; wait for it to finish "
                    "or stop it first")


# ----------------------------------------------------------------------------- status

class Status(str, Enum):
    """A run's status, as `summary.json` records it and as readers take it (`run_status`)."""

    PENDING = "pending"          # no summary: not started
    RUNNING = "running"          # a live process holds the run directory
    COMPLETED = "completed"
    FAILED = "failed"            # an error (the summary says which, and where the log is)
    DIVERGED = "diverged"        # the loss became NaN or infinite
    INTERRUPTED = "interrupted"  # stopped before the end (Ctrl-C, SIGTERM, a crash); resumes from its checkpoint

    def __str__(self) -> str:  # "completed", in messages and JSON alike
        return self.value

    __hash__ = str.__hash__  # a key of a dict or set that raw strings find too


FAILURES = (Status.FAILED, Status.DIVERGED)  # ended without a result: exit code 1
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def exit_code(status: str, signal: str | None = None) -> int:
    """The exit code of a command whose run (or sweep) ended in `status`: 0 completed; 130 or 143
    interrupted by SIGINT or SIGTERM (`signal`, its name; SIGINT when not known); 1 otherwise
    (failed, diverged)."""
    if status == Status.COMPLETED:
        return 0
    if status == Status.INTERRUPTED:
        return SIGNAL_EXIT.get(signal or "SIGINT", 130)
    return 1


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run directory's summary.json ({} if none) with its effective `status` (a Status), the one
    every reader goes by: `running` only while a live process holds the run directory's lock. A
    `running` summary without one is `interrupted`: its process crashed, was killed, or could not
    write its end (a full disk), and the run resumes from its last checkpoint."""
    summary = read_json(Path(run_dir) / SUMMARY) or {}
    try:
        status = Status(summary.get("status", Status.PENDING))
    except ValueError:  # not written by lrn
        status = Status.FAILED
    if status in (Status.RUNNING, Status.PENDING):
        status = Status.RUNNING if is_locked(run_dir) else (Status.INTERRUPTED if summary else Status.PENDING)
    return {**summary, "status": status}


def run_status(run_dir: Path) -> Status:
    """The effective status of a run directory (see `read_summary`)."""
    return read_summary(run_dir)["status"]


NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_name(name: str, what: str = "--name") -> None:
    """A run directory's name: one path component of letters, digits and `_.-`."""
    if not NAME_RE.match(name) or name in (".", ".."):
        raise UserError(f"{what} {name!r}: a run name is letters, digits and _.- (one folder name, not "
                        "'.' or '..'); e.g. --name cifar_lrn")


def check_out(out: str | Path, what: str = "--out") -> None:
    """`out` is, or can be made, a folder: the first part of it that exists is not a file."""
    out = Path(out)
    there = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not there.is_dir():
        raise UserError(f"{what} {out}: {there} is a file, not a folder; give a folder for the run directories")


def new_run_dir(out: str | Path, name: str) -> Path:
    """Create `out/name` (or `out/name-2`, `-3` ... if taken); never reuses an existing folder."""
    out = Path(out)
    check_out(out)
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
