"""Memory plan against figures computed by hand from Qwen2.5-VL-7B's config.json."""
import subprocess
import sys

import pytest

from runtime.memory_plan import REAL_MODELS, Workload, kv_bytes_per_token, llm_linear_params, llm_other_params, plan, vit_params

M7 = REAL_MODELS["qwen2.5-vl-7b"]


def test_7b_parameter_counts_by_hand():
    h, kv, inter, layers, vocab = 3584, 4 * 128, 18944, 28, 152064
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter  # 12,848,640 + 3,671,040 + 12,845,056 + 203,685,888
    assert per_layer == 233_050_624
    assert llm_linear_params(M7) == 28 * 233_050_624 == 6_525_417_472
    assert llm_other_params(M7) == 2 * vocab * h + layers * 2 * h + h == 1_090_199_040
    assert llm_linear_params(M7) + llm_other_params(M7) == 7_615_616_512  # Qwen2.5-7B: "7.61B parameters"
    e, i = 1280, 3420
    block = (3 * e * e + 3 * e) + (e * e + e) + (3 * e * i + 2 * i + e) + 2 * e
    assert vit_params(M7) == 1176 * e + 32 * block + (e + 5120 * 5120 + 5120 + 5120 * 3584 + 3584)
    assert 0.66e9 < vit_params(M7) < 0.69e9  # the ~670M-parameter ViT


def test_7b_kv_cache_by_hand():
    assert kv_bytes_per_token(M7, "fp16") == 2 * 28 * 4 * 128 * 2 == 57_344
    assert kv_bytes_per_token(M7, "int4") == 57_344  # weight-only quantization keeps an fp16 cache


def test_7b_int4_32_frames_on_orin_nx():
    p = plan(M7, "int4", Workload(frames=32), "orin-nx-16gb")
    # 16 groups x (602112 px / 196 = 3072 patches) / 4 = 12288 tokens; 25% + 128 text + 256 new
    assert p["visual_tokens"] == 12_288 and p["context"] == 3072 + 384 == 3456
    assert p["kv_cache"] == 2 * 57_344 * 3456
    assert p["weights"]["llm_linear"] == pytest.approx(6_525_417_472 * (0.5 + 2 / 128))
    assert p["weights"]["llm_other"] == 1_090_199_040 * 2 and p["weights"]["vision"] == vit_params(M7) * 2
    # LLM prefill: S=3200 tokens x (2*3584 + 2*18944) x 2 B + 28 heads x S^2 x 4 B
    assert p["activations"]["llm_prefill"] == 3200 * (2 * 3584 + 2 * 18944) * 2 + 28 * 3200 ** 2 * 4
    assert p["fits"] and p["usable"] == 13e9


def test_7b_fp16_64_frames_does_not_fit_orin_nano():
    p = plan(M7, "fp16", Workload(frames=64), "orin-nano-8gb")
    assert not p["fits"] and p["weights"]["llm_linear"] == 6_525_417_472 * 2


def test_script_prints_the_plan_and_exit_code_says_if_it_fits():
    cmd = [sys.executable, "scripts/plan_memory.py", "--model", "qwen2.5-vl-7b", "--precision", "int4", "--frames", "32"]
    ok = subprocess.run(cmd + ["--device", "orin-nx-16gb"], capture_output=True, text=True)
    assert ok.returncode == 0 and "fits" in ok.stdout and "--max-context 3456" in ok.stdout
    no = subprocess.run(cmd + ["--device", "orin-nano-8gb", "--frames", "256"], capture_output=True, text=True)
    assert no.returncode == 1 and "does NOT fit" in no.stdout
