"""DyToK frame weights, layer selection and budget allocation: every vector of spec §1.11."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from runtime.compression.dytok import (allocate_budgets, budget_for_retention, frame_weights, select_layers,
                                       split_dominant_contextual, visual_softmax_head_mean)
from runtime.errors import BudgetError, ShapeError


def alloc(w, b, u):
    a = allocate_budgets(np.asarray(w, np.float32), b, u)
    d, c = split_dominant_contextual(a)
    return a.tolist(), d.tolist(), c.tolist()


def test_v1_1_redistribution():
    assert alloc([0.5, 0.3, 0.2], 10, 12) == ([12, 11, 7], [10, 9, 6], [2, 2, 1])


def test_v1_2_largest_remainder_and_cap():
    assert alloc([0.37, 0.33, 0.19, 0.11], 7, 10) == ([10, 10, 5, 3], [8, 8, 4, 2], [2, 2, 1, 1])


def test_v1_3_zero_token_frames():
    assert alloc([0.9, 0.06, 0.04], 2, 196) == ([6, 0, 0], [5, 0, 0], [1, 0, 0])


def test_v1_4_six_sweeps():
    assert alloc([0.69, 0.13, 0.11, 0.07], 10, 12) == ([12, 11, 9, 8], [10, 9, 7, 6], [2, 2, 2, 2])


def test_v1_5_paper_scale_linear():
    w = np.arange(1, 33, dtype=np.float32)
    a, d, c = alloc(w / w.sum(), 49, 196)
    assert a == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 50, 53, 56, 59, 62, 65, 68, 71,
                 74, 77, 80, 83, 86, 89, 92, 95]
    assert d == [2, 5, 7, 10, 12, 15, 18, 20, 23, 25, 28, 30, 33, 36, 38, 41, 42, 45, 48, 50, 53, 55, 58, 60,
                 63, 66, 68, 71, 73, 76, 78, 81]
    assert c == [1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 6, 6, 7, 7, 8, 8, 8, 9, 9, 10, 10, 11, 11, 11, 12, 12, 13,
                 13, 14, 14]


def test_v1_6_paper_scale_cap_binding():
    w = np.array([1 + i / 100 for i in range(28)] + [20, 30, 40, 50], np.float32)
    a, d, _ = alloc(w / w.sum(), 49, 196)
    assert a == [26, 26, 26, 26, 26, 27, 27, 27, 27, 27, 28, 28, 28, 28, 28, 29, 29, 29, 29, 29, 29, 29, 29, 29,
                 29, 29, 30, 30, 196, 196, 196, 196]
    assert sum(a) == 1568
    assert d == [22, 22, 22, 22, 22, 23, 23, 23, 23, 23, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24,
                 24, 24, 25, 25, 168, 168, 168, 168]


def v17_logits():
    ln2, ln3 = math.log(2), math.log(3)
    layer_a = [[0, 0, ln3, 0, 5], [ln2, 0, 0, 0, 5]]
    layer_b = [[ln3, ln3, 0, 0, 5], [0, 0, 0, 0, 5]]
    return np.array([layer_a, layer_b], np.float32)  # [L=2, H=2, 5 keys], last key = newline


def test_v1_7_frame_score_visual_only_softmax():
    logits = v17_logits()[..., :4]  # the newline key takes no part
    w = frame_weights(visual_softmax_head_mean(logits), tokens_per_frame=2)
    np.testing.assert_allclose(w, [131 / 240, 109 / 240], atol=1e-6)
    assert alloc(w, 10, 12) == ([11, 9], [9, 7], [2, 2])


def test_v1_7_negative_newline_in_softmax_changes_weights():
    with_newline = visual_softmax_head_mean(v17_logits())[:, :4]  # softmax included the newline key
    w_bad = frame_weights(with_newline, tokens_per_frame=2)
    assert not np.allclose(w_bad, [131 / 240, 109 / 240], atol=1e-3)


def test_v1_8_layer_parsing():
    assert select_layers(16.23, 24) == list(range(16, 24))
    assert select_layers(16.2, 24) == list(range(16, 21))
    assert select_layers(3, 24) == [3]
    assert select_layers(None, 24) == list(range(24))
    assert select_layers("none", 5) == list(range(5))
    assert select_layers("last_third", 24) == list(range(16, 24))
    assert select_layers("last_third", 28) == list(range(19, 28))
    assert select_layers(range(2, 4), 24) == [2, 3]
    assert select_layers("16.23", 24) == list(range(16, 24))


def test_layer_selection_errors():
    with pytest.raises(BudgetError, match="selects no layer"):
        select_layers(16.05, 24)  # 16..5: empty, the reference crashes
    with pytest.raises(BudgetError, match="selects no layer"):
        select_layers(30, 24)
    with pytest.raises(BudgetError, match="expected none"):
        select_layers("deep", 24)


def test_budget_above_cap_raises_instead_of_looping():
    with pytest.raises(BudgetError, match="exceeds the cap"):
        allocate_budgets(np.array([0.5, 0.5], np.float32), 13, 12)


@pytest.mark.parametrize("bad", [[0.5, np.nan], [0.5, -0.1], [np.inf, 1.0]])
def test_bad_weights(bad):
    with pytest.raises(BudgetError, match="finite and non-negative"):
        allocate_budgets(np.array(bad, np.float32), 4, 8)


def test_weights_wrong_shape():
    with pytest.raises(ShapeError):
        allocate_budgets(np.zeros((2, 2), np.float32), 4, 8)
    with pytest.raises(ShapeError, match="not \\[layers, frames"):
        frame_weights(np.ones((2, 7), np.float32), tokens_per_frame=2)
    with pytest.raises(BudgetError, match="NaN"):
        frame_weights(np.array([[np.nan, 1.0]], np.float32), tokens_per_frame=1)


def test_retention_budget():
    assert budget_for_retention(196, 0.25) == 49
    assert budget_for_retention(4, 0.01) == 1
    with pytest.raises(BudgetError):
        budget_for_retention(196, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=40), st.integers(0, 64), st.integers(0, 64))
def test_allocation_properties(raw, budget, extra_cap):
    w = np.array(raw, np.float32)
    if w.sum() <= 0:
        w = np.ones_like(w)
    w = (w / w.sum()).astype(np.float32)
    cap = budget + extra_cap
    a = allocate_budgets(w, budget, cap)
    assert a.sum() == budget * len(w)  # sum preserved
    assert (a >= 0).all() and (a <= cap).all()  # no negatives, cap respected
    d, c = split_dominant_contextual(a)
    assert (d + c == a).all() and ((a == 0) | (c >= 1)).all()
