"""Video + question -> answer, with DyToK compression between compiled engine calls.

decode/sample -> preprocess -> assistant prior -> budgets -> primary vision -> per-group
compression (``compression.registry``) -> prefill input (``prefill_input``) -> decode loop
(``decode``). Engines come from a mapping of role -> Engine, so ONNX Runtime, TensorRT and PyTorch
backends run the same pipeline.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import compression as C
from . import llm_split
from .admission import admit
from .compression.method import Kept, Method, Request
from .compression.registry import check_per_group, compress, get_method
from .decode import GraphStep, generate
from .engines.base import Engine
from .errors import BudgetError, PromptError
from .manifest import Manifest, load_manifest
from .options import Options, check_request
from .families import family_of
from .prefill import prior_attention
from .prefill_input import PrefillInput, PromptSequence, embed_rows, prefill_input, text_after
from .preprocess import VideoPatches
from .prompt import PromptBuilder, StreamDecoder
from .video import SampledFrames, sample_video


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


class Pipeline:
    def __init__(self, manifest: Manifest, engines: dict[str, Engine]):
        self.m = manifest
        self.engines = engines
        self.families = {which: family_of(manifest, which) for which in manifest.data["models"]}
        self.family = self.families["primary"]
        self.prompts = {which: PromptBuilder(manifest.path(manifest.section(which, "tokenizer")["file"]),
                                             manifest.section(which, "tokenizer")["chat_template"],
                                             manifest.section(which, "tokens")) for which in self.families}
        self.prompt = self.prompts["primary"]
        self.tables = {which: np.load(manifest.path(model["embeddings"]["file"]), mmap_mode="r", allow_pickle=False)
                       for which, model in manifest.data["models"].items()}
        self.suffix = {which: f.suffix_rows(manifest, which) for which, f in self.families.items()}
        self.device_preprocess: dict[str, Callable] = {}  # family name -> a backend's own, same output

    def preprocess(self, which: str, frames: np.ndarray, cfg) -> VideoPatches:
        """Frames [T, H, W, 3] uint8 -> the family's patches; on the backend's device where it has its own."""
        family = self.families[which]
        return self.device_preprocess.get(family.name, family.preprocess)(frames, cfg)

    # ---- stages (``which``: "primary" or "assistant", each with its own family) ------------
    def preprocess_config(self, which: str, max_pixels: int | None, min_pixels: int | None):
        return self.families[which].config(self.m.section(which, "preprocess"), max_pixels, min_pixels)

    def merged_grid(self, which: str, grid: tuple[int, int, int]) -> tuple[int, int, int]:
        """The family's input grid -> the LLM's visual tokens per axis (groups, rows, cols)."""
        return self.families[which].merged_grid(grid, self.m.model(which))

    def seconds_per_group(self, frames: SampledFrames, which: str = "primary") -> float:
        return self.families[which].frames_per_group / frames.sampled_fps

    def run_vision(self, which: str, patches: VideoPatches, chunk: int | None = None) -> dict[str, np.ndarray]:
        """The vision graph over the video, ``chunk`` temporal groups per call. Exact: attention
        never crosses a temporal group."""
        model, feeds = self.m.model(which), self.families[which].vision_feeds
        t = patches.grid_thw[0]
        step = min(chunk or t, t)
        parts = [self.engines[f"{which}_vision"].run(feeds(patches, g, min(step, t - g), model)) for g in range(0, t, step)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def sequence(self, which: str, question: str, patches: VideoPatches, seconds_per_group: float) -> PromptSequence:
        """Full prompt ids, positions, the video span and the rows after it, of one model."""
        t, h, w = self.merged_grid(which, patches.grid_thw)
        family, suffix = self.families[which], self.suffix[which]
        ids, start = self.prompts[which].input_ids(question, t * h * w + len(suffix))
        pos = family.positions(ids, self.prompts[which].video_id, patches.grid_thw, seconds_per_group, self.m.model(which))
        return PromptSequence(ids, pos, start, t * h * w, suffix, family.renumber)

    def prior_clip(self, frames: SampledFrames, opts: Options) -> SampledFrames:
        """The frames the assistant sees (``assistant_num_frames`` of them, uniformly)."""
        if not opts.assistant_num_frames or opts.assistant_num_frames >= len(frames.frames):
            return frames
        pick = np.linspace(0, len(frames.frames) - 1, opts.assistant_num_frames).astype(int)
        return SampledFrames(frames.frames[pick], frames.indices[pick], frames.timestamps[pick], frames.fps)

    def frame_prior(self, question: str, frames: SampledFrames, opts: Options, groups: int,
                    primary: tuple | None = None) -> np.ndarray:
        """The assistant's keyframe prior as weights over the primary's ``groups`` temporal groups:
        mapped by relative position when both models group frames alike, else by the frames'
        timestamps (an assistant of another family, ``compression.map_weights_by_time``).
        ``primary``: (config, patches) the primary made of ``frames``, reused at the same geometry."""
        clip = self.prior_clip(frames, opts)
        cfg = self.preprocess_config("assistant", opts.assistant_max_pixels, opts.min_pixels)
        same = (primary is not None and clip is frames and self.families["assistant"] is self.family
                and self.family.same_patches(frames.frames.shape[:3], primary[0], cfg))
        patches = primary[1] if same else self.preprocess("assistant", clip.frames, cfg)
        tokens = self.run_vision("assistant", patches, opts.vision_chunk)["tokens"]
        seq = self.sequence("assistant", question, patches, self.seconds_per_group(clip, "assistant"))
        inp = prefill_input(seq, Kept.select(tokens, np.arange(len(tokens))), self.tables["assistant"])
        attn = prior_attention(self.engines["assistant_prior"], inp.embeds, inp.positions,
                               np.arange(seq.start, seq.start + seq.n_visual), self.m.model("assistant"),
                               self.m.graph("assistant_prior"), opts.prefill_chunk)
        if opts.prior_layers is not None:
            attn = attn[self.prior_rows(opts.prior_layers)]
        weights = C.frame_weights(attn, seq.n_visual // patches.grid_thw[0])
        fa, fp = self.families["assistant"].frames_per_group, self.family.frames_per_group
        if fa == fp:
            return C.map_group_weights(weights, groups)
        return C.map_weights_by_time(weights, clip.timestamps, fa, frames.timestamps, fp)

    def prior_rows(self, layers) -> list[int]:
        """Rows of the prior graph's output for assistant ``layers`` (Options.prior_layers)."""
        exported = list(self.m.model("assistant").get("prior_layers") or [])
        missing = [x for x in layers if x not in exported]
        if not layers or missing:
            raise BudgetError(f"prior_layers {tuple(layers)}: the artifact's prior graph has layers {exported}; "
                              "choose a non-empty subset (or re-export with --layers)")
        return [exported.index(x) for x in layers]

    def uses_prior(self, opts: Options) -> bool:
        m = get_method(opts.method)
        return m.compresses and not m.own_prior and opts.assistant and self.m.has_assistant

    @staticmethod
    def budgets(weights: np.ndarray | None, grid: tuple[int, int, int], opts: Options, method: Method) -> np.ndarray:
        """Per-group token counts [groups] for ``opts`` on a merged ``grid`` (every token for "none")."""
        return C.plan_budgets(weights, grid[0], grid[1] * grid[2], opts.retention, opts.budget, opts.cap,
                              everything=not method.compresses)

    def generate(self, inp: PrefillInput, opts: Options, request: Request,
                 on_token: Callable[[str], None] | None = None, timings: dict | None = None):
        """Prefill ``inp`` and decode; ``request``: the compression request (an in-LLM method's
        budgets). -> (token ids, the visual tokens layers >= K saw when a method pruned inside the LLM, else None)."""
        timings = {} if timings is None else timings
        split = llm_split.plan(self, opts, inp.start, len(inp.source), request, len(inp.ids) + opts.max_new_tokens)
        step = split
        if step is None:
            llm, model = self.engines["primary_llm"], self.m.model("primary")
            opener = getattr(llm, "open_step", None)
            step = opener(len(inp.ids) + opts.max_new_tokens) if opener else GraphStep(
                llm, model["num_layers"], model["num_kv_heads"], model["head_dim"])
        table = self.tables["primary"]
        ids = generate(step, inp.embeds, inp.positions, inp.next_position, opts, lambda t: embed_rows(table, [t])[0],
                       self.prompt.eos_ids, StreamDecoder(self.prompt), on_token, timings)
        if split is not None and split.dycoke_kv:
            timings["kv_pruned_steps"] = float(split.pruned_steps)
        return ids, split.kept_visual if split is not None else None

    # ---- the whole thing -----------------------------------------------------------------
    def answer(self, video: str | SampledFrames, question: str, opts: Options = Options(),
               on_token: Callable[[str], None] | None = None) -> Result:
        check_request(question, opts)
        method = get_method(opts.method)
        timings: dict[str, float] = {}
        llm_split.check(self.m, opts)
        budget_aware = opts.encoder_slack is not None and method.compresses
        if budget_aware:
            check_per_group(method)
            if not self.family.encoder_slack:
                raise BudgetError(f"--encoder-slack: {self.family.name} encodes every frame at one fixed size")
        if opts.prior_layers is not None and self.uses_prior(opts):
            self.prior_rows(opts.prior_layers)  # a bad choice fails before any engine runs
        t_all = t0 = time.perf_counter()
        frames = video if isinstance(video, SampledFrames) else sample_video(
            video, num_frames=opts.num_frames, fps=opts.fps, max_frames=opts.max_frames)
        timings["decode_video"] = time.perf_counter() - t0
        frames, opts = admit(self, frames, question, opts)  # context and memory, before any engine runs

        t0 = time.perf_counter()
        cfg = self.preprocess_config("primary", opts.max_pixels, opts.min_pixels)
        if budget_aware:  # groups are preprocessed at their own grids later
            patches = VideoPatches(None, self.family.plan(*frames.frames.shape[1:3], len(frames.frames), cfg), (0, 0))
        else:
            patches = self.preprocess("primary", frames.frames, cfg)
        seq = self.sequence("primary", question, patches, self.seconds_per_group(frames))
        context = self.m.model("primary")["context_length"]
        if seq.text_tokens + opts.max_new_tokens > context:
            raise PromptError(f"question of {seq.text_tokens} tokens plus {opts.max_new_tokens} new tokens does not fit "
                              f"the context of {context} tokens")
        timings["preprocess"] = time.perf_counter() - t0

        grid = self.merged_grid("primary", patches.grid_thw)
        t0 = time.perf_counter()
        weights = None
        if self.uses_prior(opts):
            weights = self.frame_prior(question, frames, opts, grid[0], None if budget_aware else (cfg, patches))
        timings["assistant"] = time.perf_counter() - t0

        if budget_aware:  # each group at the smallest grid its budget needs
            from .encoder_plan import encode_budget_aware
            kept, seq, request = encode_budget_aware(self, frames, question, opts, method, weights, timings)
        else:
            t0 = time.perf_counter()
            vision = self.run_vision("primary", patches, opts.vision_chunk)
            timings["vision"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            request = Request(grid, self.budgets(weights, grid, opts, method), opts.retention, opts.budget,
                              weights is not None, text_after(seq, self.tables["primary"]), seq.start)
            kept = compress(method, vision, request)
            timings["compress"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        inp = prefill_input(seq, kept, self.tables["primary"], opts.max_new_tokens, context)
        timings["compress"] += time.perf_counter() - t0

        token_ids, kept_visual = self.generate(inp, opts, request, on_token, timings)
        source, dominant, budgets = inp.source, inp.dominant, request.budgets
        if kept_visual is not None:  # pruned inside the LLM: the visual tokens layers >= K saw, per group
            source, dominant = kept_visual, np.ones(len(kept_visual), bool)
            budgets = np.bincount(kept_visual // (grid[1] * grid[2]), minlength=grid[0]).astype(np.int64)
        timings["end_to_end"] = time.perf_counter() - t_all
        return Result(self.prompt.decode(token_ids), token_ids, timings, weights, budgets, source, dominant,
                      (len(source), grid[0] * grid[1] * grid[2]), frames, patches.grid_thw)


def load_pipeline(folder: str, providers=("cpu",), threads: int | None = None, verify_hashes: bool = True,
                  profile_dir: str | None = None, backend: str = "onnxruntime", trt_cache: str | None = None,
                  fp16: bool = False) -> Pipeline:
    """A pipeline over an artifact folder; the engines as ``engines.loading.load_engines`` makes them
    (backend "onnxruntime" with ``providers`` cpu/cuda/tensorrt, or "tensorrt")."""
    from .engines.loading import load_engines

    manifest = load_manifest(folder, verify_hashes)
    return Pipeline(manifest, load_engines(manifest, providers, threads, profile_dir, backend, trt_cache, fp16))
