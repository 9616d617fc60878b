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

# LLaVA-OneVision, the DyToK paper's own setting (7B primary, 0.5B assistant): the transformers-format
# checkpoints llava-hf/llava-onevision-qwen2-{7b,0.5b}-ov-hf, as transformers'
# convert_llava_onevision_weights_to_hf.py builds them. Vision: google/siglip-so400m-patch14-384 with
# the last of its 27 layers dropped (26 layers, vision_feature_layer -1, i.e. the original penultimate
# layer, no head), 384-pixel frames, 27 x 27 patches pooled to 14 x 14 = 196 tokens per frame; projector
# linear-GELU-linear. Text: Qwen2-7B-Instruct / Qwen2-0.5B-Instruct with the vocabulary grown by
# <image>, <video> and padded to a multiple of 64 (152064 + 2 -> 152128; 151936 + 2 -> 152000).
LLAVA_OV_SIGLIP = dict(vision_hidden_size=1152, vision_intermediate_size=4304, vision_depth=26, vision_heads=16,
                       patch_size=14, image_size=384, pooled_grid=14, tokens_per_frame=196)
LLAVA_OV_MODELS = {
    "llava-onevision-qwen2-7b": dict(LLAVA_OV_SIGLIP, family="llava_onevision", hidden_size=3584, num_layers=28,
                                     num_heads=28, num_kv_heads=4, head_dim=128, intermediate_size=18944,
                                     vocab_size=152128, tie_word_embeddings=False, context_length=32768),
    "llava-onevision-qwen2-0.5b": dict(LLAVA_OV_SIGLIP, family="llava_onevision", hidden_size=896, num_layers=24,
                                       num_heads=14, num_kv_heads=2, head_dim=64, intermediate_size=4864,
                                       vocab_size=152000, tie_word_embeddings=True, context_length=32768),
}
REAL_MODELS.update(LLAVA_OV_MODELS)
