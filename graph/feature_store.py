"""The feature store: what ``liid extract`` writes and ``liid build-graph`` reads (docs/FORMATS.md).

A directory of plain ``.npy`` arrays plus ``store.json``; a third party can write one with numpy alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liid.atomic import atomic_dir, load_npy, read_header, write_json
from liid.errors import LiidError
from liid.graph.mapped import read_rows

FORMAT = "liid.feature_store"
VERSION = 1
ARRAYS = ("features", "probs", "proposal_image", "proposal_index", "image_labels")


@dataclass
class FeatureStore:
    """Per proposal: feature ``f`` and probabilities ``p`` (K+1); per image: its label mask."""

    features: np.ndarray  # [N, D] float16/float32
    probs: np.ndarray  # [N, K+1] in [0, 1]
    proposal_image: np.ndarray  # [N] image index into ``images``
    proposal_index: np.ndarray  # [N] position of the proposal in its image's proposal list
    image_labels: np.ndarray  # [I, K+1] bool; column 0 (background) is always allowed
    classes: list[str]  # K+1 names, background first
    images: list[str]  # I image ids
    path: Path | None = None

    @property
    def num_proposals(self) -> int:
        return int(self.features.shape[0])

    def allowed_labels(self) -> np.ndarray:
        """[N, K+1] bool: a proposal may take its image's labels and background."""
        allowed = np.asarray(self.image_labels, dtype=bool)[np.asarray(self.proposal_image)]
        allowed[:, 0] = True
        return allowed


def _finite_rows(a: np.ndarray, chunk: int = 65536) -> int | None:
    """Index of the first row with a NaN/inf value, or None (chunked: works on memory maps)."""
    for s in range(0, a.shape[0], chunk):
        bad = ~np.isfinite(read_rows(a, s, s + chunk).astype(np.float32)).all(axis=1)
        if bad.any():
            return s + int(np.argmax(bad))
    return None


def validate(store: FeatureStore) -> None:
    """Check shapes, ranges and values once, at the boundary; raise LiidError naming the item."""
    where = str(store.path) if store.path else "feature store"
    f, p, pi, px, lab = (store.features, store.probs, store.proposal_image, store.proposal_index,
                         store.image_labels)
    n = f.shape[0] if f.ndim == 2 else -1
    if f.ndim != 2:
        raise LiidError(f"{where}/features.npy: expected a 2-d array [N, D], got shape {f.shape}")
    if n == 0:
        raise LiidError(f"{where}: empty store (0 proposals)")
    if f.dtype not in (np.float16, np.float32, np.float64):
        raise LiidError(f"{where}/features.npy: dtype {f.dtype} is not a float type")
    k1 = len(store.classes)
    if k1 < 2:
        raise LiidError(f"{where}/store.json: 'classes' needs background plus at least one class")
    for name, arr, shape in (("probs", p, (n, k1)), ("proposal_image", pi, (n,)),
                             ("proposal_index", px, (n,)), ("image_labels", lab, (len(store.images), k1))):
        if tuple(arr.shape) != shape:
            raise LiidError(f"{where}/{name}.npy: shape {tuple(arr.shape)} does not match the store, "
                            f"expected {shape} (N={n} proposals, {len(store.images)} images, {k1} classes)")
    if len(store.images) == 0:
        raise LiidError(f"{where}/store.json: no images")
    if not np.issubdtype(pi.dtype, np.integer) or not np.issubdtype(px.dtype, np.integer):
        raise LiidError(f"{where}: proposal_image.npy and proposal_index.npy must hold integers")
    if pi.min() < 0 or pi.max() >= len(store.images):
        j = int(np.argmax((pi < 0) | (pi >= len(store.images))))
        raise LiidError(f"{where}/proposal_image.npy: proposal {j} names image {int(pi[j])}, "
                        f"out of range [0, {len(store.images)})")
    if px.min() < 0:
        raise LiidError(f"{where}/proposal_index.npy: proposal {int(np.argmin(px))} has a negative index")
    if lab.dtype != bool and not (np.issubdtype(lab.dtype, np.integer) and np.isin(lab, (0, 1)).all()):
        raise LiidError(f"{where}/image_labels.npy: labels must be 0/1 (bool), got values outside that")
    fg = np.asarray(lab, dtype=bool)[:, 1:].any(axis=1)
    if not fg.all():
        i = int(np.argmin(fg))
        raise LiidError(f"{where}/image_labels.npy: image {store.images[i]!r} (index {i}) has no labels")
    bad = _finite_rows(f)
    if bad is not None:
        raise LiidError(f"{where}/features.npy: proposal {bad} has a NaN or inf feature")
    bad = _finite_rows(p)
    if bad is not None:
        raise LiidError(f"{where}/probs.npy: proposal {bad} has a NaN or inf probability")
    if p.min() < 0 or p.max() > 1 + 1e-6:
        j = int(np.argmax(((np.asarray(p) < 0) | (np.asarray(p) > 1 + 1e-6)).any(axis=1)))
        raise LiidError(f"{where}/probs.npy: proposal {j} has a probability outside [0, 1]")


def read_feature_store(path: str | os.PathLike, mmap: bool = True) -> FeatureStore:
    """Read and validate a feature store directory."""
    path = Path(path)
    meta = read_header(path, "store.json", FORMAT, VERSION, "feature store")
    for key in ("classes", "images"):
        if not isinstance(meta.get(key), list):
            raise LiidError(f"{path}/store.json: missing list {key!r}")
    arrays = {name: load_npy(path / f"{name}.npy", mmap=mmap) for name in ARRAYS}
    store = FeatureStore(**arrays, classes=[str(c) for c in meta["classes"]],
                         images=[str(i) for i in meta["images"]], path=path)
    validate(store)
    return store


def store_record(store: FeatureStore, extra: dict | None = None) -> dict:
    """store.json's content for ``store``."""
    return {"format": FORMAT, "version": VERSION, "classes": list(store.classes), "images": list(store.images),
            "num_proposals": store.num_proposals, "feature_dim": int(store.features.shape[1]), **(extra or {})}


def write_feature_store(path: str | os.PathLike, store: FeatureStore, overwrite: bool = False,
                        extra: dict | None = None) -> Path:
    """Validate and write a feature store atomically; ``extra`` adds keys to store.json (provenance)."""
    validate(store)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(store, name)))
        write_json(tmp / "store.json", store_record(store, extra))
    return Path(path)
