"""The needle-video generator: deterministic per seed, right by construction (checked from the
drawing parameters and from the pixels, never from a model), disjoint splits."""
import cv2
import numpy as np
import pytest

from synthetic.needle import (ANSWER_WORDS, COLOURS, FAMILIES, FAMILY_ORDER, SPLITS, answer_from_params, make_video,
                               split_of, split_seed, videos)


def test_deterministic_per_seed():
    for seed in (0, 1, 2, split_seed("test", 7)):
        a, b = make_video(seed), make_video(seed)
        assert np.array_equal(a.frames, b.frames)
        assert (a.answer, a.needle_groups, a.params) == (b.answer, b.needle_groups, b.params)
    assert not np.array_equal(make_video(3).frames[:16], make_video(6).frames[:16])


@pytest.mark.parametrize("seed", list(range(60)) + [split_seed("test", i) for i in range(30)])
def test_answer_right_by_construction(seed):
    v = make_video(seed)
    fam = FAMILIES[v.family]
    assert v.question == fam.question and v.answer in fam.answers
    assert len(v.frames) % 2 == 0 and 16 <= len(v.frames) <= 64 and v.frames.dtype == np.uint8
    assert (v.answer, v.needle_groups) == answer_from_params(v.params)
    groups = v.params["groups"]
    if v.family == "star":
        (g,), = [v.needle_groups]
        star = next(o for o in groups[g] if o["kind"] == "star")
        for f in (2 * g, 2 * g + 1):  # the star's centre pixel has the answer's colour
            assert tuple(v.frames[f, star["y"], star["x"]]) == COLOURS[v.answer]
        assert sum(o["kind"] == "star" for objs in groups for o in objs) == 1
    elif v.family == "count":
        (g,), = [v.needle_groups]
        red = [o for o in groups[g] if o["kind"] == "circle" and o["colour"] == "red"]
        mask = np.all(v.frames[2 * g] == COLOURS["red"], axis=2).astype(np.uint8)
        labels = cv2.connectedComponents(mask)[1]
        assert len({labels[o["y"], o["x"]] for o in red}) == int(v.answer)  # distinct red blobs, from pixels
        assert all(labels[o["y"], o["x"]] > 0 for o in red)
        assert sum(o["kind"] == "circle" and o["colour"] == "red" for objs in groups for o in objs) == int(v.answer)
    else:
        kinds = {o["kind"]: gi for gi, objs in enumerate(groups) for o in objs if o["kind"] in ("circle", "triangle")}
        assert len(kinds) == 2 and kinds["circle"] != kinds["triangle"]
        assert v.answer == min(kinds, key=kinds.get)
        assert set(v.needle_groups) == set(kinds.values())
    # outside the needle groups no frame holds the needle: frames of other groups differ from it
    assert v.needle_frames == tuple(f for g in v.needle_groups for f in (2 * g, 2 * g + 1))


def test_close_order_needles_for_training():
    """``max_gap`` (a training curriculum) puts the order needles at most that many groups apart,
    keeps the answer right, and leaves every other video unchanged."""
    gaps = []
    for i in range(40):
        v = make_video(split_seed("train", i), "order", max_gap=3)
        g1, g2 = v.needle_groups
        gaps.append(g2 - g1)
        assert 1 <= g2 - g1 <= 3 and (v.answer, v.needle_groups) == answer_from_params(v.params)
        assert make_video(split_seed("train", i), "order", max_gap=3).params == v.params  # deterministic
    assert len(set(gaps)) == 3 and {make_video(split_seed("train", i), "order").answer for i in range(40)} == {"circle", "triangle"}
    star = make_video(split_seed("train", 1), "star")
    assert np.array_equal(make_video(split_seed("train", 1), "star", max_gap=3).frames, star.frames)


def test_families_chance_and_answers():
    assert [f.chance for f in FAMILIES.values()] == [1 / 6, 1 / 3, 1 / 2]
    assert set(ANSWER_WORDS) == {a for f in FAMILIES.values() for a in f.answers}
    assert [make_video(i).family for i in range(6)] == list(FAMILY_ORDER) * 2


def test_splits_disjoint_and_varied():
    starts = sorted(SPLITS.values())
    assert len(set(starts)) == 3
    assert [split_of(split_seed(s, 5)) for s in SPLITS] == list(SPLITS)
    with pytest.raises(ValueError):
        split_seed("holdout", 0)
    vids = videos("test", 30)
    assert len({len(v.frames) for v in vids}) > 5  # frame counts vary
    assert len({v.params["scale"] for v in vids}) == 30  # object sizes vary
    assert len({tuple(v.params["background"]["top"]) for v in vids}) > 20  # backgrounds vary
    assert len({v.needle_groups[0] for v in vids}) > 5  # needle positions vary


def test_answer_words_are_single_tokens():
    pytest.importorskip("tokenizers")
    from export.tokenizer import build_tiny_tokenizer, needle_corpus
    tok = build_tiny_tokenizer(corpus=needle_corpus())
    for w in ANSWER_WORDS:
        assert len(tok.encode(w).ids) == 1, w


def test_evaluation_is_torch_free():
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2] / "evaluation"
    bad = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("torch", "transformers", "export", "training")]
    assert not bad, bad
