"""Admission arithmetic (pure): context checks, memory terms against hand-computed figures, the
linear-vs-quadratic prefill term, and --fit auto's search."""
import pytest

from runtime.admission import (OVERHEAD, ModelPlan, Request, assess, fit_request, kept_estimate, parse_bytes,
                               prefill_bytes, vision_bytes)

M = dict(hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16, num_layers=4,
         context_length=4096, vision_hidden_size=64, vision_intermediate_size=128, vision_key_dim=16, window_size=112,
         patch_size=14, merge_size=2)


def test_prefill_bytes_by_hand():
    s, c = 1000, 100
    kv = 2 * 2 * 4 * 2 * 16 * s
    acts = c * (8 * 64 + 3 * 128) + 3 * 4 * c * s + 2 * 4 * s * 16 + s * 64
    assert prefill_bytes(M, s, c) == 4 * (kv + acts)
    assert prefill_bytes(M, s, None) == prefill_bytes(M, s, s)


def test_chunked_prefill_is_linear_one_call_quadratic():
    small, big = prefill_bytes(M, 8000, 512), prefill_bytes(M, 32000, 512)
    assert big / small == pytest.approx(4, rel=0.05)
    small, big = prefill_bytes(M, 8000, None), prefill_bytes(M, 32000, None)
    assert big / small > 12


def test_vision_bytes_by_hand():
    grid = (6, 10, 8)
    n, p = 2 * 80, 80
    want = n * (10 * 64 + 3 * 128 + 1176) + 3 * 2 * 4 * p * p + 3 * n * 4 * 64
    assert vision_bytes(M, grid, 2) == 4 * want
    assert vision_bytes(M, grid, None) > vision_bytes(M, grid, 2)


def test_kept_estimate():
    assert kept_estimate("none", 8, 24, 0.25, None, None) == 192
    assert kept_estimate("visionzip", 8, 24, 0.25, None, None) == 48
    assert kept_estimate("uniform", 8, 24, 0.25, 10, 4) == 32
    assert kept_estimate("dycoke", 8, 24, 0.25, None, None) == 48


def test_assess_context_and_memory():
    p = ModelPlan((32, 40, 72), 52, 5760, 4)
    v = assess(M, p, None, None, None, budget=1e12)
    assert not v.ok and v.failing == {"primary"} and "context of 4096" in v.problems[0]
    p = ModelPlan((8, 8, 8), 52, 32, 4)
    assert assess(M, p, None, None, None, budget=1e12).ok
    v = assess(M, p, None, None, None, budget=1e5)
    assert not v.ok and "memory budget" in v.problems[0] and v.peak > 1e5
    a = ModelPlan((32, 40, 72), 52, 23040, 0, 3, 2048)
    v = assess(M, p, M, a, None, budget=1e12)
    assert v.failing == {"assistant"} and "assistant's prompt of 23092" in v.problems[0]
    held = 8 * 8 * 8 * 1176 * 4 + 8 * 8 * 8 // 4 * (64 + 16 + 1) * 4
    assert v.peak == pytest.approx(OVERHEAD * (held + sum(v.stages.values())))  # engines' arenas add up


def test_fit_request_lowers_pixels_then_frames():
    def evaluate(r):
        tokens = r.frames // 2 * r.max_pixels // 784 // 4
        p = ModelPlan((r.frames // 2, 2, 2), 50, tokens, 4)
        return assess(M, p, None, None, None, budget=1e12)

    req = Request(64, 720, 1280, 602112, 100352, None, 602112, 50)
    fitted, verdict = fit_request(evaluate, req, 100352)
    assert verdict.ok and fitted.frames == 64 and fitted.max_pixels < 602112
    fitted, verdict = fit_request(evaluate, Request(640, 720, 1280, 602112, 100352, None, 602112, 50), 100352)
    assert verdict.ok and fitted.max_pixels == 100352 and fitted.frames < 640  # Qwen's floor first, then frames


@pytest.mark.parametrize("text,want", [("12G", 12e9), ("1.5GB", 1.5e9), ("800M", 8e8), ("4096", 4096), ("2GiB", 2 ** 31)])
def test_parse_bytes(text, want):
    assert parse_bytes(text) == int(want)


@pytest.mark.parametrize("text", ["", "G", "-1G", "12X", "nan", "inf"])
def test_parse_bytes_rejects(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_fit_request_tries_exact_chunking_before_quality():
    """Over the memory budget with the prefill the largest stage: smaller prefill chunks first
    (exact), pixels untouched; a context failure never changes the chunk."""
    def evaluate(r, budget):
        p = ModelPlan((32, 40, 72), 50, 20000, 4, None, r.prefill_chunk)
        return assess(dict(M, context_length=32768), p, None, None, r.vision_chunk, budget=budget)

    req = Request(64, 720, 1280, 602112, 100352, None, 602112, 50, 2, 2048)
    budget = OVERHEAD * 1.0e9 + evaluate(req, 1e12).peak - OVERHEAD * prefill_bytes(M, 20050, 2048) + 1
    fitted, verdict = fit_request(lambda r: evaluate(r, budget), req, 100352)
    assert verdict.ok and fitted.prefill_chunk < 2048 and fitted.max_pixels == 602112
    fitted, _ = fit_request(lambda r: evaluate(r, 1e12), req, 100352)
    assert fitted == req


def test_siglip_memory_terms_by_hand():
    """LLaVA-OV's vision: full attention in every layer over each frame's 729 patches (no windows),
    the frames held as [T, 3, 384, 384] float32."""
    from runtime.families import REGISTRY
    fam = REGISTRY["llava_onevision"]
    m = dict(M, vision_hidden_size=1152, vision_intermediate_size=4304, vision_key_dim=72, hidden_size=896,
             image_size=384)
    grid = (16, 27, 27)
    n = 2 * 729
    assert fam.vision_bytes(m, grid, 2) == 4 * (n * (10 * 1152 + 3 * 4304 + 2 * 896) + 3 * 2 * 16 * 729 ** 2)
    assert fam.pixel_bytes(m, grid) == 16 * 3 * 384 * 384 * 4
    p = ModelPlan(grid, 52, 16 * 49, 4, visual=16 * 196)
    v = assess(m, p, None, None, 2, budget=1e12, families=(fam, fam))
    held = 16 * 3 * 384 * 384 * 4 + 16 * 196 * (896 + 72 + 1) * 4
    assert v.peak == pytest.approx(OVERHEAD * (held + sum(v.stages.values())))
    assert v.stages["primary vision"] == fam.vision_bytes(m, grid, 2)
