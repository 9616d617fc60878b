"""The README's quick start runs as written (as Polygraphy runs its examples' commands): every
fenced shell command of "Two commands" and "Run it on your own video" that needs no GPU and no
real weights, with `my.mp4` standing for a generated needle video. `make test` is this suite."""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("Two commands", "Run it on your own video")
NEEDS_REAL_WEIGHTS = re.compile(r"--checkpoint|artifacts/qwen|qwen2\.5-vl-(3b|7b|32b|72b)\b(?!-random)")


def quick_start_commands() -> list[str]:
    text = open(os.path.join(ROOT, "README.md")).read()
    commands = []
    for section in SECTIONS:
        body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        for block in re.findall(r"```bash\n(.*?)```", body, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("#", 1)[0].strip()
                if command:
                    commands.append(command)
    return commands


def test_the_quick_start_is_found():
    commands = quick_start_commands()
    assert "make demo" in commands and "make test" in commands
    assert any(c.startswith("python scripts/infer.py") for c in commands)


@pytest.mark.parametrize("command", [c for c in quick_start_commands()
                                     if c != "make test" and not NEEDS_REAL_WEIGHTS.search(c)])
def test_quick_start_command_runs(command, needle_artifacts, tmp_path):
    from synthetic.needle import make_video, split_seed, write_video

    video = make_video(split_seed("test", 0))
    clip = write_video(video, str(tmp_path / "my.avi"))
    argv = [clip if a == "my.mp4" else a for a in shlex.split(command)]
    if argv[0] == "python":
        argv[0] = sys.executable
    # the default model: a hard-linked copy of the session's needle export (`make demo` re-exports it
    # in place with its LLM split; the session's folder stays as it is)
    import shutil

    from runtime.manifest import link_or_copy
    folder = str(tmp_path / "needle")
    shutil.copytree(needle_artifacts, folder, copy_function=link_or_copy)
    env = dict(os.environ, DYTOK_ARTIFACTS=folder)
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{command}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    if argv[:2] == ["make", "demo"]:
        assert "right answer" in out.stdout and "--method self" in out.stdout
    else:
        assert out.stdout.strip() and out.stderr.strip().splitlines()[-1].startswith("timing:")
