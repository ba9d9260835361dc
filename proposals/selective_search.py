"""Segment proposals with masks by hierarchical grouping of superpixels (selective search, Uijlings et al. 2013).

Felzenszwalb–Huttenlocher superpixels (OpenCV's ``GraphSegmentation``) are computed in several colour spaces
and at several scales; in each, the two most similar neighbouring regions are merged greedily until one region
is left, under several similarity strategies (sums of colour, texture, size and fill terms). Every region
met on the way is a proposal, kept as a **mask** (the union of its superpixels), which is what LIID needs.

Written here rather than taken from OpenCV: ``cv2.ximgproc.segmentation.SelectiveSearchSegmentation`` runs the
same grouping but returns only boxes, and no maintained library returns the region masks.

Ranking. ``uijlings`` (the paper's): in each hierarchy the region made by the last merge has position 1, the
one before 2, and so on (the initial superpixels last); a region's value is its position times a uniform random
number seeded per image. ``lifetime``: a region's similarity at birth less its similarity when merged away, a
long-lived region being uniform inside and distinct from its surroundings. ``mixed`` (default) interleaves the
two orders. A mask found by several hierarchies keeps its best value. Scores are rank-based:
``(M - position) / M`` for the M distinct masks, so higher is better and ``score`` is strictly decreasing.
Measured on coco-mini val and the synthetic set, ``mixed`` is close to the better of the two on each
(BENCHMARKS.md).
"""

from __future__ import annotations

import heapq
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_util
from scipy import ndimage

from liid.errors import LiidError
from liid.proposals.importers._common import label_rles as _label_map_rles
from liid.proposals.importers._common import runs_to_rles
from liid.proposals.store import ImageProposals, rle_areas, rles_to_proposals

COLOUR_SPACES = {"hsv": cv2.COLOR_RGB2HSV, "lab": cv2.COLOR_RGB2LAB, "rgb": None, "ycrcb": cv2.COLOR_RGB2YCrCb}
COLOUR_BINS = 25  # per channel, as in the paper
TEXTURE_BINS = 10  # per orientation and channel
ORIENTATIONS = 8
RANKINGS = ("mixed", "lifetime", "uijlings")


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Settings of the generator. Defaults measured on coco-mini val (BENCHMARKS.md)."""

    colour_spaces: tuple[str, ...] = ("hsv", "lab")
    ks: tuple[int, ...] = (100, 300)  # Felzenszwalb scale parameter k, one segmentation per value
    sigma: float = 0.8  # Gaussian smoothing before segmenting
    min_size: int = 50  # smallest superpixel, pixels at working resolution
    strategies: tuple[str, ...] = ("ctsf", "tsf")  # letters: c colour, t texture, s size, f fill
    max_side: int = 512  # images are segmented at most this large; masks are returned at full size
    max_proposals: int = 500  # keep the best-ranked this many (after removing duplicate masks)
    ranking: str = "mixed"  # "lifetime", "uijlings" (position × random) or "mixed" (the two interleaved)
    seed: int = 0

    def validate(self) -> None:
        for cs in self.colour_spaces:
            if cs not in COLOUR_SPACES:
                raise LiidError(f"selective search: unknown colour space {cs!r} (choose from {sorted(COLOUR_SPACES)})")
        for s in self.strategies:
            if not s or set(s) - set("ctsf"):
                raise LiidError(f"selective search: strategy {s!r} must be made of the letters c, t, s, f")
        if not self.colour_spaces or not self.ks or not self.strategies:
            raise LiidError("selective search: need at least one colour space, one k and one strategy")
        if self.ranking not in RANKINGS:
            raise LiidError(f"selective search: ranking {self.ranking!r} must be one of {', '.join(RANKINGS)}")
        if min(self.ks) <= 0 or self.min_size < 1 or self.max_side < 16 or self.max_proposals < 1:
            raise LiidError("selective search: k, min_size, max_side and max_proposals must be positive")


# --- superpixels and their descriptors -------------------------------------------------------------------


def superpixels(image: np.ndarray, k: int, sigma: float, min_size: int) -> np.ndarray:
    """Felzenszwalb–Huttenlocher segmentation: int32 labels 0..n-1."""
    seg = cv2.ximgproc.segmentation.createGraphSegmentation(sigma, float(k), int(min_size))
    return seg.processImage(np.ascontiguousarray(image)).astype(np.int32)


def to_colour_space(rgb: np.ndarray, space: str) -> np.ndarray:
    code = COLOUR_SPACES[space]
    return rgb.copy() if code is None else cv2.cvtColor(rgb, code)


def colour_histograms(img: np.ndarray, labels: np.ndarray, n: int, space: str) -> np.ndarray:
    """[n, 3·25] per-region colour histograms, L1-normalised (hue spans 0..179 in OpenCV's HSV)."""
    hists = []
    for c in range(3):
        top = 180 if (space == "hsv" and c == 0) else 256
        bins = np.minimum(img[..., c].astype(np.int64) * COLOUR_BINS // top, COLOUR_BINS - 1)
        hists.append(np.bincount((labels * COLOUR_BINS + bins).ravel(), minlength=n * COLOUR_BINS)
                     .reshape(n, COLOUR_BINS))
    h = np.concatenate(hists, axis=1).astype(np.float64)
    return h / np.maximum(h.sum(axis=1, keepdims=True), 1.0)


def texture_histograms(img: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """[n, 3·8·10] histograms of Gaussian-derivative responses (σ = 1) in 8 orientations per channel."""
    hists = []
    for c in range(3):
        ch = img[..., c].astype(np.float32)
        gy = ndimage.gaussian_filter(ch, 1.0, order=(1, 0))
        gx = ndimage.gaussian_filter(ch, 1.0, order=(0, 1))
        for o in range(ORIENTATIONS // 2):
            theta = np.pi * o / (ORIENTATIONS // 2)
            r = np.cos(theta) * gx + np.sin(theta) * gy
            for resp in (np.maximum(r, 0), np.maximum(-r, 0)):  # the two signs = opposite orientations
                top = float(resp.max())
                bins = np.zeros(resp.shape, np.int64) if top <= 0 else \
                    np.minimum((resp * (TEXTURE_BINS / top)).astype(np.int64), TEXTURE_BINS - 1)
                hists.append(np.bincount((labels * TEXTURE_BINS + bins).ravel(), minlength=n * TEXTURE_BINS)
                             .reshape(n, TEXTURE_BINS))
    h = np.concatenate(hists, axis=1).astype(np.float64)
    return h / np.maximum(h.sum(axis=1, keepdims=True), 1.0)


def neighbour_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique pairs (a < b) of 4-connected adjacent labels, int64 [P, 2]."""
    pairs = [np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
             np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1)]
    p = np.concatenate(pairs)
    p = p[p[:, 0] != p[:, 1]]
    p = np.sort(p, axis=1).astype(np.int64)
    return np.unique(p, axis=0)


def label_rles(labels: np.ndarray, n: int) -> list[dict]:
    """One canonical COCO RLE per label 0..n-1 of an int map [H, W] (an absent label gets an empty mask),
    from the label map's runs (``proposals.importers._common.label_rles``): no dense per-label masks."""
    h, w = labels.shape
    values, rles = _label_map_rles(labels)
    out = runs_to_rles([(np.zeros(0, np.int64), np.zeros(0, np.int64))], h, w) * n if n else []
    for v, r in zip(values, rles, strict=True):
        if 0 <= v < n:
            out[int(v)] = r
    return out


# --- the greedy grouping -----------------------------------------------------------------------------------


@dataclass
class _Regions:
    """Growing arrays of region descriptors; regions 0..n-1 are superpixels, later ones merges."""

    colour: np.ndarray
    texture: np.ndarray
    size: np.ndarray
    box: np.ndarray  # [r, 4] y1, x1, y2, x2 inclusive
    image_size: float


def _similarity(reg: _Regions, a: int | np.ndarray, b: np.ndarray, strategy: str) -> np.ndarray:
    """Similarity of region(s) a with each region in b (vectorised), the sum of the strategy's terms."""
    s = np.zeros(len(b))
    if "c" in strategy:
        s += np.minimum(reg.colour[a], reg.colour[b]).sum(axis=1)
    if "t" in strategy:
        s += np.minimum(reg.texture[a], reg.texture[b]).sum(axis=1)
    if "s" in strategy:
        s += 1.0 - (reg.size[a] + reg.size[b]) / reg.image_size
    if "f" in strategy:
        y1 = np.minimum(reg.box[a, 0], reg.box[b, 0])
        x1 = np.minimum(reg.box[a, 1], reg.box[b, 1])
        y2 = np.maximum(reg.box[a, 2], reg.box[b, 2])
        x2 = np.maximum(reg.box[a, 3], reg.box[b, 3])
        bb = (y2 - y1 + 1) * (x2 - x1 + 1)
        s += 1.0 - (bb - reg.size[a] - reg.size[b]) / reg.image_size
    return s


def hierarchical_grouping(colour: np.ndarray, texture: np.ndarray, size: np.ndarray, box: np.ndarray,
                          pairs: np.ndarray, strategy: str) -> list[tuple[int, int, float]]:
    """Greedy merging of the most similar adjacent pair until no adjacent pairs remain.

    Returns the merges in order: merge ``m`` makes region ``n + m`` from the two regions it lists, at the
    similarity it lists.
    """
    n = len(size)
    total = n + max(n - 1, 0)
    reg = _Regions(np.zeros((total, colour.shape[1])), np.zeros((total, texture.shape[1])),
                   np.zeros(total), np.zeros((total, 4)), float(size.sum()))
    reg.colour[:n], reg.texture[:n], reg.size[:n], reg.box[:n] = colour, texture, size, box
    nbrs: list[set[int]] = [set() for _ in range(total)]
    for a, b in pairs:
        nbrs[a].add(int(b))
        nbrs[b].add(int(a))
    alive = np.zeros(total, dtype=bool)
    alive[:n] = True
    heap: list[tuple[float, int, int]] = []
    if len(pairs):
        sims = _similarity(reg, pairs[:, 0], pairs[:, 1], strategy)
        heap = [(-float(s), int(a), int(b)) for s, (a, b) in zip(sims, pairs, strict=True)]
        heapq.heapify(heap)
    merges: list[tuple[int, int, float]] = []
    nxt = n
    while heap:
        neg, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue  # lazy deletion: a pair whose region was already merged away
        t = nxt
        nxt += 1
        sa, sb = reg.size[a], reg.size[b]
        reg.size[t] = sa + sb
        reg.colour[t] = (sa * reg.colour[a] + sb * reg.colour[b]) / (sa + sb)
        reg.texture[t] = (sa * reg.texture[a] + sb * reg.texture[b]) / (sa + sb)
        reg.box[t] = [min(reg.box[a, 0], reg.box[b, 0]), min(reg.box[a, 1], reg.box[b, 1]),
                      max(reg.box[a, 2], reg.box[b, 2]), max(reg.box[a, 3], reg.box[b, 3])]
        alive[[a, b]] = False
        alive[t] = True
        nb = (nbrs[a] | nbrs[b]) - {a, b}
        nbrs[a] = nbrs[b] = set()
        nbrs[t] = nb
        for c in nb:
            nbrs[c].discard(a)
            nbrs[c].discard(b)
            nbrs[c].add(t)
        merges.append((a, b, -neg))
        if nb:
            arr = np.fromiter(nb, dtype=np.int64, count=len(nb))
            for c, s in zip(arr, _similarity(reg, t, arr, strategy), strict=True):
                heapq.heappush(heap, (-float(s), int(c), t))
    return merges


# --- the generator -----------------------------------------------------------------------------------------


def _rank_values(n: int, merges: list[tuple[int, int, float]], terms: int, ranking: str,
                 rng: np.random.Generator) -> np.ndarray:
    """Rank value of every region of one hierarchy (lower is better).

    ``uijlings``: position in the hierarchy (1 = the last merge; the superpixels last) times a uniform random
    number. ``lifetime``: minus the region's lifetime, the similarity at which it was formed (superpixels: the
    largest possible, one per term) less the similarity at which it was merged away (never merged: 0),
    divided by the number of terms. A long-lived region is uniform inside and distinct from its surroundings.
    """
    total = n + len(merges)
    if ranking == "uijlings":
        return (total - np.arange(total)) * rng.random(total)
    born = np.zeros(total)
    died = np.zeros(total)
    for m, (a, b, s) in enumerate(merges):
        born[n + m] = s
        died[a] = died[b] = s
    born[:n] = died[:n]  # a superpixel gets lifetime 0: ranked after every region that outlived a merge
    return -(born - died) / terms


def _final_order(uijlings: np.ndarray, lifetime: np.ndarray, ranking: str) -> np.ndarray:
    """Order of all proposals of an image: by one ranking, or ``mixed``: the two rankings interleaved
    (lifetime first), each proposal at its better place."""
    if ranking == "uijlings":
        return np.argsort(uijlings, kind="stable")
    if ranking == "lifetime":
        return np.argsort(lifetime, kind="stable")
    place = np.empty((2, len(uijlings)), dtype=np.int64)
    place[0, np.argsort(lifetime, kind="stable")] = np.arange(len(uijlings))
    place[1, np.argsort(uijlings, kind="stable")] = np.arange(len(uijlings))
    key = np.minimum(2 * place[0], 2 * place[1] + 1)
    return np.argsort(key, kind="stable")


def _working_image(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _image_seed(seed: int, image_key: str) -> int:
    return (zlib.crc32(image_key.encode()) ^ (seed * 0x9E3779B1)) & 0xFFFFFFFF


def selective_search(rgb: np.ndarray, config: SelectiveSearchConfig = SelectiveSearchConfig(),
                     image_key: str = "") -> ImageProposals:
    """Mask proposals of one RGB image (uint8 [H, W, 3]), best first, at the image's full size.

    ``image_key`` (the image id) seeds the ranking's random factors, so results do not depend on the
    order or the process in which images are handled.
    """
    config.validate()
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise LiidError(f"selective search: expected uint8 RGB [H, W, 3], got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    small = _working_image(rgb, config.max_side)
    rng = np.random.default_rng(_image_seed(config.seed, image_key))
    best: dict[bytes, list] = {}  # RLE counts → [best uijlings value, best lifetime value, RLE]
    for space in config.colour_spaces:
        img = to_colour_space(small, space)
        for k in config.ks:
            labels = superpixels(img, k, config.sigma, config.min_size)
            n = int(labels.max()) + 1
            colour = colour_histograms(img, labels, n, space)
            texture = texture_histograms(img, labels, n)
            size = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
            ys, xs = np.indices(labels.shape)
            idx = np.arange(n)
            box = np.stack([ndimage.minimum(ys, labels, idx), ndimage.minimum(xs, labels, idx),
                            ndimage.maximum(ys, labels, idx), ndimage.maximum(xs, labels, idx)],
                           axis=1).astype(np.float64)
            pairs = neighbour_pairs(labels)
            full = labels if labels.shape == (h, w) else \
                cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
            base_rles = label_rles(full, n)
            for strategy in config.strategies:
                merges = hierarchical_grouping(colour, texture, size, box, pairs, strategy)
                rles = list(base_rles)
                for a, b, _ in merges:
                    rles.append(mask_util.merge([rles[a], rles[b]], intersect=False))
                uij = _rank_values(n, merges, len(strategy), "uijlings", rng)
                life = _rank_values(n, merges, len(strategy), "lifetime", rng)
                for r, u, li in zip(rles, uij, life, strict=True):
                    entry = best.setdefault(r["counts"], [np.inf, np.inf, r])
                    entry[0] = min(entry[0], float(u))
                    entry[1] = min(entry[1], float(li))
    entries = [e for e, a in zip(best.values(), rle_areas([e[2] for e in best.values()]), strict=True) if a > 0]
    order = _final_order(np.array([e[0] for e in entries]), np.array([e[1] for e in entries]), config.ranking)
    order = order[: config.max_proposals]
    rles = [entries[int(i)][2] for i in order]
    scores = ((len(entries) - np.arange(len(order))) / max(len(entries), 1)).astype(np.float32)
    return rles_to_proposals(rles, scores, h, w)
