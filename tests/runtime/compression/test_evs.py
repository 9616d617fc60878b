"""EVS (spec §5b): the verification vector, the dissimilarity against torch's cosine_similarity,
and DyToK+EVS per-group budgets (our extension)."""
import numpy as np
import pytest

from runtime.compression import evs_dissimilarity, evs_groups, evs_keep_count, evs_mask
from runtime.errors import BudgetError, ShapeError

X = np.array([[[1, 0], [0, 1]], [[1, 0], [1, 0]], [[0, 1], [1, 0]]], np.float32)  # T = 3, h*w = 2, D = 2


def test_spec_verification_vector():
    np.testing.assert_array_equal(evs_dissimilarity(X, 3).ravel(), [255, 255, 0, 1, 1, 0])
    assert evs_keep_count(3, 2, 0.5) == 3 and evs_keep_count(3, 2, 0.2) == 4  # int(4.800000000000001)
    assert evs_mask(X, 3, 0.5).astype(int).tolist() == [1, 1, 0, 1, 0, 0]
    assert evs_mask(X.reshape(6, 2), 3, 0.2).astype(int).tolist() == [1, 1, 0, 1, 1, 0]
    assert evs_keep_count(3, 2, 0.99) == 2  # never below one group


def test_dissimilarity_matches_torch_cosine_similarity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 12, 16)).astype(np.float32)
    x[2, 3] = 0  # a zero vector: the eps clamp decides
    want = 1 - torch.nn.functional.cosine_similarity(torch.from_numpy(x[1:]), torch.from_numpy(x[:-1]), dim=-1, eps=1e-8)
    np.testing.assert_allclose(evs_dissimilarity(x, 5)[1:], want.numpy(), atol=1e-6)


def test_global_mask_keeps_the_most_changed_tokens_in_original_order():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4 * 9, 8)).astype(np.float32)
    x[9:18] = x[:9] + 1e-3 * rng.normal(size=(9, 8))  # group 1 barely changes
    mask = evs_mask(x, 4, 0.5)
    assert mask.sum() == 18 and mask[:9].all() and not mask[9:18].any()


def test_dytok_evs_per_group_budgets():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4 * 9, 8)).astype(np.float32)
    budgets = np.array([3, 9, 0, 5])
    idx = evs_groups(x, budgets)
    assert np.bincount(idx // 9, minlength=4).tolist() == budgets.tolist()
    assert idx[:3].tolist() == [0, 1, 2]  # first group: d = 255 everywhere, so raster order
    d = evs_dissimilarity(x, 4)
    g3 = idx[idx // 9 == 3] - 27
    assert set(g3) == set(np.argsort(-d[3], kind="stable")[:5])
    assert (np.diff(idx) > 0).all()


def test_bad_input():
    with pytest.raises(ShapeError, match="temporal groups"):
        evs_mask(np.zeros((7, 2)), 3, 0.5)
    with pytest.raises(BudgetError, match="pruning rate"):
        evs_mask(X, 3, 1.0)
    with pytest.raises(BudgetError, match="within"):
        evs_groups(X.reshape(6, 2), np.array([3, 0, 0]))
