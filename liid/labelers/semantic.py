"""The semantic-only labelers of ``liid label`` (oaa, oaa+, am-saliency, dsrg, vit-sm): per image a class map.

These methods of the papers define semantic pseudo-masks, not instances, so their export is
``OUT/semantic/*.png`` + ``OUT/export.json`` without an ``instances.json``. Each method is a function
``image id → int64 [H, W]`` built here from its trained model or maps (the math is in ``liid.labelers``);
``export_semantic`` writes them with the stage rule of every ``liid label`` output. The methods themselves are
registered in ``liid.labelers.builtin``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from liid.datasets.base import Dataset
from liid.detection.export import ImageLabels, export_labeled
from liid.errors import LiidError
from liid.models.checkpoint import checkpoint_file

SemanticFn = Callable[[str], np.ndarray]


def resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [K, h, w] in [0, 1] → [K, height, width]: bilinear, then each map divided by its maximum again
    (as ``compute_cams`` does), so a class with any attention still peaks at 1."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
    t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0].clamp_(0, 1)
    peak = t.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, t / peak.clamp_min(1e-12), torch.zeros_like(t)).numpy()


def oaa_semantic(cams: Path, ds: Dataset, threshold: float) -> SemanticFn:
    """OAA: the cumulative maps a ``train-cls --oaa`` run kept, at image size, labelled like CAMs (``cam_semantic``)."""
    from liid.labelers.cam import cam_semantic
    from liid.training.oaa import MAPS, OaaMaps

    file = cams / MAPS if cams.is_dir() else cams
    maps = OaaMaps.load(file)
    if maps.num_classes != ds.num_classes:
        raise LiidError(f"{file}: OAA maps of {maps.num_classes} classes, the dataset {ds.source} has "
                        f"{ds.num_classes}")
    where = {iid: i for i, iid in enumerate(maps.ids)}
    missing = [im.id for im in ds.images if im.id not in where]
    if missing:
        raise LiidError(f"{file}: no OAA maps for {len(missing)} images of {ds.source}: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")

    def semantic(image_id: str) -> np.ndarray:
        info = ds.info(image_id)
        full = resize_maps(maps.dense(where[image_id]), info.height, info.width)
        return cam_semantic(full, ds.labels(image_id), threshold)

    return semantic


def oaa_plus_semantic(cams: Path, ds: Dataset, threshold: float, device: str | None) -> SemanticFn:
    """OAA+: the class maps of the integral attention model (``train-cls --oaa-targets``), labelled like CAMs."""
    from liid.labelers.cam import cam_semantic
    from liid.models import pick_device
    from liid.models.checkpoint import read_checkpoint
    from liid.training.attention import load_classifier
    from liid.training.cams import compute_cams

    file = _classifier_file(cams)
    if not read_checkpoint(file)["meta"].get("config", {}).get("oaa_targets"):
        raise LiidError(f"{file}: a plain classifier, not an OAA+ integral attention model (train it with "
                        f"`liid train-cls --oaa-targets CLS`; use --method cam for this one)")
    model, size = load_classifier(file, ds, pick_device(device))

    def semantic(image_id: str) -> np.ndarray:
        cam = compute_cams(model, ds, [image_id], size)[image_id].astype(np.float32)
        return cam_semantic(cam, ds.labels(image_id), threshold)

    return semantic


def am_saliency_semantic_fn(cams: Path, ds: Dataset, saliency: str, background: float, crf: bool, rounds: int,
                            device: str | None) -> SemanticFn:
    """Paper 000: the classifier's attention maps (eqs. 3-5) fused with the image's saliency (Algorithm 2), then
    the dense CRF of eq. 10. Saliency: the built-in detector run by successive erasing (Algorithm 1, ``rounds``
    rounds), or a folder of precomputed maps (read as they are: erasing cannot re-run a stored map)."""
    from liid.labelers.am_saliency import am_saliency_semantic, successive_erasing
    from liid.labelers.saliency import BUILTIN, saliency_source
    from liid.models import pick_device
    from liid.training.attention import load_classifier

    file = _classifier_file(cams)
    source = saliency_source(saliency, ds)  # a folder is checked here: every image's map, named when missing
    model, size = load_classifier(file, ds, pick_device(device))

    def semantic(image_id: str) -> np.ndarray:
        image = ds.load_image(image_id)
        if saliency == BUILTIN:
            sal = successive_erasing(image, lambda im: source(image_id, im), rounds=rounds)
        else:
            sal = source(image_id, image)
        return am_saliency_semantic(model, image, ds.labels(image_id), size, sal, crf=crf, background=background)

    return semantic


def dsrg_semantic_fn(model_dir: Path, ds: Dataset, crf: bool, device: str | None) -> SemanticFn:
    """DSRG: the segmentation network of a ``train-dsrg`` run (its retrained one when it has one), its argmax
    over background and the image's labels, refined by DSRG's dense CRF when ``crf`` (the paper's test step)."""
    from liid.models import pick_device
    from liid.training.dsrg import dsrg_semantic, load_dsrg

    dev = pick_device(device)
    model = load_dsrg(model_dir, ds, dev)

    def semantic(image_id: str) -> np.ndarray:
        return dsrg_semantic(model, ds.load_image(image_id), ds.labels(image_id), dev, crf=crf)

    return semantic


def vit_sm_semantic_fn(model_dir: Path, ds: Dataset, threshold: float, device: str | None) -> SemanticFn:
    """Semantic modulation: the Final-CAMs of a ``train-vit`` model, labelled like CAMs (``cam_semantic``)."""
    from liid.labelers.cam import cam_semantic
    from liid.labelers.vit_sm import vit_sm_cams
    from liid.models import pick_device
    from liid.training.train_vit import load_vit

    model, size = load_vit(model_dir, ds, pick_device(device))

    def semantic(image_id: str) -> np.ndarray:
        cam = vit_sm_cams(model, ds.load_image(image_id), size)
        return cam_semantic(cam, ds.labels(image_id), threshold)

    return semantic


def _classifier_file(cams: Path) -> Path:
    file = checkpoint_file(cams)
    if not file.is_file():
        raise LiidError(f"{file}: classifier checkpoint not found (train one with `liid train-cls`)")
    return file


def export_semantic(description: str, ds: Dataset, semantic: SemanticFn, out: Path, inputs: dict,
                    overwrite: bool) -> dict:
    """Write every dataset image's class map (VOC-palette PNG) and export.json (``description``: what made the
    maps, e.g. "OAA cumulative attention maps (paper 003)"); no instances.json."""
    from liid.proposals.generate import store_entry

    entries = [store_entry(ds, im) for im in ds.images]

    def label(image_id: str, load) -> ImageLabels:
        empty = np.zeros(0, dtype=np.int64)
        return ImageLabels(empty, empty, np.zeros(0, dtype=np.float32), semantic=semantic(image_id))

    return export_labeled(entries, ds.classes, None, label, out, overwrite=overwrite, score_name="none",
                          row_name="image", description=f"{description} (liid label)", inputs=inputs,
                          write_instances=False)
