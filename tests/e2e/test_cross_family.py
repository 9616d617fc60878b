"""An assistant of the other family (manifest schema 3, ``models.assistant.family``): Qwen2.5-VL
tiny with the LLaVA-OV tiny assistant, and LLaVA-OV tiny with the Qwen2.5-VL tiny assistant, each a
hard-linked copy of the session's folder re-exported in place (the primary's graphs are reused).

The assistant keeps its own tokenizer, chat template and preprocessing: its prior, mapped onto the
primary's groups by the frames' timestamps (one frame per LLaVA-OV group, two per Qwen2.5-VL
group), must be the prior the same assistant gives in its own family's folder, mapped by hand."""
import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
from runtime.compression import map_weights_by_time, plan_budgets  # noqa: E402
from runtime.errors import ManifestError  # noqa: E402
from runtime.manifest import link_or_copy, load_manifest  # noqa: E402
from runtime.options import Options  # noqa: E402
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.video import sample_video  # noqa: E402

QUESTION = "What happens in the video?"
PAIRS = {"qwen+llava": ("tiny", "llava-onevision-tiny-assistant"), "llava+qwen": ("llava-onevision-tiny", "tiny-assistant")}


@pytest.fixture(scope="module", params=sorted(PAIRS))
def pair(request, tiny_artifacts, llava_tiny, tmp_path_factory):
    """(cross-family folder, the folder of the assistant's own family)."""
    from export.exporter import export_artifacts

    primary, assistant = PAIRS[request.param]
    own, other = (tiny_artifacts, llava_tiny) if primary == "tiny" else (llava_tiny, tiny_artifacts)
    out = str(tmp_path_factory.mktemp("cross") / request.param)
    shutil.copytree(own, out, copy_function=link_or_copy)  # the export replaces the folder: links stay intact
    export_artifacts(primary, out, assistant_name=assistant, validate=False, log=lambda *_: None)
    return out, other


def test_manifest_carries_the_assistants_family(pair, tmp_path):
    folder, other = pair
    m = load_manifest(folder)
    theirs = load_manifest(other)
    assert m.data["schema_version"] == 3 and m.family_name("assistant") == theirs.data["family"] != m.data["family"]
    assert m.section("assistant", "tokens") == theirs.tokens
    assert m.section("assistant", "preprocess") == theirs.data["preprocess"]
    assert m.section("assistant", "tokenizer")["chat_template"] == theirs.data["tokenizer"]["chat_template"]
    data = json.load(open(os.path.join(folder, "manifest.json")))
    for name, edit, message in (("old-schema", lambda d: d.update(schema_version=2), "needs schema version 3"),
                                ("no-tokens", lambda d: d["models"]["assistant"].pop("tokens"), r"lacks its own \['tokens'\]")):
        bad = json.loads(json.dumps(data))
        edit(bad)
        dst = tmp_path / name
        shutil.copytree(folder, dst, copy_function=link_or_copy, ignore=shutil.ignore_patterns("manifest.json"))
        json.dump(bad, open(dst / "manifest.json", "w"))
        with pytest.raises(ManifestError, match=message):
            load_manifest(str(dst))


def test_prior_is_the_assistants_own_and_mapped_by_time(pair, video_path):
    folder, other = pair
    pipe, own = load_pipeline(folder), load_pipeline(other)
    clip = sample_video(video_path, num_frames=8)
    # the assistant's own prior, over its own groups, in its own family's folder
    weights = own.frame_prior(QUESTION, clip, Options(), 8 // own.family.frames_per_group)
    result = pipe.answer(clip, QUESTION, Options(method="visionzip", retention=0.25, max_new_tokens=4))
    if pipe.family.frames_per_group == 2:  # Qwen primary, LLaVA assistant: a group sums its two frames
        mapped = weights.reshape(4, 2).sum(1)
    else:  # LLaVA primary, Qwen assistant: each frame its group's weight, shared by the group's two frames
        mapped = np.repeat(weights, 2) / 2
    np.testing.assert_allclose(result.frame_weights, mapped / mapped.sum(), rtol=1e-5)
    grid = pipe.merged_grid("primary", result.grid_thw)
    np.testing.assert_array_equal(result.budgets, plan_budgets(result.frame_weights, grid[0], grid[1] * grid[2], 0.25))
    assert len(result.token_ids) == 4 and len(set(result.budgets.tolist())) > 1


def test_map_weights_by_time_by_hand():
    # assistant: 3 groups of 2 frames at 0, 1 | 2, 3 | 4 (the last group one frame); primary: frames at
    # 0.4, 1.6, 2.6, 4.4 one per group -> nearest frames 0, 2 (1.6 is nearer 2 than 1), 3 (2.6: 3), 4
    w = np.array([0.5, 0.2, 0.3], np.float32)
    out = map_weights_by_time(w, [0, 1, 2, 3, 4], 2, [0.4, 1.6, 2.6, 4.4], 1)
    want = np.array([0.25, 0.1, 0.1, 0.3])
    np.testing.assert_allclose(out, want / want.sum(), rtol=1e-6)
    # the other way: primary groups of 2 frames collect their frames' weights
    out = map_weights_by_time(np.array([0.1, 0.2, 0.3, 0.4]), [0, 1, 2, 3], 1, [0, 1, 2, 3], 2)
    np.testing.assert_allclose(out, [0.3, 0.7], rtol=1e-6)
