"""The PyTorch side of a benchmark run: transformers' own model for the full-token baseline, and
the export modules as a pipeline (eager rows with compression, and runtime rows on the PyTorch
engine backend). The benchmark harness (``bench/``) stays torch-free by going through ``Eager``."""
from __future__ import annotations

import time

import torch

from runtime.errors import EngineError
from runtime.manifest import Manifest
from runtime.options import Options
from runtime.pipeline import Pipeline

from .torch_engine import load_models, torch_pipeline

STAGES = ("decode_video", "preprocess", "assistant", "vision", "compress", "prefill", "decode")


def _qwen_features(model, patches, device, dtype):
    """Qwen2.5-VL's ``visual`` over the video's patches: one row per merged token."""
    pixels = torch.from_numpy(patches.pixel_values).to(device, dtype)
    return model.model.visual(pixels, grid_thw=torch.tensor([patches.grid_thw], device=device)).pooler_output


def _llava_features(model, patches, device, dtype):
    """LLaVA-OV's ``get_video_features`` of one video: the frames' pooled tokens, then the
    image_newline row (the prompt's placeholder covers both)."""
    pixels = torch.from_numpy(patches.pixel_values).to(device, dtype)[None]
    return model.model.get_video_features(pixels).pooler_output[0]


# family -> (video features, the model's position_ids from the runtime's [3, L] rows)
FULL = {"qwen2_5_vl": (_qwen_features, lambda rows: rows[:, None]),  # M-RoPE: [3, 1, L]
        "llava_onevision": (_llava_features, lambda rows: rows[:1])}  # 1-D: [1, L]


class TransformersFull:
    """The eager full-token baseline on transformers' own model: its video features (``FULL``, by
    the primary's family), then prefill and a cached decode loop with ``model(...)``; same video,
    preprocessing and prompt as the pipeline."""

    def __init__(self, model, pipe: Pipeline):
        self.model, self.pipe = model, pipe

    def answer(self, clip, question: str, opts: Options):
        m = self.model
        device, dtype = m.device, m.dtype
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)  # stage times need finished kernels
        t = {}
        t0 = time.perf_counter()
        features, rows = FULL[self.pipe.family.name]
        patches = self.pipe.family.preprocess(clip.frames, self.pipe.preprocess_config("primary", opts.max_pixels,
                                                                                       opts.min_pixels))
        seq = self.pipe.sequence("primary", question, patches, self.pipe.seconds_per_group(clip))
        start, n_vis = seq.start, seq.n_visual
        t["decode_video"], t["preprocess"], t["assistant"], t["compress"] = 0.0, time.perf_counter() - t0, 0.0, 0.0
        with torch.no_grad():
            t0 = time.perf_counter()
            feats = features(m, patches, device, dtype)
            sync()
            t["vision"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            emb = m.get_input_embeddings()(torch.from_numpy(seq.ids).to(device))[None].clone()
            emb[0, start:start + len(feats)] = feats
            # logits of the last position only, as generate() asks for them
            out = m(inputs_embeds=emb, position_ids=rows(torch.from_numpy(seq.positions).to(device)), use_cache=True,
                    logits_to_keep=1)
            sync()
            t["prefill"] = time.perf_counter() - t0
            nxt = seq.next_position
            t0 = time.perf_counter()
            for step in range(opts.max_new_tokens - 1):
                tok = out.logits[0, -1].argmax().view(1, 1)
                out = m(inputs_embeds=m.get_input_embeddings()(tok), position_ids=rows(torch.full((3, 1), nxt + step,
                                                                                                   device=device)),
                        past_key_values=out.past_key_values, use_cache=True)
            sync()
            t["decode"] = time.perf_counter() - t0
        t["decode_tokens"] = opts.max_new_tokens - 1
        t["end_to_end"] = sum(t[s] for s in STAGES)
        return t, (n_vis, n_vis), patches.grid_thw


class Eager:
    """Both eager backends of one artifact folder on ``device`` (transformers ``attn`` for the
    baseline), and the device's timing helpers."""

    def __init__(self, manifest: Manifest, device: str, attn: str, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("torch sees no CUDA device")
        self.device, self.attn = device, attn
        models = load_models(manifest, device, attn_implementation=attn)
        self.pipeline = torch_pipeline(manifest, models, device)
        self.full = TransformersFull(models["primary"], self.pipeline)

    def full_answer(self, clip, question: str, opts: Options, attn: str):
        """The baseline with transformers attention ``attn`` for this call. -> (timings, visual, grid, engine name)"""
        model = self.full.model
        if attn != self.attn:
            model.set_attn_implementation(attn)
        try:
            t, visual, grid = self.full.answer(clip, question, opts)
        finally:
            if attn != self.attn:
                model.set_attn_implementation(self.attn)
        return t, visual, grid, f"transformers[{self.device}, {str(model.dtype).removeprefix('torch.')}, {attn}]"

    def reset_peak(self) -> None:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        return torch.cuda.max_memory_allocated() / 2 ** 20 if self.device == "cuda" else 0.0


def measure_rates(device: str, dtype: torch.dtype, size: int = 4096, copy_mb: int = 1024, repeats: int = 5) -> dict:
    """The device's measured matrix-multiply rate (``size``-cube matmuls in ``dtype``) and copy
    bandwidth (a ``copy_mb`` MB device-to-device copy: read + write), best of ``repeats``."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    src = torch.empty(copy_mb * 2 ** 20, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    a @ b, dst.copy_(src)  # warm-up
    best_mm = best_copy = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best_mm = min(best_mm, time.perf_counter() - t0)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        best_copy = min(best_copy, time.perf_counter() - t0)
    return {"matmul_flops_per_s": 2.0 * size ** 3 / best_mm, "copy_bytes_per_s": 2.0 * src.numel() / best_copy,
            "matmul_dtype": str(dtype).removeprefix("torch."), "matmul_size": size, "copy_mb": copy_mb}
