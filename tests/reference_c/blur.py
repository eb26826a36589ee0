"""The reference's blur corruptions (gaussian_blur, glass_blur, defocus_blur, motion_blur,
zoom_blur) from make_cifar_c.py, make_tinyimagenet_c.py and make_imagenet_c.py, ported to current
libraries.

The bodies are the same in the three scripts but for their severity tables and the image side
written into glass_blur and motion_blur, so each is written once here over its table, copied
literally from each script. Changes from the reference, none of them to what it computes:
- the image comes in as an HxWx3 uint8 array (the scripts get a PIL image; motion_blur makes the
  PIL image back to save it as PNG);
- skimage's `multichannel=True` is `channel_axis=-1`; `np.fromstring` is `np.frombuffer`;
  `scipy.ndimage.interpolation` is `scipy.ndimage`;
- glass_blur takes optional `draws` (an iterator of (dx, dy) pairs, one per visited pixel, in
  visiting order) in place of np.random.randint, and motion_blur an optional `angle` in place of
  np.random.uniform(-45, 45), so the tests can feed both sides the same random numbers.
motion_blur needs ImageMagick's MagickWand library (through wand); without it, it is left out of
FUNCTIONS (`MOTION_BLUR_MISSING` says why).
"""
from __future__ import annotations

import ctypes
from io import BytesIO

import cv2
import numpy as np
from PIL import Image as PILImage
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian

SIDE = {"cifar10": 32, "tinyimagenet": 64, "imagenet": 224}

C = {
    "gaussian_blur": {"cifar10": [.4, .6, 0.7, .8, 1],
                      "tinyimagenet": [.5, .75, 1, 1.25, 1.5],
                      "imagenet": [1, 2, 3, 4, 6]},
    # sigma, max_delta, iterations
    "glass_blur": {"cifar10": [(0.05,1,1), (0.25,1,1), (0.4,1,1), (0.25,1,2), (0.4,1,2)],
                   "tinyimagenet": [(0.1,1,1), (0.5,1,1), (0.6,1,2), (0.7,2,1), (0.9,2,2)],
                   "imagenet": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]},
    "defocus_blur": {"cifar10": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
                     "tinyimagenet": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
                     "imagenet": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]},
    "motion_blur": {"cifar10": [(6,1), (6,1.5), (6,2), (8,2), (9,2.5)],
                    "tinyimagenet": [(10,1), (10,1.5), (10,2), (10,2.5), (12,3)],
                    "imagenet": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]},
    "zoom_blur": {"cifar10": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                              np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
                  "tinyimagenet": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                                   np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
                  "imagenet": [np.arange(1, 1.11, 0.01),
                               np.arange(1, 1.16, 0.01),
                               np.arange(1, 1.21, 0.02),
                               np.arange(1, 1.26, 0.02),
                               np.arange(1, 1.31, 0.03)]},
}


# ---- helpers (identical in the three scripts)

def disk(radius, alias_blur=0.1, dtype=np.float32):
    if radius <= 8:
        L = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        L = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased_disk = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=dtype)
    aliased_disk /= np.sum(aliased_disk)

    # supersample disk to antialias
    return cv2.GaussianBlur(aliased_disk, ksize=ksize, sigmaX=alias_blur)


def clipped_zoom(img, zoom_factor):
    h = img.shape[0]
    # ceil crop height(= crop width)
    ch = int(np.ceil(h / zoom_factor))

    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    # trim off any extra pixels
    trim_top = (img.shape[0] - h) // 2

    return img[trim_top:trim_top + h, trim_top:trim_top + h]


try:
    from wand.api import library as wandlibrary
    from wand.image import Image as WandImage

    # Tell Python about the C method
    wandlibrary.MagickMotionBlurImage.argtypes = (ctypes.c_void_p,  # wand
                                                  ctypes.c_double,  # radius
                                                  ctypes.c_double,  # sigma
                                                  ctypes.c_double)  # angle

    # Extend wand.image.Image class to include method signature
    class MotionImage(WandImage):
        def motion_blur(self, radius=0.0, sigma=0.0, angle=0.0):
            wandlibrary.MagickMotionBlurImage(self.wand, radius, sigma, angle)

    MOTION_BLUR_MISSING = None
except ImportError as e:  # wand missing, or its MagickWand library (wand raises ImportError)
    MotionImage = None
    MOTION_BLUR_MISSING = f"wand / ImageMagick's MagickWand library is not available: {e}"


# ---- the corruptions: c is the severity's entry of C, side the script's image size

def gaussian_blur(x, c):
    x = gaussian(np.array(x) / 255., sigma=c, channel_axis=-1)
    return np.clip(x, 0, 1) * 255


def glass_blur(x, c, side, draws=None):
    # sigma, max_delta, iterations
    x = np.uint8(gaussian(np.array(x) / 255., sigma=c[0], channel_axis=-1) * 255)

    # locally shuffle pixels
    for i in range(c[2]):
        for h in range(side - c[1], c[1], -1):
            for w in range(side - c[1], c[1], -1):
                if draws is None:
                    dx, dy = np.random.randint(-c[1], c[1], size=(2,))
                else:
                    dx, dy = next(draws)
                h_prime, w_prime = h + dy, w + dx
                # swap
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]

    return np.clip(gaussian(x / 255., sigma=c[0], channel_axis=-1), 0, 1) * 255


def defocus_blur(x, c):
    x = np.array(x) / 255.
    kernel = disk(radius=c[0], alias_blur=c[1])

    channels = []
    for d in range(3):
        channels.append(cv2.filter2D(x[:, :, d], -1, kernel))
    channels = np.array(channels).transpose((1, 2, 0))  # 3xHxW -> HxWx3

    return np.clip(channels, 0, 1) * 255


def motion_blur(x, c, side, angle=None):
    x = PILImage.fromarray(np.asarray(x, dtype=np.uint8))
    output = BytesIO()
    x.save(output, format='PNG')
    x = MotionImage(blob=output.getvalue())

    x.motion_blur(radius=c[0], sigma=c[1], angle=np.random.uniform(-45, 45) if angle is None else angle)

    x = cv2.imdecode(np.frombuffer(x.make_blob(), np.uint8),
                     cv2.IMREAD_UNCHANGED)

    if x.shape != (side, side):
        return np.clip(x[..., [2, 1, 0]], 0, 255)  # BGR to RGB
    else:  # greyscale to RGB
        return np.clip(np.array([x, x, x]).transpose((1, 2, 0)), 0, 255)


def zoom_blur(x, c):
    x = (np.array(x) / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += clipped_zoom(x, zoom_factor)

    x = (x + out) / (len(c) + 1)
    return np.clip(x, 0, 1) * 255


_BODIES = {"gaussian_blur": (gaussian_blur, False), "glass_blur": (glass_blur, True),
           "defocus_blur": (defocus_blur, False), "motion_blur": (motion_blur, True),
           "zoom_blur": (zoom_blur, False)}


def _bind(body, with_side: bool, cs, side):
    def fn(img, severity):
        c = cs[severity - 1]
        return body(img, c, side) if with_side else body(img, c)
    fn.__name__ = body.__name__
    return fn


FUNCTIONS = {
    table: {name: _bind(body, with_side, C[name][table], SIDE[table])
            for name, (body, with_side) in _BODIES.items()
            if not (name == "motion_blur" and MotionImage is None)}
    for table in SIDE
}
