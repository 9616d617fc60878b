"""FastV, DyCoke (TTM + KV step), DynTok and the baselines: every vector of spec §3.5, §4.5, §5."""
import numpy as np
import pytest

from runtime.compression.baselines import select_groups, uniform_indices
from runtime.compression.dycoke import kv_keep, ttm, ttm_keep
from runtime.compression.dyntok import dyntok_frame, dyntok_groups
from runtime.compression.fastv import fastv_keep, fastv_keep_count, fastv_keep_per_frame
from runtime.errors import BudgetError, ShapeError


def test_fastv_vector():
    attn = np.zeros(10, np.float32)
    attn[2:8] = [0.05, 0.20, 0.01, 0.15, 0.02, 0.07]
    keep = fastv_keep(attn, vision_start=2, num_visual=6, drop_ratio=0.5)
    assert keep.tolist() == [0, 1, 3, 5, 7, 8, 9]  # also the position ids of layers >= K
    assert 10 == len(attn)  # first generated token continues at position N = 10


@pytest.mark.parametrize("v,r,k", [(576, 0.5, 288), (576, 0.75, 144), (6272, 0.5, 3136), (5, 0.5, 2)])
def test_fastv_counts(v, r, k):
    assert fastv_keep_count(v, r) == k


def test_fastv_per_frame():
    attn = np.array([9, 9, 0.1, 0.4, 0.3, 0.2, 0.9, 0.8, 9], np.float32)
    assert fastv_keep_per_frame(attn, 2, 6, np.array([1, 2])).tolist() == [0, 1, 3, 6, 7, 8]
    with pytest.raises(BudgetError):
        fastv_keep_per_frame(attn, 2, 6, np.array([4, 0]))


def unit(deg):
    r = np.deg2rad(np.asarray(deg, np.float64))
    return np.stack([np.cos(r), np.sin(r)], axis=-1).astype(np.float32)


TTM_ANGLES = [[0, 90, 180, 270], [10, 150, 185, 300], [40, 100, 180, 200], [45, 100, 90, 200],
              [0, 0, 0, 0], [20, 60, 0, 90], [90, 90, 90, 90], [0, 30, 45, 120]]


def test_ttm_vector():
    x = unit(TTM_ANGLES).reshape(32, 2)
    keep = ttm(x, num_frames=8, prune_ratio=0.5)
    per_frame = [[int(i) - 4 * f for i in keep if i // 4 == f] for f in range(8)]
    assert per_frame == [[0, 1, 2, 3], [1, 3], [3, 0], [2, 0], [0, 1, 2, 3], [3, 1], [0, 1, 2, 3], [0, 1]]
    assert len(keep) == 22


@pytest.mark.parametrize("frames,count", [(8, 878), (16, 1618), (32, 3098), (64, 6058), (5, 370)])
def test_ttm_counts(frames, count):
    x = np.random.default_rng(0).normal(size=(frames * 196, 8)).astype(np.float32)
    assert len(ttm(x, frames, 0.7)) == count
    assert ttm_keep(196, 0.7) == 58


def test_ttm_few_frames_deviation():
    x = np.random.default_rng(0).normal(size=(3 * 4, 2)).astype(np.float32)
    assert len(ttm(x, 3, 0.5)) == 4 + 2  # odd last frame dropped (reference); stage 2 skipped, no crash
    assert len(ttm(x, 3, 0.5, drop_odd_last=False)) == 4 + 2 + 4
    assert len(ttm(x[:4], 1, 0.5)) == 4


def test_kv_step_vectors():
    beta = np.array([0.05, 0.30, 0.10, 0.20, 0.15, 0.02])
    stable = np.array([0.05, 0.29, 0.11, 0.21, 0.14, 0.03])
    moved = np.array([0.30, 0.05, 0.20, 0.02, 0.10, 0.15])
    assert kv_keep(beta, stable, vision_start=2, seq_len=12, prune_ratio=0.5) is None
    assert kv_keep(beta, moved, 2, 12, 0.5).tolist() == [0, 1, 3, 5, 6, 8, 9, 10, 11]
    assert kv_keep(beta, None, 2, 12, 0.5).tolist() == [0, 1, 3, 5, 6, 8, 9, 10, 11]
    assert len(kv_keep(np.ones(3098), None, 14, 3200, 0.8)) == 3200 - 3098 + 619
    assert len(kv_keep(np.ones(10), None, 0, 10, 0.8)) == 1  # int(10 * (1 - 0.8)) = 1


def test_dyntok_vector():
    x = unit([0, 20, 40, 100, 110, 200])
    h = np.array([[3, 0], [0, 3], [6, 6], [1, 1], [3, 5], [5, 5]], np.float32)
    out = dyntok_frame(x, h, width=6, threshold=0.6)
    np.testing.assert_allclose(out.tokens, [[3, 3], [2, 3], [5, 5]])
    assert out.source.tolist() == [0, 3, 5] and out.sizes.tolist() == [3, 2, 1]


def test_dyntok_budget_mode():
    x = unit([0, 20, 40, 100, 110, 200])
    h = np.arange(12, dtype=np.float32).reshape(6, 2)
    assert dyntok_frame(x, h, 6, budget=3).source.tolist() == [0, 3, 5]  # weakest two links cut
    assert len(dyntok_frame(x, h, 6, budget=6).tokens) == 6
    assert len(dyntok_frame(x, h, 6, budget=0).tokens) == 0
    two_rows = dyntok_frame(x, h, width=3, budget=2)  # row end is cut first
    assert two_rows.source.tolist() == [0, 3]
    out = dyntok_groups(np.concatenate([x, x]), np.concatenate([h, h]), 2, 6, budgets=np.array([1, 2]))
    assert out.source.tolist() == [0, 6, 11] and out.sizes.sum() == 12
    with pytest.raises(BudgetError):
        dyntok_frame(x, h, 6, budget=7)
    with pytest.raises(ShapeError):
        dyntok_frame(x, h, 4)


def test_baselines():
    assert uniform_indices(8, 4).tolist() == [0, 2, 4, 6]
    assert select_groups(8, np.array([2, 1])).tolist() == [0, 2, 4]
    r = select_groups(20, np.array([3, 3]), "random", seed=1)
    assert len(r) == 6 and len(set(r.tolist())) == 6 and (r[:3] < 10).all() and (r[3:] >= 10).all()
    with pytest.raises(BudgetError):
        select_groups(8, np.array([5, 0]))
    with pytest.raises(BudgetError, match="unknown"):
        select_groups(8, np.array([1, 1]), "best")
