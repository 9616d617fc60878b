"""One budgets-to-prefill path: Pipeline.answer, budget-aware encoder resolution (at a slack that
keeps every group at full size), the evaluator's shared-stage scorer and the training bank's
compressed steps build the same LLM input for the same video, prior and method."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import runtime.pipeline as pipeline_module  # noqa: E402
from evaluation import evaluate as evaluate_module  # noqa: E402
from runtime.options import Options  # noqa: E402
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.prefill_input import prefill_input  # noqa: E402
from runtime.preprocess import preprocess_video  # noqa: E402
from synthetic.needle import make_video, split_seed  # noqa: E402


def recorder(module, monkeypatch) -> list:
    seen = []

    def record(*args, **kwargs):
        seen.append(prefill_input(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(module, "prefill_input", record)
    return seen


@pytest.mark.parametrize("method", ["visionzip", "uniform"])
def test_four_callers_build_the_same_prefill_input(tiny_artifacts, monkeypatch, method):
    from training.needle import VideoBank

    pipe = load_pipeline(tiny_artifacts)
    video = make_video(split_seed("test", 3))
    clip = video.sampled()
    opts = Options(method=method, retention=0.25, max_new_tokens=1, num_frames=None)
    answers = recorder(pipeline_module, monkeypatch)
    result = pipe.answer(clip, video.question, opts)
    plain = answers[-1]
    pipe.answer(clip, video.question, Options(**{**opts.__dict__, "encoder_slack": 1e9}))
    grouped = answers[-1]
    scored = recorder(evaluate_module, monkeypatch)
    evaluate_module.score_video(pipe, video, [evaluate_module.Config(method, 0.25, "full")], opts)
    evaluated = scored[-1]

    # the training bank: an entry holding this video as the vision graph encodes it
    patches = preprocess_video(clip.frames, pipe.preprocess_config("primary", None, None))
    seq = pipe.sequence("primary", video.question, patches, 2 / clip.sampled_fps)
    vision = pipe.run_vision("primary", patches)
    entry = {"emb": torch.from_numpy(vision["tokens"]), "importance": vision["importance"], "metric": vision["metric"],
             "input_ids": torch.from_numpy(seq.ids), "grid": torch.tensor(patches.grid_thw),
             "spg": torch.tensor(2 / clip.sampled_fps)}
    bank = type("Bank", (), {"video_id": pipe.m.tokens["video"]})()
    trained = VideoBank.compressed_row(bank, entry, method, 0.25, result.frame_weights, 0.0,
                                       pipe.m.model("primary")["tokens_per_second"])

    assert len(set(result.budgets.tolist())) > 1  # the prior moved tokens between groups
    for other, exact in ((evaluated, True), (grouped, False), (trained, False)):
        for name in ("ids", "positions", "source", "dominant"):
            np.testing.assert_array_equal(getattr(other, name), getattr(plain, name), err_msg=name)
        assert (other.start, other.next_position) == (plain.start, plain.next_position)
        tol = 0 if exact else 1e-5  # per-group vision calls: float rounding only
        np.testing.assert_allclose(other.visual, plain.visual, rtol=0, atol=tol)
        if other.embeds is not None:
            np.testing.assert_allclose(other.embeds, plain.embeds, rtol=0, atol=tol)
    assert trained.embeds is None  # the model embeds the ids itself
