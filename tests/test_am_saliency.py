"""``am-saliency`` (paper 000): Algorithm 1's erasing, Algorithm 2's fusion, eqs. 3-5's attention maps and eq. 10's
CRF on hand-made arrays and a tiny random resnet18 classifier; the saliency sources (OpenCV, a folder of maps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.labelers.am_saliency import (
    BACKGROUND,
    CRF_LAMBDA,
    ERASE,
    ROUNDS,
    THRESHOLD_SCORE,
    am_saliency_semantic,
    attention_maps,
    combine_attention,
    crf_refine,
    erase,
    fuse,
    label_probabilities,
    score_mask,
    successive_erasing,
)
from liid.labelers.saliency import BUILTIN, SaliencyFolder, opencv_saliency, saliency_source
from liid.models.backbone import build_backbone
from liid.models.classifier import MultiLabelClassifier
from liid.training.data import to_input


def test_paper_constants():
    assert (THRESHOLD_SCORE, ERASE, ROUNDS, BACKGROUND, CRF_LAMBDA) == (0.8, 0.7, 3, 0.2, 0.98)


# ------------------------------------------------------------------------------------------- Algorithm 1


def test_erase_paints_exactly_the_pixels_at_or_above_the_threshold_in_the_mean_colour():
    image = np.array([[[0, 0, 0], [10, 20, 30]], [[100, 50, 0], [250, 2, 90]]], np.uint8)
    saliency = np.array([[0.69, 0.7], [0.95, 0.1]], np.float32)
    before = image.copy()
    out = erase(image, saliency)
    mean = [90, 18, 30]  # the whole image's mean colour (360/4, 72/4, 120/4)
    assert out.dtype == np.uint8 and np.array_equal(image, before)  # the input is left alone
    assert out.tolist() == [[[0, 0, 0], mean], [mean, [250, 2, 90]]]
    assert erase(image, saliency, threshold=0.9, mean=(1, 2, 3)).tolist() == [
        [[0, 0, 0], [10, 20, 30]], [[1, 2, 3], [250, 2, 90]]]
    with pytest.raises(LiidError, match=r"saliency \[3, 2\] does not match image \[2, 2\]"):
        erase(image, np.zeros((3, 2)))


def test_successive_erasing_takes_the_elementwise_max_of_the_rounds_on_erased_images():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :2] = 200  # the first object: mean colour of the image is 50
    maps = [np.full((4, 4), 0.1, np.float32) for _ in range(3)]
    maps[0][:2, :2] = 1.0   # round 1 finds the bright object
    maps[1][2:, 2:] = 0.8   # round 2 finds a second one ...
    maps[1][0, 3] = 0.3     # ... and something weak
    maps[2][3, 0] = 0.5     # round 3 finds a third, below the erasing threshold
    seen = []

    def detector(im: np.ndarray) -> np.ndarray:
        seen.append(im.copy())
        return maps[len(seen) - 1]

    sal = successive_erasing(image, detector)
    assert len(seen) == ROUNDS
    expected = np.full((4, 4), 0.1, np.float32)
    expected[:2, :2], expected[2:, 2:], expected[0, 3], expected[3, 0] = 1.0, 0.8, 0.3, 0.5
    assert np.array_equal(sal, expected)
    assert np.array_equal(seen[0], image)
    assert (seen[1][:2, :2] == 50).all() and (seen[1][2:, 2:] == 0).all()  # round 1's region erased
    assert (seen[2][:2, :2] == 50).all() and (seen[2][2:, 2:] == 50).all()  # and round 2's, same colour
    assert seen[2][0, 3].tolist() == [0, 0, 0]  # 0.3 < 0.7: kept
    seen.clear()
    assert np.array_equal(successive_erasing(image, detector, rounds=1), maps[0]) and len(seen) == 1
    with pytest.raises(LiidError, match="round 1 map is"):
        successive_erasing(image, lambda im: np.zeros((2, 2)))


# ------------------------------------------------------------------------------------------- Algorithm 2


def test_fuse_is_the_mean_of_attention_and_saliency_argmax_over_present_classes_with_background():
    attention = np.zeros((3, 2, 3), np.float32)
    attention[0] = [[0.8, 0.0, 0.3], [0.1, 0.2, 0.0]]
    attention[1] = 1.0  # class 2 is absent: never wins though it is strongest everywhere
    attention[2] = [[0.2, 0.0, 0.5], [0.3, 0.1, 0.0]]
    saliency = np.array([[0.0, 0.39, 0.1], [0.5, 0.0, 0.4]], np.float32)
    # fused class 1: [[.4, .195, .2], [.3, .1, .2]]; class 3: [[.1, .195, .3], [.4, .05, .2]]
    assert fuse(attention, saliency, [1, 3]).tolist() == [[1, 0, 3], [3, 0, 1]]  # (1, 2): tie → class 1
    assert fuse(attention, saliency, [3, 1], background=0.35).tolist() == [[1, 0, 0], [3, 0, 0]]
    assert fuse(attention, saliency, []).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(LiidError, match=r"attention \[3, 2, 3\] and saliency \[3, 2\]"):
        fuse(attention, saliency.T, [1])
    with pytest.raises(LiidError, match=r"1\.\.3"):
        fuse(attention, saliency, [1, 4])


# ------------------------------------------------------------------------------------------ eqs. 3, 4, 5


def test_score_mask_keeps_the_top_fifth_of_the_score_range():
    scores = np.array([[-1.0, 0.6], [0.61, 1.0]])  # normalised: 0, 0.8, 0.805, 1
    assert score_mask(scores).tolist() == [[0, 0], [1, 1]]  # strictly above 0.8
    assert score_mask(np.full((2, 2), 3.0)).tolist() == [[0, 0], [0, 0]]


def test_combine_attention_subtracts_other_classes_then_averages_tanh_over_layers():
    per_layer = np.array([
        [[[1.0, 0.5]], [[0.25, 0.5]], [[0.0, 0.25]]],  # layer 1, classes a, b, c
        [[[0.5, 0.0]], [[0.5, 1.0]], [[0.0, 0.0]]],    # layer 2
    ], np.float32)
    out = combine_attention(per_layer)
    # eq. 4, layer 1: a = [1 - .25, 0], b = [0, 0], c = [0, 0]; layer 2: a = [0, 0], b = [0, 1], c = [0, 0]
    t = np.tanh
    expected = [[[t(0.75) / 2, 0.0]], [[0.0, t(1.0) / 2]], [[0.0, 0.0]]]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(combine_attention(per_layer[:, :1]), [[[(t(1) + t(.5)) / 2, t(.5) / 2]]], atol=1e-6)


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    return MultiLabelClassifier(trunk, ch, 3)


def test_attention_maps_on_a_tiny_classifier(model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    x = to_input(image, 64)
    a = attention_maps(model, x, [3, 1], size=(40, 50))
    assert a.shape == (3, 40, 50) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 and a[0].max() > 0 and a[2].max() > 0
    assert not a[1].any()  # class 2 absent
    assert model.training  # the caller's mode is restored
    assert not attention_maps(model, x, []).any()
    # layer4 alone, one class, at feature size: d(Σ mask·W_c·F)/dF = W_c ⊗ mask, so max_k|·| normalised is the
    # mask itself and eq. 5 gives tanh(mask); H_c as attention_maps sees it, in eval mode
    with torch.no_grad():
        h_c = model.eval().raw_cams(x[None])[0, 2].numpy()
    model.train()
    only4 = attention_maps(model, x, [3], layers=["layer4"], size=h_c.shape)
    np.testing.assert_allclose(only4[2], np.tanh(score_mask(h_c)), atol=1e-6)
    with pytest.raises(LiidError, match="layer9"):
        attention_maps(model, x, [1], layers=["layer9"])
    with pytest.raises(LiidError, match=r"1\.\.3"):
        attention_maps(model, x, [0, 1])


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet18"])
def test_attention_layers_default_to_the_trunks_stride_16_and_32_stages(name, one_thread):
    """Every trunk of the table names its own layers, so am-saliency runs on a Lite classifier as on a ResNet."""
    torch.manual_seed(0)
    trunk, ch = build_backbone(name, from_scratch=True)
    net = MultiLabelClassifier(trunk, ch, 2)
    names = trunk.late_stages()
    mods = dict(trunk.named_modules())
    seen = {}
    hooks = [mods[k].register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.shape[-1])) for k in names]
    trunk.eval()(torch.zeros(1, 3, 128, 128))
    for h in hooks:
        h.remove()
    assert [seen[k] for k in names] == [128 // 16, 128 // 32]
    image = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    a = attention_maps(net, to_input(image, 64), [1, 2], size=(48, 48))
    assert a.shape == (2, 48, 48) and a.max() > 0


# ----------------------------------------------------------------------------------------------- eq. 10


def test_label_probabilities_follow_eq10():
    labels = np.array([[0, 2], [5, 2]])
    p = label_probabilities(labels, [2, 5], lam=0.8)
    assert p.shape == (3, 2, 2)  # background, 2, 5
    np.testing.assert_allclose(p[:, 0, 0], [0.8, 0.1, 0.1])
    np.testing.assert_allclose(p[:, 1, 0], [0.1, 0.1, 0.8])
    np.testing.assert_allclose(p.sum(axis=0), 1.0)
    with pytest.raises(LiidError, match=r"classes \[5\] outside"):
        label_probabilities(labels, [2])
    with pytest.raises(LiidError, match="0.5 < lambda < 1"):
        label_probabilities(labels, [2, 5], lam=0.4)


def test_crf_refine_keeps_labels_within_background_and_present_classes():
    image = np.zeros((12, 16, 3), np.uint8)
    image[:, 8:] = 255
    labels = np.zeros((12, 16), np.int64)
    labels[:, 7:] = 3  # one column off the colour edge
    labels[0, 0] = 1
    out = crf_refine(image, labels, [1, 3], lam=0.7)
    assert out.dtype == np.int64 and out.shape == labels.shape
    assert set(np.unique(out)) <= {0, 1, 3}
    assert (out[:, 9:] == 3).all() and (out[:, :6] != 3).all()
    assert not crf_refine(image, np.zeros((12, 16), np.int64), []).any()
    with pytest.raises(LiidError, match="sizes differ"):
        crf_refine(image, labels[:, :4], [1, 3])


def test_am_saliency_semantic_end_to_end(model):
    image = np.full((24, 32, 3), 40, np.uint8)
    image[6:18, 8:20] = 220
    saliency = successive_erasing(image, opencv_saliency, rounds=2)
    for crf in (True, False):
        sem = am_saliency_semantic(model, image, [2, 3], 64, saliency, crf=crf)
        assert sem.shape == (24, 32) and sem.dtype == np.int64 and set(np.unique(sem)) <= {0, 2, 3}
    with pytest.raises(LiidError, match="sizes differ"):
        am_saliency_semantic(model, image, [2], 64, saliency[:, :5])


# ---------------------------------------------------------------------------------------------- saliency


def test_opencv_saliency_prefers_a_bright_square_on_a_flat_background():
    image = np.full((48, 64, 3), 60, np.uint8)
    image[16:32, 24:40] = 230
    sal = opencv_saliency(image)
    assert sal.shape == (48, 64) and sal.dtype == np.float32 and sal.min() == 0.0 and sal.max() == 1.0
    assert sal[18:30, 26:38].mean() > sal[:8, :8].mean() + 0.3
    assert not opencv_saliency(np.full((8, 8, 3), 7, np.uint8)).any()  # flat: nothing stands out
    assert BUILTIN == "opencv"
    assert np.array_equal(saliency_source("opencv", None)("any id", image), sal)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, (h, w) in {"a": (6, 8), "b": (5, 7), "c": (4, 4)}.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / f"{name}.png")
    return open_dataset(folder)


def test_saliency_folder_reads_maps_and_names_what_is_missing_or_misfit(images, tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    Image.fromarray(np.full((6, 8), 255, np.uint8)).save(maps / "a.png")
    with pytest.raises(LiidError, match=r"no saliency maps for 2 of the 3 dataset images \('b', 'c'\)"):
        SaliencyFolder(maps, images)
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 51, 255
    Image.fromarray(rgb).save(maps / "b.png")  # RGB: the first channel counts
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(maps / "c.png")  # the image is 4x4
    source = saliency_source(str(maps), images)
    assert np.allclose(source("a", np.zeros((6, 8, 3), np.uint8)), 1.0)
    b = source("b", np.zeros((5, 7, 3), np.uint8))
    assert b.dtype == np.float32 and np.allclose(b, 0.2)
    with pytest.raises(LiidError, match=r"c\.png: saliency map is 4x5, the image is 4x4"):
        source("c", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(LiidError, match=r"a\.png: saliency map is 6x8, the image is 3x3"):
        source("a", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(LiidError, match="neither 'opencv' nor an existing folder"):
        saliency_source(str(tmp_path / "nowhere"), images)
