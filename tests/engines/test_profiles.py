"""TensorRT profile derivation from the manifest (CPU): ranges cover what the pipeline feeds."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.engines.ort import gpu_provider_options
from runtime.engines.profiles import ProfileLimits, check_shapes_fit, derive_profiles, vision_dims
from runtime.errors import ManifestError
from runtime.manifest import load_manifest
from runtime.options import Options
from runtime.pipeline import load_pipeline
from runtime.vision_inputs import VisionGeometry, vision_feeds


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 4), h=st.integers(1, 40), w=st.integers(1, 40))
def test_vision_dims_closed_form_matches_the_runtime_feeds(t, h, w):
    h, w = 2 * h, 2 * w  # patch grids are multiples of the merge size
    geo = VisionGeometry()
    feeds = vision_feeds((t, h, w), geo)
    dims = vision_dims((t, h, w), geo)
    assert (dims.n_windows, dims.window_len) == feeds["window_index"].shape
    assert (dims.n_groups, dims.group_len) == feeds["full_index"].shape
    assert dims.n_patches == len(feeds["patch_order"]) and dims.n_tokens == len(feeds["unit_inverse"])


class Spy:
    """Records every feed an engine gets."""

    def __init__(self, inner):
        self.inner, self.feeds = inner, []

    def run(self, feeds):
        self.feeds.append({k: np.asarray(v) for k, v in feeds.items()})
        return self.inner.run(feeds)


@pytest.fixture(scope="module")
def manifest(tiny_artifacts):
    return load_manifest(tiny_artifacts)


def test_every_input_has_ordered_ranges(manifest):
    profiles = derive_profiles(manifest)
    assert set(profiles) == set(manifest.data["graphs"])
    assert set(profiles["primary_llm"]) == {"prefill", "decode"}
    for role, per in profiles.items():
        names = {i["name"] for i in manifest.graph(role)["inputs"]}
        for shapes in per.values():
            assert set(shapes) == names
            for lo, opt, hi in shapes.values():
                assert all(a <= b <= c for a, b, c in zip(lo, opt, hi)), (role, lo, opt, hi)


def test_real_pipeline_feeds_fit_the_profiles(manifest, tiny_artifacts, video_path):
    profiles = derive_profiles(manifest, ProfileLimits(min_frames=2, max_frames=16))
    pipe = load_pipeline(tiny_artifacts)
    spies = {role: Spy(e) for role, e in pipe.engines.items()}
    pipe.engines = spies
    for frames in (4, 8):
        pipe.answer(video_path, "What moves?", Options(num_frames=frames, max_new_tokens=3, ignore_eos=True))
    for role in ("primary_vision", "assistant_vision", "assistant_prior"):
        for feeds in spies[role].feeds:
            assert check_shapes_fit(profiles[role]["default"], feeds) is None
    prefill, *decode = spies["primary_llm"].feeds[:3]
    assert check_shapes_fit(profiles["primary_llm"]["prefill"], prefill) is None
    assert check_shapes_fit(profiles["primary_llm"]["decode"], prefill) is not None  # past 0 is not a decode shape
    for feeds in decode:
        assert check_shapes_fit(profiles["primary_llm"]["decode"], feeds) is None


def test_limits_narrow_the_profiles_and_are_checked(manifest):
    wide = derive_profiles(manifest, ProfileLimits(max_frames=64))["primary_vision"]["default"]["pixel_values"]
    narrow = derive_profiles(manifest, ProfileLimits(max_frames=8, opt_frames=8))["primary_vision"]["default"]["pixel_values"]
    assert narrow[2][0] < wide[2][0]
    ctx = derive_profiles(manifest, ProfileLimits(max_context=1024))["primary_llm"]["decode"]["attention_mask"]
    assert ctx[2] == (1, 1024)
    too_long = {"attention_mask": np.ones((1, 1025), np.int64)}
    assert "attention_mask" in check_shapes_fit({"attention_mask": ctx}, too_long)
    with pytest.raises(ManifestError, match="min <= opt <= max"):
        ProfileLimits(min_frames=8, opt_frames=4)


def test_ort_tensorrt_provider_gets_one_entry_per_input_per_profile(manifest):
    llm = derive_profiles(manifest)["primary_llm"]
    opts = gpu_provider_options(llm, "/tmp/cache", fp16=True)["TensorrtExecutionProvider"]
    assert opts["trt_fp16_enable"] and opts["trt_engine_cache_path"] == "/tmp/cache"
    entries = opts["trt_profile_max_shapes"].split(",")
    assert len(entries) == 2 * len(manifest.graph("primary_llm")["inputs"])
    name, dims = entries[0].split(":")
    assert name == "inputs_embeds" and [int(d) for d in dims.split("x")] == list(llm["prefill"]["inputs_embeds"][2])
