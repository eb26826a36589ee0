"""TensorBoard's HParams dashboard for sweeps, without TensorFlow.

The sweep root gets the experiment (`hparams_config_pb`: the swept keys and the metrics); each
run directory gets its session (`hparams_pb` with a `trial_id` shared by the seeds of one
config, so they form one session group) and its end status. Each is one small event file
with a fixed name, replaced atomically, so writing it again (every `lrn report`) never
duplicates anything. The run's own scalars (test/acc ...) are the metric values.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp

CONFIG_FILE = "events.out.tfevents.0.lrn-hparams-config"
RUN_FILE = "events.out.tfevents.0.lrn-hparams"
METRICS = [("test/acc", "test accuracy"), ("test/top5", "test top-5"), ("test/loss", "test loss"),
           ("train/loss", "train loss"), ("val/acc", "validation accuracy")]
STATUS = {"completed": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE,
          "diverged": api_pb2.STATUS_FAILURE, "running": api_pb2.STATUS_RUNNING,
          "interrupted": api_pb2.STATUS_UNKNOWN, "pending": api_pb2.STATUS_UNKNOWN}


def _write_events(path: Path, summaries: list[summary_pb2.Summary]) -> None:
    """Write an event file holding `summaries` at `path`, atomically (TensorBoard's own record
    format and protos; no torch, so a sweep's parent process stays light)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    def write(f: Any) -> None:
        w = RecordWriter(f)
        now = time.time()
        w.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for s in summaries:
            w.write(event_pb2.Event(wall_time=now, step=0, summary=s).SerializeToString())

    from .runs import atomic_write

    atomic_write(path, write, mode="wb")


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


def write_hparams_config(sweep_dir: Path, spec: Any, runs: list[Any]) -> None:
    """The experiment at the sweep root: one HParam per swept key, with the values it takes."""
    from .sweep import swept_keys

    hparams = []
    for key in swept_keys(spec):
        values = sorted({hparam_value(get_key(r.config, key)) for r in runs if get_key(r.config, key) is not None},
                        key=str)
        kinds = {type(v) for v in values}
        domain = hp.Discrete(values) if len(kinds) == 1 and values else None
        hparams.append(hp.HParam(key, domain))
    metrics = [hp.Metric(tag, display_name=name) for tag, name in METRICS]
    _write_events(Path(sweep_dir) / CONFIG_FILE, [hp.hparams_config_pb(hparams, metrics)])


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
    _write_events(Path(run_dir) / RUN_FILE, [start, end])


def board(logdir: Path, port: int) -> None:
    """Serve TensorBoard on 127.0.0.1:port until Ctrl-C."""
    exe = shutil.which("tensorboard")
    import subprocess
    import sys

    cmd = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    subprocess.run([*cmd, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)], check=False)
