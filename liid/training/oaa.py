"""OAA and OAA+ (paper 003) inside classifier training: the cumulative attention maps kept per training image,
and the hybrid loss that trains the integral attention model on them.

OAA (section 3.2): each time a training image goes through the classifier, the attention map of each of its
classes, ``A = ReLU(F) / max(F)`` (eq. 2, at the classifier's stride-32 resolution, un-flipped), is fused into
the image's cumulative map ``M_t = AF(M_{t-1}, A_t)`` (eqs. 3-5) when the class's score beats every absent
class (``liid.training.accumulate.accumulate``). ``OaaMaps`` keeps those maps for the image's own classes only, and
is saved next to the checkpoint after every epoch (``oaa.npz``), so a resumed run goes on with the same maps.

OAA+ (section 3.3): the same classifier architecture, trained without the global pooling on the cumulative
maps as soft pixel labels with the hybrid loss (eqs. 7-9, ``hybrid_loss``); its class maps are the improved
attention maps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from liid.atomic import atomic_file
from liid.errors import LiidError
from liid.training.accumulate import FUSIONS, accumulate

MAPS = "oaa.npz"
FORMAT = "liid-oaa-maps"


def attention_from_scores(raw_cams: torch.Tensor) -> torch.Tensor:
    """Eq. 2, ``A^c = ReLU(F^c) / max(F^c)`` per image and class, [B, K, h, w] → same shape in [0, 1]; a map
    with no positive value stays 0. Detached (the maps are records, not part of the loss)."""
    cam = F.relu(raw_cams.detach().float())
    peak = cam.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


@dataclass
class OaaMaps:
    """The cumulative attention maps of a training set: per image, float32 [P, h, w] for its ``P`` classes.

    ``present[i]``: the sorted 1-based classes of image ``ids[i]``; ``counts[i]`` int [P]: how many epochs'
    maps each has fused (0: the class never won; its map is all zero); ``epochs``: the epochs accumulated.
    """

    ids: list[str]
    num_classes: int
    fusion: str
    present: list[np.ndarray]
    maps: list[np.ndarray]
    counts: list[np.ndarray]
    epochs: int = 0

    @classmethod
    def empty(cls, ids: Sequence[str], present: Sequence[Sequence[int]], num_classes: int, shape: tuple[int, int],
              fusion: str = "max") -> OaaMaps:
        if fusion not in FUSIONS:
            raise LiidError(f"OAA fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
        pres = [np.unique(np.asarray(p, dtype=np.int64).reshape(-1)) for p in present]
        return cls(list(ids), int(num_classes), fusion, pres,
                   [np.zeros((len(p), *shape), dtype=np.float32) for p in pres],
                   [np.zeros(len(p), dtype=np.int64) for p in pres])

    def dense(self, index: int) -> np.ndarray:
        """float32 [K, h, w]: image ``index``'s maps with zeros for the classes it does not have."""
        m = self.maps[index]
        out = np.zeros((self.num_classes, *m.shape[1:]), dtype=np.float32)
        out[self.present[index] - 1] = m
        return out

    def update(self, index: int, scores: np.ndarray, attention: np.ndarray) -> None:
        """Fuse one pass's attention maps ``attention`` float [K, h, w] of image ``index`` (scores [K]: its
        logits in that pass) by the OAA rule; only the image's classes that win change."""
        p = self.present[index]
        full_counts = np.zeros(self.num_classes, dtype=np.int64)
        full_counts[p - 1] = self.counts[index]
        cum, n = accumulate(self.dense(index), attention, scores, p, self.fusion, full_counts)
        self.maps[index] = cum[p - 1]
        self.counts[index] = n[p - 1]

    def save(self, path: str | os.PathLike) -> None:
        """One ``.npz`` (written to a temporary name, then renamed): the maps of all images stacked."""
        rows = np.array([(i, c) for i, p in enumerate(self.present) for c in p], dtype=np.int64).reshape(-1, 2)
        shape = self.maps[0].shape[1:] if self.maps else (0, 0)
        stacked = np.concatenate(self.maps) if rows.size else np.zeros((0, *shape), np.float32)
        with atomic_file(Path(path), overwrite=True, mode="wb") as f:
            np.savez(f, format=np.array(FORMAT), ids=np.array(self.ids), num_classes=np.int64(self.num_classes),
                     fusion=np.array(self.fusion), rows=rows, maps=stacked.astype(np.float32),
                     counts=np.concatenate(self.counts) if rows.size else np.zeros(0, np.int64),
                     epochs=np.int64(self.epochs))

    @classmethod
    def load(cls, path: str | os.PathLike) -> OaaMaps:
        path = Path(path)
        if not path.is_file():
            raise LiidError(f"{path}: no OAA maps (train the classifier with `liid train-cls --oaa max`)")
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != FORMAT:
                    raise LiidError(f"{path}: not an OAA maps file (format {str(z['format'])!r})")
                ids = [str(s) for s in z["ids"]]
                rows, maps, counts = z["rows"], z["maps"], z["counts"]
                num_classes, fusion, epochs = int(z["num_classes"]), str(z["fusion"]), int(z["epochs"])
        except (OSError, ValueError, KeyError) as e:
            raise LiidError(f"{path}: unreadable OAA maps file ({e})") from None
        present, per_maps, per_counts = [], [], []
        for i in range(len(ids)):
            sel = rows[:, 0] == i
            present.append(rows[sel, 1].astype(np.int64))
            per_maps.append(maps[sel].astype(np.float32))
            per_counts.append(counts[sel].astype(np.int64))
        return cls(ids, num_classes, fusion, present, per_maps, per_counts, epochs)


def hybrid_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """OAA+'s hybrid loss, eqs. 7-9: ``Σ_c (L_+^c + L_-^c)``, averaged over the batch.

    ``scores`` [B, K, h, w]: the class-aware layer's score maps ``F̂`` (``q = σ(F̂)``); ``targets`` [B, K, h, w]:
    the normalised cumulative maps ``p`` in [0, 1] (zero for a class the image does not have). Per image and
    class, ``N_+`` are the pixels with ``p > 0`` and ``N_-`` those with ``p = 0``:

    * eq. 7, ``L_+ = −1/|N_+| Σ_{N_+} p·log q`` (the cross-entropy of eq. 6 without its background term, so
      low attention values are raised, never pushed down);
    * eq. 8, ``L_- = −1/|N_-| Σ_{N_-} log(1 − q)`` (keeps the maps from spreading into the background).
      The translation prints a factor ``p_j`` in eq. 8, which is 0 on ``N_-`` by definition and would make the
      term vanish; the original (ICCV'19) has none, and neither do we.

    An empty ``N_+`` or ``N_-`` contributes 0. ``log σ`` is computed as ``logsigmoid`` for stability.
    """
    if scores.shape != targets.shape or scores.dim() != 4:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)}: expected equal [B,K,h,w]")
    p = targets.to(scores.dtype)
    pos = p > 0
    neg = ~pos
    lp = -(p * F.logsigmoid(scores) * pos).sum(dim=(2, 3)) / pos.sum(dim=(2, 3)).clamp_min(1)
    ln = -(F.logsigmoid(-scores) * neg).sum(dim=(2, 3)) / neg.sum(dim=(2, 3)).clamp_min(1)
    return (lp + ln).sum(dim=1).mean()


def normalised_targets(maps: OaaMaps, indices: Sequence[int], flipped: Sequence[bool],
                       size: tuple[int, int]) -> torch.Tensor:
    """float32 [B, K, *size]: the cumulative maps of the batch's images, each class divided by its maximum
    (the paper's "normalised" p), flipped like the batch's inputs, resized bilinearly to the score maps' size."""
    out = []
    for i, fl in zip(indices, flipped, strict=True):
        m = torch.from_numpy(maps.dense(int(i)))
        peak = m.amax(dim=(1, 2), keepdim=True)
        m = torch.where(peak > 0, m / peak.clamp_min(1e-12), torch.zeros_like(m))
        if fl:
            m = m.flip(-1)
        out.append(m)
    t = torch.stack(out)
    if tuple(t.shape[2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return t
