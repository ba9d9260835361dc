"""A torch Dataset over a liid Dataset for the multi-label classifier: square resized, normalised images
with their foreground label vectors.

Augmentation is a horizontal flip whose draw depends only on ``(seed, epoch, index)``, never on a global
random state, so a run resumed from an epoch boundary sees exactly the flips of an uninterrupted run.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.models.backbone import IMAGENET_NORM, Normalization


def to_input(image: np.ndarray, size: int, norm: Normalization = IMAGENET_NORM) -> torch.Tensor:
    """uint8 RGB [H, W, 3] → float32 [3, size, size]: bilinear resize, [0, 1], then the backbone's normalisation
    (``norm``: the network's ``model.norm``; ImageNet mean/std for the ResNets)."""
    im = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return norm(x)


class EpochData(torch.utils.data.Dataset):
    """A training set whose augmentation of item ``index`` depends only on ``(seed, epoch, index)``.

    Never on a global random state or the loader's order, so a run resumed from an epoch boundary sees
    exactly the augmentations of an uninterrupted run. Subclasses set ``train`` and ``seed``.
    """

    train: bool = True
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations ``__getitem__`` draws (call before building the epoch's loader)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The random stream of item ``index`` this epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def flipped(self, index: int) -> bool:
        """Whether item ``index`` is flipped this epoch (training only): a function of (seed, epoch, index)."""
        return self.train and bool(self.rng(index).random() < 0.5)


class ClassificationData(EpochData):
    """Items ``(image [3, size, size], target [K] float32, index)``; target = foreground labels (no background).

    The label vectors are read up front: a dataset without image labels, or any image without a foreground
    label, is a LiidError naming it before training starts (such an image has no positive class to learn).
    """

    def __init__(self, dataset: Dataset, size: int, train: bool = True, seed: int = 0,
                 ids: list[str] | None = None, norm: Normalization = IMAGENET_NORM):
        if size < 32:
            raise LiidError(f"--size {size}: at least 32 pixels (the network's stride)")
        if not dataset.has_labels:
            raise LiidError(f"{dataset.source}: this dataset has no image labels (a VOC root or COCO JSON is needed)")
        self.dataset = dataset
        self.size = size
        self.norm = norm
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.ids = [im.id for im in dataset.images] if ids is None else list(ids)
        if not self.ids:
            raise LiidError(f"{dataset.source}: no images to train on")
        targets = []
        for iid in self.ids:
            v = dataset.label_vector(iid)[1:]
            if not v.any():
                raise LiidError(f"{dataset.source}: image {iid!r} has no labels (no foreground class); "
                                "remove it from the split")
            targets.append(v)
        self.targets = torch.from_numpy(np.stack(targets).astype(np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x = to_input(self.dataset.load_image(self.ids[index]), self.size, self.norm)
        if self.flipped(index):
            x = x.flip(-1)
        return x, self.targets[index], index
