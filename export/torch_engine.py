"""PyTorch eager backend behind the runtime's Engine interface: the same pipeline and compression
on the export modules, for parity tests, the comparison against compiled engines, and GPUs
where PyTorch has CUDA. Attention runs through SDPA by default (``attention="sdpa"``; "plain"
keeps the exported explicit-softmax formulation, for comparisons), and the primary LLM engine
offers ``open_step`` (a preallocated KV cache, decode captured in a CUDA graph on CUDA:
``export/torch_step.py``)."""
from __future__ import annotations

import numpy as np
import torch

from runtime.engines.base import Engine
from runtime.manifest import Manifest
from runtime.pipeline import Pipeline

from .families import FAMILIES
from .graphs.llm import KeyframePrior, LanguageModel, LanguageModelSegment
from .presets import get_preset
from .tokenizer import special_ids
from .torch_step import LLMStep, StepPool, to_host
from .weights import load_model

ATTENTION = ("sdpa", "plain")


class TorchEngine(Engine):
    """One export module run eagerly. Floating inputs are cast to the weights' dtype; outputs named in
    ``keep_on_device`` come back as torch tensors and are used in place when fed back (the LLM's
    KV cache stays on the GPU between decode steps, as with the TensorRT backend)."""

    def __init__(self, module: torch.nn.Module, inputs: list[str], outputs: list[str], device: str = "cpu",
                 keep_on_device: tuple[str, ...] = ()):
        # No dtype cast here: it would also round the fp32 RoPE frequency buffers to bf16.
        self.module = module.to(device).eval()
        self.device, self.dtype = torch.device(device), next(module.parameters()).dtype
        self._inputs, self._outputs = inputs, outputs
        self.keep_on_device = set(keep_on_device)
        self.name = f"torch[{device}, {str(self.dtype).removeprefix('torch.')}]"

    def _tensor(self, value) -> torch.Tensor:
        t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        return t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)

    @torch.no_grad()
    def _run(self, feeds: dict) -> dict:
        out = self.module(*[self._tensor(feeds[n]) for n in self._inputs])
        out = out if isinstance(out, tuple) else (out,)
        return {n: o if n in self.keep_on_device else self.host(o) for n, o in zip(self._outputs, out)}

    def host(self, value) -> np.ndarray:
        """Floating outputs come back as fp32 (NumPy has no bfloat16)."""
        return to_host(value)


class TorchLLMEngine(TorchEngine):
    """The primary LLM (``LanguageModel`` with "sdpa" attention): ``run`` as every engine, plus
    ``open_step(max_len)``, prefill and decode on a preallocated cache. ``split_layer``: the folder's
    split at layer K, for the steps' ``prefill_split`` (a method that prunes inside the LLM)."""

    def __init__(self, module: LanguageModel, inputs: list[str], outputs: list[str], device: str = "cpu",
                 keep_on_device: tuple[str, ...] = (), split_layer: int | None = None):
        super().__init__(module, inputs, outputs, device, keep_on_device)
        self.split_layer = split_layer
        self._steps = StepPool(self.module, self.device, self.dtype, split=split_layer)

    def open_step(self, max_len: int) -> LLMStep:
        """``step.prefill(embeds [S, D], positions [3, S], chunk) -> logits [V]``, then
        ``step.decode(embed [D], position) -> logits [V]`` per token; ``max_len`` = prompt + new tokens."""
        return self._steps.open(max_len)


def load_models(manifest: Manifest, device: str = "cpu", dtype: torch.dtype | None = None,
                attn_implementation: str = "eager") -> dict:
    """The transformers models an artifact folder was exported from (same seed or checkpoint), in
    ``dtype`` (default: the folder's ``torch_dtype``, fp32 for ONNX exports)."""
    from tokenizers import Tokenizer

    seed = manifest.data.get("seed", 0)
    ckpts = manifest.data.get("checkpoints", {})
    dtype = dtype or getattr(torch, manifest.data.get("torch_dtype", "float32"))
    draw = manifest.data.get("weights_device", "cpu")  # random weights: the device type the folder drew them on
    draw = device if torch.device(draw).type == torch.device(device).type else draw

    def load(key: str, which: str):  # each model with its own family's tokenizer and special tokens
        tok = Tokenizer.from_file(manifest.path(manifest.section(which, "tokenizer")["file"]))
        ids = special_ids(tok, FAMILIES[manifest.family_name(which)].special_tokens)
        return load_model(get_preset(manifest.data[key]), tok, ids, ckpts.get(which), seed, draw, dtype,
                          attn_implementation).to(device)

    models = {"primary": load("preset", "primary")}
    if manifest.has_assistant:
        models["assistant"] = load("assistant_preset", "assistant")
    return models


def torch_engines(manifest: Manifest, models: dict | None = None, device: str = "cpu",
                  dtype: torch.dtype | None = None, attention: str = "sdpa", static_decode: bool = True) -> dict[str, Engine]:
    """Engines for every graph role of ``manifest``. ``attention``: "sdpa" (fast) or "plain" (the
    exported formulation); ``static_decode`` (sdpa only): give the primary LLM engine ``open_step``."""
    if attention not in ATTENTION:
        raise ValueError(f"torch engine attention {attention!r}: expected one of {ATTENTION}")
    models = models or load_models(manifest, device, dtype)
    io = lambda role: ([t["name"] for t in manifest.graph(role)["inputs"]], [t["name"] for t in manifest.graph(role)["outputs"]])  # noqa: E731
    llm_inputs, llm_outputs = io("primary_llm")
    vision = lambda which: FAMILIES[manifest.family_name(which)].vision_module(models[which], attention)  # noqa: E731
    split = manifest.data["graphs"].get("primary_llm_lo", {}).get("split_layer")
    presents = tuple(n for n in llm_outputs if n.startswith("present"))
    llm = LanguageModel(models["primary"], attention)
    engines = {"primary_vision": TorchEngine(vision("primary"), *io("primary_vision"), device),
               "primary_llm": (TorchLLMEngine(llm, llm_inputs, llm_outputs, device, presents, split)
                               if attention == "sdpa" and static_decode else
                               TorchEngine(llm, llm_inputs, llm_outputs, device, presents))}
    if split is not None:  # the LLM split at layer K (FastV, DyCoke's KV step): runtime/llm_split.py
        depth = manifest.model("primary")["num_layers"]
        for role, (a, b) in (("primary_llm_lo", (0, split)), ("primary_llm_hi", (split, depth))):
            inputs, outputs = io(role)
            engines[role] = TorchEngine(LanguageModelSegment(models["primary"], a, b, attention), inputs, outputs, device,
                                        keep_on_device=tuple(n for n in outputs if n.startswith("present")))
    if "assistant" in models:
        layers = manifest.model("assistant")["prior_layers"]
        engines["assistant_vision"] = TorchEngine(vision("assistant"), *io("assistant_vision"), device)
        p_inputs, p_outputs = io("assistant_prior")  # its chunked-prefill cache stays on the device too
        engines["assistant_prior"] = TorchEngine(KeyframePrior(models["assistant"], layers, attention), p_inputs, p_outputs,
                                                 device, keep_on_device=tuple(n for n in p_outputs if n.startswith("present")))
    return engines


def torch_pipeline(manifest: Manifest, models: dict | None = None, device: str = "cpu",
                   dtype: torch.dtype | None = None, attention: str = "sdpa", static_decode: bool = True) -> Pipeline:
    """A pipeline on PyTorch engines; on a GPU, Qwen2.5-VL preprocessing runs there too (bit-identical
    to the NumPy reference, ``torch_preprocess``), and its patches stay on the device."""
    pipe = Pipeline(manifest, torch_engines(manifest, models, device, dtype, attention, static_decode))
    if torch.device(device).type == "cuda":
        from runtime.families.qwen2_5_vl import FAMILY as QWEN

        from .torch_preprocess import TorchPreprocess
        pipe.device_preprocess[QWEN.name] = TorchPreprocess(device)
    return pipe
