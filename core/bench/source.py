"""One interface over every benchmark source.

``open_benchmark(path)`` looks at what ``path`` is and returns a ``Benchmark``: a list
of ``TaskInstance`` records plus the list of invalid entries (empty unless
``skip_invalid`` turned errors into a report). Directories in the VBVR layout are read
by ``core.bench.vbvr`` (our synthetic benchmark is such a directory, with a
``meta.json`` beside each instance); RULER-Bench record files by ``core.bench.ruler``.

Imports run one way: this module imports the readers, and they import the ``Benchmark``
type and the output layouts from ``core.bench.layout``, never this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.bench.layout import Benchmark, ruler_output_path, vbvr_output_path
from core.bench.record import TaskInstance
from core.bench.ruler import read_ruler
from core.bench.vbvr import read_vbvr
from core.errors import InputError


def open_benchmark(path: str | Path, *, skip_invalid: bool = False, image_root: str | Path | None = None) -> Benchmark:
    """Open a benchmark from a VBVR-layout directory or a RULER record file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "benchmark path not found", "a VBVR-layout directory or a RULER .json/.jsonl/.parquet file")
    if path.is_dir():
        return read_vbvr(path, skip_invalid=skip_invalid)
    if path.suffix.lower() in {".json", ".jsonl", ".parquet"}:
        return read_ruler(path, image_root=image_root, skip_invalid=skip_invalid)
    raise InputError(path, "unknown benchmark format", "a VBVR-layout directory or a RULER .json/.jsonl/.parquet file")


def spread_over_families(instances: Sequence[TaskInstance], limit: int | None) -> list[TaskInstance]:
    """Up to ``limit`` instances taken round-robin over families (so a limit keeps every family)."""
    if limit is None or limit >= len(instances):
        return list(instances)
    by_family: dict[str, list[TaskInstance]] = {}
    for inst in instances:
        by_family.setdefault(inst.task_family, []).append(inst)
    picked: list[TaskInstance] = []
    k = 0
    while len(picked) < limit:
        for group in by_family.values():
            if k < len(group) and len(picked) < limit:
                picked.append(group[k])
        k += 1
    return picked


def official_output_path(out_root: str | Path, instance: TaskInstance, model: str) -> Path:
    """Where the benchmark's official scorer expects ``model``'s video for ``instance``.

    VBVR (and synth, which uses its layout): ``{model}/{split_dir}/{task_id}/{index}.mp4``;
    RULER: ``{model}/{task_name}/{index}.mp4``.
    """
    if instance.benchmark == "ruler":
        return ruler_output_path(Path(out_root), instance, model)
    return vbvr_output_path(Path(out_root) / model, instance)
