"""DART (arXiv 2502.11494; ZichenWen1/DART ``DART.get_retained_image_token``, Qwen2.5-VL file): keep
the visual tokens least duplicated with a few pivots (spec §9).

A few **pivots** are picked by the L1 norm of their keys: ``P_img`` in the visual span and ``P_txt``
in the text after it. Each pivot in turn keeps the ``m = int(L * (1 - rho) / (P_img + P_txt))``
remaining visual tokens least cosine-similar to it; the image pivots are kept too, so exactly
``P_img + (P_img + P_txt) * m`` visual tokens stay. DART has no notion of frames: on a video the
whole visual span is one set and duplicates are removed across frames (§9.5, our adaptation).

- ``dart_keep``: the paper's form, inside the LLM between layers K-1 and K (§9.3).
- ``dart_keep_embeddings``: the TensorRT-Edge-LLM ``DartPruner`` form (§9.6): the same selection on
  the input embeddings before the LLM (norms and cosines of the embeddings), so no engine hooks.
- ``dart_keep_groups`` / ``dart_keep_embeddings_groups``: DyToK budgets per temporal group (§9.8
  option 2, our extension). Not natural for DART: per-group quotas partly undo the cross-frame
  de-duplication that DART's value comes from. §9.8 option 1 (DyToK sets only the total) needs
  no new code: pick ``reduction`` so that ``P_img + P * m`` matches the budget sum.

Pivot order (§9.3 step 3): the reference iterates a CPython ``set`` of the pivot positions, which is
not ascending order, and the result depends on it (V9.1); we build the same set the same way.
Ties in the reference's ``topk`` are unspecified; here the lower position wins. Returned indices
are ascending; kept tokens keep their original position ids and decoding continues after the
unpruned prompt (§9.4, §10).

Engine hooks for the in-LLM placement (§9.9). The LLM must be split at DART's K (default 2; the
FastV split ``primary_llm_lo``/``primary_llm_hi`` is cut at its own K): the lower graph runs layers
0..K-1 on the whole prompt and must expose, for layer K-1, (1) its output hidden states [1, S, D]
after the model's final RMSNorm -- the lower graph's ``hidden_states`` is the pre-norm residual, so
either add ``norm(hidden_states)`` as an output or export the final norm's weight w [D]: RMSNorm's
per-row scale cancels in a cosine, so ``w * hidden_states`` gives the same cosines -- and (2) its
post-RoPE keys, KV heads not GQA-expanded, [1, H_kv, S, d_h], which the lower graph already returns
as ``present_key_{K-1}``. No attention maps. The upper graph then takes the kept rows of the
hidden states with their original position ids; layers < K keep all S rows in their KV cache,
layers >= K only the kept ones.

Registered methods (the pipeline's ``--method``; both ``baseline``: without the prior each is a
published method of its own). The retention r (or the average budget over a group's tokens) is
the share kept, so DART's reduction ratio is rho = 1 - r (``--retention 0.1`` is the paper's
rho = 0.9, float rounding of m included, V9.2).

- ``dart``: the paper's placement, inside the LLM on a folder exported with ``--fastv-layer K``
  (``runtime/llm_split.py``). DART's default K is 2, but the cut is the folder's: the method
  prunes at whatever K the folder was split at (``export.py --fastv-layer 2`` for the paper's).
  The final RMSNorm that §9.2 applies to layer K-1's output is not in the graphs: the split export
  writes its weight and eps (``models.primary.final_norm``) and ``rms_norm`` applies it here
  (``Method.final_norm``); the keys are the lower segment's ``present_key_{K-1}`` (post-RoPE, KV
  heads not expanded). Without the prior: ``dart_keep`` over the whole video. With it:
  DyToK+DART, ``dart_keep_groups`` (§9.8 option 2). **That is not natural for DART**: per-group
  quotas give up the cross-frame de-duplication DART's value comes from, and none of §9.8's
  options is the paper's; it is here so the prior can be compared on DART's selection.
- ``dart-embed``: the TensorRT-Edge-LLM placement (§9.6), on the merged visual tokens before the
  LLM with the prompt text after the span (``Request.text``) as the text-pivot pool; with the
  prior, ``dart_keep_embeddings_groups`` (per-span quotas are Edge-LLM's own scheme, so per-group
  quotas fit this form best, though cross-frame duplicates are no longer removed).

Where the reference crashes (§9.7: too high a retention for the pivots' picks, e.g. r = 1; fewer
text tokens after the span than text pivots) both methods raise one BudgetError in the user's
terms before the LLM runs.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import BudgetError, ShapeError
from ..positions import kept_sequence_indices
from .method import Kept, Method, Request

EPS = 1e-8  # torch.nn.functional.cosine_similarity's clamp of each norm


def _check_ratio(reduction) -> float:
    if isinstance(reduction, bool) or not isinstance(reduction, numbers.Real) or not 0 <= float(reduction) <= 1:
        raise BudgetError(f"DART reduction ratio (fraction removed) must be in [0, 1], got {reduction!r}")
    return float(reduction)


def _check_pivots(image_pivots, text_pivots) -> tuple[int, int]:
    for name, p in (("image_pivots", image_pivots), ("text_pivots", text_pivots)):
        if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 0:
            raise BudgetError(f"DART {name} must be a non-negative integer, got {p!r}")
    if image_pivots + text_pivots == 0:
        raise BudgetError("DART needs at least one pivot (image_pivots + text_pivots > 0)")
    return int(image_pivots), int(text_pivots)


def dart_picks(length: int, reduction: float, image_pivots: int = 4, text_pivots: int = 4,
               max_picks: int | None = None, llava: bool = False) -> int:
    """Picks per pivot ``m``. Qwen2/2.5-VL (§9.3 step 1): ``int(L * (1 - rho) / P)`` in Python float
    arithmetic (``L = 1024, rho = 0.9 -> 12``). LLaVA (``llava=True`` or ``max_picks`` given, §9.4):
    ``ceil((M if M is not None else L * (1 - rho)) // P)``. P = image_pivots + text_pivots."""
    rho = _check_ratio(reduction)
    p_img, p_txt = _check_pivots(image_pivots, text_pivots)
    if max_picks is None and not llava:
        return int(length * (1 - rho) / (p_img + p_txt))
    if max_picks is not None and (isinstance(max_picks, bool) or not isinstance(max_picks, numbers.Integral)
                                  or max_picks < 0):
        raise BudgetError(f"DART max_picks (LLaVA's max_num_trunction) must be a non-negative integer, "
                          f"got {max_picks!r}")
    return int(math.ceil((max_picks if max_picks is not None else length * (1 - rho)) // (p_img + p_txt)))


def _l1(rows: np.ndarray, axes) -> np.ndarray:
    """Per-position L1 norm in float32 (torch.norm(p=1) of the heads-concatenated row)."""
    return np.abs(rows.astype(np.float32, copy=False)).sum(axis=axes)


def _cosines(visual: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """cos(visual_i, pivot_j) with each norm clamped at 1e-8, as torch's cosine_similarity.
    visual [L, D], pivots [P, D] -> [L, P] float32 (one GEMM; no [L, D] temporaries)."""
    unit = pivots / np.maximum(np.sqrt(np.square(pivots).sum(axis=1, keepdims=True)), np.float32(EPS))
    norms = np.sqrt(np.einsum("ij,ij->i", visual, visual))
    return (visual @ unit.T) / np.maximum(norms, np.float32(EPS))[:, None]


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, descending (ties: lower index), as torch.topk orders them."""
    return np.argsort(-values, kind="stable")[:k]


def _pivot_order(image_positions: list[int], text_positions: list[int]) -> list[int]:
    # §9.3 step 3: the reference does ``set(image + text)`` and iterates it; CPython's set order of
    # small ints (hash = value, open addressing) is what decides which pivot picks first.
    return list(set(image_positions + text_positions))


def _greedy(cos: np.ndarray, candidates: np.ndarray, picks: list[int]) -> np.ndarray:
    """Each pivot j in turn takes its ``picks[j]`` remaining candidates of lowest cosine (ties:
    lower index). cos [C, P] of the candidates [C] (ascending local indices) -> taken indices."""
    alive = np.ones(len(candidates), bool)
    taken = [np.zeros(0, np.int64)]
    for j, m in enumerate(picks):
        if m:
            left = np.flatnonzero(alive)
            low = left[np.argsort(cos[left, j], kind="stable")[:m]]
            alive[low] = False
            taken.append(candidates[low])
    return np.concatenate(taken).astype(np.int64)


def _select(visual: np.ndarray, visual_norm: np.ndarray, text: np.ndarray, text_norm: np.ndarray,
            start: int, text_start: int, image_pivots: int, text_pivots: int, picks_for) -> np.ndarray:
    """One DART selection over a visual set. visual [L, D] and visual_norm [L] (pivot score) at
    positions start..start+L-1; text [S_t, D] and text_norm [S_t] (the text after the span) at
    positions text_start..; positions only set the pivot order. picks_for(P) -> picks per pivot
    in order. Returns kept local visual indices, ascending."""
    n = len(visual)
    img = _top(visual_norm, image_pivots)
    txt = _top(text_norm, text_pivots)
    order = _pivot_order((img + start).tolist(), (txt + text_start).tolist())
    candidates = np.setdiff1d(np.arange(n), img)
    picks = picks_for(len(order))
    if not sum(picks):
        return np.sort(img).astype(np.int64)
    rows = np.stack([visual[q - start] if q < text_start else text[q - text_start] for q in order])
    picked = _greedy(_cosines(visual, rows)[candidates], candidates, picks)
    return np.sort(np.concatenate([img, picked])).astype(np.int64)


def _check_counts(length: int, text_len: int, p_img: int, p_txt: int, m: int, rho, max_picks=None) -> None:
    """The reference's crash cases (§9.7), before any heavy work."""
    if p_img > length:
        raise BudgetError(f"DART: {p_img} image pivots but the visual span has only {length} tokens")
    if p_txt > text_len:
        raise BudgetError(f"DART: {p_txt} text pivots but only {text_len} text tokens follow the visual span")
    if (p_img + p_txt) * m > length - p_img:
        what = f"reduction ratio {rho}" if max_picks is None else f"max_picks {max_picks}"
        raise BudgetError(f"DART {what} asks for {m} picks per pivot x {p_img + p_txt} pivots = "
                          f"{(p_img + p_txt) * m} tokens, but only {length - p_img} candidates remain after the "
                          f"{p_img} image pivots of the {length}-token span: "
                          f"{'raise the ratio' if max_picks is None else 'lower max_picks'}")


def _check_span(span, seq_len: int) -> tuple[int, int]:
    try:
        s, n = (int(v) for v in span)
    except (TypeError, ValueError):
        raise ShapeError(f"DART span must be (start, length), got {span!r}") from None
    if s < 0 or n < 0 or s + n > seq_len:
        raise ShapeError(f"DART visual span [{s}, {s + n}) is outside the {seq_len}-token prompt")
    return s, n


def _check_hidden_keys(hidden, keys) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(hidden)
    k = np.asarray(keys)
    if h.ndim != 2 or k.ndim != 3 or k.shape[1] != len(h):
        raise ShapeError(f"DART hidden must be [S, D] and keys [H_kv, S, d_h] with the same S, "
                         f"got {h.shape} and {k.shape}")
    if not (np.isfinite(h).all() and np.isfinite(k).all()):
        raise ShapeError("DART hidden states or keys hold non-finite values")
    return h.astype(np.float32, copy=False), k


def _check_embeddings(tokens, text) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(tokens)
    t = np.zeros((0, x.shape[-1] if x.ndim == 2 else 0), np.float32) if text is None else np.asarray(text)
    if x.ndim != 2 or t.ndim != 2 or t.shape[1] != x.shape[1]:
        raise ShapeError(f"DART tokens must be [L, D] and text [S_t, D] with the same D, got {x.shape} and {t.shape}")
    if not (np.isfinite(x).all() and np.isfinite(t).all()):
        raise ShapeError("DART token or text embeddings hold non-finite values")
    return x.astype(np.float32, copy=False), t.astype(np.float32, copy=False)


def dart_keep(hidden: np.ndarray, keys: np.ndarray, span, reduction: float, image_pivots: int = 4,
              text_pivots: int = 4, max_picks: int | None = None) -> np.ndarray:
    """The paper's DART (§9.3), between decoder layers K-1 and K at prefill.

    hidden [S, D]: layer K-1's output after the final RMSNorm; keys [H_kv, S, d_h]: layer K-1's
    post-RoPE keys; span (start, length) of the visual tokens; reduction rho = fraction removed;
    max_picks: the LLaVA variant's budget M (§9.4; None: the Qwen form). -> kept sequence indices
    [S - L + P_img + P*m] int64, ascending: the text before and after the span plus the kept visual
    tokens. BudgetError where the reference crashes (§9.7): too many picks for the span (e.g.
    rho = 0), fewer text tokens after the span than text pivots, more image pivots than tokens."""
    h, k = _check_hidden_keys(hidden, keys)
    s, n = _check_span(span, len(h))
    p_img, p_txt = _check_pivots(image_pivots, text_pivots)
    m = dart_picks(n, reduction, p_img, p_txt, max_picks)
    _check_counts(n, len(h) - s - n, p_img, p_txt, m, reduction, max_picks)
    norm = _l1(k, (0, 2))
    kept = _select(h[s:s + n], norm[s:s + n], h[s + n:], norm[s + n:], s, s + n, p_img, p_txt, lambda p: [m] * p)
    return kept_sequence_indices(len(h), s, n, kept)


def dart_keep_embeddings(tokens: np.ndarray, text: np.ndarray | None, reduction: float, image_pivots: int = 4,
                         text_pivots: int = 4, max_picks: int | None = None, start: int = 0) -> np.ndarray:
    """Embedding-level DART (§9.6, TensorRT-Edge-LLM ``DartPruner``): §9.3 with the input embeddings
    in place of both layer K-1's hidden states and its keys (L1 norms and cosines of embeddings).

    tokens [L, D]: the visual embeddings of one span (for Qwen, the merger output that fills the
    video pads); text [S_t, D] or None: the input embeddings of the prompt text after the span (the
    text-pivot pool); start: prompt position of tokens[0], used only for the pivot order (text row
    j sits at start + L + j). -> kept visual indices [P_img + P*m] into tokens, int64, ascending.
    Edge-LLM's quota rounding and text-pivot choice are unconfirmed (docs only); this follows
    §9.3's counts and text rule. One span; several images would each need their own call."""
    x, t = _check_embeddings(tokens, text)
    p_img, p_txt = _check_pivots(image_pivots, text_pivots)
    m = dart_picks(len(x), reduction, p_img, p_txt, max_picks)
    _check_counts(len(x), len(t), p_img, p_txt, m, reduction, max_picks)
    return _select(x, _l1(x, 1), t, _l1(t, 1), int(start), int(start) + len(x), p_img, p_txt, lambda p: [m] * p)


def _group_split(budgets, length: int) -> tuple[np.ndarray, int]:
    b = np.asarray(budgets)
    if b.ndim != 1 or len(b) == 0 or length % len(b):
        raise ShapeError(f"DART visual span of {length} tokens cannot be split into {b.shape} equal groups")
    if not np.issubdtype(b.dtype, np.integer):
        raise BudgetError(f"DART group budgets must be integers, got {b.tolist()}")
    per = length // len(b)
    if (b < 0).any() or (b > per).any():
        raise BudgetError(f"DART group budgets must be within [0, {per}] (tokens per group), got {b.tolist()}")
    return b.astype(np.int64), per


def _groups(visual, visual_norm, text, text_norm, start, budgets, p_img, p_txt) -> np.ndarray:
    b, per = _group_split(budgets, len(visual))
    if p_txt > len(text):
        raise BudgetError(f"DART: {p_txt} text pivots but only {len(text)} text tokens follow the visual span")
    kept = []
    for g, a in enumerate(b.tolist()):
        if a == 0:
            continue
        p = min(p_img, a)
        m, extra = divmod(a - p, p + p_txt)
        sl = slice(g * per, (g + 1) * per)
        local = _select(visual[sl], visual_norm[sl], text, text_norm, start + g * per, start + len(visual), p, p_txt,
                        lambda q, m=m, extra=extra: [m + (j < extra) for j in range(q)])
        kept.append(local + g * per)
    return np.sort(np.concatenate(kept)).astype(np.int64) if kept else np.zeros(0, np.int64)


def dart_keep_groups(hidden: np.ndarray, keys: np.ndarray, span, budgets: np.ndarray, image_pivots: int = 4,
                     text_pivots: int = 4) -> np.ndarray:
    """Per-group DART driven by DyToK budgets (§9.8 option 2, our extension; not natural for DART:
    it loses the cross-frame de-duplication). The span is split into len(budgets) equal temporal
    groups; group t runs §9.3 on its own tokens with its own min(P_img, a_t) image pivots, the
    shared text pivots (top P_txt after the whole span) and m_t = (a_t - P')//(P' + P_txt) picks,
    the remainder going one each to the first pivots in order, so it keeps exactly a_t.

    hidden [S, D], keys [H_kv, S, d_h] as ``dart_keep``; span (start, T*N); budgets [T] integers in
    [0, N] -> kept sequence indices [S - L + sum(budgets)] int64, ascending."""
    h, k = _check_hidden_keys(hidden, keys)
    s, n = _check_span(span, len(h))
    p_img, p_txt = _check_pivots(image_pivots, text_pivots)
    norm = _l1(k, (0, 2))
    kept = _groups(h[s:s + n], norm[s:s + n], h[s + n:], norm[s + n:], s, budgets, p_img, p_txt)
    return kept_sequence_indices(len(h), s, n, kept)


def dart_keep_embeddings_groups(tokens: np.ndarray, text: np.ndarray | None, budgets: np.ndarray,
                                image_pivots: int = 4, text_pivots: int = 4, start: int = 0) -> np.ndarray:
    """``dart_keep_groups`` on the input embeddings (§9.6 x §9.8 option 2, our extension; the
    Edge-LLM form already gives each image span its own quota, so per-group quotas fit it best, but
    cross-frame duplicates are no longer removed). tokens [T*N, D], text [S_t, D] or None,
    budgets [T] integers in [0, N] -> kept visual indices [sum(budgets)] into tokens, ascending."""
    x, t = _check_embeddings(tokens, text)
    p_img, p_txt = _check_pivots(image_pivots, text_pivots)
    return _groups(x, _l1(x, 1), t, _l1(t, 1), int(start), budgets, p_img, p_txt)


IMAGE_PIVOTS, TEXT_PIVOTS = 4, 4  # the Qwen2.5-VL wrapper's and Edge-LLM's defaults (§9.2)


def rms_norm(hidden: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """The LLM's final RMSNorm, as transformers' Qwen2RMSNorm in float32: ``w * x / sqrt(mean(x^2) + eps)``.
    hidden [..., D], weight [D] -> [..., D] float32."""
    x = np.asarray(hidden, np.float32)
    w = np.asarray(weight, np.float32)
    if w.shape != x.shape[-1:]:
        raise ShapeError(f"final norm weight {w.shape} does not match hidden states {x.shape}")
    return w * (x / np.sqrt(np.square(x).mean(axis=-1, keepdims=True) + np.float32(eps)))


def _check_request(request: Request, name: str, text_len: int | None) -> None:
    """§9.7's crash cases for ``request`` (whole span, ``text_len`` tokens after it; None: not
    known yet), as one BudgetError in retention terms, before the LLM runs."""
    n = int(np.prod(request.grid))
    if text_len is not None and text_len < TEXT_PIVOTS:
        raise BudgetError(f"--method {name}: DART takes {TEXT_PIVOTS} text pivots from the prompt after the video, "
                          f"which has only {text_len} tokens")
    if request.prior:
        return  # per-group quotas (our extension) hit every budget exactly
    if n < IMAGE_PIVOTS:
        raise BudgetError(f"--method {name}: DART takes {IMAGE_PIVOTS} image pivots, the video has {n} visual tokens")
    m = dart_picks(n, 1 - request.share, IMAGE_PIVOTS, TEXT_PIVOTS)
    pivots = IMAGE_PIVOTS + TEXT_PIVOTS
    if pivots * m > n - IMAGE_PIVOTS:
        below = pivots * ((n - IMAGE_PIVOTS) // pivots + 1) / n  # int(n * r / P) stays small enough
        raise BudgetError(f"--method {name} at retention {request.share:g}: DART's {pivots} pivots would pick {m} "
                          f"tokens each, {pivots * m} in all, but only {n - IMAGE_PIVOTS} of the {n} visual tokens "
                          f"remain after the {IMAGE_PIVOTS} image pivots; the reference crashes here (spec 9.7): "
                          f"use a retention below {below:.4g}")


def _split_layer(lo: dict) -> int:
    """K of the lower segment's outputs: one more than its last ``present_key_*``."""
    layers = [int(k.rsplit("_", 1)[1]) for k in lo if k.startswith("present_key_")]
    if not layers:
        raise ShapeError("DART needs the lower segment's present keys (present_key_{K-1})")
    return max(layers) + 1


def _all_tokens(vision: dict, request: Request) -> Kept:
    """DART prunes inside the LLM: every token goes in (after the count check)."""
    text = None if request.text is None else len(request.text)
    _check_request(request, "dart", text)
    return Kept.select(vision["tokens"], np.arange(len(vision["tokens"])))


def _in_llm(lo: dict, request: Request, start: int) -> np.ndarray:
    """Layer K-1's hidden states after the final norm and its post-RoPE keys -> kept sequence
    indices: DyToK's per-group quotas with the prior, DART's own count without."""
    k = _split_layer(lo)
    hidden = rms_norm(np.asarray(lo["hidden_states"])[0], lo["final_norm"], float(lo["final_norm_eps"]))
    keys = np.asarray(lo[f"present_key_{k - 1}"])[0]
    span = (start, int(np.prod(request.grid)))
    _check_request(request, "dart", len(hidden) - sum(span))
    if request.prior:
        return dart_keep_groups(hidden, keys, span, request.budgets, IMAGE_PIVOTS, TEXT_PIVOTS)
    return dart_keep(hidden, keys, span, 1 - request.share, IMAGE_PIVOTS, TEXT_PIVOTS)


def _embed(vision: dict, request: Request) -> Kept:
    """Embedding-level DART on the merged visual tokens, text pivots from ``request.text``."""
    if request.text is None:
        raise BudgetError("--method dart-embed needs the prompt's text after the visual span (its text pivots); "
                          "this caller passes none")
    tokens = vision["tokens"]
    _check_request(request, "dart-embed", len(request.text))
    if request.prior:
        keep = dart_keep_embeddings_groups(tokens, request.text, request.budgets, IMAGE_PIVOTS, TEXT_PIVOTS,
                                           request.start)
    else:
        keep = dart_keep_embeddings(tokens, request.text, 1 - request.share, IMAGE_PIVOTS, TEXT_PIVOTS,
                                    start=request.start)
    return Kept.select(tokens, keep)


METHOD = Method("dart", "DART", _all_tokens, in_llm=_in_llm, final_norm=True, baseline=True)
EMBED = Method("dart-embed", "DART-embed", _embed, baseline=True)
