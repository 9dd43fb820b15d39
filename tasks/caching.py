"""Run-independent cache keys for stage tasks.

Prefect's default cache policy includes the flow run id, so a rerun would recompute
everything. Stage tasks here take an explicit ``key`` argument computed by the flow from what
the stage depends on (its config, the identity of its inputs, a code version) and use it as
the cache key. Each stage writes into a directory named after its key, and the flow refreshes
the cache when that directory has gone missing, so a cached result never points at nothing.
The result records themselves are kept in the work directory (``RESULTS_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.context import TaskRunContext

from core.io import STAGE_RECORD, write_json_atomic


def digest(*parts: Any) -> str:
    """A stable hex digest of JSON-able parts (pydantic models are dumped first)."""
    norm = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(norm, sort_keys=True, default=str).encode()).hexdigest()


def dir_digest(path: str | Path, exclude: tuple[str, ...] = ()) -> str:
    """Content identity of a folder (every file's relative path and bytes), e.g. a model's weights.

    A stage's own ``stage.json`` is left out: it records wall time, and identical weights
    trained at another speed must not change the keys of the stages downstream. So are the
    top-level files named in ``exclude``.
    """
    root = Path(path)
    skip = {root / STAGE_RECORD, *(root / name for name in exclude)}
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
        h.update(str(file.relative_to(root)).encode() + b"\0")
        _feed(h, file)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """Content identity of one file (e.g. a video to judge); ``"missing"`` when there is none."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    h = hashlib.sha256()
    _feed(h, path)
    return h.hexdigest()


def _feed(h, path: Path) -> None:
    """Hash a file's bytes in 1 MiB blocks (model weights do not fit in memory twice)."""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def given_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key function: the ``key`` parameter the flow computed."""
    return f"{context.task.name}-{parameters['key']}"


#: Where a work directory keeps Prefect's result records (the cache), beside the stage outputs.
RESULTS_DIR = "prefect-results"


def reuse_only_if(task, output: Path, work: str | Path):
    """``task`` with its cache kept in ``work`` and refreshed unless ``output`` exists.

    A cached result is a record of paths; where those outputs were deleted (or the cache was
    written for another work directory), the stage must run again rather than return a
    record that points at nothing. The records live in ``work/prefect-results`` rather than
    under ``PREFECT_HOME``, so a work directory resumes by itself: with another Prefect home,
    on another machine that mounts it, or after the home was wiped.
    """
    return task.with_options(refresh_cache=not output.exists(), result_storage=Path(work) / RESULTS_DIR)


def build_into(target: str | Path, key: str, build: Callable[[Path], Any]) -> dict:
    """Run ``build(tmp_dir)`` and move the result to ``target`` atomically; record the wall time.

    A killed run leaves only a ``.tmp`` directory behind, never a half-written ``target``.
    A ``target`` already built for ``key`` is returned as it is: a run killed after the move
    but before Prefect persisted the task's result must not redo the stage.
    """
    target = Path(target)
    done = target / STAGE_RECORD
    if done.is_file() and (built := json.loads(done.read_text())).get("key") == key:
        return {"path": str(target), **built}
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    build(tmp)
    record = {"key": key, "seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(tmp / STAGE_RECORD, record)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return {"path": str(target), **record}
