"""L_Att's targets (eq. 3): the CAM pseudo label ỹ of every training proposal, computed once per run.

The CAM classifier (``liid train-cls``) is frozen while the MIL network trains and the proposals are fixed,
so ỹ never changes: it is computed before the first epoch for all images and cached in the training folder
(``attention_labels.json``), keyed by the classifier file's hash and the settings. A rerun or ``--resume``
reuses it; anything else recomputes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from liid.atomic import read_json, write_json
from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.losses import attention_pseudo_labels, cam_box_scores, cam_soft_iou
from liid.models import MultiLabelClassifier
from liid.models.checkpoint import checkpoint_file
from liid.models.trained import load_trained
from liid.progress import progress as progress_bar
from liid.training.cams import compute_cams
from liid.training.mil_data import ProposalSet

# CAM regions of the soft-IoU rule: A^k >= 0.3 of its peak (measured on the synthetic set with a 448-px classifier:
# 0.1 / 0.2 / 0.3 gave proposal-label accuracy 0.878 / 0.890 / 0.901 at eta 0.3; BENCHMARKS.md)
SOFT_IOU_TAU = 0.3
# eq. 3's threshold on the soft IoU (in [0, 1]): precision 0.69 at recall 0.83 of the proposal labels there
SOFT_IOU_ETA = 0.3
POOLINGS = ("box", "mask", "soft-iou")  # eq. 3's R over the box (paper), the mask (ablation), or cam_soft_iou


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_classifier(path: str | Path, dataset: Dataset, device: torch.device) -> tuple[MultiLabelClassifier, int]:
    """The trained CAM classifier of a ``train-cls`` folder (or its checkpoint file) and its input size.

    A checkpoint for another class count or other class names is refused with one line.
    """
    model, meta = load_trained(path, MultiLabelClassifier, dataset.classes, device, "CAM classifier",
                               "use a train-cls folder")
    size = int(meta.get("size") or meta.get("config", {}).get("size") or 448)
    return model, size


def image_attention_labels(cams: np.ndarray, boxes: np.ndarray, labels: np.ndarray, eta: float,
                           pooling: str = "box", masks: np.ndarray | None = None) -> np.ndarray:
    """ỹ [M] for one image from its CAMs ``[K, H, W]`` (image resolution) and proposal boxes/masks (eq. 3)."""
    if pooling == "soft-iou":
        R = torch.from_numpy(cam_soft_iou(cams, masks, SOFT_IOU_TAU)).float()
        present = [k for k in range(1, labels.shape[0]) if labels[k]]
        return attention_pseudo_labels(R, present, eta).numpy()
    cam_t = torch.from_numpy(np.asarray(cams, dtype=np.float32))
    if pooling == "box":
        R = cam_box_scores(cam_t, torch.from_numpy(boxes), mode="box")
    else:
        R = cam_box_scores(cam_t, None, mode="mask", masks=torch.from_numpy(masks))
    present = [k for k in range(1, labels.shape[0]) if labels[k]]
    return attention_pseudo_labels(R, present, eta).numpy()


def attention_labels(classifier_path: str | Path, dataset: Dataset, proposals: ProposalSet, eta: float,
                     pooling: str, device: torch.device, cache: Path | None = None,
                     progress: bool = True) -> tuple[list[np.ndarray], dict]:
    """ỹ for every image of ``proposals`` (list aligned with ``proposals.ids``) and a summary.

    ``cache``: a JSON file reused when it was made from the same classifier file, proposals and settings.
    """
    if pooling not in POOLINGS:
        raise LiidError(f"--att-pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    path = Path(classifier_path)
    file = checkpoint_file(path)
    if not file.is_file():
        raise LiidError(f"{file}: CAM classifier checkpoint not found (train one with `liid train-cls`)")
    key = {"classifier_sha256": file_sha256(file), "eta": eta, "pooling": pooling,
           "proposals": str(proposals.store.resolve()), "proposals_fingerprint": fingerprint(proposals.store),
           "top": proposals.top, "images": len(proposals)}
    if cache is not None and cache.is_file():
        d = read_json(cache)
        if d.get("key") == key and isinstance(d.get("labels"), dict):
            lab = d["labels"]
            if all(i in lab and len(lab[i]) == len(b) for i, b in zip(proposals.ids, proposals.boxes, strict=True)):
                return [np.asarray(lab[i], dtype=np.int64) for i in proposals.ids], d["summary"]
    model, size = load_classifier(file, dataset, device)
    out: list[np.ndarray] = []
    for i, iid in enumerate(progress_bar(proposals.ids, desc="CAM pseudo labels (eq. 3)", unit="img",
                                         enabled=progress, leave=False)):
        cams = compute_cams(model, dataset, [iid], size)[iid]
        masks = proposals.load(i).decode(range(len(proposals.boxes[i]))) if pooling != "box" else None
        out.append(image_attention_labels(cams, proposals.boxes[i], proposals.labels[i], eta, pooling, masks))
    flat = np.concatenate(out)
    summary = {"proposals": int(len(flat)), "background_fraction": float((flat == 0).mean()),
               "per_class": np.bincount(flat, minlength=dataset.num_classes + 1).tolist(), "cam_size": size}
    if cache is not None:
        labels = {iid: y.tolist() for iid, y in zip(proposals.ids, out, strict=True)}
        write_json(cache, {"key": key, "summary": summary, "labels": labels}, compact=True)
    return out, summary
