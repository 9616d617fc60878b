"""LLaVA-OneVision through the ONNX Runtime pipeline against transformers' own model
(``llava-onevision-tiny``, the session's ``llava_tiny`` folder with the LLM split at layer 2):

- every token (method "none"): the pipeline's greedy tokens are ``generate``'s on the same video,
  at two frame counts (``generate`` also checks that the prompt's <video> rows match its features:
  frames * 196 + the image_newline row);
- the keyframe prior: the pipeline's frame weights against the detection pass of spec §1.3 computed
  from transformers' hidden states on the assistant;
- every registered method with the prior (as tests/e2e/test_methods.py for Qwen2.5-VL): the kept
  tokens equal the method's function on transformers' vision features and signals, in the method's
  order (spec §1.7: dominant then contextual per frame; DyCoke's TTM order), the prompt is
  renumbered 0 .. L-1 with the newline row after the kept tokens, and greedy decoding of that
  prompt on transformers' model (FastV, DyCoke's KV step: its decoder layers split at K,
  tests/reference.py) gives the pipeline's tokens.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from runtime.compression import REGISTRY, Request, frame_weights, get_method  # noqa: E402
from runtime.compression.dart import dart_keep, dart_keep_groups  # noqa: E402
from runtime.compression.self_prior import self_budgets  # noqa: E402
from runtime.options import Options  # noqa: E402
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.video import sample_video  # noqa: E402

from tests.e2e.test_methods import CASES, answer_seen  # noqa: E402
from tests.reference import llava_signals_reference, prior_reference, split_llm_reference  # noqa: E402

QUESTION = "What happens in the video?"
FRAMES = 5  # frames of the method cases (their tokens vary on this video; checked by the asserts)
CASES = {**CASES, "dycoke-kv": {"method": "dycoke", "dycoke_kv": True}}


@pytest.fixture(scope="module")
def pipe(llava_tiny):
    return load_pipeline(llava_tiny)


def test_every_registered_method_has_a_case():
    assert set(REGISTRY) <= {options.get("method", name) for name, options in CASES.items()}


@pytest.mark.parametrize("frames", [2, 6])
def test_every_token_matches_generate(pipe, llava_models, video_path, frames):
    clip = sample_video(video_path, num_frames=frames)
    result = pipe.answer(clip, QUESTION, Options(method="none", max_new_tokens=8))
    model = llava_models["primary"]
    patches = pipe.family.preprocess(clip.frames, pipe.preprocess_config("primary", None, None))
    ids, _ = pipe.prompt.input_ids(QUESTION, frames * 196 + 1)  # transformers' count: frames * 14 * 14 + 1
    with torch.no_grad():
        out = model.generate(input_ids=torch.from_numpy(ids)[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             pixel_values_videos=torch.from_numpy(patches.pixel_values)[None], max_new_tokens=8,
                             do_sample=False, eos_token_id=sorted(pipe.prompt.eos_ids), pad_token_id=pipe.m.tokens["pad"])
    want = out[0, len(ids):].tolist()
    print(f"\n{frames} frames ({len(ids)}-token prompt): pipeline {result.token_ids}, generate {want}")
    assert result.token_ids == want
    assert len(set(want)) > 1  # not one token repeated: the comparison says something


def test_prior_matches_transformers(pipe, llava_models, video_path):
    """Spec §1.3 on the assistant: its video features and newline spliced in, the last token's
    query against the frames' keys (the newline's excluded), softmax over them, head mean, per-frame
    mean, mean over the prior layers, normalised."""
    clip = sample_video(video_path, num_frames=6)
    weights = pipe.frame_prior(QUESTION, clip, Options(), 6)
    model = llava_models["assistant"]
    patches = pipe.families["assistant"].preprocess(clip.frames, pipe.preprocess_config("assistant", None, None))
    n_vis = 6 * 196
    ids, start = pipe.prompts["assistant"].input_ids(QUESTION, n_vis + 1)
    with torch.no_grad():
        feats = model.model.get_video_features(torch.from_numpy(patches.pixel_values)[None]).pooler_output[0]
        embeds = model.get_input_embeddings()(torch.from_numpy(ids)).clone()
    embeds[start:start + n_vis + 1] = feats
    layers = pipe.m.model("assistant")["prior_layers"]
    attn = prior_reference(model, embeds[None].numpy(), np.arange(len(ids))[None], start, n_vis, layers)
    want = attn.reshape(len(layers), 6, 196).mean(2).mean(0)
    want = want / want.sum()
    print(f"\nprior: pipeline {np.round(weights, 4)}, reference {np.round(want, 4)}")
    np.testing.assert_allclose(weights, want, rtol=1e-4)
    assert np.ptp(want) > 0.1 * want.mean()  # the sharpened assistant's prior is uneven
    np.testing.assert_allclose(frame_weights(attn, 196), want, rtol=1e-5)


@torch.no_grad()
def greedy(model, embeds: np.ndarray, steps: int, eos) -> list[int]:
    """1-D RoPE at positions 0 .. L-1, then L, L+1, ... (transformers' defaults)."""
    out = model(inputs_embeds=torch.from_numpy(embeds)[None], use_cache=True)
    tokens, n = [], len(embeds)
    for step in range(steps):
        tok = int(out.logits[0, -1].argmax())
        tokens.append(tok)
        if tok in eos:
            break
        e = model.get_input_embeddings()(torch.tensor([[tok]]))
        out = model(inputs_embeds=e, position_ids=torch.tensor([[n + step]]), past_key_values=out.past_key_values,
                    use_cache=True)
    return tokens


@pytest.mark.parametrize("case", sorted(CASES))
def test_method_matches_transformers(case, pipe, llava_models, video_path, monkeypatch):
    clip = sample_video(video_path, num_frames=FRAMES)
    opts = Options(**{"method": case, **CASES[case]}, retention=0.25, max_new_tokens=6)
    method = get_method(opts.method)
    model = llava_models["primary"]
    result, inp, norm_weight = answer_seen(pipe, clip, QUESTION, opts, model, monkeypatch)

    patches = pipe.family.preprocess(clip.frames, pipe.preprocess_config("primary", None, None))
    grid = pipe.merged_grid("primary", patches.grid_thw)
    assert grid == (FRAMES, 14, 14)
    with torch.no_grad():
        feats = model.model.get_video_features(torch.from_numpy(patches.pixel_values)[None]).pooler_output[0].numpy()
        importance, metric = llava_signals_reference(model, patches.pixel_values)
    vision = {"tokens": feats[:-1], "importance": importance, "metric": metric}
    k = len(inp.source)
    after = inp.ids[inp.start + k + 1:]  # the text after the newline row
    with torch.no_grad():
        text = model.get_input_embeddings()(torch.from_numpy(after)).numpy()
    request = Request(grid, result.budgets, opts.retention, opts.budget, result.frame_weights is not None, text,
                      inp.start)
    want = method.compress(vision, request)
    np.testing.assert_array_equal(inp.source, want.source)  # the method's own order
    np.testing.assert_allclose(inp.visual, want.tokens, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(inp.positions, np.tile(np.arange(len(inp.ids)), (3, 1)))  # renumbered
    assert inp.next_position == len(inp.ids)

    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.from_numpy(inp.ids)).numpy().copy()
    embeds[inp.start:inp.start + k] = want.tokens
    embeds[inp.start + k] = feats[-1]  # the image_newline row after the kept tokens
    np.testing.assert_allclose(inp.embeds, embeds, rtol=0, atol=1e-4)
    eos = pipe.prompt.eos_ids
    if method.in_llm or opts.dycoke_kv:
        split = pipe.m.graph("primary_llm_lo")["split_layer"]
        span = (inp.start, k)
        budgets, per_group, select = (result.budgets if method.in_llm else None), opts.assistant, None
        if method.own_prior:  # DyToK budgets from transformers' own attention row at layer K-1
            own = Request(grid, result.budgets, opts.retention, opts.budget, False)
            budgets, per_group = (lambda alpha: self_budgets(alpha, inp.start, own)), True
        if opts.method == "dart":
            select = (lambda h, keys: dart_keep_groups(h * norm_weight, keys, span, result.budgets)) if request.prior \
                else (lambda h, keys: dart_keep(h * norm_weight, keys, span, 1 - request.share))
        ref, keep, _ = split_llm_reference(model, embeds, inp.positions, split, opts.max_new_tokens, inp.next_position,
                                           *span, budgets, per_group, opts.kv_prune_ratio if opts.dycoke_kv else None,
                                           eos=eos, select=select)
        if method.in_llm:
            np.testing.assert_array_equal(result.kept_source, keep[(keep >= span[0]) & (keep < sum(span))] - span[0])
    else:
        ref = greedy(model, embeds, opts.max_new_tokens, eos)
    assert result.token_ids == ref
    if method.compresses and method.uses_budgets and opts.assistant and not method.own_prior:
        assert len(set(result.budgets.tolist())) > 1  # the prior really moved tokens between groups
    if case == "visionzip":  # spec §1.7: per frame, dominant tokens ascending, then contextual ones
        per_frame = want.source // 196
        assert (np.diff(per_frame) >= 0).all()
        for f in range(FRAMES):
            flags = want.dominant[per_frame == f]
            assert (np.diff(flags.astype(int)) <= 0).all()  # dominant first
            dom = want.source[per_frame == f][flags]
            assert (np.diff(dom) > 0).all()


def test_torch_backend_matches_onnxruntime(pipe, llava_models, video_path):
    """The PyTorch engines (export/torch_engine.py: LlavaVisionEncoder and the shared LLM modules)
    run the same folder to the same tokens and kept tokens."""
    from export.torch_engine import torch_pipeline
    tp = torch_pipeline(pipe.m, llava_models)
    clip = sample_video(video_path, num_frames=FRAMES)
    for method in ("visionzip", "dycoke"):
        opts = Options(method=method, retention=0.25, max_new_tokens=6)
        a, b = pipe.answer(clip, QUESTION, opts), tp.answer(clip, QUESTION, opts)
        assert a.token_ids == b.token_ids, method
        np.testing.assert_array_equal(a.kept_source, b.kept_source)


def test_pixel_options_do_not_apply_and_encoder_slack_is_refused(pipe, video_path, capsys):
    """Every frame is 384 x 384: pixel options are noted and change nothing; budget-aware encoder
    resolution is one clear error."""
    from runtime.errors import DyTokError
    clip = sample_video(video_path, num_frames=2)
    plain = pipe.answer(clip, QUESTION, Options(max_new_tokens=4))
    capsys.readouterr()
    pixels = pipe.answer(clip, QUESTION, Options(max_new_tokens=4, max_pixels=200_000, assistant_max_pixels=50_000))
    err = capsys.readouterr().err
    assert "--max-pixels/--min-pixels do not apply: llava_onevision" in err
    assert "--assistant-max-pixels does not apply: llava_onevision" in err
    assert pixels.token_ids == plain.token_ids and pixels.grid_thw == plain.grid_thw == (2, 27, 27)
    with pytest.raises(DyTokError, match="--encoder-slack: llava_onevision encodes every frame at one fixed size"):
        pipe.answer(clip, QUESTION, Options(encoder_slack=2.0))
