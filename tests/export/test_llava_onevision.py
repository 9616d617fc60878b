"""LLaVA-OneVision export (``llava-onevision-tiny``) against transformers'
``LlavaOnevisionForConditionalGeneration``, at two frame counts per check:

- vision graph: tokens = ``get_video_features`` (SigLIP feature layer, projector, 2x bilinear
  pooling) without its last row, which is the manifest's ``image_newline`` file; importance and
  metric = the feature layer's attention (``output_attentions``) and keys, pooled by
  transformers' own ``apply_pooling`` (spec §1.5, §2.2(b));
- LLM graph: logits against ``model(inputs_embeds=...)``, prefill then decode on its KV cache;
- prior graph: rows against an explicit attention computation from transformers' hidden states;
- every exported graph (ONNX Runtime) against its torch module at shapes it was not exported with;
- greedy tokens of the exported graphs, run by hand (embedding lookup, vision tokens and newline
  spliced at the video placeholder, LLM graph with KV cache) against ``generate``.

Tolerance 1e-4 max abs in fp32 (the measured differences are printed with ``-s``)."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from runtime.engines.ort import OrtEngine  # noqa: E402
from runtime.manifest import load_manifest  # noqa: E402
from runtime.prompt import PromptBuilder  # noqa: E402
from runtime.specs_kv import kv_input_names  # noqa: E402

from tests.reference import llava_signals_reference  # noqa: E402

ATOL = 1e-4
FRAMES = (1, 3)
QUESTION = "What happens in the video?"


@pytest.fixture(scope="module")
def folder(llava_tiny):
    """The session's export (with the FastV split at layer 2); validation runs in the tests below."""
    return llava_tiny


@pytest.fixture(scope="module")
def manifest(folder):
    return load_manifest(folder)


@pytest.fixture(scope="module")
def models(llava_models):
    """The transformers models behind the export (same presets, same seed)."""
    return llava_models


def engine(manifest, role):
    return OrtEngine(manifest.onnx_path(role))


def pixels_for(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(frames, 3, 384, 384)).astype(np.float32)


def maxdiff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def signals_reference(model, pixels: np.ndarray):
    """Importance and metric from transformers' own modules (tests/reference.py)."""
    with torch.no_grad():
        return llava_signals_reference(model, pixels)


@pytest.mark.parametrize("which", ["primary", "assistant"])
def test_vision_graph_matches_transformers(manifest, models, which):
    model = models[which]
    eng = engine(manifest, f"{which}_vision")
    newline = np.load(manifest.path(manifest.model(which)["image_newline"]["file"]))
    per_frame = manifest.model(which)["tokens_per_frame"]
    for frames in FRAMES:
        pixels = pixels_for(frames)
        out = eng.run({"pixel_values": pixels})
        with torch.no_grad():
            want = model.model.get_video_features(torch.from_numpy(pixels)[None]).pooler_output[0].numpy()
        assert out["tokens"].shape == (frames * per_frame, manifest.model(which)["hidden_size"])
        np.testing.assert_allclose(out["tokens"], want[:-1], atol=ATOL, err_msg=f"{frames} frames")
        np.testing.assert_array_equal(newline, want[-1])
        importance, metric = signals_reference(model, pixels)
        # near-uniform random attention puts importance near 1/729: compare it relative to its size
        np.testing.assert_allclose(out["importance"], importance, rtol=1e-4, atol=1e-7, err_msg=f"{frames} frames")
        np.testing.assert_allclose(out["metric"], metric, atol=ATOL, err_msg=f"{frames} frames")
        print(f"\n{which} vision, {frames} frames: tokens {maxdiff(out['tokens'], want[:-1]):.2e}, importance "
              f"{maxdiff(out['importance'], importance):.2e} (spread {np.ptp(importance):.2e}), "
              f"metric {maxdiff(out['metric'], metric):.2e}")


def test_vision_module_signals_with_sharp_attention(models):
    """Random SigLIP attention is nearly uniform; scaling a copy's q/k weights makes the
    importance uneven, so the signals are checked far from uniform too (torch module)."""
    from export.graphs.llava_vision import LlavaVisionEncoder

    model = copy.deepcopy(models["primary"])
    with torch.no_grad():
        for layer in model.model.vision_tower.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(6.0)
            layer.self_attn.k_proj.weight.mul_(6.0)
    pixels = pixels_for(2, seed=3)
    with torch.no_grad():
        tokens, importance, metric = LlavaVisionEncoder(model)(torch.from_numpy(pixels))
        want = model.model.get_video_features(torch.from_numpy(pixels)[None]).pooler_output[0, :-1].numpy()
    want_importance, want_metric = signals_reference(model, pixels)
    assert np.ptp(want_importance) > 5 * np.mean(want_importance)  # far from uniform
    np.testing.assert_allclose(tokens.numpy(), want, atol=ATOL)
    np.testing.assert_allclose(importance.numpy(), want_importance, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(metric.numpy(), want_metric, atol=ATOL)


def test_feature_layer_other_than_last(models):
    """vision_feature_layer -2: the graph stops one layer earlier, as transformers' hidden_states[-2]."""
    from export.graphs.llava_vision import LlavaVisionEncoder

    model = copy.deepcopy(models["primary"])
    model.config.vision_feature_layer = -2
    pixels = pixels_for(1, seed=4)
    with torch.no_grad():
        tokens, importance, metric = LlavaVisionEncoder(model)(torch.from_numpy(pixels))
        want = model.model.get_video_features(torch.from_numpy(pixels)[None], vision_feature_layer=-2).pooler_output
    np.testing.assert_allclose(tokens.numpy(), want[0, :-1].numpy(), atol=ATOL)
    want_importance, want_metric = signals_reference(model, pixels)
    np.testing.assert_allclose(importance.numpy(), want_importance, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(metric.numpy(), want_metric, atol=ATOL)


def empty_past(consts, layers: int) -> dict:
    empty = np.zeros((1, consts["num_kv_heads"], 0, consts["head_dim"]), np.float32)
    return {n: empty for n in kv_input_names(layers, "past")}


def rows3(positions: np.ndarray) -> np.ndarray:
    """1-D positions [L] -> the graphs' position_ids [3, 1, L] (three equal rows)."""
    return np.tile(positions.astype(np.int64), (3, 1, 1))


def test_llm_graph_prefill_and_decode_match_transformers(manifest, models):
    model, m = models["primary"], manifest.model("primary")
    eng = engine(manifest, "primary_llm")
    rng = np.random.default_rng(1)
    worst = 0.0
    for length in (5, 200):
        embeds = rng.normal(size=(1, length, m["hidden_size"])).astype(np.float32)
        out = eng.run({"inputs_embeds": embeds, "position_ids": rows3(np.arange(length)),
                       "attention_mask": np.ones((1, length), np.int64), **empty_past(m, m["num_layers"])})
        with torch.no_grad():
            ref = model(inputs_embeds=torch.from_numpy(embeds), use_cache=True)
        np.testing.assert_allclose(out["logits"], ref.logits[:, -1].numpy(), atol=ATOL)
        worst = max(worst, maxdiff(out["logits"], ref.logits[:, -1]))
        past = {n: out[n.replace("past", "present")] for n in kv_input_names(m["num_layers"], "past")}
        for step in range(3):
            e = rng.normal(size=(1, 1, m["hidden_size"])).astype(np.float32)
            total = length + step + 1
            out = eng.run({"inputs_embeds": e, "position_ids": rows3(np.array([total - 1])),
                           "attention_mask": np.ones((1, total), np.int64), **past})
            with torch.no_grad():
                ref = model(inputs_embeds=torch.from_numpy(e), past_key_values=ref.past_key_values, use_cache=True)
            np.testing.assert_allclose(out["logits"], ref.logits[:, -1].numpy(), atol=ATOL)
            worst = max(worst, maxdiff(out["logits"], ref.logits[:, -1]))
            past = {n: out[n.replace("past", "present")] for n in past}
    print(f"\nLLM logits vs transformers (prefill 5 and 200, 3 decode steps each): max abs {worst:.2e}")


def prompt_embeds(manifest, which: str, frames: int, vision_tokens: np.ndarray):
    """Token ids of the chat prompt with the video placeholder expanded, and their embeddings
    with the frames' vision tokens and the newline spliced in -> (ids [L], embeds [1, L, D], start)."""
    tokens = manifest.tokens
    builder = PromptBuilder(manifest.path("tokenizer.json"), manifest.data["tokenizer"]["chat_template"], tokens)
    m = manifest.model(which)
    n_vis = frames * m["tokens_per_frame"]
    ids, start = builder.input_ids(QUESTION, n_vis + 1)
    table = np.load(manifest.path(m["embeddings"]["file"]))
    embeds = table[ids]
    embeds[start:start + n_vis] = vision_tokens
    embeds[start + n_vis] = np.load(manifest.path(m["image_newline"]["file"]))
    return ids, embeds[None].astype(np.float32), start


def prior_reference(model, embeds: np.ndarray, start: int, n_vis: int, layers) -> np.ndarray:
    """Spec §1.3 from transformers' hidden states: per selected layer, the last token's query
    (post-RoPE) against the visual keys, softmax over those keys only, mean over heads."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb, repeat_kv

    text = model.model.language_model
    x = torch.from_numpy(embeds)
    position_ids = torch.arange(x.shape[1])[None]
    with torch.no_grad():
        states = text(inputs_embeds=x, position_ids=position_ids, output_hidden_states=True).hidden_states
        cos, sin = text.rotary_emb(x, position_ids)
        rows = []
        for i in layers:
            attn = text.layers[i].self_attn
            h = text.layers[i].input_layernorm(states[i])
            q = attn.q_proj(h).view(1, -1, text.config.num_attention_heads, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, -1, text.config.num_key_value_heads, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = repeat_kv(k, attn.num_key_value_groups)[:, :, start:start + n_vis]
            logits = torch.matmul(q[:, :, -1:], k.transpose(-1, -2))[0, :, 0] * attn.scaling
            rows.append(torch.softmax(logits.float(), dim=-1).mean(0))
    return torch.stack(rows).numpy()


def test_prior_graph_matches_reference(manifest, models):
    a = manifest.model("assistant")
    layers = a["prior_layers"]
    vision, prior = engine(manifest, "assistant_vision"), engine(manifest, "assistant_prior")
    for frames in FRAMES:
        tokens = vision.run({"pixel_values": pixels_for(frames)})["tokens"]
        ids, embeds, start = prompt_embeds(manifest, "assistant", frames, tokens)
        n_vis = frames * a["tokens_per_frame"]  # the newline key is not a frame's: excluded (spec §1.3)
        out = prior.run({"inputs_embeds": embeds, "position_ids": rows3(np.arange(len(ids))),
                         "visual_index": np.arange(start, start + n_vis), "attention_mask": np.ones((1, len(ids)), np.int64),
                         **empty_past(a, max(layers) + 1)})
        want = prior_reference(models["assistant"], embeds, start, n_vis, layers)
        np.testing.assert_allclose(out["attention"], want, atol=ATOL)
        assert np.ptp(want) > np.mean(want)  # the sharpened assistant's prior is uneven
        print(f"\nprior rows, {frames} frames: max abs {maxdiff(out['attention'], want):.2e} (row mean {want.mean():.2e})")


def test_every_graph_matches_its_torch_module(manifest, models):
    """export/validate.py's check (ONNX Runtime vs the torch module, shapes other than the
    export's: 1 and 3 frames, prefill and decode, chunked prior) on each graph of the folder."""
    from export.families import FAMILIES
    from export.graphs.llm import KeyframePrior, LanguageModel, LanguageModelSegment
    from export.validate import manifest_spec, validate_graph

    family = FAMILIES["llava_onevision"]
    split = manifest.graph("primary_llm_lo")["split_layer"]
    depth = manifest.model("primary")["num_layers"]
    modules = {"primary_vision": family.vision_module(models["primary"]),
               "assistant_vision": family.vision_module(models["assistant"]),
               "primary_llm": LanguageModel(models["primary"]),
               "assistant_prior": KeyframePrior(models["assistant"], manifest.model("assistant")["prior_layers"]),
               "primary_llm_lo": LanguageModelSegment(models["primary"], 0, split),
               "primary_llm_hi": LanguageModelSegment(models["primary"], split, depth)}
    assert set(modules) == set(manifest.data["graphs"])
    for role, module in modules.items():
        validate_graph(module.eval(), manifest.onnx_path(role), manifest_spec(manifest, role), role)


def greedy_by_hand(manifest, pixels: np.ndarray, max_new_tokens: int):
    """The exported graphs alone: vision graph, embedding lookup, splice, LLM graph with KV cache."""
    m = manifest.model("primary")
    tokens = engine(manifest, "primary_vision").run({"pixel_values": pixels})["tokens"]
    ids, embeds, _ = prompt_embeds(manifest, "primary", len(pixels), tokens)
    table = np.load(manifest.path(m["embeddings"]["file"]))
    llm = engine(manifest, "primary_llm")
    names = kv_input_names(m["num_layers"], "past")
    feeds = {"inputs_embeds": embeds, "position_ids": rows3(np.arange(len(ids))), **empty_past(m, m["num_layers"])}
    out_ids, total = [], len(ids)
    for _ in range(max_new_tokens):
        out = llm.run({**feeds, "attention_mask": np.ones((1, total), np.int64)})
        token = int(np.argmax(out["logits"][0]))
        out_ids.append(token)
        if token in manifest.tokens["eos"]:
            break
        feeds = {"inputs_embeds": table[[token]][None], "position_ids": rows3(np.array([total])),
                 **{n: out[n.replace("past", "present")] for n in names}}
        total += 1
    return ids, out_ids


@pytest.mark.parametrize("frames", [1, 2])
def test_greedy_tokens_by_hand_equal_generate(manifest, models, frames):
    pixels = pixels_for(frames, seed=frames)
    ids, got = greedy_by_hand(manifest, pixels, max_new_tokens=10)
    with torch.no_grad():
        out = models["primary"].generate(
            input_ids=torch.from_numpy(ids)[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            pixel_values_videos=torch.from_numpy(pixels)[None], max_new_tokens=10, do_sample=False,
            eos_token_id=manifest.tokens["eos"], pad_token_id=manifest.tokens["pad"])
    want = out[0, len(ids):].tolist()
    print(f"\ngreedy, {frames} frames ({len(ids)}-token prompt): by hand {got}, generate {want}")
    assert got == want
    assert len(set(got)) > 1  # not one token repeated: the comparison says something


def edited_copy(src: str, dst, edit) -> str:
    """A hard-linked copy of folder ``src`` whose manifest.json is ``edit(data)``."""
    import json
    import os
    import shutil

    from runtime.manifest import link_or_copy
    shutil.copytree(src, dst, copy_function=link_or_copy)
    path = os.path.join(dst, "manifest.json")
    data = json.load(open(path))
    edit(data)
    os.remove(path)  # a link: do not write through it into the source folder
    json.dump(data, open(path, "w"))
    return str(dst)


def test_manifest_fields_depend_on_the_family(manifest, folder, tiny_artifacts, tmp_path):
    from runtime.errors import ManifestError

    assert manifest.data["family"] == "llava_onevision" and manifest.data["schema_version"] == 2
    assert "mrope_section" not in manifest.model("primary") and "vision_start" not in manifest.tokens
    # schema 1 folders (Qwen2.5-VL, written before the family table) still load
    old = edited_copy(tiny_artifacts, tmp_path / "qwen-schema1", lambda d: d.update(schema_version=1))
    assert load_manifest(old).data["family"] == "qwen2_5_vl"
    cases = {
        "newline": (lambda d: d["models"]["assistant"].pop("image_newline"), r"models.assistant lacks \['image_newline'\]"),
        "schema1": (lambda d: d.update(schema_version=1), "needs schema version 2"),
        "family": (lambda d: d.update(family="llava_next"), "family 'llava_next' is not one this runtime knows"),
        "frame": (lambda d: d["preprocess"].update(tokens_per_frame=0), "preprocess.tokens_per_frame"),
        "shape": (lambda d: d["models"]["primary"]["image_newline"].update(shape=[65]), r"image_newline.shape"),
    }
    for name, (edit, message) in cases.items():
        with pytest.raises(ManifestError, match=message):
            load_manifest(edited_copy(folder, tmp_path / name, edit))


def test_derived_folder_keeps_the_image_newline(manifest, tmp_path):
    """Quantized/half folders (write_derived_folder) link every per-model file the family declares."""
    import shutil

    from runtime.manifest import write_derived_folder

    def convert(role, src, dst):
        shutil.copy(src, dst)
        shutil.copy(src + ".data", dst + ".data")

    derived = write_derived_folder(manifest, str(tmp_path / "derived"), ("primary_vision",), convert, "copy",
                                   ("copied", True))
    for which in ("primary", "assistant"):
        entry = derived.model(which)["image_newline"]
        np.testing.assert_array_equal(np.load(derived.path(entry["file"])), np.load(manifest.path(entry["file"])))
