"""Model families: what the exporter does differently per architecture, in one registry.

``FAMILIES[name]`` (name = a preset's ``family``, written to the manifest's ``family``) holds:

- ``model_class``: the transformers class (by name); ``model_types``: the ``config.json``
  model_type a real checkpoint of the family has;
- ``special_tokens`` / ``chat_template``: the random presets' tokenizer and template;
  ``checkpoint_template(folder)``: a real checkpoint's template, ready for plain jinja2;
- ``constants(model)``: the manifest's model constants (``models.<which>``);
- ``vision_module(model, attention="plain")``, ``vision_spec(role, consts)``, ``example_vision(consts)``: the vision
  graph, its I/O declaration and export example;
- ``model_files(model, which, folder)``: extra per-model arrays written beside the embeddings
  table (manifest entries {file, sha256, shape, dtype});
- ``tokens(ids)``, ``preprocess(preset, consts, checkpoint)``: the manifest's tokens and
  preprocess sections.

The language model graphs (``graphs.llm``) and the KV/prior/segment specs are shared: both
families' LLMs are Qwen2-style decoders (``model.model.language_model``, ``model.lm_head``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime.errors import DyTokError
from runtime.manifest import sha256_file
from runtime.preprocess import PreprocessConfig
from runtime.vision_inputs import vision_feeds

from . import specs
from .presets import Preset
from .tokenizer import (LLAVA_OV_CHAT_TEMPLATE, LLAVA_OV_SPECIAL_TOKENS, QWEN_VL_CHAT_TEMPLATE, SPECIAL_TOKENS,
                        checkpoint_chat_template, strip_generation_tags)

EXAMPLE_GRID = (2, 8, 12)  # example sizes > 1 on every dynamic axis, else dynamo freezes them
EXAMPLE_FRAMES = 2


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str
    model_types: tuple[str, ...]
    special_tokens: tuple[str, ...]
    chat_template: str
    checkpoint_template: Callable[[str], str]
    constants: Callable[[object], dict]
    vision_module: Callable[..., object]
    vision_spec: Callable[[str, dict], specs.GraphSpec]
    example_vision: Callable[[dict], dict]
    model_files: Callable[[object, str, str], dict]
    tokens: Callable[[dict], dict]
    preprocess: Callable[[Preset, dict, str | None], dict]


def _text_constants(text) -> dict:
    return {"hidden_size": text.hidden_size, "num_layers": text.num_hidden_layers, "num_heads": text.num_attention_heads,
            "num_kv_heads": text.num_key_value_heads, "head_dim": text.hidden_size // text.num_attention_heads,
            "vocab_size": text.vocab_size, "context_length": text.max_position_embeddings}


# --- Qwen2.5-VL -------------------------------------------------------------------------------

def qwen_constants(model) -> dict:
    text = model.config.text_config
    vision = model.config.vision_config
    return {
        **_text_constants(text),
        "mrope_section": list(text.rope_parameters["mrope_section"]), "rope_theta": text.rope_parameters["rope_theta"],
        "tokens_per_second": vision.tokens_per_second, "merge_size": vision.spatial_merge_size,
        "patch_size": vision.patch_size, "temporal_patch_size": vision.temporal_patch_size,
        "window_size": vision.window_size, "vision_key_dim": vision.hidden_size // vision.num_heads,
        "fullatt_block_indexes": list(vision.fullatt_block_indexes),
        "intermediate_size": text.intermediate_size, "vision_hidden_size": vision.hidden_size,
        "vision_intermediate_size": vision.intermediate_size, "vision_depth": vision.depth,
    }


def _qwen_vision(model, attention: str = "plain"):
    from .graphs.vision import VisionEncoder
    return VisionEncoder(model.model.visual, attention)


def _qwen_vision_spec(role: str, c: dict) -> specs.GraphSpec:
    return specs.vision_spec(role, 3 * c["temporal_patch_size"] * c["patch_size"] ** 2, c["hidden_size"], c["vision_key_dim"])


def _qwen_example_vision(c: dict) -> dict:
    n = int(np.prod(EXAMPLE_GRID))
    pixels = np.random.default_rng(0).normal(size=(n, 3 * c["temporal_patch_size"] * c["patch_size"] ** 2))
    return {"pixel_values": pixels.astype(np.float32), **vision_feeds(EXAMPLE_GRID)}


def _qwen_tokens(ids: dict) -> dict:
    return {"video": ids["<|video_pad|>"], "image": ids["<|image_pad|>"], "vision_start": ids["<|vision_start|>"],
            "vision_end": ids["<|vision_end|>"], "eos": [ids["<|im_end|>"], ids["<|endoftext|>"]], "pad": ids["<|endoftext|>"]}


def _qwen_preprocess(preset: Preset, c: dict, checkpoint: str | None) -> dict:
    vcfg = PreprocessConfig(**preset.preprocess)
    return {"patch_size": c["patch_size"], "temporal_patch_size": c["temporal_patch_size"], "merge_size": c["merge_size"],
            "min_pixels": vcfg.min_pixels, "max_pixels": vcfg.max_pixels, "image_mean": list(vcfg.image_mean),
            "image_std": list(vcfg.image_std)}


# --- LLaVA-OneVision --------------------------------------------------------------------------

SIGLIP_MEAN_STD = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # google/siglip-so400m-patch14-384's preprocessor_config.json


def llava_constants(model) -> dict:
    from .graphs.llava_vision import feature_depth

    text, vision = model.config.text_config, model.config.vision_config
    grid = vision.image_size // vision.patch_size
    pooled = math.ceil(grid / 2)
    return {
        **_text_constants(text), "rope_theta": text.rope_parameters["rope_theta"],
        "intermediate_size": text.intermediate_size, "image_size": vision.image_size, "patch_size": vision.patch_size,
        "pooled_grid": pooled, "tokens_per_frame": pooled * pooled,
        "vision_feature_layer": model.config.vision_feature_layer,
        "vision_depth": feature_depth(vision.num_hidden_layers, model.config.vision_feature_layer),
        "vision_hidden_size": vision.hidden_size, "vision_intermediate_size": vision.intermediate_size,
        "vision_heads": vision.num_attention_heads, "vision_key_dim": vision.hidden_size // vision.num_attention_heads,
    }


def _llava_vision(model, attention: str = "plain"):
    """Explicit softmax in every layer whatever ``attention`` (the feature layer's probabilities are
    the importance signal; the PyTorch backend's "sdpa" option is Qwen's only)."""
    from .graphs.llava_vision import LlavaVisionEncoder
    return LlavaVisionEncoder(model)


def _llava_vision_spec(role: str, c: dict) -> specs.GraphSpec:
    return specs.llava_vision_spec(role, c["image_size"], c["hidden_size"], c["vision_key_dim"])


def _llava_example_vision(c: dict) -> dict:
    size = c["image_size"]
    pixels = np.random.default_rng(0).normal(size=(EXAMPLE_FRAMES, 3, size, size))
    return {"pixel_values": pixels.astype(np.float32)}


def _llava_files(model, which: str, folder: str) -> dict:
    """``image_newline`` [D]: the learned embedding transformers appends after a video's frames."""
    name = f"{which}_image_newline.npy"
    newline = model.model.image_newline.detach().float().cpu().numpy()
    np.save(os.path.join(folder, name), newline)
    return {"image_newline": {"file": name, "sha256": sha256_file(os.path.join(folder, name)),
                              "shape": list(newline.shape), "dtype": "float32"}}


def _llava_tokens(ids: dict) -> dict:
    return {"video": ids["<video>"], "image": ids["<image>"], "eos": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad": ids["<|endoftext|>"]}


def _llava_preprocess(preset: Preset, c: dict, checkpoint: str | None) -> dict:
    """Frames resized to image_size x image_size (bicubic), scaled by 1/255, normalized; a
    checkpoint's video_preprocessor_config.json (else preprocessor_config.json) wins for the numbers."""
    mean, std = SIGLIP_MEAN_STD
    out = {"image_size": c["image_size"], "patch_size": c["patch_size"], "pooled_grid": c["pooled_grid"],
           "tokens_per_frame": c["tokens_per_frame"], "image_mean": list(mean), "image_std": list(std),
           "rescale_factor": 1 / 255, "resample": "bicubic"}
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = os.path.join(checkpoint, name) if checkpoint else None
        if path and os.path.isfile(path):
            cfg = json.load(open(path))
            size = cfg.get("size") or {}
            if size.get("height", c["image_size"]) != c["image_size"] or size.get("width", c["image_size"]) != c["image_size"]:
                raise DyTokError(f"{path}: frame size {size} differs from the vision tower's {c['image_size']}")
            out.update({k: cfg[k] for k in ("image_mean", "image_std", "rescale_factor") if k in cfg})
            break
    out.update(preset.preprocess)
    return out


def _llava_checkpoint_template(folder: str) -> str:
    return strip_generation_tags(checkpoint_chat_template(folder, LLAVA_OV_CHAT_TEMPLATE))


FAMILIES: dict[str, Family] = {
    "qwen2_5_vl": Family(
        "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", ("qwen2_5_vl",), tuple(SPECIAL_TOKENS), QWEN_VL_CHAT_TEMPLATE,
        checkpoint_chat_template, qwen_constants, _qwen_vision, _qwen_vision_spec, _qwen_example_vision,
        lambda model, which, folder: {}, _qwen_tokens, _qwen_preprocess),
    "llava_onevision": Family(
        "llava_onevision", "LlavaOnevisionForConditionalGeneration", ("llava_onevision",), tuple(LLAVA_OV_SPECIAL_TOKENS),
        LLAVA_OV_CHAT_TEMPLATE, _llava_checkpoint_template, llava_constants, _llava_vision, _llava_vision_spec,
        _llava_example_vision, _llava_files, _llava_tokens, _llava_preprocess),
}


def family_of(preset: Preset) -> Family:
    try:
        return FAMILIES[preset.family]
    except KeyError:
        raise DyTokError(f"preset {preset.name}: unknown family {preset.family!r} (known: {', '.join(FAMILIES)})") from None
