"""The split LLM (runtime/llm_split.py) under the one decode loop (runtime/decode.py) on scripted
engines: DyCoke's KV step masks the upper segment's keys exactly as spec §4.3's verification vector
says, keeps all rows when the attention is stable, FastV feeds the upper segment the kept rows at
their original ids, and streamed text keeps multi-byte characters whole."""
import numpy as np

from runtime.compression import Request, get_method
from runtime.decode import generate
from runtime.llm_split import SplitStep
from runtime.options import Options

N, S, V = 10, 2, 6
# spec §4.5: first step (no previous attention) prunes; then rho = 0.4353 prunes {1, 3, 4};
# then rho = 0.9985 >= 0.9: no pruning
BETAS = [[0.30, 0.05, 0.20, 0.02, 0.10, 0.15], [0.05, 0.30, 0.10, 0.20, 0.15, 0.02], [0.05, 0.29, 0.11, 0.21, 0.14, 0.03]]


class Lo:
    def __init__(self, prefill_attention):
        self.calls, self.prefill_attention = [], prefill_attention

    def run(self, feeds):
        self.calls.append(feeds)
        total = feeds["attention_mask"].shape[1]
        att = np.zeros(total, np.float32)
        if len(self.calls) == 1:
            att[:] = self.prefill_attention
        elif len(self.calls) - 2 < len(BETAS):
            att[S:S + V] = BETAS[len(self.calls) - 2]
        seq = feeds["inputs_embeds"].shape[1]
        return {"hidden_states": np.arange(seq, dtype=np.float32).reshape(1, seq, 1) * np.ones((1, 1, 4), np.float32),
                "attention": att, "present_key_0": np.zeros((1, 1, total, 2), np.float32),
                "present_value_0": np.zeros((1, 1, total, 2), np.float32)}


class Hi:
    def __init__(self):
        self.calls = []

    def run(self, feeds):
        self.calls.append(feeds)
        total = feeds["attention_mask"].shape[1]
        return {"logits": np.eye(8, dtype=np.float32)[[3]], "present_key_1": np.zeros((1, 1, total, 2), np.float32),
                "present_value_1": np.zeros((1, 1, total, 2), np.float32)}


def fastv(budgets: np.ndarray, prior: bool):
    """FastV's in-LLM selection over the 3 groups of 2 visual tokens (DyToK budgets with the prior)."""
    request = Request((3, 1, 2), budgets, 0.5, None, prior)
    return lambda lo: get_method("fastv").in_llm(lo, request, S)


def split_step(prefill_attention=0.0, **kw) -> SplitStep:
    return SplitStep(Lo(prefill_attention), Hi(), 1, 2, 1, 2, S, V, **kw)


def run(step, steps, **kw):
    embeds = np.zeros((N, 4), np.float32)
    positions = np.tile(np.arange(N), (3, 1))
    timings = {}
    tokens = generate(step, embeds, positions, N, Options(max_new_tokens=steps), lambda t: np.zeros(4, np.float32),
                      eos_ids=(), timings=timings, **kw)
    return tokens, timings


def test_dycoke_kv_masks_follow_the_spec_vector():
    split = split_step(dycoke_kv=True, kv_prune_ratio=0.5)
    tokens, timings = run(split, 4)  # prefill + 3 decode steps
    assert tokens == [3, 3, 3, 3]
    masks = [c["attention_mask"][0] for c in split.hi.calls]
    assert masks[0].tolist() == [1] * N  # prefill: no KV pruning
    tail = lambda total: list(range(S + V, total))  # noqa: E731
    assert np.flatnonzero(masks[1]).tolist() == [0, 1] + [2 + i for i in (0, 2, 5)] + tail(N + 1)
    assert np.flatnonzero(masks[2]).tolist() == [0, 1, 3, 5, 6] + tail(N + 2)
    assert masks[3].tolist() == [1] * (N + 3)  # stable attention: all rows
    assert split.pruned_steps == 2 and timings["decode_tokens"] == 3
    assert [c["attention_mask"].shape[1] for c in split.lo.calls] == [N, N + 1, N + 2, N + 3]


def test_fastv_feeds_the_kept_rows_at_their_original_ids_and_keeps_two_kv_lengths():
    """spec §3.5: attention over the visual span [0.05, 0.20, 0.01, 0.15, 0.02, 0.07], k = 3 ->
    keep [0, 1, 3, 5, 7, 8, 9]; the first generated token goes in at position 10; layers < K then
    hold 11 keys and layers >= K hold 8."""
    att = np.zeros(N, np.float32)
    att[S:S + V] = [0.05, 0.20, 0.01, 0.15, 0.02, 0.07]
    split = split_step(att, select=fastv(np.array([1, 1, 1]), prior=False))
    run(split, 2)
    keep = [0, 1, 3, 5, 7, 8, 9]
    hi = split.hi.calls
    assert hi[0]["position_ids"][0, 0].tolist() == keep
    assert hi[0]["hidden_states"][0, :, 0].tolist() == keep  # the lower segment's rows at those indices
    assert split.kept_visual.tolist() == [1, 3, 5]
    assert hi[1]["position_ids"].ravel().tolist() == [10, 10, 10]
    assert split.lo.calls[1]["attention_mask"].shape[1] == 11 and hi[1]["attention_mask"].shape[1] == 8
    per_group = split_step(att, select=fastv(np.array([1, 0, 2]), prior=True))  # groups of 2: top-1, none, top-2
    run(per_group, 1)
    assert per_group.kept_visual.tolist() == [1, 4, 5]


def test_split_path_streams_multibyte_characters_whole(tmp_path):
    """"é" is two byte-level tokens; streamed one token at a time it must not come out as two
    replacement characters, on the split LLM as on the one-graph LLM (one decode loop)."""
    from export.tokenizer import QWEN_VL_CHAT_TEMPLATE, build_tiny_tokenizer, special_ids
    from runtime.prompt import PromptBuilder, StreamDecoder

    tok = build_tiny_tokenizer()
    tok.save(str(tmp_path / "tokenizer.json"))
    ids = special_ids(tok)
    prompt = PromptBuilder(str(tmp_path / "tokenizer.json"), QWEN_VL_CHAT_TEMPLATE,
                           {"video": ids["<|video_pad|>"], "eos": [ids["<|im_end|>"]]})
    text = "café"
    want = tok.encode(text, add_special_tokens=False).ids
    assert prompt.decode(want[:-1]).endswith("\ufffd")  # "é" is split across two tokens

    class Scripted(Hi):
        def run(self, feeds):
            out = super().run(feeds)
            out["logits"] = np.eye(tok.get_vocab_size(), dtype=np.float32)[[want[len(self.calls) - 1]]]
            return out

    step = SplitStep(Lo(0.0), Scripted(), 1, 2, 1, 2, S, V)
    pieces = []
    tokens, _ = run(step, len(want), stream=StreamDecoder(prompt), on_token=pieces.append)
    assert tokens == want and "".join(pieces) == text and "\ufffd" not in "".join(pieces)
