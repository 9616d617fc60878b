"""VidCom2 (arXiv 2505.14454; xuyang-liu16/VidCom2 ``vidcom2_compression``): per-group budgets from
how distinctive each temporal group is, then per-group "outlier" tokens (spec §8).

Query-agnostic, once per video, on the merged vision tokens before the LLM (the EVS hook). Both
stages score tokens with a multi-scale Gaussian kernel on L2-normalised features restricted to the
half of the channels with the lowest variance over the video:

- ``vidcom2_budgets``: group t keeps ``k_t = max(1, round(s_t * N))`` tokens, ``s_t`` a
  softmax (temperature 0.01) re-weighting of the retention ratio toward groups far from the
  video centre (§8.3 steps 5-6);
- ``vidcom2_select``: group t keeps its ``k_t`` tokens least similar to the video centre plus its
  own centre (§8.3 step 7), for any integer budgets (DyToK's, §8.6, or VidCom2's own);
- ``vidcom2_keep``: the two together, or VidCom2's selection under given budgets.

Arithmetic is float32 in the reference's operation order, so the half-way products of step 6
round as ``torch.round`` does (half to even: ``float32(0.9) * 15 = 13.5 -> 14``, V8.2). NumPy's
reductions may differ from torch's in the last bit, which the temperature amplifies 100-fold: a
group whose ``s_t * N`` lies within ~1e-4 of a half-integer can get one token more or less than
the torch code. Ties in either ``topk`` are unspecified in the reference; here the lower index wins. Kept tokens are
returned ascending: the Qwen adapters gather them in raster order and keep their original 3-D
M-RoPE ids (§8.4, §10).

Registered methods (the pipeline's ``--method``):

- ``vidcom2``: without the prior, VidCom2 itself (vLLM's ``--video-retention-ratio`` r = the
  retention, or the average budget over a group's tokens); with it, DyToK+VidCom2 (§8.6): DyToK's
  per-group budgets replace steps 5-6, the selection is VidCom2's.
- ``vidcom2-visionzip``: the ablation of §8.6, VidCom2's budgets with DyToK's per-group VisionZip
  selection (dominant + contextual at the 6:1 split). The prior does not change what it keeps.

Neither supports budget-aware encoder resolution (``Method.per_group``): its groups are compressed
one at a time, alone, while VidCom2's scores are video-global (the low-variance channels, the
video centre and the budgets' softmax all read every group), so a group cannot be scored without
the others, and groups encoded at different grids would not share one centre.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import BudgetError
from .method import Kept, Method, Request
from .visionzip import visionzip_groups

CHANNEL_FRACTION = 0.5  # int(0.5 * D) lowest-variance channels score the tokens
KERNEL_WIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)  # alpha in exp(-d^2 / (2 alpha)), summed in this order
TEMPERATURE = 0.01  # softmax temperature of the group budgets
NORM_EPS = 1e-12  # F.normalize's clamp of the row norm


def _grid(tokens: np.ndarray, grid) -> tuple[np.ndarray, int, int]:
    """tokens [T*h*w, D] -> (float32 [T, N, D], T, N), or BudgetError naming what disagrees."""
    try:
        t, h, w = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise BudgetError(f"VidCom2 grid must be (T, h, w) merged-token counts, got {grid!r}") from None
    if min(t, h, w) < 0 or (t, h, w) != tuple(grid):
        raise BudgetError(f"VidCom2 grid must be (T, h, w) non-negative integers, got {grid!r}")
    x = np.asarray(tokens)
    if x.ndim != 2 or len(x) != t * h * w:
        raise BudgetError(f"VidCom2 tokens must be [T*h*w, D] = [{t * h * w}, D] for grid {(t, h, w)}, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise BudgetError(f"VidCom2 tokens must be finite numbers, got dtype {x.dtype} with non-finite values")
    return x.astype(np.float32, copy=False).reshape(t, h * w, x.shape[1]), t, h * w


def _check_retention(retention) -> float:
    if (isinstance(retention, bool) or not isinstance(retention, numbers.Real)
            or not 0 < float(retention) <= 1):
        raise BudgetError(f"VidCom2 retention ratio must be in (0, 1], got {retention!r}")
    return float(retention)


def _check_budgets(budgets, groups: int, per_group: int) -> np.ndarray:
    b = np.asarray(budgets)
    if b.shape != (groups,):
        raise BudgetError(f"VidCom2 budgets must be one integer per temporal group ({groups}), got shape {b.shape}")
    if groups and not (np.issubdtype(b.dtype, np.integer) or (np.issubdtype(b.dtype, np.floating)
                                                               and np.isfinite(b).all() and (b == np.round(b)).all())):
        raise BudgetError(f"VidCom2 budgets must be integers, got {b.tolist()}")
    b = b.astype(np.int64)
    if (b < 0).any() or (b > per_group).any():
        raise BudgetError(f"VidCom2 budgets must be within [0, {per_group}] (tokens per group), got {b.tolist()}")
    return b


def _kernel(z: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """sum over alpha of exp(-||z - centre||^2 / (2 alpha)), float32, reference order. [..., C] -> [...]"""
    d2 = np.square(z - centre).sum(axis=-1)
    out = np.zeros(d2.shape, np.float32)
    for a in KERNEL_WIDTHS:
        out += np.exp(-d2 / np.float32(2 * a))
    return out


def _similarities(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [T, N, D] -> (v, f) [T, N]: kernel to the video centre and to the group's centre."""
    t, n, d = x.shape
    flat = x.reshape(t * n, d)
    # torch's CPU var accumulates in double; only the channels' ranking matters (ties: lower index).
    var = flat.var(axis=0, dtype=np.float64).astype(np.float32)
    keep = np.zeros(d, bool)
    keep[np.argsort(var, kind="stable")[:int(d * CHANNEL_FRACTION)]] = True
    z = np.compress(keep, x, axis=2)  # kept channels in index order (their order does not matter)
    z = z / np.maximum(np.sqrt(np.square(z).sum(axis=-1, keepdims=True)), np.float32(NORM_EPS))
    v = _kernel(z, z.mean(axis=(0, 1), keepdims=True))
    f = _kernel(z, z.mean(axis=1, keepdims=True))
    return v, f


def _budgets_from_video_similarity(v: np.ndarray, retention: float) -> np.ndarray:
    """§8.3 steps 5-6 in float32. v [T, N] -> k [T] int64 in [1, N]."""
    n = v.shape[1]
    u = -v.mean(axis=1)
    logits = (u - u.max()) / np.float32(TEMPERATURE)
    e = np.exp(logits - logits.max())  # torch's softmax subtracts the max again (here 0)
    p = e / e.sum()
    s = np.minimum(np.float32(retention) * ((np.float32(1) + p) - p.mean()), np.float32(1))
    return np.maximum(np.rint(s * np.float32(n)), 1).astype(np.int64)


def _lowest_per_group(score: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """score [T, N], budgets [T] -> flat indices of each group's budgets[t] smallest, ascending."""
    n = score.shape[1]
    kept = [np.sort(np.argsort(row, kind="stable")[:k]) + g * n for g, (row, k) in enumerate(zip(score, budgets))]
    return np.concatenate(kept).astype(np.int64)


def vidcom2_similarity(tokens: np.ndarray, grid) -> tuple[np.ndarray, np.ndarray]:
    """tokens [T*h*w, D] merged visual tokens of one video in raster order, grid (T, h, w) ->
    (v, f), each [T, h*w] float32 in (0, 5]: the multi-scale Gaussian kernel of each token to the
    video centre (v) and to its group's centre (f) (§8.3 steps 1-4). VidCom2 keeps small ``v + f``."""
    x, _, _ = _grid(tokens, grid)
    return _similarities(x)


def vidcom2_budgets(tokens: np.ndarray, grid, retention: float) -> np.ndarray:
    """VidCom2's own per-group budgets (§8.3 steps 1-6). tokens [T*h*w, D], grid (T, h, w),
    retention r in (0, 1] -> k [T] int64, each in [1, h*w]; sum ~ r*T*h*w (not exact: per-group
    rounding, the floor of 1 and the cap at h*w move it). Usable with any per-group selector."""
    r = _check_retention(retention)
    x, t, n = _grid(tokens, grid)
    if t * n == 0:
        return np.zeros(t, np.int64)
    return _budgets_from_video_similarity(_similarities(x)[0], r)


def vidcom2_select(tokens: np.ndarray, grid, budgets: np.ndarray) -> np.ndarray:
    """VidCom2's per-group selection (§8.3 steps 1-4, 7-8) under given budgets: group t keeps its
    ``budgets[t]`` tokens with the smallest ``v + f`` (ties: lower index). tokens [T*h*w, D],
    grid (T, h, w), budgets [T] integers in [0, h*w] (0 allowed: our DyToK extension, §8.6) ->
    kept flat indices [sum(budgets)] int64, ascending. Centres and channels use the whole video."""
    x, t, n = _grid(tokens, grid)
    b = _check_budgets(budgets, t, n)
    if t * n == 0:
        return np.zeros(0, np.int64)
    v, f = _similarities(x)
    return _lowest_per_group(v + f, b)


def vidcom2_keep(tokens: np.ndarray, grid, retention: float, budgets: np.ndarray | None = None) -> np.ndarray:
    """VidCom2 on one video. tokens [T*h*w, D] merged visual tokens in raster order, grid (T, h, w),
    retention r in (0, 1] (fraction kept; validated even when ``budgets`` is given), budgets
    optional [T] integers in [0, h*w] replacing VidCom2's own (DyToK, §8.6) -> kept flat indices
    [K] int64, ascending (K = sum of the budgets). Empty video: no indices."""
    r = _check_retention(retention)
    x, t, n = _grid(tokens, grid)
    if budgets is not None:
        b = _check_budgets(budgets, t, n)
    if t * n == 0:
        return np.zeros(0, np.int64)
    v, f = _similarities(x)
    if budgets is None:
        b = _budgets_from_video_similarity(v, r)
    return _lowest_per_group(v + f, b)


def _compress(vision: dict, request: Request) -> Kept:
    """With the prior: DyToK's budgets, VidCom2's selection; without: VidCom2's budgets too."""
    tokens = vision["tokens"]
    if request.prior:
        return Kept.select(tokens, vidcom2_select(tokens, request.grid, request.budgets))
    return Kept.select(tokens, vidcom2_keep(tokens, request.grid, request.share))


def _budgets_visionzip(vision: dict, request: Request) -> Kept:
    """VidCom2's budgets at the requested share, each group's tokens chosen by VisionZip."""
    budgets = vidcom2_budgets(vision["tokens"], request.grid, request.share)
    return visionzip_groups(vision["tokens"], vision["importance"], vision["metric"], budgets)


METHOD = Method("vidcom2", "VidCom2", _compress, baseline=True)
BUDGETS_VISIONZIP = Method("vidcom2-visionzip", "VidCom2 budgets+VisionZip", _budgets_visionzip, uses_budgets=False,
                           baseline=True)
