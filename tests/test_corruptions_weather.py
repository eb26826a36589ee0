"""The weather corruptions (lrn_cli.data.weather: fog, frost, snow, spatter) against the reference
port (tests/reference_c/weather.py), on real CIFAR-10 test images (32 px) and Imagenette images
resized to the Tiny-ImageNet (64 px) and ImageNet (224 px) tables.

- fog, spatter and snow, given the reference's random numbers, make the reference's bytes: the
  reference port is run with np.random patched to hand out the very draws ours used;
- cv2's Canny, distanceTransform(DIST_L2, 5) and resize(INTER_LINEAR) are reproduced bit for bit;
- with their own random numbers, every corruption's change (corrupted - clean) has the reference's
  mean and std over many images: within 3 % of the reference's std plus 4 standard errors of the
  two samples (frost, approximate: 6 %; its photographs are replaced by synthesized plates);
- an image's bytes never depend on its batch, and the damage grows with severity.
"""
from __future__ import annotations

import tarfile
from itertools import pairwise
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA

from lrn_cli.data import weather as W
from lrn_cli.data.imageops import TABLES, Rand, to_float, to_uint8

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")
from reference_c import as_uint8
from reference_c import weather as ref

NAMES = ("fog", "frost", "snow", "spatter")
needs_wand = pytest.mark.skipif("snow" in ref.UNAVAILABLE, reason=ref.UNAVAILABLE.get("snow", ""))
needs_photos = pytest.mark.skipif("frost" in ref.UNAVAILABLE, reason=ref.UNAVAILABLE.get("frost", ""))


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors (conftest.one_thread)


# ---------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def cifar(cifar_test_images) -> torch.Tensor:
    """(1000, 3, 32, 32) uint8 CIFAR-10 test images."""
    return cifar_test_images


@pytest.fixture(scope="module")
def imagenette() -> torch.Tensor:
    """(24, 3, 128, 128) uint8 Imagenette images, every 10th of the shared archive's first 240."""
    archive = SHARED_DATA / "imagenette-128.tar.gz"
    if not archive.exists():
        pytest.skip(f"no Imagenette copy at {archive} (only the project's own checkout has it)")
    from PIL import Image

    images, seen = [], 0
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isfile() and member.name.lower().endswith((".jpeg", ".jpg")):
                if seen % 10 == 0:
                    images.append(np.array(Image.open(tf.extractfile(member)).convert("RGB").resize((128, 128))))
                    if len(images) == 24:
                        break
                seen += 1
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def images(cifar, request):
    """table -> (N, 3, S, S) uint8 images of the table's side (Imagenette only when asked for)."""
    cache = {"cifar10": cifar}

    def get(table: str, n: int | None = None) -> torch.Tensor:
        if table not in cache:
            side = TABLES[table]
            x = request.getfixturevalue("imagenette").float()
            y = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            cache[table] = y.round().clamp(0, 255).to(torch.uint8)
        return cache[table][:n]
    return get


def ours(name: str, x8: torch.Tensor, severity: int, table: str, seed: int = 0, start: int = 0) -> torch.Tensor:
    """Our corruption's bytes (N, 3, H, W) uint8, as the caller makes them."""
    y = W.FUNCTIONS[name](to_float(x8), severity, table, Rand(seed, name, severity, start, len(x8)))
    assert y.shape == x8.shape and y.dtype == torch.float32 and bool(torch.isfinite(y).all())
    return to_uint8(y)


def reference_bytes(fn, x8: torch.Tensor, severity: int) -> torch.Tensor:
    out = np.stack([as_uint8(fn(im.permute(1, 2, 0).numpy(), severity)) for im in x8])
    return torch.from_numpy(out).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------- tables

def test_exports_and_tables():
    assert set(W.FUNCTIONS) == set(NAMES) == set(W.PARAMS)
    assert set(W.APPROXIMATE) == {"frost"} and all(isinstance(v, str) and v for v in W.APPROXIMATE.values())
    literal = {"fog": ref.FOG, "frost": ref.FROST, "snow": ref.SNOW, "spatter": ref.SPATTER}
    for name in NAMES:
        assert set(W.PARAMS[name]) == set(TABLES)
        for table in TABLES:
            assert [tuple(p) for p in W.PARAMS[name][table]] == [tuple(p) for p in literal[name][table]]
    assert W.FOG_MAPSIZE == ref.FOG_MAPSIZE and W.FROST_RESIZE == ref.FROST_RESIZE
    with pytest.raises(ValueError):
        W.FUNCTIONS["fog"](torch.zeros(1, 3, 32, 32), 6, "cifar10", Rand(0, "fog", 6, 0, 1))


# ---------------------------------------------------------------------------- cv2 pieces, bit for bit

def _liquid_levels(rng, side: int, c) -> np.ndarray:
    from skimage.filters import gaussian

    liquid = gaussian(rng.normal(size=(side, side), loc=c[0], scale=c[1]), sigma=c[2])
    liquid[liquid < c[3]] = 0
    return (liquid * 255).astype(np.uint8)


def test_canny_and_distance_transform_are_cv2s():
    rng = np.random.default_rng(0)
    for trial in range(60):
        side = (32, 45, 64)[trial % 3]
        if trial % 4 == 3:  # plain noise: every direction and hysteresis case
            u8 = rng.integers(0, 256, (side, side)).astype(np.uint8)
        else:
            u8 = _liquid_levels(rng, side, W.PARAMS["spatter"]["tinyimagenet"][trial % 3])
        edges = cv2.Canny(u8, 50, 150)
        ours_edges = W.canny(torch.from_numpy(u8)[None])[0].numpy()
        assert np.array_equal(ours_edges, edges > 0), trial
        dist = cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5)
        ours_dist = W.distance_transform_5x5(torch.from_numpy(edges > 0)[None], cap=20.0)[0].numpy()
        assert np.array_equal(ours_dist, np.minimum(dist, 20)), trial
        # the whole of the water variant's `dist` (blur, equalizeHist, filter2D, blur)
        _, d = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        d = cv2.equalizeHist(cv2.blur(d, (3, 3)).astype(np.uint8))
        d = cv2.blur(cv2.filter2D(d, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])), (3, 3))
        assert np.array_equal(W._water_dist(torch.from_numpy(u8)[None].to(torch.int32))[0].numpy(),
                              d.astype(np.float32)), trial


def test_rgb2gray_is_cv2s():
    x = np.random.default_rng(1).integers(0, 256, (48, 48, 3)).astype(np.float32) / np.float32(255)
    gray = W._rgb2gray(torch.from_numpy(x).permute(2, 0, 1)[None])[0, 0].numpy()
    agree = (gray == cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)).mean()
    assert agree > 0.999  # bit for bit on the wheel this was written on (its vector code's FMAs)


@needs_photos
def test_resize_is_cv2s_and_the_photo_statistics_are_the_photos():
    for k, f in enumerate(["frost1.png", "frost2.png", "frost4.jpg", "frost5.jpg"]):
        photo = ref.frost_photo(f)  # BGR
        assert photo.shape[:2] == W.FROST_PHOTOS[k]["size"]
        rgb = photo[..., ::-1].astype(np.float64)
        assert np.allclose(rgb.reshape(-1, 3).mean(0), W.FROST_PHOTOS[k]["mean"], atol=0.01)
        basis, std = np.array(W.FROST_PHOTOS[k]["basis"]), np.array(W.FROST_PHOTOS[k]["std"])
        assert np.allclose(np.cov(rgb.reshape(-1, 3).T), (basis * std ** 2) @ basis.T, rtol=0.002, atol=0.02)
        for table, fx in W.FROST_RESIZE.items():
            small = photo if fx is None else cv2.resize(photo, (0, 0), fx=fx, fy=fx)
            if fx is not None:
                mine = W._resize_linear(torch.from_numpy(photo).permute(2, 0, 1).contiguous(), fx)
                assert np.array_equal(mine.permute(1, 2, 0).numpy(), small)
            # the crop-weighted moments the plates are set to
            v = small[..., ::-1].astype(np.float64)
            side = W.FROST_SIDE[table]
            wgt = (W._coverage(v.shape[0], side).view(-1, 1) * W._coverage(v.shape[1], side).view(1, -1)).numpy()
            mu = (v * wgt[..., None]).sum((0, 1))
            sd = np.sqrt(((v - mu) ** 2 * wgt[..., None]).sum((0, 1)))
            assert np.allclose(mu, W.FROST_CROP_STATS[table][k][0], atol=0.01)
            assert np.allclose(sd, W.FROST_CROP_STATS[table][k][1], atol=0.01)


# ---------------------------------------------------------------------------- same draws, same bytes

def _feed(values: np.ndarray):
    """A stand-in for np.random.uniform / normal that hands out `values` in order."""
    pos = [0]

    def draw(*args, size=None, loc=None, scale=None, **kw):
        if loc is not None or scale is not None:  # normal(size=, loc=, scale=)
            k = int(np.prod(size))
            z = values[pos[0]:pos[0] + k].reshape(size)
            pos[0] += k
            return z * scale + loc
        low, high = args[0], args[1]
        shape = args[2] if len(args) > 2 else size
        k = 1 if shape is None else int(np.prod(shape))
        u = values[pos[0]:pos[0] + k]
        pos[0] += k
        return low + (high - low) * (u[0] if shape is None else u.reshape(shape))
    return draw


@pytest.mark.parametrize("table,n", [("cifar10", 12), ("tinyimagenet", 4), ("imagenet", 2)])
def test_fog_is_the_references_given_its_uniforms(images, table, n):
    x8 = images(table, n)
    side = TABLES[table]
    m = W.FOG_MAPSIZE[table]
    u = torch.rand(n, W.fractal_draws(m), generator=torch.Generator().manual_seed(side))
    for severity in range(1, 6):
        strength, decay = W.PARAMS["fog"][table][severity - 1]
        got = to_uint8(W.fog_from_draws(to_float(x8), strength, decay, m, u))
        for i in range(n):
            with mock.patch("numpy.random.uniform", _feed(u[i].double().numpy())):
                want = reference_bytes(ref.FUNCTIONS[table]["fog"], x8[i:i + 1], severity)
            assert torch.equal(got[i:i + 1], want), (table, severity, i)


@pytest.mark.parametrize("table,n", [("cifar10", 16), ("tinyimagenet", 6), ("imagenet", 2)])
def test_spatter_is_the_references_given_its_normals(images, table, n):
    x8 = images(table, n)
    side = TABLES[table]
    noise = torch.randn(n, side, side, generator=torch.Generator().manual_seed(side))
    for severity in range(1, 6):
        got = to_uint8(W.spatter_from_noise(to_float(x8), W.PARAMS["spatter"][table][severity - 1], noise))
        for i in range(n):
            with mock.patch("numpy.random.normal", _feed(noise[i].double().numpy().ravel())):
                want = reference_bytes(ref.FUNCTIONS[table]["spatter"], x8[i:i + 1], severity)
            assert torch.equal(got[i:i + 1], want), (table, severity, i)


@needs_wand
@pytest.mark.parametrize("table,n", [("cifar10", 8), ("tinyimagenet", 3), ("imagenet", 1)])
def test_snow_is_the_references_given_its_draws(images, table, n):
    x8 = images(table, n)
    side = TABLES[table]
    g = torch.Generator().manual_seed(side)
    noise = torch.randn(n, side, side, generator=g)
    u = torch.rand(n, generator=g).double()
    for severity in range(1, 6):
        c = W.PARAMS["snow"][table][severity - 1]
        got = to_uint8(W.snow_from_draws(to_float(x8), c, noise, u * 90.0 - 135.0))
        for i in range(n):
            draws = np.concatenate([noise[i].double().numpy().ravel(), u[i:i + 1].numpy()])
            feed = _feed(draws)
            with mock.patch("numpy.random.normal", feed), mock.patch("numpy.random.uniform", feed):
                want = reference_bytes(ref.FUNCTIONS[table]["snow"], x8[i:i + 1], severity)
            assert torch.equal(got[i:i + 1], want), (table, severity, i)


@needs_photos
def test_frost_crops_and_blends_as_the_reference(images, monkeypatch):
    """With the real photographs in place of the plates, the crop and blend are the reference's."""
    files = ["frost1.png", "frost2.png", "frost4.jpg", "frost5.jpg"]
    for table in ("cifar10", "tinyimagenet"):
        x8 = images(table, 6)
        side = TABLES[table]

        def photo(k, tbl, h, w, _table=table):
            p = ref.frost_photo(files[k])
            fx = W.FROST_RESIZE[_table]
            p = p if fx is None else cv2.resize(p, (0, 0), fx=fx, fy=fx)
            return torch.from_numpy(np.ascontiguousarray(p[..., ::-1])).permute(2, 0, 1).contiguous()

        monkeypatch.setattr(W, "frost_plate", photo)
        rng = np.random.default_rng(side)
        for severity in range(1, 6):
            w_img, w_frost = W.PARAMS["frost"][table][severity - 1]
            for i in range(len(x8)):
                idx = int(rng.integers(5))
                ph, pw = photo(W.FROST_CHOICE[idx], table, side, side).shape[1:]
                top, left = int(rng.integers(0, ph - side)), int(rng.integers(0, pw - side))
                u = torch.tensor([[(idx + 0.5) / 5, (top + 0.5) / (ph - side), (left + 0.5) / (pw - side)]])
                got = to_uint8(W.frost_from_draws(to_float(x8[i:i + 1]), w_img, w_frost, table, u))
                with mock.patch("numpy.random.randint", side_effect=[idx, top, left]):
                    want = reference_bytes(ref.FUNCTIONS[table]["frost"], x8[i:i + 1], severity)
                assert torch.equal(got, want), (table, severity, i)


# ---------------------------------------------------------------------------- the plates

def test_plates_are_fixed_and_set_to_the_photos_crop_statistics():
    a = W._synthesize_photo.__wrapped__(3, 40, 56)
    assert torch.equal(a, W._synthesize_photo.__wrapped__(3, 40, 56))
    for table in ("cifar10", "tinyimagenet"):
        side = W.FROST_SIDE[table]
        for k in range(4):
            plate = W.frost_plate(k, table, side, side)
            assert plate.dtype == torch.uint8 and tuple(plate.shape[1:]) == tuple(
                round(s * W.FROST_RESIZE[table]) for s in W.FROST_PHOTOS[k]["size"])
            wgt = W._coverage(plate.shape[1], side).view(-1, 1) * W._coverage(plate.shape[2], side).view(1, -1)
            v = plate.double()
            mu = (v * wgt).sum((1, 2))
            sd = ((v - mu.view(3, 1, 1)) ** 2 * wgt).sum((1, 2)).sqrt()
            want_mu, want_sd = (torch.tensor(t, dtype=torch.float64) for t in W.FROST_CROP_STATS[table][k])
            assert (mu - want_mu).abs().max() < 0.6 and (sd / want_sd - 1).abs().max() < 0.03, (table, k)


@needs_photos
def test_plates_have_the_photos_texture_scale():
    """The RMS step between neighbouring pixels (how fine the texture is; what the spectrum sets)
    within 30 % of the photo's, per table (measured: 0.91 .. 1.23 of it)."""
    files = ["frost1.png", "frost2.png", "frost4.jpg", "frost5.jpg"]
    for table in ("cifar10", "tinyimagenet"):
        fx = W.FROST_RESIZE[table]
        for k, f in enumerate(files):
            photo = cv2.resize(ref.frost_photo(f), (0, 0), fx=fx, fy=fx).astype(np.float64)
            plate = W.frost_plate(k, table, W.FROST_SIDE[table], W.FROST_SIDE[table]).double()
            want = np.sqrt((np.diff(photo, axis=1) ** 2).mean())
            got = ((plate[:, :, 1:] - plate[:, :, :-1]) ** 2).mean().sqrt().item()
            assert abs(got / want - 1) < 0.3, (table, f, got, want)


# ---------------------------------------------------------------------------- the same distribution

def _moments(d: torch.Tensor):
    """Pooled mean and std of d (N, ...) and their standard errors, the images as the samples
    (the delta method: var = E[m2] - E[m1]^2 has the influence m2 - 2 mean m1 per image)."""
    d = d.double().flatten(1)
    m1, m2 = d.mean(1), (d * d).mean(1)
    n = len(d)
    mean = m1.mean().item()
    std = (m2.mean().item() - mean ** 2) ** 0.5
    se_mean = m1.std().item() / n ** 0.5
    se_std = (m2 - 2 * mean * m1).std().item() / n ** 0.5 / (2 * std)
    return mean, std, se_mean, se_std


# table -> (images, repeats): real images, repeated where there are few (each copy draws anew);
# frost (the one to judge by its distribution, and cheap) gets more
SAMPLES = {"cifar10": (400, 1), "tinyimagenet": (24, 4), "imagenet": (12, 2)}
FROST_SAMPLES = {"cifar10": (1000, 1), "tinyimagenet": (24, 16), "imagenet": (24, 8)}


@pytest.mark.parametrize("table", list(TABLES))
@pytest.mark.parametrize("name", NAMES)
def test_change_has_the_references_mean_and_std(images, name, table):
    if name in ref.UNAVAILABLE:
        pytest.skip(ref.UNAVAILABLE[name])
    n, reps = (FROST_SAMPLES if name == "frost" else SAMPLES)[table]
    if name == "snow" and table != "tinyimagenet":  # the reference's snow is slow: fewer
        n = n // 2
    x8 = images(table, n).repeat(reps, 1, 1, 1)
    rel = 0.06 if name in W.APPROXIMATE else 0.03
    np.random.seed(1234)
    for severity in range(1, 6):
        a = _moments(ours(name, x8, severity, table).double() - x8.double())
        b = _moments(reference_bytes(ref.FUNCTIONS[table][name], x8, severity).double() - x8.double())
        noise_mean, noise_std = 4 * (a[2] ** 2 + b[2] ** 2) ** 0.5, 4 * (a[3] ** 2 + b[3] ** 2) ** 0.5
        assert abs(a[0] - b[0]) <= rel * b[1] + noise_mean, (severity, a, b)
        assert abs(a[1] - b[1]) <= rel * b[1] + noise_std, (severity, a, b)


# ---------------------------------------------------------------------------- batches and severities

@pytest.mark.parametrize("name", NAMES)
def test_an_image_does_not_depend_on_its_batch(images, name, monkeypatch):
    x8 = images("cifar10", 40)
    full = ours(name, x8, 3, "cifar10", seed=7)
    assert torch.equal(ours(name, x8[13:17], 3, "cifar10", seed=7, start=13), full[13:17])
    assert torch.equal(ours(name, x8[5:6], 3, "cifar10", seed=7, start=5), full[5:6])
    monkeypatch.setattr(W, "CHUNK_PIXELS", 3 * 32 * 32)  # chunks of 3 images (24 for spatter)
    assert torch.equal(ours(name, x8, 3, "cifar10", seed=7), full)
    assert not torch.equal(ours(name, x8[:8], 3, "cifar10", seed=8), full[:8])  # the seed matters


def _damage(y: torch.Tensor, x: torch.Tensor) -> float:
    """1 - the correlation of corrupted and clean pixels, averaged over the images."""
    y, x = y.double().flatten(1), x.double().flatten(1)
    y, x = y - y.mean(1, keepdim=True), x - x.mean(1, keepdim=True)
    return (1 - (y * x).sum(1) / (y.norm(dim=1) * x.norm(dim=1) + 1e-9)).mean().item()


@pytest.mark.parametrize("name", NAMES)
def test_damage_grows_with_severity(images, name):
    """On CIFAR's table, where the reference's severities grow too: for spatter within water
    (1-3) and within mud (4-5), which are different corruptions; frost with the same crops at
    every severity (its photo choice would otherwise dominate a few hundred images)."""
    x8 = images("cifar10", 300)
    if name == "frost":
        u = Rand(0, "frost", 0, 0, len(x8)).uniform(3)
        damage = [_damage(to_uint8(W.frost_from_draws(to_float(x8), *W.PARAMS["frost"]["cifar10"][s - 1],
                                                      "cifar10", u)), x8) for s in range(1, 6)]
    else:
        damage = [_damage(ours(name, x8, s, "cifar10"), x8) for s in range(1, 6)]
    assert damage[0] > 0.005, damage
    runs = [damage[:3], damage[3:]] if name == "spatter" else [damage]
    for run in runs:
        assert all(a < b for a, b in pairwise(run)), damage


def test_other_sizes_run(images):
    """Sizes off the tables: fog's map grows to the image, frost's plates to the crop."""
    x8 = images("cifar10", 3)
    big = F.interpolate(x8.float(), size=(40, 40), mode="bilinear").round().to(torch.uint8)
    for name in NAMES:
        y = ours(name, big, 2, "cifar10")  # 40 px on CIFAR's table (its fractal is 32, its plates 63 high)
        assert y.shape == big.shape and not torch.equal(y, big)
    assert W.fog_mapsize("cifar10", 40, 40) == 64 and W.fog_mapsize("imagenet", 224, 224) == 256
    tall = F.interpolate(x8.float(), size=(100, 100), mode="bilinear").round().to(torch.uint8)
    assert ours("frost", tall, 5, "tinyimagenet").shape == tall.shape  # the 0.3 plate of frost2 is 94 high
