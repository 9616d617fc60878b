"""The artifact manifest: the only contract between export and runtime. Versioned, validated on load."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field

from .errors import ManifestError

# Schema 2 adds the llava_onevision family; schema 1 folders (all qwen2_5_vl) are schema 2's
# qwen2_5_vl folders with the older number, and still load. Schema 3 adds a family per model
# (``models.<which>.family``, with that model's own ``tokenizer``, ``tokens`` and ``preprocess``
# when it differs from the top-level ``family``): an assistant of the other family. Folders whose
# models are all of one family are written as schema 2 (``schema_for``), so older runtimes read them.
SCHEMA_VERSION = 3
OLDEST_SCHEMA_VERSION = 1
PER_MODEL_FAMILY_SCHEMA = 3
MODEL_SECTIONS = ("tokenizer", "tokens", "preprocess")  # what a model of another family carries itself
MANIFEST_NAME = "manifest.json"
_REQUIRED = {
    "schema_version": int, "family": str, "preset": str, "versions": dict, "tokenizer": dict, "tokens": dict,
    "preprocess": dict, "models": dict, "graphs": dict,
}


@dataclass(frozen=True)
class FamilyFields:
    """What the runtime reads of one model family, beyond the fields every family has."""
    model_ints: tuple[str, ...]  # models.<which>: required integers >= 1
    model_numbers: tuple[str, ...]  # models.<which>: required finite numbers
    model_files: dict  # models.<which>: required arrays in the folder -> their shape, as model keys
    mrope: bool  # models.<which>.mrope_section: M-RoPE sections summing to head_dim / 2
    tokens: tuple[str, ...]  # tokens: required ids (besides eos)
    preprocess_ints: tuple[str, ...]  # preprocess: required integers >= 1
    since_schema: int  # the first schema version that has the family
    optional_model_files: dict = field(default_factory=dict)  # models.<which>: arrays some exports add -> their shape (checked when present)


_LLM_INTS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "context_length")
_EMBEDDINGS = {"embeddings": ("vocab_size", "hidden_size")}
# Written with the split LLM (export.py --fastv-layer K): the final RMSNorm's weight, with its
# "eps" in the entry, for in-LLM methods that read normalised hidden states (DART, Method.final_norm).
_SPLIT_FILES = {"final_norm": ("hidden_size",)}
FAMILIES = {
    "qwen2_5_vl": FamilyFields(
        model_ints=_LLM_INTS + ("merge_size",), model_numbers=("tokens_per_second",), model_files=_EMBEDDINGS,
        mrope=True, tokens=("video", "vision_start", "vision_end"),
        preprocess_ints=("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels"), since_schema=1,
        optional_model_files=_SPLIT_FILES),
    # 1-D RoPE; whole frames of image_size pixels, tokens_per_frame pooled tokens each, and the
    # image_newline embedding after a video's frames.
    "llava_onevision": FamilyFields(
        model_ints=_LLM_INTS + ("image_size", "patch_size", "tokens_per_frame"), model_numbers=(),
        model_files={**_EMBEDDINGS, "image_newline": ("hidden_size",)}, mrope=False, tokens=("video",),
        preprocess_ints=("image_size", "patch_size", "tokens_per_frame"), since_schema=2,
        optional_model_files=_SPLIT_FILES),
}


def model_family(data: dict, which: str) -> str:
    """Model ``which``'s family: its own ``family`` field, else the manifest's."""
    return data["models"][which].get("family", data["family"])


def schema_for(data: dict) -> int:
    """The schema version a manifest needs: 3 when a model has a family of its own, else 2."""
    own = any(model_family(data, which) != data["family"] for which in data["models"])
    return PER_MODEL_FAMILY_SCHEMA if own else 2


def model_files(data: dict, which: str) -> dict:
    """The per-model array entries of model ``which`` that its family declares -> their shapes:
    the required ones and the optional ones it has."""
    family, model = FAMILIES[model_family(data, which)], data["models"][which]
    return {**family.model_files, **{k: v for k, v in family.optional_model_files.items() if k in model}}


def model_file_names(data: dict) -> set[str]:
    """The per-model files (embeddings, image_newline, a model's own tokenizer, ...) that the models' families declare."""
    names = set()
    for which, m in data["models"].items():
        names.update(m[k]["file"] for k in model_files(data, which))
        if isinstance(m.get("tokenizer"), dict):
            names.add(m["tokenizer"]["file"])
    return names


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk for multi-GB graphs), copying across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def loadable(src: str, scratch: str) -> str:
    """``src`` (an ONNX file), or a copy of it and its external data in ``scratch`` when any of those
    files has several hard links: onnx refuses such data (a hardlink-attack guard), and derived
    folders hard-link the graphs they leave unchanged (:func:`link_or_copy`)."""
    folder, base = os.path.split(os.path.abspath(src))
    files = [base, *(f for f in os.listdir(folder) if f.startswith(base + "."))]
    if all(os.stat(os.path.join(folder, f)).st_nlink == 1 for f in files):
        return src
    for f in files:
        shutil.copyfile(os.path.join(folder, f), os.path.join(scratch, f))
    return os.path.join(scratch, base)


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    folder: str
    data: dict

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def graph(self, role: str) -> dict:
        return self.data["graphs"][role]

    def model(self, which: str) -> dict:
        return self.data["models"][which]

    @property
    def torch_only(self) -> bool:
        """Written by ``export.py --torch-only``: constants, tokenizer and embeddings, no ONNX graphs."""
        return bool(self.data.get("torch_only"))

    def require_onnx(self, what: str) -> None:
        if self.torch_only:
            raise ManifestError(f"{self.folder} was exported with --torch-only and holds no ONNX graphs for {what}: "
                                f"use the torch backend (infer.py --backend torch, benchmark.py --runtime-backend "
                                f"torch), or re-export without --torch-only")

    def onnx_path(self, role: str) -> str:
        """The ONNX file of graph ``role``; a clear error for a torch-only folder."""
        self.require_onnx(f"graph {role!r}")
        return self.path(self.graph(role)["file"])

    @property
    def has_assistant(self) -> bool:
        return "assistant" in self.data["models"] and "assistant_prior" in self.data["graphs"]

    @property
    def tokens(self) -> dict:
        return self.data["tokens"]

    def family_name(self, which: str = "primary") -> str:
        return model_family(self.data, which)

    def section(self, which: str, key: str) -> dict:
        """Model ``which``'s ``tokenizer``, ``tokens`` or ``preprocess`` section: its own (a model of
        another family than the manifest's), else the manifest's."""
        return self.data["models"][which].get(key) or self.data[key]

def write_derived_folder(manifest: Manifest, out: str, roles, convert, suffix: str, record: tuple[str, dict]) -> Manifest:
    """``out``: a copy of ``manifest``'s folder in which ``convert(role, src, dst)`` rewrites the
    graph of each of ``roles`` (quantization, half precision). The other files are hard-linked,
    engine records dropped (engines belong to the graphs they were built from), each rewritten
    graph's hashes updated and ``+suffix`` added to its source key, and ``record`` = (manifest key,
    value) added. Written under a temp name, validated, then renamed over ``out``."""
    import tempfile

    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-", dir=parent)
    try:
        data = json.loads(json.dumps(manifest.data))
        data.pop("engines", None)
        names = {data["tokenizer"]["file"], *model_file_names(data)}
        for role, entry in data["graphs"].items():
            if role not in roles:
                names.update(f for f in (entry["file"], entry.get("data_file")) if f)
        for name in names:
            link_or_copy(manifest.path(name), os.path.join(tmp, name))
        for role in roles:
            entry = data["graphs"][role]
            dst = os.path.join(tmp, entry["file"])
            convert(role, manifest.onnx_path(role), dst)
            entry["sha256"] = sha256_file(dst)
            entry.pop("data_file", None), entry.pop("data_sha256", None)
            if os.path.isfile(dst + ".data"):
                entry.update(data_file=entry["file"] + ".data", data_sha256=sha256_file(dst + ".data"))
            entry["source_key"] = f"{entry.get('source_key', '')}+{suffix}"
        data[record[0]] = record[1]
        with open(os.path.join(tmp, MANIFEST_NAME), "w") as f:
            json.dump(data, f, indent=1)
        load_manifest(tmp)  # the new folder must validate before it replaces anything
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_manifest(out)



def _check_file(folder: str, entry: dict, what: str, verify: bool, file_key: str = "file", hash_key: str = "sha256"):
    path = os.path.join(folder, entry[file_key])
    if not os.path.isfile(path):
        raise ManifestError(f"{what}: file {entry[file_key]!r} is missing from {folder}")
    try:
        digest = sha256_file(path) if verify else None
    except OSError as e:
        raise ManifestError(f"{what}: cannot read {entry[file_key]!r} ({e.strerror})") from None
    if verify and digest != entry[hash_key]:
        raise ManifestError(f"{what}: {entry[file_key]!r} does not match its sha256 in the manifest "
                            f"(modified or from another export); re-run scripts/export.py")


def load_manifest(folder: str, verify_hashes: bool = True) -> Manifest:
    """Read and validate ``folder/manifest.json``: schema, required fields and their types, files and
    their hashes. Anything malformed is one ``ManifestError`` naming the field."""
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ManifestError(f"{folder!r} is not an artifact folder: {MANIFEST_NAME} not found (run scripts/export.py)")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ManifestError(f"{path}: not valid JSON ({str(e)[:200]})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError(f"{path}: schema_version missing")
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {version} is newer than this runtime supports "
                            f"({SCHEMA_VERSION}); upgrade dytok-deploy")
    if version < OLDEST_SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {version} is older than {OLDEST_SCHEMA_VERSION}; re-export the model")
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ManifestError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    if "primary" not in data["models"]:
        raise ManifestError(f"{path}: models.primary missing")
    for where, name in [("family", data["family"])] + [(f"models.{w}.family", m["family"]) for w, m in
                                                        data["models"].items() if isinstance(m, dict) and "family" in m]:
        family = FAMILIES.get(name) if isinstance(name, str) else None
        if family is None:
            raise ManifestError(f"{path}: {where} {str(name)[:40]!r} is not one this runtime knows "
                                f"({', '.join(FAMILIES)}); upgrade dytok-deploy")
        if version < family.since_schema:
            raise ManifestError(f"{path}: family {name!r} needs schema version {family.since_schema}, "
                                f"the manifest says {version}")
        if name != data["family"] and version < PER_MODEL_FAMILY_SCHEMA:
            raise ManifestError(f"{path}: {where} {name!r} differs from the manifest's family, which needs schema "
                                f"version {PER_MODEL_FAMILY_SCHEMA}, the manifest says {version}")
    try:
        _check_fields(data)
    except _Malformed as e:
        raise ManifestError(f"{path}: {e}") from None
    for which, model in data["models"].items():
        for key in model_files(data, which):
            _check_file(folder, model[key], f"{which} {key.replace('_', ' ')}", verify_hashes)
        if "tokenizer" in model:
            _check_file(folder, model["tokenizer"], f"{which} tokenizer", verify_hashes)
    for role in ("primary_vision", "primary_llm"):
        if role not in data["graphs"]:
            raise ManifestError(f"{path}: graph {role!r} missing")
    for role, entry in data["graphs"].items():
        for key in ("inputs", "outputs") if data.get("torch_only") else ("file", "sha256", "inputs", "outputs"):
            if key not in entry:
                raise ManifestError(f"{path}: graph {role!r} lacks {key!r}")
        if data.get("torch_only"):
            continue  # I/O tables only: the torch backend runs the export modules
        _check_file(folder, entry, f"graph {role}", verify_hashes)
        if entry.get("data_file"):
            _check_file(folder, entry, f"graph {role} weights", verify_hashes, "data_file", "data_sha256")
    _check_file(folder, data["tokenizer"], "tokenizer", verify_hashes)
    return Manifest(folder, data)


class _Malformed(Exception):
    pass


def _require(value, ok: bool, where: str, what: str):
    if not ok:
        raise _Malformed(f"field {where} is {str(value)[:80]!r}, expected {what}")
    return value


def _int(value, where: str, low: int = 1) -> int:
    return _require(value, isinstance(value, int) and not isinstance(value, bool) and value >= low, where,
                    f"an integer >= {low}")


def _number(value, where: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e30
    return _require(value, ok, where, "a finite number")


def _file(entry, where: str) -> None:
    _require(entry, isinstance(entry, dict), where, "an object")
    for key in ("file", "sha256"):
        _require(entry.get(key), isinstance(entry.get(key), str), f"{where}.{key}", "a string")
    name = entry["file"]
    _require(name, name not in ("", ".", "..") and os.path.basename(name) == name and "\\" not in name and
             "\x00" not in name, f"{where}.file", "a file name inside the artifact folder")
    if entry.get("data_file") is not None:
        _file({"file": entry["data_file"], "sha256": entry.get("data_sha256")}, where + ".data")


def _check_sections(pre, tokens, tok, family: FamilyFields, where: str) -> None:
    """One family's ``preprocess``, ``tokens`` and ``tokenizer`` sections (``where``: their prefix)."""
    _require(pre, isinstance(pre, dict), f"{where}preprocess", "an object")
    _require(tokens, isinstance(tokens, dict), f"{where}tokens", "an object")
    _require(tok, isinstance(tok, dict), f"{where}tokenizer", "an object")
    for key in family.preprocess_ints:
        _int(pre.get(key), f"{where}preprocess.{key}")
    if "min_pixels" in family.preprocess_ints:
        _require(pre["min_pixels"], pre["min_pixels"] <= pre["max_pixels"], f"{where}preprocess.min_pixels",
                 "<= max_pixels")
    for key in ("image_mean", "image_std"):
        v = pre.get(key)
        _require(v, isinstance(v, list) and len(v) == 3, f"{where}preprocess.{key}", "3 numbers")
        for x in v:
            _number(x, f"{where}preprocess.{key}")
    _require(pre["image_std"], all(x != 0 for x in pre["image_std"]), f"{where}preprocess.image_std", "non-zero numbers")
    for key in family.tokens:
        _int(tokens.get(key), f"{where}tokens.{key}", 0)
    eos = tokens.get("eos")
    _require(eos, isinstance(eos, list), f"{where}tokens.eos", "a list")
    for t in eos:
        _int(t, f"{where}tokens.eos", 0)
    _file(tok, f"{where}tokenizer")
    _require(tok.get("chat_template"), isinstance(tok.get("chat_template"), str), f"{where}tokenizer.chat_template",
             "a string")


def _check_fields(data: dict) -> None:
    """Types and ranges of every field the runtime reads, and their cross-checks (raises _Malformed)."""
    _check_sections(data["preprocess"], data["tokens"], data["tokenizer"], FAMILIES[data["family"]], "")
    for which, model in data["models"].items():
        where = f"models.{which}"
        _require(model, isinstance(model, dict), where, "an object")
        family = FAMILIES[model_family(data, which)]
        own = [k for k in MODEL_SECTIONS if k in model]
        if model_family(data, which) != data["family"] or own:
            missing = [k for k in MODEL_SECTIONS if k not in model]
            if missing:
                raise _Malformed(f"{where} ({model_family(data, which)} in a {data['family']} folder) lacks its own "
                                 f"{missing}: a model of another family, or with any of {list(MODEL_SECTIONS)}, "
                                 f"carries all three")
            _check_sections(model["preprocess"], model["tokens"], model["tokenizer"], family, f"{where}.")
        required = (*family.model_ints, *family.model_numbers, *(("mrope_section",) if family.mrope else ()),
                    *family.model_files)
        missing = [k for k in required if k not in model]
        if missing:
            raise _Malformed(f"{where} lacks {missing}")
        for key in family.model_ints:
            _int(model[key], f"{where}.{key}")
        for key in ("patch_size", "temporal_patch_size", "window_size", "vision_key_dim", "vision_hidden_size",
                    "vision_intermediate_size", "vision_depth", "intermediate_size"):
            if key in model:
                _int(model[key], f"{where}.{key}")
        for key in family.model_numbers:
            _number(model[key], f"{where}.{key}")
        if family.mrope:
            section = model["mrope_section"]
            _require(section, isinstance(section, list) and all(isinstance(x, int) and x > 0 for x in section)
                     and sum(section) * 2 == model["head_dim"], f"{where}.mrope_section",
                     "positive ints summing to head_dim/2")
        _require(model["num_heads"], model["num_heads"] % model["num_kv_heads"] == 0, f"{where}.num_heads",
                 "a multiple of num_kv_heads")
        layers = model.get("prior_layers")
        if layers is not None:
            _require(layers, isinstance(layers, list) and len(layers) > 0 and all(
                isinstance(x, int) and 0 <= x < model["num_layers"] for x in layers), f"{where}.prior_layers",
                "layer indices below num_layers")
        for key, dims in model_files(data, which).items():
            entry = model[key]
            _file(entry, f"{where}.{key}")
            want = [model[d] for d in dims]
            _require(entry.get("shape"), entry.get("shape") == want, f"{where}.{key}.shape",
                     f"[{', '.join(dims)}] = {want}")
        if "final_norm" in model:
            eps = _number(model["final_norm"].get("eps"), f"{where}.final_norm.eps")
            _require(eps, eps > 0, f"{where}.final_norm.eps", "a positive number")
    for role, entry in data["graphs"].items():
        where = f"graphs.{role}"
        _require(entry, isinstance(entry, dict), where, "an object")
        if not data.get("torch_only"):
            _file(entry, where)
        for key in ("inputs", "outputs"):
            table = entry.get(key)
            _require(table, isinstance(table, list) and all(
                isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("shape"), list)
                for t in table), f"{where}.{key}", "a list of {name, shape} objects")
