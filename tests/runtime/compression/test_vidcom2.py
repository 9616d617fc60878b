"""VidCom2 (spec §8): the verification vectors V8.1-V8.3, DyToK budgets (§8.6), bad input, and a
slow reference written from the §8.3 text (loops, float64 except the float32 budget product)."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from runtime.compression.vidcom2 import vidcom2_budgets, vidcom2_keep, vidcom2_select, vidcom2_similarity
from runtime.errors import BudgetError

# V8.1: T = 2, h = w = 2, D = 4
X1 = np.array([[5, 3, 3, 1], [1, 0, 0, 0], [1, 4, 3, 5], [3, 3, 5, 4],
               [3, 3, 3, 5], [1, 4, 4, 0], [2, 5, 3, 0], [4, 4, 5, 1]], np.float32)
# V8.2: T = 1, h = 3, w = 5, D = 4
X2 = np.array([[5, 3, 3, 1], [1, 0, 0, 0], [1, 4, 3, 5], [3, 3, 5, 4], [3, 3, 3, 5], [1, 4, 4, 0], [2, 5, 3, 0],
               [4, 4, 5, 1], [0, 5, 0, 3], [0, 1, 2, 2], [2, 0, 0, 0], [0, 4, 3, 3], [1, 3, 4, 2], [2, 5, 4, 5],
               [2, 4, 5, 3]], np.float32)
# V8.3: T = 3, h = w = 2, D = 4; groups 0 and 1 identical
G01 = [[2, 3, 4, 5], [0, 0, 4, 5], [1, 1, 5, 2], [1, 4, 1, 2]]
X3 = np.array(G01 + G01 + [[5, 0, 2, 2], [5, 1, 3, 1], [0, 4, 0, 1], [2, 2, 0, 5]], np.float32)

WIDTHS = (1 / 8, 1 / 4, 1 / 2, 1, 2)


def exact_variances(x):
    """Population variance of each channel in exact rational arithmetic (ties are exact ties)."""
    out = []
    for c in range(x.shape[1]):
        col = [Fraction(float(a)) for a in x[:, c]]
        mean = sum(col) / len(col)
        out.append(sum((a - mean) ** 2 for a in col) / len(col))
    return out


def reference(x, grid, r, budgets=None, float32_product=True):
    """§8.3 step by step: per-token loops in float64; the budget product s_t * N in float32 and
    rounded half to even (step 6); ties: lower index first (step 7). -> (kept, k, sN, c [T][N], u)"""
    t_, h, w = grid
    n, d = h * w, x.shape[1]
    rows = [[float(a) for a in row] for row in x]
    var = exact_variances(x)
    channels = sorted(range(d), key=lambda c: (var[c], c))[:int(0.5 * d)]  # equal variances: lower index
    z = []
    for row in rows:
        sel = [row[c] for c in channels]
        norm = max(math.sqrt(sum(a * a for a in sel)), 1e-12)
        z.append([a / norm for a in sel])
    cdim = len(channels)
    mu_vid = [sum(zi[c] for zi in z) / len(z) for c in range(cdim)]
    mu_t = [[sum(z[t * n + i][c] for i in range(n)) / n for c in range(cdim)] for t in range(t_)]

    def kernel(zi, mu):
        d2 = sum((a - b) ** 2 for a, b in zip(zi, mu))
        return sum(math.exp(-d2 / (2 * a)) for a in WIDTHS)

    v = [[kernel(z[t * n + i], mu_vid) for i in range(n)] for t in range(t_)]
    f = [[kernel(z[t * n + i], mu_t[t]) for i in range(n)] for t in range(t_)]
    u = [-sum(v[t]) / n for t in range(t_)]
    top = max(u)
    e = [math.exp((ut - top) / 0.01) for ut in u]
    p = [ei / sum(e) for ei in e]
    s = [min(r * (1 + pt - sum(p) / t_), 1.0) for pt in p]
    if float32_product:
        k = [max(1, round(float(np.float32(st_) * np.float32(n)))) for st_ in s]
    else:  # the May-2025 code: float32 s, product and round() in Python floats
        k = [max(1, round(float(np.float32(st_)) * n)) for st_ in s]
    if budgets is not None:
        k = [int(b) for b in budgets]
    score = [[v[t][i] + f[t][i] for i in range(n)] for t in range(t_)]
    kept = []
    for t in range(t_):
        kept += sorted(t * n + i for i in sorted(range(n), key=lambda i: (score[t][i], i))[:k[t]])
    return kept, k, [st_ * n for st_ in s], score, u


@pytest.mark.parametrize("x,grid,r,u,k,kept", [
    (X1, (2, 2, 2), 0.5, [-3.874765, -4.457314], [3, 1], [0, 1, 2, 5]),
    (X3, (3, 2, 2), 0.5, [-3.845919, -3.845919, -3.274512], [1, 1, 3], [1, 5, 8, 9, 10]),
])
def test_spec_vectors_v81_v83(x, grid, r, u, k, kept):
    assert vidcom2_keep(x, grid, r).tolist() == kept
    assert vidcom2_budgets(x, grid, r).tolist() == k
    v, _ = vidcom2_similarity(x, grid)
    np.testing.assert_allclose(-v.mean(axis=1), u, atol=2e-6)
    assert reference(x, grid, r)[0] == kept  # the slow reference agrees on the vectors too


def test_spec_scores_v81_v83():
    v, f = vidcom2_similarity(X1, (2, 2, 2))
    np.testing.assert_allclose(v + f, [[9.165367, 5.558998, 6.824276, 9.726800],
                                       [9.522807, 8.126163, 9.037502, 9.522807]], atol=2e-6)
    v, f = vidcom2_similarity(X3, (3, 2, 2))
    groups01 = [8.977308, 5.319942, 8.727043, 7.874301]
    np.testing.assert_allclose(v + f, [groups01, groups01, [5.781873, 6.964122, 5.333760, 9.105257]], atol=2e-6)


def test_spec_vector_v82_float32_half_way_rounding():
    kept = vidcom2_keep(X2, (1, 3, 5), 0.9)
    assert kept.tolist() == list(range(14))  # float32(0.9) * 15 = 13.5 -> 14 (half to even)
    v, f = vidcom2_similarity(X2, (1, 3, 5))
    np.testing.assert_allclose(np.sort(v + f)[0, -2:], [9.413485, 9.688608], atol=2e-6)
    assert np.argmax(v + f) == 14  # the dropped token is the largest score
    # negative test: the product in Python floats (the May-2025 code) gives 13.4999996 -> 13
    assert reference(X2, (1, 3, 5), 0.9, float32_product=False)[1] == [13]
    assert reference(X2, (1, 3, 5), 0.9)[1] == [14]


def test_per_group_counts_equal_the_budgets():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6 * 20, 16)).astype(np.float32)
    for r in (0.05, 0.25, 0.5, 1.0):
        k = vidcom2_budgets(x, (6, 4, 5), r)
        kept = vidcom2_keep(x, (6, 4, 5), r)
        assert np.bincount(kept // 20, minlength=6).tolist() == k.tolist()
        assert (np.diff(kept) > 0).all() and (k >= 1).all() and (k <= 20).all()
    assert vidcom2_budgets(x, (6, 4, 5), 1.0).sum() < 120  # r = 1: groups with p < 1/T keep fewer than N


def test_dytok_budgets_equal_to_its_own_give_its_own_output():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5 * 12, 24)).astype(np.float32)
    own = vidcom2_budgets(x, (5, 3, 4), 0.3)
    want = vidcom2_keep(x, (5, 3, 4), 0.3)
    np.testing.assert_array_equal(vidcom2_keep(x, (5, 3, 4), 0.3, budgets=own), want)
    np.testing.assert_array_equal(vidcom2_select(x, (5, 3, 4), own), want)
    np.testing.assert_array_equal(vidcom2_keep(x, (5, 3, 4), 0.9, budgets=own), want)  # r unused with budgets


def test_dytok_budgets_zero_and_full_groups():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4 * 6, 8)).astype(np.float32)
    kept = vidcom2_select(x, (4, 2, 3), np.array([0, 6, 2, 1]))
    assert np.bincount(kept // 6, minlength=4).tolist() == [0, 6, 2, 1]
    assert set(range(6, 12)) <= set(kept.tolist())
    v, f = vidcom2_similarity(x, (4, 2, 3))
    g2 = kept[kept // 6 == 2] - 12
    assert set(g2.tolist()) == set(np.argsort(v[2] + f[2])[:2].tolist())


def test_edge_cases():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(9, 6)).astype(np.float32)
    assert len(vidcom2_keep(x, (1, 3, 3), 0.5)) == 4  # T = 1: round(4.5) = 4 (half to even)
    assert vidcom2_budgets(x, (3, 1, 3), 0.01).tolist() == [1, 1, 1]  # floor of one token per group
    assert vidcom2_keep(np.zeros((0, 6), np.float32), (0, 3, 3), 0.5).tolist() == []
    x[4] = 0  # a zero row normalises to the zero vector, no error
    assert len(vidcom2_keep(x, (1, 3, 3), 1.0)) == 9
    same = np.tile(x[:3], (3, 1))  # identical groups: equal budgets, equal local selections
    kept = vidcom2_keep(same, (3, 1, 3), 0.5)
    local = [kept[kept // 3 == g] % 3 for g in range(3)]
    assert all(np.array_equal(local[0], lg) for lg in local)


@pytest.mark.parametrize("retention", [0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_bad_retention(retention):
    with pytest.raises(BudgetError, match="retention"):
        vidcom2_keep(X1, (2, 2, 2), retention)
    with pytest.raises(BudgetError, match="retention"):
        vidcom2_budgets(X1, (2, 2, 2), retention)


def test_bad_shapes_and_budgets():
    with pytest.raises(BudgetError, match="tokens must be"):
        vidcom2_keep(X1, (2, 2, 3), 0.5)
    with pytest.raises(BudgetError, match="tokens must be"):
        vidcom2_select(X1.ravel(), (2, 2, 2), [1, 1])
    with pytest.raises(BudgetError, match="grid"):
        vidcom2_keep(X1, (2, 2), 0.5)
    with pytest.raises(BudgetError, match="grid"):
        vidcom2_keep(X1, (2, -2, -2), 0.5)
    with pytest.raises(BudgetError, match="finite"):
        vidcom2_keep(np.full((8, 4), np.nan, np.float32), (2, 2, 2), 0.5)
    with pytest.raises(BudgetError, match="one integer per temporal group"):
        vidcom2_keep(X1, (2, 2, 2), 0.5, budgets=[1, 1, 1])
    with pytest.raises(BudgetError, match=r"within \[0, 4\]"):
        vidcom2_select(X1, (2, 2, 2), [5, 1])
    with pytest.raises(BudgetError, match=r"within \[0, 4\]"):
        vidcom2_keep(X1, (2, 2, 2), 0.5, budgets=[-1, 1])
    with pytest.raises(BudgetError, match="integers"):
        vidcom2_select(X1, (2, 2, 2), [1.5, 1])


def _near_half(x: float, tol: float) -> bool:
    return abs(x - math.floor(x) - 0.5) < tol


@st.composite
def videos(draw):
    t, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    d = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "integers", "repeated"]))
    if kind == "normal":
        x = rng.normal(size=(t * h * w, d)) * draw(st.sampled_from([0.01, 1.0, 100.0]))
    elif kind == "integers":  # many exact ties
        x = rng.integers(-3, 4, size=(t * h * w, d))
    else:  # some groups repeat earlier ones
        x = rng.normal(size=(t, h * w, d))
        x[rng.random(t) < 0.5] = x[0]
        x = x.reshape(t * h * w, d)
    r = draw(st.sampled_from([0.1, 0.25, 0.5, 0.9, 1.0]) | st.floats(0.01, 1.0))
    return x.astype(np.float32), (t, h, w), r


@settings(max_examples=150, deadline=None)
@given(videos())
def test_agrees_with_slow_reference(case):
    x, grid, r = case
    n = grid[1] * grid[2]
    kept_ref, k_ref, sn_ref, score_ref, _ = reference(x, grid, r)
    var = sorted(exact_variances(x))
    c = x.shape[1] // 2
    assume(var[c] == var[c - 1] or var[c] - var[c - 1] > 1e-6 * var[c])  # the channel choice is not a near-tie
    k = vidcom2_budgets(x, grid, r)
    for t in range(grid[0]):  # equal, except float32-vs-float64 noise at a half-way product
        near = _near_half(sn_ref[t], 1e-3 * n)
        assert k[t] == k_ref[t] or (abs(k[t] - k_ref[t]) == 1 and near), (t, k, k_ref, sn_ref)
    kept = vidcom2_keep(x, grid, r)
    np.testing.assert_array_equal(kept, vidcom2_select(x, grid, k))
    assert np.bincount(kept // n, minlength=grid[0]).tolist() == k.tolist()
    for t in range(grid[0]):  # the kept tokens are the k smallest scores (ties as sets)
        score = np.array(score_ref[t])
        mine = np.zeros(n, bool)
        mine[kept[kept // n == t] - t * n] = True
        if mine.any() and (~mine).any():
            assert score[mine].max() <= score[~mine].min() + 1e-5
    if k.tolist() == k_ref:
        gap_free = all(len(set(np.round(s, 4))) == len(s) for s in score_ref)
        if gap_free:
            assert kept.tolist() == kept_ref
