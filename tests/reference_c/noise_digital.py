"""The reference's noise and digital corruptions (gaussian_noise, shot_noise, impulse_noise,
speckle_noise, contrast, brightness, saturate, jpeg_compression, pixelate, elastic_transform) from
make_cifar_c.py, make_tinyimagenet_c.py and make_imagenet_c.py, ported to current libraries.

The bodies are the same in the three scripts but for their severity tables and the image side
written into pixelate and elastic_transform, so each is written once here over its table, copied
literally from each script. Changes from the reference, none of them to what it computes:
- the image comes in as an HxWx3 uint8 array (the scripts get a PIL image and call np.array on
  it; jpeg_compression and pixelate make the PIL image back);
- jpeg_compression and pixelate return np.array of the PIL image they returned;
- skimage.util.random_noise has no global-state randomness any more: it gets a seed drawn from
  np.random, so np.random.seed still fixes every draw, as it did in the reference's skimage.
"""
from __future__ import annotations

from io import BytesIO

import cv2
import numpy as np
import skimage as sk
from PIL import Image as PILImage
from scipy.ndimage import map_coordinates
from skimage.filters import gaussian

# ---- the severity tables, {table: c list}, literally as in each script (cifar10 = make_cifar_c.py,
# tinyimagenet = make_tinyimagenet_c.py, imagenet = make_imagenet_c.py)
SIDE = {"cifar10": 32, "tinyimagenet": 64, "imagenet": 224}

C = {
    "gaussian_noise": {"cifar10": [0.04, 0.06, .08, .09, .10],
                       "tinyimagenet": [0.04, 0.08, .12, .15, .18],
                       "imagenet": [.08, .12, 0.18, 0.26, 0.38]},
    "shot_noise": {"cifar10": [500, 250, 100, 75, 50],
                   "tinyimagenet": [250, 100, 50, 30, 15],
                   "imagenet": [60, 25, 12, 5, 3]},
    "impulse_noise": {"cifar10": [.01, .02, .03, .05, .07],
                      "tinyimagenet": [.01, .02, .05, .08, .14],
                      "imagenet": [.03, .06, .09, 0.17, 0.27]},
    "speckle_noise": {"cifar10": [.06, .1, .12, .16, .2],
                      "tinyimagenet": [.15, .2, 0.25, 0.3, 0.35],
                      "imagenet": [.15, .2, 0.35, 0.45, 0.6]},
    "contrast": {"cifar10": [.75, .5, .4, .3, 0.15],
                 "tinyimagenet": [.4, .3, .2, .1, 0.05],
                 "imagenet": [0.4, .3, .2, .1, .05]},
    "brightness": {"cifar10": [.05, .1, .15, .2, .3],
                   "tinyimagenet": [.1, .2, .3, .4, .5],
                   "imagenet": [.1, .2, .3, .4, .5]},
    "saturate": {"cifar10": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
                 "tinyimagenet": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
                 "imagenet": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]},
    "jpeg_compression": {"cifar10": [80, 65, 58, 50, 40],
                         "tinyimagenet": [65, 58, 50, 40, 25],
                         "imagenet": [25, 18, 15, 10, 7]},
    "pixelate": {"cifar10": [0.95, 0.9, 0.85, 0.75, 0.65],
                 "tinyimagenet": [0.9, 0.8, 0.7, 0.6, 0.5],
                 "imagenet": [0.6, 0.5, 0.4, 0.3, 0.25]},
}
_I32, _I64 = 32, 64  # the scripts' IMSIZE
C["elastic_transform"] = {
    "cifar10": [(_I32*0, _I32*0, _I32*0.08),
                (_I32*0.05, _I32*0.2, _I32*0.07),
                (_I32*0.08, _I32*0.06, _I32*0.06),
                (_I32*0.1, _I32*0.04, _I32*0.05),
                (_I32*0.1, _I32*0.03, _I32*0.03)],
    "tinyimagenet": [(_I64*0, _I64*0, _I64*0.08),
                     (_I64*0.05, _I64*0.3, _I64*0.06),
                     (_I64*0.1, _I64*0.08, _I64*0.06),
                     (_I64*0.1, _I64*0.03, _I64*0.03),
                     (_I64*0.16, _I64*0.03, _I64*0.02)],
    "imagenet": [(244 * 2, 244 * 0.7, 244 * 0.1),   # 244 should have been 224, but ultimately nothing is incorrect
                 (244 * 2, 244 * 0.08, 244 * 0.2),
                 (244 * 0.05, 244 * 0.01, 244 * 0.02),
                 (244 * 0.07, 244 * 0.01, 244 * 0.02),
                 (244 * 0.12, 244 * 0.01, 244 * 0.02)],
}


def gaussian_noise(x, c):
    x = np.array(x) / 255.
    return np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c):
    x = np.array(x) / 255.
    return np.clip(np.random.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, c):
    x = sk.util.random_noise(np.array(x) / 255., mode='s&p', amount=c, rng=np.random.randint(2 ** 31))
    return np.clip(x, 0, 1) * 255


def speckle_noise(x, c):
    x = np.array(x) / 255.
    return np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def contrast(x, c):
    x = np.array(x) / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def brightness(x, c):
    x = np.array(x) / 255.
    x = sk.color.rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    x = sk.color.hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def saturate(x, c):
    x = np.array(x) / 255.
    x = sk.color.rgb2hsv(x)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    x = sk.color.hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def jpeg_compression(x, c):
    x = PILImage.fromarray(x)
    output = BytesIO()
    x.save(output, 'JPEG', quality=c)
    x = PILImage.open(output)
    return np.array(x)


def pixelate(x, c, side):
    x = PILImage.fromarray(x)
    x = x.resize((int(side * c), int(side * c)), PILImage.BOX)
    x = x.resize((side, side), PILImage.BOX)
    return np.array(x)


# mod of https://gist.github.com/erniejunior/601cdf56d2b424757de5
def elastic_transform(image, c):
    image = np.array(image, dtype=np.float32) / 255.
    shape = image.shape
    shape_size = shape[:2]

    # random affine
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + np.random.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)

    dx = (gaussian(np.random.uniform(-1, 1, size=shape[:2]),
                   c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian(np.random.uniform(-1, 1, size=shape[:2]),
                   c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]

    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode='reflect').reshape(shape), 0, 1) * 255


_BODIES = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
           "speckle_noise": speckle_noise, "contrast": contrast, "brightness": brightness,
           "saturate": saturate, "jpeg_compression": jpeg_compression, "pixelate": pixelate,
           "elastic_transform": elastic_transform}


def _bind(name: str, table: str):
    body, c = _BODIES[name], C[name][table]
    if name == "pixelate":
        return lambda img, severity: body(img, c[severity - 1], SIDE[table])
    return lambda img, severity: body(img, c[severity - 1])


FUNCTIONS = {table: {name: _bind(name, table) for name in _BODIES} for table in SIDE}
