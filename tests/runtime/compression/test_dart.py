"""DART (spec §9): the verification vectors V9.1-V9.3, the reference's crash cases (§9.7), the
embedding-level form (§9.6), per-group DyToK budgets (§9.8 option 2), and a slow reference written
from the §9.3 text (loops, float64, the pivot order of a Python set)."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from runtime.compression.dart import (dart_keep, dart_keep_embeddings, dart_keep_embeddings_groups, dart_keep_groups,
                                      dart_picks)
from runtime.errors import BudgetError, ShapeError

# V9.1: S = 12, span [1, 9); H rows are unit vectors at these angles; keys [1, 0] except 4 and 10
THETA = np.deg2rad([0, 95, 330, 225, 100, 75, 205, 110, 190, 10, 200, 300])
H1 = np.stack([np.cos(THETA), np.sin(THETA)], axis=1).astype(np.float32)
K1 = np.tile(np.float32([1, 0]), (12, 1))
K1[4], K1[10] = [3, 0], [0, 2]
# V9.3: S = 16, span [1, 13) (3 groups x 4), D = 3, keys H_kv = 1, d_h = 2
H3 = np.array([[1, -2, 3], [3, -3, -2], [-2, -2, 1], [-1, 0, -2], [3, 1, 1], [-3, -2, 3], [-1, 3, 2], [-3, 0, 0],
               [0, -3, 2], [-2, -1, -1], [-1, 0, 2], [0, 2, 3], [-2, -2, 0], [-2, 1, 1], [1, 3, -1], [3, 3, 3]],
              np.float32)
K3 = np.array([[-1, -3], [3, 3], [-1, 1], [-2, 3], [2, -1], [2, -2], [3, 2], [2, 1], [-3, 2], [1, -2], [3, -3],
               [-1, 2], [2, -3], [-2, 3], [0, -3], [-1, 1]], np.float32)


def reference(hidden, keys, span, picks_for, image_pivots, text_pivots, groups=None, pivot_order="set"):
    """§9.3 (or §9.8 option 2 with ``groups`` equal groups) step by step, float64, ties to the lower position.

    picks_for(pivot count, group index) -> picks per pivot in pivot order. Returns (kept visual
    positions, smallest boundary gap of any ranking, i.e. how far from a tie the result is)."""
    s, n = span
    seq = len(hidden)
    l1 = [sum(abs(float(a)) for a in keys[:, j, :].ravel()) for j in range(seq)]
    gaps = [math.inf]

    def top(positions, k, score):
        ranked = sorted(positions, key=lambda j: (score(j), j))
        if 0 < k < len(ranked):
            gaps.append(abs(score(ranked[k]) - score(ranked[k - 1])))
        return ranked[:k]

    def cos(a, b):
        dot = sum(float(x) * float(y) for x, y in zip(hidden[a], hidden[b]))
        na = math.sqrt(sum(float(x) ** 2 for x in hidden[a]))
        nb = math.sqrt(sum(float(y) ** 2 for y in hidden[b]))
        return dot / (max(na, 1e-8) * max(nb, 1e-8))

    text = top(range(s + n, seq), text_pivots, lambda j: -l1[j])
    per = n // (groups or 1)
    kept = []
    for g in range(groups or 1):
        group = range(s + g * per, s + (g + 1) * per)
        img = top(group, image_pivots if groups is None else min(image_pivots, picks_for(None, g)), lambda j: -l1[j])
        pivots = list(set(img + text)) if pivot_order == "set" else sorted(img + text)
        candidates = [j for j in group if j not in img]
        kept += img
        for q, m in zip(pivots, picks_for(len(pivots), g)):
            if m > len(candidates):
                raise IndexError("topk out of range")
            taken = top(candidates, m, lambda j: cos(q, j))
            kept += taken
            candidates = [j for j in candidates if j not in taken]
    return sorted(kept), min(gaps)


def qwen_picks(n, rho, p_img, p_txt):
    m = int(n * (1 - rho) / (p_img + p_txt))
    return lambda count, g: [m] * count


def group_picks(budgets, p_img, p_txt):
    """§9.8 option 2: m_t = (a_t - P')//(P' + P_txt), the remainder one each to the first pivots."""
    def picks(count, g):
        a = int(budgets[g])
        if count is None:  # asks for the group's image-pivot budget
            return a
        p = min(p_img, a)
        m, extra = divmod(a - p, p + p_txt) if a else (0, 0)
        return [m + (j < extra) for j in range(count)] if a else [0] * count
    return picks


def visual(kept, span):
    s, n = span
    return [int(i) for i in kept if s <= i < s + n]


def test_spec_vector_v91_pivot_order_matters():
    kept = dart_keep(H1, K1[None], (1, 8), 0.75, image_pivots=1, text_pivots=1)
    assert kept.tolist() == [0, 2, 3, 4, 9, 10, 11]  # visual [2, 3, 4] plus the text around the span
    assert list({4, 10}) == [10, 4]  # the CPython set order the spec relies on
    assert reference(H1, K1[None], (1, 8), qwen_picks(8, 0.75, 1, 1), 1, 1)[0] == [2, 3, 4]
    # negative test: pivots in ascending index order would keep [2, 4, 5]
    assert reference(H1, K1[None], (1, 8), qwen_picks(8, 0.75, 1, 1), 1, 1, pivot_order="ascending")[0] == [2, 4, 5]


def test_spec_vector_v93_three_groups():
    kept = dart_keep(H3, K3[None], (1, 12), 0.5, image_pivots=2, text_pivots=1)
    assert visual(kept, (1, 12)) == [1, 3, 4, 6, 8, 10, 11, 12]
    assert kept.tolist() == [0, 1, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15]
    assert reference(H3, K3[None], (1, 12), qwen_picks(12, 0.5, 2, 1), 2, 1)[0] == [1, 3, 4, 6, 8, 10, 11, 12]


@pytest.mark.parametrize("n,rho,p_img,p_txt,m,count", [
    (576, 0.778, 4, 4, 15, 124), (1024, 0.9, 4, 4, 12, 100), (100, 0.95, 4, 4, 0, 4), (200, 0.9, 8, 0, 2, 24),
])
def test_spec_vector_v92_budgets(n, rho, p_img, p_txt, m, count):
    rng = np.random.default_rng(n)
    seq = 3 + n + 9
    hidden = rng.normal(size=(seq, 16)).astype(np.float32)
    keys = rng.normal(size=(2, seq, 4)).astype(np.float32)
    assert dart_picks(n, rho, p_img, p_txt) == m
    kept = dart_keep(hidden, keys, (3, n), rho, p_img, p_txt)
    assert len(visual(kept, (3, n))) == count and len(kept) == count + 12
    assert len(dart_keep_embeddings(hidden[3:3 + n], hidden[3 + n:], rho, p_img, p_txt)) == count


def test_spec_vector_v92_llava_variant_and_crash():
    rng = np.random.default_rng(576)
    hidden = rng.normal(size=(600, 8)).astype(np.float32)
    keys = rng.normal(size=(1, 600, 4)).astype(np.float32)
    assert len(visual(dart_keep(hidden, keys, (10, 576), 0.778, max_picks=128), (10, 576))) == 132  # m = 16
    assert dart_picks(576, 0.778, max_picks=128) == 16
    assert dart_picks(576, 0.778, llava=True) == 15  # M = None: 127.872 // 8 -> 4 + 8 * 15 = 124
    with pytest.raises(BudgetError, match="reduction ratio 0 "):
        dart_keep(hidden[:80], keys[:, :80], (8, 64), 0)  # L = 64, rho = 0: m = 8, 64 picks > 60 candidates


def test_float_rounding_of_the_pick_count():
    assert dart_picks(1024, 0.9) == 12  # 1 - 0.9 = 0.09999999999999998 -> int(12.79...) = 12
    assert dart_picks(8, 0.75, 1, 1) == 1


def test_zero_picks_keeps_only_the_image_pivots():
    rng = np.random.default_rng(7)
    hidden = rng.normal(size=(110, 8)).astype(np.float32)
    keys = rng.normal(size=(2, 110, 4)).astype(np.float32)
    kept = visual(dart_keep(hidden, keys, (2, 100), 0.95), (2, 100))
    l1 = np.abs(keys).sum(axis=(0, 2))[2:102]
    assert kept == sorted((np.argsort(-l1)[:4] + 2).tolist())


def test_no_text_pivots_is_allowed():
    kept = dart_keep(H3, K3[None], (1, 12), 0.5, image_pivots=2, text_pivots=0)
    want = reference(H3, K3[None], (1, 12), qwen_picks(12, 0.5, 2, 0), 2, 0)[0]
    assert visual(kept, (1, 12)) == want and len(want) == 2 + 2 * 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(span=(1, 12), reduction=0.0, image_pivots=2, text_pivots=1), "reduction ratio 0.0 asks for"),
    (dict(span=(1, 12), reduction=0.5, image_pivots=2, text_pivots=4), "4 text pivots but only 3"),
    (dict(span=(1, 12), reduction=0.5, image_pivots=13, text_pivots=1), "13 image pivots but the visual span has only"),
    (dict(span=(1, 12), reduction=0.5, image_pivots=2, text_pivots=1, max_picks=12), "max_picks 12 asks for 4"),
    (dict(span=(1, 12), reduction=1.5), "reduction ratio"),
    (dict(span=(1, 12), reduction=-0.1), "reduction ratio"),
    (dict(span=(1, 12), reduction=0.5, image_pivots=0, text_pivots=0), "at least one pivot"),
])
def test_crash_cases_raise_budget_error(kwargs, match):
    with pytest.raises(BudgetError, match=match):
        dart_keep(H3, K3[None], **kwargs)


def test_bad_shapes():
    with pytest.raises(ShapeError, match="span"):
        dart_keep(H3, K3[None], (10, 12), 0.5)
    with pytest.raises(ShapeError, match="same S"):
        dart_keep(H3, K3[None, :10], (1, 8), 0.5)
    with pytest.raises(ShapeError, match="same D"):
        dart_keep_embeddings(H3[1:13], K3[13:], 0.5)
    with pytest.raises(ShapeError, match="equal groups"):
        dart_keep_groups(H3, K3[None], (1, 12), np.array([2, 2, 2, 2, 2]))
    with pytest.raises(BudgetError, match=r"within \[0, 4\]"):
        dart_keep_groups(H3, K3[None], (1, 12), np.array([5, 2, 2]))


def test_embedding_form_is_the_in_llm_form_on_embeddings():
    rng = np.random.default_rng(8)
    prompt = rng.normal(size=(5 + 48 + 7, 12)).astype(np.float32)
    want = dart_keep(prompt, prompt[None], (5, 48), 0.7, 3, 2)  # keys = hidden = the embeddings
    got = dart_keep_embeddings(prompt[5:53], prompt[53:], 0.7, 3, 2, start=5)
    assert (got + 5).tolist() == visual(want, (5, 48))
    assert len(dart_keep_embeddings(prompt[5:53], None, 0.7, 3, 0)) == 3 + 3 * 4  # no text pivots: m = int(4.8)
    with pytest.raises(BudgetError, match="text pivots"):
        dart_keep_embeddings(prompt[5:53], None, 0.7, 3, 2)


def test_embedding_pivots_are_the_largest_l1_norms():
    tokens = np.zeros((8, 4), np.float32)
    tokens[:, 0] = 0.1
    tokens[1] = [3, 0, 0, 0]  # L1 3 (L2 3)
    tokens[5] = [1, 1, 1, 1]  # L1 4 (L2 2)
    tokens[6] = [2, 1.5, 0, 0]  # L1 3.5 (L2 2.5)
    assert dart_keep_embeddings(tokens, None, 1.0, image_pivots=2, text_pivots=0).tolist() == [5, 6]  # m = 0


def test_per_group_counts_equal_the_budgets():
    rng = np.random.default_rng(9)
    hidden = rng.normal(size=(2 + 5 * 16 + 6, 10)).astype(np.float32)
    keys = rng.normal(size=(2, len(hidden), 4)).astype(np.float32)
    budgets = np.array([0, 16, 3, 9, 1])
    kept = dart_keep_groups(hidden, keys, (2, 80), budgets)
    vis = np.array(visual(kept, (2, 80))) - 2
    assert np.bincount(vis // 16, minlength=5).tolist() == budgets.tolist()
    assert len(kept) == 2 + 6 + budgets.sum()
    got = dart_keep_embeddings_groups(hidden[2:82], hidden[82:], budgets)
    assert np.bincount(got // 16, minlength=5).tolist() == budgets.tolist()


def test_per_group_with_one_group_is_global_dart():
    rng = np.random.default_rng(10)
    hidden = rng.normal(size=(1 + 40 + 5, 6)).astype(np.float32)
    keys = rng.normal(size=(1, len(hidden), 3)).astype(np.float32)
    global_ = dart_keep(hidden, keys, (1, 40), 0.3)  # m = int(40 * 0.7 / 8) = 3: 4 + 8 * 3 = 28 kept
    assert len(visual(global_, (1, 40))) == 28
    np.testing.assert_array_equal(dart_keep_groups(hidden, keys, (1, 40), np.array([28])), global_)


def assert_same_tokens(hidden, got, want, gap):
    """The kept visual positions equal the reference's; where the reference met an exact tie
    (``gap`` 0: repeated frames, identical rows) either of the twins may be kept (a matrix product
    can round identical rows differently in the last bit), so the kept rows' contents are compared."""
    if gap > 0:
        assert got == want
        return
    rows = lambda idx: sorted(hidden[i].tobytes() for i in idx)  # noqa: E731
    assert len(got) == len(want) and rows(got) == rows(want)


@st.composite
def prompts(draw):
    n_groups, per = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    n = n_groups * per
    pre, post = draw(st.integers(0, 4)), draw(st.integers(0, 6))
    d, heads = draw(st.integers(2, 10)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    hidden = rng.normal(size=(pre + n + post, d))
    if draw(st.booleans()):  # repeated frames: exact duplicate rows, ties resolved to the lower position
        hidden[pre + per:pre + n] = np.tile(hidden[pre:pre + per], (n_groups - 1, 1))
    if draw(st.booleans()):
        hidden[pre + int(rng.integers(n))] = 0  # a zero row: cosine 0 through the clamp
    keys = rng.normal(size=(heads, pre + n + post, 4))
    budgets = draw(st.lists(st.integers(0, per), min_size=n_groups, max_size=n_groups))
    return hidden.astype(np.float32), keys.astype(np.float32), (pre, n), np.array(budgets, np.int64)


@settings(max_examples=150, deadline=None)
@given(prompts(), st.integers(0, 5), st.integers(0, 5), st.floats(0, 1))
def test_agrees_with_slow_reference(prompt, p_img, p_txt, rho):
    hidden, keys, span, _ = prompt
    assume(p_img + p_txt > 0)
    try:
        want, gap = reference(hidden, keys, span, qwen_picks(span[1], rho, p_img, p_txt), p_img, p_txt)
    except IndexError:  # the reference's topk out of range
        with pytest.raises(BudgetError):
            dart_keep(hidden, keys, span, rho, p_img, p_txt)
        return
    if p_txt > len(hidden) - sum(span) or p_img > span[1]:
        with pytest.raises(BudgetError):
            dart_keep(hidden, keys, span, rho, p_img, p_txt)
        return
    assume(gap == 0 or gap > 1e-5)  # no float32-vs-float64 near-tie decides a ranking
    assert_same_tokens(hidden, visual(dart_keep(hidden, keys, span, rho, p_img, p_txt), span), want, gap)


@settings(max_examples=100, deadline=None)
@given(prompts(), st.integers(0, 5), st.integers(0, 3))
def test_per_group_agrees_with_slow_reference(prompt, p_img, p_txt):
    hidden, keys, span, budgets = prompt
    n_groups = len(budgets)
    assume(p_img + p_txt > 0 and p_txt <= len(hidden) - sum(span))
    want, gap = reference(hidden, keys, span, group_picks(budgets, p_img, p_txt), p_img, p_txt, groups=n_groups)
    assume(gap == 0 or gap > 1e-5)
    kept = visual(dart_keep_groups(hidden, keys, span, budgets, p_img, p_txt), span)
    assert_same_tokens(hidden, kept, want, gap)
    assert np.bincount((np.array(kept, int) - span[0]) // (span[1] // n_groups),
                       minlength=n_groups).tolist() == budgets.tolist()
