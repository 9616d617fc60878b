"""Every registered compression method end to end against transformers: the primary's vision
features from transformers' own model, compressed by the method's function with the pipeline's
budgets, must be the tokens the pipeline kept (same sources), and greedy decoding of the pruned
prompt on transformers' model (FastV: its decoder layers split at K, tests/reference.py) must give
the pipeline's tokens. DART in the LLM: the same on transformers' layers, with DART's selection on
transformers' final norm of layer K-1 and its cached keys (and the same kept set). DART on
embeddings takes the prompt text after the span from transformers' embedding table. A method
added to the registry without a case here fails the first test."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import runtime.pipeline as pipeline_module  # noqa: E402
from runtime import llm_split  # noqa: E402
from runtime.compression import REGISTRY, Request, get_method  # noqa: E402
from runtime.compression.self_prior import self_budgets  # noqa: E402
from runtime.compression.dart import dart_keep, dart_keep_groups  # noqa: E402
from runtime.options import Options  # noqa: E402
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.prefill_input import prefill_input  # noqa: E402
from runtime.preprocess import preprocess_video  # noqa: E402
from runtime.video import sample_video  # noqa: E402

from tests.reference import split_llm_reference, vision_signals_reference  # noqa: E402

QUESTION = "What happens in the video?"
# method -> options beyond the method (the prior is on: DyToK budgets where the method takes them)
CASES = {"none": {}, "visionzip": {}, "uniform": {}, "dycoke": {}, "dyntok": {}, "evs": {}, "fastv": {},
         "evs-no-assistant": {"method": "evs", "assistant": False}, "fastv-no-assistant": {"method": "fastv", "assistant": False},
         "self": {},
         "vidcom2": {}, "vidcom2-no-assistant": {"method": "vidcom2", "assistant": False},
         "vidcom2-visionzip": {}, "vidcom2-visionzip-no-assistant": {"method": "vidcom2-visionzip", "assistant": False},
         "dart": {}, "dart-no-assistant": {"method": "dart", "assistant": False},
         "dart-embed": {}, "dart-embed-no-assistant": {"method": "dart-embed", "assistant": False}}


def test_every_registered_method_has_a_case():
    assert set(REGISTRY) <= {options.get("method", name) for name, options in CASES.items()}


@torch.no_grad()
def greedy(model, embeds: np.ndarray, positions: np.ndarray, next_position: int, steps: int, eos) -> list[int]:
    out = model(inputs_embeds=torch.from_numpy(embeds)[None], position_ids=torch.from_numpy(positions)[:, None],
                use_cache=True)
    tokens = []
    for step in range(steps):
        tok = int(out.logits[0, -1].argmax())
        tokens.append(tok)
        if tok in eos:
            break
        e = model.get_input_embeddings()(torch.tensor([[tok]]))
        out = model(inputs_embeds=e, position_ids=torch.full((3, 1, 1), next_position + step),
                    past_key_values=out.past_key_values, use_cache=True)
    return tokens


def answer_seen(pipe, clip, question, opts, model, monkeypatch):
    """``pipe.answer(clip, question, opts)`` -> (result, the PrefillInput it built, the final norm weight
    it used). A tiny model's final norm weight is all ones, so DART's norm gets a real weight to apply."""
    norm_weight = np.ones(model.config.text_config.hidden_size, np.float32)
    if get_method(opts.method).final_norm:
        assert bool((model.model.language_model.norm.weight == 1).all())
        norm_weight = np.random.default_rng(0).normal(1, 0.5, len(norm_weight)).astype(np.float32)
        eps = llm_split.final_norm(pipe.m)["final_norm_eps"]
        monkeypatch.setattr(llm_split, "final_norm", lambda m: {"final_norm": norm_weight, "final_norm_eps": eps})
    seen = []
    monkeypatch.setattr(pipeline_module, "prefill_input", lambda *a, **k: seen.append(prefill_input(*a, **k)) or seen[-1])
    return pipe.answer(clip, question, opts), seen[-1], norm_weight


@pytest.mark.parametrize("case", sorted(CASES))
def test_method_matches_transformers(case, tiny_split, tiny_models, video_path, monkeypatch):
    pipe = load_pipeline(tiny_split)
    clip = sample_video(video_path, num_frames=8)
    opts = Options(**{"method": case, **CASES[case]}, retention=0.25, min_pixels=16 * 784, max_pixels=64 * 784,
                   max_new_tokens=6)
    method = get_method(opts.method)
    model = tiny_models["primary"]
    result, inp, norm_weight = answer_seen(pipe, clip, QUESTION, opts, model, monkeypatch)

    patches = preprocess_video(clip.frames, pipe.preprocess_config("primary", opts.max_pixels, opts.min_pixels))
    grid = pipe.merged_grid("primary", patches.grid_thw)
    with torch.no_grad():
        tokens = model.model.visual(torch.from_numpy(patches.pixel_values), grid_thw=torch.tensor([patches.grid_thw]))
    importance, metric = vision_signals_reference(model, patches.pixel_values, patches.grid_thw)
    vision = {"tokens": tokens.pooler_output.numpy(), "importance": importance, "metric": metric}
    after = inp.ids[inp.start + len(inp.source):]
    text = model.get_input_embeddings()(torch.from_numpy(after)).detach().numpy()
    request = Request(grid, result.budgets, opts.retention, opts.budget, result.frame_weights is not None, text,
                      inp.start)
    want = method.compress(vision, request)
    order = np.argsort(want.source, kind="stable")
    np.testing.assert_array_equal(inp.source, want.source[order])
    np.testing.assert_allclose(inp.visual, want.tokens[order], rtol=0, atol=1e-4)

    embeds = model.get_input_embeddings()(torch.from_numpy(inp.ids)).detach().numpy().copy()
    embeds[inp.start:inp.start + len(inp.source)] = want.tokens[order]
    eos = pipe.prompt.eos_ids
    if method.in_llm:
        split = pipe.m.graph("primary_llm_lo")["split_layer"]
        span = (inp.start, len(inp.source))
        budgets, per_group, select = result.budgets, opts.assistant, None
        if method.own_prior:  # DyToK budgets from transformers' own attention row at layer K-1
            own = Request(grid, result.budgets, opts.retention, opts.budget, False)
            budgets, per_group = (lambda alpha: self_budgets(alpha, inp.start, own)), True
        if opts.method == "dart":
            select = (lambda h, k: dart_keep_groups(h * norm_weight, k, span, result.budgets)) if request.prior else \
                (lambda h, k: dart_keep(h * norm_weight, k, span, 1 - request.share))
        ref, keep, _ = split_llm_reference(model, embeds, inp.positions, split, opts.max_new_tokens, inp.next_position,
                                           *span, budgets, per_group, eos=eos, select=select)
        visual = keep[(keep >= span[0]) & (keep < sum(span))] - span[0]
        np.testing.assert_array_equal(result.kept_source, visual)
    else:
        ref = greedy(model, embeds, inp.positions, inp.next_position, opts.max_new_tokens, eos)
    assert result.token_ids == ref
    if method.compresses and method.uses_budgets and opts.assistant and not method.own_prior:
        assert len(set(result.budgets.tolist())) > 1  # the prior really moved tokens between groups
