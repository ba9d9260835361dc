"""The embedded default dataset: textured shapes on cluttered backgrounds, with exact instance masks.

Small enough that a CPU trains a MIL network or a Mask R-CNN on it in minutes (``make demo``), hard enough
that neither colour alone nor "anything that is not background" solves it:

* 6 classes, each with its own shape **and** its own texture family (``CLASSES``); colours are drawn
  around a class hue with a spread wide enough that neighbouring classes overlap, so shape and texture
  matter, not only colour;
* 1-4 instances per image (most images 2-4, and then at least 2 distinct classes), random scale,
  rotation, aspect and position, pasted in depth order so that later instances occlude earlier ones;
* a cluttered background: smooth multi-colour noise, faint textured blobs, lines and arcs, grain.

Ground truth is exact because masks and pixels come from one painting: an instance's pixels are copied
from its texture exactly where its (not antialiased) shape mask is, and the instance map records the
top-most painter of every pixel. An instance whose visible part falls under 30 % of its full area or
40 pixels is redrawn (and earlier instances keep at least as much when a later one is placed).

Deterministic: image ``k`` is a function of ``(seed, k, config)`` only (``np.random.default_rng([seed,
k])``), so the first images of a 100-image and a 1000-image dataset are identical, and files are
byte-identical between runs. Arrays in, arrays out (``generate_image``); ``write_synthetic`` writes a
PASCAL VOC layout plus COCO instances JSONs of the same images.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from liid.atomic import atomic_dir, write_json
from liid.datasets.palette import voc_palette, write_palette_png  # noqa: F401 (re-exported)
from liid.errors import LiidError
from liid.progress import progress as progress_bar

FORMAT = "liid.synthetic"
VERSION = 1
GENERATOR = 1  # bump whenever the pixels a given seed produces change (it is part of the recorded settings)

MAX_INSTANCES = 4
COUNT_P = (0.15, 0.30, 0.30, 0.25)  # probability of 1, 2, 3, 4 instances (before rejection)
MIN_VISIBLE_FRACTION = 0.3  # of the instance's full (unoccluded, unclipped) area
MIN_VISIBLE_PIXELS = 40
TRIES = 40  # placements tried per instance before it is dropped
JPEG_QUALITY = 95
PREVIEW_IMAGES = 16


@dataclass(frozen=True)
class ShapeClass:
    """One object class: a shape, a texture family, a mean hue (degrees), and a radius factor that gives
    the classes similar areas."""

    name: str
    shape: str
    texture: str
    hue: float
    scale: float
    period: tuple[float, float]  # texture period range in pixels (noise cell size for "blotches")


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("disk", "disk", "gradient", 0.0, 0.85, (1.0, 1.0)),
    ShapeClass("square", "square", "checker", 60.0, 0.95, (5.0, 9.0)),
    ShapeClass("triangle", "triangle", "stripes", 120.0, 1.25, (4.0, 7.0)),
    ShapeClass("star", "star", "dots", 180.0, 1.25, (5.5, 8.5)),
    ShapeClass("ring", "ring", "blotches", 240.0, 1.0, (6.0, 10.0)),
    ShapeClass("cross", "cross", "hatch", 300.0, 1.05, (4.0, 7.0)),
)
HUE_SPREAD = 35.0  # std of an instance's hue around its class hue: neighbouring classes overlap
RANDOM_HUE = 0.1  # share of instances with a hue unrelated to their class


@dataclass(frozen=True)
class SyntheticConfig:
    """What the images depend on besides seed and index."""

    size: int = 160  # square images, size x size pixels
    classes: int = len(CLASSES)  # the first `classes` entries of CLASSES

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= len(CLASSES):
            raise LiidError(f"synthetic dataset: classes must be 2..{len(CLASSES)}, got {self.classes}")
        if not 32 <= self.size <= 4096:
            raise LiidError(f"synthetic dataset: size must be 32..4096 pixels, got {self.size}")

    @property
    def class_names(self) -> list[str]:
        """``["background", ...]``: index k is class k."""
        return ["background"] + [c.name for c in CLASSES[: self.classes]]


@dataclass(frozen=True)
class InstanceSpec:
    """Everything that determines one instance's mask and pixels (``paint_instance``)."""

    cls: int  # 1..K
    cx: float  # centre, pixels
    cy: float
    radius: float  # pixels; shapes fit in the unit disk of the object frame (square corners slightly out)
    angle: float  # radians
    stretch: float  # aspect: x scaled by sqrt(stretch), y by 1/sqrt(stretch)
    color1: tuple[float, float, float]  # RGB 0..255
    color2: tuple[float, float, float]
    period: float
    phase: tuple[float, float]
    direction: float  # radians (gradient direction)
    texture_seed: int


@dataclass
class SyntheticImage:
    """One generated image and its exact ground truth."""

    image: np.ndarray  # uint8 [H, W, 3]
    owner: np.ndarray  # uint8 [H, W]: 0 background, n = instance n (1-based, depth order: later on top)
    instances: list[InstanceSpec]  # instance n is instances[n - 1]
    full_areas: np.ndarray  # int64 [n]: pixels of each shape, unoccluded and not clipped by the border
    inside_areas: np.ndarray  # int64 [n]: pixels of each shape inside the image, unoccluded

    @property
    def truncated(self) -> np.ndarray:
        """bool [n]: the shape is cut by the image border."""
        return self.inside_areas < self.full_areas

    @property
    def classes(self) -> np.ndarray:
        """int64 [n], class index 1..K of each instance."""
        return np.array([s.cls for s in self.instances], dtype=np.int64)

    def masks(self) -> np.ndarray:
        """bool [n, H, W]: visible pixels of each instance (disjoint)."""
        return self.owner[None] == np.arange(1, len(self.instances) + 1, dtype=np.uint8)[:, None, None]

    def class_map(self) -> np.ndarray:
        """uint8 [H, W]: class of the top-most instance, 0 background."""
        lut = np.concatenate([[0], self.classes]).astype(np.uint8)
        return lut[self.owner]

    def boxes(self) -> np.ndarray:
        """int64 [n, 4]: x0, y0, x1, y1 of each visible mask, 0-based inclusive."""
        out = np.zeros((len(self.instances), 4), dtype=np.int64)
        for j, m in enumerate(self.masks()):
            ys, xs = np.nonzero(m)
            out[j] = (xs.min(), ys.min(), xs.max(), ys.max())
        return out

    def occluded(self) -> np.ndarray:
        """bool [n]: part of the instance is hidden by a later one."""
        vis = np.bincount(self.owner.ravel(), minlength=len(self.instances) + 1)[1:]
        return vis < self.inside_areas


# ---------------------------------------------------------------------------------------------- shapes


def _window(spec: InstanceSpec) -> tuple[int, int, int, int]:
    """Unclipped pixel window (y0, y1, x0, x1), exclusive ends, that contains the whole shape."""
    half = spec.radius * 1.13 * math.sqrt(max(spec.stretch, 1.0 / spec.stretch)) + 1.0
    return (math.floor(spec.cy - half), math.ceil(spec.cy + half) + 1,
            math.floor(spec.cx - half), math.ceil(spec.cx + half) + 1)


def _frame(spec: InstanceSpec, y0: int, y1: int, x0: int, x1: int):
    """Object-frame coordinates of the window's pixel centres: rotated pixels (ax, ay) and the unit-shape
    coordinates (u, v) (rotated, stretched, divided by the radius)."""
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] - spec.cy
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] - spec.cx
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    ax = c * xs + s * ys
    ay = -s * xs + c * ys
    k = math.sqrt(spec.stretch)
    return ax, ay, ax / (spec.radius * k), ay * k / spec.radius


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool mask of a unit shape at object-frame coordinates (u, v); no antialiasing (exact GT)."""
    if shape == "disk":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "triangle":  # equilateral, circumradius 1, apex at v = -1 (up, as image rows grow down)
        h = math.sqrt(3.0) / 2.0  # edge normals (0, 1), (h, -1/2), (-h, -1/2); inradius 1/2
        return (v <= 0.5) & (h * u - 0.5 * v <= 0.5) & (-h * u - 0.5 * v <= 0.5)
    if shape == "star":  # 5 points, inner radius 0.45: fold the angle into one half-spike
        n, rho = 5, 0.45
        r = np.hypot(u, v)
        phi = np.mod(np.arctan2(v, u), 2 * math.pi / n)
        phi = np.minimum(phi, 2 * math.pi / n - phi)
        qx, qy = r * np.cos(phi), r * np.sin(phi)
        px, py = rho * math.cos(math.pi / n) - 1.0, rho * math.sin(math.pi / n)  # P2 - P1, P1 = (1, 0)
        return px * qy - py * (qx - 1.0) >= 0.0
    if shape == "ring":
        rr = u * u + v * v
        return (rr <= 1.0) & (rr >= 0.55**2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


# -------------------------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """float32 [h, w] in [0, 1]: value noise, a (cells+1)^2 random grid upsampled bicubically."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _grain(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """float32 zero-mean uniform noise with this standard deviation (cheaper than Gaussian, looks the same)."""
    noise = rng.random(shape, dtype=np.float32)
    noise -= 0.5
    noise *= std * math.sqrt(12.0)
    return noise


def _texture(spec: InstanceSpec, ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3]: the instance's texture over a window (object-frame pixel coordinates ax, ay)."""
    kind = CLASSES[spec.cls - 1].texture
    rng = np.random.default_rng(spec.texture_seed)
    p, (p0, p1) = spec.period, spec.phase
    if kind == "gradient":  # smooth two-colour gradient along a random direction
        d = ax * math.cos(spec.direction) + ay * math.sin(spec.direction)
        t = np.clip(0.5 + d / (2.0 * spec.radius), 0.0, 1.0)
    elif kind == "checker":
        t = (np.floor((ax + p0) / p) + np.floor((ay + p1) / p)) % 2.0
    elif kind == "stripes":  # parallel to the triangle's base
        t = np.floor((ay + p1) / p) % 2.0
    elif kind == "dots":
        fx = np.mod(ax + p0, p) - p / 2
        fy = np.mod(ay + p1, p) - p / 2
        t = (fx * fx + fy * fy <= (0.3 * p) ** 2).astype(np.float64)
    elif kind == "blotches":  # camouflage: thresholded value noise, soft edges
        h, w = ax.shape
        n = _smooth_noise(rng, h, w, max(2, round(max(h, w) / p)))
        t = np.clip((n - 0.5) * 5.0 + 0.5, 0.0, 1.0)
    elif kind == "hatch":  # thin stripes at 45 degrees to the cross's arms
        t = (np.mod((ax + ay) / math.sqrt(2.0) + p0, p) < 0.4 * p).astype(np.float64)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    c1 = np.asarray(spec.color1, dtype=np.float32)
    c2 = np.asarray(spec.color2, dtype=np.float32)
    rgb = c1 + t.astype(np.float32)[..., None] * (c2 - c1)
    rgb += _grain(rng, ax.shape + (1,), 5.0)
    rgb += _grain(rng, ax.shape + (3,), 2.5)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def paint_instance(spec: InstanceSpec, size: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray, int]:
    """Mask and pixels of one instance, clipped to a size x size image.

    Returns ``((y0, x0), mask, rgb, full_area)``: ``mask`` bool [h, w] and ``rgb`` uint8 [h, w, 3] over the
    clipped window whose top-left pixel is (y0, x0); ``full_area`` is the shape's pixel count without the
    border (for the visibility rule and the truncated flag). Texture noise depends on the spec only, not
    on the clipping.
    """
    y0, y1, x0, x1 = _window(spec)
    ax, ay, u, v = _frame(spec, y0, y1, x0, x1)
    mask = _shape_mask(CLASSES[spec.cls - 1].shape, u, v)
    full = int(mask.sum())
    rgb = _texture(spec, ax, ay)
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, size), max(x0, 0), min(x1, size)
    sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    return (cy0, cx0), mask[sl], rgb[sl], full


def instance_layer(spec: InstanceSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-image mask bool [H, W] and texture uint8 [H, W, 3] (zero outside the window) of one instance,
    as painted before occlusion (for checking the ground truth)."""
    (y0, x0), m, rgb, _ = paint_instance(spec, size)
    mask = np.zeros((size, size), dtype=bool)
    img = np.zeros((size, size, 3), dtype=np.uint8)
    mask[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    img[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = rgb
    return mask, img


# ------------------------------------------------------------------------------------------ background


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, float(np.clip(s, 0, 1)),
                                        float(np.clip(v, 0, 1))), dtype=np.float32) * 255.0


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 [size, size] in [0, 1]: a random periodic pattern (stripes, checker, dots) or flat, at any
    orientation: background clutter that shares the objects' texture families."""
    kind = int(rng.integers(4))
    p = float(rng.uniform(4.0, 10.0))
    a = float(rng.uniform(0.0, math.pi))
    yy = np.arange(size, dtype=np.float32)[:, None]
    xx = np.arange(size, dtype=np.float32)[None, :]
    ax = math.cos(a) * xx + math.sin(a) * yy
    ay = -math.sin(a) * xx + math.cos(a) * yy
    if kind == 0:
        return (np.floor(ay / p) % 2.0).astype(np.float32)
    if kind == 1:
        return ((np.floor(ax / p) + np.floor(ay / p)) % 2.0).astype(np.float32)
    if kind == 2:
        fx, fy = np.mod(ax, p) - p / 2, np.mod(ay, p) - p / 2
        return (fx * fx + fy * fy <= (0.3 * p) ** 2).astype(np.float32)
    return np.ones((1, 1), dtype=np.float32)


def _blend(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    """In place: img = img * (1 - alpha) + color * alpha (alpha [H, W], color [3] or [H, W, 3])."""
    a = alpha.astype(np.float32, copy=False)[..., None]
    img -= a * (img - np.asarray(color, dtype=np.float32))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: smooth multi-colour noise, faint textured blobs, lines and arcs, grain."""
    cols = [_hsv(rng.uniform(0, 360), rng.uniform(0.05, 0.55), rng.uniform(0.25, 0.85)) for _ in range(3)]
    n1 = _smooth_noise(rng, size, size, int(rng.integers(2, 6)))[..., None]
    n2 = _smooth_noise(rng, size, size, int(rng.integers(6, 14)))
    img = cols[0] * (1.0 - n1) + cols[1] * n1
    _blend(img, 0.6 * n2, cols[2])
    for _ in range(int(rng.integers(2, 6))):  # blobs: irregular, soft or hard edged, maybe patterned
        field = _smooth_noise(rng, size, size, int(rng.integers(3, 8)))
        sharp = float(rng.choice([6.0, 60.0]))
        alpha = np.clip((field - float(rng.uniform(0.6, 0.75))) * sharp, 0.0, 1.0) * float(rng.uniform(0.25, 0.6))
        c = _hsv(rng.uniform(0, 360), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.95))
        _blend(img, alpha * _pattern(rng, size), c)
    layer = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(rng.integers(3, 10))):  # lines and arcs, blended only over their bounding box
        c = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.9), rng.uniform(0.1, 1.0))
        thick = int(rng.integers(1, 4))
        if rng.random() < 0.6:
            p1 = tuple(int(x) for x in rng.integers(-size // 4, size + size // 4, 2))
            p2 = tuple(int(x) for x in rng.integers(-size // 4, size + size // 4, 2))
            cv2.line(layer, p1, p2, 1.0, thick, cv2.LINE_AA)
            lo, hi = np.minimum(p1, p2), np.maximum(p1, p2)
        else:
            centre = tuple(int(x) for x in rng.integers(0, size, 2))
            axes = tuple(int(x) for x in rng.integers(size // 16 + 1, size // 3 + 2, 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(60, 300)), 1.0, thick, cv2.LINE_AA)
            lo, hi = np.subtract(centre, max(axes)), np.add(centre, max(axes))
        x0, y0 = np.clip(lo - thick - 2, 0, size)
        x1, y1 = np.clip(hi + thick + 3, 0, size)
        box = (slice(y0, y1), slice(x0, x1))
        _blend(img[box], layer[box] * float(rng.uniform(0.3, 0.7)), c)
        layer[box] = 0.0
    img += _grain(rng, (size, size, 1), 6.0)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img += _grain(rng, (size, size, 3), 3.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- images


def _sample_instance(rng: np.random.Generator, cls: int, size: int) -> InstanceSpec:
    c = CLASSES[cls - 1]
    hue = rng.uniform(0.0, 360.0) if rng.random() < RANDOM_HUE else c.hue + rng.normal(0.0, HUE_SPREAD)
    sat, val = rng.uniform(0.45, 1.0), rng.uniform(0.5, 1.0)
    c1 = _hsv(hue, sat, val)
    if rng.random() < 0.5:  # darker second colour
        c2 = _hsv(hue + rng.normal(0.0, 25.0), sat * rng.uniform(0.5, 1.0), val * rng.uniform(0.25, 0.6))
    else:  # paler second colour
        c2 = _hsv(hue + rng.normal(0.0, 25.0), sat * rng.uniform(0.15, 0.5), min(1.0, val * rng.uniform(1.1, 1.5)))
    period = float(rng.uniform(*c.period))
    return InstanceSpec(
        cls=cls,
        cx=float(rng.uniform(0.12, 0.88) * size), cy=float(rng.uniform(0.12, 0.88) * size),
        radius=float(rng.uniform(0.10, 0.20) * size * c.scale),
        angle=float(rng.uniform(0.0, 2 * math.pi)),
        stretch=float(math.exp(rng.uniform(math.log(0.8), math.log(1.25)))),
        color1=tuple(float(x) for x in c1), color2=tuple(float(x) for x in c2),
        period=period, phase=(float(rng.uniform(0, period)), float(rng.uniform(0, period))),
        direction=float(rng.uniform(0.0, 2 * math.pi)),
        texture_seed=int(rng.integers(2**62)),
    )


def _pick_classes(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """n classes in 1..k; with n >= 2 at least two distinct; repeats allowed beyond that; random order."""
    if n == 1:
        return [int(rng.integers(k)) + 1]
    picked = [int(x) + 1 for x in rng.choice(k, 2, replace=False)]
    picked += [int(x) + 1 for x in rng.integers(0, k, n - 2)]
    return [picked[i] for i in rng.permutation(n)]


def generate_image(seed: int, index: int, config: SyntheticConfig = SyntheticConfig()) -> SyntheticImage:
    """Image ``index`` of the dataset with this seed: a function of (seed, index, config) only."""
    if seed < 0 or index < 0:
        raise LiidError(f"synthetic dataset: seed and index must be >= 0 (got {seed}, {index})")
    size = config.size
    rng = np.random.default_rng([seed, index])
    img = _background(rng, size)
    owner = np.zeros((size, size), dtype=np.uint8)
    n_target = int(rng.choice(MAX_INSTANCES, p=COUNT_P)) + 1
    specs: list[InstanceSpec] = []
    full_areas: list[int] = []
    inside_areas: list[int] = []
    visible = np.zeros(MAX_INSTANCES + 1, dtype=np.int64)  # visible pixels per instance number
    need = np.zeros(MAX_INSTANCES + 1, dtype=np.float64)  # pixels each must keep
    for cls in _pick_classes(rng, n_target, config.classes):
        n = len(specs) + 1
        tries = TRIES if specs else 50 * TRIES  # the first instance is only ever limited by the border
        for _ in range(tries):
            spec = _sample_instance(rng, cls, size)
            (y0, x0), m, rgb, full = paint_instance(spec, size)
            own = max(MIN_VISIBLE_FRACTION * full, MIN_VISIBLE_PIXELS)
            if m.sum() < own:
                continue
            win = (slice(y0, y0 + m.shape[0]), slice(x0, x0 + m.shape[1]))
            lost = np.bincount(owner[win][m], minlength=MAX_INSTANCES + 1)
            if np.any((visible - lost)[1:n] < need[1:n]):
                continue
            owner[win][m] = n
            img[win][m] = rgb[m]
            visible[1:n] -= lost[1:n]
            visible[n], need[n] = int(m.sum()), own
            specs.append(spec)
            full_areas.append(full)
            inside_areas.append(int(m.sum()))
            break
        else:
            if not specs:
                raise LiidError(f"synthetic dataset: could not place any instance in image {index} "
                                f"(size {size} too small?)")
    return SyntheticImage(image=img, owner=owner, instances=specs, full_areas=np.array(full_areas, dtype=np.int64),
                          inside_areas=np.array(inside_areas, dtype=np.int64))


# --------------------------------------------------------------------------------------------- writing


def image_id(index: int) -> str:
    """File stem of image ``index``: ``syn_000000``, ``syn_000001``, ..."""
    return f"syn_{index:06d}"


def is_val(index: int, val_fraction: float) -> bool:
    """Whether image ``index`` is in the validation split: every 1/val_fraction-th image, so the split of
    image k does not depend on the number of images (``floor(N * val_fraction)`` val images in all)."""
    return math.floor((index + 1) * val_fraction + 1e-9) > math.floor(index * val_fraction + 1e-9)


def voc_xml(img_id: str, sample: SyntheticImage, class_names: list[str]) -> bytes:
    """PASCAL VOC annotation: one <object> per instance in instance order, boxes of the visible masks,
    1-based inclusive."""
    h, w = sample.owner.shape
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "synthetic"
    ET.SubElement(root, "filename").text = f"{img_id}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "LIID synthetic shapes"
    sz = ET.SubElement(root, "size")
    for tag, val in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(val)
    ET.SubElement(root, "segmented").text = "1"
    occluded = sample.occluded()
    for j, (spec, box) in enumerate(zip(sample.instances, sample.boxes(), strict=True)):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[spec.cls]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(sample.truncated[j]))
        ET.SubElement(obj, "occluded").text = str(int(occluded[j]))
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), box + 1, strict=True):
            ET.SubElement(bb, tag).text = str(int(val))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def coco_annotations(sample: SyntheticImage, coco_image_id: int, first_id: int) -> list[dict]:
    """COCO instance annotations (compressed RLE, counts as str) of one image, ids from ``first_id``."""
    anns = []
    h, w = sample.owner.shape
    for j, (m, box) in enumerate(zip(sample.masks(), sample.boxes(), strict=True)):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        x0, y0, x1, y1 = (int(v) for v in box)
        anns.append({"id": first_id + j, "image_id": coco_image_id, "category_id": int(sample.instances[j].cls),
                     "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                     "area": int(m.sum()), "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1], "iscrowd": 0})
    return anns


_PREVIEW_COLORS = np.array([(255, 255, 255), (255, 60, 60), (255, 230, 40), (60, 255, 60), (40, 230, 255),
                            (80, 110, 255), (255, 80, 255)], dtype=np.uint8)


def preview_tile(sample: SyntheticImage, class_names: list[str]) -> np.ndarray:
    """uint8 RGB: the image with each instance's visible outline in its class colour and its class name."""
    img = sample.image.copy()
    o = sample.owner
    edge = np.zeros(o.shape, dtype=bool)
    edge[1:] |= o[1:] != o[:-1]
    edge[:-1] |= o[:-1] != o[1:]
    edge[:, 1:] |= o[:, 1:] != o[:, :-1]
    edge[:, :-1] |= o[:, :-1] != o[:, 1:]
    edge &= o > 0
    lut = np.concatenate([[0], sample.classes]) % len(_PREVIEW_COLORS)
    img[edge] = _PREVIEW_COLORS[lut[o[edge]]]
    scale = max(0.3, o.shape[0] / 480)
    for spec, box in zip(sample.instances, sample.boxes(), strict=True):
        org = (int(box[0]), max(int(box[1]) - 2, 8))
        col = tuple(int(c) for c in _PREVIEW_COLORS[spec.cls % len(_PREVIEW_COLORS)])
        cv2.putText(img, class_names[spec.cls], (org[0] + 1, org[1] + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, class_names[spec.cls], org, cv2.FONT_HERSHEY_SIMPLEX, scale, col, 1, cv2.LINE_AA)
    return img


def contact_sheet(tiles: list[np.ndarray], columns: int = 4, gap: int = 2) -> np.ndarray:
    """uint8 RGB grid of equally sized tiles on a dark grey ground."""
    h, w = tiles[0].shape[:2]
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 40, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = t
    return sheet


def settings(images: int, seed: int, config: SyntheticConfig, val_fraction: float) -> dict:
    """What the output depends on: recorded as ``inputs`` in synthetic.json (a rerun with the same
    settings is skipped, different settings are refused without --overwrite)."""
    return {"generator": GENERATOR, "images": int(images), "seed": int(seed), **asdict(config),
            "val_fraction": float(val_fraction)}


def write_synthetic(out: str | os.PathLike, images: int, seed: int = 0, config: SyntheticConfig = SyntheticConfig(),
                    val_fraction: float = 0.2, overwrite: bool = False, progress: bool = True) -> dict:
    """Generate ``images`` images and write them to ``out`` (atomically) in VOC layout plus COCO JSONs.

    Returns the summary written to ``out/synthetic.json``.
    """
    if images < 1:
        raise LiidError(f"{out}: images must be >= 1, got {images}")
    if not 0.0 <= val_fraction < 1.0:
        raise LiidError(f"{out}: val fraction must be in [0, 1), got {val_fraction}")
    names = config.class_names
    split_ids: dict[str, list[str]] = {"train": [], "val": []}
    coco: dict[str, dict] = {s: {"images": [], "annotations": []} for s in split_ids}
    per_class = np.zeros(len(names), dtype=np.int64)
    per_count = np.zeros(MAX_INSTANCES + 1, dtype=np.int64)
    multi_class = occluded = truncated = 0
    tiles: list[np.ndarray] = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for d in ("JPEGImages", "Annotations", "SegmentationObject", "SegmentationClass",
                  "ImageSets/Segmentation", "ImageSets/Main", "annotations"):
            (tmp / d).mkdir(parents=True)
        for i in progress_bar(range(images), desc="make-synthetic", unit="img", enabled=progress):
            sample = generate_image(seed, i, config)
            iid = image_id(i)
            split = "val" if is_val(i, val_fraction) else "train"
            split_ids[split].append(iid)
            Image.fromarray(sample.image).save(tmp / "JPEGImages" / f"{iid}.jpg", format="JPEG",
                                               quality=JPEG_QUALITY, subsampling=0)
            (tmp / "Annotations" / f"{iid}.xml").write_bytes(voc_xml(iid, sample, names))
            write_palette_png(tmp / "SegmentationObject" / f"{iid}.png", sample.owner)
            write_palette_png(tmp / "SegmentationClass" / f"{iid}.png", sample.class_map())
            c = coco[split]
            c["images"].append({"id": i + 1, "file_name": f"{iid}.jpg", "height": config.size,
                                "width": config.size})
            c["annotations"] += coco_annotations(sample, i + 1, len(c["annotations"]) + 1)
            cls = sample.classes
            np.add.at(per_class, cls, 1)
            per_count[len(cls)] += 1
            multi_class += len(set(cls.tolist())) >= 2
            occluded += int(sample.occluded().sum())
            truncated += int(sample.truncated.sum())
            if len(tiles) < PREVIEW_IMAGES:
                tiles.append(preview_tile(sample, names))
        for d in ("Segmentation", "Main"):
            for name, ids in (("train", split_ids["train"]), ("val", split_ids["val"]),
                              ("trainval", [image_id(i) for i in range(images)])):
                (tmp / "ImageSets" / d / f"{name}.txt").write_text("".join(f"{x}\n" for x in ids))
        (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in names))
        categories = [{"id": k, "name": names[k], "supercategory": "shape"} for k in range(1, len(names))]
        for split, c in coco.items():
            doc = {"info": {"description": "LIID synthetic shapes (liid make-synthetic)", "version": str(VERSION),
                            "seed": int(seed)},
                   "licenses": [], "images": c["images"], "annotations": c["annotations"],
                   "categories": categories}
            with open(tmp / "annotations" / f"instances_{split}.json", "w") as f:
                json.dump(doc, f, separators=(",", ":"))
        Image.fromarray(contact_sheet(tiles)).save(tmp / "preview.png", format="PNG")
        instances = int(per_class.sum())
        summary = {
            "format": FORMAT, "version": VERSION,
            "images": images, "train": len(split_ids["train"]), "val": len(split_ids["val"]),
            "instances": instances, "classes": names,
            "textures": {c.name: c.texture for c in CLASSES[: config.classes]},
            "per_class_instances": {names[k]: int(per_class[k]) for k in range(1, len(names))},
            "images_by_instance_count": {str(n): int(per_count[n]) for n in range(1, MAX_INSTANCES + 1)},
            "images_with_2plus_classes": int(multi_class),
            "occluded_instances": occluded, "truncated_instances": truncated,
            "inputs": settings(images, seed, config, val_fraction),
        }
        write_json(tmp / "synthetic.json", summary)
    return summary

