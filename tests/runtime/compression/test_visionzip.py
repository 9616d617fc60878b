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


def test_paper_setting_on_llava_shapes():
    """DyToK + VisionZip as the paper runs it on LLaVA-OV (spec §1.5 pooling=True, §1.7): 32 frames of
    196 pooled tokens, V1.5's budgets (B = 49, U = 196) through the registered method. Per frame:
    V1.5's d dominant tokens ascending, then c contextual ones in target order, each frame equal to
    the torch reference of §2.1 (tests/reference.py)."""
    torch = pytest.importorskip("torch")
    from runtime.compression import Request, allocate_budgets, get_method
    from tests.reference import visionzip_reference

    w = np.arange(1, 33, dtype=np.float32)
    budgets = allocate_budgets(w / w.sum(), 49, 196)
    v15_d = [2, 5, 7, 10, 12, 15, 18, 20, 23, 25, 28, 30, 33, 36, 38, 41, 42, 45, 48, 50, 53, 55, 58, 60,
             63, 66, 68, 71, 73, 76, 78, 81]
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(32 * 196, 16)).astype(np.float32)
    importance = rng.random(32 * 196).astype(np.float32)
    metric = rng.normal(size=(32 * 196, 8)).astype(np.float32)
    kept = get_method("visionzip").compress({"tokens": tokens, "importance": importance, "metric": metric},
                                            Request((32, 14, 14), budgets, 0.25, prior=True))
    assert len(kept.source) == 1568 and (np.diff(kept.source // 196) >= 0).all()
    for f in range(32):
        mine = kept.source // 196 == f
        assert kept.dominant[mine].sum() == v15_d[f] and mine.sum() == budgets[f]
        sl = slice(f * 196, (f + 1) * 196)
        want, src = visionzip_reference(torch.from_numpy(tokens[sl]), torch.from_numpy(importance[sl]),
                                        torch.from_numpy(metric[sl]), v15_d[f], int(budgets[f]) - v15_d[f])
        np.testing.assert_array_equal(kept.source[mine] - f * 196, src.numpy())
        np.testing.assert_allclose(kept.tokens[mine], want.numpy(), rtol=1e-6, atol=1e-6)
