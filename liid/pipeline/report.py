"""The HTML report of a LIID run, for any dataset (synthetic, COCO, VOC): the numbers, and pictures where a person
would rather look than read.

``write_report(out, title=..., dataset=..., ...)`` writes ``out/report.html`` and its pictures under
``out/figures`` (each PNG written atomically). Every input but the dataset is optional and only adds its section:

- warnings, at the top;
- a headline table, one row per labeling (``liid evaluate --json`` files: AP, AP50, AP75, VOC mAP^r at 0.25 / 0.5 /
  0.7 / 0.75 and ABO, or mIoU and pixel accuracy for semantic-only labelings) and the segmenter's evaluation;
- per-class AP50 (and per-class IoU) tables, classes as rows, labelings as columns;
- for a sample of training images, one figure per image: the image, its proposals, each labeling's pseudo
  instances (or semantic map), the ground truth and the CAM of each image label, with the class names in a legend;
- the segmenter's predictions on a few held-out images next to their ground truth;
- the component sizes of the kNN graph, the loss curve of each training, the time of each stage;
- extra pictures as they are, and the run's scalar metrics.

Each panel is drawn at about ``PANEL`` pixels on its longer side whatever the image size (a 640x480 COCO photo
and a 160-pixel synthetic image both give readable panels); captions and legends are drawn by matplotlib (its
object API on the Agg canvas, no pyplot state). A named input that does not exist leaves its part out with a
note among the warnings; one that cannot be read (corrupt JSON, a log line that is no JSON) is a LiidError naming it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util
from scipy import ndimage

from liid.atomic import atomic_file, load_npy, read_json, write_bytes
from liid.datasets.base import IGNORE, Dataset
from liid.datasets.palette import voc_palette
from liid.datasets.voc import read_index_png
from liid.detection.evaluate import _result_categories, category_map, match_coco_images, match_images, to_rle
from liid.errors import LiidError
from liid.models.checkpoint import checkpoint_file
from liid.proposals.store import read_image_proposals, read_proposal_index
from liid.training.log import read_log

PALETTE = voc_palette()
PROPOSAL_COLOUR = (255, 255, 0)
FIGURES = "figures"

PANEL = 320  # px, the longer side of every image panel
DPI = 100
FONT = 11  # pt, captions and legends (15 px at DPI 100)
CAPTION_H = 26  # px above each panel for its caption
GAP = 10  # px between panels
MARGIN = 8  # px around a figure
COLUMNS = 5  # panels per line of an image figure; more wrap to the next line
MAX_PROPOSALS = 100  # drawn per image (the best-scored); the caption gives the total
MAX_CAMS = 8  # CAM panels per image
MIN_SCORE = 0.5  # segmenter predictions drawn
LOG_SPREAD = 100.0  # loss curves: a log y axis when max / min exceeds this
OUTLINE = 2  # px, mask outlines in the panels
PICTURES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")  # extra figures shown; other files are linked

INSTANCE_METRICS = (("ap", "AP"), ("ap50", "AP50"), ("ap75", "AP75"), ("map_r:0.25", "mAP^r 0.25"),
                    ("map_r:0.5", "mAP^r 0.5"), ("map_r:0.7", "mAP^r 0.7"), ("map_r:0.75", "mAP^r 0.75"),
                    ("abo", "ABO"))
SEMANTIC_METRICS = (("miou", "mIoU"), ("pixel_accuracy", "pixel acc."))


# --------------------------------------------------------------------------------------- drawing


def overlay(image: np.ndarray, masks: np.ndarray, colours: Sequence[Sequence[int]], alpha: float = 0.45,
            fill: bool = True, width: int = 1) -> np.ndarray:
    """``image`` (uint8 [H, W, 3]) with each mask (bool [n, H, W]) tinted and outlined in its colour (an outline
    ``width`` pixels thick).

    Larger masks are drawn first, so a small instance on a large one stays visible.
    """
    out = image.astype(np.float32).copy()
    order = np.argsort([-m.sum() for m in masks]) if len(masks) else []
    for i in order:
        m, c = masks[i], np.asarray(colours[i], dtype=np.float32)
        if fill:
            out[m] = (1 - alpha) * out[m] + alpha * c
        edge = m & ~ndimage.binary_erosion(m, iterations=width, border_value=0)
        out[edge] = c
    return np.clip(out, 0, 255).astype(np.uint8)


def size_bins(sizes: np.ndarray) -> list[tuple[str, int, int]]:
    """Component sizes grouped in powers of two: ``(label, components, proposals in them)`` per bin."""
    sizes = np.asarray(sizes, dtype=np.int64)
    sizes = sizes[sizes > 0]
    if not len(sizes):
        return []
    exp = np.floor(np.log2(sizes)).astype(int)
    bins = []
    for e in range(int(exp.max()) + 1):
        sel = exp == e
        lo, hi = 2 ** e, 2 ** (e + 1) - 1
        bins.append((str(lo) if lo == hi else f"{lo}-{hi}", int(sel.sum()), int(sizes[sel].sum())))
    return bins


def histogram_png(bins: Sequence[tuple[str, int, int]], file: Path, title: str) -> None:
    """A bar chart of ``size_bins`` drawn with PIL: bar height = number of components (log scale), with the count
    of components above each bar and the number of proposals in them below its label. (The report draws its
    own with matplotlib: ``components_figure``.)"""
    w_bar, gap, left, bottom, top, height = 56, 10, 84, 48, 40, 200
    width = left + len(bins) * (w_bar + gap) + 20
    img = Image.new("RGB", (max(width, 360), top + height + bottom), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill=(0, 0, 0))
    peak = max([c for _, c, _ in bins] + [1])
    scale = height / np.log10(peak + 1) if peak > 0 else 1.0
    y0 = top + height
    d.line([(left - 4, y0), (width - 10, y0)], fill=(0, 0, 0))
    d.line([(left - 4, top), (left - 4, y0)], fill=(0, 0, 0))
    d.text((4, top - 2), "components", fill=(90, 90, 90))
    d.text((4, top + 12), "(log scale)", fill=(90, 90, 90))
    for i, (label, count, nodes) in enumerate(bins):
        x = left + i * (w_bar + gap)
        h = np.log10(count + 1) * scale if count else 0
        if count:
            d.rectangle([x, y0 - h, x + w_bar, y0], fill=(70, 120, 190))
        d.text((x + 2, y0 - h - 13), str(count), fill=(0, 0, 0))
        d.text((x + 2, y0 + 4), label, fill=(0, 0, 0))
        d.text((x + 2, y0 + 18), f"{nodes} p.", fill=(120, 120, 120))
    d.text((left, y0 + 32), "component size (proposals); below each bar: proposals in those components",
           fill=(90, 90, 90))
    img.save(file)


def class_colours(classes: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in PALETTE[int(k)]) for k in classes]


def panel_size(height: int, width: int, side: int = PANEL) -> tuple[int, int]:
    """(height, width) of an image's panel: its longer side ``side`` pixels, the aspect ratio kept."""
    s = side / max(height, width, 1)
    return max(1, round(height * s)), max(1, round(width * s))


def fit_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] resized to ``size`` (h, w): Lanczos when shrinking, bilinear when enlarging."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    shrink = h < img.shape[0]
    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS if shrink else Image.BILINEAR))


def fit_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [n, H, W] resized to ``size``: the area-weighted resample of each mask, thresholded at half (a thin
    instance is neither lost nor fattened)."""
    h, w = size
    if masks.shape[1:] == (h, w):
        return masks.astype(bool)
    out = np.zeros((len(masks), h, w), dtype=bool)
    for i, m in enumerate(masks):
        out[i] = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)) >= 128
    return out


def fit_labels(sem: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class map (uint8 [H, W]) resized to ``size`` by nearest neighbour."""
    h, w = size
    if sem.shape == (h, w):
        return sem
    return np.asarray(Image.fromarray(sem.astype(np.uint8)).resize((w, h), Image.NEAREST))


def semantic_overlay(img: np.ndarray, sem: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with each class region of ``sem`` (0 background, 255 ignore) tinted and outlined in its colour;
    ignored pixels are washed out."""
    present = [int(k) for k in np.unique(sem) if 0 < k != IGNORE]
    out = overlay(img, np.stack([sem == k for k in present]) if present else np.zeros((0, *sem.shape), bool),
                  class_colours(np.asarray(present, dtype=np.int64)), alpha=alpha, width=OUTLINE)
    ignore = sem == IGNORE
    out[ignore] = (0.5 * out[ignore] + 127.5).astype(np.uint8)
    return out


def cam_overlay(img: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The image blended with a heat map (matplotlib's jet; 0 blue, 1 red) of ``cam`` (float [h, w] in [0, 1])."""
    from matplotlib import colormaps  # noqa: PLC0415 (matplotlib only when drawing)

    heat = colormaps["jet"](np.clip(np.nan_to_num(cam.astype(np.float32)), 0, 1))[..., :3] * 255
    return np.clip(0.5 * img.astype(np.float32) + 0.5 * heat, 0, 255).astype(np.uint8)


def fit_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))


@dataclass
class Panel:
    """One picture of a figure, already at its panel size, and the caption above it."""

    pixels: np.ndarray  # uint8 [h, w, 3]
    caption: str


def _clip(text: str, width_px: int) -> str:
    n = max(4, int(width_px / 7.0))  # DejaVu Sans at 11 pt: about 7 px a character on average
    return text if len(text) <= n else text[: n - 1] + "…"


def _figure(width_px: float, height_px: float):
    from matplotlib.figure import Figure  # noqa: PLC0415

    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")


def save_figure(fig, file: Path) -> None:
    """``fig`` as a PNG at ``DPI``, atomically (a temporary sibling, then renamed)."""
    with atomic_file(file, overwrite=True, mode="wb") as f:
        fig.savefig(f, format="png", dpi=DPI, facecolor="white")


def draw_panels(file: Path, panels: Sequence[Panel], legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
                columns: int = COLUMNS) -> None:
    """One figure of ``panels`` placed pixel for pixel (no resampling), ``columns`` to a line, each under its
    caption, with ``legend`` (name, colour) below them; written to ``file``."""
    from matplotlib.patches import Patch  # noqa: PLC0415

    lines = [list(panels[i:i + columns]) for i in range(0, len(panels), columns)]
    widths = [sum(p.pixels.shape[1] for p in line) + GAP * (len(line) - 1) for line in lines]
    heights = [CAPTION_H + max(p.pixels.shape[0] for p in line) for line in lines]
    width = max([*widths, 200]) + 2 * MARGIN
    entry = max([len(n) for n, _ in legend] + [1]) * 8 + 44  # px per legend entry
    ncol = max(1, min(len(legend), (width - 2 * MARGIN) // entry))
    legend_h = (math.ceil(len(legend) / ncol) * 24 + 10) if legend else 0
    height = 2 * MARGIN + sum(heights) + GAP * (len(lines) - 1) + legend_h
    fig = _figure(width, height)
    top = height - MARGIN  # figure pixels count from the bottom
    for line, lh in zip(lines, heights, strict=True):
        x = MARGIN
        for p in line:
            ph, pw = p.pixels.shape[:2]
            fig.text(x / width, (top - CAPTION_H + 8) / height, _clip(p.caption, pw), fontsize=FONT,
                     ha="left", va="bottom")
            fig.figimage(np.ascontiguousarray(p.pixels), xo=x, yo=top - CAPTION_H - ph, origin="upper")
            x += pw + GAP
        top -= lh + GAP
    if legend:
        handles = [Patch(facecolor=np.asarray(c, dtype=float) / 255, edgecolor="black", label=n) for n, c in legend]
        fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(MARGIN / width, MARGIN / height), ncol=ncol,
                   fontsize=FONT, frameon=False, borderaxespad=0, handlelength=1.4, columnspacing=1.6)
    save_figure(fig, file)


def components_figure(sizes: np.ndarray, file: Path, title: str) -> None:
    """The component sizes (proposals per component) in powers of two: bar height = number of components (log
    scale when a bar passes 20), the count above each bar, under each size the proposals in those components."""
    bins = size_bins(sizes)
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: PLC0415

    fig = _figure(max(720, 90 * len(bins) + 160), 400)
    ax = fig.add_subplot()
    counts = [c for _, c, _ in bins]
    ax.bar(range(len(bins)), counts, color=(0.27, 0.47, 0.75))
    peak = max(counts + [1])
    log = peak > 20  # a log axis only where the counts spread
    if log:
        ax.set_yscale("log")
        ax.set_ylim(0.7, peak * 3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(0, peak * 1.15 + 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for i, c in enumerate(counts):
        if c:
            ax.text(i, c * 1.05 if log else c + peak * 0.02, str(c), ha="center", va="bottom", fontsize=FONT - 1)
    ax.set_xticks(range(len(bins)), [f"{label}\n{n} p." for label, _, n in bins], fontsize=FONT - 1)
    ax.set_xlabel("component size (proposals); below it: the proposals in those components", fontsize=FONT)
    ax.set_ylabel("components (log scale)" if log else "components", fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1)
    fig.tight_layout()
    save_figure(fig, file)


LOG_KEYS = {"type", "epoch", "step", "iteration", "lr", "seconds", "seconds_per_iteration"}


def loss_figure(records: Sequence[dict], file: Path, title: str) -> bool:
    """The loss curve of a training log (``liid.training.log``): per-step loss in grey, epoch means in blue, the
    other per-step losses (Mask R-CNN's parts) as thin lines, dotted lines between epochs; a log y axis when
    the values spread over more than ``LOG_SPREAD``x. False (nothing written) when the log has no loss."""
    def finite(r: dict, k: str) -> bool:
        v = r.get(k)
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    steps = [r for r in records if r.get("type") == "step" and finite(r, "loss")]
    epochs = [r for r in records if r.get("type") == "epoch" and finite(r, "loss")]
    if not steps and not epochs:
        return False
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    fig = _figure(820, 380)
    ax = fig.add_subplot()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    values: list[float] = []
    if steps:
        x = np.arange(len(steps))
        y = [r["loss"] for r in steps]
        values += y
        ax.plot(x, y, color="0.6", lw=0.8, label="loss per step")
        parts = sorted({k for r in steps for k in r if k not in LOG_KEYS and k != "loss" and finite(r, k)})
        for k in parts:
            px = [i for i, r in enumerate(steps) if finite(r, k)]
            py = [steps[i][k] for i in px]
            values += py
            ax.plot(px, py, lw=0.7, alpha=0.75, label=k)
        last: dict[object, int] = {}
        for i, r in enumerate(steps):
            last[r.get("epoch")] = i
        for i in list(last.values())[:-1]:
            ax.axvline(i + 0.5, color="0.8", ls=":", lw=0.8)
        pts = [(last[r.get("epoch")], r["loss"]) for r in epochs if r.get("epoch") in last]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", color=(0.12, 0.31, 0.78), lw=1.8, ms=4, label="epoch mean")
            values += [v for _, v in pts]
        ax.set_xlabel("step", fontsize=FONT)
    else:
        x = [r.get("epoch", i + 1) for i, r in enumerate(epochs)]
        y = [r["loss"] for r in epochs]
        values += y
        ax.plot(x, y, "o-", color=(0.12, 0.31, 0.78), lw=1.8, ms=4, label="epoch mean")
        ax.set_xlabel("epoch", fontsize=FONT)
    pos = [v for v in values if v > 0]
    if pos and len(pos) == len(values) and max(pos) / min(pos) > LOG_SPREAD:
        ax.set_yscale("log")
        title += " (log scale)"
    ax.set_ylabel("loss", fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT - 1)
    ax.legend(fontsize=FONT - 2, loc="upper right", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, file)
    return True


def stages_figure(seconds: Mapping[str, float], file: Path) -> None:
    """A horizontal bar per stage, its seconds written beside it."""
    names = list(seconds)
    vals = [float(seconds[n]) for n in names]
    fig = _figure(860, 28 * len(names) + 110)
    ax = fig.add_subplot()
    ax.barh(range(len(names)), vals, color=(0.27, 0.47, 0.75))
    ax.set_yticks(range(len(names)), names, fontsize=FONT - 1)
    ax.invert_yaxis()
    peak = max(vals + [1e-9])
    for i, v in enumerate(vals):
        ax.text(v + peak * 0.01, i, f"{v:.1f} s", va="center", fontsize=FONT - 1)
    ax.set_xlim(0, peak * 1.15)
    ax.set_xlabel("seconds", fontsize=FONT)
    ax.set_title(f"time per stage: {sum(vals):.1f} s in all", fontsize=FONT + 1)
    ax.tick_params(axis="x", labelsize=FONT - 1)
    fig.tight_layout()
    save_figure(fig, file)


# ------------------------------------------------------------------------------------------ reading


def _instances_by_image(instances: dict | list, dataset: Dataset, where: str, wanted: set[str] | None = None
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``coco_masks`` restricted to the dataset images ``wanted`` (None: all); only their masks are decoded."""
    try:
        if isinstance(instances, dict):
            ids, found, _ = match_coco_images(instances["images"], dataset, where)
            anns, cats = instances["annotations"], category_map(instances.get("categories"), dataset.classes,
                                                                where)
        elif isinstance(instances, list):
            anns = instances
            pimgs = [{"id": i} for i in sorted({a["image_id"] for a in anns})]
            found, _ = match_images(pimgs, dataset, where, rules=("id", "digits", "coco_id")) if pimgs else ([], "")
            ids = [p["id"] for p in pimgs]
            known = _result_categories(dataset) if pimgs else None  # a COCO dataset's own ids, as evaluate reads them
            cats = (category_map(known, dataset.classes, where) if known is not None
                    else {k: k for k in range(1, dataset.num_classes + 1)})
        else:
            raise LiidError(f"{where}: not a COCO instances JSON or results list (a {type(instances).__name__})")
        info = {i: im for i, im in zip(ids, found, strict=True) if wanted is None or im.id in wanted}
        out: dict[str, tuple[list, list]] = {im.id: ([], []) for im in info.values()}
        for a in anns:
            im = info.get(a["image_id"])
            if im is None or a.get("category_id") not in cats:
                continue
            out[im.id][0].append(mask_util.decode(to_rle(a["segmentation"], im.height, im.width)).astype(bool))
            out[im.id][1].append(cats[a["category_id"]])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LiidError(f"{where}: not a readable COCO instances JSON or results list ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def stacked(k: str, m: list) -> np.ndarray:
        im = dataset.info(k)
        return np.asarray(m, dtype=bool).reshape(-1, im.height, im.width)

    return {k: (stacked(k, m), np.asarray(c, dtype=np.int64)) for k, (m, c) in out.items()}


def coco_masks(instances: dict, dataset: Dataset, where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dataset image id: (bool masks [n, H, W], class indices [n]) of a COCO instances JSON or results
    list (images and categories matched as ``liid evaluate`` matches them)."""
    return _instances_by_image(instances, dataset, where)


def sample_images(dataset: Dataset, n: int, seed: int = 0) -> list[str]:
    """``n`` image ids drawn by ``seed`` (the same ones every time), in dataset order; when the dataset has
    instances, images with two or more ground-truth classes first."""
    ids = [im.id for im in dataset.images]
    if n <= 0 or not ids:
        return []
    order = np.random.default_rng(seed).permutation(len(ids))
    pool = [ids[i] for i in order[: max(16 * n, 64)]]  # a bounded look: labels() of a whole COCO is not free
    if dataset.has_instances and dataset.has_labels:
        several = [i for i in pool if len(dataset.labels(i)) >= 2]
        pool = several + [i for i in pool if i not in set(several)]
    chosen = set(pool[:n])
    return [i for i in ids if i in chosen]


def _read_dict(path: Path, what: str) -> dict:
    d = read_json(path)
    if not isinstance(d, dict):
        raise LiidError(f"{path}: not {what} (top level is a {type(d).__name__}, not an object)")
    return d


def read_evaluation(path: Path) -> dict:
    """A ``liid evaluate DATASET X --json FILE`` result: an object with "instances" and/or "semantic" results."""
    d = _read_dict(path, "an evaluation written by `liid evaluate --json`")
    if not any(isinstance(d.get(k), dict) for k in ("instances", "semantic")):
        raise LiidError(f"{path}: not an evaluation written by `liid evaluate --json` (no 'instances' or "
                        f"'semantic' results)")
    return d


def _value(result: dict | None, key: str) -> object:
    if not isinstance(result, dict):
        return None
    if key.startswith("map_r:"):
        mr = result.get("map_r")
        return mr.get(key.split(":", 1)[1]) if isinstance(mr, dict) else None
    return result.get(key)


def _labeling_source(path: Path) -> tuple[str, Path] | None:
    """("instances", JSON) or ("semantic", PNG folder) of a labeling: an export folder (instances.json and/or
    semantic/), an instances JSON file, or a folder of PNGs; None when there is nothing there."""
    if path.is_file():
        return "instances", path
    if not path.is_dir():
        return None
    if (path / "instances.json").is_file():
        return "instances", path / "instances.json"
    if (path / "semantic").is_dir():
        return "semantic", path / "semantic"
    if any(p.suffix.lower() == ".png" for p in path.iterdir()):
        return "semantic", path
    return None


# ------------------------------------------------------------------------------------------- report


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80] or "_"


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.3f}"
    return "–" if v is None else html.escape(str(v))


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _img(rel: str, alt: str) -> str:
    return f'<img src="{_esc(rel)}" alt="{_esc(alt)}">'


class _Report:
    """The state of one report while it is written: where its figures go and what it had to leave out."""

    def __init__(self, out: Path, dataset: Dataset):
        self.out, self.dataset = out, dataset
        self.folder = out / FIGURES
        self.folder.mkdir(parents=True, exist_ok=True)
        self.notes: list[str] = []
        self.names: set[str] = set()

    def figure(self, stem: str, suffix: str = ".png") -> tuple[Path, str]:
        """A new file under figures/ (unique name) and its path relative to report.html."""
        base, n = _safe(stem), 1
        name = base + suffix
        while name in self.names:
            n += 1
            name = f"{base}_{n}{suffix}"
        self.names.add(name)
        return self.folder / name, f"{FIGURES}/{name}"

    def exists(self, path: Path | None, what: str) -> bool:
        if path is None:
            return False
        if not Path(path).exists():
            self.notes.append(f"report: {what} {path} not found; left out")
            return False
        return True


def _legend(dataset: Dataset, classes: set[int]) -> list[tuple[str, tuple[int, int, int]]]:
    return [(dataset.classes[k] if 0 <= k < len(dataset.classes) else str(k), class_colours(np.array([k]))[0])
            for k in sorted(classes) if k != 0]


def _instance_panel(img: np.ndarray, size: tuple[int, int], masks: np.ndarray, cls: np.ndarray, text: str
                    ) -> Panel:
    return Panel(overlay(img, fit_masks(masks, size), class_colours(cls), width=OUTLINE), text)


def _gt_panels(ds: Dataset, iid: str, img: np.ndarray, size: tuple[int, int], seen: set[int]) -> list[Panel]:
    inst = ds.instances(iid)
    if inst is not None:
        seen.update(int(k) for k in inst.classes)
        return [_instance_panel(img, size, inst.masks, inst.classes, f"ground truth: {len(inst)}")]
    sem = ds.semantic(iid)
    if sem is not None:
        seen.update(int(k) for k in np.unique(sem) if k != IGNORE)
        return [Panel(semantic_overlay(img, fit_labels(sem, size)), "ground truth (semantic)")]
    return []


def _cams(cams: Path, ds: Dataset, ids: list[str]) -> dict[str, np.ndarray]:
    import torch  # noqa: PLC0415 (torch only when CAMs are asked for)

    from liid.training.attention import load_classifier  # noqa: PLC0415
    from liid.training.cams import compute_cams  # noqa: PLC0415

    model, size = load_classifier(cams, ds, torch.device("cpu"))
    return compute_cams(model, ds, ids, size)


def image_rows(rep: _Report, ids: list[str], proposals: Path | None, labelings: dict[str, tuple[str, Path]],
               cams: Path | None) -> list[tuple[str, str]]:
    """One figure per training image: image | proposals | each labeling | ground truth | CAM per image label.
    Returns (heading, relative path) per figure."""
    ds = rep.dataset
    index = {e["id"]: e for e in read_proposal_index(proposals)} if proposals is not None else {}
    wanted = set(ids)
    decoded = {}
    for name, (kind, path) in labelings.items():
        if kind == "instances":
            decoded[name] = _instances_by_image(read_json(path), ds, str(path), wanted)
    heat = _cams(cams, ds, ids) if cams is not None else {}
    rows = []
    for iid in ids:
        info = ds.info(iid)
        size = panel_size(info.height, info.width)
        full = ds.load_image(iid)
        img = fit_image(full, size)
        seen: set[int] = set()
        panels = [Panel(img, f"{iid} ({info.width}x{info.height})")]
        if iid in index:
            props = read_image_proposals(proposals, index[iid])
            best = np.argsort(-props.scores, kind="stable")[:MAX_PROPOSALS]
            pm = fit_masks(props.decode(best), size)
            text = f"proposals: {len(props)}" + (f" (best {len(best)} drawn)" if len(best) < len(props) else "")
            panels.append(Panel(overlay(img, pm, [PROPOSAL_COLOUR] * len(pm), fill=False, width=OUTLINE), text))
        for name, (kind, path) in labelings.items():
            if kind == "instances":
                if iid in decoded[name]:
                    masks, cls = decoded[name][iid]
                    seen.update(int(k) for k in cls)
                    panels.append(_instance_panel(img, size, masks, cls, f"{name}: {len(cls)}"))
                else:
                    panels.append(Panel(img, f"{name}: not labelled"))
            else:
                png = path / f"{iid}.png"
                if png.is_file():
                    sem = read_index_png(png, info.height, info.width, ds.num_classes, what="semantic labeling")
                    seen.update(int(k) for k in np.unique(sem) if k != IGNORE)
                    panels.append(Panel(semantic_overlay(img, fit_labels(sem, size)), f"{name} (semantic)"))
                else:
                    panels.append(Panel(img, f"{name}: not labelled"))
        panels += _gt_panels(ds, iid, img, size, seen)
        if iid in heat and ds.has_labels:
            for k in [int(k) for k in ds.labels(iid)][:MAX_CAMS]:
                if 1 <= k <= heat[iid].shape[0]:
                    panels.append(Panel(cam_overlay(img, fit_cam(heat[iid][k - 1], size)),
                                        f"CAM: {ds.classes[k]}"))
        file, rel = rep.figure(f"image_{iid}")
        draw_panels(file, panels, _legend(ds, seen))
        labels = ", ".join(ds.classes[k] for k in ds.labels(iid)) if ds.has_labels else ""
        rows.append((f"{iid}" + (f": {labels}" if labels else ""), rel))
    return rows


def prediction_rows(rep: _Report, ds: Dataset, predictions: Path, ids: list[str]) -> list[tuple[str, str]]:
    """One figure per held-out image: the image | the segmenter's predictions (score ≥ MIN_SCORE) | ground truth."""
    doc = read_json(predictions)
    if isinstance(doc, list):
        doc = [a for a in doc if isinstance(a, dict) and float(a.get("score", 1.0) or 0) >= MIN_SCORE]
    preds = _instances_by_image(doc, ds, str(predictions), set(ids))
    rows = []
    for iid in ids:
        info = ds.info(iid)
        size = panel_size(info.height, info.width)
        img = fit_image(ds.load_image(iid), size)
        masks, cls = preds.get(iid, (np.zeros((0, info.height, info.width), bool), np.zeros(0, np.int64)))
        seen = {int(k) for k in cls}
        panels = [Panel(img, iid), _instance_panel(img, size, masks, cls, f"predictions (score>={MIN_SCORE:g}): "
                                                                             f"{len(cls)}")]
        panels += _gt_panels(ds, iid, img, size, seen)
        file, rel = rep.figure(f"segmenter_{iid}")
        draw_panels(file, panels, _legend(ds, seen))
        rows.append((iid, rel))
    return rows


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], ident: str) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    trs = "".join("<tr><th>" + r[0] + "</th>" + "".join(f"<td>{c}</td>" for c in r[1:]) + "</tr>" for r in rows)
    return f'<table id="{ident}"><tr>{th}</tr>{trs}</table>'


def headline_table(evals: dict[str, dict], segmenter: tuple[str, dict] | None) -> str:
    """One row per labeling (and the segmenter): the numbers its evaluation has; columns no row has are left
    out, a number one row lacks is "–"."""
    rows: list[tuple[str, dict | None, dict | None, object]] = []
    for name, d in evals.items():
        inst, sem = d.get("instances"), d.get("semantic")
        images = (inst or sem or {}).get("images")
        rows.append((name, inst, sem, images))
    if segmenter is not None:
        rows.append((segmenter[0], segmenter[1], None, segmenter[1].get("images")))
    cols = [(k, t, "i") for k, t in INSTANCE_METRICS] + [(k, t, "s") for k, t in SEMANTIC_METRICS]
    cols = [c for c in cols if any(_value(r[1] if c[2] == "i" else r[2], c[0]) is not None for r in rows)]
    body = [[_esc(n), *[_fmt(_value(i if part == "i" else s, k)) for k, _, part in cols], _fmt(images)]
            for n, i, s, images in rows]
    return _table(["", *[t for _, t, _ in cols], "images"], body, "headline")


def per_class_tables(evals: dict[str, dict], classes: Sequence[str]) -> str:
    """Per-class AP50 (instance evaluations) and per-class IoU (semantic ones): a row per class, a column per
    labeling; the ground-truth instance count of each class from the first instance evaluation."""
    out = []
    inst = {n: d["instances"] for n, d in evals.items() if isinstance(d.get("instances"), dict)}
    if inst:
        names = list(classes[1:])
        for r in inst.values():
            names += [c for c in (r.get("per_class") or {}) if c not in names]
        first = next(iter(inst.values())).get("per_class") or {}
        body = []
        for c in names:
            vals = [_fmt(((r.get("per_class") or {}).get(c) or {}).get("ap50")) for r in inst.values()]
            body.append([_esc(c), *vals, _fmt((first.get(c) or {}).get("gt_instances"))])
        out.append("<h2>Per-class AP50</h2>\n" + _table(["class", *inst, "GT instances"], body, "per-class-ap50"))
    sem = {n: d["semantic"] for n, d in evals.items() if isinstance(d.get("semantic"), dict)}
    if sem:
        names = list(classes)
        for r in sem.values():
            names += [c for c in (r.get("per_class") or {}) if c not in names]
        body = [[_esc(c), *[_fmt(((r.get("per_class") or {}).get(c) or {}).get("iou")) for r in sem.values()]]
                for c in names]
        out.append("<h2>Per-class IoU</h2>\n" + _table(["class", *sem], body, "per-class-iou"))
    return "\n".join(out)


def _flat(d: Mapping, prefix: str = "", depth: int = 2) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if depth > 1:
                items += _flat(v, key + ".", depth - 1)
        elif isinstance(v, (str, int, float, bool)) or v is None:
            items.append((key, v))
    return items


def _figures_html(rows: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f'<figure><figcaption>{_esc(h)}</figcaption><div class="scroll">{_img(rel, h)}</div></figure>'
                     for h, rel in rows)


CSS = """body{font-family:sans-serif;margin:24px;max-width:1800px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
tr>th:first-child{text-align:left} .warnings{border:2px solid #c0392b;background:#fdecea;padding:8px 16px;margin:12px 0}
.warnings h2{color:#c0392b;margin:4px 0} figure{margin:10px 0} figcaption{font-weight:bold;margin-bottom:4px}
.scroll{overflow-x:auto} .scroll img{max-width:none} img{max-width:100%} .small{color:#666;font-size:90%}"""


def write_report(out: Path, *, title: str = "LIID report", dataset: Dataset, metrics: dict | None = None,
                 proposals: Path | None = None, labelings: dict[str, Path] | None = None,
                 evaluations: dict[str, Path] | None = None, graph: Path | None = None, cams: Path | None = None,
                 segmenter: Path | None = None, eval_dataset: Dataset | None = None,
                 curves: dict[str, Path] | None = None, stage_seconds: dict[str, float] | None = None,
                 warnings: list[str] | None = None, figures: dict[str, Path] | None = None,
                 n_images: int = 4, seed: int = 0) -> Path:
    """Write ``out/report.html`` and its pictures under ``out/figures``; returns the report's path.

    ``dataset``: the training images (ground truth drawn where it has some). ``proposals``: a proposal store;
    ``labelings``: name → ``liid export`` / ``liid label`` folder (instances.json, else semantic/*.png) or an
    instances JSON; ``evaluations``: name → ``liid evaluate --json`` file; ``graph``: a ``liid build-graph``
    folder; ``cams``: a ``liid train-cls`` folder (the CAMs of the sampled images are computed on the CPU);
    ``segmenter``: a ``liid train-maskrcnn`` folder, its predictions drawn on ``eval_dataset``; ``curves``: name →
    training folder (its log.jsonl) or log file; ``stage_seconds``: stage → seconds; ``warnings``: shown first;
    ``figures``: name → picture, copied as it is (another kind of file, e.g. GraphML: copied and linked).
    ``n_images`` images of each dataset are drawn, chosen by ``seed`` (``sample_images``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = _Report(out, dataset)
    sections: list[str] = []

    evals = {n: read_evaluation(Path(p)) for n, p in (evaluations or {}).items()
             if rep.exists(Path(p), f"evaluation {n!r}:")}
    seg_rec = seg_eval = None
    if segmenter is not None and rep.exists(Path(segmenter) / "train.json", "segmenter record"):
        seg_rec = _read_dict(Path(segmenter) / "train.json", "a `liid train-maskrcnn` record (train.json)")
        seg_eval = (seg_rec.get("final") or {}).get("evaluation") or (seg_rec.get("evaluations") or [None])[-1]
        if not isinstance(seg_eval, dict):
            seg_eval = None
            rep.notes.append(f"report: {segmenter}/train.json records no evaluation; no segmenter numbers")
    seg_row = None
    if seg_eval is not None:
        seg_row = (f"segmenter on held-out images (epoch {seg_eval.get('epoch', '?')})", seg_eval)
    if evals or seg_row:
        sections.append("<h2>Headline numbers</h2>\n<p class=small>Pseudo-labels of the training images against "
                        "their ground truth (mask AP 0.5:0.95, AP50, AP75 by pycocotools; VOC mAP^r; ABO: mean "
                        "best overlap of each ground-truth instance), or mIoU for semantic labelings; the "
                        "segmenter on the held-out images.</p>\n" + headline_table(evals, seg_row))
    if evals:
        sections.append(per_class_tables(evals, dataset.classes))

    # --- the sampled training images
    sources = {}
    for name, p in (labelings or {}).items():
        p = Path(p)
        if not rep.exists(p, f"labeling {name!r}:"):
            continue
        src = _labeling_source(p)
        if src is None:
            rep.notes.append(f"report: labeling {name!r}: {p} has no instances.json, semantic/ or PNG files; left out")
        else:
            sources[name] = src
    props = Path(proposals) if proposals is not None and rep.exists(Path(proposals), "proposal store") else None
    cam_dir = None
    if cams is not None:
        c = Path(cams)
        if rep.exists(checkpoint_file(c), "CAM classifier"):
            cam_dir = c
    ids = sample_images(dataset, n_images, seed)
    if ids and (props is not None or sources or cam_dir is not None or dataset.has_instances or dataset.has_semantic):
        rows = image_rows(rep, ids, props, sources, cam_dir)
        sections.append(
            f"<h2>Training images ({len(ids)} of {len(dataset.images)})</h2>\n<p class=small>Per image: "
            + "; ".join(["the image",
                         *([f"its proposals (yellow outlines, the best {MAX_PROPOSALS} at most)"] if props else []),
                         *(f"{_esc(n)} ({k})" for n, (k, _) in sources.items()),
                         *(["the ground truth"] if dataset.has_instances or dataset.has_semantic else []),
                         *(["the CAM of each image label (blue 0 → red 1)"] if cam_dir else [])])
            + ". Colours: the classes named under each figure.</p>\n" + _figures_html(rows))

    # --- the segmenter
    if seg_rec is not None:
        s = seg_rec.get("settings") or {}
        parts = [f"{k} {_esc(s[k])}" for k in ("backbone", "epochs", "batch_size", "lr") if k in s]
        txt = f"<h2>Segmenter</h2>\n<p>{_esc(segmenter)}: " + (", ".join(parts) or "settings not recorded") + "."
        if seg_eval is not None:
            txt += (f" Evaluated on {_fmt(seg_eval.get('images'))} held-out images: mask AP {_fmt(seg_eval.get('ap'))}"
                    f", AP50 {_fmt(seg_eval.get('ap50'))}, ABO {_fmt(seg_eval.get('abo'))}.")
        txt += "</p>"
        pred = Path(segmenter) / str(seg_eval.get("file")) if seg_eval and seg_eval.get("file") else None
        if eval_dataset is not None and pred is not None and rep.exists(pred, "segmenter predictions"):
            eids = sample_images(eval_dataset, n_images, seed)
            txt += (f"\n<p class=small>Per held-out image: the image, the predictions scored {MIN_SCORE:g} or more, "
                    "the ground truth.</p>\n" + _figures_html(prediction_rows(rep, eval_dataset, pred, eids)))
        sections.append(txt)

    # --- the graph
    if graph is not None and rep.exists(Path(graph) / "component.npy", "graph components"):
        g = Path(graph)
        comp = np.asarray(load_npy(g / "component.npy")).ravel()
        if not np.issubdtype(comp.dtype, np.integer) or (len(comp) and comp.min() < 0):
            raise LiidError(f"{g / 'component.npy'}: not a component labeling (non-negative integers)")
        sizes = np.bincount(comp.astype(np.int64))
        sizes = sizes[sizes > 0]
        meta = _read_dict(g / "graph.json", "a graph record") if (g / "graph.json").is_file() else {}
        head = f"kNN graph: {len(sizes)} connected components of {int(sizes.sum())} proposals"
        file, rel = rep.figure("graph_components")
        components_figure(sizes, file, head)
        edges = f", {meta['edges']} edges" if "edges" in meta else ""
        big = f"; the largest holds {int(sizes.max())} proposals" if len(sizes) else ""
        sections.append(f"<h2>The kNN graph</h2>\n<p>{_esc(g)}: {int(sizes.sum())} nodes{_esc(edges)}, "
                        f"{len(sizes)} connected components{big}.</p>\n<p>{_img(rel, head)}</p>")

    # --- training curves
    curve_html = []
    for name, p in (curves or {}).items():
        p = Path(p)
        log = p / "log.jsonl" if p.is_dir() else p
        if not rep.exists(log, f"training log {name!r}:"):
            continue
        file, rel = rep.figure(f"loss_{name}")
        if loss_figure(read_log(log), file, name):
            curve_html.append(f"<figure><figcaption>{_esc(name)}</figcaption>{_img(rel, name)}</figure>")
        else:
            rep.notes.append(f"report: training log {name!r}: {log} records no loss; left out")
    if curve_html:
        sections.append("<h2>Training curves</h2>\n" + "\n".join(curve_html))

    # --- stage times
    if stage_seconds:
        file, rel = rep.figure("stage_seconds")
        stages_figure(stage_seconds, file)
        rows = [[_esc(k), f"{float(v):.1f}"] for k, v in stage_seconds.items()]
        sections.append("<h2>Time per stage</h2>\n" + f"<p>{_img(rel, 'time per stage')}</p>\n"
                        + _table(["stage", "seconds"], rows, "stage-seconds"))

    # --- extra pictures, copied as they are
    extra = []
    for name, p in (figures or {}).items():
        p = Path(p)
        if not rep.exists(p, f"figure {name!r}:") or not p.is_file():
            continue
        file, rel = rep.figure(f"extra_{name}", p.suffix.lower() or ".png")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise LiidError(f"{p}: cannot read ({e.strerror or e})") from None
        write_bytes(file, data)
        if p.suffix.lower() in PICTURES:
            extra.append(f"<figure><figcaption>{_esc(name)}</figcaption>{_img(rel, name)}</figure>")
        else:  # GraphML and other files: a link
            extra.append(f'<p><a href="{_esc(rel)}">{_esc(name)}</a> ({_esc(p.name)})</p>')
    if extra:
        sections.append("<h2>More figures</h2>\n" + "\n".join(extra))

    # --- the run's scalar metrics
    items = _flat(metrics or {})
    if items:
        sections.append("<h2>Run metrics</h2>\n<details><summary>" + f"{len(items)} values</summary>\n"
                        + _table(["key", "value"], [[_esc(k), _fmt(v)] for k, v in items], "metrics")
                        + "</details>")

    every = [*(warnings or []), *rep.notes]
    warn = ""
    if every:
        warn = (f'<div class="warnings" id="warnings"><h2>Warnings ({len(every)})</h2><ul>'
                + "".join(f"<li>{_esc(w)}</li>" for w in every) + "</ul></div>")
    ds_line = (f"{_esc(dataset.kind)} dataset {_esc(dataset.source)}: {len(dataset.images)} images, "
               f"{dataset.num_classes} classes")
    page = (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{_esc(title)}</title>\n<style>{CSS}</style>'
            f"</head><body>\n<h1>{_esc(title)}</h1>\n{warn}\n<p>{ds_line}.</p>\n" + "\n".join(sections)
            + "\n</body></html>\n")
    file = out / "report.html"
    write_bytes(file, page.encode("utf-8"))
    return file
