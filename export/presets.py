"""Model presets: real checkpoints by name, and seeded random-weight models from real-shaped configs.

Every preset belongs to a model family (``family``: "qwen2_5_vl" or "llava_onevision"; see
``export.families``). Real presets only name a checkpoint; weights come from a local folder (see
``export.weights``). Random presets (``tiny`` for tests and the demo, ``small`` for benchmarks)
keep Qwen2.5-VL's structure (windowed + full-attention ViT blocks, 2x2 merger, GQA, M-RoPE) at a
small size; ``qwen2.5-vl-7b-random`` / ``-3b-random`` have the released checkpoints' exact
dimensions (from ``runtime.models.REAL_MODELS``) with random weights, for GPU benchmarks
without weights. The ``llava-onevision-*`` presets do the same for LLaVA-OneVision (SigLIP tower,
2-layer GELU projector, 2x bilinear video pooling, Qwen2 LLM with 1-D RoPE).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from runtime.errors import DyTokError
from runtime.models import LLAVA_OV_MODELS, REAL_MODELS


@dataclass(frozen=True)
class Preset:
    name: str
    hf_id: str | None  # Hugging Face repo id of the real checkpoint, None for random presets
    assistant: str | None  # default assistant preset for DyToK's keyframe prior
    vision: dict = field(default_factory=dict)  # Qwen2_5_VLVisionConfig overrides (random presets)
    text: dict = field(default_factory=dict)  # Qwen2_5_VLTextConfig overrides (random presets)
    # Random weights give near-uniform attention, hence a flat keyframe prior; scaling the LLM's
    # q/k projections makes a random assistant's attention (and so its budgets) uneven.
    qk_scale: float = 1.0
    # Trained weights committed in this repository (a checkpoint folder, relative to its root):
    # exported through the real checkpoint path, like a downloaded model.
    local: str | None = None
    preprocess: dict = field(default_factory=dict)  # PreprocessConfig overrides for the manifest
    # The export's default prior layers when this preset is the assistant (a checkpoint's
    # dytok.json wins; None: the reference's last third).
    prior_layers: str | list[int] | None = None
    # The model family (export.families.FAMILIES): which transformers class, graphs and manifest
    # entries. For "llava_onevision", ``vision`` holds SiglipVisionConfig overrides and ``text``
    # Qwen2Config overrides.
    family: str = "qwen2_5_vl"

    @property
    def is_random(self) -> bool:
        return self.hf_id is None and self.local is None

    @property
    def local_path(self) -> str | None:
        if self.local is None:
            return None
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), self.local)


_TINY_VISION = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64,
                    fullatt_block_indexes=[1, 3], window_size=112, patch_size=14, spatial_merge_size=2,
                    temporal_patch_size=2, tokens_per_second=2, hidden_act="silu")
_TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]})
# The trained needle pair (training/needle.py): twice tiny's width (head_dim 32), so perception
# and retrieval over 32 temporal groups fit in 4 + 4 layers (about 2M parameters).
_NEEDLE_VISION = dict(_TINY_VISION, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=128)
_NEEDLE_TEXT = dict(_TINY_TEXT, hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]})
# Qwen2-0.5B-sized LLM (896 wide, 24 layers, 14 heads / 2 KV heads) with a shallower 640-wide ViT.
_SMALL_VISION = dict(depth=8, hidden_size=640, intermediate_size=1708, num_heads=10, out_hidden_size=896,
                     fullatt_block_indexes=[3, 7], window_size=112, patch_size=14, spatial_merge_size=2,
                     temporal_patch_size=2, tokens_per_second=2, hidden_act="silu")
_SMALL_TEXT = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]})


def real_size(name: str) -> tuple[dict, dict]:
    """Vision and text config overrides with the dimensions of released checkpoint ``name``."""
    m = REAL_MODELS[name]
    vision = dict(depth=m["vision_depth"], hidden_size=m["vision_hidden_size"], intermediate_size=m["vision_intermediate_size"],
                  num_heads=m["vision_heads"], out_hidden_size=m["hidden_size"], fullatt_block_indexes=m["fullatt_block_indexes"],
                  window_size=m["window_size"], patch_size=m["patch_size"], spatial_merge_size=m["merge_size"],
                  temporal_patch_size=m["temporal_patch_size"], tokens_per_second=2, hidden_act="silu")
    text = dict(hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"], num_hidden_layers=m["num_layers"],
                num_attention_heads=m["num_heads"], num_key_value_heads=m["num_kv_heads"],
                max_position_embeddings=m["context_length"], rms_norm_eps=1e-6, vocab_size=m["vocab_size"],
                tie_word_embeddings=m["tie_word_embeddings"],
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
    return vision, text


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", None, "tiny-assistant", _TINY_VISION, _TINY_TEXT),
    "tiny-assistant": Preset("tiny-assistant", None, None, _TINY_VISION,
                             {**_TINY_TEXT, "num_hidden_layers": 3}, qk_scale=8.0),
    # Trained on the needle videos (training/needle.py, scripts/train_needle.py): twice tiny's width,
    # 112x112 frames (16 tokens per temporal group). The assistant is a copy trained so that its
    # keyframe prior finds the answer's groups (training/assistant.py: train_prior; dytok.json).
    "needle": Preset("needle", None, "needle-assistant", _NEEDLE_VISION, _NEEDLE_TEXT, local="weights/needle/primary",
                     preprocess=dict(min_pixels=56 * 56, max_pixels=112 * 112)),
    "needle-assistant": Preset("needle-assistant", None, None, _NEEDLE_VISION, _NEEDLE_TEXT, local="weights/needle/assistant",
                               preprocess=dict(min_pixels=56 * 56, max_pixels=112 * 112)),
    "small": Preset("small", None, "small-assistant", _SMALL_VISION, _SMALL_TEXT),
    # The benchmark's stand-in for the needle pair's speed: its prior stops at the needle
    # assistant's measured depth (layer 1 of 4, weights/needle/assistant/dytok.json), i.e. layer 2 of 8.
    "small-assistant": Preset("small-assistant", None, None, {**_SMALL_VISION, "depth": 4, "fullatt_block_indexes": [1, 3]},
                              {**_SMALL_TEXT, "num_hidden_layers": 8}, qk_scale=4.0, prior_layers=[2]),
    "qwen2.5-vl-7b-random": Preset("qwen2.5-vl-7b-random", None, "qwen2.5-vl-3b-random", *real_size("qwen2.5-vl-7b")),
    "qwen2.5-vl-3b-random": Preset("qwen2.5-vl-3b-random", None, None, *real_size("qwen2.5-vl-3b"), qk_scale=4.0),
    "qwen2.5-vl-3b": Preset("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", None),
    "qwen2.5-vl-7b": Preset("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-3b"),
    "qwen2.5-vl-32b": Preset("qwen2.5-vl-32b", "Qwen/Qwen2.5-VL-32B-Instruct", "qwen2.5-vl-3b"),
    "qwen2.5-vl-72b": Preset("qwen2.5-vl-72b", "Qwen/Qwen2.5-VL-72B-Instruct", "qwen2.5-vl-7b"),
}

# LLaVA-OneVision, the DyToK paper's own setting (7B primary, 0.5B assistant), with the released
# checkpoints' dimensions from ``runtime.models.LLAVA_OV_MODELS``: a SiglipVisionConfig and a Qwen2Config.
def llava_real_size(name: str) -> tuple[dict, dict]:
    """SigLIP and Qwen2 config overrides with the dimensions of released LLaVA-OV checkpoint ``name``."""
    m = LLAVA_OV_MODELS[name]
    vision = dict(hidden_size=m["vision_hidden_size"], intermediate_size=m["vision_intermediate_size"],
                  num_hidden_layers=m["vision_depth"], num_attention_heads=m["vision_heads"], patch_size=m["patch_size"],
                  image_size=m["image_size"], hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
    text = dict(hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"], num_hidden_layers=m["num_layers"],
                num_attention_heads=m["num_heads"], num_key_value_heads=m["num_kv_heads"],
                max_position_embeddings=m["context_length"], rms_norm_eps=1e-6, vocab_size=m["vocab_size"],
                tie_word_embeddings=m["tie_word_embeddings"], rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    return vision, text


LLAVA_OV_SIGLIP, _LLAVA_7B_TEXT = llava_real_size("llava-onevision-qwen2-7b")
_LLAVA_05B_TEXT = llava_real_size("llava-onevision-qwen2-0.5b")[1]
_LLAVA = dict(family="llava_onevision")
# Tiny: seconds to export; 384-pixel frames as the real tower (27x27 patches pooled to 14x14).
_LLAVA_TINY_VISION = dict(LLAVA_OV_SIGLIP, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4)
_LLAVA_TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
# Small: the cost class of the Qwen ``small`` pair: the 0.5B's LLM (896 wide, 24 layers) behind an
# 8-layer 576-wide SigLIP (8 heads of 72, as so400m's); the assistant stops its prior at layer 2 of 8.
_LLAVA_SMALL_VISION = dict(LLAVA_OV_SIGLIP, hidden_size=576, intermediate_size=2152, num_hidden_layers=8,
                           num_attention_heads=8)
_LLAVA_SMALL_TEXT = {k: v for k, v in _LLAVA_05B_TEXT.items()
                     if k not in ("vocab_size", "tie_word_embeddings")}
PRESETS.update({
    "llava-onevision-tiny": Preset("llava-onevision-tiny", None, "llava-onevision-tiny-assistant", _LLAVA_TINY_VISION,
                                   _LLAVA_TINY_TEXT, **_LLAVA),
    "llava-onevision-tiny-assistant": Preset("llava-onevision-tiny-assistant", None, None, _LLAVA_TINY_VISION,
                                             {**_LLAVA_TINY_TEXT, "num_hidden_layers": 3}, qk_scale=8.0, **_LLAVA),
    "llava-onevision-small": Preset("llava-onevision-small", None, "llava-onevision-small-assistant", _LLAVA_SMALL_VISION,
                                    _LLAVA_SMALL_TEXT, **_LLAVA),
    "llava-onevision-small-assistant": Preset("llava-onevision-small-assistant", None, None,
                                              {**_LLAVA_SMALL_VISION, "num_hidden_layers": 4},
                                              {**_LLAVA_SMALL_TEXT, "num_hidden_layers": 8}, qk_scale=4.0,
                                              prior_layers=[2], **_LLAVA),
    "llava-onevision-qwen2-7b-random": Preset("llava-onevision-qwen2-7b-random", None, "llava-onevision-qwen2-0.5b-random",
                                              LLAVA_OV_SIGLIP, _LLAVA_7B_TEXT, **_LLAVA),
    "llava-onevision-qwen2-0.5b-random": Preset("llava-onevision-qwen2-0.5b-random", None, None, LLAVA_OV_SIGLIP,
                                                _LLAVA_05B_TEXT, qk_scale=4.0, **_LLAVA),
    "llava-onevision-qwen2-0.5b-ov": Preset("llava-onevision-qwen2-0.5b-ov", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
                                            None, **_LLAVA),
    "llava-onevision-qwen2-7b-ov": Preset("llava-onevision-qwen2-7b-ov", "llava-hf/llava-onevision-qwen2-7b-ov-hf",
                                          "llava-onevision-qwen2-0.5b-ov", **_LLAVA),
})


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise DyTokError(f"unknown model {name!r}: choose one of {', '.join(PRESETS)}") from None


def random_config(preset: Preset, vocab_size: int, special_ids: dict[str, int]):
    """A transformers config for a random preset (``Qwen2_5_VLConfig``, or ``LlavaOnevisionConfig``
    for the llava_onevision family), with the tokenizer's special ids."""
    if preset.family == "llava_onevision":
        return llava_onevision_config(preset, vocab_size, special_ids)
    from transformers import Qwen2_5_VLConfig

    ids = dict(bos_token_id=special_ids["<|endoftext|>"], eos_token_id=special_ids["<|im_end|>"],
               pad_token_id=special_ids["<|endoftext|>"])
    text = dict(preset.text, **ids)
    tied = text.pop("tie_word_embeddings", False)
    # Real-size presets keep the checkpoint's vocabulary (its embedding and head cost); ids past
    # the small tokenizer's end embed normally and decode to nothing.
    vocab_size = text["vocab_size"] = max(vocab_size, text.get("vocab_size", 0))
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    sections = text["rope_parameters"]["mrope_section"]
    if 2 * sum(sections) != head_dim:
        raise DyTokError(f"preset {preset.name}: M-RoPE sections {sections} sum to {sum(sections)}, "
                         f"but head_dim {head_dim} needs {head_dim // 2}")
    return Qwen2_5_VLConfig(
        vision_config=dict(preset.vision), text_config=text, vocab_size=vocab_size,
        image_token_id=special_ids["<|image_pad|>"], video_token_id=special_ids["<|video_pad|>"],
        vision_start_token_id=special_ids["<|vision_start|>"], vision_end_token_id=special_ids["<|vision_end|>"],
        tie_word_embeddings=tied, **ids)


def llava_onevision_config(preset: Preset, vocab_size: int, special_ids: dict[str, int]):
    """A transformers ``LlavaOnevisionConfig`` for a random LLaVA-OV preset: SigLIP (no head) +
    Qwen2, the released defaults for the rest (vision_feature_layer -1, "full" features, gelu
    projector), the tokenizer's special ids."""
    from transformers import LlavaOnevisionConfig

    ids = dict(bos_token_id=special_ids["<|endoftext|>"], eos_token_id=special_ids["<|im_end|>"],
               pad_token_id=special_ids["<|endoftext|>"])
    text = dict(preset.text, model_type="qwen2", **ids)
    tied = text.pop("tie_word_embeddings", False)
    vocab_size = text["vocab_size"] = max(vocab_size, text.get("vocab_size", 0))
    return LlavaOnevisionConfig(
        vision_config=dict(preset.vision, model_type="siglip_vision_model"), text_config=text,
        image_token_index=special_ids["<image>"], video_token_index=special_ids["<video>"],
        tie_word_embeddings=tied, **ids)
