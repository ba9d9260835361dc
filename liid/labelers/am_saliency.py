"""``am-saliency`` (paper 000, Li et al., Journal of Software 2020): attention maps + successive-erasing saliency.

Per image with labels Z (the present classes):

1. **Attention maps** (section 2.2, eqs. 3-5): the spatial class score H_c of the classifier (its CAM before
   pooling), thresholded at ``THRESHOLD_SCORE``, is differentiated with respect to intermediate feature
   maps L_n (eq. 3); per layer the map is max_k |upsampled derivative| over channels, normalised; the other
   present classes are subtracted (eq. 4); the layers are combined by a mean of tanh (eq. 5).
2. **Saliency by successive erasing** (section 2.3, Algorithm 1): run a class-agnostic detector, paint the
   pixels with saliency >= ``ERASE`` in the mean colour, run it again, ...; the map is the element-wise max.
3. **Fusion** (section 2.4, Algorithm 2): per present class the mean of its attention and the saliency; the
   best class wins, background where the best fused score is below ``BACKGROUND``.
4. **Dense CRF** (section 3.3, eq. 10): the fused labels become probabilities (λ for the label, the rest
   shared by the other candidate classes) and are refined by ``detection.crf.dense_crf`` (eqs. 6-8).

Maps are float [K, H, W] with row ``k`` for class ``k + 1``; class maps are int64 [H, W], 0 = background.
Everything but ``attention_maps`` (torch autograd) is pure numpy, so the rules are testable on hand-made arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from liid.errors import LiidError

THRESHOLD_SCORE = 0.8  # section 2.2: H_c^{i,j} > 0.8 → 1, else 0
ERASE = 0.7  # section 3.1: pixels with saliency >= 0.7 are erased (Algorithm 1's threshold_t)
ROUNDS = 3  # Algorithm 1: t ∈ {1, 2, 3}; Table 2 reports S1..S3 (S2 and S3 best)
BACKGROUND = 0.2  # Algorithm 2: T_c0 = 0.2
CRF_LAMBDA = 0.98  # eq. 10: λ ∈ (0.5, 1); the best of {0.7, 0.8, 0.9, 0.98} in Table 3
# the feature layers L of eq. 5 (the paper's VGG layers are not named): None = the trunk's stride-16 and
# stride-32 stages (``Trunk.late_stages``: layer3, layer4 of a ResNet; the matching blocks of a Lite)
LAYERS: tuple[str, ...] | None = None
_CHUNK = 64  # channels upsampled at once in the per-layer max (bounds memory at image resolution)

Detector = Callable[[np.ndarray], np.ndarray]


def _present(present: Sequence[int] | np.ndarray, k: int | None) -> np.ndarray:
    """present classes as sorted unique int64, validated to lie in 1..k (k None: any class >= 1)."""
    present = np.unique(np.asarray(present, dtype=np.int64).reshape(-1))
    if len(present) and (present[0] < 1 or (k is not None and present[-1] > k)):
        raise LiidError(f"present classes {present.tolist()}: expected indices in 1..{'K' if k is None else k}")
    return present


def _image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise LiidError(f"image: expected uint8 RGB [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image


# ---------------------------------------------------------------------------------------- attention maps


def score_mask(scores: np.ndarray, threshold: float = THRESHOLD_SCORE) -> np.ndarray:
    """The thresholded spatial class score of section 2.2: float32 [h, w], 1 where H_c > ``threshold``, else 0.

    The paper thresholds H_c at 0.8 without saying on what scale; raw scores have none, so H_c is first
    min-max normalised over the map (the top 20% of its range pass, always at least the peak). A flat map
    has no peak: all 0.
    """
    s = np.asarray(scores, dtype=np.float32)
    lo, hi = float(s.min()), float(s.max())
    if not hi > lo:
        return np.zeros(s.shape, dtype=np.float32)
    return ((s - lo) / (hi - lo) > threshold).astype(np.float32)


def combine_attention(per_layer: np.ndarray) -> np.ndarray:
    """Eqs. 4 and 5 on the normalised per-layer maps of the present classes, float [L, P, H, W] → float32 [P, H, W].

    Eq. 4, per layer n: A_c^n = max(A_c^n − Σ_{c' ∈ Z, c' ≠ c} A_{c'}^n, 0), all classes from the same
    (unsubtracted) maps. Eq. 5: A_c = (1/|L|) Σ_n tanh(A_c^n). With inputs in [0, 1] the result lies in
    [0, tanh 1 ≈ 0.76]; it is not rescaled afterwards (the paper does not).
    """
    a = np.asarray(per_layer, dtype=np.float32)
    if a.ndim != 4:
        raise LiidError(f"per-layer attention: expected [L, P, H, W], got shape {a.shape}")
    if a.shape[0] == 0:
        raise LiidError("per-layer attention: no layers")
    others = a.sum(axis=1, keepdims=True) - a
    return np.tanh(np.maximum(a - others, 0.0)).mean(axis=0).astype(np.float32)


def _layer_map(grad, size: tuple[int, int]) -> np.ndarray:
    """Section 2.2 per layer: V_c^n [C, h, w] bilinearly upsampled to ``size`` (W_c^n), then max over channels of
    |W_c^n|, divided by its maximum (an all-zero derivative stays 0). Upsampled in channel chunks: the same
    numbers as all at once, without a [C, H, W] volume at image resolution."""
    import torch
    import torch.nn.functional as F

    out = None
    for start in range(0, grad.shape[0], _CHUNK):
        up = F.interpolate(grad[None, start:start + _CHUNK], size=size, mode="bilinear", align_corners=False)
        m = up[0].abs().amax(dim=0)
        out = m if out is None else torch.maximum(out, m)
    a = out.detach().cpu().numpy().astype(np.float32)
    peak = float(a.max())
    return a / peak if peak > 0 else np.zeros_like(a)


def attention_maps(model, x, present: Sequence[int] | np.ndarray, layers: Sequence[str] | None = LAYERS,
                   size: tuple[int, int] | None = None, threshold: float = THRESHOLD_SCORE) -> np.ndarray:
    """Class attention maps of one image (section 2.2, eqs. 3-5): float32 [K, H, W] in [0, 1], zero for absent classes.

    ``model`` is a ``MultiLabelClassifier``; ``x`` its input, [3, S, S] or [1, 3, S, S] (``to_input``);
    ``layers`` names submodules of ``model.backbone`` (ResNet stages ``layer1``..``layer4``) whose outputs
    are the feature maps L_n (None: ``model.backbone.late_stages()``); ``size`` is (H, W) of the output
    (default: the input's size).

    For each present class c: H_c = ``model.raw_cams(x)[0, c-1]``; eq. 3's derivative of the thresholded
    H_c is computed as the gradient of Σ_ij mask_ij · H_c^ij (``score_mask``): the binary map is the seed
    of back-propagation, the Caffe reading of "the derivative of the thresholded score" (a step function
    itself has zero derivative). Then per layer: upsample, |·| max over channels, normalise (``_layer_map``);
    eq. 4 subtraction and eq. 5 tanh average (``combine_attention``). Runs in eval mode (BatchNorm with its
    running statistics), restoring the model's mode afterwards.
    """
    import torch

    k = int(model.num_classes)
    present = _present(present, k)
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise LiidError(f"attention maps: expected one image [3, S, S] or [1, 3, S, S], got {list(x.shape)}")
    size = tuple(int(v) for v in (size if size is not None else x.shape[2:]))
    modules = dict(model.backbone.named_modules())
    if layers is None:
        layers = model.backbone.late_stages()
    missing = [name for name in layers if not name or name not in modules]
    if missing or not layers:
        raise LiidError(f"attention layers {list(layers)}: {missing or 'none given'} not in the backbone "
                        f"(e.g. {', '.join(model.backbone.late_stages())})")
    out = np.zeros((k, *size), dtype=np.float32)
    if len(present) == 0:
        return out
    feats: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(lambda m, i, o, name=name: feats.__setitem__(name, o))
             for name in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            device = next(model.parameters()).device
            # the input requires grad so every feature map is in the graph, even with frozen parameters
            inp = x.to(device=device, dtype=torch.float32).detach().requires_grad_(True)
            scores = model.raw_cams(inp)[0]
            per_layer = np.zeros((len(layers), len(present), *size), dtype=np.float32)
            for j, c in enumerate(present):
                h_c = scores[c - 1]
                mask = torch.from_numpy(score_mask(h_c.detach().cpu().numpy(), threshold)).to(device)
                if not bool(mask.any()):
                    continue
                grads = torch.autograd.grad((h_c * mask).sum(), [feats[name] for name in layers],
                                            retain_graph=True, allow_unused=True)
                for n, g in enumerate(grads):
                    if g is not None:
                        per_layer[n, j] = _layer_map(g[0], size)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    out[present - 1] = combine_attention(per_layer)
    return out


# ----------------------------------------------------------------------------------------------- saliency


def erase(image: np.ndarray, saliency: np.ndarray, threshold: float = ERASE,
          mean: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Algorithm 1, line 10: a copy of ``image`` (uint8 RGB [H, W, 3]) whose pixels with ``saliency >= threshold``
    take the colour ``mean``, by default the mean colour of the whole ``image`` (erased pixels included),
    rounded. The paper passes "RGBmean" in as a fixed input without saying over what it is taken."""
    image = _image(image)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != image.shape[:2]:
        raise LiidError(f"saliency {list(saliency.shape)} does not match image {list(image.shape[:2])}")
    colour = image.reshape(-1, 3).mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64).reshape(3)
    out = image.copy()
    out[saliency >= threshold] = np.clip(np.round(colour), 0, 255).astype(np.uint8)
    return out


def successive_erasing(image: np.ndarray, detector: Detector, rounds: int = ROUNDS,
                       threshold: float | Sequence[float] = ERASE,
                       mean: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Algorithm 1: float32 [H, W], the element-wise max of the detector's maps S_1..S_rounds, where S_t is the
    map of the image with every region erased so far (``erase`` with S_{t-1} >= threshold_{t-1}).

    ``detector``: uint8 RGB [H, W, 3] → float [H, W] in [0, 1]. ``threshold``: one value, or one per round.
    ``mean``: the erasing colour; default the mean colour of the original image, fixed for all rounds (the
    algorithm's RGBmean is one input, not recomputed on the erased images).
    """
    image = _image(image)
    if rounds < 1:
        raise LiidError(f"successive erasing: rounds must be >= 1, got {rounds}")
    thresholds = [float(threshold)] * rounds if np.isscalar(threshold) else [float(t) for t in threshold]
    if len(thresholds) != rounds:
        raise LiidError(f"successive erasing: {len(thresholds)} thresholds for {rounds} rounds")
    colour = image.reshape(-1, 3).mean(axis=0) if mean is None else mean
    current, out = image, None
    for t in range(rounds):
        s_t = np.asarray(detector(current), dtype=np.float32)
        if s_t.shape != image.shape[:2]:
            raise LiidError(f"saliency detector: round {t + 1} map is {list(s_t.shape)}, "
                            f"the image {list(image.shape[:2])}")
        out = s_t.copy() if out is None else np.maximum(out, s_t)
        if t + 1 < rounds:  # the last round's erasing would feed no detector run
            current = erase(current, s_t, thresholds[t], colour)
    return out


# ------------------------------------------------------------------------------------------- fusion, CRF


def fuse(attention: np.ndarray, saliency: np.ndarray, present: Sequence[int] | np.ndarray,
         background: float = BACKGROUND) -> np.ndarray:
    """Algorithm 2: class map int64 [H, W] from attention float [K, H, W] and saliency float [H, W].

    M_fg(p, c) = mean(A_c(p), S(p)) for c ∈ Z; M_c0(p) = 1 where max_c M_fg(p, c) < T_c0 (``background``),
    else 0; M(p) = argmax [M_c0, M_fg](p). With maps in [0, 1] that is: background exactly where the best fused
    score is below T_c0, else the best present class (a tie to the lower class index). Absent classes never
    compete; no present class: all background.
    """
    attention = np.asarray(attention, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float32)
    if attention.ndim != 3:
        raise LiidError(f"attention: expected [K, H, W], got shape {attention.shape}")
    if saliency.shape != attention.shape[1:]:
        raise LiidError(f"attention {list(attention.shape)} and saliency {list(saliency.shape)}: sizes differ")
    present = _present(present, attention.shape[0])
    m_fg = (attention[present - 1] + saliency[None]) / 2.0  # [|Z|, H, W]
    m_max = m_fg.max(axis=0) if len(present) else np.zeros(saliency.shape, np.float32)
    m_c0 = (m_max < background).astype(np.float32)
    m_all = np.concatenate([m_c0[None], m_fg], axis=0)
    return np.concatenate([[0], present])[m_all.argmax(axis=0)].astype(np.int64)


def label_probabilities(labels: np.ndarray, present: Sequence[int] | np.ndarray, lam: float = CRF_LAMBDA
                        ) -> np.ndarray:
    """Eq. 10: float32 [1 + |Z|, H, W] over (background, present classes ascending): λ for the pixel's label,
    (1 − λ)/|Z| for each other class of {c0} ∪ Z; absent classes (probability 0) get no channel at all.
    ``labels`` must hold only 0 and present classes."""
    if not 0.5 < lam < 1.0:
        raise LiidError(f"CRF lambda {lam}: eq. 10 needs 0.5 < lambda < 1")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise LiidError(f"labels: expected [H, W], got shape {labels.shape}")
    present = _present(present, None)
    candidates = np.concatenate([[0], present])
    stray = np.setdiff1d(np.unique(labels), candidates)
    if len(stray):
        raise LiidError(f"labels hold classes {stray.tolist()} outside background and the present {present.tolist()}")
    index = np.searchsorted(candidates, labels)
    if len(present) == 0:
        return np.ones((1, *labels.shape), dtype=np.float32)
    probs = np.full((len(candidates), *labels.shape), (1.0 - lam) / len(present), dtype=np.float32)
    np.put_along_axis(probs, index[None], np.float32(lam), axis=0)
    return probs


def crf_refine(image: np.ndarray, labels: np.ndarray, present: Sequence[int] | np.ndarray,
               lam: float = CRF_LAMBDA, iters: int = 10) -> np.ndarray:
    """Section 3.3: the fused labels (``fuse``) refined by the dense CRF (eqs. 6-8, the paper's w1 = w2 = 1,
    θα = 30, θβ = 10, θγ = 3) with eq. 10's probabilities as unary (``label_probabilities``): int64 [H, W]
    with values in {0} ∪ present. Eq. 10 is written on labels, not on fused scores: the paper applies it
    because Algorithm 2 outputs a label per pixel."""
    from liid.detection.crf import dense_crf

    image = _image(image)
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise LiidError(f"labels {list(labels.shape)} and image {list(image.shape[:2])}: sizes differ")
    present = _present(present, None)
    probs = label_probabilities(labels, present, lam)
    if len(present) == 0:
        return np.zeros(labels.shape, dtype=np.int64)
    q = dense_crf(image, probs, iters=iters)
    return np.concatenate([[0], present])[q.argmax(axis=0)].astype(np.int64)


def am_saliency_semantic(model, image: np.ndarray, present: Sequence[int] | np.ndarray, size: int,
                         saliency: np.ndarray, crf: bool = True, layers: Sequence[str] | None = LAYERS,
                         background: float = BACKGROUND, lam: float = CRF_LAMBDA) -> np.ndarray:
    """The whole method on one image: int64 [H, W] class map (0 = background, else a present class).

    ``image`` uint8 RGB [H, W, 3] is resized to ``size`` for ``model`` (``to_input``); the attention maps come
    back at the image's size and are fused (Algorithm 2) with ``saliency`` float [H, W] in [0, 1], computed by
    the caller (``successive_erasing(image, detector)``, so the detector stays pluggable); ``crf`` refines the
    labels with eq. 10's dense CRF.
    """
    from liid.training.data import to_input

    image = _image(image)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != image.shape[:2]:
        raise LiidError(f"saliency {list(saliency.shape)} and image {list(image.shape[:2])}: sizes differ")
    present = _present(present, int(model.num_classes))
    attention = attention_maps(model, to_input(image, size, model.norm), present, layers=layers, size=image.shape[:2])
    labels = fuse(attention, saliency, present, background)
    return crf_refine(image, labels, present, lam) if crf and len(present) else labels
