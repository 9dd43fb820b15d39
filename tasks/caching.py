"""Run-independent cache keys for stage tasks.

Prefect's default cache policy includes the flow run id, so a rerun would recompute
everything. Stage tasks here take an explicit ``key`` argument computed by the flow from what
the stage depends on (its config, the identity of its inputs, a code version) and use it as
the cache key. Each stage writes into a directory named after its key, and the flow refreshes
the cache when that directory has gone missing, so a cached result never points at nothing.
The result records themselves are kept in the work directory (``RESULTS_DIR``).

The records are JSON, never pickle: a work directory may be shared, and resuming it must not
run code someone left in its cache. Prefect loads a record with the serializer named in the
record itself (a pickle stays a pickle whatever the task says), so ``given_key`` also checks
the record at the key before Prefect reads it and removes one that is not plain JSON
(``check_json_record``): the stage then runs, its own ``record.json`` answers, and a JSON
record replaces the bad one. Retries are for transient faults only (``transient_only``): bad
input fails the same way every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.serializers import JSONSerializer
from prefect.states import State

from core.errors import VlmtError
from core.io import STAGE_RECORD, write_json_atomic
from core.train.checkpoint import StageCheckpoint

log = logging.getLogger(__name__)


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
    """Cache key function: the ``key`` parameter the flow computed, and the ``target`` folder of tasks that have one.

    A cached record names its outputs by path, valid where they were written. A moved or
    remounted work dir gives its stages other targets, so their entries miss once; each stage
    then returns its finished ``record.json`` relocated (``tasks.stages.resumable``; the zoo's
    ``build_into`` its folder) rather than recomputing, and that record is cached for the new place.
    """
    name = f"{context.task.name}-{parameters['key']}"
    target = parameters.get("target")
    key = name if target is None else f"{name}-{digest(str(target))[:12]}"
    # a record Prefect would load with anything but plain JSON is removed: no cache entry, the stage answers
    storage = context.task.result_storage
    if isinstance(storage, Path) and context.task.result_serializer == RESULT_SERIALIZER:
        discard_unsafe_record(storage / key)
    return key


#: Where a work directory keeps Prefect's result records (the cache), beside the stage outputs.
RESULTS_DIR = "prefect-results"


#: Prefect's result serializer for cached stages: JSON (stage records are JSON-able dicts of paths and numbers).
RESULT_SERIALIZER = "json"
_JSON_SERIALIZER = JSONSerializer().model_dump(mode="json")


class UnsafeCacheRecord(ValueError):
    """A cache record that is not plain JSON (a pickle, another serializer, an encoded object)."""


def check_json_record(content: bytes, where: str = "cache record") -> bytes:
    """``content`` if it is a Prefect result record safe to load; raises ``UnsafeCacheRecord`` otherwise.

    Safe: JSON with ``metadata`` and ``result``, the serializer exactly Prefect's default JSON
    one (its library, hooks and options are import paths Prefect would call), and a result
    that decodes to plain JSON without ``__class__`` objects (which Prefect would rebuild by
    importing the named type). ``__exc_type__`` (a failed task's exception) stays: Prefect
    itself checks it names an exception class.
    """
    def plain(obj: dict) -> dict:
        if "__class__" in obj:
            raise UnsafeCacheRecord(f"{where}: holds an encoded {obj['__class__']!r} object, not plain JSON")
        return obj

    try:
        record = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsafeCacheRecord(f"{where}: not JSON ({exc})") from None
    if not isinstance(record, dict) or set(record) != {"metadata", "result"} or not isinstance(record["metadata"], dict):
        raise UnsafeCacheRecord(f"{where}: not a Prefect result record")
    if record["metadata"].get("serializer") != _JSON_SERIALIZER:
        raise UnsafeCacheRecord(f"{where}: serializer {record['metadata'].get('serializer')!r} is not Prefect's default JSON")
    if not isinstance(record["result"], str):
        raise UnsafeCacheRecord(f"{where}: result is not JSON text")
    try:
        json.loads(record["result"], object_hook=plain)
    except ValueError as exc:
        if isinstance(exc, UnsafeCacheRecord):
            raise
        raise UnsafeCacheRecord(f"{where}: result is not JSON ({exc})") from None
    return content


def discard_unsafe_record(path: Path) -> bool:
    """Remove the cache record at ``path`` unless ``check_json_record`` accepts it; whether it was removed."""
    try:
        content = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return False
    try:
        check_json_record(content, str(path))
    except UnsafeCacheRecord as exc:
        log.warning("ignoring a cache record that is not plain JSON (the stage runs instead): %s", exc)
        path.unlink(missing_ok=True)
        return True
    return False


def reuse_only_if(task, output: Path, work: str | Path):
    """``task`` with its cache kept in ``work`` and refreshed unless ``output`` exists.

    A cached result is a record of paths; where those outputs were deleted (or the cache was
    written for another work directory), the stage must run again rather than return a
    record that points at nothing. The records live in ``work/prefect-results`` rather than
    under ``PREFECT_HOME``, so a work directory resumes by itself: with another Prefect home,
    on another machine that mounts it, or after the home was wiped. They are written as JSON,
    and ``given_key`` lets Prefect read only plain-JSON ones.
    """
    return task.with_options(refresh_cache=not output.exists(), result_storage=Path(work) / RESULTS_DIR,
                             result_serializer=RESULT_SERIALIZER)


#: Failures worth one more try: the machine's, not the input's (a lost file handle or connection,
#: CUDA out of memory or another device fault, which torch raises as RuntimeError).
TRANSIENT = (OSError, RuntimeError, MemoryError)
#: ... except these, which fail the same way every time.
DETERMINISTIC = (VlmtError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                 NotImplementedError, RecursionError)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` could succeed (``TRANSIENT`` and not ``DETERMINISTIC``)."""
    return isinstance(exc, TRANSIENT) and not isinstance(exc, DETERMINISTIC)


def transient_only(task, task_run: TaskRun, state: State) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed stage only when its exception is transient.

    A bad item (``InputError``), a corrupt file (another ``VlmtError``) or a bug (ValueError,
    KeyError, ...) would fail again after the delay, so they fail now.
    """
    exc = state.data
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:
            return True  # no exception to judge by: Prefect's default, retry
    return is_transient(exc) if isinstance(exc, BaseException) else True


#: Retry settings of stage tasks.
RETRIES = {"retries": 1, "retry_delay_seconds": 2, "retry_condition_fn": transient_only}


def seed_from(shipped: Path, target: Path, key: str) -> bool:
    """Copy a committed finished stage folder built for ``key`` to ``target``, when ``target`` is not there yet.

    ``build_into`` then returns it as finished. A folder whose ``stage.json`` names another key
    (or none) is left alone: the stage trains. The copy goes through a ``.seed`` folder and a
    rename, so a kill never leaves a half-copied stage. True if copied.
    """
    record = shipped / STAGE_RECORD
    if target.exists() or not record.is_file() or json.loads(record.read_text()).get("key") != key:
        return False
    tmp = target.with_name(target.name + ".seed")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped, tmp)
    tmp.rename(target)
    log.info("stage %s starts from the committed %s", target.name, shipped)
    return True


def build_into(target: str | Path, key: str, build: Callable[[Path], Any], checkpoint: StageCheckpoint | None = None) -> dict:
    """Run ``build(tmp_dir)`` and move the result to ``target`` atomically; record the wall time.

    A killed run leaves only a ``.tmp`` directory behind, never a half-written ``target``.
    A ``target`` already built for ``key`` is returned as it is: a run killed after the move
    but before Prefect persisted the task's result must not redo the stage.

    ``checkpoint`` is the stage's ``StageCheckpoint`` (``<target>.ckpt``, outside the ``.tmp``
    folder that every run starts afresh), which ``build`` trains with: a killed build resumes
    from it. The record then gives the seconds summed over every run of the stage (each killed
    run up to its last checkpoint) and ``runs``: per run, its seconds and the steps it resumed
    from. The checkpoint is deleted once ``target`` is in place.
    """
    target = Path(target)
    done = target / STAGE_RECORD
    if done.is_file() and (built := json.loads(done.read_text())).get("key") == key:
        if checkpoint is not None:
            checkpoint.clear()
        return {"path": str(target), **built}
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    build(tmp)
    record = {"key": key, "seconds": round(time.perf_counter() - t0, 1)}
    if checkpoint is not None:
        record["seconds"] = round(record["seconds"] + checkpoint.seconds_before, 1)
        record["runs"] = checkpoint.runs()
    write_json_atomic(tmp / STAGE_RECORD, record)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    if checkpoint is not None:
        checkpoint.clear()
    return {"path": str(target), **record}
