"""Each exported graph (ONNX Runtime, CPU) against transformers' own PyTorch forward, at video
shapes and sequence lengths other than those it was exported with, from ONE graph per role.

The LLM graph is checked in both forms: plain ONNX and ONNX Runtime's fused GroupQueryAttention.
Tolerance: 1e-4 max abs in fp32 (measured ~2e-7 for vision and LLM, ~1e-8 for the prior)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import onnx  # noqa: E402
from runtime.engines.ort import OrtEngine  # noqa: E402
from runtime.manifest import load_manifest  # noqa: E402
from runtime.prefill import empty_cache, prior_attention, run_chunked  # noqa: E402
from runtime.vision_inputs import vision_feeds  # noqa: E402

from tests.reference import prior_reference, vision_signals_reference  # noqa: E402

ATOL = 1e-4
GRIDS = [(1, 4, 4), (2, 8, 12), (3, 10, 6), (4, 14, 8)]


def engine(folder, role):
    return OrtEngine(load_manifest(folder).path(f"{role}.onnx"))


@pytest.mark.parametrize("which", ["primary", "assistant"])
def test_vision_graph_matches_transformers(tiny_artifacts, tiny_models, which):
    model = tiny_models[which]
    eng = engine(tiny_artifacts, f"{which}_vision")
    rng = np.random.default_rng(0)
    for grid in GRIDS:
        pixels = rng.normal(size=(int(np.prod(grid)), 1176)).astype(np.float32)
        out = eng.run({"pixel_values": pixels, **vision_feeds(grid)})
        with torch.no_grad():
            want = model.model.visual(torch.from_numpy(pixels), grid_thw=torch.tensor([grid])).pooler_output.numpy()
        np.testing.assert_allclose(out["tokens"], want, atol=ATOL, err_msg=f"grid {grid}")
        importance, metric = vision_signals_reference(model, pixels, grid)
        np.testing.assert_allclose(out["importance"], importance, atol=ATOL, err_msg=f"importance, grid {grid}")
        np.testing.assert_allclose(out["metric"], metric, atol=ATOL, err_msg=f"metric, grid {grid}")


@pytest.fixture(scope="module")
def tiny_gqa(tmp_path_factory):
    """The tiny preset exported with ONNX Runtime's fused GroupQueryAttention (LLM and prior)."""
    from export.exporter import export_artifacts
    return export_artifacts("tiny", str(tmp_path_factory.mktemp("gqa") / "tiny-gqa"), llm_attention="gqa",
                            log=lambda *_: None)


@pytest.mark.parametrize("attention", ["plain", "gqa"])
def test_llm_graph_prefill_and_decode_match_transformers(tiny_artifacts, tiny_gqa, tiny_models, attention):
    model = tiny_models["primary"]
    folder = tiny_artifacts if attention == "plain" else tiny_gqa
    m = load_manifest(folder).model("primary")
    eng = engine(folder, "primary_llm")
    ops = {(n.domain, n.op_type) for n in onnx.load(load_manifest(folder).onnx_path("primary_llm"), load_external_data=False).graph.node}
    assert (("com.microsoft", "GroupQueryAttention") in ops) == (attention == "gqa")
    rng = np.random.default_rng(1)
    names = [f"past_{k}_{i}" for i in range(m["num_layers"]) for k in ("key", "value")]
    for length in (3, 17, 40):
        embeds = rng.normal(size=(1, length, m["hidden_size"])).astype(np.float32)
        pos = np.sort(rng.integers(0, 60, size=(3, 1, length)), axis=-1)
        empty = np.zeros((1, m["num_kv_heads"], 0, m["head_dim"]), np.float32)
        out = eng.run({"inputs_embeds": embeds, "position_ids": pos, "attention_mask": np.ones((1, length), np.int64),
                       **{n: empty for n in names}})
        with torch.no_grad():
            ref = model(inputs_embeds=torch.from_numpy(embeds), position_ids=torch.from_numpy(pos), use_cache=True)
        np.testing.assert_allclose(out["logits"], ref.logits[:, -1].numpy(), atol=ATOL)
        past = {n: out[n.replace("past", "present")] for n in names}
        for step in range(3):  # decode steps continue the cache
            e = rng.normal(size=(1, 1, m["hidden_size"])).astype(np.float32)
            p = np.full((3, 1, 1), 70 + step)
            total = length + step + 1
            out = eng.run({"inputs_embeds": e, "position_ids": p, "attention_mask": np.ones((1, total), np.int64), **past})
            with torch.no_grad():
                ref = model(inputs_embeds=torch.from_numpy(e), position_ids=torch.from_numpy(p),
                            past_key_values=ref.past_key_values, use_cache=True)
            np.testing.assert_allclose(out["logits"], ref.logits[:, -1].numpy(), atol=ATOL)
            past = {n: out[n.replace("past", "present")] for n in names}


def test_gqa_export_answers_like_plain_and_is_refused_by_tensorrt(tiny_artifacts, tiny_gqa, video_path):
    from runtime.engines.trt_build import check_trt_graphs
    from runtime.errors import EngineError
    from runtime.options import Options
    from runtime.pipeline import load_pipeline
    from runtime.video import sample_video

    clip = sample_video(video_path, num_frames=8)
    opts = Options(num_frames=8, max_pixels=64 * 784, min_pixels=16 * 784, max_new_tokens=5)
    want = load_pipeline(tiny_artifacts).answer(clip, "What moves?", opts)
    got = load_pipeline(tiny_gqa).answer(clip, "What moves?", opts)
    assert got.token_ids == want.token_ids
    np.testing.assert_array_equal(got.budgets, want.budgets)
    np.testing.assert_allclose(got.frame_weights, want.frame_weights, atol=1e-5)
    assert load_manifest(tiny_gqa).graph("primary_llm")["attention"] == "gqa"
    check_trt_graphs(load_manifest(tiny_artifacts))
    with pytest.raises(EngineError, match="--llm-attention plain"):
        check_trt_graphs(load_manifest(tiny_gqa))


@pytest.mark.parametrize("attention", ["plain", "gqa"])
@pytest.mark.parametrize("sharpen", [1.0, 8.0])
def test_prior_graph_matches_reference(tiny_artifacts, tiny_gqa, tiny_models, tmp_path, sharpen, attention):
    """Random weights give near-uniform attention, so the prior is also exported and checked from
    a copy of the assistant with q/k weights scaled up (sharper, far from uniform attention)."""
    manifest = load_manifest(tiny_artifacts if attention == "plain" else tiny_gqa)
    consts = manifest.model("assistant")
    layers = consts["prior_layers"]
    model = tiny_models["assistant"]
    rng = np.random.default_rng(2)
    hidden = consts["hidden_size"]
    path = manifest.path("assistant_prior.onnx")
    if sharpen != 1.0:
        import copy

        from export import specs
        from export.exporter import _example_prior, _export, prior_kv
        from export.graphs.gqa import onnx_translation
        from export.graphs.llm import KeyframePrior
        model = copy.deepcopy(model)
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.data *= sharpen
            layer.self_attn.k_proj.weight.data *= sharpen
        path = str(tmp_path / "sharp_prior.onnx")
        _export(KeyframePrior(model, layers, attention).eval(), specs.prior_spec(hidden, len(layers), prior_kv(consts)),
                _example_prior(consts), path, onnx_translation() if attention == "gqa" else None)
    ops = {(n.domain, n.op_type) for n in onnx.load(path, load_external_data=False).graph.node}
    assert (("com.microsoft", "GroupQueryAttention") in ops) == (attention == "gqa")
    eng = OrtEngine(path)
    for length, start, n_vis in [(20, 4, 12), (57, 10, 40)]:
        embeds = rng.normal(size=(1, length, hidden)).astype(np.float32)
        pos = np.tile(np.arange(length), (3, 1, 1))
        want = prior_reference(model, embeds, pos, start, n_vis, layers)
        for chunk in (None, 7, 16):  # one call, and chunked prefill through the graph's KV cache
            got = prior_attention(eng, embeds[0], pos[:, 0], np.arange(start, start + n_vis), consts,
                                  manifest.graph("assistant_prior"), chunk)
            np.testing.assert_allclose(got, want, atol=ATOL, err_msg=f"chunk {chunk}")
        if sharpen > 1:
            assert want.max() > 3 / n_vis  # the sharpened case really is non-uniform


class Counting:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def run(self, feeds):
        self.calls += 1
        return self.inner.run(feeds)


@pytest.mark.parametrize("attention", ["plain", "gqa"])
def test_chunked_prefill_matches_one_call(tiny_artifacts, tiny_gqa, attention):
    """The primary LLM fed in chunks through its KV inputs gives the one-call logits and cache;
    the prior graph in chunks gives the one-call prior (prior parity to transformers: above)."""
    manifest = load_manifest(tiny_artifacts if attention == "plain" else tiny_gqa)
    rng = np.random.default_rng(5)
    m = manifest.model("primary")
    llm = Counting(OrtEngine(manifest.path("primary_llm.onnx")))
    n = 203
    feeds = {"inputs_embeds": rng.normal(size=(1, n, m["hidden_size"])).astype(np.float32),
             "position_ids": np.tile(np.arange(n), (3, 1, 1)), "attention_mask": np.ones((1, n), np.int64),
             **empty_cache(m["num_layers"], m["num_kv_heads"], m["head_dim"])}
    names = [k for k in feeds if k.startswith("past_")]
    whole = run_chunked(llm, feeds, None, names)
    for chunk in (1, 50, 64):
        llm.calls = 0
        parts = run_chunked(llm, feeds, chunk, names)
        assert llm.calls == -(-n // chunk)
        for key in whole:
            np.testing.assert_allclose(parts[key], whole[key], atol=1e-5, err_msg=f"{key}, chunk {chunk}")
    a = manifest.model("assistant")
    prior = Counting(OrtEngine(manifest.path("assistant_prior.onnx")))
    embeds = rng.normal(size=(n, a["hidden_size"])).astype(np.float32)
    pos, vis = np.tile(np.arange(n), (3, 1)), np.arange(30, 190)
    whole = prior_attention(prior, embeds, pos, vis, a, manifest.graph("assistant_prior"), None)
    for chunk in (1, 50):
        prior.calls = 0
        got = prior_attention(prior, embeds, pos, vis, a, manifest.graph("assistant_prior"), chunk)
        assert prior.calls == -(-n // chunk)
        np.testing.assert_allclose(got, whole, atol=1e-6)
