"""M-RoPE position ids: parity with transformers' get_rope_index, and the gather after pruning."""
import numpy as np
import pytest

from runtime.positions import (decode_positions, gather_positions, kept_sequence_indices, mrope_positions,
                               next_position)

torch = pytest.importorskip("torch")
from export.presets import PRESETS, random_config  # noqa: E402

VIDEO, START, END = 90, 91, 92
SPECIAL = {"<|image_pad|>": 89, "<|video_pad|>": VIDEO, "<|vision_start|>": START, "<|vision_end|>": END,
           "<|im_end|>": 93, "<|endoftext|>": 94}


@pytest.fixture(scope="module")
def hf_model():
    from transformers import Qwen2_5_VLModel
    return Qwen2_5_VLModel(random_config(PRESETS["tiny"], 128, SPECIAL)).eval()


def prompt(grids, texts):
    ids = list(range(1, 1 + texts[0]))
    for (t, h, w), n_text in zip(grids, texts[1:]):
        ids += [START] + [VIDEO] * (t * h * w // 4) + [END] + list(range(1, 1 + n_text))
    return np.array(ids, np.int64)


@pytest.mark.parametrize("grids,seconds,texts", [
    ([(2, 4, 6)], [1.0], [5, 3]),
    ([(4, 8, 4)], [0.5], [14, 9]),
    ([(3, 2, 10)], [2.0 / 3.0], [1, 1]),
    ([(2, 4, 4), (5, 6, 8)], [1.0, 0.25], [3, 2, 7]),
    ([(1, 16, 2)], [0.1], [7, 20]),
])
def test_matches_get_rope_index(hf_model, grids, seconds, texts):
    ids = prompt(grids, texts)
    ours, delta = mrope_positions(ids, VIDEO, grids, seconds, spatial_merge_size=2, tokens_per_second=2)
    types = torch.tensor((ids == VIDEO).astype(np.int64) * 2)[None]
    ref, ref_delta = hf_model.get_rope_index(torch.tensor(ids)[None], types, video_grid_thw=torch.tensor(grids),
                                             second_per_grid_ts=torch.tensor(seconds))
    np.testing.assert_array_equal(ours, ref[:, 0].numpy())
    assert delta == int(ref_delta[0, 0])


def test_gather_keeps_original_ids_and_decode_continues():
    grids = [(2, 4, 4)]
    ids = prompt(grids, [2, 2])
    pos, delta = mrope_positions(ids, VIDEO, grids, [1.0])
    span = 3  # two text tokens + vision_start
    keep = kept_sequence_indices(len(ids), span, 8, np.array([5, 0, 7]))
    assert keep.tolist() == [0, 1, 2, 3, 8, 10, 11, 12, 13]
    kept = gather_positions(pos, keep)
    np.testing.assert_array_equal(kept[:, 4:6], pos[:, [8, 10]])
    start = next_position(pos)
    assert start == len(ids) + delta  # the original maximum + 1, whatever was pruned
    np.testing.assert_array_equal(decode_positions(start, 2), [[start, start + 1]] * 3)


def test_span_length_mismatch():
    from runtime.errors import ShapeError
    with pytest.raises(ShapeError, match="gives 8"):
        mrope_positions(np.array([VIDEO] * 5), VIDEO, [(2, 4, 4)], [1.0])
