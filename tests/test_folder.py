"""Image folders: layouts, formats, unreadable files, class and per-class selection, the cache,
the ImageNet-style augmentation, and `lrn train` end to end on a slice of Imagenette."""
import json
import os
import tarfile
import warnings

import pytest
import torch
from PIL import Image

from lrn_cli.config import load_config
from lrn_cli.data import DataWarning, folder, load_data
from lrn_cli.data.augment import center_crop, crop_boxes, normalize, random_resized_crop_flip
from lrn_cli.errors import UserError

from conftest import REPO, SHARED_DATA, run_cli

COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]  # class i's images are COLORS[i]


def solid(path, color, size=(40, 30), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path, fmt)
    return path


def make_tree(root, classes=3, train=6, val=2, ext="jpg"):
    """root/train/c<i>/*.jpg and root/val/c<i>/*.jpg, every image of class i in COLORS[i]."""
    for i in range(classes):
        for split, n in (("train", train), ("val", val)):
            for j in range(n):
                solid(root / split / f"c{i}" / f"{j:03d}.{ext}", COLORS[i], size=(40 + j, 30 + i))
    return root


def cfg(root, **data):
    return load_config({"data": {"dataset": "imagefolder", "root": str(root), "image_size": 32, **data}}).data


def quiet_load(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_data(config)


def mean_colors(x):
    return x.float().mean(dim=(2, 3))


def colors_match_labels(split, classes):
    """Each image's mean colour is its class's colour: labels survived selection and the cache."""
    want = torch.tensor([COLORS[int(c[1:])] for c in classes], dtype=torch.float32)[split.y]
    return (mean_colors(split.x) - want).abs().max().item() < 8


# ----------------------------------------------------------------------------- layouts and formats

def test_imagenet_layout_is_read_with_its_labels_and_imagenet_normalization(tmp_path):
    d = load_data(cfg(make_tree(tmp_path / "ds"), val_split=0.5))
    assert d.classes == ["c0", "c1", "c2"] and d.image_size == 32 and d.channels == 3
    assert d.train.x.shape == (9, 3, 37, 37) and d.train.x.dtype == torch.uint8  # 32 * 8/7 -> 37
    assert (len(d.train), len(d.val), len(d.test)) == (9, 9, 6)
    for split in (d.train, d.val, d.test):
        assert colors_match_labels(split, d.classes)
    assert torch.allclose(d.mean, torch.tensor([123.675, 116.28, 103.53]))
    info = d.info
    assert info["layout"] == "imagefolder" and info["classes"] == d.classes and info["skipped"] == 0
    assert info["counts"] == {"train": [3, 3, 3], "val": [3, 3, 3], "test": [2, 2, 2]}
    assert info["cache"] == str(tmp_path / "ds" / ".lrn-cache") and info["cache_built"] == ["train", "val", "test"]


def test_formats_are_converted_to_rgb_and_unreadable_files_skipped_with_one_warning(tmp_path):
    root = make_tree(tmp_path / "ds", classes=2, train=2, val=1)
    c0 = root / "train" / "c0"
    solid(c0 / "gray.jpg", (90, 90, 90), mode="L")
    solid(c0 / "cmyk.jpg", COLORS[0], mode="CMYK")
    solid(c0 / "palette.png", COLORS[0], mode="P")
    Image.new("P", (20, 20), 0).save(c0 / "clear.png", transparency=0)  # a transparent palette
    Image.new("I;16", (20, 20), 40000).save(c0 / "deep.png")  # 16-bit grayscale
    solid(c0 / "photo.webp", COLORS[0])
    solid(c0 / "upper.JPEG", COLORS[0])
    good = (c0 / "000.jpg").read_bytes()
    (c0 / "truncated.jpg").write_bytes(good[:len(good) // 2])
    (c0 / "notes.jpg").write_text("not an image")
    (c0 / "readme.txt").write_text("not an image and not named like one: passed over")
    (c0 / ".hidden.jpg").write_bytes(good)
    with pytest.warns(DataWarning) as caught:
        d = load_data(cfg(root))
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1 and "skipped 2 unreadable image(s)" in msgs[0]
    assert "train/c0/notes.jpg" in msgs[0] and "train/c0/truncated.jpg" in msgs[0]
    assert d.info["skipped"] == 2
    assert sorted(d.info["skipped_files"]) == ["train/c0/notes.jpg", "train/c0/truncated.jpg"]
    assert d.info["counts"]["train"] == [9, 2]  # 2 + gray, cmyk, palette, clear, deep, webp, upper
    pixels = [tuple(c.round().int().tolist()) for c in mean_colors(d.train.x[d.train.y == 0])]
    assert (90, 90, 90) in pixels and (0, 0, 0) in pixels and (156, 156, 156) in pixels  # gray, clear, 40000/256
    near = [p for p in pixels if max(abs(a - b) for a, b in zip(p, COLORS[0])) < 8]
    assert len(near) == 6  # two RGB JPEGs, the CMYK JPEG, the palette PNG, the WebP, the .JPEG


def test_tiny_imagenet_layout_is_detected(tmp_path):
    root = tmp_path / "tiny"
    wnids = ["n01443537", "n01629819", "n01641577"]
    lines = []
    for i, w in enumerate(wnids):
        for j in range(4):
            solid(root / "train" / w / "images" / f"{w}_{j}.JPEG", COLORS[i])
        (root / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t10\t10\n")
        for j in range(2):
            name = f"val_{i * 2 + j}.JPEG"
            solid(root / "val" / "images" / name, COLORS[i])
            lines.append(f"{name}\t{w}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    d = load_data(cfg(root, classes=[wnids[2], wnids[0]]))
    assert d.info["layout"] == "tiny-imagenet" and d.classes == [wnids[2], wnids[0]]
    assert d.info["counts"] == {"train": [4, 4], "test": [2, 2]}
    want = torch.tensor([COLORS[2], COLORS[0]], dtype=torch.float32)
    for split in (d.train, d.test):
        assert (mean_colors(split.x) - want[split.y]).abs().max() < 8


def test_train_only_folder_carves_the_test_set_with_val_split(tmp_path):
    root = make_tree(tmp_path / "ds", train=10, val=0)
    assert not (root / "val").exists()
    with pytest.raises(UserError, match=r"data.val_split: .* has no val/ folder"):
        load_data(cfg(root))
    d = load_data(cfg(root, val_split=0.2))
    assert d.info["layout"] == "train-only" and d.val is None
    assert d.info["counts"] == {"train": [8, 8, 8], "test": [2, 2, 2]}
    assert colors_match_labels(d.test, d.classes)


def one_class_and(extra):
    def setup(root):
        make_tree(root, classes=1)
        extra(root)
    return setup


@pytest.mark.parametrize("setup, needle", [
    (one_class_and(lambda root: (root / "train" / "c1").mkdir()), "train/c1: no images"),
    (one_class_and(lambda root: solid(root / "train" / "c1" / "a.jpg", COLORS[1]).write_text("junk")),
     r"train/c1: no readable images \(1 unreadable"),
    (lambda root: (root / "train").mkdir(parents=True), "train: no class folders"),
    (lambda root: (root / "val").mkdir(parents=True), "ds: no train/ folder"),
    (lambda root: None, "data.root: .*ds is not a folder"),
])
def test_unusable_folders_are_errors_that_name_the_folder(tmp_path, setup, needle):
    setup(tmp_path / "ds")
    with pytest.raises(UserError, match=needle):
        quiet_load(cfg(tmp_path / "ds"))


def test_an_empty_class_folder_not_chosen_is_no_error(tmp_path):
    root = make_tree(tmp_path / "ds", classes=2)
    (root / "train" / "c9").mkdir()
    assert load_data(cfg(root, classes=["c0", "c1"])).classes == ["c0", "c1"]


# ----------------------------------------------------------------------------- selection

def test_class_forms_per_class_and_test_per_class(tmp_path):
    root = make_tree(tmp_path / "ds", classes=4, train=8, val=4)
    assert load_data(cfg(root, classes=2)).classes == ["c0", "c1"]
    d = load_data(cfg(root, classes=["c3", "c1"], per_class=5, test_per_class=3))
    assert d.classes == ["c3", "c1"] and d.info["counts"] == {"train": [5, 5], "test": [3, 3]}
    assert colors_match_labels(d.train, d.classes) and colors_match_labels(d.test, d.classes)
    again = load_data(cfg(root, classes=["c3", "c1"], per_class=5, test_per_class=3))
    assert torch.equal(again.train.x, d.train.x)  # the per-class choice is seeded
    picks = [load_data(cfg(root, classes={"random": 2, "seed": s})).classes for s in (0, 1, 2, 3, 0)]
    assert picks[0] == picks[-1] and len({tuple(p) for p in picks}) > 1 and all(p == sorted(p) for p in picks)
    with pytest.raises(UserError, match="no class 'c5'"):
        load_data(cfg(root, classes=["c5", "c1"]))
    with pytest.raises(UserError, match="5 classes asked for, the dataset has 4"):
        load_data(cfg(root, classes={"random": 5}))


def test_config_defaults_and_errors_of_imagefolder():
    c = load_config({"data": {"dataset": "imagefolder", "classes": {"random": 3}}}).data
    assert c.image_size == 112 and c.classes == {"random": 3, "seed": 0} and c.cache is None
    for data, needle in [({"image_size": 16}, "data.image_size: imagefolder crops are 32 to 512 px"),
                         ({"download": True}, "data.download: only CIFAR-10 can be downloaded"),
                         ({"classes": {"random": 3, "sed": 1}}, r"written \{random: N, seed: S\}"),
                         ({"classes": 2.5}, "a list of names, or"),
                         ({"augment": {"scale": [0.5, 0.1]}}, "data.augment.scale")]:
        with pytest.raises(UserError, match=needle):
            load_config({"data": {"dataset": "imagefolder", **data}})


# ----------------------------------------------------------------------------- the cache

def counting_decode(monkeypatch):
    calls = {"n": 0}
    real = folder.decode

    def decode(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(folder, "decode", decode)
    return calls


def test_the_cache_is_reused_and_rebuilt_only_when_files_classes_or_size_change(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ds")
    first = load_data(cfg(root))

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder, "decode", no_decoding)
    again = load_data(cfg(root, augment=False))  # other keys than files, classes and size: no rebuild
    assert torch.equal(again.train.x, first.train.x) and again.info["cache_built"] == []
    monkeypatch.undo()
    calls = counting_decode(monkeypatch)
    path = root / "train" / "c1" / "002.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched
    assert load_data(cfg(root)).info["cache_built"] == ["train"] and calls["n"] == 18
    assert load_data(cfg(root, classes=["c0", "c2"])).info["cache_built"] == ["train", "test"]
    assert load_data(cfg(root, image_size=48)).train.x.shape[-1] == 55
    solid(path, COLORS[1], size=(50, 50))  # rewritten
    assert load_data(cfg(root)).info["cache_built"] == ["train"]


def test_a_crash_mid_build_leaves_no_readable_entry(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ds")
    real, calls = folder.decode, []

    def crash(*args):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the training images
        return real(*args)

    monkeypatch.setattr(folder, "decode", crash)
    with pytest.raises(KeyboardInterrupt):
        load_data(cfg(root))
    monkeypatch.undo()
    assert [p.name for p in (root / ".lrn-cache").iterdir()] == [".lock"]  # no array, no index, no temp file
    assert load_data(cfg(root)).info["cache_built"] == ["train", "test"]


def test_worker_processes_give_the_same_array(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ds", classes=2, train=40, val=1)
    alone = load_data(cfg(root, cache=str(tmp_path / "a")))
    monkeypatch.setattr(folder, "MIN_PER_WORKER", 8)
    monkeypatch.setattr(folder, "CHUNK", 8)
    assert folder.worker_count(80) == min(2, len(os.sched_getaffinity(0)))
    pooled = load_data(cfg(root, cache=str(tmp_path / "b")))
    assert torch.equal(alone.train.x, pooled.train.x) and torch.equal(alone.train.y, pooled.train.y)
    index = json.loads(next((tmp_path / "b").glob("*.json")).read_text())
    assert index["version"] == folder.CACHE_VERSION and "root" in index


def test_cache_folder_falls_back_to_xdg_when_the_root_is_not_writable(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ds")
    real = os.access
    monkeypatch.setattr(folder.os, "access", lambda p, mode: False if ".lrn-cache" in str(p) else real(p, mode))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_data(cfg(root)).info["cache"] == str(tmp_path / "xdg" / "lrn" / "folders")
    with pytest.raises(UserError, match="data.cache: cannot create"):
        (tmp_path / "file").write_text("")
        load_data(cfg(root, cache=str(tmp_path / "file" / "sub")))


# ----------------------------------------------------------------------------- augmentation

def test_random_resized_crop_flip_is_seeded_and_shaped():
    x = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = random_resized_crop_flip(x, 32, torch.Generator().manual_seed(1))
    b = random_resized_crop_flip(x, 32, torch.Generator().manual_seed(1))
    c = random_resized_crop_flip(x, 32, torch.Generator().manual_seed(2))
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    boxes = crop_boxes(1000, 40, 60, (0.35, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    area = (h * w).float() / 2400
    assert area.min() > 0.3 and area.max() <= 1 and (w.float() / h).min() > 0.7 and (w.float() / h).max() < 1.4
    assert len({tuple(r) for r in boxes.tolist()}) > 900


def test_a_whole_image_crop_is_the_image_or_its_mirror():
    x = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    out = random_resized_crop_flip(x, 12, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x)) and 10 < sum(flipped) < 54
    assert torch.equal(center_crop(x, 8), x[:, :, 2:10, 2:10])


def test_channels_last_batches_as_the_cache_gives_them(tmp_path):
    d = load_data(cfg(make_tree(tmp_path / "ds")))
    assert d.train.x.is_contiguous(memory_format=torch.channels_last)
    idx = torch.tensor([5, 0, 3])
    batch = d.train.batch(idx)
    assert torch.equal(batch, d.train.x[idx]) and batch.is_contiguous(memory_format=torch.channels_last)
    plain = batch.contiguous()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(random_resized_crop_flip(batch, 32, g()), random_resized_crop_flip(plain, 32, g()))
    z = normalize(d.eval_transform(batch), d.mean, d.std)
    assert z.is_contiguous() and z.shape == (3, 3, 32, 32)
    assert torch.allclose(z, (plain[:, :, 2:34, 2:34].float() - d.mean.view(1, 3, 1, 1)) / d.std.view(1, 3, 1, 1))


# ----------------------------------------------------------------------------- end to end

IMAGENETTE = SHARED_DATA / "imagenette-128.tar.gz"


def extract_slice(archive, dest, classes=3, train=20, val=10):
    """The first `classes` classes of the archive, `train` and `val` images each, read in one
    streaming pass that stops as soon as it has them."""
    want: dict[tuple[str, str], int] = {}
    chosen: list[str] = []
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in ("train", "val"):
                continue
            split, wnid, name = parts
            if split == "train" and wnid not in chosen and len(chosen) < classes:
                chosen.append(wnid)
            limit = train if split == "train" else val
            if wnid in chosen and want.get((split, wnid), 0) < limit:
                want[split, wnid] = want.get((split, wnid), 0) + 1
                (dest / split / wnid).mkdir(parents=True, exist_ok=True)
                (dest / split / wnid / name).write_bytes(tar.extractfile(member).read())
            if len(want) == 2 * classes and all(n == (train if s == "train" else val) for (s, _), n in want.items()):
                break
    return dest, chosen


def test_lrn_train_on_a_slice_of_imagenette(tmp_path):
    if not IMAGENETTE.exists():
        pytest.skip(f"the Imagenette copy is not at {IMAGENETTE} (only the project's own checkout has it)")
    root, wnids = extract_slice(IMAGENETTE, tmp_path / "imagenette")
    overrides = [f"data.root={root}", "data.image_size=64", "model.width=0.25", "train.epochs=1",
                 "train.batch_size=16", "train.threads=1", "train.device=cpu"]
    res = run_cli("train", "--config", str(REPO / "configs" / "imagenette_alexnet.yaml"),
                  "--out", str(tmp_path / "runs"), "--name", "slice", "--quiet",
                  *[arg for o in overrides for arg in ("--set", o)])
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "runs" / "slice" / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs"] == 1 and 0 <= s["test_acc"] <= s["test_top5"] <= 1
    assert s["data"]["classes"] == sorted(wnids) and len(wnids) == 3
    assert s["data"]["counts"] == {"train": [20, 20, 20], "test": [10, 10, 10]} and s["data"]["skipped"] == 0


def test_the_c_crop_kernel_is_bilinear_interpolation_of_each_box():
    from lrn_cli.data import augment

    if augment._native() is None:
        pytest.skip("no C compiler: the crops use torch's kernel")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (24, 3, 40, 50), dtype=torch.uint8, generator=g).to(memory_format=torch.channels_last)
    boxes = crop_boxes(24, 40, 50, (0.1, 1.0), (0.5, 2.0), g)
    mirrored = torch.rand(24, generator=g) < 0.5
    got = augment.resize_crops(x, boxes, mirrored, 32)
    assert got.shape == (24, 3, 32, 32) and got.dtype == torch.uint8 and got.is_contiguous()
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        want = torch.nn.functional.interpolate(x[i:i + 1, :, top:top + h, left:left + w].float(), size=(32, 32),
                                               mode="bilinear", align_corners=False)[0]
        want = want.flip(-1) if mirrored[i] else want
        assert (got[i].float() - want).abs().max() <= 0.51  # rounding to the nearest integer only
    # and the thread count does not change a bit of it
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(augment.resize_crops(x, boxes, mirrored, 32), got)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="outside its image"):
        augment.resize_crops(x, torch.tensor([[0, 0, 41, 10]] * 24), mirrored, 32)


def test_the_one_pass_batch_equals_gather_crop_and_normalize():
    from lrn_cli.data import augment

    g = torch.Generator().manual_seed(3)
    stored = torch.randint(0, 256, (30, 3, 36, 36), dtype=torch.uint8, generator=g).to(memory_format=torch.channels_last)
    idx = torch.tensor([4, 29, 0, 4, 17])
    stats = (augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    a = augment.random_resized_crop_flip(stored, 28, torch.Generator().manual_seed(9), index=idx, normalize_with=stats)
    b = augment.random_resized_crop_flip(stored[idx], 28, torch.Generator().manual_seed(9))
    assert a.dtype == torch.float32 and a.shape == (5, 3, 28, 28) and b.dtype == torch.uint8
    # the same crops: the one-pass path skips only the rounding to uint8 before normalizing
    diff = (a - normalize(b, *stats)).abs().max().item()
    assert diff <= 0.51 / augment.IMAGENET_STD.min().item() + 1e-6
    with pytest.raises(ValueError, match="index out of range" if augment._native() else "index"):
        augment.random_resized_crop_flip(stored, 28, g, index=torch.tensor([30]), normalize_with=stats)


def test_caffe_input_scale_of_an_image_folder(tmp_path):
    d = load_data(cfg(make_tree(tmp_path / "ds"), val_split=0.5, normalize="caffe"))
    assert torch.allclose(d.mean, torch.tensor([123.675, 116.28, 103.53])) and torch.equal(d.std, torch.ones(3))
