"""The PyTorch backend's fast forms against its exported formulation, in fp32 on the CPU:
attention through SDPA ("sdpa") against the explicit softmax ("plain", what the ONNX graphs
hold and tests/export/test_graph_parity.py checks against transformers), and the static-cache
decode step (``open_step``) against the LLM graph's past/present loop.

On the tiny random pair and the trained needle pair. Tolerance 1e-4 max abs (fp32; measured
below 1e-6); greedy tokens must be identical.
"""
import copy
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from export.exporter import export_artifacts, model_constants, prior_kv  # noqa: E402
from export.families import FAMILIES  # noqa: E402
from export.graphs.llm import KeyframePrior, LanguageModel, LanguageModelSegment  # noqa: E402
from export.graphs.vision import VisionEncoder  # noqa: E402
from export.presets import get_preset  # noqa: E402
from export.tokenizer import build_tiny_tokenizer, special_ids  # noqa: E402
from export.torch_engine import TorchEngine, TorchLLMEngine, torch_engines, torch_pipeline  # noqa: E402
from export.weights import load_model  # noqa: E402
from runtime import llm_split  # noqa: E402
from runtime.errors import PromptError  # noqa: E402
from runtime.manifest import load_manifest  # noqa: E402
from runtime.pipeline import Options, load_pipeline  # noqa: E402
from runtime.prefill import prior_attention, run_chunked  # noqa: E402
from runtime.specs_kv import kv_input_names  # noqa: E402
from runtime.video import sample_video  # noqa: E402
from runtime.vision_inputs import vision_feeds  # noqa: E402

ATOL = 1e-4
QUESTION = "What moves in the video?"


@pytest.fixture(scope="module")
def pairs(tiny_models):
    needle = {which: load_model(get_preset(name), None, None)
              for which, name in (("primary", "needle"), ("assistant", "needle-assistant"))}
    return {"tiny": tiny_models, "needle": needle}


def _dims(model):
    cfg = model.config.text_config
    return cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads, cfg.hidden_size


def _positions(rng, n, start=0):
    """M-RoPE ids whose three rows differ (as over a video span), non-decreasing."""
    return np.sort(rng.integers(start, start + n + 8, size=(3, n)), axis=-1).astype(np.int64)


def _run(module, *args):
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in args])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("pair", ["tiny", "needle"])
def test_llm_sdpa_matches_plain(pairs, pair):
    """Prefill without and with a past, decode steps, and a key mask with holes (DyCoke's form)."""
    model = pairs[pair]["primary"]
    layers, kv, head_dim, hidden = _dims(model)
    plain, sdpa = LanguageModel(model, "plain").eval(), LanguageModel(model, "sdpa").eval()
    rng = np.random.default_rng(0)
    for n_past, n_new, holes in [(0, 1, False), (0, 9, False), (0, 40, False), (13, 1, False), (13, 7, False),
                                 (25, 30, False), (20, 1, True), (20, 6, True)]:
        embeds = rng.normal(size=(1, n_new, hidden)).astype(np.float32)
        pos = _positions(rng, n_new, n_past)[:, None]
        mask = np.ones((1, n_past + n_new), np.int64)
        if holes:
            mask[0, rng.choice(n_past, 8, replace=False)] = 0
        past = [rng.normal(size=(1, kv, n_past, head_dim)).astype(np.float32) for _ in range(2 * layers)]
        want, got = _run(plain, embeds, pos, mask, *past), _run(sdpa, embeds, pos, mask, *past)
        for name, a, b in zip(["logits"] + kv_input_names(layers, "present"), want, got):
            np.testing.assert_allclose(b, a, atol=ATOL, err_msg=f"{name}, past {n_past}, new {n_new}, holes {holes}")


def _prior_engine(module, layers_kv):
    names = kv_input_names(layers_kv, "past")
    inputs = ["inputs_embeds", "position_ids", "visual_index", "attention_mask", *names]
    outputs = ["attention", *kv_input_names(layers_kv, "present")]
    return TorchEngine(module, inputs, outputs), {"inputs": [{"name": n} for n in inputs]}


@pytest.mark.parametrize("pair", ["tiny", "needle"])
def test_prior_sdpa_matches_plain(pairs, pair):
    """One call and chunked prefill (the runtime's prior_attention), several selections of layers."""
    model = pairs[pair]["assistant"]
    depth = model.config.text_config.num_hidden_layers
    rng = np.random.default_rng(1)
    for layers in ([depth - 1], [0, depth - 2], [1]):
        consts = model_constants(model, FAMILIES["qwen2_5_vl"], layers)
        kv_layers, _, _ = prior_kv(consts)
        (plain, graph), (sdpa, _) = (_prior_engine(KeyframePrior(model, layers, a).eval(), kv_layers)
                                     for a in ("plain", "sdpa"))
        for n, chunk in [(12, None), (57, None), (57, 16), (90, 25), (90, 89)]:
            embeds = rng.normal(size=(n, consts["hidden_size"])).astype(np.float32)
            pos = _positions(rng, n)
            visual = np.arange(3, n - 4)
            want = prior_attention(plain, embeds, pos, visual, consts, graph, chunk)
            got = prior_attention(sdpa, embeds, pos, visual, consts, graph, chunk)
            assert got.shape == (len(layers), len(visual))
            np.testing.assert_allclose(got, want, atol=ATOL, err_msg=f"layers {layers}, n {n}, chunk {chunk}")
        # the one-shot graph form (no cache inputs) as well
        embeds, pos = rng.normal(size=(1, 30, consts["hidden_size"])).astype(np.float32), _positions(rng, 30)[:, None]
        visual = np.arange(2, 25)
        np.testing.assert_allclose(_run(KeyframePrior(model, layers, "sdpa"), embeds, pos, visual)[0],
                                   _run(KeyframePrior(model, layers, "plain"), embeds, pos, visual)[0], atol=ATOL)


def test_llm_segments_sdpa_match_plain(pairs):
    """Both segments at a split, with the attention row the lower one returns, and a holed key mask."""
    model = pairs["needle"]["primary"]
    layers, kv, head_dim, hidden = _dims(model)
    rng = np.random.default_rng(2)
    for start, stop in [(0, 2), (2, layers)]:
        plain, sdpa = (LanguageModelSegment(model, start, stop, a).eval() for a in ("plain", "sdpa"))
        for n_past, n_new, holes in [(0, 33, False), (17, 1, False), (17, 1, True), (17, 9, True)]:
            x = rng.normal(size=(1, n_new, hidden)).astype(np.float32)
            pos = _positions(rng, n_new, n_past)[:, None]
            mask = np.ones((1, n_past + n_new), np.int64)
            if holes:
                mask[0, rng.choice(n_past, 6, replace=False)] = 0
            past = [rng.normal(size=(1, kv, n_past, head_dim)).astype(np.float32) for _ in range(2 * (stop - start))]
            for i, (a, b) in enumerate(zip(_run(plain, x, pos, mask, *past), _run(sdpa, x, pos, mask, *past))):
                np.testing.assert_allclose(b, a, atol=ATOL, err_msg=f"output {i}, [{start}, {stop}), past {n_past}, "
                                                                    f"new {n_new}, holes {holes}")


@pytest.mark.parametrize("pair", ["tiny", "needle"])
def test_vision_sdpa_matches_plain(pairs, pair):
    """Grids with padded windows and several temporal groups: tokens and VisionZip's signals."""
    visual = pairs[pair]["primary"].model.visual
    plain, sdpa = VisionEncoder(visual, "plain").eval(), VisionEncoder(visual, "sdpa").eval()
    rng = np.random.default_rng(3)
    for grid in [(1, 4, 4), (2, 8, 12), (3, 10, 6), (2, 14, 10)]:
        feeds = vision_feeds(grid)
        pixels = rng.normal(size=(int(np.prod(grid)), 1176)).astype(np.float32)
        args = [pixels, *feeds.values()]
        for name, a, b in zip(("tokens", "importance", "metric"), _run(plain, *args), _run(sdpa, *args)):
            np.testing.assert_allclose(b, a, atol=ATOL, err_msg=f"{name}, grid {grid}")


def _greedy_plain(engine, table, embeds, pos, chunk, new_tokens, layers):
    """The runtime's loop over run() with past/present (Pipeline.generate): tokens and logits."""
    names = kv_input_names(layers)
    kv, head_dim = engine.module.kv_heads, engine.module.head_dim
    feeds = {"inputs_embeds": embeds[None], "position_ids": pos[:, None], "attention_mask": np.ones((1, len(embeds)), np.int64),
             **{n: np.zeros((1, kv, 0, head_dim), np.float32) for n in names}}
    out = run_chunked(engine, feeds, chunk, names)
    tokens, logits, start = [], [], int(pos.max()) + 1
    for step in range(new_tokens):
        logits.append(out["logits"][0])
        tokens.append(int(np.argmax(out["logits"][0])))
        feeds = {"inputs_embeds": table[[tokens[-1]]][None], "position_ids": np.full((3, 1, 1), start + step, np.int64),
                 "attention_mask": np.ones((1, len(embeds) + step + 1), np.int64),
                 **{n: out[n.replace("past", "present")] for n in names}}
        out = engine.run(feeds)
    return tokens, logits


def _greedy_step(step, table, embeds, pos, chunk, new_tokens):
    start = int(pos.max()) + 1
    out = step.prefill(embeds, pos, chunk)
    tokens, logits = [], []
    for i in range(new_tokens):
        logits.append(out)
        tokens.append(int(np.argmax(out)))
        if i < new_tokens - 1:
            out = step.decode(table[tokens[-1]], start + i)
    return tokens, logits


def _llm_engines(model):
    layers = model.config.text_config.num_hidden_layers
    inputs = ["inputs_embeds", "position_ids", "attention_mask", *kv_input_names(layers)]
    outputs = ["logits", *kv_input_names(layers, "present")]
    plain = TorchEngine(LanguageModel(model, "plain"), inputs, outputs, keep_on_device=tuple(outputs[1:]))
    fast = TorchLLMEngine(LanguageModel(model, "sdpa"), inputs, outputs, keep_on_device=tuple(outputs[1:]))
    return plain, fast, layers


@pytest.mark.parametrize("pair", ["tiny", "needle"])
def test_static_step_greedy_tokens_match_the_past_present_loop(pairs, pair):
    model = pairs[pair]["primary"]
    plain, fast, layers = _llm_engines(model)
    table = model.get_input_embeddings().weight.detach().numpy()
    rng = np.random.default_rng(4)
    new_tokens = 10
    for n, chunk in [(1, None), (9, None), (40, 16), (77, 32)]:
        ids = rng.integers(0, table.shape[0], n)
        embeds, pos = table[ids], _positions(rng, n)
        want_tokens, want_logits = _greedy_plain(plain, table, embeds, pos, chunk, new_tokens, layers)
        step = fast.open_step(n + new_tokens)
        got_tokens, got_logits = _greedy_step(step, table, embeds, pos, chunk, new_tokens)
        assert got_tokens == want_tokens, f"prompt {n}, chunk {chunk}"
        np.testing.assert_allclose(np.array(got_logits), np.array(want_logits), atol=ATOL, err_msg=f"prompt {n}, chunk {chunk}")


def test_static_step_reuses_its_cache_and_refuses_overflow(pairs):
    """A request after a longer one reuses the cache when it is less than twice its size (stale rows
    past its length are masked) and answers as a fresh one; a far smaller request gets its own cache;
    concurrent steps get their own caches; at most two idle caches are kept; overflow is a clear error."""
    model = pairs["tiny"]["primary"]
    plain, fast, layers = _llm_engines(model)
    table = model.get_input_embeddings().weight.detach().numpy()
    rng = np.random.default_rng(5)
    long_ids, short_ids = rng.integers(0, table.shape[0], 60), rng.integers(0, table.shape[0], 11)
    long_pos, short_pos = _positions(rng, 60), _positions(rng, 11)
    step = fast.open_step(80)
    _greedy_step(step, table, table[long_ids], long_pos, None, 10)
    cache = step._cache
    del step
    assert fast.open_step(20)._cache is not cache  # 80 rows read on every token of a 20-row request: no
    step = fast.open_step(50)
    assert step._cache is cache and step.max_len == 80
    other = fast.open_step(50)
    assert other._cache is not cache
    for n in (3, 7, 300):
        fast.open_step(n)
    assert sorted(c.max_len for c in fast._steps._idle.values()) == [7, 300]  # the two most recent size classes
    want = _greedy_plain(plain, table, table[short_ids], short_pos, None, 9, layers)[0]
    assert _greedy_step(step, table, table[short_ids], short_pos, 4, 9)[0] == want
    small = fast.open_step(12)
    small.prefill(table[short_ids], short_pos)
    small.decode(table[0], 40)
    with pytest.raises(PromptError, match="12 rows"):
        small.decode(table[0], 41)
    with pytest.raises(PromptError, match="exceeds"):
        fast.open_step(5).prefill(table[short_ids], short_pos)
    with pytest.raises(PromptError, match="before prefill"):
        fast.open_step(5).decode(table[0], 3)


@pytest.mark.parametrize("pair", ["tiny", "needle"])
def test_split_prefill_on_the_static_cache_matches_the_two_segments(pairs, pair):
    """A method that prunes inside the LLM on the static cache (``prefill_split``, then the one decode
    step with two write indices) against the runtime's two-segment SplitStep on the plain
    formulation: what the method reads (layer K-1's attention row, keys, hidden states), the kept
    rows, the logits (1e-4) and the greedy tokens; on a cache a longer request left stale rows in."""
    from runtime.llm_split import EngineSplitStep, SplitStep

    model = pairs[pair]["primary"]
    depth, kv, head_dim, _ = _dims(model)
    k = 2
    table = model.get_input_embeddings().weight.detach().numpy()
    inputs = ["inputs_embeds", "position_ids", "attention_mask", *kv_input_names(depth)]
    outputs = ["logits", *kv_input_names(depth, "present")]
    fast = TorchLLMEngine(LanguageModel(model, "sdpa"), inputs, outputs, keep_on_device=tuple(outputs[1:]), split_layer=k)
    lo = TorchEngine(LanguageModelSegment(model, 0, k, "plain"), inputs[:3] + kv_input_names(k),
                     ["hidden_states", "attention", *kv_input_names(k, "present")])
    hi = TorchEngine(LanguageModelSegment(model, k, depth, "plain"), ["hidden_states", *inputs[1:3], *kv_input_names(depth, "past", k)],
                     ["logits", *kv_input_names(depth, "present", k)])
    rng = np.random.default_rng(7)
    n, start, span = 70, 5, 48
    ids, pos = rng.integers(0, table.shape[0], n), _positions(rng, n)
    _greedy_step(fast.open_step(120), table, table[rng.integers(0, table.shape[0], 100)], _positions(rng, 100), None, 3)
    seen = {}

    def select(name):
        def pick(view):  # the 12 most attended rows of the span, every row outside it
            seen[name] = {key: np.array(view[key]) for key in ("attention", "hidden_states", f"present_key_{k - 1}")}
            top = start + np.sort(np.argsort(-seen[name]["attention"][start:start + span], kind="stable")[:12])
            return np.concatenate([np.arange(start), top, np.arange(start + span, n)])
        return pick

    two = SplitStep(lo, hi, k, depth, kv, head_dim, start, span, select("segments"))
    one = EngineSplitStep(fast.open_step(80), start, span, select("static"))
    assert one.step._cache.max_len == 120  # the longer request's cache, rows past 70 stale
    want, want_logits = _greedy_step(two, table, table[ids], pos, None, 10)
    got, got_logits = _greedy_step(one, table, table[ids], pos, None, 10)
    for key in seen["segments"]:
        np.testing.assert_allclose(seen["static"][key], seen["segments"][key], atol=ATOL, err_msg=key)
    np.testing.assert_array_equal(one.kept_visual, two.kept_visual)
    assert len(one.kept_visual) == 12 and one.step.length_hi == n - span + 12 + 9
    assert got == want
    assert max(np.abs(a - b).max() for a, b in zip(got_logits, want_logits)) <= ATOL
    with pytest.raises(PromptError, match="ascending"):
        fast.open_step(80).prefill_split(table[ids], pos, lambda view: np.array([3, 1]))
    with pytest.raises(PromptError, match="no split layer"):
        _llm_engines(model)[1].open_step(80).prefill_split(table[ids], pos, select("x"))


@pytest.fixture(scope="module")
def clip(video_path):
    return sample_video(video_path, num_frames=8)


def test_pipeline_answers_identically_with_sdpa_and_plain(tiny_artifacts, tiny_models, clip):
    """The whole torch pipeline: same tokens, kept tokens and (within 1e-4) frame weights."""
    m = load_manifest(tiny_artifacts)
    sdpa, plain = torch_pipeline(m, tiny_models), torch_pipeline(m, tiny_models, attention="plain")
    assert hasattr(sdpa.engines["primary_llm"], "open_step") and not hasattr(plain.engines["primary_llm"], "open_step")
    base = dict(num_frames=8, max_pixels=64 * 784, min_pixels=16 * 784, max_new_tokens=8)
    for opts in (Options(**base), Options(**base, prefill_chunk=48, method="dyntok", retention=0.5),
                 Options(**base, method="none")):
        a, b = plain.answer(clip, QUESTION, opts), sdpa.answer(clip, QUESTION, opts)
        assert a.token_ids == b.token_ids, opts
        np.testing.assert_array_equal(a.kept_source, b.kept_source)
        np.testing.assert_array_equal(a.budgets, b.budgets)
        if a.frame_weights is not None:
            np.testing.assert_allclose(b.frame_weights, a.frame_weights, atol=ATOL)


def test_torch_only_export_keeps_the_llm_split(tiny_split, tiny_models, clip, tmp_path, monkeypatch):
    """A --torch-only folder with --fastv-layer records the split and its I/O tables as the ONNX
    export does, and the in-LLM methods (FastV, DyCoke KV, DART, the self prior) then run on the
    torch backend, answering as ONNX Runtime (as do VidCom2 and DART-embed)."""
    folder = export_artifacts("tiny", str(tmp_path / "tiny-torch-split"), torch_only=True, fastv_layer=2, log=lambda *_: None)
    torch_only, onnx_split = load_manifest(folder), load_manifest(tiny_split)
    for role in ("primary_llm_lo", "primary_llm_hi"):
        for key in ("inputs", "outputs", "split_layer", "attention"):
            assert torch_only.graph(role)[key] == onnx_split.graph(role)[key], (role, key)
    assert torch_only.graph("assistant_prior")["kv_cache"] is True
    engines = torch_engines(torch_only, tiny_models)
    assert isinstance(engines["primary_llm_lo"].module, LanguageModelSegment)
    pipe, tp = load_pipeline(tiny_split), torch_pipeline(torch_only, tiny_models)
    steps = []
    plan = llm_split.plan
    monkeypatch.setattr(llm_split, "plan", lambda *a, **kw: steps.append(plan(*a, **kw)) or steps[-1])
    base = dict(num_frames=8, max_pixels=64 * 784, min_pixels=16 * 784, max_new_tokens=6)
    for opts in (Options(method="fastv", **base), Options(method="visionzip", dycoke_kv=True, **base),
                 Options(method="dart", **base), Options(method="self", **base), Options(method="vidcom2", **base),
                 Options(method="dart-embed", **base)):
        a, b = pipe.answer(clip, QUESTION, opts), tp.answer(clip, QUESTION, opts)
        assert a.token_ids == b.token_ids, opts
        np.testing.assert_array_equal(a.kept_source, b.kept_source)
    # the in-LLM methods ran on the LLM engine's static cache; DyCoke's KV step on the two segments
    assert [type(s).__name__ for s in steps[1::2]] == ["EngineSplitStep", "SplitStep", "EngineSplitStep", "EngineSplitStep",
                                                 "NoneType", "NoneType"]


def test_random_weights_are_drawn_on_the_target_device():
    """CPU: the same draws as without a device context (what every golden and export holds).
    Another device: built there directly; on "meta" the 7B preset (8.3B parameters, 16 GB in bf16)
    is ready in seconds, which drawing on the CPU and moving could not be."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from export.presets import random_config

    tok = build_tiny_tokenizer()
    ids = special_ids(tok)
    preset = get_preset("tiny-assistant")
    got = load_model(preset, tok, ids)
    torch.manual_seed(0)
    want = Qwen2_5_VLForConditionalGeneration._from_config(random_config(preset, tok.get_vocab_size(), ids),
                                                            dtype=torch.float32, attn_implementation="eager")
    state = want.state_dict()
    for name, tensor in got.state_dict().items():
        scale = preset.qk_scale if name.endswith(("q_proj.weight", "k_proj.weight")) and "language_model" in name else 1.0
        assert torch.equal(tensor, state[name] * scale), name
    t0 = time.perf_counter()
    big = load_model(get_preset("qwen2.5-vl-7b-random"), tok, ids, device="meta", dtype=torch.bfloat16)
    assert time.perf_counter() - t0 < 30
    assert {p.device.type for p in big.parameters()} == {"meta"} and {p.dtype for p in big.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in big.parameters()) > 8e9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decode_matches_eager_decode(pairs):
    """On a GPU only: the captured decode step gives the CPU step's greedy tokens (fp32)."""
    model = pairs["needle"]["primary"]
    table = model.get_input_embeddings().weight.detach().numpy()
    rng = np.random.default_rng(6)
    ids, pos = rng.integers(0, table.shape[0], 50), _positions(rng, 50)
    cpu = _llm_engines(model)[1]
    want = _greedy_step(cpu.open_step(70), table, table[ids], pos, 16, 16)[0]
    gpu = TorchLLMEngine(LanguageModel(copy.deepcopy(model), "sdpa"), cpu.input_names, cpu.output_names, device="cuda")
    step = gpu.open_step(70)
    assert _greedy_step(step, table, table[ids], pos, 16, 16)[0] == want
    assert step._cache.graph is not None
