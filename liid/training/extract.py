"""``liid extract``'s work: the trained MIL network over every image → the feature store (``graph.feature_store``).

Per proposal: the GAP feature ``f`` (float16 by default; 2048-d for ResNet50) and the softmax ``p`` (K+1,
float32); per image: its label vector. Images go through in small batches (eval mode: BatchNorm uses its
running statistics, so batching changes nothing), unflipped, at the training input size.

Under ``torchrun`` (``world``) rank r takes images r, r + W, r + 2W, ...; each rank saves its rows to the
``parts`` folder (one every rank sees) and rank 0 puts the store together in image order: the store is the
single process's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.graph.feature_store import FeatureStore
from liid.models import MILNetwork
from liid.models.trained import load_trained
from liid.progress import progress as progress_bar
from liid.training.distributed import World
from liid.training.mil_data import MILData, ProposalSet, collate


def load_mil(path: str | Path, dataset: Dataset, device: torch.device) -> tuple[MILNetwork, dict]:
    """A trained MIL network from a ``train-mil`` folder or checkpoint; refuses other classes with one line."""
    return load_trained(path, MILNetwork, dataset.classes, device, "MIL network", "use a train-mil folder")


@torch.no_grad()
def extract_features(model: MILNetwork, dataset: Dataset, pset: ProposalSet, size: int, device: torch.device,
                     batch_images: int = 4, feature_dtype: np.dtype = np.float16, workers: int = 0,
                     progress: bool = True, world: World | None = None, parts: Path | None = None
                     ) -> tuple[FeatureStore | None, dict]:
    """Run ``model`` over every image of ``pset``; returns the store (unwritten; None on ranks other than 0)
    and throughput numbers."""
    world = world or World()
    model.eval()
    data = MILData(dataset, pset, size, train=False, norm=model.norm)
    mine = list(range(world.rank, len(data), world.size))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, mine) if world.distributed else data,
                                         batch_size=batch_images, shuffle=False, collate_fn=collate,
                                         num_workers=workers)
    n, dim, k1 = pset.num_proposals, model.channels, model.num_classes + 1
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in pset.boxes])])
    sizes = np.diff(offsets)
    # this rank's rows, image after image (all rows in one process)
    start = dict(zip(mine, np.concatenate([[0], np.cumsum(sizes[mine])])[:-1].tolist(), strict=True))
    rows = int(sizes[mine].sum())
    features = np.zeros((rows, dim), dtype=feature_dtype)
    probs = np.zeros((rows, k1), dtype=np.float32)
    t0 = time.perf_counter()
    bar = progress_bar(total=len(mine), desc="extract", unit="img", enabled=progress and world.is_main)
    for x, boxes, idx in loader:
        f, p = model.extract(x.to(device), [b.to(device) for b in boxes])
        f, p = f.float().cpu().numpy(), p.cpu().numpy()
        s = 0
        for i, b in zip(idx, boxes, strict=True):
            m, a = len(b), start[int(i)]
            features[a:a + m] = f[s:s + m]
            probs[a:a + m] = p[s:s + m]
            s += m
        bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - t0
    if not np.isfinite(features).all():
        raise LiidError("the MIL network gave NaN/inf features (a diverged checkpoint?)")
    if world.distributed:
        features, probs, seconds = _gather_parts(features, probs, seconds, mine, offsets, world, parts)
        if features is None:
            return None, {}
    proposal_image = np.repeat(np.arange(len(pset), dtype=np.int32), sizes)
    proposal_index = np.concatenate([np.arange(len(b), dtype=np.int32) for b in pset.boxes])
    store = FeatureStore(features=features, probs=probs, proposal_image=proposal_image,
                         proposal_index=proposal_index, image_labels=pset.labels.copy(),
                         classes=list(dataset.classes), images=list(pset.ids))
    stats = {"seconds": seconds, "images_per_second": len(pset) / seconds, "proposals_per_second": n / seconds,
             "device": str(device), "batch_images": batch_images, "size": size,
             "feature_dtype": np.dtype(feature_dtype).name}
    return store, stats


def _gather_parts(features: np.ndarray, probs: np.ndarray, seconds: float, mine: list[int], offsets: np.ndarray,
                  world: World, parts: Path | None) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """Every rank's rows written to ``parts``, read back by rank 0 into image order (None elsewhere). Files, not
    a collective: a COCO store (20 GB at 2048-d) is more than a pickled message should carry."""
    if parts is None:
        raise LiidError("extract under torchrun needs a parts folder that every rank sees")
    np.save(parts / f"features-{world.rank}.npy", features)
    np.save(parts / f"probs-{world.rank}.npy", probs)
    np.save(parts / f"images-{world.rank}.npy", np.asarray(mine, dtype=np.int64))
    slowest = max(world.all_gather(seconds))  # also the barrier: every part is written
    if not world.is_main:
        return None, None, slowest
    n = int(offsets[-1])
    full_f = np.zeros((n, features.shape[1]), dtype=features.dtype)
    full_p = np.zeros((n, probs.shape[1]), dtype=np.float32)
    for r in range(world.size):
        f = np.load(parts / f"features-{r}.npy", mmap_mode="r")
        p = np.load(parts / f"probs-{r}.npy", mmap_mode="r")
        a = 0
        for i in np.load(parts / f"images-{r}.npy").tolist():
            m = int(offsets[i + 1] - offsets[i])
            full_f[offsets[i]:offsets[i] + m] = f[a:a + m]
            full_p[offsets[i]:offsets[i] + m] = p[a:a + m]
            a += m
    return full_f, full_p, slowest
