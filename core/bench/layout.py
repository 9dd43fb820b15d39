"""Where a benchmark's outputs lie, and the loaded ``Benchmark`` every reader returns.

Why this module exists: the readers (``core.bench.vbvr``, ``core.bench.ruler``) build a
``Benchmark``, and ``core.bench.source.open_benchmark`` picks the reader. When the
``Benchmark`` type lived in ``source`` the two imported each other. Here it depends only
on ``core.bench.record``, so imports run one way: ``source`` -> readers -> ``layout`` ->
``record``. The output layouts sit here too, because ``Benchmark.output_path`` and the id
of an invalid entry (``invalid_instance_id``) are read from them.

Output layouts (the ones the official scorers walk):

- VBVR (and synth, written in its layout): ``{out_root}/{split_dir}/{task_id}/{index}.mp4``;
- RULER: ``{out_root}/{model}/{task_name}/{index}.mp4``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.bench.record import Split, TaskInstance

BenchmarkKind = Literal["synth", "vbvr", "ruler"]

#: Prefix of the VBVR split directory names; the official data uses ``In-Domain_50`` /
#: ``Out-of-Domain_50``, synth writes ``..._{n_tasks}``.
SPLIT_DIR_PREFIX: dict[Split, str] = {Split.ID: "In-Domain", Split.OOD: "Out-of-Domain"}


def vbvr_output_path(out_root: Path, instance: TaskInstance) -> Path:
    """Where a model's video for ``instance`` goes: ``out_root/{split_dir}/{task_id}/{index}.mp4``.

    This is the layout the official VBVR toolkit walks to pair outputs with ground truth.
    """
    parts = instance.id.split("/")
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"instance id {instance.id!r} is not of the form '{{split_dir}}/{{task_id}}/{{index}}'")
    return Path(out_root) / parts[0] / instance.task_id / f"{instance.index}.mp4"


def ruler_output_path(out_root: Path, instance: TaskInstance, model: str) -> Path:
    """Where ``model``'s video for ``instance`` goes: ``out_root/{model}/{task_name}/{index}.mp4``.

    ``model`` becomes a directory name, so it must be one path component: a ``/`` in it
    would silently nest outputs where the official RULER-Bench evaluation does not look.
    """
    if not model or model in {".", ".."} or "/" in model or "\\" in model:
        raise ValueError(f"model name {model!r} must be a single path component (no '/', not '.' or '..')")
    return Path(out_root) / model / instance.task_id / f"{instance.index}.mp4"


class InvalidItem(BaseModel):
    """An entry that could not be read, kept so that nothing is skipped silently."""

    where: str
    error: str
    instance_id: str | None = Field(None, description="The instance's id where the entry is one instance and its id "
                                                       "is known (``Benchmark`` fills it from its layout), so that the "
                                                       "failure is recorded under the id a fixed entry gets.")


#: A RULER-Bench record's id as its errors name it once known: ``file:line n (task_name/index):field``.
_RULER_WHERE = re.compile(r"\(([^()/]+/-?\d+)\)")


def invalid_instance_id(kind: str, root: Path, where: str) -> str | None:
    """The id of the instance an invalid entry is, read from where its error points; None when that is no one instance.

    VBVR layout (and synth): a path inside ``{split_dir}/{task_id}/{index}/`` under ``root``.
    RULER: the ``(task_name/index)`` its errors carry once the record's key was read.
    """
    if kind == "ruler":
        found = _RULER_WHERE.findall(where)
        return found[-1] if found else None
    try:
        parts = Path(where).relative_to(root).parts
    except ValueError:
        return None
    if len(parts) < 3 or not parts[0].startswith(tuple(SPLIT_DIR_PREFIX.values())):
        return None
    return "/".join(part.split(":")[0] for part in parts[:3])


class Benchmark(BaseModel):
    """A loaded benchmark: its instances, and the entries that failed validation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: BenchmarkKind
    root: Path
    instances: list[TaskInstance]
    invalid: list[InvalidItem] = Field(default_factory=list)

    @model_validator(mode="after")
    def _invalid_ids(self) -> Benchmark:
        """Give each invalid entry its instance's id where the layout tells it (``invalid_instance_id``)."""
        for bad in self.invalid:
            if bad.instance_id is None:
                bad.instance_id = invalid_instance_id(self.kind, self.root, bad.where)
        return self

    def output_path(self, out_root: str | Path, instance: TaskInstance, model: str | None = None) -> Path:
        """Where a model's video for ``instance`` goes, in the benchmark's official layout.

        VBVR (and synth): ``{split_dir}/{task_id}/{index}.mp4``.
        RULER: ``{model}/{task_name}/{index}.mp4``.
        """
        out_root = Path(out_root)
        if self.kind == "ruler":
            return ruler_output_path(out_root, instance, model or "model")
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


def synth_bench_dir(work: str | Path, seed: int, per_family: int) -> Path:
    """Where ``vlmt evaluate`` generates its synth test instances inside a work dir (one place,
    so the run that writes them and the report that looks for their ground truth agree)."""
    return Path(work) / "bench" / f"synth-seed{seed}-pf{per_family}"
