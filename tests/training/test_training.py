"""The trainer's loss path (a couple of optimizer steps on a tiny batch, no full training), its
determinism, and the assistant cut."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthetic.needle import make_video, split_seed  # noqa: E402
from export.tokenizer import QWEN_VL_CHAT_TEMPLATE, build_tiny_tokenizer, needle_corpus, special_ids  # noqa: E402
from training.needle import COMMITTED, WIDE, Batcher, Stage, build_model, loss_fn, save_checkpoint, stage_plan  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = build_tiny_tokenizer(corpus=needle_corpus())
    special = special_ids(tok)
    path = str(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    tok.save(path)
    return tok, special, Batcher(path, QWEN_VL_CHAT_TEMPLATE, special)


def _steps(setup, n=2):
    tok, special, batcher = setup
    torch.manual_seed(0)
    model = build_model(tok, special, seed=0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    vids = [make_video(split_seed("train", i), "star", 4) for i in range(3)]
    batch = batcher(vids)
    losses = []
    for _ in range(n):
        loss, _ = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses, batch


def test_batch_matches_the_runtime_prompt(setup):
    tok, special, batcher = setup
    v = make_video(split_seed("train", 5), "order", 6)
    batch = batcher([v])
    ids = batch["input_ids"][0].numpy()
    prompt, start = batcher.prompt.input_ids(v.question, 3 * 4 * 4 // 4 * 4)  # 3 groups x 16 tokens
    assert np.array_equal(ids[:-1], prompt) and ids[-1] == tok.token_to_id(v.answer)
    assert batch["labels"].tolist() == [[tok.token_to_id(v.answer), special["<|im_end|>"]]]
    assert int((batch["mm_token_type_ids"] == 2).sum()) == 48 and tuple(batch["video_grid_thw"][0].tolist()) == (3, 8, 8)


def test_two_steps_deterministic_and_learning(setup):
    m1, l1, batch = _steps(setup)
    m2, l2, _ = _steps(setup)
    assert l1 == l2 and all(np.isfinite(l1))
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    with torch.no_grad():
        after, _ = loss_fn(m1, batch)
    assert after.item() < l1[0]  # the optimizer steps lower the loss on their batch


def test_curriculum_plan_deterministic():
    st = Stage((16, 32), 5, reduced_every=2)
    a, b = list(stage_plan(st, 0, 3, 100)), list(stage_plan(st, 0, 3, 100))
    assert a == b and a[0][2][0] == 100
    assert [p[3] for p in a] == [112 * 112, 56 * 56] * 2 + [112 * 112]
    assert all(len(p[2]) == Stage.batch(p[0]) for p in a)
    assert WIDE[0].frames == (2,) and max(COMMITTED[-1][-1][-1].frames) == 64
    assert any(st.bank for st in COMMITTED[-1][-1])  # the long stage trains on encoded videos


def test_assistant_cut_keeps_the_first_layers(setup, tmp_path):
    from training.assistant import load_model
    tok, special, _ = setup
    model = build_model(tok, special, seed=1)
    save_checkpoint(model, tok, str(tmp_path / "primary"))
    save_checkpoint(model, tok, str(tmp_path / "assistant"), num_layers=2)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.json", "preprocessor_config.json"):
        assert os.path.isfile(tmp_path / "assistant" / name)
    cut = load_model(str(tmp_path / "assistant"))
    assert len(cut.model.language_model.layers) == 2 and cut.config.text_config.num_hidden_layers == 2
    full = dict(model.named_parameters())
    for name, p in cut.named_parameters():
        assert torch.equal(p, full[name]), name


def test_derived_assistant_copies_no_weights_when_the_cut_keeps_every_layer(setup, tmp_path):
    """Prior layers up to the last: the assistant is the primary (its dytok.json, no second
    model.safetensors; a stale assistant folder goes). Up to layer 1: a 2-layer checkpoint."""
    import json
    from training.assistant import derive_assistant
    tok, special, _ = setup
    primary, out = str(tmp_path / "primary"), str(tmp_path / "assistant")
    save_checkpoint(build_model(tok, special, seed=2), tok, primary)
    os.makedirs(out)
    choice = derive_assistant(primary, out, 1, layers=[1, 2, 3], log=lambda s: None)
    assert choice["checkpoint"] == primary and not os.path.exists(out)
    with open(os.path.join(primary, "dytok.json")) as f:
        assert json.load(f)["prior_layers"] == [1, 2, 3]
    choice = derive_assistant(primary, out, 1, layers=[0, 1], log=lambda s: None)
    assert choice["checkpoint"] == out and choice["num_layers"] == 2
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["text_config"]["num_hidden_layers"] == 2
    with open(os.path.join(out, "dytok.json")) as f:
        assert json.load(f)["prior_layers"] == [0, 1]


def test_curricula_by_name_and_committed_chain():
    import cli.train_needle as mod
    from training.needle import ALIKE, COMMITTED, COMMITTED_PRIOR, COMMITTED_PRIOR_LAYERS, CURRICULA
    assert mod._stages("alike") == ALIKE and mod._stages("alike:1") == ALIKE[1:]
    for bad in ("nope", "alike:x"):
        with pytest.raises(SystemExit):
            mod._stages(bad)
    assert all(len(run) == 5 and run[3] in (1, 2) and run[4] for run in COMMITTED)
    assert len({run[1] for run in COMMITTED}) == len(COMMITTED)  # disjoint training seeds per run
    assert COMMITTED[0][4][0].frames == (2,) and max(COMMITTED[-1][4][-1].frames) == 64
    assert all(st.families is None or set(st.families) <= {"star", "count", "order"} for c in CURRICULA.values() for st in c)
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "weights", "needle", "assistant", "dytok.json")) as f:
        import json
        dytok = json.load(f)  # trained on COMMITTED_PRIOR_LAYERS, exported with COMMITTED_PRIOR's export_layers
        assert tuple(dytok["trained_layers"]) == COMMITTED_PRIOR_LAYERS
        assert tuple(dytok["prior_layers"]) == COMMITTED_PRIOR["export_layers"]
    weights = os.path.join(os.path.dirname(__file__), "..", "..", "weights", "needle")
    with open(os.path.join(weights, "primary", "training.json")) as f:
        rec = json.load(f)
    assert (rec["seed"], rec["first_seed"]) == COMMITTED[-1][:2]  # the committed primary is the chain's last run
    # the assistant trains from an earlier run; bank runs freeze vision, so the two towers are one
    from safetensors.numpy import load_file
    from training.needle import COMMITTED_PRIOR, PRIOR_FROM_RUN
    assert 0 <= PRIOR_FROM_RUN < len(COMMITTED) - 1 and COMMITTED_PRIOR["first_seed"] not in {r[1] for r in COMMITTED}
    assert all(st.bank for run in COMMITTED[PRIOR_FROM_RUN + 1:] for st in run[4])
    a, p = (load_file(os.path.join(weights, m, "model.safetensors")) for m in ("assistant", "primary"))
    vision = [k for k in p if k.startswith("visual.")]
    assert vision and all(np.array_equal(a[k], p[k]) for k in vision)


def test_cell_labels_match_the_pixels():
    """Each merged token's label (kind, colour at its centre) is checked against the drawn pixels:
    an empty token's 28x28 block is background only, a labelled one holds its colour."""
    from synthetic.needle import COLOURS, EXTRA_COLOURS
    from training.needle import CELL_COLOURS, KINDS, cell_labels
    rgb = {**COLOURS, **EXTRA_COLOURS}
    for seed, fam in ((3, "star"), (4, "count"), (5, "order")):
        v = make_video(split_seed("train", seed), fam, 6)
        lab = cell_labels(v.params["groups"], 4, 4).reshape(3, 4, 4, 3)
        needles = 0
        for g in range(3):
            img = v.frames[2 * g].astype(int)
            for r in range(4):
                for c in range(4):
                    kind, colour, alike = lab[g, r, c]
                    block = img[28 * r:28 * r + 28, 28 * c:28 * c + 28].reshape(-1, 3)
                    if kind == 0:  # background: dark (tints < 90, noise < 7)
                        assert block.max() < 100
                    elif kind > 0:
                        want = np.array(rgb[CELL_COLOURS[colour]])
                        assert (np.abs(block - want).max(1) == 0).sum() >= 4, (seed, g, r, c)
                        needles += KINDS[kind] in ("star", "circle", "triangle") and g in v.needle_groups
                        same = [o for o in v.params["groups"][g] if (o["kind"], o["colour"]) == (KINDS[kind], CELL_COLOURS[colour])]
                        assert alike == min(len(same), 4) - 1
                        if fam == "count" and g in v.needle_groups and KINDS[kind] == "circle" and CELL_COLOURS[colour] == "red":
                            assert alike + 1 == int(v.answer)
        assert needles >= 1
    # the reduced grid (2x2 tokens) labels the same objects at half the resolution
    assert cell_labels(make_video(split_seed("train", 3), "star", 2).params["groups"], 2, 2).shape == (4, 3)


def test_frozen_vision_bank_equals_the_full_forward(setup):
    """A bank stage's LLM-only step sees exactly what the full model sees (fp16 storage aside)."""
    from training.needle import FULL_PIXELS, VideoBank, frozen_vision
    tok, special, batcher = setup
    model = build_model(tok, special, seed=0).eval()
    st = Stage((4,), 1, bank=3, families=("count",))
    bank = VideoBank(model, batcher, st, seed=0, stage_index=0, first_seed=10)
    items = bank.buckets[(4, "count", FULL_PIXELS)]
    vids = [make_video(split_seed("train", 10 + j), "count", 4) for j in range(3)]
    batch = batcher(vids)
    fed = bank.stack(items)  # in the bank's order (sample() draws a random subset)
    assert torch.equal(fed["input_ids"], batch["input_ids"])
    with torch.no_grad():
        full, _ = loss_fn(model, batch)
        with frozen_vision(model):
            banked, _ = loss_fn(model, fed)
    assert type(model.model.visual).__name__ != "_Encoded"  # restored
    assert abs(full.item() - banked.item()) < 1e-3 * max(1.0, abs(full.item()))


def test_compressed_bank_batch_keeps_the_runtime_sequence(setup, monkeypatch):
    """Compressed bank steps: with every token kept (retention 1) the batch is the plain one (same
    loss: explicit M-RoPE ids, token order and the per-video split are right); at 25% the prompt
    keeps its text and the kept visual tokens their original ids."""
    import training.needle as N
    tok, special, batcher = setup
    model = build_model(tok, special, seed=0).eval()
    bank = N.VideoBank(model, batcher, Stage((8,), 1, bank=3, families=("order",), compress=1.0), 0, 0, 20)
    plain = N.VideoBank(model, batcher, Stage((8,), 1, bank=3, families=("order",)), 0, 0, 20)
    key = (8, "order", N.FULL_PIXELS)
    for a, b in zip(bank.buckets[key], plain.buckets[key]):  # the export's encoder = transformers' tower
        assert torch.allclose(a["emb"].float(), b["emb"].float(), atol=2e-3) and a["needle"]
    tps = float(model.config.vision_config.tokens_per_second)
    with torch.no_grad(), N.frozen_vision(model):
        monkeypatch.setattr(N, "COMPRESS_RETENTIONS", (1.0,))
        for seed in range(4):  # both methods, uniform and prior budgets
            rng = np.random.default_rng(seed)
            full = bank.compressed(rng, 3, tps)
            meta = full.pop("meta")
            chunks = full["pixel_values_videos"].split(len(full["pixel_values_videos"]) // 3)
            order = [next(i for i, r in enumerate(bank.buckets[key]) if torch.equal(r["emb"].float(), c)) for c in chunks]
            ref = bank.stack([bank.buckets[key][i] for i in order])
            got, _ = loss_fn(model, full)
            want, _ = loss_fn(model, ref)
            assert abs(got.item() - want.item()) < 1e-5, (meta, got.item(), want.item())
        monkeypatch.setattr(N, "COMPRESS_RETENTIONS", (0.25,))
        batch = bank.compressed(np.random.default_rng(0), 3, tps)
        video = batcher.video_id
        n_full = int((bank.buckets[key][0]["input_ids"] == video).sum())
        assert int((batch["input_ids"][0] == video).sum()) == n_full // 4 == len(batch["pixel_values_videos"]) // 3
        assert batch["position_ids"].shape == (3, 3, batch["input_ids"].shape[1])
        loss, _ = loss_fn(model, {k: v for k, v in batch.items() if k != "meta"})
        assert np.isfinite(loss.item())


def test_mixed_grid_bank_batch_is_what_budget_aware_encoding_feeds(setup, monkeypatch):
    """Compressed bank steps with an encoder slack: each group's tokens, M-RoPE ids and the prompt
    are those ``runtime.encoder_plan`` builds for the same budgets (groups re-encoded at their
    planned grid through the export's vision module, then ``compress_groups``)."""
    import runtime.encoder_plan as E
    import training.needle as N
    from export.graphs.vision import VISION_INPUTS, VisionEncoder
    from runtime.compression import Request, compress_groups, get_method
    from runtime.positions import mrope_positions_grouped
    from runtime.vision_inputs import VisionGeometry
    tok, special, batcher = setup
    model = build_model(tok, special, seed=0).eval()
    st = Stage((8,), 1, bank=1, families=("star",), compress=1.0, slacks=(2.0,))
    bank = N.VideoBank(model, batcher, st, 0, 0, 30)
    entry = bank.buckets[(8, "star", N.FULL_PIXELS)][0]
    assert sorted(entry["grids"]) == [(1, 1), (2, 2), (3, 3)]  # what group_grid picks below the full 4x4
    video = N.train_video(30, "star", 8, st)
    tps = float(model.config.vision_config.tokens_per_second)
    seen = {}
    real_plan = E.plan_group_grids
    monkeypatch.setattr(E, "plan_group_grids", lambda full, b, s: seen.setdefault("plan", (b.copy(), real_plan(full, b, s)))[1])
    monkeypatch.setattr(N, "COMPRESS_RETENTIONS", (0.25,))
    vc = model.config.vision_config
    encoder = VisionEncoder(model.model.visual)

    def run_vision(feeds):
        with torch.no_grad():
            out = encoder(*[torch.as_tensor(feeds[n]) for n in VISION_INPUTS])
        return {k: v.float().numpy() for k, v in zip(("tokens", "importance", "metric"), out)}

    methods, kinds = set(), set()
    for seed in range(6):
        seen.clear()
        batch = bank.compressed(np.random.default_rng(seed), 1, tps, slacks=(2.0,))
        method = batch["meta"][1].split("@")[1].rstrip("0123456789./s")
        methods.add(method)
        budgets, grids = seen["plan"]
        kinds.add(len({tuple(g) for g in grids.tolist()}))
        parts = E.encode_groups(run_vision, video.frames, grids, N.preprocess_config(),
                                VisionGeometry(vc.patch_size, vc.spatial_merge_size, vc.window_size))
        kept = compress_groups(get_method(method), parts, grids, Request((len(grids), 4, 4), budgets, 0.25))
        tokens, source = kept.tokens, kept.source
        want = tokens[np.argsort(source, kind="stable")]
        assert torch.allclose(batch["pixel_values_videos"], torch.from_numpy(want), atol=2e-3)
        n_vis = int(sum(a * b for a, b in grids.tolist()))
        ids, start = batcher.prompt.input_ids(video.question, n_vis)
        pos = mrope_positions_grouped(ids, batcher.video_id, [tuple(g) for g in grids.tolist()],
                                      tps * 2 / video.fps)
        keep = np.concatenate([np.arange(start), start + np.sort(source), np.arange(start + n_vis, len(ids))])
        assert np.array_equal(batch["input_ids"][0, :-1].numpy(), ids[keep])
        assert np.array_equal(batch["position_ids"][:, 0, :-1].numpy(), pos[:, keep])
    assert methods == {"visionzip", "uniform"} and max(kinds) > 1  # both methods, mixed grids seen


def test_train_prior_writes_a_cut_assistant(setup, tmp_path):
    """``train_prior`` (a few steps here): a checkpoint cut after the deepest prior layer, its
    layers in dytok.json, its loss log in training.json; the vision tower is the primary's."""
    import json
    from training.assistant import load_model, train_prior
    tok, special, _ = setup
    primary = str(tmp_path / "primary")
    model = build_model(tok, special, seed=3)
    save_checkpoint(model, tok, primary)
    out = str(tmp_path / "assistant")
    record = train_prior(primary, out, layers=(0, 1), steps=2, bank=16, batch=4, threads=1, log=lambda s: None)
    assert len(record["log"]) == 2 and all("needle share" in line for line in record["log"])
    with open(os.path.join(out, "dytok.json")) as f:
        assert json.load(f) == {"prior_layers": [0, 1]}
    cut = load_model(out)
    assert len(cut.model.language_model.layers) == 2
    full = dict(model.named_parameters())
    assert all(torch.equal(p, full[n]) for n, p in cut.named_parameters() if ".visual." in n or n.startswith("model.visual"))
    assert any(not torch.equal(p, full[n]) for n, p in cut.named_parameters() if "language_model.layers" in n)
    train_prior(primary, out, layers=(0, 1), steps=1, bank=8, batch=4, threads=1, export_layers=(0,), log=lambda s: None)
    with open(os.path.join(out, "dytok.json")) as f:  # exported at layer 0, trained on 0-1
        assert json.load(f) == {"prior_layers": [0], "trained_layers": [0, 1]}


def test_train_prior_reduced_trains_the_vision_tower_at_the_reduced_input(setup, tmp_path):
    """``train_prior_reduced`` (two steps here): every weight may move, the vision tower included,
    the prior layers stay those of the assistant's dytok.json, the record names the input."""
    import json
    from training.assistant import load_model, train_prior_reduced
    tok, special, _ = setup
    src = str(tmp_path / "assistant")
    model = build_model(tok, special, seed=4)
    save_checkpoint(model, tok, src, prior_layers=[0, 1])
    out = str(tmp_path / "reduced")
    record = train_prior_reduced(src, out, steps=2, batch=3, threads=1, log=lambda s: None)
    assert len(record["log"]) == 2 and record["layers"] == [0, 1] and "56x56" in record["input"]
    with open(os.path.join(out, "dytok.json")) as f:
        assert json.load(f)["prior_layers"] == [0, 1]
    new = dict(load_model(out).named_parameters())
    old = dict(model.named_parameters())
    assert any(not torch.equal(new[n], old[n]) for n in old if n.startswith("model.visual"))


def test_needle_loss_wants_mass_on_every_answer_group():
    """``needle_loss``: one answer group -> both losses are -log of its share; two (order) -> the
    plain share is 1 with all the mass on one of them, ``each_group`` asks for both."""
    from training.assistant import needle_loss
    one = torch.tensor([[[0.1, 0.7, 0.2]]])  # [B=1, L=1, G=3]
    for each in (False, True):
        loss, share = needle_loss(one, [(1,)], each_group=each)
        assert torch.allclose(loss, -torch.log(torch.tensor(0.7))) and torch.allclose(share, torch.tensor([[0.7]]))
    lopsided, even = torch.tensor([[[1.0, 0.0, 0.0]]]), torch.tensor([[[0.5, 0.5, 0.0]]])
    assert needle_loss(lopsided, [(0, 1)])[0].item() < 1e-5 and needle_loss(even, [(0, 1)])[0].item() < 1e-5
    assert needle_loss(lopsided, [(0, 1)], each_group=True)[0].item() > 6.0  # -(log 1 + log 1e-6) / 2
    assert abs(needle_loss(even, [(0, 1)], each_group=True)[0].item() - np.log(2)) < 1e-5


def test_half_frames_is_what_the_reduced_assistant_sees():
    """``half_frames``: the frames ``Pipeline.frame_prior`` picks for half the frame count, whole
    groups, and a group is a needle group exactly when one of its frames shows the needle."""
    from synthetic.needle import make_video, split_seed
    from training.needle import half_frames
    for i in range(12):
        v = make_video(split_seed("train", i))
        h = half_frames(v)
        n = len(v.frames)
        pick = np.linspace(0, n - 1, n // 2).astype(int)[:len(h.frames)]
        assert len(h.frames) % 2 == 0 and np.array_equal(h.frames, v.frames[pick])
        shows = [any(np.array_equal(f, v.frames[2 * g]) for g in v.needle_groups) for f in h.frames]
        assert h.needle_groups == tuple(j for j in range(len(h.frames) // 2) if shows[2 * j] or shows[2 * j + 1])
