"""``vit-sm``: class activation maps of a multi-class-token ViT refined by semantic modulation (paper 002).

Paper 002 (Li, Su, Cui, Liu, "Semantic-modulation-based weakly supervised semantic segmentation", Journal of
Software 2025) on top of MCTformer-V2: ``C`` class tokens + ``N`` patch tokens, trained with
``L_cls + L_pat`` (eqs. 7-11, ``liid.training.train_vit``). Its CAM for one image:

1. ``Ā`` = the attention, averaged over heads (eq. 2); ``Ā_c2p = Ā[:C, C:]`` class-to-patch, ``Ā_p2p = Ā[C:, C:]``
   patch-to-patch (``split_attention``);
2. semantic modulation: for class c and patch i, ``r(c, i)`` = the mean of ``Ā_c2p(c, j)`` over the patches j
   that are the top 30 % of row ``Ā_p2p(i, ·)`` (eq. 3, ``related_patch_score``); ``Ā_c2p += α·r``, α = 1.2
   (eq. 4, ``modulate``);
3. ``Final-CAM = (Original-CAM ∘ Ā_c2p) · Ā_p2p`` (eqs. 5-6, ``final_cam``); then ReLU, bilinear upsampling and
   per-class max normalisation (``cams_to_image``).

Choices where the paper is silent, taken from MCTformer's released code (``engine.py``, ``run.sh``), which
the paper builds on: ``Ā_c2p`` is averaged over the last 3 blocks (``C2P_LAYERS``, MCTformer's
``--layer-index 3``; all blocks of a shallower network) and ``Ā_p2p`` over all blocks (``P2P_LAYERS = None``;
MCTformer sums all 12); the Original-CAM is only ReLU'd (no normalisation) before the product; eq. 6's matrix
product propagates along the rows of ``Ā_p2p``: ``Final(c, i) = Σ_j Ā_p2p(i, j) · Modulated(c, j)``
(MCTformer's ``matmul(patch_attn, cams)``), patch i gathering from the patches it attends to — the same
reading of a row as eq. 3's "patches related to i". Sums and means over layers differ by a constant factor
only, which the final per-class max normalisation removes. eq. 2 prints ``QKᵀ/√d`` without the softmax; the
attention used is the softmax one every ViT (and MCTformer) computes.

Arrays: ``a_c2p [C, N]``, ``a_p2p [N, N]``, CAMs ``[C, N]`` with patches in row-major grid order. The math is
numpy (float64 inside), so every step is checkable on hand-made matrices; ``vit_sm_cams`` runs the network.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from liid.errors import LiidError
from liid.models.vit import MultiClassTokenViT
from liid.training.data import to_input

TOP = 0.3  # eq. 3: the fraction of patches that are "semantically related" to a patch (paper's ablation, Fig. 5)
ALPHA = 1.2  # eq. 4: the modulation coefficient (paper's Table 3)
C2P_LAYERS = 3  # Ā_c2p: mean over the last 3 blocks (MCTformer's --layer-index 3)
P2P_LAYERS: int | None = None  # Ā_p2p: mean over all blocks (MCTformer sums all 12)


def _matrix(a: object, name: str, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    """``a`` as a finite float64 2-D array with the given row/column counts, else a LiidError naming it."""
    x = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    if x.ndim != 2 or (rows is not None and x.shape[0] != rows) or (cols is not None and x.shape[1] != cols):
        want = f"[{rows if rows is not None else '?'}, {cols if cols is not None else '?'}]"
        raise LiidError(f"{name}: expected a matrix {want}, got shape {x.shape}")
    if x.size == 0 or not np.isfinite(x).all():
        raise LiidError(f"{name}: must be non-empty and finite")
    return x


def split_attention(attn: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """eq. 2's blocks of a head-averaged attention ``Ā [T, T]``, T = C + N: ``(Ā_c2p [C, N], Ā_p2p [N, N])``.

    ``Ā_c2p = Ā[:C, C:]`` (class token c attending to patch j), ``Ā_p2p = Ā[C:, C:]`` (patch i attending to j).
    """
    a = _matrix(attn, "attention")
    T = a.shape[0]
    if a.shape[1] != T or not 1 <= num_classes < T:
        raise LiidError(f"attention: expected a square [C+N, C+N] matrix with C = {num_classes} class tokens and "
                        f"N >= 1 patches, got shape {a.shape}")
    return a[:num_classes, num_classes:], a[num_classes:, num_classes:]


def related_count(n: int, top: float = TOP) -> int:
    """How many patches are "related" to each patch: ``top·n`` rounded half up, at least 1 (59 of 196)."""
    return max(1, int(np.floor(top * n + 0.5)))


def related_patch_score(a_c2p: np.ndarray, a_p2p: np.ndarray, top: float = TOP) -> np.ndarray:
    """eq. 3: ``r(c, i) = (1/S) Σ_{j ∈ U_i} Ā_c2p(c, j)`` -> ``[C, N]``.

    ``U_i``: the ``S = related_count(N, top)`` patches with the largest ``Ā_p2p(i, j)`` over all j (i itself
    included when it ranks; ties go to the lower index, so the result is deterministic).
    """
    if not 0 < top <= 1:
        raise LiidError(f"top: the related fraction must lie in (0, 1], got {top}")
    p2p = _matrix(a_p2p, "a_p2p")
    N = p2p.shape[0]
    c2p = _matrix(a_c2p, "a_c2p", cols=N)
    if p2p.shape[1] != N:
        raise LiidError(f"a_p2p: expected a square [N, N] matrix, got shape {p2p.shape}")
    S = related_count(N, top)
    related = np.argsort(-p2p, axis=1, kind="stable")[:, :S]  # U_i, row i
    select = np.zeros((N, N))
    np.put_along_axis(select, related, 1.0 / S, axis=1)  # select[i, j] = 1/S for j ∈ U_i
    return c2p @ select.T


def modulate(a_c2p: np.ndarray, r: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """eq. 4: ``Ā_c2p(c, i) + α·r(c, i)`` -> ``[C, N]`` (a new array)."""
    c2p = _matrix(a_c2p, "a_c2p")
    rr = _matrix(r, "r", rows=c2p.shape[0], cols=c2p.shape[1])
    return c2p + float(alpha) * rr


def final_cam(original_cam: np.ndarray, a_c2p_mod: np.ndarray, a_p2p: np.ndarray) -> np.ndarray:
    """eqs. 5-6: ``Final(c, i) = Σ_j Ā_p2p(i, j) · ReLU(Original-CAM)(c, j) · Ā_c2p(c, j)`` -> ``[C, N]``.

    eq. 5 is the Hadamard product ``Modulated-CAM = Original-CAM ∘ Ā_c2p``; eq. 6 multiplies it by ``Ā_p2p``,
    here ``Modulated · Ā_p2pᵀ`` (each patch gathers along its own attention row, as MCTformer's
    ``matmul(patch_attn, cams)``). The Original-CAM is ReLU'd first, as MCTformer does: negative evidence
    would otherwise flip sign under the product.
    """
    cam = _matrix(original_cam, "original_cam")
    C, N = cam.shape
    mod = _matrix(a_c2p_mod, "a_c2p", rows=C, cols=N)
    p2p = _matrix(a_p2p, "a_p2p", rows=N, cols=N)
    return (np.maximum(cam, 0.0) * mod) @ p2p.T


def cams_to_image(cam: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Patch CAMs ``[C, N]`` on ``grid (h, w)`` -> float32 ``[C, H, W]`` in [0, 1] at ``size (H, W)``.

    ReLU, bilinear upsampling (``align_corners=False``, as ``MultiLabelClassifier.cams``), then division by
    each class's maximum, so a map with any positive response peaks at exactly 1; an all-zero map stays 0.
    """
    h, w = (int(v) for v in grid)
    H, W = (int(v) for v in size)
    if h < 1 or w < 1 or H < 1 or W < 1:
        raise LiidError(f"grid {grid} and size {size}: both must be positive")
    x = _matrix(cam, "cam", cols=h * w)
    t = torch.from_numpy(np.maximum(x, 0.0)).reshape(1, x.shape[0], h, w)
    t = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)[0]
    peak = t.amax(dim=(1, 2), keepdim=True)
    out = torch.where(peak > 0, t / peak.clamp_min(1e-300), torch.zeros_like(t))
    return out.clamp_(0, 1).numpy().astype(np.float32)


def _layer_mean(attn: torch.Tensor, layers: int | None, what: str) -> np.ndarray:
    """Mean over the last ``layers`` of ``attn [L, T, T]`` (all when None or when the network has fewer)."""
    L = attn.shape[0]
    n = L if layers is None else min(int(layers), L)
    if n < 1:
        raise LiidError(f"{what}: {layers} layers asked; at least 1")
    return attn[L - n:].mean(dim=0).double().cpu().numpy()


@torch.no_grad()
def vit_sm_cams(model: MultiClassTokenViT, image: np.ndarray, size: int, top: float = TOP, alpha: float = ALPHA,
                c2p_layers: int = C2P_LAYERS, p2p_layers: int | None = P2P_LAYERS) -> np.ndarray:
    """Final-CAMs of one image: float32 ``[K, H, W]`` in [0, 1] at the image's own H×W, row k = class k+1.

    ``image`` uint8 RGB ``[H, W, 3]``, resized to ``size``×``size`` as in training (``to_input``); ``size`` a
    multiple of the patch size. The model runs in eval mode without gradients (its mode is restored). Every
    class gets a map; keep the image's labels only (as ``liid.labelers.cam`` does) where labels are known.
    """
    im = np.asarray(image)
    if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
        raise LiidError(f"image: expected uint8 RGB [H, W, 3], got {im.dtype} {im.shape}")
    if size < model.patch_size or size % model.patch_size:
        raise LiidError(f"size {size}: must be a multiple of the ViT's patch size {model.patch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = model(to_input(im, size)[None].to(device), n_layers=model.depth)
    finally:
        model.train(was_training)
    C = model.num_classes
    a_c2p, _ = split_attention(_layer_mean(out.attn[:, 0], c2p_layers, "c2p_layers"), C)
    _, a_p2p = split_attention(_layer_mean(out.attn[:, 0], p2p_layers, "p2p_layers"), C)
    grid = tuple(out.cams.shape[2:])
    original = out.cams[0].reshape(C, -1).double().cpu().numpy()
    modulated = modulate(a_c2p, related_patch_score(a_c2p, a_p2p, top), alpha)
    return cams_to_image(final_cam(original, modulated, a_p2p), grid, im.shape[:2])
