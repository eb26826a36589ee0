"""CIFAR-10 in the standard python format (`cifar-10-batches-py`), read by the project itself.

The structure is checked (six batch files, N x 3072 uint8 rows, labels 0-9). A checksum that
differs from the official release is only a warning, since re-encoded copies (such as the JPEG
copy this project is tested on) are legitimate; a missing or unreadable file is an error.
"""
from __future__ import annotations

import hashlib
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
# md5 sums of the official release (as listed by torchvision.datasets.CIFAR10)
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
HOW_TO_GET = (f"set data.download: true on a machine with internet, or point data.root at a folder "
              f"holding {FOLDER} (e.g. --set data.root=/path/to/data)")


class DataWarning(UserWarning):
    """Something about the data worth telling the user that does not stop the run."""


def find_folder(root: Path) -> Path | None:
    """`root/cifar-10-batches-py`, or `root` itself if it holds the batch files."""
    for cand in (root / FOLDER, root):
        if (cand / "test_batch").exists() or (cand / "data_batch_1").exists():
            return cand
    return None


def download(root: Path) -> Path:
    """Download and extract the official archive into `root` (nothing is left behind on failure)."""
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cifar-download-", dir=root))
    try:
        download_and_extract_archive(URL, str(tmp), filename="cifar-10-python.tar.gz", md5=ARCHIVE_MD5)
        shutil.move(str(tmp / FOLDER), str(root / FOLDER))
    except Exception as e:  # no network, a proxy, a corrupt download ...
        raise UserError(f"could not download CIFAR-10 from {URL} into {root} ({e.__class__.__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'no details'}); without a network, "
                        f"point data.root at a local copy of {FOLDER}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / FOLDER


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (N x 3072 uint8, N int64 labels), with its structure checked."""
    if not path.exists():
        raise UserError(f"{path}: missing CIFAR-10 file (looked in {path.parent}); the folder needs "
                        f"{', '.join(MD5)}; {HOW_TO_GET}")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
    except Exception as e:
        raise UserError(f"{path}: truncated or not a CIFAR-10 batch file ({e.__class__.__name__}); "
                        f"replace it with a fresh copy; {HOW_TO_GET}") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise UserError(f"{path}: not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise UserError(f"{path}: 'data' must be N x 3072 uint8 (32x32 RGB), got "
                        f"{shape} {getattr(data, 'dtype', type(data).__name__)}")
    if labels.shape != (data.shape[0],) or labels.size == 0:
        raise UserError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{path}: labels must be 0-9, found {labels.min()}..{labels.max()}")
    return data, labels.astype(np.int64)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load(root: str | Path, download_ok: bool = False):
    """Read CIFAR-10 -> ((train_x, train_y), (test_x, test_y), classes); x is N x 3 x 32 x 32 uint8."""
    root = Path(root).expanduser()
    folder = find_folder(root)
    if folder is None:
        if not download_ok:
            raise UserError(f"{root}: no CIFAR-10 here (looked for {root / FOLDER}); {HOW_TO_GET}")
        folder = download(root)
    parts = {name: read_batch(folder / name) for name in (*TRAIN_FILES, "test_batch")}
    mismatched = [name for name in parts if _md5(folder / name) != MD5[name]]
    if mismatched:
        warnings.warn(f"{folder}: {len(mismatched)} of 6 CIFAR-10 files differ from the official release "
                      "(md5); fine for a re-encoded copy, but numbers will not match published ones",
                      DataWarning, stacklevel=2)

    def as_tensors(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([parts[n][0] for n in names]).reshape(-1, 3, 32, 32)
        y = np.concatenate([parts[n][1] for n in names])
        return torch.from_numpy(x), torch.from_numpy(y)

    return as_tensors(TRAIN_FILES), as_tensors(["test_batch"]), list(CLASSES)
