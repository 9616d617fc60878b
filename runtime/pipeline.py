"""Video + question -> answer, with DyToK compression between compiled engine calls.

decode/sample -> preprocess -> assistant prior -> budgets -> primary vision -> per-group
compression -> positions gathered -> prefill -> decode loop. Engines come from a mapping of
role -> Engine, so ONNX Runtime, TensorRT and PyTorch backends run the same pipeline.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from . import compression as C
from . import llm_split
from .admission import admit
from .engines.base import Engine, check_io
from .errors import BudgetError, PromptError
from .manifest import Manifest, load_manifest
from .positions import gather_positions, kept_sequence_indices, mrope_positions, next_position
from .prefill import DEFAULT_CHUNK, prior_attention, run_chunked
from .preprocess import PreprocessConfig, VideoPatches, plan_grid, preprocess_video
from .prompt import PromptBuilder, StreamDecoder
from .specs_kv import kv_input_names
from .video import SampledFrames, sample_video
from .vision_inputs import VisionGeometry, vision_feeds

METHODS = ("visionzip", "uniform", "dycoke", "dyntok", "none", "fastv", "evs")


@dataclass(frozen=True)
class Options:
    num_frames: int | None = 8  # None: Qwen fps sampling (fps, max_frames)
    fps: float = 2.0
    max_frames: int = 64
    max_pixels: int | None = None  # per frame, primary; None: the manifest's
    min_pixels: int | None = None
    method: str = "visionzip"
    retention: float = 0.25  # of the visual tokens, on average per group
    budget: int | None = None  # tokens per group on average (overrides retention)
    cap: int | None = None  # max tokens per group; None: all of a group's tokens
    assistant: bool = True  # off: uniform budgets
    assistant_max_pixels: int | None = None  # reduced resolution for the prior
    assistant_num_frames: int | None = None  # fewer frames for the prior
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    ignore_eos: bool = False  # benchmarks: always decode max_new_tokens
    vision_chunk: int | None = None  # temporal groups per vision call (bounds ViT memory); None: all
    prefill_chunk: int | None = DEFAULT_CHUNK  # prompt tokens per LLM/prior prefill call; None or 0: one call
    memory_budget: int | None = None  # bytes the process may peak at; None: RSS now + available memory
    fit: str = "off"  # "auto": lower frames/pixels until the run fits the context and the memory budget
    dycoke_kv: bool = False  # DyCoke's decode-time KV pruning (needs the split LLM, runtime/llm_split.py)
    kv_prune_ratio: float = 0.8  # DyCoke's p: share of the visual KV rows layers >= L drop per step
    encoder_slack: float | None = None  # budget-aware encoder resolution (runtime/encoder_plan.py); None: off
    prior_layers: tuple[int, ...] | None = None  # assistant layers of the prior, among the exported ones; None: all


REDUCED_PRIOR = (2, 4)  # the "reduced" assistant: divisors of the frames and of the primary's pixels per frame


def prior_setting(divisors: tuple[int, int]) -> str:
    """The name of a prior at 1/F of the frames and 1/P of the pixels, ``divisors`` = (F, P):
    "frames/F pixels/P", what evaluation rows carry and benchmark rows are joined on."""
    return "frames/{} pixels/{}".format(*divisors)


def prior_divisors_of(setting: str) -> tuple[int, int]:
    """(F, P) of a "frames/F pixels/P" name (``prior_setting``'s inverse). ValueError if it is not one."""
    f, sep, p = setting.removeprefix("frames/").partition(" pixels/")
    if not (setting.startswith("frames/") and sep and f.isdigit() and p.isdigit()):
        raise ValueError(f"not a prior setting: {setting!r}")
    return int(f), int(p)


def reduced_assistant(opts: Options, num_frames: int, manifest_max_pixels: int,
                      divisors: tuple[int, int] = REDUCED_PRIOR) -> Options:
    """The assistant at ``num_frames / divisors[0]`` frames and ``1 / divisors[1]`` of the
    primary's pixels per frame; by default the "reduced" one (half the frames, a quarter of the pixels)."""
    frames_div, pixels_div = divisors
    return replace(opts, assistant_num_frames=max(num_frames // frames_div, 1) if frames_div > 1 else None,
                   assistant_max_pixels=(opts.max_pixels or manifest_max_pixels) // pixels_div)


@dataclass
class Result:
    text: str
    token_ids: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    frame_weights: np.ndarray | None = None
    budgets: np.ndarray | None = None
    kept_source: np.ndarray | None = None  # kept indices into the full visual span
    kept_dominant: np.ndarray | None = None
    visual_tokens: tuple[int, int] = (0, 0)  # (kept, total)
    frames: SampledFrames | None = None
    grid_thw: tuple[int, int, int] | None = None


def _embed(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.asarray(table[ids], np.float32)


class Pipeline:
    def __init__(self, manifest: Manifest, engines: dict[str, Engine]):
        self.m = manifest
        self.engines = engines
        self.prompt = PromptBuilder(manifest.path(manifest.data["tokenizer"]["file"]),
                                    manifest.data["tokenizer"]["chat_template"], manifest.tokens)
        self.tables = {which: np.load(manifest.path(model["embeddings"]["file"]), mmap_mode="r", allow_pickle=False)
                       for which, model in manifest.data["models"].items()}

    # ---- stages -------------------------------------------------------------------------
    def preprocess_config(self, which: str, max_pixels: int | None, min_pixels: int | None) -> PreprocessConfig:
        return PreprocessConfig.from_manifest(self.m.data["preprocess"], max_pixels, min_pixels)

    def run_vision(self, which: str, patches: VideoPatches, chunk: int | None = None) -> dict[str, np.ndarray]:
        """The vision graph over the video, ``chunk`` temporal groups per call. Exact: every
        attention segment (window or full) lies inside one temporal group."""
        model = self.m.model(which)
        geo = VisionGeometry(model["patch_size"], model["merge_size"], model["window_size"])
        t, h, w = patches.grid_thw
        step = min(chunk or t, t)
        parts = []
        for g in range(0, t, step):
            n = min(step, t - g)
            feeds = {"pixel_values": patches.pixel_values[g * h * w:(g + n) * h * w], **vision_feeds((n, h, w), geo)}
            parts.append(self.engines[f"{which}_vision"].run(feeds))
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def sequence(self, which: str, question: str, patches: VideoPatches, seconds_per_group: float):
        """Full prompt ids, M-RoPE positions and the video span of one model."""
        model = self.m.model(which)
        t, h, w = patches.grid_thw
        n_vis = t * h * w // model["merge_size"] ** 2
        ids, start = self.prompt.input_ids(question, n_vis)
        pos, _ = mrope_positions(ids, self.m.tokens["video"], [patches.grid_thw], [seconds_per_group],
                                 model["merge_size"], model["tokens_per_second"])
        return ids, pos, start, n_vis

    def frame_prior(self, question: str, frames: SampledFrames, opts: Options) -> tuple[np.ndarray, int]:
        """Assistant keyframe prior: weights over the assistant's temporal groups, and their count."""
        clip = frames
        if opts.assistant_num_frames and opts.assistant_num_frames < len(frames.frames):
            pick = np.linspace(0, len(frames.frames) - 1, opts.assistant_num_frames).astype(int)
            clip = SampledFrames(frames.frames[pick], frames.indices[pick], frames.timestamps[pick], frames.fps)
        patches = preprocess_video(clip.frames, self.preprocess_config("assistant", opts.assistant_max_pixels, opts.min_pixels))
        tokens = self.run_vision("assistant", patches, opts.vision_chunk)["tokens"]
        ids, pos, start, n_vis = self.sequence("assistant", question, patches, 2 / clip.sampled_fps)
        embeds = _embed(self.tables["assistant"], ids)
        embeds[start:start + n_vis] = tokens
        attn = prior_attention(self.engines["assistant_prior"], embeds, pos, np.arange(start, start + n_vis),
                               self.m.model("assistant"), self.m.graph("assistant_prior"), opts.prefill_chunk)
        if opts.prior_layers is not None:
            attn = attn[self.prior_rows(opts.prior_layers)]
        return C.frame_weights(attn, n_vis // patches.grid_thw[0]), patches.grid_thw[0]

    def prior_rows(self, layers) -> list[int]:
        """Rows of the prior graph's output for assistant ``layers`` (Options.prior_layers)."""
        exported = list(self.m.model("assistant").get("prior_layers") or [])
        missing = [x for x in layers if x not in exported]
        if not layers or missing:
            raise BudgetError(f"prior_layers {tuple(layers)}: the artifact's prior graph has layers {exported}; "
                               "choose a non-empty subset (or re-export with --layers)")
        return [exported.index(x) for x in layers]

    @staticmethod
    def map_weights(weights: np.ndarray, groups: int) -> np.ndarray:
        """Assistant group weights -> primary group weights (nearest in time), renormalised."""
        if len(weights) == groups:
            return weights
        src = (np.arange(len(weights)) + 0.5) / len(weights)
        dst = (np.arange(groups) + 0.5) / groups
        mapped = weights[np.abs(dst[:, None] - src[None, :]).argmin(axis=1)]
        return (mapped / mapped.sum()).astype(np.float32)

    def compress(self, vision: dict, groups: int, budgets: np.ndarray, opts: Options, grid_w: int, prior: bool = True):
        tokens, importance, metric = vision["tokens"], vision["importance"], vision["metric"]
        n = len(tokens)
        if opts.method in ("none", "fastv"):  # FastV prunes inside the LLM, at layer K
            return tokens, np.arange(n), np.ones(n, bool)
        if opts.method == "evs":  # with the prior: DyToK+EVS per-group budgets; else EVS's global top-K
            rate = 1 - (opts.retention if opts.budget is None else opts.budget / (n // groups))
            idx = C.evs_groups(tokens, budgets) if prior else np.flatnonzero(C.evs_mask(tokens, groups, rate))
            return tokens[idx], idx, np.ones(len(idx), bool)
        if opts.method == "visionzip":
            kept = C.visionzip_groups(tokens, importance, metric, budgets)
            return kept.tokens, kept.source, kept.dominant
        if opts.method == "uniform":
            idx = C.select_groups(n, budgets, "uniform")
            return tokens[idx], idx, np.ones(len(idx), bool)
        if opts.method == "dycoke":
            # TTM keeps anchor frames whole; pick its prune ratio so the average kept share
            # matches the retention (about 3 in 4 groups are pruned). Budgets do not apply.
            k = float(np.clip((1 - opts.retention) * 4 / 3, 0, 1))
            idx = np.sort(C.ttm(tokens, groups, k, drop_odd_last=False))
            return tokens[idx], idx, np.ones(len(idx), bool)
        if opts.method == "dyntok":
            merged = C.dyntok_groups(metric, tokens, groups, grid_w, budgets=budgets)
            return merged.tokens, merged.source, np.ones(len(merged.source), bool)
        raise BudgetError(f"unknown method {opts.method!r}: expected one of {METHODS}")

    def generate(self, embeds: np.ndarray, positions: np.ndarray, start_pos: int, opts: Options,
                 on_token: Callable[[str], None] | None, timings: dict) -> list[int]:
        model = self.m.model("primary")
        llm = self.engines["primary_llm"]
        names = kv_input_names(model["num_layers"])
        kv_shape = (1, model["num_kv_heads"], 0, model["head_dim"])
        feeds = {"inputs_embeds": embeds[None], "position_ids": positions[:, None],
                 "attention_mask": np.ones((1, len(embeds)), np.int64), **{n: np.zeros(kv_shape, np.float32) for n in names}}
        rng = np.random.default_rng(opts.seed)
        out_ids: list[int] = []
        pieces = StreamDecoder(self.prompt)  # streamed pieces add up to the decoded answer
        t0 = time.perf_counter()
        for step in range(opts.max_new_tokens):
            out = run_chunked(llm, feeds, opts.prefill_chunk, names) if step == 0 else llm.run(feeds)
            if step == 0:
                timings["prefill"] = time.perf_counter() - t0
                t0 = time.perf_counter()
            token = _pick(out["logits"][0], opts, rng)
            out_ids.append(token)
            stop = token in self.prompt.eos_ids and not opts.ignore_eos
            if on_token:
                on_token(pieces.push(token, final=stop or step == opts.max_new_tokens - 1))
            if stop:
                break
            past_len = feeds["attention_mask"].shape[1]
            feeds = {"inputs_embeds": _embed(self.tables["primary"], np.array([token]))[None],
                     "position_ids": np.full((3, 1, 1), start_pos + step, np.int64),
                     "attention_mask": np.ones((1, past_len + 1), np.int64),
                     **{n: out[n.replace("past", "present")] for n in names}}
        timings["decode"] = time.perf_counter() - t0
        timings["decode_tokens"] = max(len(out_ids) - 1, 0)
        return out_ids

    # ---- the whole thing -----------------------------------------------------------------
    def answer(self, video: str | SampledFrames, question: str, opts: Options = Options(),
               on_token: Callable[[str], None] | None = None) -> Result:
        timings: dict[str, float] = {}
        llm_split.check(self.m, opts)
        if opts.prior_layers is not None and opts.assistant and opts.method != "none" and self.m.has_assistant:
            self.prior_rows(opts.prior_layers)  # a bad choice fails before any engine runs
        t_all = t0 = time.perf_counter()
        frames = video if isinstance(video, SampledFrames) else sample_video(
            video, num_frames=opts.num_frames, fps=opts.fps, max_frames=opts.max_frames)
        timings["decode_video"] = time.perf_counter() - t0
        frames, opts = admit(self, frames, question, opts)  # context and memory, before any engine runs

        t0 = time.perf_counter()
        cfg = self.preprocess_config("primary", opts.max_pixels, opts.min_pixels)
        if opts.encoder_slack is not None and opts.method != "none":  # groups are preprocessed at their own grids later
            patches = VideoPatches(None, plan_grid(*frames.frames.shape[1:3], len(frames.frames), cfg), (0, 0))
        else:
            patches = preprocess_video(frames.frames, cfg)
        ids, pos, start, n_vis = self.sequence("primary", question, patches, 2 / frames.sampled_fps)
        model = self.m.model("primary")
        if len(ids) - n_vis + opts.max_new_tokens > model["context_length"]:
            raise PromptError(f"question of {len(ids) - n_vis} tokens plus {opts.max_new_tokens} new tokens does not fit "
                              f"the context of {model['context_length']} tokens")
        timings["preprocess"] = time.perf_counter() - t0

        groups = patches.grid_thw[0]
        per_group = n_vis // groups
        weights = None
        t0 = time.perf_counter()
        if opts.method != "none" and opts.assistant and self.m.has_assistant:
            weights, _ = self.frame_prior(question, frames, opts)
            weights = self.map_weights(weights, groups)
        timings["assistant"] = time.perf_counter() - t0

        if opts.encoder_slack is not None and opts.method != "none":  # each group at the smallest grid its budget needs
            from .encoder_plan import answer_budget_aware
            token_ids, budgets, source, dominant, n_vis, _ = answer_budget_aware(self, frames, question, opts, weights,
                                                                                 timings, on_token)
            timings["end_to_end"] = time.perf_counter() - t_all
            return Result(self.prompt.decode(token_ids), token_ids, timings, weights, budgets, source, dominant,
                          (len(source), n_vis), frames, patches.grid_thw)

        t0 = time.perf_counter()
        vision = self.run_vision("primary", patches, opts.vision_chunk)
        timings["vision"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        budget = opts.budget if opts.budget is not None else C.budget_for_retention(per_group, opts.retention)
        cap = opts.cap if opts.cap is not None else per_group
        if cap > per_group:
            raise BudgetError(f"cap {cap} exceeds the {per_group} tokens of a temporal group")
        if opts.method == "none":
            budgets = C.uniform_budgets(groups, per_group)
        elif weights is not None:
            budgets = C.allocate_budgets(weights, budget, cap)
        else:
            budgets = C.uniform_budgets(groups, min(budget, cap))
        kept_tokens, source, dominant = self.compress(vision, groups, budgets, opts, patches.grid_thw[2] // 2,
                                                      weights is not None)
        order = np.argsort(source, kind="stable")  # original order, so positions stay monotone per axis
        kept_tokens, source, dominant = kept_tokens[order], source[order], dominant[order]
        keep = kept_sequence_indices(len(ids), start, n_vis, source)
        embeds = _embed(self.tables["primary"], ids[keep])
        embeds[start:start + len(source)] = kept_tokens
        positions = gather_positions(pos, keep)
        if len(keep) + opts.max_new_tokens > model["context_length"]:
            raise PromptError(f"prompt of {len(keep)} tokens plus {opts.max_new_tokens} new tokens exceeds the context of "
                              f"{model['context_length']}; lower --retention or the frame count")
        timings["compress"] = time.perf_counter() - t0

        split = llm_split.plan(opts, start, len(source), budgets, weights is not None)  # None: the one-graph LLM
        if split:
            token_ids = split.generate(self, embeds, positions, next_position(pos), opts, on_token, timings)
            if split.kept_visual is not None:  # FastV: the visual tokens layers >= K saw
                source, dominant = split.kept_visual, np.ones(len(split.kept_visual), bool)
        else:
            token_ids = self.generate(embeds, positions, next_position(pos), opts, on_token, timings)
        timings["end_to_end"] = time.perf_counter() - t_all
        return Result(self.prompt.decode(token_ids), token_ids, timings, weights, budgets, source, dominant,
                      (len(source), n_vis), frames, patches.grid_thw)


def _pick(logits: np.ndarray, opts: Options, rng: np.random.Generator) -> int:
    if opts.temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / opts.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cut = np.searchsorted(np.cumsum(p[order]), opts.top_p) + 1  # smallest prefix with mass >= top_p
    keep = order[:cut]
    return int(rng.choice(keep, p=p[keep] / p[keep].sum()))


def load_pipeline(folder: str, providers=("cpu",), threads: int | None = None, verify_hashes: bool = True,
                  profile_dir: str | None = None, backend: str = "onnxruntime", trt_cache: str | None = None,
                  fp16: bool = False) -> Pipeline:
    """A pipeline over an artifact folder.

    backend "onnxruntime": ``providers`` cpu/cuda/tensorrt (the TensorRT EP gets explicit profiles
    from the manifest, an engine cache in ``trt_cache`` and ``fp16``); ``profile_dir``: ORT
    per-node traces. backend "tensorrt": native engines from scripts/build_engines.py.
    """
    import os

    manifest = load_manifest(folder, verify_hashes)
    manifest.require_onnx(f"the {backend} backend")
    if backend == "tensorrt":
        from .engines.tensorrt import tensorrt_engines
        return Pipeline(manifest, tensorrt_engines(manifest))
    if backend != "onnxruntime":
        raise ValueError(f"backend {backend!r}: expected onnxruntime or tensorrt")
    from .engines.ort import OrtEngine, gpu_provider_options

    profiles = {}
    if "tensorrt" in providers:
        from .engines.profiles import derive_profiles
        profiles = derive_profiles(manifest)
    engines = {}
    for role, entry in manifest.data["graphs"].items():
        options = gpu_provider_options(profiles.get(role), trt_cache, fp16) if profiles else None
        engines[role] = OrtEngine(manifest.onnx_path(role), providers, threads, options,
                                  os.path.join(profile_dir, role) if profile_dir else None)
        check_io(role, engines[role], entry)
    return Pipeline(manifest, engines)
