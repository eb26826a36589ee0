import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
LOCAL_CIFAR_TEST = REPO.parent / "data" / "cifar-10-batches-py" / "test_batch"  # a converted copy, if the machine has one


def write_cifar_batches(folder: Path, n: int = 20, seed: int = 0) -> Path:
    """Small generated CIFAR-10 batch files in the standard format (n images per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in np.arange(n) % 10], "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"]}, f)
    return folder


@pytest.fixture
def tiny_cifar(tmp_path: Path) -> Path:
    """A data.root holding small generated cifar-10-batches-py files."""
    write_cifar_batches(tmp_path / "cifar" / "cifar-10-batches-py")
    return tmp_path / "cifar"


@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory) -> Path:
    """A data.root with the real CIFAR-10 copy from ../shared/data, converted once per session."""
    script = SHARED_DATA / "make_cifar10_batches.py"
    if not (script.exists() and (SHARED_DATA / "cifar10-jpeg.tar.gz").exists()):
        pytest.skip(f"the CIFAR-10 copy is not at {SHARED_DATA} (only the project's own checkout has it)")
    root = tmp_path_factory.mktemp("real_cifar")
    subprocess.run([sys.executable, str(script), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module of small-tensor tests: as fast, and it leaves the other
    core to whatever else runs (use with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cifar_test_images(request):
    """The first 1,000 CIFAR-10 test images, a uint8 torch tensor (1000, 3, 32, 32): from the
    converted copy next to the checkout (../data) if there is one, else from the shared JPEG copy
    that the real_cifar fixture converts (skipped where neither exists)."""
    import torch

    path = LOCAL_CIFAR_TEST
    if not path.exists():
        path = request.getfixturevalue("real_cifar") / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")["data"][:1000]
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).view(-1, 3, 32, 32)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lrn ARGS` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "lrn_cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
