"""The PASCAL VOC colour map and its palette PNGs: how semantic masks are stored (docs/FORMATS.md), by the dataset
readers, the export and the report alike."""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image


def voc_palette(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC color map, uint8 [n, 3] (bit-shift algorithm; 255 is (224, 224, 192))."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


@functools.cache
def _palette_list() -> tuple[int, ...]:
    return tuple(voc_palette().reshape(-1).tolist())


def write_palette_png(path: str | os.PathLike, sem: np.ndarray) -> None:
    """Write a uint8 class map as a palette ("P") PNG with the VOC color map (computed once per process)."""
    img = Image.fromarray(np.ascontiguousarray(sem, dtype=np.uint8))
    img.putpalette(list(_palette_list()))  # an "L" image becomes "P"
    img.save(path, format="PNG")
