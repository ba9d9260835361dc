"""The demo's HTML report: the numbers, and pictures where a person would rather look than read.

For a few training images, side by side: the proposals, the MIL-argmax pseudo instances, the LIID (graph +
cut) pseudo instances and the ground truth; for a few held-out images, Mask R-CNN's predictions next to the
ground truth; the component sizes of the kNN graph; the training curves. Drawn with PIL and numpy only
(no plotting library is needed at run time); every picture is a PNG beside ``report.html``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util
from scipy import ndimage

from detection.evaluate import category_map, match_coco_images, match_images, to_rle
from detection.export import voc_palette
from liid.atomic import load_npy
from liid.datasets import open_dataset
from liid.datasets.base import Dataset
from liid.pipeline.demo import metric_key
from proposals.store import read_image_proposals, read_proposal_index

SCALE = 2  # pictures are drawn at twice the image size (the synthetic images are 160 px)
PALETTE = voc_palette()
PROPOSAL_COLOUR = (255, 255, 0)
FIGURES = "figures"


# --------------------------------------------------------------------------------------- drawing


def overlay(image: np.ndarray, masks: np.ndarray, colours: Sequence[Sequence[int]], alpha: float = 0.45,
            fill: bool = True) -> np.ndarray:
    """``image`` (uint8 [H, W, 3]) with each mask (bool [n, H, W]) tinted and outlined in its colour.

    Larger masks are drawn first, so a small instance on a large one stays visible.
    """
    out = image.astype(np.float32).copy()
    order = np.argsort([-m.sum() for m in masks]) if len(masks) else []
    for i in order:
        m, c = masks[i], np.asarray(colours[i], dtype=np.float32)
        if fill:
            out[m] = (1 - alpha) * out[m] + alpha * c
        edge = m & ~ndimage.binary_erosion(m, iterations=1, border_value=0)
        out[edge] = c
    return np.clip(out, 0, 255).astype(np.uint8)


def caption(img: np.ndarray, text: str, scale: int = SCALE) -> Image.Image:
    """The picture enlarged ``scale`` times (nearest neighbour), with ``text`` in a strip above it."""
    pic = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)
    canvas = Image.new("RGB", (pic.width, pic.height + 16), (255, 255, 255))
    canvas.paste(pic, (0, 16))
    ImageDraw.Draw(canvas).text((3, 2), text, fill=(0, 0, 0))
    return canvas


def hstack(panels: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    w = sum(p.width for p in panels) + gap * (len(panels) - 1)
    h = max(p.height for p in panels)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


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
    """A bar chart of ``size_bins``: bar height = number of components (log scale), with the count of
    components above each bar and the number of proposals in them below its label."""
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


# ------------------------------------------------------------------------------------------ reading


def coco_masks(instances: dict, dataset: Dataset, where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dataset image id: (bool masks [n, H, W], class indices [n]) of a COCO instances JSON or results
    list (images matched as ``liid evaluate`` matches them)."""
    if isinstance(instances, dict):
        ids, found, _ = match_coco_images(instances["images"], dataset, where)
        anns, cats = instances["annotations"], category_map(instances.get("categories"), dataset.classes, where)
    else:
        anns = instances
        pimgs = [{"id": i} for i in sorted({a["image_id"] for a in anns})]
        found, _ = match_images(pimgs, dataset, where, rules=("id", "digits", "coco_id")) if pimgs else ([], "")
        ids, cats = [p["id"] for p in pimgs], {k: k for k in range(1, dataset.num_classes + 1)}
    info = dict(zip(ids, found, strict=True))
    out: dict[str, tuple[list, list]] = {im.id: ([], []) for im in found}
    for a in anns:
        im = info.get(a["image_id"])
        if im is None or a.get("category_id") not in cats:
            continue
        m = mask_util.decode(to_rle(a["segmentation"], im.height, im.width)).astype(bool)
        out[im.id][0].append(m)
        out[im.id][1].append(cats[a["category_id"]])
    def stacked(k: str, m: list) -> np.ndarray:
        im = dataset.info(k)
        return np.asarray(m, dtype=bool).reshape(-1, im.height, im.width)

    return {k: (stacked(k, m), np.asarray(c, dtype=np.int64)) for k, (m, c) in out.items()}


def class_colours(classes: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in PALETTE[int(k)]) for k in classes]


def pick_images(dataset: Dataset, n: int) -> list[str]:
    """``n`` images spread over the dataset, preferring those with two or more instances."""
    many = [im.id for im in dataset.images if (inst := dataset.instances(im.id)) is not None and len(inst) >= 2]
    pool = many if len(many) >= n else [im.id for im in dataset.images]
    if not pool:
        return []
    step = max(len(pool) // max(n, 1), 1)
    return pool[::step][:n]


# ------------------------------------------------------------------------------------------- report


def labeling_rows(dataset: Dataset, proposals: Path, labelings: dict[str, Path], image_ids: Sequence[str],
                  folder: Path) -> list[str]:
    """One PNG per image: proposals | each labeling's pseudo instances | ground truth. Returns file names."""
    index = {e["id"]: e for e in read_proposal_index(proposals)}
    decoded = {name: coco_masks(json.loads(file.read_text()), dataset, str(file)) for name, file in labelings.items()}
    names = []
    for iid in image_ids:
        img = dataset.load_image(iid)
        props = read_image_proposals(proposals, index[iid])
        pm = props.decode()
        panels = [caption(img, iid), caption(overlay(img, pm, [PROPOSAL_COLOUR] * len(pm), fill=False),
                                             f"{len(pm)} proposals")]
        for name, by_image in decoded.items():
            masks, cls = by_image.get(iid, (np.zeros((0, *img.shape[:2]), bool), np.zeros(0, np.int64)))
            panels.append(caption(overlay(img, masks, class_colours(cls)), f"{name}: {len(cls)}"))
        inst = dataset.instances(iid)
        if inst is not None:
            panels.append(caption(overlay(img, inst.masks, class_colours(inst.classes)),
                                  f"ground truth: {len(inst)}"))
        name = f"labels_{_safe(iid)}.png"
        hstack(panels).save(folder / name)
        names.append(name)
    return names


def prediction_rows(dataset: Dataset, predictions: Path, image_ids: Sequence[str], folder: Path,
                    min_score: float = 0.5) -> list[str]:
    """One PNG per held-out image: Mask R-CNN's predictions (score ≥ ``min_score``) | ground truth."""
    preds = coco_masks([a for a in json.loads(predictions.read_text()) if a.get("score", 0) >= min_score],
                       dataset, str(predictions))
    names = []
    for iid in image_ids:
        img = dataset.load_image(iid)
        masks, cls = preds.get(iid, (np.zeros((0, *img.shape[:2]), bool), np.zeros(0, np.int64)))
        panels = [caption(img, iid), caption(overlay(img, masks, class_colours(cls)),
                                             f"Mask R-CNN (score>={min_score:g}): {len(cls)}")]
        inst = dataset.instances(iid)
        if inst is not None:
            panels.append(caption(overlay(img, inst.masks, class_colours(inst.classes)), f"ground truth: {len(inst)}"))
        name = f"maskrcnn_{_safe(iid)}.png"
        hstack(panels).save(folder / name)
        names.append(name)
    return names


def _safe(image_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in image_id)


def _legend(classes: Sequence[str]) -> str:
    items = []
    for k, name in enumerate(classes):
        if k == 0:
            continue
        r, g, b = (int(v) for v in PALETTE[k])
        items.append(f'<span class="sw" style="background:rgb({r},{g},{b})"></span>{html.escape(name)}')
    return " &nbsp; ".join(items)


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else html.escape(str(v)))


def write_report(out: Path, metrics: dict, dataset_path: Path, proposals: Path, labelings: dict[str, Path],
                 graph: Path, maskrcnn: Path | None, curves: dict[str, Path], n_images: int = 4) -> Path:
    """Write ``out/report.html`` and its pictures under ``out/figures``; returns the report's path."""
    folder = out / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    train = open_dataset(str(dataset_path))
    rows = labeling_rows(train, proposals, labelings, pick_images(train, n_images), folder)
    sizes = np.bincount(load_npy(graph / "component.npy").astype(np.int64))
    bins = size_bins(sizes)
    histogram_png(bins, folder / "components.png", f"kNN graph: {int((sizes > 0).sum())} connected components of "
                  f"{int(sizes.sum())} proposals")
    pred_rows: list[str] = []
    if maskrcnn is not None:
        rec = json.loads((maskrcnn / "train.json").read_text())
        ev = (rec.get("final") or {}).get("evaluation")
        if ev and ev.get("file"):
            val = open_dataset(str(dataset_path), split="val")
            pred_rows = prediction_rows(val, maskrcnn / ev["file"], pick_images(val, n_images), folder)

    rel = os.path.relpath
    table = [("MIL argmax, no graph (LIID's ablation)", "mil_argmax"), ("LIID: kNN graph + multiway cut", "liid"),
             ("oracle: GT boxes label the proposals (bound)", "oracle"),
             ("Mask R-CNN trained on the LIID labels, val images", "maskrcnn")]
    trs = "".join(f"<tr><td>{html.escape(t)}</td>" + "".join(
        f"<td>{_fmt(metrics.get(metric_key(k, m)))}</td>"
        for m in ("ap", "ap50", "ap75", "abo")) + "</tr>" for t, k in table)
    now = metrics.get("stage_seconds", {})
    stage_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td><td>{now.get(k, 0):.1f}</td></tr>"
                         for k, v in metrics.get("work_seconds", {}).items())
    cfg = metrics.get("config", {})
    machine = metrics.get("machine", {})
    imgs = "".join(f'<p><img src="{FIGURES}/{n}"></p>' for n in rows)
    preds = "".join(f'<p><img src="{FIGURES}/{n}"></p>' for n in pred_rows)
    curve_html = "".join(f'<figure><img src="{rel(p, out)}"><figcaption>{html.escape(name)}</figcaption></figure>'
                         for name, p in curves.items() if p.is_file())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>LIID demo report</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1400px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}} td:first-child{{text-align:left}}
.sw{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}
figure{{display:inline-block;margin:6px}} img{{max-width:100%}}</style></head><body>
<h1>LIID demo: image-level labels → instance pseudo-labels → Mask R-CNN</h1>
<p>{html.escape(str(metrics.get("date", "")))} · {html.escape(str(machine.get("platform", "")))} ·
{machine.get("cpus")} CPUs · the pipeline's work {metrics.get("pipeline_seconds", 0):.0f} s
(this run {metrics.get("seconds", 0):.0f} s; stages already up to date are skipped).
Synthetic dataset of {cfg.get("images")} images (80 % train), the best {cfg.get("top")} selective-search
proposals per image, {html.escape(str(cfg.get("backbone", "resnet18")))} networks
{"trained from scratch" if cfg.get("from_scratch", True) else "from ImageNet weights"},
kNN graph δ = {cfg.get("delta")}.
</p>
<h2>Pseudo-labels of the training images, and the segmenter trained on them</h2>
<p>Mask AP (COCO 0.5:0.95), AP50, AP75 and ABO against the ground truth (pycocotools).</p>
<table><tr><th></th><th>AP</th><th>AP50</th><th>AP75</th><th>ABO</th></tr>{trs}</table>
<h2>Proposals and labels, side by side</h2>
<p>Per row: the image, its proposals (outlines), the MIL-argmax pseudo instances, the LIID pseudo instances
(after per-class NMS, what Mask R-CNN is trained on), the ground truth. Colours: {_legend(train.classes)}</p>
{imgs}
<h2>Mask R-CNN on held-out images</h2>
{preds or "<p>(no evaluation recorded)</p>"}
<h2>The kNN graph</h2>
<p><img src="{FIGURES}/components.png"></p>
<h2>Training curves</h2>
{curve_html}
<h2>Time per stage (seconds)</h2>
<table><tr><th>stage</th><th>doing its work</th><th>this run</th></tr>{stage_rows}</table>
<p>The same numbers: <a href="metrics.json">metrics.json</a>; every command and its output:
<a href="commands.log">commands.log</a>.</p>
</body></html>
"""
    file = out / "report.html"
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(page)
    os.replace(tmp, file)
    return file
