"""Query-conditioned needle videos (NumPy + OpenCV, seeded, torch-free).

Every video is a sequence of 2-frame shots (one Qwen2.5-VL temporal group each) full of coloured
shapes. The answer lives in one or two groups (the needles); the question names what to look
for, and the distractors are just as salient, so a query-agnostic token selection keeps the
wrong tokens. Three families, each with a closed set of single-token answers:

=========  ====================================================  ===========================  ======
family     question                                              answers                      chance
=========  ====================================================  ===========================  ======
star       What colour is the star?                              red green blue yellow cyan   1/6
                                                                 purple
count      How many red circles are there?                       1 2 3                        1/3
order      Which appeared first, the circle or the triangle?     circle triangle              1/2
=========  ====================================================  ===========================  ======

- star: one group shows a (large) star; every group has 3-5 other (smaller) shapes (circles, squares, triangles,
  diamonds) in all the colours, the star's own included.
- count: one group shows 1-3 red circles of one size, each in its own cell of a 4x4 grid (one
  merged visual token at 112x112; counting needs most of that group's tokens); every group has
  circles of other colours and red squares, triangles, diamonds, one object per cell.
- order: one group shows a circle, another a triangle; every group has squares, stars and
  diamonds.

A video's family, frame count (even, 16-64), frame size (112x112), background (two dark tints
as a vertical gradient plus noise), object size and needle positions are drawn from its seed.
Splits use disjoint seed ranges (``SPLITS``); every split draws from the same ranges.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.fileio import atomic_path
from runtime.video import SampledFrames

COLOURS = {  # RGB
    "red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 70, 255),
    "yellow": (240, 230, 30), "cyan": (30, 220, 230), "purple": (190, 40, 220),
}
EXTRA_COLOURS = {"white": (245, 245, 245), "orange": (250, 140, 20)}  # distractors only


@dataclass(frozen=True)
class Family:
    name: str
    question: str
    answers: tuple[str, ...]
    min_groups: int = 1

    @property
    def chance(self) -> float:
        return 1 / len(self.answers)


FAMILIES = {
    "star": Family("star", "What colour is the star?", tuple(COLOURS)),
    "count": Family("count", "How many red circles are there?", ("1", "2", "3")),
    "order": Family("order", "Which appeared first, the circle or the triangle?", ("circle", "triangle"), 2),
}
FAMILY_ORDER = ("star", "count", "order")
ANSWER_WORDS = tuple(sorted({a for f in FAMILIES.values() for a in f.answers}))
SPLITS = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}  # first seed of each split
SPLIT_SIZE = 1_000_000_000
FPS = 4.0  # frames per second of generated videos (0.5 s per temporal group)
SIZE = 112


@dataclass
class NeedleVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    family: str
    question: str
    answer: str
    needle_groups: tuple[int, ...]  # temporal groups (2-frame units) that hold the answer
    seed: int
    params: dict = field(default_factory=dict)  # drawing parameters (what was drawn where)
    fps: float = FPS

    @property
    def num_groups(self) -> int:
        return len(self.frames) // 2

    @property
    def needle_frames(self) -> tuple[int, ...]:
        return tuple(f for g in self.needle_groups for f in (2 * g, 2 * g + 1))

    def sampled(self) -> SampledFrames:
        """The frames as the runtime pipeline's input (every frame, at ``fps``)."""
        n = len(self.frames)
        return SampledFrames(self.frames, np.arange(n, dtype=np.int64), np.arange(n) / self.fps, self.fps)


def split_seed(split: str, index: int) -> int:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if not 0 <= index < SPLIT_SIZE:
        raise ValueError(f"index {index} outside the split's {SPLIT_SIZE} seeds")
    return SPLITS[split] + index


def split_of(seed: int) -> str:
    for name, first in SPLITS.items():
        if first <= seed < first + SPLIT_SIZE:
            return name
    raise ValueError(f"seed {seed} is in no split")


# ---- drawing ------------------------------------------------------------------------------
def _poly(kind: str, cx: float, cy: float, r: float) -> np.ndarray:
    if kind == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    elif kind == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        rad = np.full(3, r)
    elif kind == "diamond":
        a = np.arange(4) * np.pi / 2
        rad = np.array([r, r * 0.7, r, r * 0.7])
    else:
        raise ValueError(kind)
    return np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1).round().astype(np.int32)


def draw_shape(img: np.ndarray, kind: str, cx: int, cy: int, r: int, rgb) -> None:
    """Filled shape of 'radius' r centred at (cx, cy), in place. img [H, W, 3] uint8 RGB."""
    colour = tuple(int(c) for c in rgb)
    if kind == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_8)
    elif kind == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1, cv2.LINE_8)
    else:
        cv2.fillPoly(img, [_poly(kind, cx, cy, r)], colour, cv2.LINE_8)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    top = rng.integers(0, 90, 3)
    bottom = rng.integers(0, 90, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    img = top[None, None] * (1 - ramp) + bottom[None, None] * ramp
    noise = int(rng.integers(0, 7))
    return np.broadcast_to(img, (size, size, 3)).astype(np.float32), {"top": top.tolist(), "bottom": bottom.tolist(), "noise": noise}


def _place(rng: np.random.Generator, radii: list[int], size: int, taken: list[tuple[int, int, int]],
           gap: int = 3, optional: bool = False) -> list[tuple[int, int, int]]:
    """Non-overlapping centres for objects of the given radii (rejection sampling); an optional
    object that finds no room is left out."""
    out = []
    for r in radii:
        for _ in range(1000):
            cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
            if all(max(abs(cx - x), abs(cy - y)) > r + q + gap for x, y, q in taken + out):
                out.append((cx, cy, r))
                break
        else:
            if not optional:
                raise RuntimeError("no room to place shapes")  # needles and squares go first
    return out


def _in_cells(rng: np.random.Generator, radii: list[int], size: int, free: list[int]) -> list[tuple[int, int, int]]:
    """Centres for objects of the given radii, one per free cell of a 4x4 grid (cells are popped
    from ``free``), each object inside its cell (radius capped, centre jittered)."""
    cell = size // 4
    out = []
    for r in radii:
        r = min(r, cell // 2 - 2)
        c = free.pop()
        j = cell // 2 - r - 1
        dx, dy = (int(v) for v in rng.integers(-j, j + 1, 2))
        out.append(((c % 4) * cell + cell // 2 + dx, (c // 4) * cell + cell // 2 + dy, r))
    return out


def _render(bg: np.ndarray, bg_params: dict, objects: list[dict], rng: np.random.Generator) -> np.ndarray:
    img = bg.copy()
    if bg_params["noise"]:
        img += rng.integers(-bg_params["noise"], bg_params["noise"] + 1, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for o in objects:
        draw_shape(img, o["kind"], o["x"], o["y"], o["r"], o["rgb"])
    return img


def _all_colours():
    return {**COLOURS, **EXTRA_COLOURS}


def make_video(seed: int, family: str | None = None, num_frames: int | None = None, size: int = SIZE,
               distractors: float = 1.0, max_gap: int | None = None) -> NeedleVideo:
    """One needle video from ``seed`` (family, frame count drawn from it unless given).

    Returns frames [T, size, size, 3] uint8 with T even in 16..64, the question, the right answer
    and the temporal groups holding it; ``params`` records every drawn object per group.
    ``distractors`` < 1 keeps only that share of the non-needle objects (a training curriculum;
    the kept ones are drawn from a separate stream, so the video is otherwise the same).
    ``max_gap``: order only, the second needle at most this many groups from the first (a
    training curriculum: adjacent needles are the hard case; drawn from a separate stream).
    """
    rng = np.random.default_rng(seed)
    fam = FAMILIES[family or FAMILY_ORDER[seed % 3]]
    t = int(num_frames if num_frames is not None else 2 * rng.integers(8, 33))
    if t < 2 * fam.min_groups or t % 2:
        raise ValueError(f"num_frames {t}: family {fam.name} needs an even count >= {2 * fam.min_groups}")
    groups = t // 2
    scale = float(rng.uniform(0.8, 1.25))  # object size
    bg, bg_params = _background(rng, size)
    palette = _all_colours()
    names = list(palette)
    groups_objects: list[list[dict]] = []

    needle_groups: tuple[int, ...]
    if fam.name == "star":
        g = int(rng.integers(groups))
        needle_groups = (g,)
        colour = str(rng.choice(list(COLOURS)))
        answer = colour
    elif fam.name == "count":
        g = int(rng.integers(groups))
        needle_groups = (g,)
        count = int(rng.integers(1, 4))
        answer = str(count)
    else:
        g1, g2 = (int(v) for v in rng.choice(groups, 2, replace=False))
        if max_gap is not None:
            near = [g for g in range(max(g1 - max_gap, 0), min(g1 + max_gap, groups - 1) + 1) if g != g1]
            g2 = int(np.random.default_rng([seed, 13]).choice(near))
        needle_groups = tuple(sorted((g1, g2)))
        answer = "circle" if g1 < g2 else "triangle"

    def small(kinds, n, taken, exclude=()):
        radii = [int(round(rng.integers(5, 10) * scale)) for _ in range(n)]
        objs = []
        for (x, y, r) in _place(rng, radii, size, taken, optional=True):
            c = str(rng.choice([c for c in names if c not in exclude]))
            objs.append({"kind": str(rng.choice(kinds)), "x": x, "y": y, "r": r, "colour": c, "rgb": palette[c]})
            taken.append((x, y, r))
        return objs

    for gi in range(groups):
        objs: list[dict] = []
        taken: list[tuple[int, int, int]] = []
        if fam.name == "star":
            if gi == g:
                r = int(round(rng.integers(13, 19) * scale))
                (x, y, r), = _place(rng, [r], size, taken)
                taken.append((x, y, r))
                objs.append({"kind": "star", "x": x, "y": y, "r": r, "colour": colour, "rgb": COLOURS[colour], "needle": True})
            objs += small(["circle", "square", "triangle", "diamond"], int(rng.integers(3, 6)), taken)
        elif fam.name == "count":  # one object per cell of a 4x4 grid (a merged token at 112x112)
            free = [int(c) for c in rng.permutation(16)]
            if gi == g:
                r = int(round(rng.integers(8, 11) * scale))  # the needle circles share one size
                for (x, y, r) in _in_cells(rng, [r] * count, size, free):
                    objs.append({"kind": "circle", "x": x, "y": y, "r": r, "colour": "red", "rgb": COLOURS["red"], "needle": True})
            for kinds, colours, n in ((["circle"], [c for c in names if c != "red"], int(rng.integers(1, 4))),
                                      (["square", "triangle", "diamond"], ["red"], int(rng.integers(1, 3)))):
                radii = [int(round(rng.integers(6, 10) * scale)) for _ in range(n)]
                for (x, y, r) in _in_cells(rng, radii, size, free):
                    c = str(rng.choice(colours))
                    objs.append({"kind": str(rng.choice(kinds)), "x": x, "y": y, "r": r, "colour": c, "rgb": palette[c]})
        else:
            for kind, gk in (("circle", g1), ("triangle", g2)):
                if gi == gk:
                    r = int(round(rng.integers(11, 16) * scale))
                    (x, y, r), = _place(rng, [r], size, taken)
                    taken.append((x, y, r))
                    c = str(rng.choice(names))
                    objs.append({"kind": kind, "x": x, "y": y, "r": r, "colour": c, "rgb": palette[c], "needle": True})
            objs += small(["square", "star", "diamond"], int(rng.integers(2, 5)), taken)
        if distractors < 1:
            thin = np.random.default_rng([seed, gi, 7])
            objs = [o for o in objs if o.get("needle") or thin.random() < distractors]
        groups_objects.append(objs)

    frames = np.empty((t, size, size, 3), np.uint8)
    for gi, objs in enumerate(groups_objects):  # a group is one static 2-frame shot
        frames[2 * gi] = frames[2 * gi + 1] = _render(bg, bg_params, objs, rng)
    params = {"family": fam.name, "num_frames": t, "scale": scale, "background": bg_params,
              "groups": [[{k: v for k, v in o.items() if k != "rgb"} for o in objs] for objs in groups_objects]}
    return NeedleVideo(frames, fam.name, fam.question, answer, needle_groups, seed, params)


def answer_from_params(params: dict) -> tuple[str, tuple[int, ...]]:
    """The right answer and needle groups re-derived from the drawing parameters alone."""
    fam = params["family"]
    found = [(gi, o) for gi, objs in enumerate(params["groups"]) for o in objs]
    if fam == "star":
        stars = [(gi, o) for gi, o in found if o["kind"] == "star"]
        assert len(stars) == 1
        return stars[0][1]["colour"], (stars[0][0],)
    if fam == "count":
        red = [gi for gi, o in found if o["kind"] == "circle" and o["colour"] == "red"]
        assert len(red) >= 1 and len(set(red)) == 1
        return str(len(red)), (red[0],)
    circle = [gi for gi, o in found if o["kind"] == "circle"]
    triangle = [gi for gi, o in found if o["kind"] == "triangle"]
    assert len(circle) == 1 and len(triangle) == 1
    return ("circle" if circle[0] < triangle[0] else "triangle"), tuple(sorted((circle[0], triangle[0])))


def videos(split: str, n: int, start: int = 0) -> list[NeedleVideo]:
    """``n`` videos of ``split`` from its ``start``-th seed on (families rotate with the seed)."""
    return [make_video(split_seed(split, start + i)) for i in range(n)]


def write_video(video: NeedleVideo, path: str) -> str:
    """Write ``video`` losslessly (FFV1 in AVI) so that decoding gives the exact frames back."""
    h, w = video.frames.shape[1:3]
    with atomic_path(path, ".avi") as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"FFV1"), video.fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"cannot write video {path!r}: OpenCV has no FFV1 encoder")
        for frame in video.frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
    return path
