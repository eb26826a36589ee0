"""The released corrupted test sets (`lrn_cli.data.released`): CIFAR-10-C .npy folders and
ImageNet-C trees, written small in tmp_path; the bytes and labels read back, per-class selection,
the eval transform, and every UserError naming its file."""
import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from lrn_cli.data import stratified_subset
from lrn_cli.data.cifar import CLASSES
from lrn_cli.data.released import (
    RELEASED_NAMES,
    available,
    open_released,
    quiet_torchvision,
    resize_center_crop,
)
from lrn_cli.errors import UserError

BLOCK = 50  # images per severity block (10,000 in the release)
NAMES = ["gaussian_noise", "fog", "jpeg_compression"]
SEV = [1, 2, 3, 4, 5]


def write_cifar_c(root, names=NAMES, block=BLOCK, side=32, labels=None):
    """root/<name>.npy (5 * block, side, side, 3) random uint8, root/labels.npy: i % 10, 5 times."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in names:
        arrays[name] = rng.integers(0, 256, (5 * block, side, side, 3), dtype=np.uint8)
        np.save(root / f"{name}.npy", arrays[name])
    if labels is None:
        labels = np.tile(np.arange(block) % 10, 5).astype(np.int64)
    np.save(root / "labels.npy", labels)
    return arrays


def read_all(rel, name, severity, batch_size=16):
    xs, ys = zip(*rel.batches(name, severity, batch_size))
    return torch.cat(xs), torch.cat(ys)


def message(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and ("eval.corruptions_root: " in text or "eval.corruptions: " in text)
    return text


# ----------------------------------------------------------------------------- CIFAR-10-C

def test_cifar_c_bytes_and_labels_per_severity(tmp_path):
    arrays = write_cifar_c(tmp_path)
    rel = open_released(tmp_path, NAMES, SEV, CLASSES)
    assert (rel.source, rel.format, rel.count) == ("released", "cifar-c", BLOCK)
    assert available(tmp_path) == set(NAMES)
    assert str(tmp_path) in rel.description and f"{BLOCK} images" in rel.description
    for name in NAMES:
        for s in SEV:
            x, y = read_all(rel, name, s)
            assert x.dtype == torch.uint8 and x.shape == (BLOCK, 3, 32, 32) and x.is_contiguous()
            want = arrays[name][(s - 1) * BLOCK:s * BLOCK]
            assert torch.equal(x, torch.from_numpy(want).permute(0, 3, 1, 2))
            assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(BLOCK)]


def test_cifar_c_per_class_is_stratified_and_shared(tmp_path):
    arrays = write_cifar_c(tmp_path)
    rel = open_released(tmp_path, NAMES, [2, 5], CLASSES, per_class=2)
    assert rel.count == 20 and torch.bincount(rel.labels).tolist() == [2] * 10
    block_labels = torch.arange(BLOCK) % 10
    idx = stratified_subset(block_labels, 2)
    assert torch.equal(rel.labels, block_labels[idx])
    for name in NAMES:
        for s in (2, 5):
            x, y = read_all(rel, name, s, batch_size=7)
            assert torch.equal(y, rel.labels)
            want = arrays[name][(s - 1) * BLOCK + idx.numpy()]
            assert torch.equal(x, torch.from_numpy(want).permute(0, 3, 1, 2))
    assert "at most 2 per class" in rel.description


def test_cifar_c_subset_of_cifar10_classes_by_name(tmp_path):
    arrays = write_cifar_c(tmp_path, names=["fog"])
    rel = open_released(tmp_path, ["fog"], [1], ["dog", "cat"])  # CIFAR-10's 5 and 3, the run's 0 and 1
    x, y = read_all(rel, "fog", 1)
    keep = [i for i in range(BLOCK) if i % 10 in (3, 5)]
    assert y.tolist() == [0 if i % 10 == 5 else 1 for i in keep]
    assert torch.equal(x, torch.from_numpy(arrays["fog"][keep]).permute(0, 3, 1, 2))


def test_cifar_c_eval_transform_and_generic_classes(tmp_path):
    arrays = write_cifar_c(tmp_path, names=["fog"])
    rel = open_released(tmp_path, ["fog"], [3], [f"c{i}" for i in range(10)],
                        eval_transform=resize_center_crop(24), image_size=24)
    x, _ = read_all(rel, "fog", 3)
    assert torch.equal(x, torch.from_numpy(arrays["fog"][2 * BLOCK:3 * BLOCK]).permute(0, 3, 1, 2)[..., 4:28, 4:28])
    assert "center 24x24" in rel.description


def test_cifar_c_reads_through_a_memory_map(tmp_path, monkeypatch):
    write_cifar_c(tmp_path, names=["fog"])
    modes = []
    real = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: modes.append(k.get("mmap_mode")) or real(*a, **k))
    rel = open_released(tmp_path, ["fog"], [1], CLASSES)
    read_all(rel, "fog", 1)
    assert modes and set(modes) == {"r"}


def test_cifar_c_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="nowhere is not a folder") as e:
        open_released(missing, ["fog"], SEV, CLASSES)
    message(e)
    with pytest.raises(UserError, match="nowhere"):
        available(missing)

    root = tmp_path / "c"
    write_cifar_c(root)
    with pytest.raises(UserError, match=r"snow\.npy is missing") as e:
        open_released(root, ["fog", "snow"], SEV, CLASSES)
    assert str(root / "snow.npy") in message(e)

    np.save(root / "fog.npy", np.zeros((5 * BLOCK, 32, 32), np.uint8))
    with pytest.raises(UserError) as e:
        open_released(root, ["fog"], SEV, CLASSES)
    assert str(root / "fog.npy") in message(e) and "(250, 32, 32)" in str(e.value) and "(250, 32, 32, 3)" in str(e.value)
    np.save(root / "fog.npy", np.zeros((5 * BLOCK, 32, 32, 3), np.float32))
    with pytest.raises(UserError, match="float32") as e:
        open_released(root, ["fog"], SEV, CLASSES)
    np.save(root / "fog.npy", np.zeros((4 * BLOCK, 32, 32, 3), np.uint8))
    with pytest.raises(UserError, match=r"shape \(200, 32, 32, 3\), expected \(250, 32, 32, 3\)"):
        open_released(root, ["fog"], SEV, CLASSES)
    (root / "fog.npy").write_bytes(b"not an array")
    with pytest.raises(UserError, match="cannot be read as a NumPy array") as e:
        open_released(root, ["fog"], SEV, CLASSES)
    assert str(root / "fog.npy") in message(e)
    with pytest.raises(UserError, match=r"eval\.corruptions: 'lighting_dim'"):
        open_released(root, ["lighting_dim"], SEV, CLASSES)


@pytest.mark.parametrize("labels, match", [
    (np.tile(np.arange(BLOCK) % 10, 5)[:-1], "not 5 equal blocks"),
    (np.concatenate([np.tile(np.arange(BLOCK) % 10, 4), (np.arange(BLOCK) + 1) % 10]), "severity 5 differ"),
    (np.tile(np.arange(BLOCK) % 11, 5), "label 10, outside the run's 10 classes"),
    (np.tile(np.arange(BLOCK) % 10 - 1, 5), "label -1"),
    (np.zeros((5 * BLOCK, 2), np.int64), "expected one integer label"),
])
def test_cifar_c_bad_labels(tmp_path, labels, match):
    write_cifar_c(tmp_path, names=["fog"], labels=labels)
    with pytest.raises(UserError, match=match) as e:
        open_released(tmp_path, ["fog"], SEV, CLASSES)
    assert str(tmp_path / "labels.npy") in message(e)


def test_cifar_c_labels_missing_or_run_classes_differ(tmp_path):
    write_cifar_c(tmp_path, names=["fog"])
    with pytest.raises(UserError, match="labels of 10 classes .* the run has 100") as e:
        open_released(tmp_path, ["fog"], SEV, [f"c{i}" for i in range(100)])
    assert str(tmp_path / "labels.npy") in message(e)
    with pytest.raises(UserError, match="outside the run's 3 classes"):
        open_released(tmp_path, ["fog"], SEV, ["a", "b", "c"])
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(UserError, match="labels.npy is missing") as e:
        open_released(tmp_path, ["fog"], SEV, CLASSES)
    assert str(tmp_path / "labels.npy") in message(e)


# ----------------------------------------------------------------------------- ImageNet-C trees

def image(label, j, size):
    """A smooth image that survives JPEG well enough: class colour plus a gradient."""
    h, w = size
    ramp = torch.linspace(0, 60, w).expand(h, w)
    base = torch.tensor([[200, 40, 40], [40, 40, 200]][label], dtype=torch.float32).view(3, 1, 1)
    return (base + ramp + 5 * j).clamp(0, 255).to(torch.uint8)


def write_tree(root, names=("fog", "snow"), severities=(1, 3), classes=("n01", "n02"), per=3, size=(40, 48)):
    """root/<name>/<severity>/<class>/<j>.JPEG, 3 images of each class, stray files beside them."""
    for name in names:
        for s in severities:
            for label, c in enumerate(classes):
                folder = root / name / str(s) / c
                folder.mkdir(parents=True)
                for j in range(per):
                    with quiet_torchvision():
                        data = encode_jpeg(image(label, j, size), quality=95)
                    (folder / f"img{j}.JPEG").write_bytes(data.numpy().tobytes())
                (folder / ".DS_Store").write_bytes(b"x")
                (folder / "notes.txt").write_text("not an image")
    (root / "README").write_text("release notes")
    return root


def test_tree_through_eval_transform(tmp_path):
    write_tree(tmp_path)
    tf = resize_center_crop(28, 32)
    rel = open_released(tmp_path, ["fog", "snow"], [1, 3], ["n02", "n01"], eval_transform=tf, image_size=28)
    assert (rel.format, rel.count) == ("imagenet-c tree", 6)
    assert available(tmp_path) == {"fog", "snow"}
    assert "center 28x28" in rel.description and "resized to 32" in rel.description
    for name in ("fog", "snow"):
        for s in (1, 3):
            batches = list(rel.batches(name, s, 4))
            assert [len(y) for _, y in batches] == [4, 2]
            x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
            assert x.shape == (6, 3, 28, 28) and x.dtype == torch.uint8
            assert y.tolist() == [0, 0, 0, 1, 1, 1]  # n02 is the run's class 0
            red = x[:, 0].float().mean((1, 2)) > x[:, 2].float().mean((1, 2))
            assert red.tolist() == [False] * 3 + [True] * 3  # n02's images are blue, n01's red
    # the transform is the image-folder one: the shorter side to 32, the center 28 (JPEG aside)
    from torchvision.io import decode_image
    with quiet_torchvision():
        raw = decode_image(str(tmp_path / "fog" / "3" / "n01" / "img1.JPEG"))
    x, _ = read_all(rel, "fog", 3)
    assert torch.equal(x[4], tf(raw.unsqueeze(0))[0])


def test_tree_at_image_size_without_transform_and_per_class(tmp_path):
    write_tree(tmp_path, names=("fog",), severities=(2,), per=5, size=(32, 32))
    rel = open_released(tmp_path, ["fog"], [2], ["n01", "n02"], per_class=2, image_size=32)
    assert rel.count == 4 and rel.labels.tolist() == [0, 0, 1, 1]
    x, y = read_all(rel, "fog", 2)
    assert x.shape == (4, 3, 32, 32) and torch.equal(y, rel.labels)
    with pytest.raises(UserError, match=r"is 32x32 px, the run's input is 28x28") as e:
        open_released(tmp_path, ["fog"], [2], ["n01", "n02"], image_size=28)
    assert str(tmp_path / "fog" / "2" / "n01" / "img0.JPEG") in message(e)


def test_eval_transform_that_cannot_make_the_input_size(tmp_path):
    write_tree(tmp_path, names=("fog",), severities=(1,), size=(40, 48))
    first = tmp_path / "fog" / "1" / "n01" / "img0.JPEG"
    with pytest.raises(UserError, match=r"eval transform fails on .*img0\.JPEG \(48x40 px") as e:
        open_released(tmp_path, ["fog"], [1], ["n01", "n02"], eval_transform=resize_center_crop(56), image_size=56)
    assert str(first) in message(e)
    with pytest.raises(UserError, match="makes 40x40 px") as e:
        open_released(tmp_path, ["fog"], [1], ["n01", "n02"], eval_transform=resize_center_crop(40), image_size=32)
    assert str(first) in message(e)


def test_tree_errors_name_the_folder_or_file(tmp_path):
    write_tree(tmp_path)
    run = {"classes": ["n01", "n02"], "eval_transform": resize_center_crop(28, 32), "image_size": 28}
    with pytest.raises(UserError, match="is missing") as e:
        open_released(tmp_path, ["fog", "frost"], [1], **run)
    assert str(tmp_path / "frost") in message(e)
    with pytest.raises(UserError, match="is missing") as e:
        open_released(tmp_path, ["fog"], [1, 2], **run)
    assert str(tmp_path / "fog" / "2") in message(e)
    with pytest.raises(UserError, match=r"class 'n03' of the run") as e:
        open_released(tmp_path, ["fog"], [1], **{**run, "classes": ["n01", "n03"]})
    assert str(tmp_path / "fog" / "1" / "n03") in message(e)

    (tmp_path / "snow" / "3" / "n02" / "img2.JPEG").unlink()
    with pytest.raises(UserError, match="lacks img2.JPEG") as e:
        open_released(tmp_path, ["fog", "snow"], [1, 3], **run)
    assert str(tmp_path / "snow" / "3" / "n02") in message(e)

    for f in (tmp_path / "snow" / "1" / "n01").glob("*.JPEG"):
        f.unlink()
    with pytest.raises(UserError, match="holds no images") as e:
        open_released(tmp_path, ["snow"], [1], **run)
    assert str(tmp_path / "snow" / "1" / "n01") in message(e)

    bad = tmp_path / "fog" / "1" / "n01" / "img0.JPEG"  # the first image: caught when opening
    bad.write_bytes(b"\xff\xd8\xff" + b"garbage" * 20)
    with pytest.raises(UserError, match="cannot be decoded") as e:
        open_released(tmp_path, ["fog"], [1], **run)
    assert str(bad) in message(e)
    bad = tmp_path / "fog" / "3" / "n02" / "img1.JPEG"  # a later one: caught when its batch is read
    bad.write_bytes(b"not an image at all")
    rel = open_released(tmp_path, ["fog"], [3], **run)
    with pytest.raises(UserError, match="cannot be decoded") as e:
        read_all(rel, "fog", 3)
    assert str(bad) in message(e)


def test_parent_of_the_release_is_pointed_at(tmp_path):
    write_cifar_c(tmp_path / "CIFAR-10-C", names=["fog"])
    with pytest.raises(UserError, match="did you mean") as e:
        open_released(tmp_path, ["fog"], [1], CLASSES)
    assert str(tmp_path / "CIFAR-10-C") in message(e)


def test_npy_without_labels_is_named(tmp_path):
    write_cifar_c(tmp_path, names=["fog"])
    (tmp_path / "labels.npy").unlink()
    assert available(tmp_path) == set()
    with pytest.raises(UserError, match="labels.npy is missing"):
        open_released(tmp_path, ["fog"], [1], CLASSES)


def test_no_names_asked_for(tmp_path):
    write_tree(tmp_path / "t", names=("fog",), severities=(1,))
    assert open_released(tmp_path / "t", [], SEV, ["n01"]).count == 0
    write_cifar_c(tmp_path / "c", names=["fog"])
    assert open_released(tmp_path / "c", [], SEV, CLASSES).count == BLOCK


def test_released_names():
    assert len(RELEASED_NAMES) == 19 and len(set(RELEASED_NAMES)) == 19
    assert RELEASED_NAMES[:15][-1] == "jpeg_compression" and "saturate" in RELEASED_NAMES
