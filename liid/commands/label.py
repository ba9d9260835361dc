"""``liid label --method NAME ...``: pseudo-labels from a labeler other than the full LIID pipeline.

Writes what ``liid export`` writes (OUT/instances.json, OUT/semantic/*.png, OUT/export.json), so
``liid evaluate`` and the segmenter trainers take every method's output alike.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource

from detection.export import ImageLabels, export_labeled, export_pseudo_labels, proposal_entries
from graph.feature_store import read_feature_store
from liid.atomic import check_output
from liid.commands.label_semantic import (
    SEMANTIC_METHODS,
    am_saliency_semantic_fn,
    dsrg_semantic_fn,
    export_semantic,
    oaa_plus_semantic,
    oaa_semantic,
    vit_sm_semantic_fn,
)
from liid.commands.stage import input_fingerprints, up_to_date
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.labelers import METHODS, mil_argmax_labels, oracle_labels
from liid.labelers.cam import KINDS, THRESHOLD, cam_instances, cam_semantic
from liid.labelers.oracle import IOU
from proposals.store import masks_to_proposals


def _store_entries(ds, proposals: Path) -> list[dict]:
    """The proposal store's entries of the dataset's images, in the dataset's order, sizes checked."""
    entries = proposal_entries(proposals, [im.id for im in ds.images], f"the dataset {ds.source}",
                               str(ds.source))
    for e, im in zip(entries, ds.images, strict=True):
        if (e["height"], e["width"]) != (im.height, im.width):
            raise LiidError(f"{proposals}/index.json: image {im.id!r} is {e['height']}x{e['width']} in the "
                            f"proposal store but {im.height}x{im.width} in the dataset {ds.source}")
    return entries


def _export_oracle(dataset: str, split: str | None, images_dir: Path | None, proposals: Path, out: Path,
                   nms_iou: float, overwrite: bool) -> tuple[dict | None, int]:
    """The oracle's export of the dataset's images (None when OUT is up to date); also how many images
    had no ground truth."""
    ds = open_dataset(dataset, split=split, images=images_dir)
    inputs = {"method": "oracle", "dataset": str(dataset), "split": split,
              "images": None if images_dir is None else str(images_dir), "proposals": str(proposals),
              "iou": IOU, "nms_iou": nms_iou, "dataset_description": ds.describe(),
              "fingerprints": input_fingerprints(proposals)}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None, 0
    check_output(out, overwrite)
    if not ds.has_instances:
        raise LiidError(f"{ds.source}: --method oracle needs ground-truth instances; this {ds.kind} dataset "
                        f"has none")
    entries = _store_entries(ds, proposals)
    no_gt = 0

    def label(image_id: str, load) -> ImageLabels | None:
        nonlocal no_gt
        inst = ds.instances(image_id)
        if inst is None:
            no_gt += 1
            return None
        props = load()
        gt_boxes = masks_to_proposals(inst.masks, [0.0] * len(inst)).boxes
        labels, scores = oracle_labels(props.boxes, gt_boxes, inst.classes, IOU, gt_iscrowd=inst.iscrowd)
        return ImageLabels(np.arange(len(props)), labels, scores)

    summary = export_labeled(
        entries, ds.classes, proposals, label, out, nms_iou=nms_iou, overwrite=overwrite,
        score_name="gt box IoU", row_name="proposal", description="LIID oracle pseudo instances (liid label)",
        inputs=inputs)
    return summary, no_gt


def _export_cam(cams: Path, dataset: str, split: str | None, images_dir: Path | None, proposals: Path | None,
                out: Path, threshold: float, kind: str, nms_iou: float, device: str | None,
                overwrite: bool) -> dict | None:
    """The CAM baseline's export of the dataset's images (None when OUT is up to date).

    Semantic PNGs: ``cam_semantic`` of each image's CAMs over its labels. Instances: ``cam_instances``, as the
    store's proposals (``kind="proposal"``, the oracle's path) or as their own masks (rect, ellipse).
    """
    ds = open_dataset(dataset, split=split, images=images_dir)
    file = cams / "checkpoint.pt" if cams.is_dir() else cams
    inputs = {"method": "cam", "cams": str(cams), "dataset": str(dataset), "split": split,
              "images": None if images_dir is None else str(images_dir),
              "proposals": None if proposals is None else str(proposals), "cam_threshold": threshold,
              "instances": kind, "nms_iou": nms_iou, "dataset_description": ds.describe(),
              "fingerprints": input_fingerprints(file, *([] if proposals is None else [proposals]))}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None
    check_output(out, overwrite)
    if not ds.has_labels:
        raise LiidError(f"{ds.source}: --method cam needs image labels; this {ds.kind} dataset has none")
    if not file.is_file():
        raise LiidError(f"{file}: CAM classifier checkpoint not found (train one with `liid train-cls`)")
    if proposals is not None:
        entries = _store_entries(ds, proposals)
    else:
        from proposals.generate import store_entry  # the entry a proposal store would hold for the image

        entries = [store_entry(ds, im) for im in ds.images]
    from liid.models import pick_device
    from liid.training.attention import load_classifier
    from liid.training.cams import compute_cams

    model, size = load_classifier(file, ds, pick_device(device))

    def label(image_id: str, load) -> ImageLabels:
        cam = compute_cams(model, ds, [image_id], size)[image_id].astype(np.float32)
        present = ds.labels(image_id)
        semantic = cam_semantic(cam, present, threshold)
        found = cam_instances(cam, present, threshold, kind, load() if kind == "proposal" else None)
        labels = np.array([i.label for i in found], dtype=np.int64)
        scores = np.array([i.score for i in found], dtype=np.float32)
        if kind == "proposal":
            return ImageLabels(np.array([i.proposal for i in found], dtype=np.int64), labels, scores,
                               semantic=semantic)
        masks = np.stack([i.mask for i in found]) if found else np.zeros((0, *semantic.shape), dtype=bool)
        return ImageLabels(np.arange(len(found)), labels, scores, proposals=masks_to_proposals(masks, scores),
                           semantic=semantic)

    return export_labeled(
        entries, ds.classes, proposals, label, out, nms_iou=nms_iou, overwrite=overwrite,
        score_name="CAM peak", row_name="CAM instance",
        description=f"CAM + {kind} pseudo instances (liid label)", inputs=inputs)


# The options each method reads (parameter names); any other given explicitly is refused with one line, also
# one whose value equals its default (``--nms-iou 0.4`` for a method without instances, ``--no-crf`` for oaa).
_DATA = {"dataset", "split", "images_dir"}
OPTIONS = {
    "mil-argmax": {"features", "proposals", "any_label", "nms_iou"},
    "oracle": _DATA | {"proposals", "nms_iou"},
    "cam": _DATA | {"proposals", "cams", "cam_threshold", "kind", "nms_iou", "device"},
    "oaa": _DATA | {"cams", "cam_threshold"},
    "oaa+": _DATA | {"cams", "cam_threshold", "device"},
    "am-saliency": _DATA | {"cams", "saliency", "cam_threshold", "crf", "rounds", "device"},
    "dsrg": _DATA | {"model", "crf", "device"},
    "vit-sm": _DATA | {"model", "cam_threshold", "device"},
}
_EVERY_METHOD = {"method", "out", "overwrite"}
_INSTANCE_OPTIONS = ("kind", "nms_iou")  # what only the methods that define instances read
_REQUIRED = {
    "mil-argmax": {"features": "--features STORE (from `liid extract`)", "proposals": "--proposals STORE"},
    "oracle": {"dataset": "--dataset DATASET (the ground truth that labels the proposals)",
               "proposals": "--proposals STORE"},
    "cam": {"cams": "--cams CLS (a `liid train-cls` folder)", "dataset": "--dataset DATASET (its images and labels)"},
    "oaa": {"cams": "--cams CLS (a `liid train-cls --oaa max` folder)", "dataset": "--dataset DATASET"},
    "oaa+": {"cams": "--cams INT (a `liid train-cls --oaa-targets CLS` folder)", "dataset": "--dataset DATASET"},
    "am-saliency": {"cams": "--cams CLS (a `liid train-cls` folder)", "dataset": "--dataset DATASET"},
    "dsrg": {"model": "--model DIR (a `liid train-dsrg` folder)", "dataset": "--dataset DATASET"},
    "vit-sm": {"model": "--model DIR (a `liid train-vit` folder)", "dataset": "--dataset DATASET"},
}


def _flag(param: click.Parameter, value: object = None) -> str:
    """The option as given: ``--crf`` or ``--no-crf`` by the value of an on/off pair (both without one), else its
    longest name."""
    name = max(param.opts, key=len)
    if isinstance(param, click.Option) and param.secondary_opts:
        off = max(param.secondary_opts, key=len)
        return off if value is False else name if value is True else f"{name}/{off}"
    return name


def given_options(ctx: click.Context) -> dict[str, object]:
    """The parameters given explicitly (command line, environment, default map), by name, with their values;
    not those left at their defaults, whatever the value."""
    return {p.name: ctx.params[p.name] for p in ctx.command.params
            if p.name in ctx.params and ctx.get_parameter_source(p.name) is not ParameterSource.DEFAULT}


def check_method_options(method: str, ctx: click.Context) -> None:
    """One line for an option given that the method does not read, or a required one missing (before any work)."""
    params = {p.name: p for p in ctx.command.params}
    given = given_options(ctx)
    extra = [k for k in given if k not in OPTIONS[method] and k not in _EVERY_METHOD]
    instance_only = [k for k in extra if k in _INSTANCE_OPTIONS]
    if instance_only:
        k = instance_only[0]
        readers = ", ".join(m for m in OPTIONS if k in OPTIONS[m])
        raise LiidError(f"--method {method} defines no instance output (it writes semantic maps only); "
                        f"{_flag(params[k], given[k])} is for --method {readers}")
    if extra:
        takes = ", ".join(_flag(p) for p in ctx.command.params if p.name in OPTIONS[method])
        raise LiidError(f"{', '.join(_flag(params[k], given[k]) for k in extra)}: not an option of --method "
                        f"{method} (it takes {takes})")
    from liid.labelers.saliency import BUILTIN

    if method == "am-saliency" and "rounds" in given and given.get("saliency", BUILTIN) != BUILTIN:
        raise LiidError("--rounds: successive erasing runs the built-in detector (--saliency opencv) only; a "
                        "folder of saliency maps is read as it is")
    for k, what in _REQUIRED[method].items():
        if ctx.params.get(k) is None:
            raise LiidError(f"--method {method} needs {what}")


def _export_semantic_method(method: str, dataset: str, split: str | None, images_dir: Path | None,
                            cams: Path | None, model: Path | None, threshold: float, saliency: str,
                            crf: bool, rounds: int, device: str | None, out: Path, overwrite: bool) -> dict | None:
    """A semantic-only method's export (None when OUT is up to date with the same inputs)."""
    from liid.labelers.saliency import BUILTIN

    ds = open_dataset(dataset, split=split, images=images_dir)
    settings = {"cam_threshold": threshold} if "cam_threshold" in OPTIONS[method] else {}
    files: list[Path] = []
    if method == "oaa":
        files = [cams / "oaa.npz" if cams.is_dir() else cams]
    elif method in ("oaa+", "am-saliency"):
        files = [cams / "checkpoint.pt" if cams.is_dir() else cams]
    elif method == "dsrg":
        from liid.training.dsrg import dsrg_checkpoint

        files = [dsrg_checkpoint(model)]  # the retrained network once there is one
        settings.update(crf=crf)
    else:
        files = [model / "checkpoint.pt" if model.is_dir() else model]
    if method == "am-saliency":
        settings.update(saliency=saliency, crf=crf, rounds=rounds)
        if saliency != BUILTIN:
            files.append(Path(saliency))
    inputs = {"method": method, "dataset": str(dataset), "split": split,
              "images": None if images_dir is None else str(images_dir),
              "model": str(cams if model is None else model), **settings,
              "dataset_description": ds.describe(), "fingerprints": input_fingerprints(*files)}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None
    check_output(out, overwrite)
    if not ds.has_labels:
        raise LiidError(f"{ds.source}: --method {method} needs image labels; this {ds.kind} dataset has none")
    if method == "oaa":
        fn = oaa_semantic(cams, ds, threshold)
    elif method == "oaa+":
        fn = oaa_plus_semantic(cams, ds, threshold, device)
    elif method == "am-saliency":
        fn = am_saliency_semantic_fn(cams, ds, saliency, threshold, crf, rounds, device)
    elif method == "dsrg":
        fn = dsrg_semantic_fn(model, ds, crf, device)
    else:
        fn = vit_sm_semantic_fn(model, ds, threshold, device)
    return export_semantic(method, ds, fn, out, inputs, overwrite)


@click.command("label")
@click.option("--method", required=True, type=click.Choice(METHODS),
              help="mil-argmax: the MIL network's own argmax per proposal, no graph (LIID's ablation). "
                   "oracle: the ground truth labels the proposals (box IoU > 0.5 with a GT instance box; "
                   "LIID's upper bound, Table 7). cam: a `liid train-cls` classifier's CAMs: semantic maps "
                   "by argmax over the image's labels, instances from CAM regions (rect, ellipse or best-IoU "
                   "proposal; LIID Table 9). Semantic maps only: oaa (the cumulative maps of `train-cls --oaa`), "
                   "oaa+ (the integral attention model of `train-cls --oaa-targets`), am-saliency (attention "
                   "maps + successive-erasing saliency + CRF), dsrg (a `train-dsrg` network), vit-sm (the "
                   "Final-CAMs of a `train-vit` model).")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="mil-argmax: the feature store written by `liid extract`.")
@click.option("--dataset", default=None,
              help="All but mil-argmax: the dataset (VOC root, COCO JSON or registered name) whose images are "
                   "labelled, with its ground-truth instances (oracle) or image labels (the others).")
@click.option("--split", default=None, help="With --dataset, VOC roots: the image set (e.g. train) or a list file.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="With --dataset, COCO JSONs: the image folder (default: found from the JSON's location).")
@click.option("--proposals", type=click.Path(path_type=Path), default=None,
              help="Proposal store (mil-argmax, oracle, and cam with --instances proposal).")
@click.option("--cams", "cams", type=click.Path(path_type=Path), default=None,
              help="cam, am-saliency: a `liid train-cls` folder or its checkpoint.pt; oaa: a `train-cls --oaa` "
                   "folder (its oaa.npz); oaa+: a `train-cls --oaa-targets` folder.")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="dsrg: a `liid train-dsrg` folder (its retrained network once `--retrain-epochs` has run) or a "
                   "checkpoint file; vit-sm: a `liid train-vit` folder.")
@click.option("--cam-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help=f"cam, oaa, oaa+, vit-sm: background below this attention value (cam: also the level of the "
                   f"regions that become instances); am-saliency: Algorithm 2's background threshold "
                   f"[default: {THRESHOLD}].")
@click.option("--instances", "kind", type=click.Choice(KINDS), default=None,
              help="cam: each CAM region's mask: its box (rect), the ellipse inscribed in it, or the proposal "
                   "whose box overlaps it most (proposal; needs --proposals) [default: rect]. The other methods "
                   "define no instances.")
@click.option("--saliency", default=None,
              help="am-saliency: 'opencv' (the built-in fine-grained detector, run by successive erasing) or a "
                   "folder of precomputed <image id>.png saliency maps (e.g. DSS/DHSN) [default: opencv].")
@click.option("--crf/--no-crf", "crf", default=None,
              help="am-saliency: refine the fused labels with the dense CRF of eq. 10; dsrg: refine the network's "
                   "probabilities with DSRG's dense CRF (its test-time step) [default: --crf].")
@click.option("--rounds", type=click.IntRange(1, 3), default=None,
              help="am-saliency with the built-in detector: successive-erasing rounds (Algorithm 1) [default: 3].")
@click.option("--device", default=None, help="cam, oaa+, am-saliency, dsrg, vit-sm: auto (default), cpu, cuda or "
              "cuda:N.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--any-label", is_flag=True,
              help="mil-argmax: argmax over all classes, not only the image's labels and background.")
@click.option("--nms-iou", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="mil-argmax, oracle, cam: per-class NMS IoU threshold on the instances' boxes (as in "
                   "`liid export`).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(method: str, features: Path | None, dataset: str | None, split: str | None, images_dir: Path | None,
            proposals: Path | None, cams: Path | None, model: Path | None, cam_threshold: float | None,
            kind: str | None, saliency: str | None, crf: bool | None, rounds: int | None, device: str | None,
            out: Path, any_label: bool, nms_iou: float, overwrite: bool) -> None:
    """Label the dataset's proposals (or, for the attention methods, its images) with METHOD; write COCO
    instances JSON (methods that define instances) and semantic PNGs to OUT.

    \b
    Skipped when OUT already holds the labels of the same method, inputs and settings. An option the method
    does not read is refused, even at its default value (e.g. --nms-iou for a method without instances).

    \b
    oracle: a proposal whose box has IoU > 0.5 with a non-crowd ground-truth instance box takes the
    class of the box it overlaps most, with that IoU as its score; the others are background. Then the
    export of `liid export` (per-class NMS, COCO JSON, PNGs), so `liid evaluate` scores it alike.

    \b
    cam: the classifier's CAMs at each image's size; semantic PNG = per pixel the image's label with the
    highest CAM, background below --cam-threshold; each connected region of a label's CAM above the
    threshold is an instance scored by its peak, then the same export (per-class NMS, COCO JSON).

    \b
    oaa, oaa+, am-saliency, dsrg, vit-sm: semantic PNGs only (OUT/semantic), no instances.json; for
    `liid evaluate` (mIoU) and `liid train-deeplab --masks OUT/semantic`.
    """
    check_method_options(method, click.get_current_context())
    threshold = THRESHOLD if cam_threshold is None else cam_threshold
    if method == "mil-argmax":
        inputs = {"method": method, "features": str(features), "proposals": str(proposals),
                  "restrict_to_image_labels": not any_label, "nms_iou": nms_iou,
                  "fingerprints": input_fingerprints(features, proposals)}
        if up_to_date(out, "export.json", "inputs", inputs, overwrite):
            return
        check_output(out, overwrite)
        store = read_feature_store(features)
        labels = mil_argmax_labels(store, restrict_to_image_labels=not any_label)
        summary = export_pseudo_labels(
            labels, store, proposals, out, nms_iou=nms_iou, overwrite=overwrite, labels_name=f"{method} labels",
            inputs=inputs)
    elif method == "oracle":
        summary, no_gt = _export_oracle(dataset, split, images_dir, proposals, out, nms_iou, overwrite)
        if summary is None:
            return
        if no_gt:
            click.echo(f"note: {no_gt} images have no ground-truth instances; exported without instances")
    elif method == "cam":
        kind = kind or "rect"
        if kind == "proposal" and proposals is None:
            raise LiidError("--instances proposal needs --proposals STORE (the proposals to pick from)")
        if kind != "proposal" and proposals is not None:
            raise LiidError(f"--proposals is used by --instances proposal only, not --instances {kind}")
        summary = _export_cam(cams, dataset, split, images_dir, proposals, out, threshold, kind, nms_iou, device,
                              overwrite)
        if summary is None:
            return
    elif method in SEMANTIC_METHODS:
        summary = _export_semantic_method(method, dataset, split, images_dir, cams, model, threshold,
                                          saliency or "opencv", True if crf is None else crf,
                                          3 if rounds is None else rounds, device, out, overwrite)
        if summary is None:
            return
        click.echo(f"{out}: semantic maps of {summary['images']} images (no instances: --method {method} "
                   f"defines none)")
        return
    else:  # pragma: no cover - click.Choice guards this
        raise LiidError(f"unknown method {method!r}")
    click.echo(f"{out}: {summary['instances']} instances in {summary['images']} images "
               f"({summary['dropped_background']} background, {summary['suppressed_nms']} suppressed by NMS)")
