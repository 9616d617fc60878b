"""Qwen2.5-VL preprocessing on a torch device (the CUDA backend's), bit-identical to the NumPy
reference ``runtime.preprocess.preprocess_video``: the same planned size, Pillow's fixed-point
bicubic taps (computed on the host, applied in int64 on the device), the float64 -> float32
rescale and float32 normalisation, and the same patch layout. The patches stay on the device for
the vision engine."""
from __future__ import annotations

import numpy as np
import torch

from runtime.errors import PreprocessError
from runtime.preprocess import PRECISION_BITS, VideoPatches, pil_coefficients, plan_size


def _resample(x: torch.Tensor, out_size: int, axis: int) -> torch.Tensor:
    """One Pillow bicubic pass along ``axis`` of uint8 [T, H, W, 3] frames."""
    index, k = pil_coefficients(x.shape[axis], out_size)
    index, k = torch.from_numpy(index).to(x.device), torch.from_numpy(k).to(x.device)
    shape = [1] * x.ndim
    shape[axis] = out_size
    acc = torch.full(x.shape[:axis] + (out_size,) + x.shape[axis + 1:], 1 << (PRECISION_BITS - 1), dtype=torch.int64,
                     device=x.device)
    for j in range(index.shape[1]):
        acc += x.index_select(axis, index[:, j]).to(torch.int64) * k[:, j].view(shape)
    return torch.clamp(acc >> PRECISION_BITS, 0, 255).to(torch.uint8)


class TorchPreprocess:
    """``preprocess_video`` on ``device``: frames [T, H, W, 3] uint8 (NumPy) -> VideoPatches whose
    ``pixel_values`` is a torch tensor [gt*gh*gw, 3*tp*p*p] float32 on ``device``."""

    def __init__(self, device: str):
        self.device = torch.device(device)

    def __call__(self, frames: np.ndarray, cfg) -> VideoPatches:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise PreprocessError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        if len(frames) == 0:
            raise PreprocessError("no frames to preprocess")
        height, width = plan_size(frames.shape[1], frames.shape[2], len(frames), cfg)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        if width != x.shape[2]:
            x = _resample(x, width, axis=2)  # Pillow: horizontal pass first
        if height != x.shape[1]:
            x = _resample(x, height, axis=1)
        x = (x.to(torch.float64) * (1 / 255)).to(torch.float32)
        mean = torch.tensor(cfg.image_mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(cfg.image_std, dtype=torch.float32, device=self.device)
        x = (x - mean) / std
        p, tp, m = cfg.patch_size, cfg.temporal_patch_size, cfg.merge_size
        if pad := -x.shape[0] % tp:
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
        t = x.shape[0]
        gt, gh, gw = t // tp, height // p, width // p
        x = x.permute(0, 3, 1, 2).reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, 3 * tp * p * p).contiguous()
        if x.is_cuda:  # finished here, so the time lands on preprocessing and not on the next stage
            torch.cuda.synchronize(x.device)
        return VideoPatches(pixel_values=x, grid_thw=(gt, gh, gw), resized_hw=(height, width))
