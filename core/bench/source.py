"""One interface over every benchmark source.

``open_benchmark(path)`` looks at what ``path`` is and returns a ``Benchmark``: a list
of ``TaskInstance`` records plus the list of invalid entries (empty unless
``skip_invalid`` turned errors into a report). Directories in the VBVR layout are read
by ``core.bench.vbvr`` (our synthetic benchmark is such a directory, with a
``meta.json`` beside each instance); RULER-Bench record files by ``core.bench.ruler``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.bench.record import Split, TaskInstance
from core.errors import InputError

BenchmarkKind = Literal["synth", "vbvr", "ruler"]


class InvalidItem(BaseModel):
    """An entry that could not be read, kept so that nothing is skipped silently."""

    where: str
    error: str


class Benchmark(BaseModel):
    """A loaded benchmark: its instances, and the entries that failed validation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: BenchmarkKind
    root: Path
    instances: list[TaskInstance]
    invalid: list[InvalidItem] = Field(default_factory=list)

    def output_path(self, out_root: str | Path, instance: TaskInstance, model: str | None = None) -> Path:
        """Where a model's video for ``instance`` goes, in the benchmark's official layout.

        VBVR (and synth): ``{split_dir}/{task_id}/{index}.mp4``.
        RULER: ``{model}/{task_name}/{index}.mp4``.
        """
        out_root = Path(out_root)
        if self.kind == "ruler":
            from core.bench.ruler import output_path as ruler_output_path

            return ruler_output_path(out_root, instance, model or "model")
        from core.bench.vbvr import output_path as vbvr_output_path

        return vbvr_output_path(out_root, instance)

    def write_output(
        self, out_root: str | Path, instance: TaskInstance, frames, fps: float = 8.0, model: str | None = None
    ) -> Path:
        """Write a model's (T, H, W, 3) uint8 video for ``instance`` where the benchmark expects it."""
        from core.media import write_video

        return write_video(self.output_path(out_root, instance, model), frames, fps=fps)

    def select(
        self,
        split: Split | None = None,
        families: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[TaskInstance]:
        """Instances filtered by split and family, in a stable order, first ``limit`` kept."""
        wanted = set(families) if families else None
        chosen = [
            inst
            for inst in self.instances
            if (split is None or inst.split == split) and (wanted is None or inst.task_family in wanted)
        ]
        return chosen[:limit] if limit is not None else chosen


def open_benchmark(path: str | Path, *, skip_invalid: bool = False, image_root: str | Path | None = None) -> Benchmark:
    """Open a benchmark from a VBVR-layout directory or a RULER record file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "benchmark path not found", "a VBVR-layout directory or a RULER .json/.jsonl/.parquet file")
    if path.is_dir():
        from core.bench.vbvr import read_vbvr

        return read_vbvr(path, skip_invalid=skip_invalid)
    if path.suffix.lower() in {".json", ".jsonl", ".parquet"}:
        from core.bench.ruler import read_ruler

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
        from core.bench.ruler import output_path as ruler_output_path

        return ruler_output_path(Path(out_root), instance, model)
    from core.bench.vbvr import output_path

    return output_path(Path(out_root) / model, instance)
