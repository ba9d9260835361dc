"""Saliency detectors for the ``am-saliency`` labeler (paper 000, section 2.3): class-agnostic foreground maps.

The paper's detector ``SD`` is a saliency network (WSS or DHSN); here it is pluggable, a function
``(image id, uint8 RGB [H, W, 3]) -> float32 [H, W] in [0, 1]``, built by ``saliency_source`` from a spec:

* ``"opencv"`` (``BUILTIN``): a classical detector from OpenCV's contrib ``saliency`` module, needing no
  weights (``opencv_saliency``);
* a folder path: precomputed maps ``<image id>.png`` (``SaliencyFolder``), the usual practice with DSS/DHSN
  maps computed once by their authors' code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from liid.datasets.base import Dataset, check_image_files, read_rgb
from liid.errors import LiidError

BUILTIN = "opencv"

SaliencyFn = Callable[[str, np.ndarray], np.ndarray]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise LiidError(f"saliency: expected a uint8 RGB image [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image


def _minmax(m: np.ndarray) -> np.ndarray:
    """float32 rescaled to [0, 1]; all zero when the map is flat (no pixel stands out)."""
    m = np.asarray(m, dtype=np.float32)
    lo, hi = float(m.min()), float(m.max())
    if not hi > lo:
        return np.zeros(m.shape, dtype=np.float32)
    return (m - lo) / (hi - lo)


def opencv_saliency(image: np.ndarray) -> np.ndarray:
    """Saliency of a uint8 RGB image [H, W, 3]: float32 [H, W], min-max normalised to [0, 1] (zero when flat).

    OpenCV's *fine grained* static detector (Montabone & Soto 2010: centre-surround intensity differences
    over several scales, at full resolution). Chosen over *spectral residual*, which works on a 64-pixel
    thumbnail and answers mostly at edges and small blobs: fine grained fills object interiors, which
    matters here because successive erasing (Algorithm 1) erases the region whose saliency is >= 0.7 and
    should remove the whole object before the next round, not its outline.
    """
    import cv2

    image = _check_image(image)
    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    ok, sal = detector.computeSaliency(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV expects BGR
    if not ok:  # pragma: no cover - the fine grained detector accepts any 8-bit colour image
        raise LiidError(f"opencv saliency failed on an image of size {image.shape[0]}x{image.shape[1]}")
    return _minmax(sal)


class SaliencyFolder:
    """Precomputed saliency maps, ``folder/<image id>.png``, read as value / 255 of the first channel of the
    map decoded like an image (``read_rgb``: grey and palette maps by their grey level, 16-bit ones scaled to
    8 bits, EXIF orientation applied). Every dataset image must have its map, inside the folder, checked when
    the folder is opened."""

    def __init__(self, folder: str | Path, dataset: Dataset):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise LiidError(f"{self.folder}: saliency folder not found")
        self.dataset = dataset
        check_image_files(self.folder, dataset, "saliency maps", suffix=".png")

    def read(self, image_id: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """The map of ``image_id``, float32 [H, W] in [0, 1]; a LiidError naming the file when it is unreadable
        or its size is not ``size`` (default: the dataset's size of that image)."""
        file = self.folder / f"{image_id}.png"
        if size is None:
            info = self.dataset.info(image_id)
            size = (info.height, info.width)
        arr = read_rgb(file, what="saliency map")[:, :, 0]
        h, w = (int(v) for v in size)
        if arr.shape != (h, w):
            raise LiidError(f"{file}: saliency map is {arr.shape[0]}x{arr.shape[1]}, the image is {h}x{w}")
        return arr.astype(np.float32) / 255.0

    def __call__(self, image_id: str, image: np.ndarray) -> np.ndarray:
        """The map of ``image_id``, checked against the size of ``image`` (uint8 [H, W, 3])."""
        return self.read(image_id, tuple(np.asarray(image).shape[:2]))


def saliency_source(spec: str, dataset: Dataset) -> SaliencyFn:
    """The saliency function ``(image id, image) -> float32 [H, W] in [0, 1]`` named by ``spec``: ``"opencv"``
    (the built-in classical detector) or a folder of precomputed ``<image id>.png`` maps."""
    if spec == BUILTIN:
        return lambda image_id, image: opencv_saliency(image)
    if Path(spec).is_dir():
        return SaliencyFolder(spec, dataset)
    raise LiidError(f"saliency {spec!r}: neither {BUILTIN!r} nor an existing folder of <image id>.png maps")
