"""VisionZip primitive and its per-group Qwen form: every vector of spec §2.6."""
import numpy as np
import pytest

from runtime.compression.visionzip import pool_merge_units, strided_targets, visionzip, visionzip_groups
from runtime.errors import BudgetError, ShapeError

HS = np.array([[1, 1], [2, 0], [4, 2], [0, 3], [2, 2], [6, 0]], np.float32)
S = np.array([0.10, 0.30, 0.05, 0.25, 0.20, 0.10], np.float32)
M = np.array([[1, 0], [5, 5], [3, 4], [1, -1], [0, 2], [3, 1]], np.float32)


def test_main_vector():
    out = visionzip(HS, S, M, 2, 2)
    np.testing.assert_allclose(out.tokens, [[2, 0], [0, 3], [7, 1], [6, 4]])
    assert out.source.tolist() == [1, 3, 0, 4]
    assert out.dominant.tolist() == [True, True, False, False]


@pytest.mark.parametrize("d,c,expected", [
    (0, 1, [[3.8, 2.4]]),
    (5, 1, [[1, 1], [2, 0], [0, 3], [2, 2], [6, 0], [4, 2]]),
    (1, 3, [[2, 0], [7, 1], [6, 4], [0, 3]]),
])
def test_other_budgets(d, c, expected):
    np.testing.assert_allclose(visionzip(HS, S, M, d, c).tokens, expected, rtol=1e-6)


@pytest.mark.parametrize("n,c,expected", [(10, 3, [0, 3, 6]), (5, 3, [0, 1, 2]), (7, 2, [0, 3]), (195, 1, [0])])
def test_target_sets(n, c, expected):
    assert strided_targets(n, c).tolist() == expected


def test_score_pooling_of_a_merge_unit():
    np.testing.assert_allclose(pool_merge_units(np.array([0.1, 0.2, 0.3, 0.4])), [0.25])


def test_dominant_only_and_all_tokens():
    assert visionzip(HS, S, M, 3, 0).source.tolist() == [1, 3, 4]
    full = visionzip(HS, S, M, 4, 2)  # d + c = T: every token kept, nothing merged
    np.testing.assert_allclose(np.sort(full.tokens, axis=0), np.sort(HS, axis=0))


def test_groups_budgets_and_raster_order():
    tokens = np.concatenate([HS, HS * 10])
    out = visionzip_groups(tokens, np.concatenate([S, S]), np.concatenate([M, M]), np.array([4, 0]))
    # budget 4 -> 6:1 split 3 dominant + 1 contextual in group 0; group 1 contributes nothing
    assert len(out.tokens) == 4 and (out.source < 6).all()
    assert out.source.tolist() == sorted(out.source.tolist())
    out = visionzip_groups(tokens, np.concatenate([S, S]), np.concatenate([M, M]), np.array([0, 2]))
    assert (out.source >= 6).all() and len(out.source) == 2


def test_budget_errors():
    with pytest.raises(BudgetError, match="exceeds the 6 tokens"):
        visionzip(HS, S, M, 5, 2)
    with pytest.raises(ShapeError):
        visionzip(HS, S[:5], M, 1, 1)
    with pytest.raises(ShapeError):
        visionzip_groups(HS[:5], S[:5], M[:5], np.array([1, 1]))
