"""The reference weather corruptions (fog, frost, snow, spatter) of hendrycks/robustness
ImageNet-C/create_c (make_cifar_c.py, make_tinyimagenet_c.py, make_imagenet_c.py), ported to
current NumPy / SciPy / scikit-image / OpenCV / Wand with their code otherwise unchanged:
`np.float_` -> `np.float64`, `np.fromstring` -> `np.frombuffer`, the hard-coded image side
(32, 64, 224) -> the side of the image given. Randomness is NumPy's global generator, as there.

frost reads the reference's frost photographs out of the mirrored reference repository (a bare
git directory, `ROBUSTNESS_REPO` or <checkout>/../.mirror/hendrycks+robustness/repo); snow needs
Wand and ImageMagick's MagickWand library. Where either is missing, that corruption is left out
of FUNCTIONS and UNAVAILABLE[name] says why.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
from functools import cache
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage
from skimage.filters import gaussian

from .blur import clipped_zoom  # the reference's helper, ported once

UNAVAILABLE: dict[str, str] = {}

ROBUSTNESS_REPO = Path(os.environ.get(
    "ROBUSTNESS_REPO", Path(__file__).resolve().parents[3] / ".mirror" / "hendrycks+robustness" / "repo"))
FROST_FILES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"]

try:  # MagickWand, as the reference uses it
    from wand.api import library as wandlibrary
    from wand.image import Image as WandImage

    wandlibrary.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double,
                                                  ctypes.c_double)

    class MotionImage(WandImage):
        def motion_blur(self, radius=0.0, sigma=0.0, angle=0.0):
            wandlibrary.MagickMotionBlurImage(self.wand, radius, sigma, angle)
except ImportError as e:  # wand missing, or its MagickWand library
    MotionImage = None
    UNAVAILABLE["snow"] = f"snow's reference needs Wand and ImageMagick's MagickWand library ({e})"


@cache
def frost_photo(filename: str) -> np.ndarray:
    """cv2.imread(filename) of the reference's photo (BGR uint8), read out of the bare mirror."""
    blob = subprocess.run(["git", "-C", str(ROBUSTNESS_REPO), "show", f"HEAD:ImageNet-C/create_c/{filename}"],
                          check=True, capture_output=True).stdout
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)


def _frost_available() -> str | None:
    try:
        for f in FROST_FILES[:5]:
            if frost_photo(f) is None:
                return f"{f} in {ROBUSTNESS_REPO} does not decode"
    except (OSError, subprocess.CalledProcessError) as e:
        return f"frost's photos are not in the mirrored reference repository {ROBUSTNESS_REPO} ({e})"
    return None


# /////////////// helpers (unchanged but for np.float_) ///////////////

def plasma_fractal(mapsize=256, wibbledecay=3):
    """Diamond-square heightmap, side `mapsize` (a power of two), rescaled to 0..1."""
    assert (mapsize & (mapsize - 1) == 0)
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

    def fillsquares():
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)

    def filldiamonds():
        mapsize = maparray.shape[0]
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ldrsum = drgrid + np.roll(drgrid, 1, axis=0)
        lulsum = ulgrid + np.roll(ulgrid, -1, axis=1)
        ltsum = ldrsum + lulsum
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        tdrsum = drgrid + np.roll(drgrid, 1, axis=1)
        tulsum = ulgrid + np.roll(ulgrid, -1, axis=0)
        ttsum = tdrsum + tulsum
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay

    maparray -= maparray.min()
    return maparray / maparray.max()


# /////////////// parameters: make_cifar_c.py, make_tinyimagenet_c.py, make_imagenet_c.py ///////////////

FOG = {
    "cifar10": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "tinyimagenet": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
    "imagenet": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
}
FOG_MAPSIZE = {"cifar10": 32, "tinyimagenet": 64, "imagenet": 256}

FROST = {
    "cifar10": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "tinyimagenet": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
    "imagenet": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
}
FROST_RESIZE = {"cifar10": 0.2, "tinyimagenet": 0.3, "imagenet": None}

SNOW = {
    "cifar10": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "tinyimagenet": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                     (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                     (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
    "imagenet": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
}

SPATTER = {
    "cifar10": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
    "tinyimagenet": [(0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1, 0.69, 0.6, 0),
                     (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
    "imagenet": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                 (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)],
}


# /////////////// the corruptions ///////////////

def make_fog(table):
    def fog(x, severity=1):
        c = FOG[table][severity - 1]
        x = np.array(x) / 255.
        h, w = x.shape[:2]
        max_val = x.max()
        x += c[0] * plasma_fractal(mapsize=FOG_MAPSIZE[table], wibbledecay=c[1])[:h, :w][..., np.newaxis]
        return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255
    return fog


def make_frost(table):
    def frost(x, severity=1):
        c = FROST[table][severity - 1]
        h, w = np.asarray(x).shape[:2]
        idx = np.random.randint(5)
        frost = frost_photo(FROST_FILES[idx])
        if FROST_RESIZE[table] is not None:
            frost = cv2.resize(frost, (0, 0), fx=FROST_RESIZE[table], fy=FROST_RESIZE[table])
        x_start, y_start = np.random.randint(0, frost.shape[0] - h), np.random.randint(0, frost.shape[1] - w)
        frost = frost[x_start:x_start + h, y_start:y_start + w][..., [2, 1, 0]]
        return np.clip(c[0] * np.array(x) + c[1] * frost, 0, 255)
    return frost


def snow_layer_of(shape, c):
    """The reference snow's layer (0..1 float, HxWx1) before its rot90 copy is added."""
    snow_layer = np.random.normal(size=shape, loc=c[0], scale=c[1])
    snow_layer = clipped_zoom(snow_layer[..., np.newaxis], c[2])
    snow_layer[snow_layer < c[3]] = 0
    snow_layer = PILImage.fromarray((np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8), mode='L')
    output = BytesIO()
    snow_layer.save(output, format='PNG')
    snow_layer = MotionImage(blob=output.getvalue())
    snow_layer.motion_blur(radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45))
    snow_layer = cv2.imdecode(np.frombuffer(snow_layer.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED) / 255.
    return snow_layer[..., np.newaxis]


def make_snow(table):
    def snow(x, severity=1):
        c = SNOW[table][severity - 1]
        x = np.array(x, dtype=np.float32) / 255.
        h, w = x.shape[:2]
        snow_layer = snow_layer_of(x.shape[:2], c)
        x = c[6] * x + (1 - c[6]) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1) * 1.5 + 0.5)
        return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255
    return snow


def make_spatter(table):
    def spatter(x, severity=1):
        c = SPATTER[table][severity - 1]
        x = np.array(x, dtype=np.float32) / 255.

        liquid_layer = np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1])
        liquid_layer = gaussian(liquid_layer, sigma=c[2])
        liquid_layer[liquid_layer < c[3]] = 0
        if c[5] == 0:
            liquid_layer = (liquid_layer * 255).astype(np.uint8)
            dist = 255 - cv2.Canny(liquid_layer, 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
            dist = cv2.filter2D(dist, cv2.CV_8U, ker)
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)

            m = cv2.cvtColor(liquid_layer * dist, cv2.COLOR_GRAY2BGRA)
            m /= np.max(m, axis=(0, 1))
            m *= c[4]

            # water is pale turqouise
            color = np.concatenate((175 / 255. * np.ones_like(m[..., :1]),
                                    238 / 255. * np.ones_like(m[..., :1]),
                                    238 / 255. * np.ones_like(m[..., :1])), axis=2)
            color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
            x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
            return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
        else:
            m = np.where(liquid_layer > c[3], 1, 0)
            m = gaussian(m.astype(np.float32), sigma=c[4])
            m[m < 0.8] = 0

            # mud brown
            color = np.concatenate((63 / 255. * np.ones_like(x[..., :1]),
                                    42 / 255. * np.ones_like(x[..., :1]),
                                    20 / 255. * np.ones_like(x[..., :1])), axis=2)
            color *= m[..., np.newaxis]
            x *= (1 - m[..., np.newaxis])
            return np.clip(x + color, 0, 1) * 255
    return spatter


_frost_missing = _frost_available()
if _frost_missing:
    UNAVAILABLE["frost"] = _frost_missing

_MAKERS = {"fog": make_fog, "frost": make_frost, "snow": make_snow, "spatter": make_spatter}
FUNCTIONS = {table: {name: make(table) for name, make in _MAKERS.items() if name not in UNAVAILABLE}
             for table in ("cifar10", "tinyimagenet", "imagenet")}
