"""A generated feature store with the structure of MIL features on VOC (for the demo, benchmarks, tests).

Not a model of any real dataset's numbers; a stand-in with the properties the graph stage depends on:
  * 2048-d non-negative (ReLU + GAP-like) features; object proposals cluster by class, with per-instance
    sub-clusters (the 20 proposals of one object overlap, so they look alike), variation in a low-rank
    subspace plus isotropic noise;
  * background proposals from a handful of "stuff" clusters, some of them part-object mixtures;
  * images with ~1.5 labels; probabilities from a noisy classifier (MIL argmax right ~70% of the time).
Ground truth (the true class of each proposal, 0 = background) is returned for measuring label accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liid.graph.feature_store import FeatureStore

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


@dataclass(frozen=True)
class SyntheticSpec:
    images: int = 10_000
    proposals_per_image: int = 20
    classes: int = 20  # foreground classes
    dim: int = 2048
    rank: int = 64  # dimension of the within-class variation subspace
    object_fraction: float = 0.6  # share of proposals that hit an object
    noise: float = 0.35  # isotropic noise, relative to the class-centre norm
    instance_spread: float = 0.6  # spread of instance centres around their class centre
    classifier_noise: float = 1.6  # std of the logit noise (higher: a worse MIL classifier)
    seed: int = 0
    label_probs: tuple[float, ...] = (0.6, 0.3, 0.1)  # P(an image has 1, 2, 3, ... labels): VOC-like, mean 1.5


# COCO train2017 at 40 proposals per image: ~1.2e5 images x 40 = 5e6 proposals, 80 classes, 2.9 labels per image
COCO_LABEL_PROBS = (0.25, 0.2, 0.2, 0.15, 0.1, 0.1)  # mean 2.95


def coco_spec(dim: int = 2048, images: int = 125_000, seed: int = 0) -> SyntheticSpec:
    """The COCO-scale preset of the graph benchmark (``tools/bench_graph.py --preset coco``)."""
    return SyntheticSpec(images=images, proposals_per_image=40, classes=80, dim=dim, seed=seed,
                         label_probs=COCO_LABEL_PROBS)


def make_feature_store(spec: SyntheticSpec = SyntheticSpec(), dtype=np.float16,
                       chunk: int = 8192, features_out: np.ndarray | None = None) -> tuple[FeatureStore, np.ndarray]:
    """Return the store and the true class of each proposal (0 = background). ``features_out`` [N, D]: an array
    (a memory map on disk, say) the features are written into, chunk by chunk, instead of a new one in memory."""
    rng = np.random.default_rng(spec.seed)
    K, D, n_img, P = spec.classes, spec.dim, spec.images, spec.proposals_per_image
    N = n_img * P
    scale = 1.0 / np.sqrt(D)
    # class centres: sparse non-negative patterns (each class fires ~15% of the channels)
    centres = rng.random((K + 1, D)) * (rng.random((K + 1, D)) < 0.15) * 3.0 * scale
    stuff = rng.random((8, D)) * (rng.random((8, D)) < 0.2) * 3.0 * scale
    basis = rng.standard_normal((K + 1, spec.rank, D)) * scale / np.sqrt(spec.rank)

    counts = np.arange(1, len(spec.label_probs) + 1)
    nlab = np.minimum(rng.choice(counts, size=n_img, p=list(spec.label_probs)), K)
    image_labels = np.zeros((n_img, K + 1), dtype=bool)
    image_labels[:, 0] = True
    for i in range(n_img):
        image_labels[i, 1 + rng.choice(K, size=nlab[i], replace=False)] = True

    proposal_image = np.repeat(np.arange(n_img), P)
    proposal_index = np.tile(np.arange(P), n_img)
    is_obj = rng.random(N) < spec.object_fraction
    truth = np.zeros(N, dtype=np.int64)
    inst = np.zeros(N, dtype=np.int64)
    for i in range(n_img):
        labs = np.nonzero(image_labels[i, 1:])[0] + 1
        sl = slice(i * P, (i + 1) * P)
        pick = rng.integers(0, labs.size, size=P)
        truth[sl] = np.where(is_obj[sl], labs[pick], 0)
        inst[sl] = i * (K + 1) + truth[sl]
    # instance offsets: one per (image, class), shared by the proposals of that object
    inst_z = rng.standard_normal((n_img * (K + 1), spec.rank)).astype(np.float32)
    basis = basis.astype(np.float32)
    features = np.empty((N, D), dtype=dtype) if features_out is None else features_out
    probs = np.empty((N, K + 1), dtype=np.float32)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        t = truth[s:e]
        n = e - s
        base = centres[t]
        ir = np.random.default_rng([spec.seed, s])
        z = spec.instance_spread * inst_z[inst[s:e]] + 0.5 * ir.standard_normal((n, spec.rank))
        var = np.empty((n, D))
        for c in np.unique(t):
            m = t == c
            var[m] = z[m] @ basis[c]
        bg = t == 0
        if bg.any():  # background: stuff clusters, a third of them mixed with part of an image object
            st = stuff[ir.integers(0, stuff.shape[0], size=int(bg.sum()))]
            img = proposal_image[s:e][bg]
            lab_any = np.array([np.nonzero(image_labels[i, 1:])[0][0] + 1 for i in img])
            part = (ir.random(int(bg.sum())) < 0.33)[:, None] * 0.5 * centres[lab_any]
            base = base.copy()
            base[bg] = st + part
        f = base + var + spec.noise * scale * ir.standard_normal((n, D)) * 1.5
        features[s:e] = np.maximum(f, 0).astype(dtype)
        # classifier: logits favour the true class, noisy; restricted later by the image labels
        logits = ir.standard_normal((n, K + 1)) * spec.classifier_noise
        logits[np.arange(n), t] += 3.0
        logits -= logits.max(axis=1, keepdims=True)
        ex = np.exp(logits)
        probs[s:e] = (ex / ex.sum(axis=1, keepdims=True)).astype(np.float32)
    names = VOC_CLASSES if K == 20 else ["background"] + [f"class{k}" for k in range(1, K + 1)]
    store = FeatureStore(features=features, probs=probs, proposal_image=proposal_image.astype(np.int32),
                         proposal_index=proposal_index.astype(np.int32), image_labels=image_labels,
                         classes=names, images=[f"{i:06d}" for i in range(n_img)])
    return store, truth
