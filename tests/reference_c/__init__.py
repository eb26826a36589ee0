"""Ports of the reference corruptions (github hendrycks/robustness, ImageNet-C/create_c:
make_cifar_c.py, make_tinyimagenet_c.py, make_imagenet_c.py) to current NumPy, SciPy,
scikit-image and OpenCV, for the tests and the benchmark to check `lrn_cli.data.corruptions`
against. Each module defines FUNCTIONS: {table: {name: fn}}, where table is one of
`lrn_cli.data.imageops.TABLES` and fn(image, severity) takes one HxWx3 uint8 NumPy image and
returns the reference's float result (0-255 scale, before its np.uint8), as the reference does.

`reference(name, table)` finds the function; None where no module ports it."""
from __future__ import annotations

import importlib
from typing import Callable

MODULES = ("noise_digital", "blur", "weather")


def reference(name: str, table: str) -> Callable | None:
    for module in MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(module):
                continue
            raise
        fn = mod.FUNCTIONS.get(table, {}).get(name)
        if fn is not None:
            return fn
    return None


def as_uint8(result) -> "np.ndarray":  # noqa: F821
    """The reference's own conversion of a result to bytes: np.uint8 (truncating, wrapping)."""
    import numpy as np

    return np.uint8(np.clip(result, 0, 255))
