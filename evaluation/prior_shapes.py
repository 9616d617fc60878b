"""The names of the assistant's prior settings, which evaluation rows carry and benchmark rows are
joined on: "full", "reduced", "none", or "frames/F pixels/P" (the prior at 1/F of the frames and
1/P of the primary's pixels per frame)."""
from __future__ import annotations

from dataclasses import replace

from runtime.errors import DyTokError
from runtime.options import Options

ASSISTANTS = ("full", "reduced", "none")
REDUCED_PRIOR = (2, 4)  # the "reduced" assistant: divisors of the frames and of the primary's pixels per frame


def prior_setting(divisors: tuple[int, int]) -> str:
    """The name of a prior at 1/F of the frames and 1/P of the pixels, ``divisors`` = (F, P)."""
    return "frames/{} pixels/{}".format(*divisors)


def prior_divisors_of(setting: str) -> tuple[int, int]:
    """(F, P) of a "frames/F pixels/P" name (``prior_setting``'s inverse). ValueError if it is not one."""
    f, sep, p = setting.removeprefix("frames/").partition(" pixels/")
    if not (setting.startswith("frames/") and sep and f.isdigit() and p.isdigit()):
        raise ValueError(f"not a prior setting: {setting!r}")
    return int(f), int(p)


def prior_shape(assistant: str) -> str:
    """An assistant setting -> its canonical name: "full", "reduced", "none", or "frames/F
    pixels/P" (given as "F:P" or in the canonical form; 1:1 is "full"). Raises DyTokError naming
    the setting when it is none of these."""
    if assistant in ASSISTANTS:
        return assistant
    f, sep, p = assistant.partition(":")
    try:
        div = (int(f), int(p)) if sep and f.isdigit() and p.isdigit() else prior_divisors_of(assistant)
    except ValueError:
        div = None
    if div is not None and min(div) >= 1:
        return "full" if div == (1, 1) else prior_setting(div)
    raise DyTokError(f"assistant {assistant!r}: expected one of {', '.join(ASSISTANTS)} or F:P "
                     "(the prior at 1/F of the frames and 1/P of the pixels, F and P positive integers)")


def prior_divisors(assistant: str) -> tuple[int, int] | None:
    """(frames divisor, pixels divisor) of a canonical assistant setting; None for "none"."""
    if assistant == "none":
        return None
    if assistant == "full":
        return 1, 1
    if assistant == "reduced":
        return REDUCED_PRIOR
    return prior_divisors_of(assistant)


def reduced_assistant(opts: Options, num_frames: int, manifest_max_pixels: int,
                      divisors: tuple[int, int] = REDUCED_PRIOR) -> Options:
    """The assistant at ``num_frames / divisors[0]`` frames and ``1 / divisors[1]`` of the
    primary's pixels per frame; by default the "reduced" one (half the frames, a quarter of the pixels)."""
    frames_div, pixels_div = divisors
    return replace(opts, assistant_num_frames=max(num_frames // frames_div, 1) if frames_div > 1 else None,
                   assistant_max_pixels=(opts.max_pixels or manifest_max_pixels) // pixels_div)


def assistant_options(base: Options, assistant: str, num_frames: int, manifest_max_pixels: int) -> Options:
    """``base`` with the prior's frames and pixels of ``assistant`` (a canonical setting)."""
    div = prior_divisors(assistant)
    return base if div in (None, (1, 1)) else reduced_assistant(base, num_frames, manifest_max_pixels, div)
