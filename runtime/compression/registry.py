"""The compression methods, by name. A new method is one file that declares a ``Method`` and one
line here; every caller (pipeline, encoder resolution, evaluation, training, admission) goes through
``get_method``."""
from __future__ import annotations

import numpy as np

from ..errors import BudgetError
from ..notes import note
from . import baselines, dart, dycoke, dyntok, evs, fastv, self_prior, vidcom2, visionzip
from .method import Kept, Method, Request


def _all_tokens(vision: dict, request: Request) -> Kept:
    return Kept.select(vision["tokens"], np.arange(len(vision["tokens"])))


NONE = Method("none", "none (all tokens)", _all_tokens, uses_budgets=False, compresses=False)

REGISTRY: dict[str, Method] = {m.name: m for m in (
    visionzip.METHOD,
    baselines.UNIFORM,
    dycoke.METHOD,
    dyntok.METHOD,
    NONE,
    fastv.METHOD,
    evs.METHOD,
    vidcom2.METHOD,
    vidcom2.BUDGETS_VISIONZIP,
    dart.METHOD,
    dart.EMBED,
    self_prior.METHOD,
)}
METHODS = tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The registered method ``name``; a BudgetError listing the registered names otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise BudgetError(f"unknown method {name!r}: expected one of {', '.join(METHODS)}") from None


def compress(method: Method, vision: dict, request: Request) -> Kept:
    """``method.compress`` for a user's request. A method that sets its own token count (it takes no
    budgets) and keeps a share far from the requested retention says so in one note."""
    kept = method.compress(vision, request)
    total = len(vision["tokens"])
    share = len(kept.source) / total if total else 0.0
    if method.compresses and not method.uses_budgets and abs(share - request.retention) > 0.05:
        note(f"--method {method.name} kept {share:.0%} of the visual tokens, not the {request.retention:.0%} of "
             f"--retention: it sets its own count from the video (it takes no per-group budgets)")
    return kept


def check_per_group(method: Method) -> None:
    """Raise unless ``method`` can compress groups encoded at their own grids (encoder slack)."""
    if not method.per_group:
        raise BudgetError(f"encoder resolution supports methods "
                          f"{', '.join(m.name for m in REGISTRY.values() if m.per_group)}, not {method.name!r}, which "
                          f"compresses the whole video at once (--encoder-slack)")


def compress_groups(method: Method, parts: list[dict], grids: np.ndarray, request: Request) -> Kept:
    """``method`` on groups encoded at their own grids. parts: G dicts of vision outputs, group g's
    holding ``a_g * b_g`` tokens; grids [G, 2] merged (rows, cols); ``request.budgets`` [G].
    -> Kept with ``source`` into the concatenated groups."""
    check_per_group(method)
    tokens, source, dominant, offset = [], [], [], 0
    for part, (a, b), budget in zip(parts, np.asarray(grids).tolist(), np.asarray(request.budgets, np.int64)):
        n = len(part["tokens"])
        one = Request((1, a, b), np.array([min(int(budget), n)], np.int64), request.retention, request.budget, request.prior)
        kept = method.compress(part, one)
        tokens.append(kept.tokens), source.append(kept.source + offset), dominant.append(kept.dominant)
        offset += n
    return Kept(np.concatenate(tokens), np.concatenate(source).astype(np.int64), np.concatenate(dominant))
