"""PyTorch eager backend behind the runtime's Engine interface: the same pipeline and compression
on the export modules, for parity tests and the comparison against compiled engines."""
from __future__ import annotations

import numpy as np
import torch

from runtime.engines.base import Engine
from runtime.manifest import Manifest
from runtime.pipeline import Pipeline

from .graphs.llm import KeyframePrior, LanguageModel
from .graphs.vision import VisionEncoder
from .presets import get_preset
from .tokenizer import special_ids
from .weights import load_model


class TorchEngine(Engine):
    def __init__(self, module: torch.nn.Module, inputs: list[str], outputs: list[str], device: str = "cpu"):
        self.module = module.to(device).eval()
        self.device = device
        self._inputs, self._outputs = inputs, outputs
        self.name = f"torch[{device}]"

    @torch.no_grad()
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.module(*[torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self._inputs])
        out = out if isinstance(out, tuple) else (out,)
        return {n: o.detach().float().cpu().numpy() for n, o in zip(self._outputs, out)}


def load_models(manifest: Manifest) -> dict:
    """The transformers models an artifact folder was exported from (same seed or checkpoint)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(manifest.path(manifest.data["tokenizer"]["file"]))
    ids = special_ids(tok)
    seed = manifest.data.get("seed", 0)
    ckpts = manifest.data.get("checkpoints", {})
    models = {"primary": load_model(get_preset(manifest.data["preset"]), tok, ids, ckpts.get("primary"), seed)}
    if manifest.has_assistant:
        models["assistant"] = load_model(get_preset(manifest.data["assistant_preset"]), tok, ids, ckpts.get("assistant"), seed)
    return models


def torch_engines(manifest: Manifest, models: dict | None = None, device: str = "cpu") -> dict[str, Engine]:
    models = models or load_models(manifest)
    io = lambda role: ([t["name"] for t in manifest.graph(role)["inputs"]], [t["name"] for t in manifest.graph(role)["outputs"]])  # noqa: E731
    engines = {"primary_vision": TorchEngine(VisionEncoder(models["primary"].model.visual), *io("primary_vision"), device),
               "primary_llm": TorchEngine(LanguageModel(models["primary"]), *io("primary_llm"), device)}
    if "assistant" in models:
        layers = manifest.model("assistant")["prior_layers"]
        engines["assistant_vision"] = TorchEngine(VisionEncoder(models["assistant"].model.visual), *io("assistant_vision"), device)
        engines["assistant_prior"] = TorchEngine(KeyframePrior(models["assistant"], layers), *io("assistant_prior"), device)
    return engines


def torch_pipeline(manifest: Manifest, models: dict | None = None, device: str = "cpu") -> Pipeline:
    return Pipeline(manifest, torch_engines(manifest, models, device))
