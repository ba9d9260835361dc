"""The MIL network's inputs: each image with the boxes of its proposals (top N of the proposal store).

``ProposalSet`` reads and checks everything up front (every image of the dataset in the store, a readable
non-empty proposal file, at least one foreground label), so a bad input stops the run before any
training, with one line naming the image and the file. Only boxes are kept in memory (masks are decoded
on demand), so a VOC-sized set costs a few MB.

``MILData`` serves ``(image [3, S, S], boxes [M, 4] in input pixels, index)``: the image resized to a square
``S`` (448 in the reference code) and the boxes scaled with it; the horizontal flip is a function of
``(seed, epoch, index)`` only, as in ``ClassificationData``, so a resumed run sees the same flips.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.models.backbone import IMAGENET_NORM, Normalization
from liid.progress import progress as progress_bar
from liid.proposals.store import ImageProposals, read_image_proposals, read_proposal_index
from liid.training.data import EpochData, to_input


@dataclass
class ProposalSet:
    """The proposals the MIL network sees: per dataset image (in dataset order) its top-N boxes."""

    store: Path
    ids: list[str]
    entries: list[dict]  # proposal-store index entries, aligned with ids
    boxes: list[np.ndarray]  # [M_i, 4] float32 XYXY pixels (x2/y2 exclusive), M_i >= 1
    labels: np.ndarray  # [I, K+1] bool, background column always True
    top: int | None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_proposals(self) -> int:
        return int(sum(len(b) for b in self.boxes))

    def load(self, i: int) -> ImageProposals:
        """Image ``i``'s proposals (all of them; the first ``len(boxes[i])`` are the ones used)."""
        return read_image_proposals(self.store, self.entries[i])


def read_proposal_set(dataset: Dataset, store: str | os.PathLike, top: int | None = None,
                      ids: list[str] | None = None, progress: bool = True) -> ProposalSet:
    """Read the boxes of ``dataset``'s images (or ``ids``) from the proposal store, first ``top`` per image.

    Errors (LiidError, one line): a dataset without image labels; an image with no foreground label; an
    image missing from the store; a missing/corrupt proposal file; an image with no proposals.
    """
    store = Path(store)
    if top is not None and top < 1:
        raise LiidError(f"--top {top}: must be at least 1")
    if not dataset.has_labels:
        raise LiidError(f"{dataset.source}: this dataset has no image labels (a VOC root or COCO JSON is needed)")
    index = read_proposal_index(store)
    by_id = {e["id"]: e for e in index}
    ids = [im.id for im in dataset.images] if ids is None else list(ids)
    if not ids:
        raise LiidError(f"{dataset.source}: no images")
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise LiidError(f"{store}/index.json: image {missing[0]!r} of {dataset.source} has no proposals in this "
                        f"store ({len(missing)} of {len(ids)} images missing); run `liid proposals` on the "
                        "same dataset")
    labels, boxes, entries = [], [], []
    for iid in progress_bar(ids, desc="read proposals", unit="img", enabled=progress, leave=False):
        v = dataset.label_vector(iid).astype(bool)
        if not v[1:].any():
            raise LiidError(f"{dataset.source}: image {iid!r} has no labels (no foreground class); remove it "
                            "from the split")
        v[0] = True
        e = by_id[iid]
        props = read_image_proposals(store, e)
        if len(props) == 0:
            raise LiidError(f"{store / e['file']}: image {iid!r} has no proposals; the MIL network needs at "
                            "least one per image (regenerate them, or remove the image from the split)")
        info = dataset.info(iid)
        if (props.height, props.width) != (info.height, info.width):
            raise LiidError(f"{store / e['file']}: proposals are {props.height}x{props.width}, image {iid!r} is "
                            f"{info.height}x{info.width}")
        labels.append(v)
        boxes.append(np.ascontiguousarray(props.boxes[:top], dtype=np.float32))
        entries.append(e)
    return ProposalSet(store, ids, entries, boxes, np.stack(labels), top)


class MILData(EpochData):
    """Items ``(image [3, size, size], boxes [M, 4] float32 in input pixels, index)`` for one image each."""

    def __init__(self, dataset: Dataset, proposals: ProposalSet, size: int, train: bool = True, seed: int = 0,
                 norm: Normalization = IMAGENET_NORM):
        if size < 32:
            raise LiidError(f"--size {size}: at least 32 pixels (the network's stride)")
        self.dataset = dataset
        self.proposals = proposals
        self.size = size
        self.norm = norm
        self.train = train
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.proposals)

    def scaled_boxes(self, index: int, flip: bool = False) -> torch.Tensor:
        """Proposal boxes of image ``index`` in the resized (and optionally flipped) input's pixels."""
        iid = self.proposals.ids[index]
        info = self.dataset.info(iid)
        b = torch.from_numpy(self.proposals.boxes[index].copy())
        b[:, 0::2] *= self.size / info.width
        b[:, 1::2] *= self.size / info.height
        if flip:
            b = torch.stack([self.size - b[:, 2], b[:, 1], self.size - b[:, 0], b[:, 3]], dim=1)
        return b

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x = to_input(self.dataset.load_image(self.proposals.ids[index]), self.size, self.norm)
        flip = self.flipped(index)
        if flip:
            x = x.flip(-1)
        return x, self.scaled_boxes(index, flip), index


def collate(items: list) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """Stack images, keep one box tensor per image (their counts differ)."""
    return torch.stack([x for x, _, _ in items]), [b for _, b, _ in items], [i for _, _, i in items]
