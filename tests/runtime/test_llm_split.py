"""The split-LLM decode loop (runtime/llm_split.py) on scripted engines: DyCoke's KV step masks the
upper segment's keys exactly as spec §4.3's verification vector says, keeps all rows when the
attention is stable, and FastV feeds the upper segment the kept rows at their original ids."""
from types import SimpleNamespace

import numpy as np

from runtime.llm_split import HI, LO, SplitRun
from runtime.pipeline import Options

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
        else:
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


def fake_pipe(prefill_attention=0.0):
    m = SimpleNamespace(data={"graphs": {LO: {"split_layer": 1}, HI: {"split_layer": 1}}},
                        model=lambda which: {"num_layers": 2, "num_kv_heads": 1, "head_dim": 2})
    prompt = SimpleNamespace(decode=lambda ids: "x", eos_ids=())
    return SimpleNamespace(m=m, engines={LO: Lo(prefill_attention), HI: Hi()}, prompt=prompt,
                           tables={"primary": np.zeros((8, 4), np.float32)})


def run(split, pipe, steps):
    embeds = np.zeros((N, 4), np.float32)
    positions = np.tile(np.arange(N), (3, 1))
    timings = {}
    tokens = split.generate(pipe, embeds, positions, N, Options(max_new_tokens=steps), None, timings)
    return tokens, timings


def test_dycoke_kv_masks_follow_the_spec_vector():
    pipe = fake_pipe()
    split = SplitRun(S, V, dycoke_kv=True, kv_prune_ratio=0.5)
    tokens, timings = run(split, pipe, 4)  # prefill + 3 decode steps
    assert tokens == [3, 3, 3, 3]
    masks = [c["attention_mask"][0] for c in pipe.engines[HI].calls]
    assert masks[0].tolist() == [1] * N  # prefill: no KV pruning
    tail = lambda total: list(range(S + V, total))  # noqa: E731
    assert np.flatnonzero(masks[1]).tolist() == [0, 1] + [2 + i for i in (0, 2, 5)] + tail(N + 1)
    assert np.flatnonzero(masks[2]).tolist() == [0, 1, 3, 5, 6] + tail(N + 2)
    assert masks[3].tolist() == [1] * (N + 3)  # stable attention: all rows
    assert timings["kv_pruned_steps"] == 2
    assert [c["attention_mask"].shape[1] for c in pipe.engines[LO].calls] == [N, N + 1, N + 2, N + 3]


def test_fastv_feeds_the_kept_rows_at_their_original_ids_and_keeps_two_kv_lengths():
    """spec §3.5: attention over the visual span [0.05, 0.20, 0.01, 0.15, 0.02, 0.07], k = 3 ->
    keep [0, 1, 3, 5, 7, 8, 9]; the first generated token goes in at position 10; layers < K then
    hold 11 keys and layers >= K hold 8."""
    att = np.zeros(N, np.float32)
    att[S:S + V] = [0.05, 0.20, 0.01, 0.15, 0.02, 0.07]
    pipe = fake_pipe(att)
    split = SplitRun(S, V, budgets=np.array([1, 1, 1]), per_group=False)
    run(split, pipe, 2)
    keep = [0, 1, 3, 5, 7, 8, 9]
    hi = pipe.engines[HI].calls
    assert hi[0]["position_ids"][0, 0].tolist() == keep
    assert hi[0]["hidden_states"][0, :, 0].tolist() == keep  # the lower segment's rows at those indices
    assert split.kept_visual.tolist() == [1, 3, 5]
    assert hi[1]["position_ids"].ravel().tolist() == [10, 10, 10]
    assert pipe.engines[LO].calls[1]["attention_mask"].shape[1] == 11 and hi[1]["attention_mask"].shape[1] == 8
    per_group = SplitRun(S, V, budgets=np.array([1, 0, 2]), per_group=True)  # groups of 2: top-1, none, top-2
    pipe = fake_pipe(att)
    run(per_group, pipe, 1)
    assert per_group.kept_visual.tolist() == [1, 4, 5]
