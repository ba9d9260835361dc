"""Dense CRF post-processing of a segmentation network's probabilities (paper 000, section 2.5).

The fully connected CRF of Krähenbühl & Koltun over the pixels of one image, energy (eq. 6)
``E(Y) = Σ_n φ(y_n) + Σ_{n<n'} ψ(y_n, y_n')`` with

* unary ``φ(y_n = c) = −log P(y_n = c | X)``, the network's softmax probability;
* Potts pairwise ``ψ = μ(y_n, y_n')·k(f_n, f_n')``, ``μ = [y_n ≠ y_n']`` (eq. 7), and the kernel (eq. 8)
  ``k = w1·exp(−|S_n − S_n'|²/2θα² − |T_n − T_n'|²/2θβ²) + w2·exp(−|S_n − S_n'|²/2θγ²)``,
  S the pixel position, T its RGB colour: an appearance kernel (nearby pixels of similar colour take the
  same label) and a smoothness kernel (removes isolated pixels).

The paper's values (grid search on VOC val): ``w1 = w2 = 1, θα = 30, θβ = 10, θγ = 3``; inference is
``iters`` rounds of mean field. The solver is ``pydensecrf2`` (Krähenbühl's C++ code): an optional
dependency (``pip install pydensecrf2``, or the ``crf`` extra), imported only when a CRF is run.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from liid.errors import LiidError

INSTALL_HINT = "dense CRF needs pydensecrf2, which is not installed: pip install pydensecrf2"


def require_pydensecrf() -> ModuleType:
    """The ``pydensecrf.densecrf`` module; a one-line LiidError saying how to install it when it is missing."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise LiidError(INSTALL_HINT) from None
    return dcrf


def dense_crf(image: np.ndarray, probs: np.ndarray, iters: int = 10, w1: float = 1.0, w2: float = 1.0,
              theta_alpha: float = 30.0, theta_beta: float = 10.0, theta_gamma: float = 3.0) -> np.ndarray:
    """Refine class probabilities ``probs`` float [C, H, W] of ``image`` uint8 RGB [H, W, 3] with a dense CRF.

    Returns the CRF's marginals, float32 [C, H, W] (each pixel sums to 1); ``argmax(0)`` is the labelling.
    ``w1``/``theta_alpha``/``theta_beta``: weight, position and colour scale of the appearance kernel;
    ``w2``/``theta_gamma``: weight and position scale of the smoothness kernel (pixels, colour levels).
    """
    dcrf = require_pydensecrf()
    image = np.asarray(image)
    probs = np.asarray(probs)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs must be [C, H, W] with H, W = {list(image.shape[:2])}, got {list(probs.shape)}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    c, h, w = probs.shape
    unary = -np.log(np.clip(probs.astype(np.float32), 1e-8, 1.0)).reshape(c, h * w)
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=theta_gamma, compat=w2)
    crf.addPairwiseBilateral(sxy=theta_alpha, srgb=theta_beta, rgbim=np.array(image, order="C"), compat=w1)
    q = np.asarray(crf.inference(int(iters)), dtype=np.float32)
    return q.reshape(c, h, w)
