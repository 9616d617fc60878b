"""The artifact manifest: the only contract between export and runtime. Versioned, validated on load."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass

from .errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
GRAPH_ROLES = ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior")
_REQUIRED = {
    "schema_version": int, "family": str, "preset": str, "versions": dict, "tokenizer": dict, "tokens": dict,
    "preprocess": dict, "models": dict, "graphs": dict,
}
_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "context_length",
               "mrope_section", "tokens_per_second", "merge_size", "embeddings")


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk for multi-GB graphs), copying across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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


def _check_file(folder: str, entry: dict, what: str, verify: bool, file_key: str = "file", hash_key: str = "sha256"):
    path = os.path.join(folder, entry[file_key])
    if not os.path.isfile(path):
        raise ManifestError(f"{what}: file {entry[file_key]!r} is missing from {folder}")
    if verify and sha256_file(path) != entry[hash_key]:
        raise ManifestError(f"{what}: {entry[file_key]!r} does not match its sha256 in the manifest "
                            f"(modified or from another export); re-run scripts/export.py")


def load_manifest(folder: str, verify_hashes: bool = True) -> Manifest:
    """Read and validate ``folder/manifest.json``: schema, required fields, files and their hashes."""
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ManifestError(f"{folder!r} is not an artifact folder: {MANIFEST_NAME} not found (run scripts/export.py)")
    try:
        data = json.load(open(path))
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise ManifestError(f"{path}: schema_version missing")
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {version} is newer than this runtime supports "
                            f"({SCHEMA_VERSION}); upgrade dytok-deploy")
    if version < SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {version} is older than {SCHEMA_VERSION}; re-export the model")
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ManifestError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    if "primary" not in data["models"]:
        raise ManifestError(f"{path}: models.primary missing")
    for which, model in data["models"].items():
        missing = [k for k in _MODEL_KEYS if k not in model]
        if missing:
            raise ManifestError(f"{path}: models.{which} lacks {missing}")
        _check_file(folder, model["embeddings"], f"{which} embeddings", verify_hashes)
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
