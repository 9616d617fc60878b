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
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import compression as C
from .errors import BudgetError, ManifestError
from .positions import kept_sequence_indices
from .specs_kv import kv_input_names

LO, HI = "primary_llm_lo", "primary_llm_hi"
STABLE = 0.9  # DyCoke's hard-coded attention-change threshold


def split_layer(manifest) -> int | None:
    graphs = manifest.data["graphs"]
    return graphs[LO].get("split_layer") if LO in graphs and HI in graphs else None


def needs_split(opts) -> bool:
    return opts.method == "fastv" or bool(getattr(opts, "dycoke_kv", False))


def check(manifest, opts) -> None:
    """Before any heavy work: the folder has the split graphs, in a form that can do what is asked."""
    if not needs_split(opts):
        return
    what = "--method fastv" if opts.method == "fastv" else "DyCoke KV pruning (--dycoke-kv)"
    if split_layer(manifest) is None:
        raise ManifestError(f"{what} needs the LLM split at layer K ({LO}/{HI}), which {manifest.folder} lacks: "
                            f"re-export with scripts/export.py --fastv-layer K (e.g. 'default' = 3)")
    if opts.method == "fastv" and opts.dycoke_kv:
        raise BudgetError("DyCoke KV pruning reads the whole visual span in every layer; it cannot follow FastV, which "
                          "drops visual tokens from layer K on: use one of them")
    if opts.dycoke_kv:
        if manifest.graph(HI).get("attention") == "gqa":
            raise ManifestError(f"DyCoke KV pruning masks KV rows inside the sequence, which ONNX Runtime's fused "
                                f"GroupQueryAttention (right padding only) cannot: re-export {manifest.folder} with "
                                f"--llm-attention plain --fastv-layer K")
        if not 0 <= opts.kv_prune_ratio <= 1:
            raise BudgetError(f"DyCoke KV prune ratio must be in [0, 1], got {opts.kv_prune_ratio}")


@dataclass
class SplitRun:
    """One request on the split LLM. ``vision_start``/``num_visual``: the visual span of the prompt as
    fed (after any pre-LLM compression). ``budgets``: FastV per-group counts (None: no FastV);
    ``per_group``: True for DyToK+FastV, False for FastV's global top-``budgets.sum()``."""
    vision_start: int
    num_visual: int
    budgets: np.ndarray | None = None
    per_group: bool = True
    dycoke_kv: bool = False
    kv_prune_ratio: float = 0.8
    kept_visual: np.ndarray | None = None  # FastV: local indices of the visual tokens layers >= K see
    pruned_steps: int = 0
    stats: dict = field(default_factory=dict)

    def fastv_keep(self, attention: np.ndarray) -> np.ndarray:
        s, v = self.vision_start, self.num_visual
        if self.per_group:
            return C.fastv_keep_per_frame(attention, s, v, self.budgets)
        return C.fastv_keep_top(attention, s, v, int(np.sum(self.budgets)))

    def generate(self, pipe, embeds: np.ndarray, positions: np.ndarray, start_pos: int, opts, on_token,
                 timings: dict) -> list[int]:
        from .pipeline import _embed, _pick

        model = pipe.m.model("primary")
        k_split, depth = split_layer(pipe.m), model["num_layers"]
        lo, hi = pipe.engines[LO], pipe.engines[HI]
        names_lo, names_hi = kv_input_names(k_split), kv_input_names(depth, "past", k_split)
        empty = np.zeros((1, model["num_kv_heads"], 0, model["head_dim"]), np.float32)
        n = len(embeds)
        rng = np.random.default_rng(opts.seed)
        out_ids: list[int] = []
        t0 = time.perf_counter()
        out_lo = lo.run({"inputs_embeds": embeds[None], "position_ids": positions[:, None],
                         "attention_mask": np.ones((1, n), np.int64), **{m: empty for m in names_lo}})
        keep = np.arange(n)
        if self.budgets is not None:
            keep = self.fastv_keep(np.asarray(out_lo["attention"]))
            s = self.vision_start
            self.kept_visual = keep[(keep >= s) & (keep < s + self.num_visual)] - s
        hidden = np.asarray(out_lo["hidden_states"])[:, keep]
        out_hi = hi.run({"hidden_states": hidden, "position_ids": positions[:, None][..., keep],
                         "attention_mask": np.ones((1, len(keep)), np.int64), **{m: empty for m in names_hi}})
        len_lo, len_hi = n, len(keep)
        beta_prev = None
        for step in range(opts.max_new_tokens):
            if step == 0:
                timings["prefill"] = time.perf_counter() - t0
                t0 = time.perf_counter()
            token = _pick(out_hi["logits"][0], opts, rng)
            out_ids.append(token)
            if on_token:
                on_token(pipe.prompt.decode([token]))
            if (token in pipe.prompt.eos_ids and not opts.ignore_eos) or step == opts.max_new_tokens - 1:
                break
            pos = np.full((3, 1, 1), start_pos + step, np.int64)
            len_lo, len_hi = len_lo + 1, len_hi + 1
            out_lo = lo.run({"inputs_embeds": _embed(pipe.tables["primary"], np.array([token]))[None], "position_ids": pos,
                             "attention_mask": np.ones((1, len_lo), np.int64),
                             **{m: out_lo[m.replace("past", "present")] for m in names_lo}})
            mask = np.ones((1, len_hi), np.int64)
            if self.dycoke_kv:
                s, v = self.vision_start, self.num_visual
                beta = np.asarray(out_lo["attention"])[s:s + v]
                rows = C.kv_keep(beta, beta_prev, s, len_hi, self.kv_prune_ratio, STABLE)
                beta_prev = beta
                if rows is not None:
                    mask[:] = 0
                    mask[0, rows] = 1
                    self.pruned_steps += 1
            out_hi = hi.run({"hidden_states": np.asarray(out_lo["hidden_states"]), "position_ids": pos,
                             "attention_mask": mask, **{m: out_hi[m.replace("past", "present")] for m in names_hi}})
        timings["decode"] = time.perf_counter() - t0
        timings["decode_tokens"] = max(len(out_ids) - 1, 0)
        if self.dycoke_kv:
            timings["kv_pruned_steps"] = float(self.pruned_steps)
        return out_ids


def plan(opts, vision_start: int, num_visual: int, budgets: np.ndarray, prior: bool) -> SplitRun | None:
    """The split-LLM run for these options, or None for the one-graph LLM."""
    if not needs_split(opts):
        return None
    fastv = opts.method == "fastv"
    return SplitRun(vision_start, num_visual, budgets if fastv else None, prior, bool(opts.dycoke_kv),
                    opts.kv_prune_ratio)
