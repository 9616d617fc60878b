"""The primary LLM split at layer K (primary_llm_lo/_hi) and the methods that use the cut: FastV and
DyToK+FastV at prefill, DyCoke's decode-time KV step. Against transformers' own decoder layers
(tests/reference.py: split_llm_reference, written from spec §3.2/§4.3).

Graph tolerance 1e-4 max abs (fp32, ONNX Runtime CPU vs torch). End to end: identical tokens and
kept sets. The prior's budgets come from the pipeline (their own parity is test_pipeline's)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from export.split_llm import resolve_split_layer  # noqa: E402
from runtime import llm_split  # noqa: E402
from runtime.engines.ort import OrtEngine  # noqa: E402
from runtime.errors import BudgetError, DyTokError, ManifestError  # noqa: E402
from runtime.manifest import Manifest, load_manifest  # noqa: E402
from runtime.options import Options
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.specs_kv import kv_input_names  # noqa: E402
from runtime.video import sample_video  # noqa: E402

from tests.reference import _causal, full_prompt_reference, split_llm_reference  # noqa: E402

ATOL = 1e-4
QUESTION = "What happens in the video?"
SMALL = dict(min_pixels=16 * 784, max_pixels=64 * 784, max_new_tokens=10)


@pytest.fixture(scope="module")
def pipe(tiny_split):
    return load_pipeline(tiny_split)


@pytest.fixture(scope="module")
def clip(video_path):
    return sample_video(video_path, num_frames=16)


@pytest.fixture(scope="module")
def prompt_ref(pipe, clip, tiny_models):
    pcfg = pipe.preprocess_config("primary", SMALL["max_pixels"], SMALL["min_pixels"])
    return full_prompt_reference(tiny_models["primary"], pipe.prompt, clip, QUESTION, pcfg, pipe.m.tokens["video"])


def test_manifest_lists_the_segments_with_io_tables(tiny_split):
    m = load_manifest(tiny_split)
    lo, hi = m.graph("primary_llm_lo"), m.graph("primary_llm_hi")
    assert lo["split_layer"] == hi["split_layer"] == 2 == llm_split.split_layer(m)
    assert [t["name"] for t in lo["inputs"]][:3] == ["inputs_embeds", "position_ids", "attention_mask"]
    assert [t["name"] for t in lo["inputs"]][3:] == kv_input_names(2)
    assert [t["name"] for t in hi["inputs"]][3:] == kv_input_names(4, "past", 2)
    assert [t["name"] for t in lo["outputs"]][:2] == ["hidden_states", "attention"]
    assert [t["name"] for t in hi["outputs"]][0] == "logits"
    assert "primary_llm" in m.data["graphs"]  # the one-graph LLM stays the default


def test_segments_match_transformers_with_fastv_keep_and_a_holed_key_mask(tiny_split, tiny_models):
    """Prefill: lo's hidden states and layer-1 last-row attention equal transformers'; hi on a kept
    subset at the original ids equals transformers' layers on that subset. Decode: one step where
    hi's attention_mask drops keys equals transformers' layers with the same additive mask."""
    model = tiny_models["primary"]
    text = model.model.language_model
    m = load_manifest(tiny_split)
    c = m.model("primary")
    lo, hi = OrtEngine(m.onnx_path("primary_llm_lo")), OrtEngine(m.onnx_path("primary_llm_hi"))
    rng = np.random.default_rng(3)
    n = 30
    embeds = rng.normal(size=(1, n, c["hidden_size"])).astype(np.float32)
    pos = np.sort(rng.integers(0, 50, size=(3, 1, n)), axis=-1)
    empty = np.zeros((1, c["num_kv_heads"], 0, c["head_dim"]), np.float32)
    out_lo = lo.run({"inputs_embeds": embeds, "position_ids": pos, "attention_mask": np.ones((1, n), np.int64),
                     **{k: empty for k in kv_input_names(2)}})
    with torch.no_grad():
        ref = text(inputs_embeds=torch.from_numpy(embeds), position_ids=torch.from_numpy(pos), output_hidden_states=True,
                   output_attentions=True)
    np.testing.assert_allclose(out_lo["hidden_states"], ref.hidden_states[2].numpy(), atol=ATOL)
    np.testing.assert_allclose(out_lo["attention"], ref.attentions[1][0, :, -1].mean(0).numpy(), atol=ATOL)
    keep = np.sort(rng.choice(n, 17, replace=False))
    keep[-1] = n - 1
    out_hi = hi.run({"hidden_states": out_lo["hidden_states"][:, keep], "position_ids": pos[..., keep],
                     "attention_mask": np.ones((1, len(keep)), np.int64), **{k: empty for k in kv_input_names(4, "past", 2)}})
    from transformers import DynamicCache
    cache = DynamicCache(config=text.config)
    with torch.no_grad():
        x = torch.from_numpy(out_lo["hidden_states"][:, keep])
        pe = text.rotary_emb(x, torch.from_numpy(pos[..., keep]))
        for i in (2, 3):
            cache.update(torch.zeros(1, c["num_kv_heads"], 0, c["head_dim"]), torch.zeros(1, c["num_kv_heads"], 0, c["head_dim"]), i - 2)
        layers = torch.nn.ModuleList([text.layers[2], text.layers[3]])
        for j, layer in enumerate(layers):
            layer.self_attn.layer_idx = j  # a private cache for the two upper layers
        try:
            for layer in layers:
                x = layer(x, attention_mask=_causal(len(keep)), position_embeddings=pe, past_key_values=cache, use_cache=True)
            np.testing.assert_allclose(out_hi["logits"], model.lm_head(text.norm(x[:, -1])).numpy(), atol=ATOL)
            # one decode step with keys dropped in the upper layers
            e = rng.normal(size=(1, 1, c["hidden_size"])).astype(np.float32)
            p = np.full((3, 1, 1), 60)
            total = len(keep) + 1
            holes = np.ones((1, total), np.int64)
            holes[0, [1, 4, 5, 9]] = 0
            past = {k: out_hi[k.replace("past", "present")] for k in kv_input_names(4, "past", 2)}
            got = hi.run({"hidden_states": e, "position_ids": p, "attention_mask": holes, **past})["logits"]
            x = torch.from_numpy(e)
            pe = text.rotary_emb(x, torch.from_numpy(p))
            mask = torch.zeros(1, 1, 1, total).masked_fill(torch.from_numpy(holes[None, None] == 0), torch.finfo(torch.float32).min)
            for layer in layers:
                x = layer(x, attention_mask=mask, position_embeddings=pe, past_key_values=cache, use_cache=True)
            np.testing.assert_allclose(got, model.lm_head(text.norm(x[:, -1])).numpy(), atol=ATOL)
        finally:
            for i, layer in enumerate(text.layers):
                layer.self_attn.layer_idx = i


@pytest.mark.parametrize("assistant", [True, False], ids=["dytok+fastv", "fastv"])
def test_fastv_matches_reference(pipe, clip, tiny_models, prompt_ref, assistant):
    """DyToK+FastV: each temporal group keeps its budget of the most attended tokens at layer K-1;
    FastV (no prior): one global top-k of the same total. Same tokens, same kept set."""
    opts = Options(method="fastv", assistant=assistant, **SMALL)
    result = pipe.answer(clip, QUESTION, opts)
    embeds, pos, start, n_vis = prompt_ref
    eos = tuple(pipe.prompt.eos_ids)
    tokens, keep, _ = split_llm_reference(tiny_models["primary"], embeds, pos, 2, opts.max_new_tokens, int(pos.max()) + 1,
                                          start, n_vis, result.budgets, assistant, eos=eos)
    kept = keep[(keep >= start) & (keep < start + n_vis)] - start
    np.testing.assert_array_equal(result.kept_source, kept)
    assert result.token_ids == tokens
    assert result.visual_tokens == (int(result.budgets.sum()), n_vis)
    per = n_vis // len(result.budgets)
    counts = np.bincount(kept // per, minlength=len(result.budgets))
    np.testing.assert_array_equal(counts, result.budgets)  # an in-LLM method reports what each group kept
    if assistant:
        assert len(set(result.budgets.tolist())) > 1  # the prior's budgets
    else:  # global top-k of the uniform total: groups keep unequal shares
        assert result.budgets.sum() % len(counts) == 0 and len(set(counts.tolist())) > 1


def test_dycoke_kv_matches_reference(pipe, clip, tiny_models, prompt_ref):
    """Full prompt (method none) with DyCoke's KV step, p = 0.5: same tokens and the same steps pruned
    (the first step always prunes: no previous attention). The tiny model's near-uniform attention
    is stable after that; tests/runtime/test_llm_split.py drives both branches of the rule."""
    opts = Options(method="none", dycoke_kv=True, kv_prune_ratio=0.5, ignore_eos=True, **SMALL)
    result = pipe.answer(clip, QUESTION, opts)
    embeds, pos, start, n_vis = prompt_ref
    tokens, _, pruned = split_llm_reference(tiny_models["primary"], embeds, pos, 2, opts.max_new_tokens,
                                            int(pos.max()) + 1, start, n_vis, dycoke_p=0.5)
    assert result.token_ids == tokens
    assert pruned[0] and result.timings["kv_pruned_steps"] == sum(pruned)


def test_torch_backend_serves_the_split_graphs(pipe, clip, tiny_models):
    from export.torch_engine import torch_pipeline
    tp = torch_pipeline(pipe.m, tiny_models)
    assert {"primary_llm_lo", "primary_llm_hi"} <= set(tp.engines)
    for opts in (Options(method="fastv", **SMALL), Options(method="evs", **SMALL),
                 Options(method="visionzip", dycoke_kv=True, **SMALL), Options(method="dart", **SMALL)):
        a, b = pipe.answer(clip, QUESTION, opts), tp.answer(clip, QUESTION, opts)
        assert a.token_ids == b.token_ids, opts
        np.testing.assert_array_equal(a.kept_source, b.kept_source)


def test_split_graphs_pass_the_tensorrt_lint_and_profiles_cover_their_feeds(tiny_split, video_path):
    from runtime.engines.profiles import ProfileLimits, check_shapes_fit, derive_profiles
    from runtime.engines.trt_lint import lint_artifacts
    from tests.engines.test_profiles import Spy

    m = load_manifest(tiny_split)
    findings = lint_artifacts(m)
    assert {"primary_llm_lo", "primary_llm_hi"} <= set(findings)
    assert all(not f for f in findings.values()), [str(x) for f in findings.values() for x in f]
    profiles = derive_profiles(m, ProfileLimits(min_frames=2, max_frames=16))
    pipe = load_pipeline(tiny_split)
    pipe.engines = {role: Spy(e) for role, e in pipe.engines.items()}
    for opts in (Options(num_frames=8, method="fastv", max_new_tokens=3, ignore_eos=True),
                 Options(num_frames=4, method="visionzip", dycoke_kv=True, max_new_tokens=3, ignore_eos=True)):
        pipe.answer(video_path, "What moves?", opts)
    for role in ("primary_llm_lo", "primary_llm_hi"):
        feeds = pipe.engines[role].feeds
        assert len(feeds) == 6
        for i, f in enumerate(feeds):
            name = "prefill" if i % 3 == 0 else "decode"
            assert check_shapes_fit(profiles[role][name], f) is None, (role, i)


def test_clear_errors(tiny_artifacts, tiny_split, clip, tmp_path):
    plain = load_pipeline(tiny_artifacts)
    for opts in (Options(method="fastv"), Options(dycoke_kv=True)):
        with pytest.raises(ManifestError, match="--fastv-layer"):
            plain.answer(clip, QUESTION, opts)
    with pytest.raises(BudgetError, match="cannot follow FastV"):
        load_pipeline(tiny_split).answer(clip, QUESTION, Options(method="fastv", dycoke_kv=True))
    data = load_manifest(tiny_split).data
    fused = Manifest(tiny_split, {**data, "graphs": {**data["graphs"], "primary_llm_hi": {**data["graphs"]["primary_llm_hi"],
                                                                                        "attention": "gqa"}}})
    with pytest.raises(ManifestError, match="--llm-attention plain"):
        llm_split.check(fused, Options(dycoke_kv=True))
    llm_split.check(fused, Options(method="fastv"))  # FastV runs on the fused segments
    for bad in (0, 4, "x"):
        with pytest.raises(DyTokError, match="--fastv-layer"):
            resolve_split_layer(bad, 4)
    assert resolve_split_layer("default", 4) == 3 and resolve_split_layer("default", 3) == 2


@pytest.mark.parametrize("assistant", [False, True], ids=["evs", "dytok+evs"])
def test_evs_in_the_pipeline_matches_a_torch_reference(pipe, clip, tiny_models, assistant):
    """EVS on transformers' merged tokens with torch's cosine_similarity and a stable descending sort
    (spec §5b): global top-K without the prior, the prior's per-group budgets with it."""
    opts = Options(method="evs", assistant=assistant, **SMALL)
    result = pipe.answer(clip, QUESTION, opts)
    pcfg = pipe.preprocess_config("primary", SMALL["max_pixels"], SMALL["min_pixels"])
    from runtime.preprocess import preprocess_video
    patches = preprocess_video(clip.frames, pcfg)
    with torch.no_grad():
        x = tiny_models["primary"].model.visual(torch.from_numpy(patches.pixel_values),
                                                grid_thw=torch.tensor([patches.grid_thw])).pooler_output
    t = patches.grid_thw[0]
    x = x.reshape(t, -1, x.shape[-1])
    d = torch.full(x.shape[:2], 255.0)
    d[1:] = 1 - torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=-1, eps=1e-8)
    if assistant:
        per = d.shape[1]
        want = torch.cat([torch.argsort(-row, stable=True)[:int(b)] + g * per for g, (row, b) in enumerate(zip(d, result.budgets))])
    else:
        k = max(d.shape[1], int(d.numel() * (1 - (1 - opts.retention))))
        want = torch.argsort(-d.reshape(-1), stable=True)[:k]
    np.testing.assert_array_equal(result.kept_source, torch.sort(want).values.numpy())


def test_fused_gqa_segments_match_the_plain_ones(tiny_split, tiny_models, tmp_path):
    """The segments in ONNX Runtime's fused GroupQueryAttention form (what a --llm-attention gqa
    folder gets; FastV runs on them, DyCoke KV refuses them): prefill and one decode step equal the
    plain graphs, the layer K-1 attention row included."""
    import onnx

    from export.exporter import _export
    from export.graphs.gqa import onnx_translation
    from export.graphs.llm import LanguageModelSegment
    from export.split_llm import example_feeds, segment_specs

    m = load_manifest(tiny_split)
    c = m.model("primary")
    plain = {s.role: OrtEngine(m.onnx_path(s.role)) for s in segment_specs(c, 2)}
    fused = {}
    for spec, (a, b) in zip(segment_specs(c, 2), [(0, 2), (2, 4)]):
        path = str(tmp_path / f"{spec.role}.onnx")
        _export(LanguageModelSegment(tiny_models["primary"], a, b, "gqa").eval(), spec, example_feeds(spec), path,
                onnx_translation())
        ops = {(n.domain, n.op_type) for n in onnx.load(path, load_external_data=False).graph.node}
        assert ("com.microsoft", "GroupQueryAttention") in ops
        fused[spec.role] = OrtEngine(path)
    rng = np.random.default_rng(5)
    n = 23
    empty = np.zeros((1, c["num_kv_heads"], 0, c["head_dim"]), np.float32)
    names = {"primary_llm_lo": kv_input_names(2), "primary_llm_hi": kv_input_names(4, "past", 2)}
    first = {"primary_llm_lo": "inputs_embeds", "primary_llm_hi": "hidden_states"}
    for role in names:
        x = rng.normal(size=(1, n, c["hidden_size"])).astype(np.float32)
        pos = np.sort(rng.integers(0, 40, size=(3, 1, n)), axis=-1)
        f = {first[role]: x, "position_ids": pos, "attention_mask": np.ones((1, n), np.int64), **{k: empty for k in names[role]}}
        want, got = plain[role].run(f), fused[role].run(f)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=f"{role} prefill {key}")
        f = {first[role]: rng.normal(size=(1, 1, c["hidden_size"])).astype(np.float32), "position_ids": np.full((3, 1, 1), 50),
             "attention_mask": np.ones((1, n + 1), np.int64), **{k: want[k.replace("past", "present")] for k in names[role]}}
        want, got = plain[role].run(f), fused[role].run(f)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=f"{role} decode {key}")


def test_the_split_export_writes_the_final_norm_and_the_manifest_checks_it(tiny_split, tiny_artifacts, tiny_models,
                                                                           clip, tmp_path):
    """DART reads layer K-1's output after the final RMSNorm, which the graphs leave out: the split
    export writes transformers' weight and eps as a declared model file; the manifest checks it
    when present, and a split folder without it is refused for DART (not for FastV)."""
    import json
    import shutil

    from runtime.manifest import model_file_names

    norm = tiny_models["primary"].model.language_model.norm
    m = load_manifest(tiny_split)
    entry = m.model("primary")["final_norm"]
    assert entry["shape"] == [m.model("primary")["hidden_size"]] and entry["eps"] == norm.variance_epsilon
    np.testing.assert_array_equal(np.load(m.path(entry["file"])), norm.weight.detach().numpy())
    assert entry["file"] in model_file_names(m.data)
    assert "final_norm" not in load_manifest(tiny_artifacts).model("primary")  # only split exports have it

    def tampered(change):
        out = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_split, out)
        data = json.loads((out / "manifest.json").read_text())
        change(data, out)
        (out / "manifest.json").write_text(json.dumps(data))
        return str(out)

    for change, match in ((lambda d, o: d["models"]["primary"]["final_norm"].update(shape=[3]), "final_norm.shape"),
                          (lambda d, o: d["models"]["primary"]["final_norm"].update(eps=-1), "final_norm.eps"),
                          (lambda d, o: (o / entry["file"]).unlink(), "final norm")):
        with pytest.raises(ManifestError, match=match):
            load_manifest(tampered(change))
    old = load_manifest(tampered(lambda d, o: d["models"]["primary"].pop("final_norm")))
    with pytest.raises(ManifestError, match="final norm.*--fastv-layer 2"):
        llm_split.check(old, Options(method="dart"))
    llm_split.check(old, Options(method="fastv"))


def test_dart_at_a_retention_the_reference_crashes_on_is_one_budget_error_before_the_llm(pipe, clip):
    calls = []
    engine = pipe.engines["primary_llm_lo"]
    pipe.engines["primary_llm_lo"] = type("Spy", (), {"run": lambda self, feeds: calls.append(1) or engine.run(feeds),
                                                      "name": engine.name})()
    try:
        for method in ("dart", "dart-embed"):
            with pytest.raises(BudgetError, match="retention 1: .*the reference crashes here"):
                pipe.answer(clip, QUESTION, Options(method=method, retention=1.0, assistant=False, **SMALL))
    finally:
        pipe.engines["primary_llm_lo"] = engine
    assert not calls
