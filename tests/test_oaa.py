"""OAA's accumulation rule (paper 003) on hand-made maps: fused only when the class wins, max or average."""

from __future__ import annotations

import numpy as np
import pytest

from liid.errors import LiidError
from liid.training.accumulate import accumulate, class_wins


def test_class_wins_only_over_every_absent_class():
    scores = np.array([0.9, 0.2, 0.5, 0.6])  # classes 1..4; the image has 1 and 3
    assert class_wins(scores, [1, 3]).tolist() == [True, False, False, False]  # 3 (0.5) loses to absent 4 (0.6)
    assert class_wins(scores, [1, 3, 4]).tolist() == [True, False, True, True]
    assert class_wins(scores, [1, 2, 3, 4]).all()  # no absent class: every present class wins
    assert not class_wins(scores, []).any()
    with pytest.raises(LiidError, match="1..4"):
        class_wins(scores, [5])


def test_max_accumulates_only_winning_classes():
    a1 = np.array([[[0.2, 0.8]], [[0.5, 0.5]], [[0.9, 0.9]]], dtype=np.float32)  # K=3, 1x2 maps
    a2 = np.array([[[0.6, 0.1]], [[0.7, 0.0]], [[1.0, 1.0]]], dtype=np.float32)
    # epoch 1: classes 1 and 2 present; 1 wins, 2 loses to absent class 3
    m, n = accumulate(None, a1, np.array([0.9, 0.1, 0.4]), [1, 2])
    assert m[0].tolist() == [[pytest.approx(0.2), pytest.approx(0.8)]] and n.tolist() == [1, 0, 0]
    assert not m[1].any() and not m[2].any()  # a losing class and an absent class stay empty
    # epoch 2: both win now; max is element-wise, per class
    m2, n2 = accumulate(m, a2, np.array([0.9, 0.8, 0.4]), [1, 2], counts=n)
    assert m2[0].tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]
    assert m2[1].tolist() == [[pytest.approx(0.7), 0.0]] and n2.tolist() == [2, 1, 0]
    assert m[0].tolist() == [[pytest.approx(0.2), pytest.approx(0.8)]]  # inputs untouched


def test_average_fusion_is_the_running_mean():
    maps = [np.full((1, 2, 2), v, dtype=np.float32) for v in (0.3, 0.9, 0.6)]
    m, n = None, None
    for a in maps:
        m, n = accumulate(m, a, np.array([1.0]), [1], fusion="average", counts=n)
    assert np.allclose(m, 0.6) and n.tolist() == [3]
    m_max = None
    for a in maps:
        m_max, _ = accumulate(m_max, a, np.array([1.0]), [1])
    assert np.allclose(m_max, 0.9)


def test_bad_shapes_and_fusion():
    with pytest.raises(LiidError, match="differ in shape"):
        accumulate(np.zeros((2, 3, 3)), np.zeros((2, 4, 4)), np.zeros(2), [1])
    with pytest.raises(LiidError, match="fusion"):
        accumulate(None, np.zeros((2, 3, 3)), np.zeros(2), [1], fusion="sum")
