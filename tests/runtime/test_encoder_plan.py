"""Budget-aware encoder resolution (runtime/encoder_plan.py): grid planning, grouped M-RoPE ids,
and end to end on tiny: a slack that keeps every group at full size gives today's tokens."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.encoder_plan import group_grid, plan_group_grids
from runtime.errors import BudgetError
from runtime.positions import mrope_positions, mrope_positions_grouped


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2000))
def test_group_grid_is_the_smallest_covering_candidate(rows, cols, need):
    a, b = group_grid((rows, cols), need)
    want = min(max(need, 1), rows * cols)
    assert 1 <= a <= rows and 1 <= b <= cols and a * b >= want
    # no candidate of the same family (a', round(a' * cols / rows)) covers the need with fewer tokens
    for a2 in range(1, rows + 1):
        b2 = min(max(round(a2 * cols / rows), 1), cols)
        if a2 * b2 >= want:
            assert a * b <= a2 * b2


def test_plan_keeps_full_groups_with_large_slack_and_rejects_bad_input():
    budgets = np.array([48, 12, 0, 30])
    assert (plan_group_grids((6, 8), budgets, 1e9)[[0, 1, 3]] == [6, 8]).all()  # a 0 budget needs one token only
    grids = plan_group_grids((6, 8), budgets, 1.0)
    assert (grids.prod(axis=1) >= np.maximum(budgets, 1)).all() and grids[1].prod() < 48
    with pytest.raises(BudgetError, match="slack"):
        plan_group_grids((6, 8), budgets, 0.5)
    with pytest.raises(BudgetError, match="exceeds"):
        plan_group_grids((6, 8), np.array([49]), 1.0)


def test_grouped_positions_equal_get_rope_index_for_one_grid_and_follow_each_grid():
    video = 99
    ids = np.array([1, 2, 3] + [video] * 3 * 4 * 6 + [4, 5])
    want, _ = mrope_positions(ids, video, [(3, 8, 12)], [1.0], 2, 2.0)
    got = mrope_positions_grouped(ids, video, [(4, 6)] * 3, 2.0)
    np.testing.assert_array_equal(got, want)
    ids = np.array([1, 2, 3] + [video] * (24 + 6 + 2) + [4])
    pos = mrope_positions_grouped(ids, video, [(4, 6), (2, 3), (1, 2)], 1.5)
    span = pos[:, 3:35]
    assert list(span[0, [0, 24, 30]]) == [3, 3 + 1, 3 + 3]  # floor(g * 1.5) + start
    assert span[1, 24:30].max() == 3 + 1 and span[2, 24:30].max() == 3 + 2  # group 1 on its own 2x3 grid
    assert pos[0, -1] == 3 + 6  # text after: start + max side over groups
    with pytest.raises(Exception, match="group grids"):
        mrope_positions_grouped(ids, video, [(4, 6)], 1.0)


pytest.importorskip("torch")  # the end-to-end part needs the tiny export


@pytest.fixture(scope="module")
def pipe(tiny_artifacts):
    from runtime.pipeline import load_pipeline
    return load_pipeline(tiny_artifacts)


def test_full_size_slack_gives_todays_tokens_and_small_slack_encodes_less(pipe, video_path):
    from runtime.options import Options
    from runtime.video import sample_video

    clip = sample_video(video_path, num_frames=16)
    base = dict(min_pixels=16 * 784, max_pixels=64 * 784, max_new_tokens=8, method="visionzip", retention=0.25)
    today = pipe.answer(clip, "What happens?", Options(**base))
    same = pipe.answer(clip, "What happens?", Options(**base, encoder_slack=1e9))
    assert same.token_ids == today.token_ids
    np.testing.assert_array_equal(same.budgets, today.budgets)
    np.testing.assert_array_equal(same.kept_source, today.kept_source)
    assert same.visual_tokens == today.visual_tokens
    small = pipe.answer(clip, "What happens?", Options(**base, encoder_slack=1.0))
    np.testing.assert_array_equal(small.budgets, today.budgets)
    assert small.visual_tokens[0] == int(today.budgets.sum()) and len(small.token_ids) == 8
    for method in ("uniform", "dyntok"):
        r = pipe.answer(clip, "What happens?", Options(**{**base, "method": method}, encoder_slack=2.0))
        assert r.visual_tokens[0] == int(r.budgets.sum())
        plain = pipe.answer(clip, "What happens?", Options(**{**base, "method": method}))
        full = pipe.answer(clip, "What happens?", Options(**{**base, "method": method}, encoder_slack=1e9))
        assert full.token_ids == plain.token_ids  # every group at full size: today's tokens
        np.testing.assert_array_equal(full.kept_source, plain.kept_source)
    with pytest.raises(BudgetError, match="encoder resolution supports"):
        pipe.answer(clip, "What happens?", Options(**{**base, "method": "dycoke"}, encoder_slack=1.0))
    assert math.isfinite(small.timings["vision"]) and small.timings["vision"] >= 0
