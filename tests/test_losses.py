"""The MIL losses (liid/losses.py, LIID eqs. 3-9) against numbers worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from liid.losses import (
    LossWeights,
    attention_loss,
    attention_pseudo_labels,
    cam_box_scores,
    centre_loss,
    label_vector,
    lse_pool,
    mil_loss,
    mil_total_loss,
    multilabel_loss,
    update_centres,
)


def t(x, dtype=torch.float64, **kw) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype, **kw)


# --------------------------------------------------------------------------------------- label forms
def test_label_vector_accepts_indices_and_vectors():
    want = [True, False, True, True]
    assert label_vector([2, 3], 3).tolist() == want
    assert label_vector(np.array([0, 2, 3]), 3).tolist() == want  # 0 (background) allowed in the list
    assert label_vector(torch.tensor([3, 2]), 3).tolist() == want
    assert label_vector(np.array([1, 0, 1, 1], dtype=np.float32), 3).tolist() == want  # Dataset.label_vector
    assert label_vector(t([0.0, 0, 1, 1]), 3).tolist() == want  # background forced on
    assert label_vector([], 3).tolist() == [True, False, False, False]


@pytest.mark.parametrize("labels, match", [
    ([4], "0..K"), ([-1], "0..K"), ([1, 1], "duplicates"), (t([1.0, 0, 1]), "K\\+1"),
    (t([1.0, 0.5, 0, 0]), "0/1"), ([[1, 2]], "1-D"),
])
def test_label_vector_rejects(labels, match):
    with pytest.raises(ValueError, match=match):
        label_vector(labels, 3)


# --------------------------------------------------------------------------------------- classifier loss
def test_multilabel_loss_is_mean_sigmoid_bce():
    logits = t([[0.0, 2.0], [-1.0, 3.0]])
    targets = t([[1.0, 0.0], [0.0, 1.0]])

    def sig(x):
        return 1 / (1 + math.exp(-x))

    per = [-math.log(sig(0.0)), -math.log(1 - sig(2.0)), -math.log(1 - sig(-1.0)), -math.log(sig(3.0))]
    assert multilabel_loss(logits, targets).item() == pytest.approx(sum(per) / 4, rel=1e-12)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        multilabel_loss(logits, targets[:, :1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multilabel_loss(logits, targets * 2)


# --------------------------------------------------------------------------------------- eq. 3 scores
CAM = t([[0.0, 0.1, 0.2, 0.3],
         [0.4, 0.5, 0.6, 0.7],
         [0.8, 0.9, 1.0, 0.0],
         [0.1, 0.2, 0.3, 0.4]])


def test_box_scores_mean_plus_max_by_hand():
    cams = torch.stack([CAM, 1 - CAM])
    # cells rows 1-2, cols 1-2: 0.5 0.6 / 0.9 1.0
    R = cam_box_scores(cams, t([[1.0, 1.0, 3.0, 3.0]]))
    assert R.shape == (1, 2)
    assert R[0, 0].item() == pytest.approx((0.5 + 0.6 + 0.9 + 1.0) / 4 + 1.0)
    assert R[0, 1].item() == pytest.approx((0.5 + 0.4 + 0.1 + 0.0) / 4 + 0.5)
    # the whole map
    R = cam_box_scores(cams[:1], t([[0.0, 0.0, 4.0, 4.0]]))
    assert R.item() == pytest.approx(sum(sum(r) for r in CAM.tolist()) / 16 + 1.0)


def test_box_scores_scale_and_tiny_boxes():
    cams = CAM[None]
    # image 8x8, CAM stride 2: scale = 0.5 cells per pixel; [2, 2, 6, 6] -> cells 1..2 again
    a = cam_box_scores(cams, t([[2.0, 2.0, 6.0, 6.0]]), scale=0.5)
    b = cam_box_scores(cams, t([[1.0, 1.0, 3.0, 3.0]]))
    assert torch.equal(a, b)
    # anisotropic (sx, sy): image 16 wide, 8 high
    c = cam_box_scores(cams, t([[4.0, 2.0, 12.0, 6.0]]), scale=(0.25, 0.5))
    assert torch.equal(a, c)
    # a box inside one cell takes that cell: cell (row 2, col 1) = 0.9 -> 0.9 + 0.9
    R = cam_box_scores(cams, t([[1.2, 2.1, 1.4, 2.3], [3.5, 3.5, 3.5, 3.5]]))
    assert R[0].item() == pytest.approx(1.8)
    assert R[1].item() == pytest.approx(0.8)  # degenerate box at a cell's middle: cell (3, 3) = 0.4
    # cells count when their centre is inside: [0, 0, 1.6, 1.4] covers (0,0),(0,1) only  (centre y 1.5 > 1.4)
    R = cam_box_scores(cams, t([[0.0, 0.0, 1.6, 1.4]]))
    assert R.item() == pytest.approx((0.0 + 0.1) / 2 + 0.1)
    # a box that sticks out of the map is clipped to it
    R = cam_box_scores(cams, t([[2.0, -3.0, 9.0, 1.0]]))
    assert R.item() == pytest.approx((0.2 + 0.3) / 2 + 0.3)


def test_box_vs_mask_pooling_differ():
    cams = CAM[None]
    box = t([[1.0, 1.0, 3.0, 3.0]])
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 1, 2] = mask[0, 2, 1] = True  # an L inside the box, without the 1.0 cell
    rb = cam_box_scores(cams, box, mode="box")
    rm = cam_box_scores(cams, box, mode="mask", masks=mask)
    assert rb.item() == pytest.approx(3.0 / 4 + 1.0)
    assert rm.item() == pytest.approx((0.5 + 0.6 + 0.9) / 3 + 0.9)
    assert rb.item() != pytest.approx(rm.item())
    assert torch.equal(cam_box_scores(cams, None, mode="mask", masks=mask), rm)


def test_background_channel_dropped():
    cams = torch.stack([torch.ones(4, 4, dtype=torch.float64), CAM])
    box = t([[1.0, 1.0, 3.0, 3.0]])
    assert torch.equal(cam_box_scores(cams, box, background_channel=True), cam_box_scores(CAM[None], box))


def test_cam_box_scores_forty_boxes_shape():
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(20, 14, 14, generator=g)
    xy = torch.rand(40, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 1 + torch.rand(40, 2, generator=g) * 140], dim=1)
    R = cam_box_scores(cams, boxes, scale=14 / 448)
    assert R.shape == (40, 20) and bool((R >= 0).all()) and bool((R <= 2).all())


@pytest.mark.parametrize("kwargs, match", [
    (dict(cams=CAM, boxes=t([[0.0, 0, 1, 1]])), r"\[C, H, W\]"),
    (dict(cams=CAM[None] * 2, boxes=t([[0.0, 0, 1, 1]])), r"\[0, 1\]"),
    (dict(cams=CAM[None], boxes=None), "needs boxes"),
    (dict(cams=CAM[None], boxes=t([0.0, 0, 1, 1])), r"\[M, 4\]"),
    (dict(cams=CAM[None], boxes=t([[2.0, 0, 1, 1]])), "x2 >= x1"),
    (dict(cams=CAM[None], boxes=t([[40.0, 40, 50, 50]])), "outside"),
    (dict(cams=CAM[None], boxes=t([[0.0, 0, 1, 1]]), scale=0.0), "positive"),
    (dict(cams=CAM[None], boxes=None, mode="mask"), "needs masks"),
    (dict(cams=CAM[None], boxes=None, mode="mask", masks=torch.ones(1, 8, 8, dtype=torch.bool)), "resolution"),
    (dict(cams=CAM[None], boxes=None, mode="mask", masks=torch.zeros(1, 4, 4, dtype=torch.bool)), "empty"),
    (dict(cams=CAM[None], boxes=t([[0.0, 0, 1, 1]]), mode="roi"), "'box' or 'mask'"),
])
def test_cam_box_scores_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cam_box_scores(**kwargs)


# --------------------------------------------------------------------------------------- eq. 3 labels
def test_pseudo_labels_threshold_and_argmax_among_image_labels():
    R = t([[0.7, 0.2, 0.74],   # all below 0.75 -> background
           [0.3, 1.9, 0.8],    # class 2 is absent: its 1.9 is ignored -> class 3 (0.8)
           [0.75, 0.1, 0.2],   # exactly eta counts (strict <) -> class 1
           [1.2, 0.0, 1.5],    # argmax among present {1, 3}
           [0.1, 1.9, 0.1]])   # only the absent class is high -> background
    y = attention_pseudo_labels(R, [1, 3])
    assert y.dtype == torch.int64
    assert y.tolist() == [0, 3, 1, 3, 0]
    assert attention_pseudo_labels(R, t([1.0, 1, 0, 1])).tolist() == y.tolist()
    assert attention_pseudo_labels(R, [1, 3], eta=0.1).tolist() == [3, 3, 1, 3, 1]
    assert attention_pseudo_labels(t([[0.9, 0.9, 0.9]]), [2, 3]).tolist() == [2]  # tie: lowest present class
    assert attention_pseudo_labels(R, []).tolist() == [0] * 5  # no foreground label: all background
    with pytest.raises(ValueError, match="0..K"):
        attention_pseudo_labels(R, [4])


# --------------------------------------------------------------------------------------- eq. 4
def test_attention_loss_by_hand():
    p = t([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y = torch.tensor([0, 2])
    K = 2
    j1 = math.log(0.7) + (math.log(1 - 0.2) + math.log(1 - 0.1)) / K
    j2 = math.log(0.6) + (math.log(1 - 0.1) + math.log(1 - 0.3)) / K
    assert attention_loss(p, y).item() == pytest.approx(-(j1 + j2) / 2, rel=1e-12)


def test_attention_loss_gradient_signs():
    p = t([[0.5, 0.3, 0.2]], requires_grad=True)
    attention_loss(p, torch.tensor([1])).backward()
    g = p.grad[0]
    assert g[1] < 0 and g[0] > 0 and g[2] > 0  # raise p_ỹ, lower the others
    assert g[1].item() == pytest.approx(-1 / 0.3)
    assert g[0].item() == pytest.approx(1 / (2 * (1 - 0.5)))
    # through the softmax: the pseudo label's logit goes up under gradient descent
    logits = t([[0.1, -0.2, 0.4]], requires_grad=True)
    attention_loss(torch.softmax(logits, 1), torch.tensor([1])).backward()
    assert logits.grad[0, 1] < 0 and logits.grad[0, 0] > 0 and logits.grad[0, 2] > 0


def test_attention_loss_clamps_logs():
    p = t([[1.0, 0.0, 0.0]], requires_grad=True)
    loss = attention_loss(p, torch.tensor([1]))  # log 0 and log(1 - 1) clamped
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(-(math.log(1e-6) + math.log(1e-6) / 2))
    loss.backward()
    assert bool(torch.isfinite(p.grad).all())


# --------------------------------------------------------------------------------------- eq. 5
def test_lse_pool_by_hand_and_limits():
    p = t([[0.0, 0.2], [1.0, 0.6], [0.5, 0.1]])
    r = 1.0
    z0 = math.log((math.exp(0.0) + math.exp(1.0) + math.exp(0.5)) / 3) / r
    z1 = math.log((math.exp(0.2) + math.exp(0.6) + math.exp(0.1)) / 3) / r
    assert lse_pool(p, r).tolist() == pytest.approx([z0, z1], rel=1e-12)
    mx, mean = p.amax(0), p.mean(0)
    assert torch.allclose(lse_pool(p, 1e4), mx, atol=math.log(3) / 1e4 + 1e-12)  # max - log(M)/r <= Z <= max
    assert torch.allclose(lse_pool(p, 1e-4), mean, atol=1e-4)
    z5 = lse_pool(p, 5.0)
    assert bool((z5 > mean).all()) and bool((z5 < mx).all())
    # the same as logsumexp - log M, and accurate in float32 at small r
    assert torch.allclose(z5, (torch.logsumexp(5 * p, 0) - math.log(3)) / 5, rtol=1e-12)
    assert torch.allclose(lse_pool(p.float(), 1e-4), mean.float(), atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        lse_pool(p, 0.0)


# --------------------------------------------------------------------------------------- eq. 6
def _z(col: list[float], r: float) -> float:
    return math.log(sum(math.exp(r * v) for v in col) / len(col)) / r


def test_mil_loss_background_only_image():
    p = t([[0.9, 0.05, 0.05], [0.5, 0.25, 0.25]])
    r = 5.0
    z = [_z([0.9, 0.5], r), _z([0.05, 0.25], r), _z([0.05, 0.25], r)]
    want = -math.log(z[0]) - (math.log(1 - z[1]) + math.log(1 - z[2])) / 2
    assert mil_loss(p, [], r).item() == pytest.approx(want, rel=1e-12)
    assert mil_loss(p, t([1.0, 0, 0]), r).item() == pytest.approx(want, rel=1e-12)


def test_mil_loss_with_labels_and_full_label_set():
    p = t([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])
    r = 2.0
    z = [_z([0.6, 0.2], r), _z([0.3, 0.1], r), _z([0.1, 0.7], r)]
    want = -(math.log(z[0]) + math.log(z[2])) / 2 - math.log(1 - z[1])
    assert mil_loss(p, [2], r).item() == pytest.approx(want, rel=1e-12)
    # every class present: the absent-class term is 0, not NaN
    assert mil_loss(p, [1, 2], r).item() == pytest.approx(-sum(math.log(v) for v in z) / 3, rel=1e-12)


# --------------------------------------------------------------------------------------- eq. 7
def test_centre_loss_zero_one_and_by_hand():
    centres = t([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    p = t([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    assert centre_loss(centres.detach() * 3, p, centres).item() == pytest.approx(0.0, abs=1e-12)  # scale-free
    f_orth = t([[0.0, 1.0], [5.0, 0.0], [1.0, -1.0]])
    assert centre_loss(f_orth, p, centres).item() == pytest.approx(1.0)
    f = t([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    want = ((1 - 1 / math.sqrt(2)) + 0.0 + (1 - 1 / math.sqrt(2))) / 3
    loss = centre_loss(f, p, centres)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    assert centres.grad is None and f.grad is not None  # centres are constants (eq. 8 moves them)


def test_centre_loss_uninitialised_centre_is_constant_one():
    f = t([[1.0, 2.0]], requires_grad=True)
    loss = centre_loss(f, t([[0.1, 0.9]]), torch.zeros(2, 2, dtype=torch.float64))
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.equal(f.grad, torch.zeros_like(f))


# --------------------------------------------------------------------------------------- eq. 8
def test_update_one_step_and_untouched_classes():
    theta = 0.01
    c = t([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    f = t([[2.0, 0.0]], requires_grad=True)
    p = t([[0.1, 0.7, 0.2]])
    new = update_centres(c, f, p, theta)
    assert new[1].tolist() == pytest.approx([3.0 + theta * (2.0 - 3.0), -1.0 + theta * (0.0 + 1.0)], rel=1e-15)
    assert torch.equal(new[0], c[0]) and torch.equal(new[2], c[2])  # no proposal: unchanged
    assert not new.requires_grad and new.grad_fn is None  # never by gradient
    assert c.tolist() == [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]  # input not modified


def test_update_sequential_within_class():
    theta = 0.3
    c = t([[1.0, 1.0], [0.0, 4.0], [2.0, 2.0]])
    f = [[1.0, 0.0], [9.0, 9.0], [0.0, 2.0], [4.0, -2.0]]
    p = t([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    # by hand, in proposal order: class 1 gets f0 then f2, class 2 gets f1, class 0 gets f3
    c1 = [0.0 + theta * (1.0 - 0.0), 4.0 + theta * (0.0 - 4.0)]
    c1 = [c1[0] + theta * (0.0 - c1[0]), c1[1] + theta * (2.0 - c1[1])]
    c2 = [2.0 + theta * (9.0 - 2.0), 2.0 + theta * (9.0 - 2.0)]
    c0 = [1.0 + theta * (4.0 - 1.0), 1.0 + theta * (-2.0 - 1.0)]
    new = update_centres(c, t(f), p, theta)
    assert new.tolist()[0] == pytest.approx(c0, rel=1e-12)
    assert new.tolist()[1] == pytest.approx(c1, rel=1e-12)
    assert new.tolist()[2] == pytest.approx(c2, rel=1e-12)
    # the order matters (theta large enough to see it): swapping the two class-1 proposals changes c1
    swapped = update_centres(c, t([f[2], f[1], f[0], f[3]]), p, theta)
    assert swapped.tolist()[1] != pytest.approx(c1)


def test_update_initialises_empty_centre_with_first_feature():
    theta = 0.1
    c = torch.zeros(3, 2, dtype=torch.float64)
    c[2] = t([1.0, 1.0])
    f = t([[2.0, 4.0], [6.0, 0.0], [3.0, 3.0]])
    p = t([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    new = update_centres(c, f, p, theta)
    first = [2.0, 4.0]  # c <- f for the first, then the rule for the second
    want1 = [first[0] + theta * (6.0 - first[0]), first[1] + theta * (0.0 - first[1])]
    assert new.tolist()[1] == pytest.approx(want1, rel=1e-12)
    assert new.tolist()[2] == pytest.approx([1.0 + theta * 2.0, 1.0 + theta * 2.0], rel=1e-12)
    assert new.tolist()[0] == [0.0, 0.0]  # still uninitialised
    # theta = 1: the centre is the class's last feature
    assert update_centres(c, f, p, 1.0).tolist()[1] == [6.0, 0.0]


def test_update_rejects_bad_theta_and_shapes():
    c, f, p = torch.zeros(3, 2), torch.ones(1, 2), torch.tensor([[0.2, 0.3, 0.5]])
    with pytest.raises(ValueError, match="theta"):
        update_centres(c, f, p, 1.5)
    with pytest.raises(ValueError, match=r"\[K\+1, D\]"):
        update_centres(torch.zeros(2, 2), f, p)
    with pytest.raises(ValueError, match=r"\[M, D\]"):
        update_centres(c, torch.ones(2, 2), p)


# --------------------------------------------------------------------------------------- eq. 9
def _tiny_model(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)  # 5 proposals, 3 raw inputs
    backbone = torch.nn.Linear(3, 4).double()
    head = torch.nn.Linear(4, 3).double()  # K = 2
    return x, backbone, head


def test_total_loss_gradients_reach_p_f_and_backbone():
    x, backbone, head = _tiny_model()
    f = torch.relu(backbone(x))
    f.retain_grad()
    p = torch.softmax(head(f), dim=1)
    p.retain_grad()
    centres = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y_tilde = torch.tensor([0, 2, 2, 0, 1])
    total, parts = mil_total_loss(p, [2], y_tilde=y_tilde, f=f, centres=centres)
    assert set(parts) == {"att", "mil", "cent"}
    assert total.item() == pytest.approx(0.5 * parts["att"].item() + 0.5 * parts["mil"].item()
                                         + 0.1 * parts["cent"].item(), rel=1e-12)
    total.backward()
    for g in (p.grad, f.grad, backbone.weight.grad, backbone.bias.grad, head.weight.grad):
        assert g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0


def test_zero_weights_disable_parts():
    x, backbone, head = _tiny_model()
    p = torch.softmax(head(torch.relu(backbone(x))), dim=1)
    # alpha = 0: no CAM pseudo labels needed; gamma = 0: no features or centres
    total, parts = mil_total_loss(p, [1], weights=LossWeights(alpha=0.0, beta=1.0, gamma=0.0))
    assert set(parts) == {"mil"} and total.item() == pytest.approx(mil_loss(p, [1]).item())
    total, parts = mil_total_loss(p, [1], y_tilde=torch.zeros(5, dtype=torch.int64),
                                  weights=LossWeights(alpha=1.0, beta=0.0, gamma=0.0))
    assert set(parts) == {"att"}
    total.backward()
    assert backbone.weight.grad is not None
    with pytest.raises(ValueError, match="needs y_tilde"):
        mil_total_loss(p, [1])
    with pytest.raises(ValueError, match="features f"):
        mil_total_loss(p, [1], y_tilde=torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="all loss weights are 0"):
        LossWeights(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(alpha=-0.5)


def test_probabilities_need_not_sum_to_one():
    p = t([[0.9, 0.8, 0.1], [0.2, 0.6, 0.9]])  # e.g. sigmoid outputs: allowed, all values in [0, 1]
    assert math.isfinite(mil_loss(p, [1]).item())
    assert math.isfinite(attention_loss(p, torch.tensor([1, 2])).item())


@pytest.mark.parametrize("call, match", [
    (lambda: attention_loss(t([0.5, 0.5]), torch.tensor([0])), r"\[M, K\+1\]"),
    (lambda: attention_loss(t([[1.2, -0.2]]), torch.tensor([0])), r"\[0, 1\]"),
    (lambda: attention_loss(t([[float("nan"), 0.5]]), torch.tensor([0])), r"\[0, 1\]"),
    (lambda: attention_loss(t([[1.0]]), torch.tensor([0])), "K\\+1 >= 2"),
    (lambda: attention_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)), "no proposals"),
    (lambda: attention_loss(t([[0.5, 0.5]]), torch.tensor([0, 1])), r"y_tilde must be an integer tensor \[M\]"),
    (lambda: attention_loss(t([[0.5, 0.5]]), t([0.0])), "integer"),
    (lambda: attention_loss(t([[0.5, 0.5]]), torch.tensor([2])), "0..K"),
    (lambda: mil_loss(t([[0.5, 0.5]]), [3]), "0..K"),
    (lambda: mil_loss(t([[0.5, 0.5]]), t([1.0, 0, 1])), "K\\+1 = 2"),
    (lambda: centre_loss(torch.ones(2, 4), t([[0.5, 0.5]]), torch.ones(2, 4)), r"\[M, D\] with M = 1"),
    (lambda: centre_loss(torch.ones(1, 4), t([[0.5, 0.5]]), torch.ones(3, 4)), r"\[K\+1, D\] = \[2, 4\]"),
    (lambda: attention_pseudo_labels(t([0.5, 0.5]), [1]), r"\[M, K\]"),
])
def test_invalid_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cam_soft_iou_hand_values():
    """A binary CAM square: the object mask scores 1, a quarter of it 1/4, the whole image |square|/|image|, a
    background corner 0; a second instance of the class (another component) does not lower the object's score."""
    from liid.losses import cam_soft_iou

    cam = np.zeros((1, 20, 20))
    cam[0, 2:10, 2:10] = 1.0  # the instance (64 px)
    cam[0, 14:18, 14:18] = 1.0  # a second instance, its own component
    obj = np.zeros((20, 20), bool)
    obj[2:10, 2:10] = True
    quarter = np.zeros((20, 20), bool)
    quarter[2:6, 2:6] = True
    whole = np.ones((20, 20), bool)
    corner = np.zeros((20, 20), bool)
    corner[0:2, 18:20] = True
    s = cam_soft_iou(cam, np.stack([obj, quarter, whole, corner]))[:, 0]
    assert s[0] == pytest.approx(1.0) and s[1] == pytest.approx(16 / 64)
    assert s[2] == pytest.approx(64 / 400)  # the component with most of its mass: the big square
    assert s[3] == pytest.approx(0.0)
    # a soft map: Σ_mask A / (|mask| + Σ A − Σ_mask A)
    soft = np.zeros((1, 4, 4))
    soft[0, :2, :2] = [[1.0, 0.5], [0.5, 0.5]]
    m = np.zeros((1, 4, 4), bool)
    m[0, 0, :] = True
    assert cam_soft_iou(soft, m, tau=0.2)[0, 0] == pytest.approx(1.5 / (4 + 2.5 - 1.5))
    with pytest.raises(ValueError):
        cam_soft_iou(cam, np.zeros((1, 5, 5), bool))
