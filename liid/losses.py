"""The MIL network's losses (LIID paper, section 4, eqs. 3-9), as pure torch functions.

Tensors in, tensors out, no hidden state: the class centres of eq. 8 are a tensor the caller keeps and
passes back in. Each function is named after its equation; grep "eq. 5" to find the LSE pooling.

Notation (paper, section 3): classes ``0 (background), 1..K``; one image with ``M`` proposals;
``p [M, K+1]`` the softmax probabilities of the MIL network (eq. 2), ``f [M, D]`` its proposal features.
The per-image loss (eq. 9) is ``alpha·L_Att + beta·L_MIL + gamma·L_Cent`` with 0.5, 0.5, 0.1.

Image labels are accepted in both forms the datasets give (``liid.datasets.base.Dataset``):
an *integer* sequence of foreground class indices (``labels()``, 1..K; a 0 in it is allowed and means
background), or a *bool/float* 0/1 vector of length K+1 (``label_vector()``). Background is always
counted as present (the paper's assumption ``0 ∈ Y_i``), whatever the vector says at index 0.

Bad shapes and values raise ``ValueError`` at the entry of each function (these are library functions;
the CLI turns errors into ``LiidError`` at its own boundary). Probabilities must lie in [0, 1]; they need
not sum to 1 (the losses are defined for any per-class probabilities, e.g. sigmoid outputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-6  # clamp for logs: log(max(x, EPS)); log(1e-6) ≈ -13.8

__all__ = [
    "EPS",
    "LossWeights",
    "attention_loss",
    "attention_pseudo_labels",
    "cam_box_scores",
    "centre_loss",
    "label_vector",
    "lse_pool",
    "mil_loss",
    "mil_total_loss",
    "multilabel_loss",
    "update_centres",
]

Labels = torch.Tensor | np.ndarray | Sequence[int]


# ----------------------------------------------------------------------------------------------- validation
def _check_probs(p: torch.Tensor, name: str = "p") -> int:
    """Validate ``p [M, K+1]`` with M >= 1, K >= 1, values in [0, 1]; return K."""
    if not isinstance(p, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if p.dim() != 2:
        raise ValueError(f"{name} must be [M, K+1] (proposals x classes incl. background), got shape {tuple(p.shape)}")
    if p.shape[0] == 0:
        raise ValueError(f"{name} has no proposals (M = 0): the loss of an image without proposals is undefined; "
                         "skip the image")
    if p.shape[1] < 2:
        raise ValueError(f"{name} must have K+1 >= 2 columns (background + at least one class), got {p.shape[1]}")
    if not p.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {p.dtype}")
    with torch.no_grad():
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or bool((p > 1).any()):
            raise ValueError(f"{name} must hold probabilities in [0, 1] (softmax outputs), "
                             f"got values in [{float(p.min())}, {float(p.max())}]")
    return p.shape[1] - 1


def label_vector(image_labels: Labels, num_classes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The image's labels as a bool vector ``[K+1]`` (``num_classes`` = K foreground classes), background True.

    Integer input = class indices (0..K, no duplicates); bool/float input = a 0/1 vector of length K+1.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes (K, foreground classes) must be >= 1, got {num_classes}")
    t = torch.as_tensor(image_labels)
    if t.dim() != 1:
        raise ValueError(f"image labels must be 1-D (class indices or a [K+1] 0/1 vector), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        t = t.to(torch.int64)  # [] is an empty list of indices, not an empty vector
    if t.dtype == torch.bool or t.is_floating_point():
        if t.shape[0] != num_classes + 1:
            raise ValueError(f"image label vector must have K+1 = {num_classes + 1} entries, got {t.shape[0]} "
                             "(pass integer class indices for a list of labels)")
        if not t.dtype == torch.bool and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"image label vector must hold 0/1 values, got {t.tolist()}")
        v = t.to(torch.bool).clone()
    else:
        idx = t.to(torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) > num_classes):
            raise ValueError(f"image label indices must lie in 0..K = 0..{num_classes}, got {idx.tolist()}")
        if idx.unique().numel() != idx.numel():
            raise ValueError(f"image label indices have duplicates: {idx.tolist()} "
                             "(for a 0/1 label vector pass a bool or float tensor)")
        v = torch.zeros(num_classes + 1, dtype=torch.bool)
        v[idx] = True
    v[0] = True
    return v.to(device) if device is not None else v


# --------------------------------------------------------------------------------------- the CAM classifier
def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss of the multi-label classifier that gives the CAMs (section 4.2.1, "K independent cross-entropies").

    Sigmoid binary cross-entropy per class, averaged over the K classes and the batch; this is exactly
    ``torch.nn.functional.multilabel_soft_margin_loss`` (and ``binary_cross_entropy_with_logits``, mean).
    ``logits`` and ``targets`` are ``[B, K]`` (foreground classes only); targets in [0, 1].
    """
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits and targets must both be [B, K], got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must be non-empty [B, K], got {tuple(logits.shape)}")
    targets = targets.to(logits.dtype)
    if bool((targets < 0).any()) or bool((targets > 1).any()):
        raise ValueError("targets must lie in [0, 1]")
    return F.multilabel_soft_margin_loss(logits, targets)


# ------------------------------------------------------------------------------------------- L_Att, eqs. 3-4
def _cell_range(lo: float, hi: float, size: int) -> tuple[int, int]:
    """CAM cells [a, b) whose centres lie in the continuous interval [lo, hi); at least the cell holding its
    middle (clamped into the map) when none does."""
    a = max(math.ceil(lo - 0.5), 0)
    b = min(math.ceil(hi - 0.5), size)
    if b <= a:
        c = min(max(math.floor((lo + hi) / 2), 0), size - 1)
        a, b = c, c + 1
    return a, b


def cam_box_scores(cams: torch.Tensor, boxes: torch.Tensor | None, mode: str = "box",
                   masks: torch.Tensor | None = None, scale: float | tuple[float, float] = 1.0,
                   background_channel: bool = False) -> torch.Tensor:
    """eq. 3's score ``R_k = mean(A^k[region]) + max(A^k[region])`` for every proposal and class -> ``[M, K]``.

    ``cams [C, H, W]`` in [0, 1]: C = K foreground maps, or K+1 with ``background_channel=True`` (channel 0
    is then dropped). Column k-1 of the result is class k.

    ``mode="box"`` (the paper's choice, Table 4): region = the proposal's box. Boxes are ``[M, 4]`` XYXY in
    image pixels with exclusive x2/y2 (the project's convention); ``scale`` is CAM cells per image pixel,
    one float or ``(sx, sy)`` (e.g. ``1/32`` for a stride-32 CAM, ``(W_cam/W_img, H_cam/H_img)`` after a
    resize; 1.0 when boxes are already in CAM pixels). A box covers the CAM cells whose centres fall inside
    it; a box smaller than a cell gets the cell under its middle, so every box covers at least one cell.
    A box entirely outside the map raises (usually a wrong ``scale``).

    ``mode="mask"`` (ablation): region = the proposal's mask pixels, ``masks [M, H, W]`` bool at the CAM's
    resolution (resize one to the other first); ``boxes`` may then be None. An empty mask raises.
    """
    if not isinstance(cams, torch.Tensor) or cams.dim() != 3:
        raise ValueError(f"cams must be a tensor [C, H, W], got "
                         f"{tuple(cams.shape) if isinstance(cams, torch.Tensor) else type(cams).__name__}")
    if background_channel:
        cams = cams[1:]
    C, H, W = cams.shape
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"cams must have at least one class and one cell, got shape {tuple(cams.shape)}")
    if not cams.is_floating_point():
        raise ValueError(f"cams must be floating point, got {cams.dtype}")
    if not bool(torch.isfinite(cams).all()) or float(cams.min()) < 0 or float(cams.max()) > 1:
        raise ValueError("cams must be normalised to [0, 1] (eq. 3: A^k ∈ [0, 1])")
    cams = cams.detach()

    if mode == "box":
        if boxes is None:
            raise ValueError("mode='box' needs boxes [M, 4]")
        boxes = torch.as_tensor(boxes)
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be [M, 4] XYXY, got shape {tuple(boxes.shape)}")
        sx, sy = (float(scale), float(scale)) if isinstance(scale, (int, float)) else map(float, scale)
        if not (sx > 0 and sy > 0):
            raise ValueError(f"scale must be positive, got {scale}")
        b = boxes.detach().to(torch.float64).cpu()
        if not bool(torch.isfinite(b).all()):
            raise ValueError("boxes must be finite")
        if bool((b[:, 2] < b[:, 0]).any()) or bool((b[:, 3] < b[:, 1]).any()):
            raise ValueError("boxes must be XYXY with x2 >= x1 and y2 >= y1")
        b = b * torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
        out = (b[:, 0] > W) | (b[:, 2] < 0) | (b[:, 1] > H) | (b[:, 3] < 0)
        if bool(out.any()):
            j = int(out.nonzero()[0])
            raise ValueError(f"box {j} {boxes[j].tolist()} lies outside the {H}x{W} CAM at scale {scale} "
                             "(scale = CAM cells per image pixel)")
        rows = []
        for x1, y1, x2, y2 in b.tolist():
            xa, xb = _cell_range(x1, x2, W)
            ya, yb = _cell_range(y1, y2, H)
            region = cams[:, ya:yb, xa:xb]
            rows.append(region.mean(dim=(1, 2)) + region.amax(dim=(1, 2)))
        if not rows:
            return cams.new_zeros((0, C))
        return torch.stack(rows)

    if mode == "mask":
        if masks is None:
            raise ValueError("mode='mask' needs masks [M, H, W]")
        masks = torch.as_tensor(masks, device=cams.device)
        if masks.dim() != 3 or masks.shape[1:] != (H, W):
            raise ValueError(f"masks must be [M, {H}, {W}] (the CAM's resolution), got shape {tuple(masks.shape)}")
        if boxes is not None and torch.as_tensor(boxes).shape[0] != masks.shape[0]:
            raise ValueError(f"{torch.as_tensor(boxes).shape[0]} boxes but {masks.shape[0]} masks")
        masks = masks.to(torch.bool)
        area = masks.flatten(1).sum(dim=1)
        if bool((area == 0).any()):
            raise ValueError(f"mask {int((area == 0).nonzero()[0])} is empty at the CAM's resolution")
        flat = cams.reshape(C, -1)
        mean = (masks.flatten(1).to(flat.dtype) @ flat.T) / area[:, None].to(flat.dtype)
        rows_any, cols_any = masks.any(dim=2), masks.any(dim=1)  # crop each mask to its bounding box first
        mx = []
        for m, ra, ca in zip(masks, rows_any.tolist(), cols_any.tolist(), strict=True):
            y0, y1 = ra.index(True), H - ra[::-1].index(True)
            x0, x1 = ca.index(True), W - ca[::-1].index(True)
            crop = cams[:, y0:y1, x0:x1].masked_fill(~m[y0:y1, x0:x1], float("-inf"))
            mx.append(crop.amax(dim=(1, 2)))
        return mean + (torch.stack(mx) if mx else mean)

    raise ValueError(f"mode must be 'box' or 'mask', got {mode!r}")


def cam_soft_iou(cams: np.ndarray, masks: np.ndarray, tau: float = 0.2) -> np.ndarray:
    """A replacement for eq. 3's ``R`` that tells a whole object from its parts and from regions around it:
    the soft IoU ``Σ_mask A / (|mask| + Σ A − Σ_mask A)`` of each proposal mask with the CAM ``A^k``, restricted
    to the connected region of ``A^k >= tau`` that holds most of the mask's CAM mass (one instance of k) -> ``[M, K]``
    in [0, 1].

    Why: eq. 3's ``mean + max`` over a box reaches 1 + mean for every box that contains a CAM peak, so a box
    around the object and its background, or around two objects, is labelled foreground as surely as the
    object itself (BENCHMARKS "Why the graph did not help": 87 % of the synthetic proposals, 19 % true). The
    soft IoU is 1 only for a mask that covers the CAM region and nothing else. ``cams [K, H, W]`` in [0, 1]
    and ``masks [M, H, W]`` bool at the same resolution; components by ``scipy.ndimage.label`` (4-connected).
    """
    from scipy import ndimage  # noqa: PLC0415

    cams = np.asarray(cams, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if cams.ndim != 3 or masks.ndim != 3 or cams.shape[1:] != masks.shape[1:]:
        raise ValueError(f"cams [K, H, W] and masks [M, H, W] must share H, W; got {cams.shape} and {masks.shape}")
    m = masks.reshape(len(masks), -1).astype(np.float64)
    area = m.sum(axis=1)
    out = np.zeros((len(masks), cams.shape[0]))
    for k, a in enumerate(cams):
        lab, n = ndimage.label(a >= tau)
        a_flat, lab_flat = a.ravel(), lab.ravel()
        if n == 0:
            continue
        onehot = np.zeros((n + 1, a_flat.size))
        onehot[lab_flat, np.arange(a_flat.size)] = a_flat  # CAM mass of each component (row 0: below tau)
        per = m @ onehot[1:].T  # [M, n] mask's CAM mass in each component
        best = per.argmax(axis=1)
        inside = per[np.arange(len(m)), best]
        total = onehot[1:].sum(axis=1)[best]
        out[:, k] = inside / np.maximum(area + total - inside, 1e-12)
    return out


def attention_pseudo_labels(R: torch.Tensor, image_labels: Labels, eta: float = 0.75) -> torch.Tensor:
    """eq. 3: each proposal's pseudo label ``ỹ [M]`` int64 in 0..K from its CAM scores ``R [M, K]``.

    Only the image's own foreground classes compete (as in the reference code; absent classes are
    ignored for both the threshold and the argmax): ``ỹ = 0`` (background) when every such ``R_k < eta``
    (strictly), else the argmax over them (ties: the lowest class index). An image with no foreground
    label gives all zeros.
    """
    if not isinstance(R, torch.Tensor) or R.dim() != 2 or R.shape[1] < 1:
        raise ValueError(f"R must be [M, K] (proposals x foreground classes), got "
                         f"{tuple(R.shape) if isinstance(R, torch.Tensor) else type(R).__name__}")
    K = R.shape[1]
    present = label_vector(image_labels, K, device=R.device)[1:]
    masked = R.detach().masked_fill(~present, float("-inf"))
    best, arg = masked.max(dim=1)
    return torch.where(best >= eta, arg + 1, torch.zeros_like(arg)).to(torch.int64)


def attention_loss(p: torch.Tensor, y_tilde: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """eq. 4: ``L_Att = -mean_j [ log p_ỹ + (1/K) Σ_{k ∈ K\\{ỹ}} log(1 - p_k) ]``.

    Reading: the class set is {0..K} (background included), so K\\{ỹ} has exactly K members and the 1/K
    makes the second term the *mean* over the other classes (background among them when ỹ ≠ 0). Logs
    are clamped at ``eps``.
    """
    K = _check_probs(p)
    y = torch.as_tensor(y_tilde, device=p.device)
    if y.shape != (p.shape[0],) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y_tilde must be an integer tensor [M] = [{p.shape[0]}], got {y.dtype} {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) > K:
        raise ValueError(f"y_tilde must lie in 0..K = 0..{K}, got values in [{int(y.min())}, {int(y.max())}]")
    y = y.to(torch.int64)
    onehot = F.one_hot(y, K + 1).to(torch.bool)
    log_pos = torch.log(p.gather(1, y[:, None]).squeeze(1).clamp_min(eps))
    log_neg = torch.log((1 - p).clamp_min(eps)).masked_fill(onehot, 0.0).sum(dim=1) / K
    return -(log_pos + log_neg).mean()


# ------------------------------------------------------------------------------------------- L_MIL, eqs. 5-6
def lse_pool(p: torch.Tensor, r: float = 5.0) -> torch.Tensor:
    """eq. 5: ``Z_k = (1/r) log( (1/M) Σ_j exp(r p_k^j) )`` over the M proposals -> ``[K+1]``.

    A smooth max: r -> ∞ gives max_j, r -> 0 gives mean_j; Z lies between the two. Computed as
    ``m + log1p(mean_j expm1(r (p_j - m))) / r`` with ``m = max_j p_j`` — algebraically
    ``(logsumexp(r p) - log M) / r``, but accurate at small r too (no cancellation against log M).
    """
    if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[0] == 0:
        raise ValueError(f"p must be [M, K+1] with M >= 1, got "
                         f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")
    if not r > 0 or not math.isfinite(r):
        raise ValueError(f"r must be a positive finite number, got {r}")
    m = p.amax(dim=0)
    return m + torch.log1p(torch.expm1(r * (p - m)).mean(dim=0)) / r


def mil_loss(p: torch.Tensor, image_labels: Labels, r: float = 5.0, eps: float = EPS) -> torch.Tensor:
    """eq. 6: ``L_MIL = -(1/|Y|) Σ_{k∈Y} log Z_k - (1/|Ȳ|) Σ_{k∉Y} log(1 - Z_k)`` with Z from eq. 5.

    Y includes background (index 0 is always present); the Ȳ term is 0 when the image has every class.
    Logs clamped at ``eps``. ``image_labels``: indices or a [K+1] 0/1 vector (see the module docstring).
    """
    K = _check_probs(p)
    y = label_vector(image_labels, K, device=p.device)
    Z = lse_pool(p, r)
    loss = -torch.log(Z[y].clamp_min(eps)).mean()
    if bool((~y).any()):
        loss = loss - torch.log((1 - Z[~y]).clamp_min(eps)).mean()
    return loss


# ------------------------------------------------------------------------------------------ L_Cent, eqs. 7-8
def _check_centres(f: torch.Tensor, p: torch.Tensor, centres: torch.Tensor) -> int:
    K = _check_probs(p)
    if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] != p.shape[0]:
        raise ValueError(f"f must be [M, D] with M = {p.shape[0]} (one feature per row of p), got "
                         f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
    if not isinstance(centres, torch.Tensor) or centres.shape != (K + 1, f.shape[1]):
        raise ValueError(f"centres must be [K+1, D] = [{K + 1}, {f.shape[1]}], got "
                         f"{tuple(centres.shape) if isinstance(centres, torch.Tensor) else type(centres).__name__}")
    return K


def centre_loss(f: torch.Tensor, p: torch.Tensor, centres: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """eq. 7: ``L_Cent = mean_j (1 - cos(f_j, c_ŷj))`` with ``ŷ_j = argmax_k p_k^j`` (ties: lowest index).

    ``f [M, D]``, ``p [M, K+1]``, ``centres [K+1, D]``. The centres are constants here (detached; eq. 8
    moves them, never the gradient). An uninitialised centre (an all-zero row) has cosine 0 with every
    feature: such proposals add a constant 1 with no gradient. Call it before ``update_centres`` in a step.
    """
    _check_centres(f, p, centres)
    y_hat = p.detach().argmax(dim=1)
    c = centres.detach().to(device=f.device, dtype=f.dtype)[y_hat]
    return (1 - F.cosine_similarity(f, c, dim=1, eps=eps)).mean()


@torch.no_grad()
def update_centres(centres: torch.Tensor, f: torch.Tensor, p: torch.Tensor, theta: float = 0.01) -> torch.Tensor:
    """eq. 8: ``c_ŷj ← c_ŷj + θ (f_j - c_ŷj)`` for j = 1..M in proposal order; returns new centres.

    Batched, but exactly the sequential rule: a class k hit by proposals j_1 < ... < j_n in this image gets
    ``c_k' = (1-θ)^n c_k + Σ_i θ (1-θ)^(n-i) f_{j_i}``. Classes with no proposal keep their centre.
    Uninitialised centre = an all-zero row: the first feature assigned to it *becomes* the centre (c ← f),
    the later ones update it by the rule, i.e. ``c_k' = (1-θ)^(n-1) f_{j_1} + Σ_{i≥2} θ (1-θ)^(n-i) f_{j_i}``.
    Never by gradient; the input tensor is not modified.
    """
    _check_centres(f, p, centres)
    if not 0 <= theta <= 1:
        raise ValueError(f"theta must lie in [0, 1], got {theta}")
    n_cls = centres.shape[0]
    f = f.detach().to(device=centres.device, dtype=centres.dtype)
    y_hat = p.detach().argmax(dim=1).to(centres.device)
    onehot = F.one_hot(y_hat, n_cls).to(centres.dtype)  # [M, K+1]
    n = onehot.sum(dim=0)  # proposals per class
    rank = onehot.cumsum(dim=0).gather(1, y_hat[:, None]).squeeze(1)  # 1-based position within its class
    keep = 1.0 - theta
    uninit = (centres == 0).all(dim=1)
    base = torch.pow(torch.full_like(rank, keep), n[y_hat] - rank)  # (1-θ)^(n-i)
    first_of_uninit = uninit[y_hat] & (rank == 1)  # c ← f: weight 1 instead of θ, then decayed as usual
    w = torch.where(first_of_uninit, base, theta * base)
    decay = torch.where(uninit & (n > 0), torch.zeros_like(n), torch.pow(torch.full_like(n, keep), n))
    return decay[:, None] * centres + torch.zeros_like(centres).index_add_(0, y_hat, w[:, None] * f)


# ---------------------------------------------------------------------------------------------- total, eq. 9
@dataclass(frozen=True)
class LossWeights:
    """eq. 9's weights: ``L = alpha·L_Att + beta·L_MIL + gamma·L_Cent``. A 0 switches that part off."""

    alpha: float = 0.5
    beta: float = 0.5
    gamma: float = 0.1

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"loss weight {name} must be a finite number >= 0, got {v!r}")
        if self.alpha == self.beta == self.gamma == 0:
            raise ValueError("all loss weights are 0: nothing to train")


def mil_total_loss(p: torch.Tensor, image_labels: Labels, *, y_tilde: torch.Tensor | None = None,
                   f: torch.Tensor | None = None, centres: torch.Tensor | None = None,
                   weights: LossWeights = LossWeights(), r: float = 5.0,
                   eps: float = EPS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """eq. 9 for one image: ``(total, parts)`` with ``total = α·L_Att + β·L_MIL + γ·L_Cent``.

    ``parts`` holds the *unweighted* losses under "att", "mil", "cent", only for the parts whose weight is
    non-zero (a zero-weight part is not computed, so its inputs may be None: no CAMs when α = 0, no
    features or centres when γ = 0). ``y_tilde`` (needed when α > 0) comes from
    ``attention_pseudo_labels(cam_box_scores(cams, boxes), labels)``; the CAM classifier is frozen, so it
    can be computed once per image. Update the centres afterwards with ``update_centres`` (eq. 8).
    """
    _check_probs(p)
    parts: dict[str, torch.Tensor] = {}
    total = p.new_zeros(())
    if weights.alpha:
        if y_tilde is None:
            raise ValueError("alpha > 0 needs y_tilde (the CAM pseudo labels of eq. 3); set alpha=0 to train "
                             "without CAMs")
        parts["att"] = attention_loss(p, y_tilde, eps)
        total = total + weights.alpha * parts["att"]
    if weights.beta:
        parts["mil"] = mil_loss(p, image_labels, r, eps)
        total = total + weights.beta * parts["mil"]
    if weights.gamma:
        if f is None or centres is None:
            raise ValueError("gamma > 0 needs the features f [M, D] and the centres [K+1, D]; set gamma=0 "
                             "to train without the centre loss")
        parts["cent"] = centre_loss(f, p, centres)
        total = total + weights.gamma * parts["cent"]
    return total, parts
