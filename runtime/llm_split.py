"""The primary LLM as two engines split at layer K (``primary_llm_lo``: layers < K, ``primary_llm_hi``:
layers >= K, exported with ``export.py --fastv-layer K``), and the two methods that need the cut:

- FastV (spec §3.2) at prefill: layers < K run on every token; the last prompt token's attention at
  layer K-1 (head mean, over all keys) ranks the visual tokens; layers >= K run on the kept tokens
  at their original M-RoPE ids. DyToK+FastV: the prior's per-group budgets decide how many each
  temporal group keeps (top-``b_g`` within the group, spec §1.9's suggestion); without the prior,
  FastV's own global top-k over the whole video with the same total. Decoding then carries two
  KV sets: layers < K hold all N + t rows, layers >= K hold |keep| + t.
- DyCoke's decode-time KV step (spec §4.3): at each decode step the new token's attention at
  layer L-1 (= K-1) over the visual span chooses, through ``kv_keep``, the KV rows that layers
  >= L attend to (a key mask on the upper segment; the cache itself is never pruned, so rows
  can come back). Attention stable (cos >= 0.9 to the previous step's): no pruning that step, as
  the reference does. The previous attention is reset per request.

Any registered method with ``Method.in_llm`` prunes at the cut the same way (FastV, DART); one that
reads normalised hidden states (``Method.final_norm``: DART) also gets the final RMSNorm the split
export writes beside the graphs.
"""
from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from . import compression as C
from .compression.method import Request
from .compression.registry import get_method
from .decode import empty_kv, one_token
from .engines.base import Engine
from .errors import BudgetError, ManifestError
from .specs_kv import kv_input_names

LO, HI = "primary_llm_lo", "primary_llm_hi"
STABLE = 0.9  # DyCoke's hard-coded attention-change threshold


def split_layer(manifest) -> int | None:
    graphs = manifest.data["graphs"]
    return graphs[LO].get("split_layer") if LO in graphs and HI in graphs else None


def needs_split(opts) -> bool:
    return get_method(opts.method).in_llm is not None or bool(getattr(opts, "dycoke_kv", False))


def check(manifest, opts) -> None:
    """Before any heavy work: the folder has the split graphs, in a form that can do what is asked."""
    if not needs_split(opts):
        return
    in_llm = get_method(opts.method).in_llm is not None
    what = f"--method {opts.method}" if in_llm else "DyCoke KV pruning (--dycoke-kv)"
    if split_layer(manifest) is None:
        raise ManifestError(f"{what} needs the LLM split at layer K ({LO}/{HI}), which {manifest.folder} lacks: "
                            f"re-export with scripts/export.py --fastv-layer K (e.g. 'default' = 3)")
    if in_llm and get_method(opts.method).final_norm and "final_norm" not in manifest.model("primary"):
        raise ManifestError(f"{what} reads the LLM's final norm, which {manifest.folder} lacks (exported before "
                            f"split folders carried it): re-export with scripts/export.py --fastv-layer "
                            f"{split_layer(manifest)}")
    if in_llm and opts.dycoke_kv:
        raise BudgetError("DyCoke KV pruning reads the whole visual span in every layer; it cannot follow FastV, which "
                          "drops visual tokens from layer K on: use one of them")
    if opts.dycoke_kv:
        if manifest.graph(HI).get("attention") == "gqa":
            raise ManifestError(f"DyCoke KV pruning masks KV rows inside the sequence, which ONNX Runtime's fused "
                                f"GroupQueryAttention (right padding only) cannot: re-export {manifest.folder} with "
                                f"--llm-attention plain --fastv-layer K")
        if not 0 <= opts.kv_prune_ratio <= 1:
            raise BudgetError(f"DyCoke KV prune ratio must be in [0, 1], got {opts.kv_prune_ratio}")


def final_norm(manifest) -> dict:
    """The primary LLM's final RMSNorm from the folder: {"final_norm": weight [D] float32,
    "final_norm_eps": float} (``Method.final_norm``)."""
    entry = manifest.model("primary")["final_norm"]
    return {"final_norm": np.load(manifest.path(entry["file"]), allow_pickle=False).astype(np.float32),
            "final_norm_eps": float(entry["eps"])}


def visual_kept(keep: np.ndarray, start: int, num_visual: int) -> np.ndarray:
    """Kept sequence indices [K] -> the visual tokens among them, as indices into the visual span."""
    return keep[(keep >= start) & (keep < start + num_visual)] - start


class HostView(Mapping):
    """An engine's outputs as host arrays, copied only when read: a method in the LLM reads one
    layer's keys of the cache the engine keeps on its device (a torch tensor, a TensorRT buffer).
    ``host``: the engine's ``Engine.host``."""

    def __init__(self, outputs: Mapping, host: Callable[[object], np.ndarray]):
        self.outputs, self.host = outputs, host

    def __getitem__(self, name: str) -> np.ndarray:
        return self.host(self.outputs[name])

    def __iter__(self):
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)


@dataclass
class SplitStep:
    """The split LLM as a decode step (``runtime.decode``) for one request. ``vision_start`` /
    ``num_visual``: the visual span of the prompt as fed (after any pre-LLM compression).
    ``select(lo outputs) -> kept sequence indices``: a method that prunes inside the LLM (layers
    >= K then run on the kept rows at their original ids); None keeps every row. Layers < K hold
    all N + t KV rows, layers >= K hold |keep| + t."""
    lo: Engine
    hi: Engine
    k_split: int
    depth: int
    kv_heads: int
    head_dim: int
    vision_start: int
    num_visual: int
    select: Callable[[dict], np.ndarray] | None = None
    dycoke_kv: bool = False
    kv_prune_ratio: float = 0.8
    kept_visual: np.ndarray | None = None  # the visual tokens layers >= K see (local indices), when ``select`` ran
    pruned_steps: int = 0

    def __post_init__(self):
        self.names_lo = kv_input_names(self.k_split)
        self.names_hi = kv_input_names(self.depth, "past", self.k_split)
        self.beta_prev = None

    def prefill(self, embeds: np.ndarray, positions: np.ndarray, chunk: int | None = None) -> np.ndarray:
        n = len(embeds)
        self.out_lo = self.lo.run({"inputs_embeds": embeds[None], "position_ids": positions[:, None],
                                   "attention_mask": np.ones((1, n), np.int64),
                                   **empty_kv(self.names_lo, self.kv_heads, self.head_dim)})
        keep = np.arange(n)
        if self.select is not None:
            keep = self.select(HostView(self.out_lo, getattr(self.lo, "host", np.asarray)))  # duck-typed: NumPy
            self.kept_visual = visual_kept(keep, self.vision_start, self.num_visual)
        hidden = np.asarray(self.out_lo["hidden_states"])[:, keep]
        self.out_hi = self.hi.run({"hidden_states": hidden, "position_ids": positions[:, None][..., keep],
                                   "attention_mask": np.ones((1, len(keep)), np.int64),
                                   **empty_kv(self.names_hi, self.kv_heads, self.head_dim)})
        self.len_lo, self.len_hi = n, len(keep)
        return self.out_hi["logits"][0]

    def decode(self, embed: np.ndarray, position: int) -> np.ndarray:
        x, pos = one_token(embed, position)
        self.len_lo, self.len_hi = self.len_lo + 1, self.len_hi + 1
        self.out_lo = self.lo.run({"inputs_embeds": x, "position_ids": pos,
                                   "attention_mask": np.ones((1, self.len_lo), np.int64),
                                   **{m: self.out_lo[m.replace("past", "present")] for m in self.names_lo}})
        mask = np.ones((1, self.len_hi), np.int64)
        if self.dycoke_kv:
            s, v = self.vision_start, self.num_visual
            beta = np.asarray(self.out_lo["attention"])[s:s + v]
            rows = C.kv_keep(beta, self.beta_prev, s, self.len_hi, self.kv_prune_ratio, STABLE)
            self.beta_prev = beta
            if rows is not None:
                mask[:] = 0
                mask[0, rows] = 1
                self.pruned_steps += 1
        self.out_hi = self.hi.run({"hidden_states": np.asarray(self.out_lo["hidden_states"]), "position_ids": pos,
                                   "attention_mask": mask,
                                   **{m: self.out_hi[m.replace("past", "present")] for m in self.names_hi}})
        return self.out_hi["logits"][0]


@dataclass
class EngineSplitStep:
    """A method that prunes inside the LLM, on the primary LLM engine's own step: ``open_step`` whose
    ``prefill_split(embeds, positions, select) -> (logits, kept indices)`` runs both layer ranges on
    one preallocated cache (the PyTorch backend: its decode is then the one captured CUDA graph, not
    two engine calls per token). Same contract as ``SplitStep`` (no DyCoke KV step)."""
    step: object
    vision_start: int
    num_visual: int
    select: Callable[[Mapping], np.ndarray]
    kept_visual: np.ndarray | None = None
    dycoke_kv: bool = False
    pruned_steps: int = 0

    def prefill(self, embeds: np.ndarray, positions: np.ndarray, chunk: int | None = None) -> np.ndarray:
        logits, keep = self.step.prefill_split(embeds, positions, self.select)
        self.kept_visual = visual_kept(keep, self.vision_start, self.num_visual)
        return logits

    def decode(self, embed: np.ndarray, position: int) -> np.ndarray:
        return self.step.decode(embed, position)


def plan(pipe, opts, vision_start: int, num_visual: int, request: Request,
         max_len: int | None = None) -> SplitStep | EngineSplitStep | None:
    """The split-LLM step for these options on ``pipe``'s engines, or None for the one-graph LLM.
    ``request``: the method's view of the visual span as fed (its grid, budgets, prior); ``max_len``:
    prompt + new tokens, for an engine whose own step can prune inside the LLM (``EngineSplitStep``)."""
    if not needs_split(opts):
        return None
    model = pipe.m.model("primary")
    method = get_method(opts.method)
    extra = final_norm(pipe.m) if method.final_norm else {}
    select = (lambda lo: method.in_llm(ChainMap(extra, lo), request, vision_start)) if method.in_llm else None
    llm = pipe.engines.get("primary_llm")
    if (select is not None and not opts.dycoke_kv and max_len is not None and hasattr(llm, "open_step")
            and getattr(llm, "split_layer", None) == split_layer(pipe.m)):
        return EngineSplitStep(llm.open_step(max_len), vision_start, num_visual, select)
    return SplitStep(pipe.engines[LO], pipe.engines[HI], split_layer(pipe.m), model["num_layers"],
                     model["num_kv_heads"], model["head_dim"], vision_start, num_visual, select, bool(opts.dycoke_kv),
                     opts.kv_prune_ratio)
