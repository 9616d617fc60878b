"""Write one self-describing artifact folder: ONNX graphs, token-embedding tables, tokenizer and
a versioned manifest. Everything goes to a temporary folder that is renamed when complete;
graphs whose source key and file hashes match an existing export are reused, not re-exported.
What differs per model family (Qwen2.5-VL, LLaVA-OneVision) comes from ``export.families``."""
from __future__ import annotations

import glob
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from runtime.errors import DyTokError
from runtime.manifest import MANIFEST_NAME, link_or_copy, schema_for, sha256_file
from runtime.specs_kv import kv_input_names

from . import specs
from .families import family_of
from .presets import Preset, get_preset
from .tokenizer import build_tiny_tokenizer, special_ids
from .weights import load_model, resolve_checkpoint

EXPORTER_VERSION = "0.1.0"


def model_constants(model, family, prior_layers: list[int] | None = None) -> dict:
    """The manifest's constants of one model (``family.constants``), with its prior layers if any."""
    out = family.constants(model)
    if prior_layers is not None:
        out["prior_layers"] = prior_layers
    return out


def _export(module, spec: specs.GraphSpec, example: dict, path: str, translation: dict | None = None) -> None:
    import torch
    from torch.export import Dim

    dims: dict[str, Dim] = {}
    def dyn(t):  # symbolic dims by name; the same name is the same dim
        return {i: dims.setdefault(d, Dim(d)) for i, d in enumerate(t.shape) if isinstance(d, str)}
    names = [t.name for t in spec.inputs]
    args = tuple(torch.from_numpy(example[n]) for n in names)
    sig = list(inspect.signature(module.forward).parameters)
    if sig[-1] == "past" and len(spec.inputs) >= len(sig):  # varargs past key/values: nested dynamic shapes
        fixed = len(sig) - 1
        shapes = {sig[i]: dyn(spec.inputs[i]) for i in range(fixed)}
        shapes["past"] = tuple(dyn(t) for t in spec.inputs[fixed:])
    else:
        shapes = {sig[i]: dyn(t) for i, t in enumerate(spec.inputs)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=True, input_names=names,
                          output_names=[t.name for t in spec.outputs], dynamic_shapes=shapes,
                          opset_version=specs.OPSET, external_data=True, verbose=False,
                          custom_translation_table=translation)


def _check_graph(path: str) -> None:
    import onnx
    onnx.checker.check_model(path)  # by path: works with external data
    onnx.shape_inference.infer_shapes_path(path, path + ".inferred")
    os.remove(path + ".inferred")


def _code_hash() -> str:
    """Hash of the code that builds graphs and weights: a change to it invalidates reuse."""
    here = os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(here, "graphs", "*.py")) + [os.path.join(here, n) for n in
                                                                      ("weights.py", "presets.py", "specs.py", "families.py")])
    h = hashlib.sha256()
    for path in files:
        h.update(open(path, "rb").read())
    return h.hexdigest()


def _source_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps({**parts, "code": _code_hash()}, sort_keys=True).encode()).hexdigest()


def _reuse(old: dict | None, role: str, key: str, old_folder: str, new_folder: str) -> dict | None:
    """Hard-link (or copy) a previous export's graph when its source key and hashes still match."""
    entry = (old or {}).get("graphs", {}).get(role)
    if not entry or entry.get("source_key") != key:
        return None
    files = [(entry["file"], entry["sha256"])] + ([(entry["data_file"], entry["data_sha256"])] if entry.get("data_file") else [])
    for name, digest in files:
        src = os.path.join(old_folder, name)
        if not os.path.isfile(src) or sha256_file(src) != digest:
            return None
    for name, _ in files:
        link_or_copy(os.path.join(old_folder, name), os.path.join(new_folder, name))
    return entry


def _graph_entry(folder: str, name: str, spec: specs.GraphSpec, key: str) -> dict:
    entry = {"file": name, "sha256": sha256_file(os.path.join(folder, name)), "source_key": key, **spec.io_table()}
    data = name + ".data"
    if os.path.isfile(os.path.join(folder, data)):
        entry.update(data_file=data, data_sha256=sha256_file(os.path.join(folder, data)))
    return entry


def export_artifacts(model_name: str, out: str, assistant_name: str | None = "default", checkpoint: str | None = None,
                     assistant_checkpoint: str | None = None, prior_layers=None, seed: int = 0,
                     validate: bool = True, torch_only: bool = False, dtype: str = "float32",
                     llm_attention: str = "plain", log=print, fastv_layer=None, device: str = "cpu") -> str:
    """Export ``model_name`` (and its assistant) to ``out``. Returns ``out``.

    ``torch_only``: write everything but the ONNX graphs (their I/O tables stay), for the PyTorch
    engine backend; ``dtype`` is then the weights' dtype (e.g. bfloat16 for real-size GPU runs).
    ONNX graphs are always exported in fp32. ``llm_attention``: "plain" (standard ONNX ops, for
    every runtime including TensorRT) or "gqa" (ONNX Runtime's fused GroupQueryAttention in the
    primary LLM and assistant prior graphs; same inputs and outputs, faster on ONNX Runtime, not
    TensorRT). ``fastv_layer`` (int or "default"): also export the LLM split at that layer
    (``primary_llm_lo``/``_hi``, for FastV, DART and DyCoke's KV step, with the final norm's
    weight; ``export/split_llm.py``). ``device``: where random presets draw their weights (a GPU
    draws a real-size pair in seconds; the folder records it, and the PyTorch engines draw on the
    same device type)."""
    from runtime.compression.dytok import select_layers

    from .graphs.gqa import onnx_translation
    from .graphs.llm import KeyframePrior, LanguageModel
    from .validate import validate_graph

    preset = get_preset(model_name)
    family = family_of(preset)
    if assistant_name == "default":
        assistant_name = preset.assistant
    assistant = get_preset(assistant_name) if assistant_name not in (None, "none") else None
    # An assistant of the other family brings its own tokenizer, template and preprocessing
    # (manifest schema 3: models.assistant.family); the runtime maps its groups by time.
    afamily = family_of(assistant) if assistant is not None else family
    # Fail on missing weights before any work.
    if not preset.is_random:
        checkpoint = resolve_checkpoint(preset, checkpoint)
    if assistant is not None and not assistant.is_random:
        assistant_checkpoint = resolve_checkpoint(assistant, assistant_checkpoint, "--assistant-checkpoint")
    if prior_layers is None:  # the assistant checkpoint's measured choice (dytok.json), the preset's, else the last third
        prior_layers = _checkpoint_prior_layers(assistant_checkpoint) or (assistant and assistant.prior_layers) or "last_third"

    import onnx
    import onnxruntime
    import torch
    import transformers
    from tokenizers import Tokenizer

    if llm_attention not in ("plain", "gqa"):
        raise DyTokError(f"llm attention {llm_attention!r}: expected plain or gqa")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise DyTokError(f"dtype {dtype!r}: expected float32, bfloat16 or float16")
    if not torch_only and device != "cpu":
        raise DyTokError(f"device {device}: ONNX graphs are exported on the CPU; a device is for --torch-only folders")
    if not torch_only and dtype != "float32":
        raise DyTokError(f"dtype {dtype}: ONNX graphs are exported in float32 (quantize them with scripts/calibrate.py); "
                         f"other dtypes are for --torch-only folders")
    weights_dtype = getattr(torch, dtype)

    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    old = None
    if os.path.isfile(os.path.join(out, MANIFEST_NAME)):
        old = json.load(open(os.path.join(out, MANIFEST_NAME)))
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".partial-", dir=parent)
    try:
        def tokenizer_of(p: Preset, fam, ckpt, name: str):
            tok = build_tiny_tokenizer(special_tokens=fam.special_tokens) if p.is_random else \
                Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
            tok.save(os.path.join(tmp, name))
            try:
                return tok, fam.chat_template if p.is_random else fam.checkpoint_template(ckpt), \
                    special_ids(tok, fam.special_tokens)
            except ValueError as e:
                raise DyTokError(f"{p.name}: {e}") from None

        tokenizer, template, ids = tokenizer_of(preset, family, checkpoint, "tokenizer.json")
        a_tok = (tokenizer, template, ids)
        if afamily is not family:
            a_tok = tokenizer_of(assistant, afamily, assistant_checkpoint, "assistant_tokenizer.json")
        graphs, models = {}, {}

        def emit(role, module, spec, example, key_parts, translation=None, extra=None):
            if torch_only:  # no graph file; its I/O table and what the runtime reads of it (split_layer, kv_cache)
                graphs[role] = {**spec.io_table(), **(extra or {})}
                return
            key = _source_key({"role": role, "exporter": EXPORTER_VERSION, "opset": specs.OPSET,
                               "io": spec.io_table(), **key_parts})
            name = role + ".onnx"
            entry = _reuse(old, role, key, out, tmp)
            if entry:
                log(f"  {role}: unchanged, reused")
            else:
                t0 = time.perf_counter()
                _export(module, spec, example, os.path.join(tmp, name), translation)
                _check_graph(os.path.join(tmp, name))
                if validate:
                    validate_graph(module, os.path.join(tmp, name), spec, role)
                entry = _graph_entry(tmp, name, spec, key)
                log(f"  {role}: exported in {time.perf_counter() - t0:.1f} s")
            graphs[role] = {**entry, **(extra or {})}

        def export_model(which, p: Preset, ckpt, layers=None, fam=family, tok=(tokenizer, template, ids)):
            log(f"{which}: {p.name}" + (f" from {ckpt}" if ckpt else f" (random weights, seed {seed})"))
            model = load_model(p, tok[0], tok[2], ckpt, seed, device if p.is_random else "cpu", weights_dtype)
            consts = model_constants(model, fam, layers and select_layers(layers, model.config.text_config.num_hidden_layers))
            key_parts = {"preset": repr(p), "seed": seed if p.is_random else None, "checkpoint": _checkpoint_key(ckpt),
                         "config": model.config.to_json_string(use_diff=False)}
            table = model.get_input_embeddings().weight.detach().float().cpu().numpy()
            emb_name = f"{which}_embeddings.npy"
            np.save(os.path.join(tmp, emb_name), table)
            consts["embeddings"] = {"file": emb_name, "sha256": sha256_file(os.path.join(tmp, emb_name)),
                                    "shape": list(table.shape), "dtype": "float32"}
            consts.update(fam.model_files(model, which, tmp))
            if fam is not family:  # a model of the other family: its own prompt and preprocessing
                name = f"{which}_tokenizer.json"
                consts.update(family=fam.name, tokens=fam.tokens(tok[2]), preprocess=fam.preprocess(p, consts, ckpt),
                              tokenizer={"file": name, "sha256": sha256_file(os.path.join(tmp, name)),
                                         "chat_template": tok[1]})
            models[which] = consts
            emit(f"{which}_vision", fam.vision_module(model).eval(), fam.vision_spec(f"{which}_vision", consts),
                 fam.example_vision(consts), key_parts)
            return model, consts, key_parts

        model, consts, key_parts = export_model("primary", preset, checkpoint)
        lspec = specs.llm_spec(consts["hidden_size"], consts["num_layers"], consts["num_kv_heads"], consts["head_dim"],
                               consts["vocab_size"])
        translation = onnx_translation() if llm_attention == "gqa" else None
        emit("primary_llm", LanguageModel(model, llm_attention).eval(), lspec, _example_llm(consts),
             {**key_parts, "attention": llm_attention}, translation, {"attention": llm_attention})
        if fastv_layer is not None:
            from .split_llm import emit_split
            emit_split(emit, model, consts, key_parts, fastv_layer, llm_attention, translation, tmp)
        del model
        if assistant is not None:
            amodel, aconsts, akey = export_model("assistant", assistant, assistant_checkpoint, prior_layers, afamily, a_tok)
            pspec = specs.prior_spec(aconsts["hidden_size"], len(aconsts["prior_layers"]), prior_kv(aconsts))
            emit("assistant_prior", KeyframePrior(amodel, aconsts["prior_layers"], llm_attention).eval(), pspec,
                 _example_prior(aconsts), {**akey, "layers": aconsts["prior_layers"], "attention": llm_attention},
                 translation, {"attention": llm_attention, "kv_cache": True})
            del amodel

        manifest = {
            "schema_version": schema_for({"family": family.name, "models": models}), "family": family.name, "preset": preset.name,
            "assistant_preset": assistant.name if assistant else None, "seed": seed,
            "checkpoints": {"primary": checkpoint, "assistant": assistant_checkpoint},
            "versions": {"exporter": EXPORTER_VERSION, "torch": torch.__version__, "transformers": transformers.__version__,
                         "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": specs.OPSET},
            "tokenizer": {"file": "tokenizer.json", "sha256": sha256_file(os.path.join(tmp, "tokenizer.json")),
                          "chat_template": template},
            "tokens": family.tokens(ids), "preprocess": family.preprocess(preset, consts, checkpoint),
            "models": models, "graphs": graphs,
        }
        if torch_only:
            manifest.update(torch_only=True, torch_dtype=dtype)
        if device != "cpu":  # random weights differ per device type: the engines must draw them on the same one
            manifest.update(weights_device=device)
        with open(os.path.join(tmp, MANIFEST_NAME), "w") as f:
            json.dump(manifest, f, indent=1)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _checkpoint_prior_layers(folder: str | None):
    """Prior layers recorded with a checkpoint (``dytok.json``: {"prior_layers": [...]}), or None."""
    path = os.path.join(folder, "dytok.json") if folder else None
    if not path or not os.path.isfile(path):
        return None
    return json.load(open(path)).get("prior_layers")


def _checkpoint_key(folder: str | None):
    if not folder:
        return None
    return sorted((os.path.basename(p), os.path.getsize(p), int(os.path.getmtime(p)))
                  for p in (os.path.join(folder, n) for n in os.listdir(folder)) if p.endswith(".safetensors"))


def _example_llm(c: dict) -> dict:
    rng = np.random.default_rng(0)
    seq, past = 7, 5
    feeds = {"inputs_embeds": rng.normal(size=(1, seq, c["hidden_size"])).astype(np.float32),
             "position_ids": np.tile(np.arange(past, past + seq), (3, 1, 1)).astype(np.int64),
             "attention_mask": np.ones((1, past + seq), np.int64)}
    for name in kv_input_names(c["num_layers"], "past"):
        feeds[name] = rng.normal(size=(1, c["num_kv_heads"], past, c["head_dim"])).astype(np.float32)
    return feeds


def prior_kv(c: dict) -> tuple[int, int, int]:
    """KV-cache dims of the chunked prior graph: (layers 0..deepest selected, kv_heads, head_dim)."""
    return max(c["prior_layers"]) + 1, c["num_kv_heads"], c["head_dim"]


def _example_prior(c: dict) -> dict:
    rng = np.random.default_rng(0)
    seq, past = 7, 5
    feeds = {"inputs_embeds": rng.normal(size=(1, seq, c["hidden_size"])).astype(np.float32),
             "position_ids": np.tile(np.arange(past, past + seq), (3, 1, 1)).astype(np.int64),
             "visual_index": np.arange(3, 9, dtype=np.int64), "attention_mask": np.ones((1, past + seq), np.int64)}
    layers, kv_heads, head_dim = prior_kv(c)
    for name in kv_input_names(layers, "past"):
        feeds[name] = rng.normal(size=(1, kv_heads, past, head_dim)).astype(np.float32)
    return feeds
