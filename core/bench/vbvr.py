"""Reading and writing benchmarks in the official VBVR-Bench directory layout.

Why one reader for two sources: our built-in synthetic benchmark is written in exactly
the layout of the official VBVR-Bench data, so every later stage (and the official
toolkit) can treat both alike. The reader tells them apart by a ``meta.json`` with
``"generator": "vlmt-synth"`` beside an instance.

Layout of one benchmark root::

    VBVR-Bench.json                       # optional index (see below)
    In-Domain_50/ | Out-of-Domain_50/     # any name starting with In-Domain / Out-of-Domain;
                                          # VBVR-EvalKit scores these two exact names only
        {task_id}/                        # e.g. G-18_grid_shortest_path_data-generator
            {index}/                      # e.g. 00000
                first_frame.png           # the image condition            (required)
                prompt.txt                # the text condition             (required)
                final_frame.png           # expected end state             (required for synth)
                ground_truth.mp4          # reference solution video       (required for synth)
                meta.json                 # vlmt-synth only: family, faculty, split, size, ...
                first_video.mp4, last_video.mp4, ...   # written by some generators; ignored

Model outputs go to ``{out_root}/{split_dir}/{task_id}/{index}.mp4``
(``core.bench.layout.vbvr_output_path``, with the split prefixes ``SPLIT_DIR_PREFIX``),
the layout the official toolkit walks: it pairs each output video with the ground-truth
directory ``{gt_root}/{split_dir}/{task_id}/{index}/`` and reads ``ground_truth.mp4``,
``first_frame.png``, ``final_frame.png`` and ``prompt.txt`` from it. The toolkit does
not read ``VBVR-Bench.json``; that file is for inference scripts.

``VBVR-Bench.json`` field names. The official index is a JSON list with one object per
instance. The names below are those used by the official VBVR-Bench README (which
documents ``first_image``, ``prompt``, ``ground_truth_video_path`` and
``first_frame_path``) and by public inference scripts that consume the released file
(which also read ``id``, ``prompt_path`` and ``final_frame_path``):

- ``id``: the official file's sample identifier (a running number as far as we can
  tell). We write the instance's position in sorted order and never rely on it when
  reading.
- ``prompt``: the text prompt.
- ``first_image``: the first frame as base64-encoded PNG. We write plain base64; when
  reading we also accept a ``data:image/png;base64,`` prefix.
- ``first_frame_path``, ``final_frame_path``, ``prompt_path``,
  ``ground_truth_video_path``: paths relative to the benchmark root, with ``/``
  separators, of the form ``{split_dir}/{task_id}/{index}/{file}``.
- ``category`` (vlmt extension, not seen in the official file): the VBVR faculty of the
  instance, written when known. When reading, a ``category`` or ``faculty`` value that
  names one of the five faculties sets ``TaskInstance.faculty`` of official instances.

Cross-checking against the index. When ``VBVR-Bench.json`` exists, the directory tree
is still the source of truth (the toolkit reads the tree, not the index). An instance
listed in the index but missing on disk, or an index path that does not exist, is an
error. When the index prompt differs from ``prompt.txt``, ``prompt.txt`` wins and a
warning is logged, because ``prompt.txt`` is what the toolkit and the generators read.
Instances on disk that the index does not list are kept, with a warning.

Bad input raises ``core.errors.InputError`` naming the file or field and what was
expected; with ``skip_invalid=True`` each problem becomes an ``InvalidItem`` in
``Benchmark.invalid`` instead, and every readable instance is still returned.

Scoring official VBVR benchmarks (with the official VBVR-EvalKit toolkit) lives in
``core.bench.vbvr_official``. Synth benchmarks are scored by vlmt's own scorers.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from core.bench.layout import SPLIT_DIR_PREFIX, Benchmark, InvalidItem
from core.bench.record import Faculty, Purpose, Split, TaskInstance
from core.errors import InputError
from core.io import write_json_atomic

log = logging.getLogger(__name__)

#: Name of the official index file at the benchmark root.
INDEX_NAME = "VBVR-Bench.json"

FIRST_FRAME = "first_frame.png"
FINAL_FRAME = "final_frame.png"
GROUND_TRUTH = "ground_truth.mp4"
PROMPT = "prompt.txt"
META = "meta.json"

#: ``meta.json`` value of ``generator`` that marks an instance of our synthetic benchmark.
SYNTH_GENERATOR = "vlmt-synth"
#: The ``meta.json`` format versions this reader understands.
SYNTH_FORMAT_VERSIONS = (1,)

#: Index fields that hold instance paths, in the order we look for the instance directory.
_INDEX_PATH_FIELDS = ("first_frame_path", "prompt_path", "final_frame_path", "ground_truth_video_path")


def split_dir_name(split: Split, n_tasks: int) -> str:
    """The split directory name for ``n_tasks`` tasks, as the official data names it (``In-Domain_50``)."""
    if n_tasks < 0:
        raise ValueError(f"n_tasks must be >= 0, got {n_tasks}")
    return f"{SPLIT_DIR_PREFIX[Split(split)]}_{n_tasks}"


def split_from_dir(name: str) -> Split:
    """The split of a split directory, from its name prefix; anything else is an ``InputError``.

    Only the prefix counts, so that benchmarks with any number of tasks per split
    (``In-Domain_50``, ``In-Domain_7``) are accepted.
    """
    for split, prefix in SPLIT_DIR_PREFIX.items():
        if name.startswith(prefix):
            return split
    raise InputError(
        name, "not a split directory", "a name starting with " + " or ".join(repr(p) for p in SPLIT_DIR_PREFIX.values())
    )


# --------------------------------------------------------------------------- reading


class _Problems:
    """Raises each problem, or collects it as an ``InvalidItem`` when ``skip_invalid``."""

    def __init__(self, skip_invalid: bool):
        self.skip_invalid = skip_invalid
        self.items: list[InvalidItem] = []

    def report(self, error: InputError) -> None:
        if not self.skip_invalid:
            raise error
        log.warning("skipping invalid entry: %s", error)
        self.items.append(InvalidItem(where=error.where, error=str(error)))


def read_vbvr(root: Path, *, skip_invalid: bool = False) -> Benchmark:
    """Read a benchmark in the VBVR layout (official VBVR-Bench data or our synth output).

    The directory tree is walked; ``VBVR-Bench.json``, when present, is used to
    cross-check it and to supply faculties of official instances. See the module
    docstring for the rules.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "benchmark directory not found", "a directory in the VBVR-Bench layout")
    root = root.resolve()
    problems = _Problems(skip_invalid)

    split_dirs: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.name == INDEX_NAME and entry.is_file():
            continue
        if entry.is_dir():
            try:
                split_from_dir(entry.name)
            except InputError:
                problems.report(
                    InputError(
                        entry,
                        "unknown directory at the benchmark top level",
                        "only 'In-Domain*' / 'Out-of-Domain*' split directories and VBVR-Bench.json",
                    )
                )
                continue
            split_dirs.append(entry)
        else:
            # Released datasets carry README files and the like; they are not instances.
            log.warning("%s: ignoring file at the benchmark top level (not an instance)", entry)

    instance_dirs: list[tuple[Path, Path, Path]] = []  # (split_dir, task_dir, instance_dir)
    for split_dir in split_dirs:
        task_dirs = _subdirs(split_dir)
        if not task_dirs:
            problems.report(InputError(split_dir, "split directory holds no task directories", "{task_id}/{index}/"))
        for task_dir in task_dirs:
            inst_dirs = _subdirs(task_dir)
            if not inst_dirs:
                problems.report(InputError(task_dir, "task directory holds no instance directories", "{index}/ (e.g. 00000/)"))
            instance_dirs.extend((split_dir, task_dir, d) for d in inst_dirs)

    if not instance_dirs and not problems.items:
        raise InputError(root, "benchmark directory holds no instances", "{In-Domain*|Out-of-Domain*}/{task_id}/{index}/ directories")

    index_entries = _read_index(root, problems)
    index_by_rel = _index_by_instance(root, index_entries, problems) if index_entries is not None else None

    instances: list[TaskInstance] = []
    for split_dir, task_dir, inst_dir in instance_dirs:
        rel = f"{split_dir.name}/{task_dir.name}/{inst_dir.name}"
        entry = index_by_rel.get(rel) if index_by_rel is not None else None
        if index_by_rel is not None and entry is None:
            log.warning("%s: instance %s is not listed in %s", root / INDEX_NAME, rel, INDEX_NAME)
        try:
            instances.append(_read_instance(split_dir, task_dir, inst_dir, entry))
        except InputError as exc:
            problems.report(exc)
            continue
        if entry is not None:
            # Checked only for readable instances, so that one broken file is reported once.
            _check_index_files(root, entry, problems)

    if index_by_rel is not None:
        on_disk = {f"{s.name}/{t.name}/{d.name}" for s, t, d in instance_dirs}
        for rel in index_by_rel:
            if rel not in on_disk:
                problems.report(
                    InputError(f"{root / INDEX_NAME}:{rel}", "instance listed in the index is missing on disk", f"a directory {root / rel}")
                )

    instances.sort(key=lambda inst: tuple(inst.id.split("/")))
    kind = "synth" if instances and all(inst.benchmark == "synth" for inst in instances) else "vbvr"
    return Benchmark(kind=kind, root=root, instances=instances, invalid=problems.items)


def _subdirs(path: Path) -> list[Path]:
    """Non-hidden subdirectories, sorted; stray files are logged, not read."""
    dirs = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            dirs.append(entry)
        else:
            log.warning("%s: ignoring file where only directories are expected", entry)
    return dirs


def _read_index(root: Path, problems: _Problems) -> list[dict[str, Any]] | None:
    """The entries of ``VBVR-Bench.json``, or None when it is absent (or unusable and skipped)."""
    path = root / INDEX_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.report(InputError(path, f"unreadable index ({exc})", "a JSON list of instance objects"))
        return None
    if not isinstance(data, list):
        problems.report(InputError(path, f"top level is {type(data).__name__}", "a JSON list of instance objects"))
        return None
    entries = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            problems.report(InputError(f"{path}:[{i}]", f"entry is {type(entry).__name__}", "a JSON object"))
            continue
        entries.append(entry)
    return entries


def _index_by_instance(root: Path, entries: list[dict[str, Any]], problems: _Problems) -> dict[str, dict[str, Any]]:
    """Index entries keyed by ``{split_dir}/{task_id}/{index}``, derived from their path fields.

    Each path field must point at an existing file, so a stale index is caught here.
    """
    path = root / INDEX_NAME
    by_rel: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        where = f"{path}:[{i}]"
        try:
            rel = None
            for field in _INDEX_PATH_FIELDS:
                value = entry.get(field)
                if value is None:
                    continue
                if not isinstance(value, str) or not value:
                    raise InputError(f"{where}.{field}", f"value is {value!r}", "a relative path string")
                parts = [p for p in value.split("/") if p]
                if len(parts) != 4:
                    raise InputError(f"{where}.{field}", f"path {value!r} is not of the expected form", "'{split_dir}/{task_id}/{index}/{file}'")
                entry_rel = "/".join(parts[:3])
                if rel is None:
                    rel = entry_rel
                elif entry_rel != rel:
                    raise InputError(f"{where}.{field}", f"path {value!r} lies outside {rel!r}", "all paths of an entry in one instance directory")
            if rel is None:
                raise InputError(where, "entry has no path field", "one of " + ", ".join(_INDEX_PATH_FIELDS))
            if "prompt" in entry and not isinstance(entry["prompt"], str):
                raise InputError(f"{where}.prompt", f"value is {type(entry['prompt']).__name__}", "a string")
            if rel in by_rel:
                raise InputError(where, f"instance {rel!r} is listed twice", "one entry per instance")
        except InputError as exc:
            problems.report(exc)
            continue
        by_rel[rel] = entry
    return by_rel


def _check_index_files(root: Path, entry: dict[str, Any], problems: _Problems) -> None:
    """Every path an index entry names must exist: a stale index misleads inference scripts."""
    for field in _INDEX_PATH_FIELDS:
        value = entry.get(field)
        if isinstance(value, str) and not (root / value).is_file():
            problems.report(
                InputError(
                    f"{root / INDEX_NAME}:{field}={value}",
                    f"file {root / value} not found",
                    "index paths that exist relative to the benchmark root",
                )
            )


def _read_instance(split_dir: Path, task_dir: Path, inst_dir: Path, entry: dict[str, Any] | None) -> TaskInstance:
    """One instance directory as a TaskInstance; raises InputError on the first problem found."""
    dir_split = split_from_dir(split_dir.name)
    inst_id = f"{split_dir.name}/{task_dir.name}/{inst_dir.name}"
    meta = _read_meta(inst_dir / META)
    prompt = _read_prompt(inst_dir / PROMPT)

    if entry is not None and isinstance(entry.get("prompt"), str) and entry["prompt"].strip() != prompt:
        log.warning(
            "%s: prompt differs from %s in %s; using prompt.txt (what the official toolkit reads)",
            inst_dir / PROMPT,
            inst_id,
            INDEX_NAME,
        )

    first_frame = inst_dir / FIRST_FRAME
    final_frame = inst_dir / FINAL_FRAME
    ground_truth = inst_dir / GROUND_TRUTH

    if meta is not None and meta.get("generator") == SYNTH_GENERATOR:
        _validate_synth_meta(inst_dir / META, meta, dir_split)
        size = (meta["width"], meta["height"])
        _check_image(first_frame, size)
        _check_image(final_frame, size)
        _check_video(ground_truth)
        return TaskInstance(
            id=inst_id,
            benchmark="synth",
            split=dir_split,
            task_family=meta["family"],
            task_id=task_dir.name,
            index=inst_dir.name,
            faculty=Faculty(meta["faculty"]),
            prompt=prompt,
            first_frame=first_frame,
            final_frame=final_frame,
            ground_truth=ground_truth,
            metadata=meta,
        )

    _check_image(first_frame, None)
    has_final = final_frame.exists()
    if has_final:
        _check_image(final_frame, None)
    has_gt = ground_truth.exists()
    if has_gt:
        _check_video(ground_truth)
    return TaskInstance(
        id=inst_id,
        benchmark="vbvr",
        split=dir_split,
        task_family=task_dir.name,
        task_id=task_dir.name,
        index=inst_dir.name,
        faculty=_faculty_from_entry(entry, inst_id),
        prompt=prompt,
        first_frame=first_frame,
        final_frame=final_frame if has_final else None,
        ground_truth=ground_truth if has_gt else None,
        metadata=meta or {},
    )


def _read_meta(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable meta.json ({exc})", "a JSON object") from exc
    if not isinstance(meta, dict):
        raise InputError(path, f"top level is {type(meta).__name__}", "a JSON object")
    return meta


def _read_prompt(path: Path) -> str:
    if not path.is_file():
        raise InputError(path, "file not found", "the instance's text prompt (prompt.txt)")
    try:
        prompt = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"unreadable prompt ({exc})", "a UTF-8 text file") from exc
    if not prompt:
        raise InputError(path, "prompt is empty", "a non-empty text prompt")
    return prompt


def _check_image(path: Path, size: tuple[int, int] | None) -> None:
    """Check that ``path`` is a readable image (header only) of ``size`` = (width, height) if given.

    Only the header is parsed: a benchmark has thousands of frames, and a wrong size or
    a non-image is what goes wrong in practice.
    """
    if not path.is_file():
        raise InputError(path, "file not found", "an RGB image (PNG)")
    try:
        with Image.open(path) as im:
            actual = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(path, f"unreadable image ({exc})", "an RGB image (PNG)") from exc
    if size is not None and tuple(actual) != tuple(size):
        raise InputError(
            path,
            f"image is {actual[0]}x{actual[1]}",
            f"{size[0]}x{size[1]} (width x height from meta.json)",
        )


def _check_video(path: Path) -> None:
    """Check that the video exists and is not empty; decoding is left to the scorers (too slow here)."""
    if not path.is_file():
        raise InputError(path, "file not found", "the ground-truth video (mp4)")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty", "the ground-truth video (mp4)")


def _validate_synth_meta(path: Path, meta: dict[str, Any], dir_split: Split) -> None:
    """Check the fields every later stage relies on, so that a broken meta.json fails here, not mid-run."""

    def need(field: str, ok: Callable[[Any], bool], expected: str) -> Any:
        if field not in meta:
            raise InputError(f"{path}:{field}", "field missing", expected)
        value = meta[field]
        if not ok(value):
            raise InputError(f"{path}:{field}", f"value is {value!r}", expected)
        return value

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need("format_version", lambda v: is_int(v) and v in SYNTH_FORMAT_VERSIONS, " or ".join(map(str, SYNTH_FORMAT_VERSIONS)))
    need("family", lambda v: isinstance(v, str) and bool(v), "a non-empty family name")
    need("faculty", lambda v: v in {f.value for f in Faculty}, "one of " + "|".join(f.value for f in Faculty))
    split = need("split", lambda v: v in {s.value for s in Split}, "ID or OOD")
    need("purpose", lambda v: v in {p.value for p in Purpose}, "train or test")
    need("width", lambda v: is_int(v) and v > 0, "a positive integer")
    need("height", lambda v: is_int(v) and v > 0, "a positive integer")
    need("n_frames", lambda v: is_int(v) and v > 0, "a positive integer")
    need("fps", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a positive number")
    if Split(split) != dir_split:
        raise InputError(
            f"{path}:split",
            f"meta.json says {split} but the instance lies in a {SPLIT_DIR_PREFIX[dir_split]}* directory",
            f"{dir_split.value}",
        )


def _faculty_from_entry(entry: dict[str, Any] | None, inst_id: str) -> Faculty | None:
    """The faculty named by an index entry's ``category``/``faculty``, if it names one of the five."""
    if entry is None:
        return None
    for field in ("category", "faculty"):
        value = entry.get(field)
        if value is None:
            continue
        if isinstance(value, str):
            for faculty in Faculty:
                if faculty.value.lower() == value.strip().lower():
                    return faculty
        log.warning("%s: index %s %r is not one of the VBVR faculties; faculty left unset", inst_id, field, value)
    return None


# --------------------------------------------------------------------------- writing


def write_index(root: Path, instances: list[TaskInstance]) -> Path:
    """Write ``root/VBVR-Bench.json`` for ``instances`` in the official field naming, atomically.

    Inference scripts written for the official data iterate over this file, so a synth
    benchmark with an index can be fed to them unchanged.
    """
    root = Path(root).resolve()
    ordered = sorted(instances, key=lambda inst: tuple(inst.id.split("/")))
    entries: list[dict[str, Any]] = []
    for number, inst in enumerate(ordered):
        if inst.first_frame is None:
            raise InputError(inst.id, "instance has no first frame", "a first_frame.png for every VBVR-layout instance")
        inst_dir = Path(inst.first_frame).parent
        prompt_file = inst_dir / PROMPT
        if not prompt_file.is_file():
            raise InputError(prompt_file, "file not found", "the instance's prompt.txt beside first_frame.png")
        entry: dict[str, Any] = {
            "id": number,
            "prompt": inst.prompt,
            "first_image": _png_base64(Path(inst.first_frame)),
            "first_frame_path": _relative(root, Path(inst.first_frame)),
            "prompt_path": _relative(root, prompt_file),
        }
        if inst.final_frame is not None:
            entry["final_frame_path"] = _relative(root, Path(inst.final_frame))
        if inst.ground_truth is not None:
            entry["ground_truth_video_path"] = _relative(root, Path(inst.ground_truth))
        if inst.faculty is not None:
            entry["category"] = inst.faculty.value
        entries.append(entry)
    path = write_json_atomic(root / INDEX_NAME, entries)
    log.info("wrote %s (%d instances)", path, len(entries))
    return path


def _relative(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators; the index must stay valid when the root moves."""
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError as exc:
        raise InputError(path, f"file lies outside the benchmark root {root}", "instance files inside the benchmark directory") from exc


def _png_base64(path: Path) -> str:
    """The image at ``path`` as base64-encoded PNG (re-encoded only if it is not PNG already)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"unreadable image ({exc})", "an RGB image (PNG)") from exc
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        try:
            with Image.open(io.BytesIO(data)) as im:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                data = buf.getvalue()
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(path, f"unreadable image ({exc})", "an RGB image (PNG)") from exc
    return base64.b64encode(data).decode("ascii")
