"""The CIFAR-10 reader, class and per-class selection, the validation split, and augmentation."""
import pickle
import urllib.error
import warnings

import numpy as np
import pytest
import torch

from lrn_cli.config import load_config
from lrn_cli.data import cifar, load_data, stratified_subset
from lrn_cli.data.augment import channel_stats, crop_flip, normalize
from lrn_cli.errors import UserError



def data_cfg(root, **data):
    return load_config({"data": {"root": str(root), **data}}).data


def test_reads_valid_batches_and_warns_about_checksums(tiny_cifar):
    with pytest.warns(cifar.DataWarning, match="differ from the official release"):
        (tx, ty), (sx, sy), classes = cifar.load(tiny_cifar)
    assert tx.shape == (100, 3, 32, 32) and tx.dtype == torch.uint8 and sx.shape == (20, 3, 32, 32)
    assert ty.dtype == torch.int64 and set(ty.tolist()) == set(range(10)) and classes[3] == "cat"
    # rows are R, G, B planes of 32x32: pixel (0, 0, 1) is the second byte of the first row
    raw = pickle.load(open(tiny_cifar / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")
    assert tx[0, 0, 0, 1] == raw["data"][0, 1] and tx[0, 1, 0, 0] == raw["data"][0, 1024]


def test_root_may_be_the_batches_folder_itself(tiny_cifar):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (tx, _), _, _ = cifar.load(tiny_cifar / "cifar-10-batches-py")
    assert len(tx) == 100


def test_missing_folder_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(UserError) as e:
        cifar.load(tmp_path / "nothing")
    assert "nothing/cifar-10-batches-py" in str(e.value) and "data.download" in str(e.value)
    assert "data.root" in str(e.value)


def test_missing_file(tiny_cifar):
    (tiny_cifar / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3: missing CIFAR-10 file"):
        cifar.load(tiny_cifar)


def test_truncated_file(tiny_cifar):
    path = tiny_cifar / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="test_batch: truncated or not a CIFAR-10 batch"):
        cifar.load(tiny_cifar)


@pytest.mark.parametrize("batch, needle", [
    ({"data": np.zeros((10, 1000), np.uint8), "labels": [0] * 10}, "N x 3072 uint8"),
    ({"data": np.zeros((10, 3072), np.float32), "labels": [0] * 10}, "N x 3072 uint8"),
    ({"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 9}, "9 labels for 10 images"),
    ({"data": np.zeros((10, 3072), np.uint8), "labels": [10] * 10}, "labels must be 0-9"),
    ({"images": np.zeros((10, 3072), np.uint8)}, "expected a dict with 'data' and 'labels'"),
])
def test_wrong_structure(tiny_cifar, batch, needle):
    with open(tiny_cifar / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(UserError, match=needle):
        cifar.load(tiny_cifar)


def test_failed_download_says_why_and_how_to_point_at_a_copy(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(UserError) as e:
        cifar.load(tmp_path / "data", download_ok=True)
    msg = str(e.value)
    assert "could not download CIFAR-10" in msg and "name resolution" in msg and "data.root" in msg
    assert list((tmp_path / "data").iterdir()) == []  # nothing half-downloaded is left


def test_classes_per_class_and_val_split(tiny_cifar):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = load_data(data_cfg(tiny_cifar, classes=["cat", "dog", "ship"], per_class=6, val_split=0.5))
    assert d.classes == ["cat", "dog", "ship"] and d.num_classes == 3
    assert len(d.train) + len(d.val) == 18 and len(d.val) == 9
    assert torch.bincount(d.val.y).tolist() == [3, 3, 3] and set(d.test.y.tolist()) == {0, 1, 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = load_data(data_cfg(tiny_cifar, classes=2))
    assert first.classes == ["airplane", "automobile"]
    with pytest.raises(UserError, match="no class 'cats'.*did you mean 'cat'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_data(data_cfg(tiny_cifar, classes=["cats", "dog"]))


def test_stratified_subset_is_seeded_and_balanced():
    y = torch.arange(1000) % 4
    a, b = stratified_subset(y, 10), stratified_subset(y, 10)
    assert torch.equal(a, b) and torch.bincount(y[a]).tolist() == [10, 10, 10, 10]
    assert len(stratified_subset(y, 10_000)) == 1000


def test_synthetic_is_deterministic_and_balanced():
    cfg = load_config({"data": {"dataset": "synthetic", "classes": 3, "per_class": 5, "test_per_class": 2}}).data
    a, b = load_data(cfg), load_data(cfg)
    assert torch.equal(a.train.x, b.train.x) and torch.bincount(a.train.y).tolist() == [5, 5, 5]
    assert a.test.x.shape == (6, 3, 32, 32)


def test_crop_flip_takes_a_crop_of_the_padded_image_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = crop_flip(x, pad=2, flip=True, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        crops = [padded[i, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        plain = any(torch.equal(out[i], cr) for cr in crops)
        mirrored = any(torch.equal(out[i], cr.flip(-1)) for cr in crops)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54  # about half are flipped


def test_crop_flip_off_is_identity_and_flip_only_mirrors():
    x = torch.randint(0, 256, (16, 3, 5, 5), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert crop_flip(x, 0, False, g) is x
    out = crop_flip(x, 0, True, g)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(out, x))


def test_normalization_gives_zero_mean_unit_std():
    x = torch.randint(0, 200, (500, 3, 6, 6), dtype=torch.uint8)
    mean, std = channel_stats(x)
    assert torch.allclose(mean, x.double().mean(dim=(0, 2, 3)).float())
    z = normalize(x, mean, std)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


@pytest.mark.parametrize("mode", ["unit", "caffe", "none"])
def test_input_scale_modes(mode):
    """data.normalize: unit gives per-channel mean 0 and std 1; caffe 0-255 values minus the
    channel mean (std as the data's, in pixel units); none pixels in [0, 1]."""
    d = load_data(load_config({"data": {"dataset": "synthetic", "classes": 4, "per_class": 32,
                                        "normalize": mode}}).data)
    x = normalize(d.train.x, d.mean, d.std).double()
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    raw_mean, raw_std = channel_stats(d.train.x)
    if mode == "unit":
        assert torch.allclose(mean, torch.zeros(3, dtype=torch.double), atol=1e-4)
        assert torch.allclose(std, torch.ones(3, dtype=torch.double), atol=1e-3)
    elif mode == "caffe":
        assert torch.allclose(mean, torch.zeros(3, dtype=torch.double), atol=1e-3)
        assert torch.allclose(std, raw_std.double(), rtol=1e-3)
        assert x.abs().max() > 50  # 0-255 units: the scale LRN's alpha was chosen for in Caffe
    else:
        assert x.min() >= 0 and x.max() <= 1 and torch.allclose(mean, raw_mean.double() / 255, atol=1e-4)
    assert d.info["mean"] == [float(v) for v in d.mean] and d.info["std"] == [float(v) for v in d.std]


def test_input_scale_is_part_of_the_identity_only_when_not_the_default():
    unit, caffe = (load_config({}, [f"data.normalize={m}"]) for m in ("unit", "caffe"))
    assert unit.hash() == load_config({}).hash() and caffe.hash() != unit.hash()
    assert "normalize" not in unit.identity()["data"] and unit.legacy_hash() is not None
    assert caffe.legacy_hash() is None  # the code before had no such key
