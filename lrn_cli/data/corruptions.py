"""Corrupted images on the fly: the CIFAR-10-C / ImageNet-C corruptions (Hendrycks & Dietterich,
ICLR 2019) and a lighting family, as batched torch code.

    corrupt(images, name, severity, seed=0, start=0, table=None) -> images

takes a uint8 (N, 3, H, W) batch of square images and returns the corrupted batch, same shape
and dtype. The rules every corruption keeps:

* **Reference.** Each reproduces its function of the reference scripts (github
  hendrycks/robustness, ImageNet-C/create_c), at the severity parameters of one of its tables:
  `table` "cifar10" (make_cifar_c.py, 32 px), "tinyimagenet" (make_tinyimagenet_c.py, 64 px) or
  "imagenet" (make_imagenet_c.py, 224 px); None picks the table nearest the image size
  (`imageops.table_for`). Parameters in pixels are the table's, not rescaled. `params(name,
  table)` gives a corruption's five severity parameters; `APPROXIMATE[name]` says why one
  differs from the reference where it does (a name absent from it is faithful: deterministic ones
  give the reference's bytes up to float rounding, random ones its distributions). The result is
  truncated to uint8 as the reference's np.uint8 does.
* **Randomness.** Image i of the batch is image `start + i` of its split; its random draws come
  from its own generator, seeded from (seed, name, severity, start + i) (`imageops.Rand`). So an
  image's bytes depend on nothing else: not on the batch size, the other images or the number of
  processes. `corrupt(x, n, s, start=0)[5]` equals `corrupt(x[5:6], n, s, start=5)[0]`.
* **Device.** The work is done on the CPU, a few images a call (`_CHUNK_PIXELS`); the result
  goes back to the input's device.

`CORRUPTIONS` maps each name to its family, in the benchmark's order; `FAMILIES` the families to
their names; `BENCHMARK` is the 15 of the benchmark (noise, blur, weather, digital); `resolve`
reads the config key eval.corruptions.
"""
from __future__ import annotations

import copy
import difflib
import importlib
from collections.abc import Callable, Iterable

import torch

from .imageops import TABLES, Rand, table_for, to_float, to_uint8

FAMILIES: dict[str, list[str]] = {
    "noise": ["gaussian_noise", "shot_noise", "impulse_noise"],
    "blur": ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"],
    "weather": ["snow", "frost", "fog", "brightness"],
    "digital": ["contrast", "elastic_transform", "pixelate", "jpeg_compression"],
    "extra": ["speckle_noise", "gaussian_blur", "spatter", "saturate"],
    "lighting": ["underexposure", "overexposure", "gamma", "low_light", "illumination_gradient", "color_cast"],
}
CORRUPTIONS: dict[str, str] = {name: family for family, names in FAMILIES.items() for name in names}
BENCHMARK: list[str] = [n for f in ("noise", "blur", "weather", "digital") for n in FAMILIES[f]]

# the module of lrn_cli.data that implements each name
_MODULES = {
    "noise_digital": ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "contrast",
                      "brightness", "saturate", "jpeg_compression", "pixelate", "elastic_transform"],
    "blur": ["gaussian_blur", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur"],
    "weather": ["snow", "frost", "fog", "spatter"],
    "lighting": FAMILIES["lighting"],
}
assert sorted(n for names in _MODULES.values() for n in names) == sorted(CORRUPTIONS)

_CHUNK_PIXELS = 1 << 18  # pixels per call of a corruption (256 CIFAR images, 5 of 224 px):
# temporaries that stay in cache and that the allocator recycles (up to 4x faster at 224 px)
_FUNCTIONS: dict[str, Callable] = {}
_PARAMS: dict[str, dict[str, list]] = {}
APPROXIMATE: dict[str, str] = {}
_MISSING: dict[str, str] = {}  # name -> why it cannot run (its module is not there)

for _module, _names in _MODULES.items():
    try:
        _mod = importlib.import_module(f"{__package__}.{_module}")
    except ModuleNotFoundError as e:  # only the module itself being absent; errors inside it raise
        if e.name != f"{__package__}.{_module}":
            raise
        _MISSING.update({n: f"its module {__package__}.{_module} is missing" for n in _names})
        continue
    for _name in _names:
        if _name not in _mod.FUNCTIONS:
            _MISSING[_name] = f"{__package__}.{_module} does not define it"
            continue
        _FUNCTIONS[_name] = _mod.FUNCTIONS[_name]
        _PARAMS[_name] = _mod.PARAMS[_name]
        if _mod.APPROXIMATE.get(_name):
            APPROXIMATE[_name] = _mod.APPROXIMATE[_name]
APPROXIMATE = {n: APPROXIMATE[n] for n in CORRUPTIONS if n in APPROXIMATE}
del _module, _names, _name


def _suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `choices` (or one that contains the word), or ''."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    close = close or [c for c in choices if word and word.lower() in c][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}{_suggest(str(name), CORRUPTIONS)}; "
                         f"the corruptions are: {', '.join(CORRUPTIONS)}")
    if name in _MISSING:
        raise ValueError(f"corruption {name!r} is not available: {_MISSING[name]}")


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"unknown parameter table {table!r}{_suggest(str(table), TABLES)}; "
                         f"the tables are: {', '.join(TABLES)}")


def params(name: str, table: str) -> list:
    """The five severity parameters of corruption `name` in `table`, as the reference writes them."""
    _check_name(name)
    _check_table(table)
    return copy.deepcopy(_PARAMS[name][table])


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0, start: int = 0,
            table: str | None = None) -> torch.Tensor:
    """Corruption `name` at `severity` (1-5) of the uint8 (N, 3, H, W) batch `images`, which are
    images start..start+N-1 of their split; `table` None: the one nearest the image size."""
    _check_name(name)
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer 1-5, got {severity!r}")
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0-255), got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] or images.shape[2] < 1:
        raise ValueError(f"images must be (N, 3, H, H): a batch of square RGB images, got {tuple(images.shape)}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    size = images.shape[-1]
    table = table_for(size) if table is None else table
    _check_table(table)
    if len(images) == 0:
        return images.clone()
    fn, source = _FUNCTIONS[name], images.cpu().contiguous()  # channels-last input too
    out = torch.empty(source.shape, dtype=torch.uint8)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    for i in range(0, len(source), chunk):  # the same bytes as one call: images are independent
        part = source[i:i + chunk]
        y = fn(to_float(part), severity, table, Rand(seed, name, severity, start + i, len(part)))
        if y.shape != part.shape:
            raise RuntimeError(f"corruption {name!r} returned shape {tuple(y.shape)} for {tuple(part.shape)}")
        out[i:i + len(part)] = to_uint8(y)
    return out.to(images.device)


def resolve(spec: str | list[str]) -> list[str]:
    """eval.corruptions as corruption names in CORRUPTIONS order: "none" -> [], "all" -> every
    name, "benchmark" -> the 15, a family -> its names, a name -> itself, a list of these -> their
    union. A ValueError names the entry it cannot read, with the closest valid word."""
    groups = {"all": list(CORRUPTIONS), "benchmark": BENCHMARK, **FAMILIES}
    if isinstance(spec, str):
        if spec == "none":
            return []
        entries = [spec]
    elif isinstance(spec, (list, tuple)):
        entries = list(spec)
    else:
        raise ValueError(f"corruptions must be a name, a family, none, all, benchmark or a list of names "
                         f"and families, got {spec!r}")
    chosen: set[str] = set()
    for entry in entries:
        if isinstance(entry, str) and entry in groups:
            chosen.update(groups[entry])
        elif isinstance(entry, str) and entry in CORRUPTIONS:
            chosen.add(entry)
        else:
            words = [*CORRUPTIONS, *groups, "none"]
            hint = (" (write a list for several: [noise, blur])" if isinstance(entry, str) and "," in entry
                    else _suggest(str(entry), words))
            raise ValueError(f"unknown corruption or family {entry!r}{hint}; the groups are: "
                             f"{', '.join(groups)}; the corruptions: {', '.join(CORRUPTIONS)}")
    return [n for n in CORRUPTIONS if n in chosen]
