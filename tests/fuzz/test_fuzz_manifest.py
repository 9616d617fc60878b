"""Fuzz the manifest loader: a valid synthetic folder whose manifest.json gets fields deleted or
replaced by arbitrary JSON, or its bytes flipped, loads or fails with one ManifestError, never
another exception. What loads has the types the runtime reads.

Bounded: 1500 examples per test (~5-15 s each on 2 cores). FUZZ_EXAMPLES raises it."""
import copy
import hashlib
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import ManifestError
from runtime.manifest import SCHEMA_VERSION, load_manifest
from runtime.preprocess import PreprocessConfig

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
FILES = ["tokenizer.json", "primary_embeddings.npy", "primary_vision.onnx", "primary_llm.onnx", "primary_llm.onnx.data"]


def _model(layers):
    return {"hidden_size": 64, "num_layers": layers, "num_heads": 4, "num_kv_heads": 2, "head_dim": 16, "vocab_size": 384,
            "context_length": 4096, "mrope_section": [2, 3, 3], "tokens_per_second": 2, "merge_size": 2, "patch_size": 14,
            "temporal_patch_size": 2, "window_size": 112, "vision_key_dim": 16, "intermediate_size": 128,
            "vision_hidden_size": 64, "vision_intermediate_size": 128, "vision_depth": 4,
            "embeddings": {"file": "primary_embeddings.npy", "sha256": None, "shape": [384, 64], "dtype": "float32"}}


def base_manifest(hashes):
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["n", 4]}], "outputs": [{"name": "y", "dtype": "float32",
                                                                                          "shape": ["n"]}]}
    data = {"schema_version": SCHEMA_VERSION, "family": "qwen2_5_vl", "preset": "tiny", "versions": {},
            "tokenizer": {"file": "tokenizer.json", "sha256": hashes["tokenizer.json"], "chat_template": "{{ x }}"},
            "tokens": {"video": 6, "image": 5, "vision_start": 3, "vision_end": 4, "eos": [2, 0], "pad": 0},
            "preprocess": {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 100352,
                           "max_pixels": 602112, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.3, 0.3, 0.3]},
            "models": {"primary": _model(4)},
            "graphs": {"primary_vision": {"file": "primary_vision.onnx", "sha256": hashes["primary_vision.onnx"], **io},
                       "primary_llm": {"file": "primary_llm.onnx", "sha256": hashes["primary_llm.onnx"],
                                       "data_file": "primary_llm.onnx.data", "data_sha256": hashes["primary_llm.onnx.data"],
                                       **io}}}
    data["models"]["primary"]["embeddings"]["sha256"] = hashes["primary_embeddings.npy"]
    return data


def make_folder(root):
    os.makedirs(root, exist_ok=True)
    hashes = {}
    for name in FILES:
        content = name.encode() * 3
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
        hashes[name] = hashlib.sha256(content).hexdigest()
    return base_manifest(hashes)


def paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from paths(v, prefix + (i,))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats() | st.text(max_size=12),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6)
PICKS = st.lists(st.tuples(st.integers(0, 10 ** 6), st.booleans(), JSON), min_size=1, max_size=4)


def mutate(data, picks):
    data = copy.deepcopy(data)
    for index, delete, value in picks:
        where = list(paths(data))[1:]
        if not where:
            return value
        path = where[index % len(where)]
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return data


def loads_or_clear_error(folder):
    try:
        m = load_manifest(folder)
    except ManifestError as e:
        assert "\n" not in str(e)[:2000].strip() or "JSON" in str(e)
        return
    # what loads is typed as the runtime reads it
    PreprocessConfig.from_manifest(m.data["preprocess"])
    p = m.model("primary")
    assert all(isinstance(p[k], int) and p[k] > 0 for k in ("hidden_size", "num_layers", "context_length", "head_dim"))
    for entry in m.data["graphs"].values():
        assert os.path.dirname(os.path.abspath(m.path(entry["file"]))) == os.path.abspath(m.folder)


def test_the_base_folder_loads(tmp_path):
    data = make_folder(str(tmp_path))
    json.dump(data, open(tmp_path / "manifest.json", "w"))
    assert load_manifest(str(tmp_path)).model("primary")["hidden_size"] == 64


def test_mutated_fields(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fuzz"))
    base = make_folder(root)

    @SETTINGS
    @given(picks=PICKS)
    def run(picks):
        with open(os.path.join(root, "manifest.json"), "w") as f:
            json.dump(mutate(base, picks), f)
        loads_or_clear_error(root)

    run()


def test_mutated_bytes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fuzz"))
    raw = json.dumps(make_folder(root)).encode()

    @SETTINGS
    @given(flips=st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=6),
           cut=st.integers(0, len(raw)))
    def run(flips, cut):
        data = bytearray(raw)
        for pos, byte in flips:
            data[pos] = byte
        with open(os.path.join(root, "manifest.json"), "wb") as f:
            f.write(bytes(data[:cut]))
        loads_or_clear_error(root)

    run()
