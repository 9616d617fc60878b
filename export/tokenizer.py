"""Tokenizer and chat template for the artifact folder.

Real checkpoints bring their own ``tokenizer.json`` and chat template. Random presets get a
small byte-level BPE trained on an embedded text at export time (deterministic), with their
family's special tokens (Qwen2.5-VL's, or LLaVA-OneVision's), and a chat template with that
family's structure.
"""
from __future__ import annotations

import json
import os
import re

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

# Qwen2-VL's template structure, rendered as transformers does (trim_blocks, lstrip_blocks).
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-OneVision (Qwen2 tokenizer + <image>, <video>): the llava-hf checkpoints' template
# (transformers' convert_llava_onevision_weights_to_hf.py) without its {% generation %} tags (a
# transformers-only jinja extension marking assistant text for training; it renders nothing):
# images, then videos, each on its own line, then the text. One <video> placeholder per video,
# expanded to frames * 196 + 1 tokens (the +1: the image_newline embedding) by the prompt builder.
LLAVA_OV_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
LLAVA_OV_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """
What is happening in this video? Describe the video in detail. A white ball moves from the left
side of the frame to the right. A red square appears and disappears every half second. The
background is a smooth gradient of colours. How many objects are there? Which frame shows the
square? The camera does not move. Answer the question about the video briefly and clearly.
The quick brown fox jumps over the lazy dog. People walk in the park; a car drives past a tree.
""" * 4


def needle_corpus() -> str:
    """The random presets' corpus extended with the needle tasks' questions and answers, each answer
    word on lines of its own so that it becomes one token (``synthetic.needle``)."""
    from synthetic.needle import ANSWER_WORDS, FAMILIES

    questions = "\n".join(f.question for f in FAMILIES.values())
    answers = "\n".join(("\n".join([w] * 40)) for w in ANSWER_WORDS)
    return _CORPUS + (questions + "\n") * 4 + answers + "\n"


def build_tiny_tokenizer(vocab_size: int = 384, corpus: str | None = None, special_tokens=None):
    """Deterministic byte-level BPE with ``special_tokens`` first (default Qwen2.5-VL's, ids 0..6),
    trained on ``corpus`` (default: the random presets' embedded text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens or SPECIAL_TOKENS),
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus or _CORPUS], trainer=trainer)
    return tok


def special_ids(tokenizer, tokens=None) -> dict[str, int]:
    """Ids of ``tokens`` (default: Qwen2.5-VL's special tokens) in ``tokenizer``."""
    ids = {t: tokenizer.token_to_id(t) for t in (tokens or SPECIAL_TOKENS)}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    return ids


def checkpoint_chat_template(checkpoint: str, default: str = QWEN_VL_CHAT_TEMPLATE) -> str:
    """The chat template a checkpoint folder ships (chat_template.json, .jinja or tokenizer_config.json),
    else ``default``."""
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = os.path.join(checkpoint, name)
        if os.path.exists(path):
            template = json.load(open(path)).get("chat_template")
            if template:
                return template
    path = os.path.join(checkpoint, "chat_template.jinja")
    if os.path.exists(path):
        return open(path).read()
    return default


def strip_generation_tags(template: str) -> str:
    """``template`` without transformers' ``{% generation %}`` / ``{% endgeneration %}`` tags (they
    only mark assistant text for training masks and render nothing; plain jinja2 cannot parse them)."""
    return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template)
