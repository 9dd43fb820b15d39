"""The README's quick start, as printed, in a fresh clone (issue 29's must-hold).

The test clones the repository's committed HEAD, lends the clone this checkout's ``.venv`` (a
symlink, marked up to date, so ``make`` does not rebuild it: building one is what CI's own
``make test`` already did), then runs ``make demo`` and every "Next steps" command exactly as
the README prints them, from the clone's root, and checks each succeeds. Two commands are not
run: ``make test`` (this suite) and the 140-item comparison of the claims (hours); the test
checks that they are the ones left out, so a new quick-start command cannot slip past it.
The lent venv's editable install points at this checkout, whose code is the clone's when the
suite runs on a clean checkout (as in CI); the clone's own files (README, Makefile, work dir)
are what the commands read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_RUN = {"make test": "this suite", ".venv/bin/vlmt evaluate --config configs/claims/main.yaml": "hours"}


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def quick_start_commands(text: str) -> list[str]:
    """The shell commands of "Two commands" (its code block) and "Next steps" (inline code that starts
    with ``make`` or ``.venv/bin/``), in order; paths the steps name are checked separately."""
    block = re.search(r"```bash\n(.*?)```", _section(text, "Two commands"), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    steps = re.findall(r"`((?:make|\.venv/bin/)[^`]+)`", _section(text, "Next steps"))
    return commands + steps


def test_the_readme_names_its_quick_start_commands():
    commands = quick_start_commands(README.read_text())
    assert commands[:2] == ["make demo", "make test"]
    assert set(NOT_RUN) <= set(commands), commands
    assert len(commands) >= 4


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None or shutil.which("make") is None,
                    reason="needs a git checkout, git and make")
def test_the_readme_quick_start_runs_as_printed_in_a_fresh_clone(tmp_path):
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "vlmt").is_file():
        pytest.skip(f"{venv} has no vlmt console script (run the suite from the project's .venv)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    (clone / ".venv").symlink_to(venv)
    marker = venv / "bin" / ".installed"
    marker.touch()  # newer than the clone's pyproject.toml: make keeps the lent venv
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    text = (clone / "README.md").read_text()
    ran = []
    for command in quick_start_commands(text):
        if command in NOT_RUN:
            continue
        r = subprocess.run(command, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, f"{command!r} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        ran.append(command)
    assert ran[0] == "make demo" and len(ran) >= 3
    # the paths the steps name exist after the demo
    for path in re.findall(r"`(runs/[^` ]+)`", _section(text, "Next steps")):
        assert (clone / path).exists(), path
