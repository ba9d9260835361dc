"""``liid extract``'s work: the trained MIL network over every image → the feature store (``graph.feature_store``).

Per proposal: the GAP feature ``f`` (float16 by default; 2048-d for ResNet50) and the softmax ``p`` (K+1,
float32); per image: its label vector. Images go through in small batches (eval mode: BatchNorm uses its
running statistics, so batching changes nothing), unflipped, at the training input size.
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
from liid.training.mil_data import MILData, ProposalSet, collate


def load_mil(path: str | Path, dataset: Dataset, device: torch.device) -> tuple[MILNetwork, dict]:
    """A trained MIL network from a ``train-mil`` folder or checkpoint; refuses other classes with one line."""
    return load_trained(path, MILNetwork, dataset.classes, device, "MIL network", "use a train-mil folder")


@torch.no_grad()
def extract_features(model: MILNetwork, dataset: Dataset, pset: ProposalSet, size: int, device: torch.device,
                     batch_images: int = 4, feature_dtype: np.dtype = np.float16, workers: int = 0,
                     progress: bool = True) -> tuple[FeatureStore, dict]:
    """Run ``model`` over every image of ``pset``; returns the store (unwritten) and throughput numbers."""
    model.eval()
    data = MILData(dataset, pset, size, train=False, norm=model.norm)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_images, shuffle=False, collate_fn=collate,
                                         num_workers=workers)
    n, dim, k1 = pset.num_proposals, model.channels, model.num_classes + 1
    features = np.zeros((n, dim), dtype=feature_dtype)
    probs = np.zeros((n, k1), dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in pset.boxes])])
    t0 = time.perf_counter()
    bar = progress_bar(total=len(data), desc="extract", unit="img", enabled=progress)
    for x, boxes, idx in loader:
        f, p = model.extract(x.to(device), [b.to(device) for b in boxes])
        f, p = f.float().numpy(), p.numpy()
        s = 0
        for i, b in zip(idx, boxes, strict=True):
            m = len(b)
            features[offsets[i]:offsets[i] + m] = f[s:s + m]
            probs[offsets[i]:offsets[i] + m] = p[s:s + m]
            s += m
        bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - t0
    if not np.isfinite(features).all():
        raise LiidError("the MIL network gave NaN/inf features (a diverged checkpoint?)")
    proposal_image = np.repeat(np.arange(len(pset), dtype=np.int32), np.diff(offsets))
    proposal_index = np.concatenate([np.arange(len(b), dtype=np.int32) for b in pset.boxes])
    store = FeatureStore(features=features, probs=probs, proposal_image=proposal_image,
                         proposal_index=proposal_index, image_labels=pset.labels.copy(),
                         classes=list(dataset.classes), images=list(pset.ids))
    stats = {"seconds": seconds, "images_per_second": len(pset) / seconds, "proposals_per_second": n / seconds,
             "device": str(device), "batch_images": batch_images, "size": size,
             "feature_dtype": np.dtype(feature_dtype).name}
    return store, stats
