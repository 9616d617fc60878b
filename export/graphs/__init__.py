"""One export-friendly ``nn.Module`` per graph, reusing a transformers Qwen2.5-VL model's weights."""
