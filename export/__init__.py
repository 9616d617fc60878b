"""Export Qwen2.5-VL to ONNX graphs and a manifest (needs torch and transformers)."""
