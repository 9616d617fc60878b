"""From kept visual tokens to the LLM's prefill input: the one place where compressed tokens are
put in order, spliced into the prompt, given their position ids and checked against the context.
The pipeline, budget-aware encoder resolution, the evaluator and the training bank all build their
LLM input here.

Two conventions, chosen by the model family (``PromptSequence.renumber``): kept tokens in span
order at their original M-RoPE ids, decoding from the original maximum + 1 (Qwen2.5-VL, spec
§2.5); or kept tokens in the method's order and the pruned prompt renumbered 0 .. L-1 (1-D RoPE
as LLaVA-OV's references, spec §1.7, §6)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compression.method import Kept
from .errors import PromptError
from .positions import kept_sequence_indices


@dataclass(frozen=True)
class PromptSequence:
    """A prompt before compression: ``ids`` [S] int64 with the whole visual span expanded (one id
    per visual token), their M-RoPE ``positions`` [3, S] int64, the span ``start`` and length
    ``n_visual``, and the first decode position (the original maximum + 1). ``suffix`` [E, D]: the
    embeddings of the E rows right after the span that the placeholder also expanded to (LLaVA-OV's
    image_newline; never compressed). ``renumber``: positions after compression are 0 .. L-1 and
    the kept tokens stay in the method's order (else: original ids, span order)."""
    ids: np.ndarray
    positions: np.ndarray
    start: int
    n_visual: int
    suffix: np.ndarray | None = None
    renumber: bool = False

    @property
    def next_position(self) -> int:
        return int(self.positions.max()) + 1

    @property
    def text_tokens(self) -> int:
        return len(self.ids) - self.n_visual


@dataclass(frozen=True)
class PrefillInput:
    """What the LLM prefills. ids [L] int64 (kept prompt ids), positions [3, L] int64 (original
    ids of the kept slots, or 0 .. L-1 when renumbered), embeds [L, D] float32 (None when no
    embedding table was given: the training bank embeds on its own), visual [K, D] the kept tokens
    in prompt order at ``start .. start+K``, source [K] int64 (their indices into the full span:
    ascending, or the method's order when renumbered), dominant [K] bool, next_position: the first
    decode position."""
    ids: np.ndarray
    positions: np.ndarray
    embeds: np.ndarray | None
    visual: np.ndarray
    source: np.ndarray
    dominant: np.ndarray
    start: int
    next_position: int
    n_visual_total: int


def embed_rows(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of an embedding table (memory-mapped .npy) as float32. ids [L] -> [L, D]"""
    return np.asarray(table[np.asarray(ids)], np.float32)


def text_after(seq: PromptSequence, table: np.ndarray) -> np.ndarray:
    """Input embeddings of the prompt after the visual span and its suffix rows (``Request.text``:
    DART's text pivots). -> [S - start - n_visual - E, D] float32"""
    suffix = 0 if seq.suffix is None else len(seq.suffix)
    return embed_rows(table, seq.ids[seq.start + seq.n_visual + suffix:])


def prefill_input(seq: PromptSequence, kept: Kept, table: np.ndarray | None = None, max_new_tokens: int = 0,
                  context_length: int | None = None) -> PrefillInput:
    """``seq`` with its visual span replaced by ``kept`` (any order; sorted here by source, so
    positions stay monotone per axis, unless ``seq.renumber``) and its suffix rows filled in.
    ``table``: the embedding table (None: no ``embeds``). Raises PromptError when the prompt plus
    ``max_new_tokens`` exceeds ``context_length``."""
    order = np.arange(len(kept.source)) if seq.renumber else np.argsort(kept.source, kind="stable")
    source, visual, dominant = kept.source[order].astype(np.int64), kept.tokens[order], kept.dominant[order]
    keep = kept_sequence_indices(len(seq.ids), seq.start, seq.n_visual, source)
    if context_length is not None and len(keep) + max_new_tokens > context_length:
        raise PromptError(f"prompt of {len(keep)} tokens plus {max_new_tokens} new tokens exceeds the context of "
                          f"{context_length}; lower --retention or the frame count")
    ids = seq.ids[keep]
    embeds = None
    if table is not None:
        embeds = embed_rows(table, ids)
        embeds[seq.start:seq.start + len(source)] = visual
        if seq.suffix is not None and len(seq.suffix):
            embeds[seq.start + len(source):seq.start + len(source) + len(seq.suffix)] = seq.suffix
    if seq.renumber:
        positions, next_position = np.broadcast_to(np.arange(len(keep), dtype=np.int64), (3, len(keep))).copy(), len(keep)
    else:
        positions, next_position = seq.positions[:, keep], seq.next_position
    return PrefillInput(ids, positions, embeds, visual, source, dominant, seq.start, next_position, seq.n_visual)
