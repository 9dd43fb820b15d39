"""Loaded models per worker process, and the identity of a model folder for cache keys.

Stage tasks receive model *paths*; loading a Reasoner or Teacher for every task would cost
more than the task, so each process keeps the models it has loaded (a small LRU keyed by
path and device). A model is used by one task at a time in a process (the item LoRA is
attached to the shared transformer), hence the lock beside each model; parallelism comes
from more processes (the process, Dask or Ray task runners), one model copy each.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from pathlib import Path

from core.errors import InputError
from core.io import write_json_atomic
from core.method.reasoner import OPTIM_DEFAULTS_FILE, ReasonerAdapter
from core.models.teacher import Teacher, load_teacher
from tasks.caching import dir_digest

#: Loading is serialised: the libraries build models under a process-wide "meta device"
#: context, and two threads loading at once corrupt each other's weights.
_LOADING = threading.Lock()


def reasoner(path: str, surrogate: str | None, device: str | None = None) -> tuple[ReasonerAdapter, threading.Lock]:
    with _LOADING:
        return _reasoner(path, surrogate, device)


def teacher(path: str, device: str | None = None, dtype: str | None = None) -> tuple[Teacher, threading.Lock]:
    """A loaded Teacher; unset, ``device`` and ``dtype`` ("bfloat16", ...) follow ``teacher_placement``."""
    with _LOADING:
        return _teacher(path, device, dtype)


def forget() -> None:
    """Drop every loaded model (benchmarks time a cold start; tests free memory)."""
    with _LOADING:
        _reasoner.cache_clear()
        _teacher.cache_clear()


@functools.lru_cache(maxsize=2)
def _reasoner(path: str, surrogate: str | None, device: str | None) -> tuple[ReasonerAdapter, threading.Lock]:
    return ReasonerAdapter.from_paths(path, surrogate, device), threading.Lock()


@functools.lru_cache(maxsize=2)
def _teacher(path: str, device: str | None, dtype: str | None) -> tuple[Teacher, threading.Lock]:
    return load_teacher(path, dtype=dtype, device=device), threading.Lock()


#: Files of a model folder that change nothing it computes: its model card, and the Reasoner's
#: recommended optimiser settings, which reach every stage key through the resolved config.
NOT_IDENTITY = ("README.md", OPTIM_DEFAULTS_FILE)


def model_identity(path: str | Path, memo: Path | None = None) -> str:
    """A content hash of a model folder: every file's relative path and bytes, except ``NOT_IDENTITY``.

    A card edit (new figures, a user's notes, a hub update of README.md) must not invalidate
    every cached stage that used the model; weights, configs, tokenizers and templates do. An
    edited ``optim_defaults.json`` moves only what its learning rate decides (the resolved
    ``optim.lr`` is in those keys).
    Hashing a real checkpoint (many GB) takes seconds, so with ``memo`` the digest is kept
    per folder together with each file's size and modification time, and reused while they
    are unchanged.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise InputError(root, "is not a model folder", "a directory with the model's config and weights")
    skip = {root / name for name in NOT_IDENTITY}
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p not in skip)
    stat = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    stamp = hashlib.sha256(json.dumps(stat).encode()).hexdigest()
    known = json.loads(memo.read_text()) if memo is not None and memo.is_file() else {}
    entry = known.get(str(root))
    if entry and entry["stamp"] == stamp:
        return entry["digest"]
    digest = dir_digest(root, exclude=NOT_IDENTITY)
    if memo is not None:
        known[str(root)] = {"stamp": stamp, "digest": digest}
        write_json_atomic(memo, known)
    return digest
