"""The released checkpoints' dimensions, declared once: export builds real-size random presets from
them, and the memory plan and the benchmark's projections read them."""

# Public config.json figures of the released checkpoints.
QWEN25_VL_VIT = dict(vision_hidden_size=1280, vision_intermediate_size=3420, vision_depth=32, vision_heads=16,
                     fullatt_block_indexes=[7, 15, 23, 31], patch_size=14, temporal_patch_size=2, merge_size=2,
                     window_size=112, max_pixels=768 * 28 * 28, min_pixels=128 * 28 * 28)
REAL_MODELS = {
    "qwen2.5-vl-3b": dict(QWEN25_VL_VIT, hidden_size=2048, num_layers=36, num_heads=16, num_kv_heads=2, head_dim=128,
                          intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True, context_length=128000),
    "qwen2.5-vl-7b": dict(QWEN25_VL_VIT, hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                          intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, context_length=128000),
    "qwen2.5-vl-32b": dict(QWEN25_VL_VIT, hidden_size=5120, num_layers=64, num_heads=40, num_kv_heads=8, head_dim=128,
                           intermediate_size=27648, vocab_size=152064, tie_word_embeddings=False, context_length=128000),
    "qwen2.5-vl-72b": dict(QWEN25_VL_VIT, hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8, head_dim=128,
                           intermediate_size=29568, vocab_size=152064, tie_word_embeddings=False, context_length=128000),
}
