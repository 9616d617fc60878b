"""Prompt building without transformers: the manifest's chat template (jinja2, sandboxed), the
tokenizer.json (tokenizers), and the expansion of the video placeholder to its token count."""
from __future__ import annotations

import numpy as np

from .errors import PromptError


class PromptBuilder:
    def __init__(self, tokenizer_path: str, chat_template: str, tokens: dict):
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(chat_template)
        self.video_id = tokens["video"]
        self.eos_ids = set(tokens["eos"])

    def render(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return self.template.render(messages=messages, add_generation_prompt=True)

    def input_ids(self, question: str, video_tokens: int) -> tuple[np.ndarray, int]:
        """Token ids with the video placeholder expanded to ``video_tokens`` ids -> (ids [L], span start)."""
        ids = self.tokenizer.encode(self.render(question), add_special_tokens=False).ids
        where = [i for i, t in enumerate(ids) if t == self.video_id]
        if len(where) != 1:
            raise PromptError(f"chat template produced {len(where)} video placeholders, expected 1")
        s = where[0]
        return np.array(ids[:s] + [self.video_id] * video_tokens + ids[s + 1:], np.int64), s

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class StreamDecoder:
    """Token ids -> one text piece per token; the pieces add up to ``decode(all ids)``.

    Decoding one token at a time breaks characters split across byte-level tokens (each half
    decodes to U+FFFD); this re-decodes the prefix and holds back a trailing U+FFFD until a later
    token completes it, or the last token (``final``) flushes it.
    """

    def __init__(self, builder: PromptBuilder):
        self.builder, self.ids, self.text = builder, [], ""

    def push(self, token: int, final: bool = False) -> str:
        self.ids.append(token)
        text = self.builder.decode(self.ids)
        if text.endswith("\ufffd") and not final:
            return ""
        piece, self.text = text[len(self.text):], text
        return piece
