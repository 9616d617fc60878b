"""TensorRT optimization profiles derived from the manifest: (min, opt, max) shapes per input.

Every symbolic dim in the manifest's I/O tables gets a range from what the pipeline can feed:
vision dims come from the patch grids that preprocessing can produce under the frame and pixel
limits (computed with the same ``vision_feeds`` the runtime uses, over every admissible aspect
ratio), and LLM dims from the context length. The LLM gets two profiles, as TensorRT-LLM does:
``prefill`` (no past) and ``decode`` (one new token over a growing past).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ManifestError
from ..manifest import Manifest
from ..preprocess import PreprocessConfig, frame_max_pixels, plan_grid
from ..vision_inputs import VisionGeometry

Range = tuple[int, int, int]  # min, opt, max
Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max) shape


@dataclass(frozen=True)
class ProfileLimits:
    """What the engines must accept. Narrow these on small devices (less activation memory)."""
    min_frames: int = 2
    opt_frames: int = 16
    max_frames: int = 64
    max_pixels: int | None = None  # per frame; None: the manifest's
    opt_pixels: int | None = None  # per frame at opt_frames; None: max_pixels
    min_pixels: int | None = None
    opt_aspect: tuple[int, int] = (360, 640)  # frame (height, width) for the opt shapes
    max_context: int | None = None  # None: the model's context length
    opt_retention: float = 0.25  # visual tokens kept, for the LLM's opt prompt length
    text_tokens: int = 64  # prompt tokens besides the video, for opt shapes

    def __post_init__(self):
        if not 1 <= self.min_frames <= self.opt_frames <= self.max_frames:
            raise ManifestError(f"profile frames must satisfy 1 <= min <= opt <= max, got "
                                f"{self.min_frames}/{self.opt_frames}/{self.max_frames}")


@dataclass(frozen=True)
class VisionDims:
    n_patches: int
    n_tokens: int
    n_windows: int
    window_len: int
    n_groups: int
    group_len: int


def vision_dims(grid_thw: tuple[int, int, int], geo: VisionGeometry) -> VisionDims:
    """The vision graph's symbolic dims for one video grid, in closed form (the test checks it
    against the shapes of ``vision_feeds``): windows tile each group's merge-unit grid from the
    top-left corner, so a group has ceil(rows/side) * ceil(cols/side) non-empty windows."""
    t, h, w = grid_thw
    unit = geo.merge_size ** 2
    side = geo.window_size // geo.merge_size // geo.patch_size  # window side in merge units
    rows, cols = h // geo.merge_size, w // geo.merge_size
    windows = -(-rows // side) * -(-cols // side)
    return VisionDims(t * h * w, t * h * w // unit, t * windows, min(rows, side) * min(cols, side) * unit, t, h * w)


def admissible_grids(cfg: PreprocessConfig, num_frames: int) -> list[tuple[int, int]]:
    """Every per-frame patch grid (h, w) preprocessing can produce for ``num_frames`` frames:
    sides multiples of the merge size, area within the pixel bounds, aspect ratio below 200."""
    unit = cfg.merge_size
    most = frame_max_pixels(num_frames, cfg) // cfg.patch_size ** 2
    least = max(-(-cfg.min_pixels // cfg.patch_size ** 2), unit * unit)
    grids = []
    for h in range(unit, most // unit + 1, unit):
        for w in range(unit, most // h + 1, unit):
            if least <= h * w <= most and max(h, w) / min(h, w) < 200:
                grids.append((h, w))
    if not grids:
        raise ManifestError(f"no frame size fits {cfg.min_pixels}..{frame_max_pixels(num_frames, cfg)} pixels")
    return grids


def vision_ranges(cfg: PreprocessConfig, geo: VisionGeometry, limits: ProfileLimits) -> dict[str, Range]:
    """Range of each vision dim: min over the smallest video, max over every admissible grid of the
    longest one (thin frames have the most windows), opt at ``opt_frames`` of ``opt_aspect``."""
    groups = lambda frames: -(-frames // cfg.temporal_patch_size)  # noqa: E731
    t_min, t_max = groups(limits.min_frames), groups(limits.max_frames)
    small = [vision_dims((t_min, h, w), geo) for h, w in admissible_grids(cfg, limits.min_frames)]
    large = [vision_dims((t_max, h, w), geo) for h, w in admissible_grids(cfg, limits.max_frames)]
    opt_cfg = replace(cfg, max_pixels=limits.opt_pixels) if limits.opt_pixels else cfg
    opt = vision_dims(plan_grid(*limits.opt_aspect, limits.opt_frames, opt_cfg), geo)
    ranges = {}
    for name in VisionDims.__dataclass_fields__:
        lo, hi = min(getattr(d, name) for d in small), max(getattr(d, name) for d in large)
        ranges[name] = (lo, min(max(getattr(opt, name), lo), hi), hi)
    return ranges


def llm_ranges(max_context: int, opt_prompt: int) -> dict[str, dict[str, Range]]:
    """Per LLM profile: prefill (2.. tokens over a past of 0, or of the earlier chunks of a chunked
    prefill) and decode (one token over a past of 1..context-1; a 1-token last chunk runs there,
    so decode steps never pick the prefill profile)."""
    opt_prompt = min(opt_prompt, max_context - 1)
    return {
        "prefill": {"seq_len": (2, opt_prompt, max_context), "past_len": (0, 0, max_context - 2),
                    "total_len": (2, opt_prompt, max_context)},
        "decode": {"seq_len": (1, 1, 1), "past_len": (1, opt_prompt, max_context - 1), "total_len": (2, opt_prompt + 1, max_context)},
    }


def prior_ranges(vision: dict[str, Range], text_tokens: int, max_context: int) -> dict[str, Range]:
    lo, opt, hi = vision["n_tokens"]
    if lo + 1 > max_context:
        raise ManifestError(f"the assistant's context of {max_context} cannot hold even {lo} visual tokens")
    hi = min(hi, max_context - text_tokens)
    opt_seq = min(opt, hi) + text_tokens
    # The KV-cache prior (chunked prefill) also takes chunks of 1.. tokens over a past, and early
    # chunks pass a one-element visual_index; one-shot graphs have no past_len/total_len dims.
    return {"n_visual": (1, min(opt, hi), hi), "seq_len": (1, opt_seq, hi + text_tokens),
            "past_len": (0, 0, hi + text_tokens - 1), "total_len": (1, opt_seq, hi + text_tokens)}


def shapes_for(io_inputs: list[dict], dims: dict[str, Range]) -> Shapes:
    """Substitute dim ranges into an I/O table's symbolic shapes."""
    shapes = {}
    for entry in io_inputs:
        triple = []
        for k in range(3):
            shape = []
            for d in entry["shape"]:
                if isinstance(d, int):
                    shape.append(d)
                elif d in dims:
                    shape.append(dims[d][k])
                else:
                    raise ManifestError(f"input {entry['name']!r}: no range for symbolic dim {d!r}")
            triple.append(tuple(shape))
        shapes[entry["name"]] = tuple(triple)
    return shapes


def derive_profiles(manifest: Manifest, limits: ProfileLimits = ProfileLimits()) -> dict[str, dict[str, Shapes]]:
    """role -> profile name -> input -> (min, opt, max) shape, for every graph in the manifest."""
    out = {}
    pre = manifest.data["preprocess"]
    vision = {}
    for which, model in manifest.data["models"].items():
        cfg = PreprocessConfig.from_manifest(pre, limits.max_pixels, limits.min_pixels)
        geo = VisionGeometry(model["patch_size"], model["merge_size"], model["window_size"])
        vision[which] = vision_ranges(cfg, geo, limits)
        role = f"{which}_vision"
        if role in manifest.data["graphs"]:
            out[role] = {"default": shapes_for(manifest.graph(role)["inputs"], vision[which])}
    primary = manifest.model("primary")
    context = min(limits.max_context or primary["context_length"], primary["context_length"])
    opt_prompt = int(vision["primary"]["n_tokens"][1] * limits.opt_retention) + limits.text_tokens
    for role in ("primary_llm", "primary_llm_lo", "primary_llm_hi"):  # the split segments: same dims, own KV
        if role in manifest.data["graphs"]:
            out[role] = {name: shapes_for(manifest.graph(role)["inputs"], dims)
                         for name, dims in llm_ranges(context, opt_prompt).items()}
    if "assistant_prior" in manifest.data["graphs"]:
        assistant = manifest.model("assistant")
        ctx = min(limits.max_context or assistant["context_length"], assistant["context_length"])
        out["assistant_prior"] = {"default": shapes_for(manifest.graph("assistant_prior")["inputs"],
                                                        prior_ranges(vision["assistant"], limits.text_tokens, ctx))}
    return out


def check_shapes_fit(shapes: Shapes, feeds: dict[str, np.ndarray]) -> str | None:
    """None if every feed lies within its profile's [min, max]; else a description of the first that does not."""
    for name, (lo, _, hi) in shapes.items():
        got = tuple(np.shape(feeds[name]))
        if len(got) != len(lo) or any(not a <= g <= b for a, g, b in zip(lo, got, hi)):
            return f"{name} has shape {got}, outside the profile {lo}..{hi}"
    return None
