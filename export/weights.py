"""Model loading: seeded random weights for random presets, local safetensors checkpoints otherwise.

Weights never come from the network: ``--checkpoint DIR``, else an offline look-up in the local
Hugging Face cache. No remote code, no pickles (``use_safetensors=True``).
"""
from __future__ import annotations

import glob
import os

from runtime.errors import DyTokError

from .families import family_of
from .presets import Preset, random_config


class CheckpointNotFound(DyTokError):
    """No local weights for a real preset."""


def hf_cache_dirs(hf_id: str) -> list[str]:
    """Snapshot folders of ``hf_id`` in the local Hugging Face cache (HF_HUB_CACHE / HF_HOME)."""
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    cache = os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))
    pattern = os.path.join(cache, "models--" + hf_id.replace("/", "--"), "snapshots", "*")
    return sorted(glob.glob(pattern)), cache


def resolve_checkpoint(preset: Preset, checkpoint: str | None, flag: str = "--checkpoint") -> str:
    """A local folder holding ``config.json`` and ``*.safetensors`` for ``preset``, or a clear exit."""
    looked = []
    if checkpoint and not os.path.isdir(checkpoint):
        raise CheckpointNotFound(f"{flag} {checkpoint}: no such folder (give the local folder holding the "
                                 f"checkpoint's config.json and *.safetensors)")
    if checkpoint and not (os.path.isfile(os.path.join(checkpoint, "config.json"))
                           and glob.glob(os.path.join(checkpoint, "*.safetensors"))):
        raise CheckpointNotFound(f"{flag} {checkpoint}: the folder has no config.json with *.safetensors weights "
                                 f"(a Hugging Face checkpoint folder, e.g. from `hf download {preset.hf_id or 'ID'}`)")
    checkpoint = checkpoint or preset.local_path
    if checkpoint:
        looked.append(checkpoint)
        if os.path.isfile(os.path.join(checkpoint, "config.json")) and glob.glob(os.path.join(checkpoint, "*.safetensors")):
            return _check_model_type(preset, checkpoint)
    else:
        snapshots, cache = hf_cache_dirs(preset.hf_id)
        looked.append(f"{cache} (models--{preset.hf_id.replace('/', '--')})")
        for snap in reversed(snapshots):
            if glob.glob(os.path.join(snap, "*.safetensors")):
                return _check_model_type(preset, snap)
    raise CheckpointNotFound(
        f"no local weights for {preset.name} ({preset.hf_id}); looked in: {'; '.join(looked)}. "
        f"Download the checkpoint on a machine with network access (`hf download {preset.hf_id}`), "
        f"then pass --checkpoint /path/to/folder (config.json + *.safetensors) or set HF_HOME to that cache.")


def _check_model_type(preset: Preset, folder: str) -> str:
    """``folder`` if its config.json is of the preset's family, else one clear error."""
    import json

    path = os.path.join(folder, "config.json")
    try:
        model_type = json.load(open(path)).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise DyTokError(f"{path}: not a readable JSON config ({e})") from None
    family = family_of(preset)
    if model_type not in family.model_types:
        raise DyTokError(f"{folder} holds a {model_type!r} checkpoint, but {preset.name} is a {family.name} model "
                         f"(config.json model_type {' or '.join(family.model_types)})")
    return folder


def load_model(preset: Preset, tokenizer, special: dict[str, int], checkpoint: str | None = None, seed: int = 0,
               device: str = "cpu", dtype=None, attn_implementation: str = "eager"):
    """The preset family's transformers model (``Qwen2_5_VLForConditionalGeneration``,
    ``LlavaOnevisionForConditionalGeneration``) in eval mode, in ``dtype`` (default fp32) on ``device``.

    Random weights are drawn directly on ``device`` in ``dtype`` from ``seed`` (drawing a 7B model
    on the CPU and moving it took minutes; on a GPU it takes seconds). A seed gives the same model
    on a given device type, not across them: CPU weights are those of every CPU export and golden,
    GPU ones differ (another generator). "eager" attention is what the parity tests compare
    against; benchmarks on a GPU may ask for "sdpa" (transformers' default there).
    """
    import torch
    import transformers

    model_class = getattr(transformers, family_of(preset).model_class)
    dtype = dtype or torch.float32
    if preset.is_random:
        torch.manual_seed(seed)
        config = random_config(preset, tokenizer.get_vocab_size(), special)
        with torch.device(device):
            model = model_class._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
        with torch.no_grad():
            for layer in model.model.language_model.layers:
                layer.self_attn.q_proj.weight.mul_(preset.qk_scale)
                layer.self_attn.k_proj.weight.mul_(preset.qk_scale)
        return model.to(device).eval()  # a no-op but for any buffer made on an explicit device
    folder = resolve_checkpoint(preset, checkpoint)
    return model_class.from_pretrained(
        folder, local_files_only=True, use_safetensors=True, trust_remote_code=False, dtype=dtype,
        attn_implementation=attn_implementation).to(device).eval()
