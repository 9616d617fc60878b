"""DyToK-Deploy runtime: torch-free video LLM inference with dynamic visual-token compression.

Depends only on numpy, opencv, tokenizers, onnxruntime (and TensorRT when installed).
"""
from .errors import (BudgetError, DyTokError, EngineError, ManifestError, PreprocessError, PromptError,
                     ShapeError, VideoError)

__all__ = ["DyTokError", "VideoError", "PreprocessError", "BudgetError", "ShapeError", "ManifestError",
           "EngineError", "PromptError"]
