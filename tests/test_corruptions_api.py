"""The corruptions' public API (lrn_cli/data/corruptions.py): the names, families and order, what
`corrupt` accepts and refuses, `resolve` for eval.corruptions, and two rules every corruption
keeps on real CIFAR-10 test images: it grows with severity (where the reference's own does), and
an image's bytes do not depend on the batch it came in."""

import pytest
import torch

from lrn_cli.data import corruptions as C
from lrn_cli.data.imageops import TABLES, Rand, to_float, to_uint8

ORDER = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
         "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
         "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate", "underexposure",
         "overexposure", "gamma", "low_light", "illumination_gradient", "color_cast"]

# severity steps s -> s + 1 (by s) where the reference itself does not grow in mean |corrupted -
# clean| on CIFAR-10 (its cifar10 table, measured with tests/reference_c on these images):
# glass_blur 11.7 11.8 11.5 18.7 17.8; motion_blur ... 13.8 13.3 ...; frost 31.7 45.3 48.3 43.6
# 46.4; spatter 1.0 2.6 7.0 3.2 4.6; saturate 10.1 13.1 7.2 ...; elastic_transform 21.9 20.4 18.6
# 16.4 14.3 (its displacements shrink as its smoothing does; tests/test_corruptions_noise_digital.py
# checks that curve against the reference's)
NOT_GROWING = {"glass_blur": {1, 2, 4}, "motion_blur": {3}, "frost": {3, 4}, "spatter": {3},
               "saturate": {2}, "elastic_transform": {1, 2, 3, 4}}


@pytest.fixture(scope="module")
def cifar(cifar_test_images) -> torch.Tensor:
    """The first 500 CIFAR-10 test images, uint8 (500, 3, 32, 32)."""
    return cifar_test_images[:500]


def test_names_families_and_order():
    assert list(C.CORRUPTIONS) == ORDER
    assert list(C.FAMILIES) == ["noise", "blur", "weather", "digital", "extra", "lighting"]
    assert [n for names in C.FAMILIES.values() for n in names] == ORDER
    assert all(C.CORRUPTIONS[n] == f for f, names in C.FAMILIES.items() for n in names)
    assert C.BENCHMARK == ORDER[:15]
    assert list(C.APPROXIMATE) == [n for n in ORDER if n in C.APPROXIMATE]
    assert all(isinstance(v, str) and v for v in C.APPROXIMATE.values())


def test_every_corruption_is_there_with_five_severities_per_table():
    assert not C._MISSING, C._MISSING
    for name in ORDER:
        for table in TABLES:
            assert len(C.params(name, table)) == 5, (name, table)


@pytest.mark.parametrize("name", ORDER)
def test_grows_with_severity(name, cifar):
    x = cifar[:100]
    mad = [(C.corrupt(x, name, s).float() - x.float()).abs().mean().item() for s in range(1, 6)]
    steps = [s for s in range(1, 5) if s not in NOT_GROWING.get(name, ())]
    assert all(mad[s] > mad[s - 1] for s in steps), (name, [round(v, 2) for v in mad])
    assert mad[0] > 0.1, name  # severity 1 does something


@pytest.mark.parametrize("name", ORDER)
def test_bytes_do_not_depend_on_the_batch(name, cifar):
    severity = 5  # the most draws (glass_blur's second pass, ...)
    whole = C.corrupt(cifar, name, severity, seed=3)  # in calls of 256 images (C._CHUNK_PIXELS)
    one_call = C._FUNCTIONS[name](to_float(cifar), severity, "cifar10", Rand(3, name, severity, 0, 500))
    assert torch.equal(whole, to_uint8(one_call)), name
    in_sevens = torch.cat([C.corrupt(cifar[i:i + 7], name, severity, seed=3, start=i) for i in range(0, 500, 7)])
    assert torch.equal(whole, in_sevens), name
    for i in (0, 5, 499):
        assert torch.equal(whole[i], C.corrupt(cifar[i:i + 1], name, severity, seed=3, start=i)[0]), (name, i)
    assert whole.dtype == torch.uint8 and whole.shape == cifar.shape


def test_seed_and_start_choose_the_draws(cifar):
    x = cifar[:20]
    a = C.corrupt(x, "gaussian_noise", 2)
    assert torch.equal(a, C.corrupt(x, "gaussian_noise", 2, seed=0))
    assert not torch.equal(a, C.corrupt(x, "gaussian_noise", 2, seed=1))
    assert not torch.equal(a[1:], C.corrupt(x[1:], "gaussian_noise", 2, start=0))
    assert torch.equal(a[1:], C.corrupt(x[1:], "gaussian_noise", 2, start=1))


def test_table_defaults_to_the_nearest_size_and_can_be_chosen(cifar):
    x = cifar[:8]
    assert torch.equal(C.corrupt(x, "contrast", 3), C.corrupt(x, "contrast", 3, table="cifar10"))
    assert not torch.equal(C.corrupt(x, "contrast", 3), C.corrupt(x, "contrast", 3, table="imagenet"))
    big = torch.nn.functional.interpolate(x.float(), size=64).round().to(torch.uint8)
    assert torch.equal(C.corrupt(big, "contrast", 3), C.corrupt(big, "contrast", 3, table="tinyimagenet"))
    with pytest.raises(ValueError, match="unknown parameter table 'cifar'.*did you mean 'cifar10'"):
        C.corrupt(x, "contrast", 3, table="cifar")


def test_corrupt_refuses_what_it_cannot_take(cifar):
    x = cifar[:4]
    with pytest.raises(ValueError, match="unknown corruption 'gausian_noise'.*did you mean 'gaussian_noise'"):
        C.corrupt(x, "gausian_noise", 1)
    for severity in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="severity must be an integer 1-5"):
            C.corrupt(x, "contrast", severity)
    with pytest.raises(ValueError, match="uint8"):
        C.corrupt(x.float() / 255, "contrast", 1)
    for bad in (x[0], x[:, :1], x[..., :30], x.permute(0, 2, 3, 1)):
        with pytest.raises(ValueError, match=r"\(N, 3, H, H\)"):
            C.corrupt(bad, "contrast", 1)
    with pytest.raises(ValueError, match="start"):
        C.corrupt(x, "contrast", 1, start=-1)
    with pytest.raises(ValueError, match="torch.Tensor"):
        C.corrupt(x.numpy(), "contrast", 1)


def test_empty_batch_and_device(cifar):
    empty = cifar[:0]
    for name in ("gaussian_noise", "jpeg_compression", "elastic_transform"):
        out = C.corrupt(empty, name, 2)
        assert out.shape == (0, 3, 32, 32) and out.dtype == torch.uint8
    out = C.corrupt(cifar[:2], "pixelate", 2)
    assert out.device == cifar.device and out.is_contiguous()


def test_params():
    assert C.params("contrast", "cifar10") == [.75, .5, .4, .3, 0.15]
    assert C.params("jpeg_compression", "imagenet") == [25, 18, 15, 10, 7]
    with pytest.raises(ValueError, match="did you mean 'pixelate'"):
        C.params("pixelated", "cifar10")
    with pytest.raises(ValueError, match="unknown parameter table"):
        C.params("pixelate", "mnist")


def test_resolve():
    assert C.resolve("none") == [] and C.resolve([]) == []
    assert C.resolve("all") == ORDER
    assert C.resolve("benchmark") == ORDER[:15]
    assert C.resolve("noise") == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert C.resolve("fog") == ["fog"]
    # a union, in CORRUPTIONS order, without repeats
    assert C.resolve(["saturate", "noise", "shot_noise", "lighting"]) == \
        ["gaussian_noise", "shot_noise", "impulse_noise", "saturate"] + ORDER[19:]
    assert C.resolve(["extra", "benchmark"]) == ORDER[:19]
    with pytest.raises(ValueError, match="'nosie'.*did you mean 'noise'"):
        C.resolve(["gaussian_noise", "nosie"])
    with pytest.raises(ValueError, match="'jpeg'.*did you mean 'jpeg_compression'"):
        C.resolve("jpeg")
    with pytest.raises(ValueError, match=r"write a list for several: \[noise, blur\]"):
        C.resolve("noise,blur")
    with pytest.raises(ValueError, match="3"):
        C.resolve(["noise", 3])
    with pytest.raises(ValueError):
        C.resolve(None)
