"""Memory plan against figures computed by hand from Qwen2.5-VL-7B's and -3B's config.json."""
import subprocess
import sys

import pytest

from runtime.models import REAL_MODELS
from runtime.memory_plan import (Workload, assistant_plan, kv_bytes_per_token, llm_linear_params,
                                 llm_other_params, plan, plan_deployment, vit_params)

M7, M3 = REAL_MODELS["qwen2.5-vl-7b"], REAL_MODELS["qwen2.5-vl-3b"]
H7, I7, L7, V7 = 3584, 18944, 28, 152064


def test_7b_parameter_counts_by_hand():
    h, kv, inter, layers, vocab = H7, 4 * 128, I7, L7, V7
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter  # 12,848,640 + 3,671,040 + 12,845,056 + 203,685,888
    assert per_layer == 233_050_624
    assert llm_linear_params(M7) == 28 * 233_050_624 == 6_525_417_472
    assert llm_other_params(M7) == 2 * vocab * h + layers * 2 * h + h == 1_090_199_040
    assert llm_linear_params(M7) + llm_other_params(M7) == 7_615_616_512  # Qwen2.5-7B: "7.61B parameters"
    e, i = 1280, 3420
    block = (3 * e * e + 3 * e) + (e * e + e) + (3 * e * i + 2 * i + e) + 2 * e
    assert vit_params(M7) == 1176 * e + 32 * block + (e + 5120 * 5120 + 5120 + 5120 * 3584 + 3584)
    assert 0.66e9 < vit_params(M7) < 0.69e9  # the ~670M-parameter ViT


def test_kv_cache_is_fp32_because_graph_io_is():
    assert kv_bytes_per_token(M7, "bf16") == 2 * 28 * 4 * 128 * 4 == 114_688
    assert kv_bytes_per_token(M7, "int4") == kv_bytes_per_token(M7, "fp32")


def test_7b_int8_32_frames_by_hand():
    p = plan(M7, "int8", Workload(frames=32), "orin-nx-16gb")
    # 16 groups x (602112 px / 196 = 3072 patches) / 4 = 12288 tokens; 25% + 128 text + 256 new
    assert p["visual_tokens"] == 12_288 and p["context"] == 3072 + 384 == 3456
    assert p["kv_cache"] == 2 * 114_688 * 3456
    assert p["weights"]["llm_linear"] == 6_525_417_472 + V7 * H7  # int8 matmuls incl. the untied head, 1 byte
    assert p["weights"]["vision"] == vit_params(M7)  # 1 byte
    assert p["weights"]["llm_norms"] == (28 * 2 * H7 + H7) * 4  # fp32 beside Q/DQ
    # prefill in chunks of 2048, fp32 activations beside Q/DQ: C=2048 x (2*3584 + 2*18944) x 4 B + 28 heads x C x S x 4 B
    assert p["activations"]["llm_prefill"] == 2048 * (2 * H7 + 2 * I7) * 4 + 28 * 2048 * 3200 * 4
    one_call = plan(M7, "int8", Workload(frames=32, prefill_chunk=None))
    assert one_call["activations"]["llm_prefill"] == 3200 * (2 * H7 + 2 * I7) * 4 + 28 * 3200 ** 2 * 4
    assert p["total"] == pytest.approx(sum(p["weights"].values()) + p["kv_cache"] + sum(p["activations"].values()))
    assert p["fits"] and p["usable"] == 13e9


def test_fp16_keeps_the_down_projections_fp32_and_bf16_does_not():
    bf, fp = plan(M7, "bf16", Workload()), plan(M7, "fp16", Workload())
    assert bf["weights"]["llm_linear"] == (6_525_417_472 + V7 * H7) * 2
    assert fp["weights"]["llm_linear"] - bf["weights"]["llm_linear"] == 28 * I7 * H7 * 2  # 4 B instead of 2
    assert fp["weights"]["vision"] - bf["weights"]["vision"] == 32 * (3420 * 1280 + 1280) * 2


def test_assistant_prior_sees_every_visual_token_chunked_through_its_cache_and_has_no_head():
    w = Workload(frames=16, max_pixels=150_528, retention=1.0, new_tokens=0)
    a = assistant_plan(M3, "int8", w)
    assert a["visual_tokens"] == 8 * (150_528 // 196) // 4 == 1536 and a["context"] == 1536 + 128
    assert a["weights"]["llm_linear"] == llm_linear_params(M3)  # no head
    assert a["kv_cache"] == 2 * kv_bytes_per_token(M3, "int8") * 1664  # two sets, every layer up to the deepest
    assert a["activations"]["prior"] == 1664 * (2 * 2048 + 2 * 11008) * 4 + 16 * 1664 ** 2 * 4  # one chunk
    shallow = assistant_plan(M3, "int8", w, prior_depth=12)
    assert shallow["weights"]["llm_linear"] == llm_linear_params(M3) // 36 * 12
    assert shallow["kv_cache"] == a["kv_cache"] / 3
    long = assistant_plan(M3, "int8", Workload(frames=96, retention=1.0, new_tokens=0))  # 48 x 768 + 128 tokens
    s = 36_992
    assert long["activations"]["prior"] == 2048 * (2 * 2048 + 2 * 11008) * 4 + 16 * 2048 * s * 4  # no s x s term


def test_deployment_is_judged_on_the_sum():
    w, aw = Workload(frames=32), Workload(frames=16, max_pixels=150_528, retention=1.0, new_tokens=0)
    alone = plan(M7, "int8", w, "orin-nx-16gb")
    both = plan_deployment(M7, "int8", w, M3, "int8", aw, device="orin-nx-16gb")
    assert alone["fits"] and not both["fits"]  # the 7B alone fits an Orin NX; with its 3B assistant it does not
    assert both["total"] == pytest.approx(alone["total"] + assistant_plan(M3, "int8", aw)["total"])
    assert plan_deployment(M7, "int8", w, None, device="orin-nx-16gb")["total"] == alone["total"]


def test_script_plans_primary_and_assistant_and_exit_code_says_if_the_sum_fits():
    cmd = [sys.executable, "scripts/plan_memory.py", "--model", "qwen2.5-vl-7b", "--precision", "int8", "--frames", "32",
           "--device", "orin-nx-16gb"]
    run = lambda *a: subprocess.run(cmd + list(a), capture_output=True, text=True)  # noqa: E731
    alone = run("--assistant", "none")
    assert alone.returncode == 0 and "fits" in alone.stdout and "--max-context 3456" in alone.stdout
    both = run("--assistant-frames", "16", "--assistant-max-pixels", "150528")
    assert both.returncode == 1 and "qwen2.5-vl-3b, int8, 16 frames" in both.stdout and "does NOT fit" in both.stdout
    assert both.stdout.strip().splitlines()[-1] == ("largest parts: primary weights llm_linear (7.07 GB): --precision int4; "
                                                   "assistant weights llm_linear (2.77 GB): --assistant-precision int4, "
                                                   "--assistant none")
    small = run("--frames", "16", "--max-pixels", "200704", "--assistant-frames", "8", "--assistant-max-pixels", "50176")
    assert small.returncode == 0 and "fits" in small.stdout
    bad = run("--assistant", "qwen9")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --assistant 'qwen9'")


def test_script_reads_the_folder_precision_and_prints_small_sizes_in_mb(tiny_artifacts):
    out = subprocess.run([sys.executable, "scripts/plan_memory.py", "--artifacts", tiny_artifacts, "--frames", "8"],
                         capture_output=True, text=True)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and lines[0].startswith("primary: tiny, fp32, 8 frames")
    sizes = [line for line in lines if line.endswith((" MB", " GB"))]
    assert sizes and "0.00 GB" not in out.stdout and len({len(line) for line in sizes}) == 1  # one column


def test_llava_vision_parameters_equal_transformers():
    """SigLIP up to the feature layer (no post-norm, no head) + projector, counted on transformers'
    own LlavaOnevisionForConditionalGeneration built from the tiny preset's config (random weights)."""
    torch = pytest.importorskip("torch")
    from export.exporter import model_constants
    from export.families import FAMILIES
    from export.presets import get_preset, llava_onevision_config
    from export.tokenizer import LLAVA_OV_SPECIAL_TOKENS
    from transformers import LlavaOnevisionForConditionalGeneration

    ids = {t: i for i, t in enumerate(LLAVA_OV_SPECIAL_TOKENS)}
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(llava_onevision_config(get_preset("llava-onevision-tiny"), 384, ids))
    c = dict(model_constants(model, FAMILIES["llava_onevision"]), family="llava_onevision")
    tower = model.model.vision_tower
    used = [tower.embeddings, *tower.encoder.layers[:c["vision_depth"]], model.model.multi_modal_projector]
    assert vit_params(c) == sum(p.numel() for m in used for p in m.parameters())


def test_llava_7b_with_the_05b_assistant_by_hand():
    m7, m05 = REAL_MODELS["llava-onevision-qwen2-7b"], REAL_MODELS["llava-onevision-qwen2-0.5b"]
    e, i, d = 1152, 4304, 3584
    block = 4 * (e * e + e) + 2 * e * i + i + e + 4 * e
    assert vit_params(m7) == 3 * 14 * 14 * e + e + 729 * e + 26 * block + (e * d + d) + (d * d + d)
    assert 0.41e9 < vit_params(m7) < 0.42e9  # so400m's 26 layers and the projector
    w = Workload(frames=32, max_pixels=10_000)  # no pixel cap: every frame 384 x 384
    p = plan(m7, "int4", w, "orin-nx-16gb")
    assert p["visual_tokens"] == 32 * 196 and p["context"] == 1568 + 384
    assert p["weights"]["vision"] == vit_params(m7) * 4  # int4 quantizes the LLM only
    # 2 frames per ViT call of 729 patches, full attention in every layer (16 heads x 729^2, fp32)
    assert p["activations"]["vision"] == 2 * 729 * (5 * e + 2 * i) * 4 + 2 * 16 * 729 ** 2 * 4
    a = assistant_plan(m05, "fp16", Workload(frames=32, retention=1.0, new_tokens=0))
    assert a["visual_tokens"] == 6272 and a["context"] == 6272 + 128
    both = plan_deployment(m7, "int4", w, m05, "fp16", Workload(frames=32, retention=1.0, new_tokens=0),
                           device="orin-nx-16gb")
    assert both["total"] == pytest.approx(p["total"] + a["total"]) and both["fits"]
