"""End to end on the tiny preset: the ONNX Runtime pipeline against transformers.

- compression off: greedy tokens identical to transformers ``generate``;
- DyToK + VisionZip: tokens and budgets identical to a PyTorch reference pipeline written
  from the spec (tests/reference.py), at two retention ratios;
- the same pipeline on the PyTorch engine backend gives the same tokens as on ONNX Runtime.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from runtime.options import Options
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.preprocess import preprocess_video  # noqa: E402
from runtime.video import sample_video  # noqa: E402

from tests.reference import dytok_visionzip_reference  # noqa: E402

QUESTION = "What happens in the video?"
SMALL = dict(min_pixels=16 * 784, max_pixels=64 * 784, max_new_tokens=12)


@pytest.fixture(scope="module")
def pipe(tiny_artifacts):
    return load_pipeline(tiny_artifacts)


@pytest.fixture(scope="module")
def clip(video_path):
    return sample_video(video_path, num_frames=16)


def test_no_compression_matches_generate(pipe, clip, tiny_models):
    opts = Options(method="none", **SMALL)
    result = pipe.answer(clip, QUESTION, opts)
    patches = preprocess_video(clip.frames, pipe.preprocess_config("primary", opts.max_pixels, opts.min_pixels))
    t, h, w = patches.grid_thw
    ids, _ = pipe.prompt.input_ids(QUESTION, t * h * w // 4)
    video = pipe.m.tokens["video"]
    model = tiny_models["primary"]
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(ids)[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            pixel_values_videos=torch.from_numpy(patches.pixel_values), video_grid_thw=torch.tensor([patches.grid_thw]),
            second_per_grid_ts=torch.tensor([2 / clip.sampled_fps]),
            mm_token_type_ids=torch.tensor((ids == video).astype(np.int64) * 2)[None],
            max_new_tokens=opts.max_new_tokens, do_sample=False)
    want = out[0, len(ids):].tolist()
    assert result.token_ids == want
    assert result.visual_tokens == (t * h * w // 4, t * h * w // 4)


@pytest.mark.parametrize("retention", [0.25, 0.5])
def test_dytok_visionzip_matches_reference_pipeline(pipe, clip, tiny_models, retention):
    opts = Options(method="visionzip", retention=retention, **SMALL)
    result = pipe.answer(clip, QUESTION, opts)
    want_tokens, want_budgets = dytok_visionzip_reference(
        tiny_models, pipe.prompt, clip, QUESTION, pipe.preprocess_config("primary", opts.max_pixels, opts.min_pixels),
        retention, opts.max_new_tokens, pipe.m.tokens["video"])
    np.testing.assert_array_equal(result.budgets, want_budgets)
    assert len(set(result.budgets.tolist())) > 1  # the prior really moved tokens between groups
    assert result.token_ids == want_tokens
    kept, total = result.visual_tokens
    assert kept == result.budgets.sum() and total == 8 * 24


def test_torch_backend_matches_onnxruntime(pipe, clip, tiny_models):
    from export.torch_engine import torch_pipeline
    tp = torch_pipeline(pipe.m, tiny_models)
    for method in ("visionzip", "dyntok", "uniform", "dycoke", "none"):
        opts = Options(method=method, **SMALL)
        a, b = pipe.answer(clip, QUESTION, opts), tp.answer(clip, QUESTION, opts)
        assert a.token_ids == b.token_ids, method
        np.testing.assert_array_equal(a.kept_source, b.kept_source)


def test_sampling_is_seeded_and_streams(pipe, clip):
    opts = Options(temperature=0.8, top_p=0.9, seed=3, **SMALL)
    pieces = []
    a = pipe.answer(clip, QUESTION, opts, on_token=pieces.append)
    b = pipe.answer(clip, QUESTION, opts)
    assert a.token_ids == b.token_ids and len(pieces) == len(a.token_ids) and "".join(pieces) == a.text


def test_assistant_off_and_reduced_assistant(pipe, clip):
    off = pipe.answer(clip, QUESTION, Options(assistant=False, **SMALL))
    assert off.frame_weights is None and len(set(off.budgets.tolist())) == 1
    reduced = pipe.answer(clip, QUESTION, Options(assistant_num_frames=8, assistant_max_pixels=16 * 784, **SMALL))
    assert reduced.budgets.sum() == off.budgets.sum() and len(reduced.frame_weights) == 8


def test_contact_sheet_written_with_expected_size(pipe, clip, tmp_path):
    import cv2

    from runtime.visualize import LABEL_H, write_contact_sheet
    result = pipe.answer(clip, QUESTION, Options(**SMALL))
    path = write_contact_sheet(str(tmp_path / "sheet.png"), result, tile_width=200, columns=4)
    image = cv2.imread(path)
    tile_h = round(200 * clip.frames.shape[1] / clip.frames.shape[2])
    assert image.shape == (4 * (tile_h + LABEL_H), 800, 3)  # 16 frames, 4 columns
    green = (image[..., 1] > 150) & (image[..., 0] < 80) & (image[..., 2] < 80)
    assert green.sum() > 0  # dominant-token outlines are drawn


def test_vision_in_chunks_of_groups_is_exact(pipe, clip):
    """Every attention segment lies inside one temporal group, so chunking cannot change the output."""
    patches = preprocess_video(clip.frames, pipe.preprocess_config("primary", None, None))
    assert patches.grid_thw[0] >= 3
    whole = pipe.run_vision("primary", patches)
    for chunk in (1, 2):
        parts = pipe.run_vision("primary", patches, chunk)
        for name in ("tokens", "importance", "metric"):
            np.testing.assert_allclose(parts[name], whole[name], rtol=0, atol=1e-5)
    a = pipe.answer(clip, QUESTION, Options(num_frames=len(clip.frames), max_new_tokens=4))
    b = pipe.answer(clip, QUESTION, Options(num_frames=len(clip.frames), max_new_tokens=4, vision_chunk=1))
    assert a.token_ids == b.token_ids and np.array_equal(a.budgets, b.budgets)


def test_onnxruntime_profile_summary(tiny_artifacts, clip, tmp_path):
    from runtime.engines.ort_profile import op_time_shares

    profiled = load_pipeline(tiny_artifacts, profile_dir=str(tmp_path))
    profiled.answer(clip, QUESTION, Options(num_frames=len(clip.frames), max_new_tokens=2))
    shares = op_time_shares(profiled.engines["primary_llm"].end_profiling())
    assert {"MatMul", "Softmax"} <= {op for op, _, _ in shares}
    assert sum(s for _, _, s in shares) == pytest.approx(1.0)
    assert [ms for _, ms, _ in shares] == sorted((ms for _, ms, _ in shares), reverse=True)
