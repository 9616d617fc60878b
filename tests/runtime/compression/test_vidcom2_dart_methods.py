"""The registered VidCom2 and DART methods (``vidcom2``, ``vidcom2-visionzip``, ``dart``,
``dart-embed``): what each hands to the spec functions for a Request (with and without the prior),
the final RMSNorm DART applies in NumPy, and the reference's crash cases (spec §9.7) as one
BudgetError in retention terms. The spec functions themselves are test_vidcom2.py / test_dart.py;
each method end to end against transformers is tests/e2e/test_methods.py."""
import numpy as np
import pytest

from runtime.compression import Request, get_method
from runtime.compression.dart import dart_keep, dart_keep_embeddings, dart_keep_groups, rms_norm
from runtime.compression.vidcom2 import vidcom2_budgets, vidcom2_keep, vidcom2_select
from runtime.compression.visionzip import visionzip_groups
from runtime.errors import BudgetError

GRID = (4, 2, 4)  # 4 groups of 8 merged tokens
N, D = int(np.prod(GRID)), 12
RNG = np.random.default_rng(7)
VISION = {"tokens": RNG.normal(size=(N, D)).astype(np.float32), "importance": RNG.random(N).astype(np.float32),
          "metric": RNG.normal(size=(N, 6)).astype(np.float32)}
TEXT = RNG.normal(size=(9, D)).astype(np.float32)
BUDGETS = np.array([6, 1, 0, 1], np.int64)  # a prior's allocation, 8 = 25% of 32


def request(prior: bool, retention: float = 0.25, budget=None, text=TEXT) -> Request:
    return Request(GRID, BUDGETS, retention, budget, prior, text, 5)


def test_vidcom2_is_vidcoms_own_without_the_prior_and_takes_dytok_budgets_with_it():
    m = get_method("vidcom2")
    assert m.baseline and m.uses_budgets and not m.per_group and m.in_llm is None
    np.testing.assert_array_equal(m.compress(VISION, request(False)).source, vidcom2_keep(VISION["tokens"], GRID, 0.25))
    np.testing.assert_array_equal(m.compress(VISION, request(False, budget=2)).source,
                                  vidcom2_keep(VISION["tokens"], GRID, 0.25))  # 2 of 8 tokens per group
    kept = m.compress(VISION, request(True)).source
    np.testing.assert_array_equal(kept, vidcom2_select(VISION["tokens"], GRID, BUDGETS))
    np.testing.assert_array_equal(np.bincount(kept // 8, minlength=4), BUDGETS)


def test_vidcom2_budgets_with_visionzip_selection_ignore_the_prior():
    m = get_method("vidcom2-visionzip")
    assert m.baseline and not m.uses_budgets
    budgets = vidcom2_budgets(VISION["tokens"], GRID, 0.25)
    want = visionzip_groups(VISION["tokens"], VISION["importance"], VISION["metric"], budgets)
    for prior in (False, True):
        got = m.compress(VISION, request(prior))
        np.testing.assert_array_equal(got.source, want.source)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(np.bincount(got.source // 8, minlength=4), budgets)


def test_rms_norm_is_qwens_final_norm():
    h = RNG.normal(size=(5, D)).astype(np.float32) * 3
    w = RNG.normal(size=D).astype(np.float32)
    x = h.astype(np.float64)
    want = w * x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(rms_norm(h, w, 1e-6), want, rtol=1e-5, atol=1e-6)


def lower_outputs(seq: int, start: int, k: int = 2):
    """Fake lower-segment outputs of a split at layer k: hidden states [1, S, D], present keys."""
    out = {"hidden_states": RNG.normal(size=(1, seq, D)).astype(np.float32) * 4,
           "attention": RNG.random(seq).astype(np.float32), "final_norm": RNG.normal(1, 0.5, D).astype(np.float32),
           "final_norm_eps": 1e-6}
    for layer in range(k):
        out[f"present_key_{layer}"] = RNG.normal(size=(1, 2, seq, 4)).astype(np.float32)
        out[f"present_value_{layer}"] = RNG.normal(size=(1, 2, seq, 4)).astype(np.float32)
    return out


def test_dart_in_the_llm_reads_the_normalised_hidden_states_and_the_last_layers_keys():
    m = get_method("dart")
    assert m.baseline and m.final_norm and m.in_llm is not None
    start, seq = 5, 5 + N + 9
    lo = lower_outputs(seq, start, k=3)
    h = rms_norm(lo["hidden_states"][0], lo["final_norm"], 1e-6)
    keys = lo["present_key_2"][0]
    np.testing.assert_array_equal(m.in_llm(lo, request(False), start), dart_keep(h, keys, (start, N), 0.75))
    np.testing.assert_array_equal(m.in_llm(lo, request(True), start), dart_keep_groups(h, keys, (start, N), BUDGETS))
    # before the LLM every token goes in
    np.testing.assert_array_equal(m.compress(VISION, request(False)).source, np.arange(N))


def test_dart_on_embeddings_takes_the_text_after_the_span():
    m = get_method("dart-embed")
    assert m.baseline and m.in_llm is None
    kept = m.compress(VISION, request(False)).source
    np.testing.assert_array_equal(kept, dart_keep_embeddings(VISION["tokens"], TEXT, 0.75, start=5))
    assert len(kept) == 4 + 8 * int(N * 0.25 / 8)
    kept = m.compress(VISION, request(True)).source
    np.testing.assert_array_equal(np.bincount(kept // 8, minlength=4), BUDGETS)
    with pytest.raises(BudgetError, match="text after the visual span"):
        m.compress(VISION, request(False, text=None))


@pytest.mark.parametrize("name", ["dart", "dart-embed"])
def test_the_references_crash_cases_are_one_budget_error_in_retention_terms(name):
    m = get_method(name)
    with pytest.raises(BudgetError, match=r"retention 1: .* 32 in all, but only 28 .* use a retention below 1$") as err:
        m.compress(VISION, request(False, retention=1.0))  # rho = 0 (V9.2: L = 64, rho = 0 crashes)
    assert "\n" not in str(err.value)
    m.compress(VISION, request(False, retention=0.99))  # 8 pivots x 3 picks fit in the 28 candidates
    with pytest.raises(BudgetError, match="4 text pivots .* only 2 tokens"):
        m.compress(VISION, request(False, text=TEXT[:2]))
    m.compress(VISION, request(True, retention=1.0))  # per-group quotas never overrun a group
