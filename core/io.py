"""Atomic file writes.

Every result file is written to a temporary sibling and renamed into place, so a
process killed mid-write never leaves a truncated file that a later run would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: A stage folder's record of its key and wall time (written by ``tasks.caching.build_into``;
#: left out of the folder's identity and of what the zoo publishes).
STAGE_RECORD = "stage.json"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffix so that writers that pick a format from
    the extension (ffmpeg, PIL) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, *, default: Callable[[Any], Any] | None = str) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=default) + "\n")


def read_yaml_mapping(path: str | Path, expected: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; a clear error naming the file otherwise (``expected`` says what it should hold)."""
    import yaml

    from core.errors import InputError

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot be read as YAML: {exc}", expected) from exc
    if not isinstance(data, dict):
        raise InputError(path, f"holds a {type(data).__name__}", expected)
    return data


def file_head(path: str | Path, n: int) -> bytes | None:
    """The first ``n`` bytes of a file (fewer if it is shorter), or None where it cannot be read:
    how a format check looks at a file's magic number without trusting its name."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return None
