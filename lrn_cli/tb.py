"""TensorBoard's HParams dashboard for sweeps, without TensorFlow.

The sweep root gets the experiment (`hparams_config_pb`: the swept keys and the metrics); each
run directory gets its session (`hparams_pb` with a `trial_id` shared by the seeds of one
config, so they form one session group) and its end status. Each is one small event file
with a fixed name, replaced atomically, so writing it again (every `lrn report`) never
duplicates anything. The run's own scalars (test/acc ...) are the metric values.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp

from .executors import end_with_parent
from .layout import HPARAMS_CONFIG as CONFIG_FILE, HPARAMS_RUN as RUN_FILE
from .runs import SIGNAL_EXIT, Status, atomic_write

METRICS = [("test/acc", "test accuracy"), ("test/top5", "test top-5"), ("test/loss", "test loss"),
           ("train/loss", "train loss"), ("val/acc", "validation accuracy"),
           # robustness to common corruptions: the per-run evaluation writes the first four (fractions;
           # drops are clean minus corrupted accuracy), `lrn report` the last two (1.0 = the baseline's
           # mCE), which depend on the sweep's baseline (robust_report.py)
           ("robust/corrupted_acc", "mean corrupted accuracy"), ("robust/drop", "drop under corruption"),
           ("robust/lighting_drop", "drop under lighting"), ("robust/noise_drop", "drop under noise"),
           ("robust/mce", "mCE (1 = baseline)"), ("robust/relative_mce", "relative mCE (1 = baseline)")]
STATUS = {Status.COMPLETED: api_pb2.STATUS_SUCCESS, Status.FAILED: api_pb2.STATUS_FAILURE,
          Status.DIVERGED: api_pb2.STATUS_FAILURE, Status.RUNNING: api_pb2.STATUS_RUNNING}  # else unknown


def write_events(path: Path, summaries: list[summary_pb2.Summary | tuple[summary_pb2.Summary, int]]) -> None:
    """Write an event file holding `summaries` (each at step 0, or a (summary, step) pair) at
    `path`, atomically (TensorBoard's own record format and protos; no torch, so a sweep's
    parent process stays light). A file of a fixed name, rewritten whole, never duplicates."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    def write(f: Any) -> None:
        w = RecordWriter(f)
        now = time.time()
        w.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for item in summaries:
            summary, step = item if isinstance(item, tuple) else (item, 0)
            w.write(event_pb2.Event(wall_time=now, step=step, summary=summary).SerializeToString())

    atomic_write(path, write, mode="wb")


def write_scalars(path: Path, values: dict[str, float], step: int = 0) -> None:
    """An event file at `path` holding one scalar per tag at `step`, replacing it atomically."""
    write_events(Path(path), [(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(v))]),
                               step) for tag, v in values.items()])


def hparam_value(value: Any) -> bool | float | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def get_key(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit():
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def run_hparams(config: dict[str, Any], keys: list[str]) -> dict[str, bool | float | str]:
    return {k: hparam_value(get_key(config, k)) for k in keys if get_key(config, k) is not None}


def write_hparams_config(sweep_dir: Path, keys: list[str], configs: list[dict[str, Any]]) -> None:
    """The experiment at the sweep root: one HParam per swept key, with the values that the runs'
    configs give it."""
    hparams = []
    for key in keys:
        values = sorted({hparam_value(get_key(c, key)) for c in configs if get_key(c, key) is not None}, key=str)
        kinds = {type(v) for v in values}
        domain = hp.Discrete(values) if len(kinds) == 1 and values else None
        hparams.append(hp.HParam(key, domain))
    metrics = [hp.Metric(tag, display_name=name) for tag, name in METRICS]
    write_events(Path(sweep_dir) / CONFIG_FILE, [hp.hparams_config_pb(hparams, metrics)])


def write_run_hparams(run_dir: Path, hparams: dict[str, Any], trial_id: str, status: str,
                      start_time: float | None = None) -> None:
    """A run's session: its hparams, its group (trial_id) and how it ended."""
    start = hp.hparams_pb(hparams, trial_id=trial_id, start_time_secs=start_time)
    end = summary_pb2.Summary()
    info = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=STATUS.get(status, api_pb2.STATUS_UNKNOWN),
                                                        end_time_secs=time.time()))
    end.value.add(tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(info),
                  tensor=metadata.NULL_TENSOR)
    write_events(Path(run_dir) / RUN_FILE, [start, end])


def board(logdir: Path, port: int, grace_s: float = 10.0) -> int:
    """Serve TensorBoard on 127.0.0.1:port until it exits, or Ctrl-C or SIGTERM stops this process
    -> the exit code (130/143 when stopped). TensorBoard is a child process that goes with this
    one: SIGTERM is passed on to it (SIGKILL after `grace_s`), and it dies with this process even
    on kill -9."""
    exe = shutil.which("tensorboard")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    stopped: list[str] = []
    old = {s: signal.signal(s, lambda signum, frame: stopped.append(signal.Signals(signum).name))
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen([*cmd, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
                                preexec_fn=end_with_parent)
        deadline = None
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if stopped and deadline is None:
                    proc.send_signal(signal.SIGTERM)  # TensorBoard serves until SIGINT or SIGTERM
                    deadline = time.time() + grace_s
                elif deadline is not None and time.time() > deadline:
                    proc.kill()
        finally:
            if proc.poll() is None:  # an exception here: leave nothing behind
                proc.kill()
                proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return SIGNAL_EXIT[stopped[0]] if stopped else code
