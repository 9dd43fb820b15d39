"""RULER-Bench: reading its record file into ``TaskInstance`` records.

Why this module exists: RULER-Bench is not a directory of instances like VBVR but a
record file (JSON, JSONL or Parquet), and it is scored not by comparison with a
ground-truth video but by a VLM judge that answers a per-instance checklist. So it
needs its own reader (records -> ``TaskInstance``), which this module is. The rest of
RULER-Bench lives beside it, each module with one job:

- ``core.bench.ruler_paths``: which image paths a record may name (inside the benchmark,
  image files);
- ``core.bench.ruler_scores``: label scores and the official aggregation (``aggregate``);
- ``core.bench.ruler_replies``: reading judge replies into labels;
- ``core.bench.ruler_judge``: the judge protocol, run with a local Qwen-VL model;
- ``core.bench.layout``: the output layout (``ruler_output_path``) and ``Benchmark``.

Imports run one way: ``ruler_judge`` -> ``ruler_replies`` -> ``ruler_scores`` -> this
module -> ``ruler_paths``.

Record fields (from the public dataset card): ``prompt``, ``implicit_explanation``,
``index`` (int), ``checklist`` (a JSON string), ``task_name``, ``category``,
``input_image_path``, ``initial_scenario``, ``gt_image_path``, ``input_video_path``.
T2V instances have no input image, so image paths may be null or empty.

Required per record: ``task_name``, ``index``, ``category``, ``prompt`` and
``checklist``; the others are optional because the card allows them to be null and a
record file without them still defines a complete task. ``checklist`` is an ordered
list of one-key objects ``{dimension: question}``; we also accept an already-decoded
list (some conversions of the data store it that way). Dimension names are matched
after trimming and ignoring case, then stored in their canonical spelling.

Categories. The record's ``category`` is accepted as given, normalised so that
spellings of one category group together: trimmed, lower-cased, and runs of
underscores, hyphens and spaces collapsed to one space ("vision_rule", "Vision-Rule"
and "vision rule" all become "vision rule"). ``CATEGORY_TASKS`` lists the six
categories of the card; an unknown category is kept (normalised) with a warning rather
than rejected, so that a later release with a new category still loads. "vision rule"
instances have no Instruction Following question; one that has is an error, because
the official aggregation would otherwise score a dimension that category does not have.

Image paths (``input_image_path``, ``gt_image_path``) must lie inside ``image_root``
(default: the record file's directory) and name existing image files; anything else is
an error naming the record and field (``core.bench.ruler_paths``).

Outputs go to ``{out_root}/{model}/{task_name}/{index}.mp4``, the official layout
(``core.bench.layout.ruler_output_path``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.bench.layout import Benchmark, InvalidItem
from core.bench.record import RULER_DIMENSIONS, ChecklistItem, TaskInstance
from core.bench.ruler_paths import resolve_image
from core.errors import InputError

log = logging.getLogger(__name__)

INSTRUCTION_FOLLOWING = "Instruction Following"
VISION_RULE = "vision rule"

#: The six RULER-Bench categories (normalised names) and their tasks, as on the dataset card.
CATEGORY_TASKS: dict[str, tuple[str, ...]] = {
    "science": ("chemistry", "physics", "biology", "earth", "math", "medicine", "life"),
    "game": (
        "chess",
        "puzzle",
        "gomoku",
        "sudoku",
        "maze",
        "minesweeper",
        "number_sliding_puzzle",
        "sticks",
        "xiangqi",
        "Go",
    ),
    "semantic": ("idioms", "metaphors", "definition"),
    "hypothetical": ("subjective_change", "objective_change"),
    "humanity": ("transportation", "sport", "social", "safety", "festival", "dress", "food", "emotion"),
    VISION_RULE: ("anomaly", "color", "count", "direction", "position", "shape", "size", "style", "view", "motion"),
}

#: Task name (lower-cased) -> category, for the consistency warning in ``read_ruler``.
TASK_CATEGORY: dict[str, str] = {task.lower(): cat for cat, tasks in CATEGORY_TASKS.items() for task in tasks}

REQUIRED_FIELDS: tuple[str, ...] = ("task_name", "index", "category", "prompt", "checklist")
OPTIONAL_TEXT_FIELDS: tuple[str, ...] = ("implicit_explanation", "initial_scenario", "input_video_path")
IMAGE_FIELDS: tuple[str, ...] = ("input_image_path", "gt_image_path")

_DIMENSION_BY_KEY: dict[str, str] = {d.lower(): d for d in RULER_DIMENSIONS}
_DIMENSIONS_TEXT = ", ".join(repr(d) for d in RULER_DIMENSIONS)


def normalise_category(raw: str) -> str:
    """The category name records and judgements are grouped by.

    Case, surrounding space and the choice of ``_``/``-``/space between words vary
    between conversions of the data; they must not split one category in two.
    """
    return re.sub(r"[\s_\-]+", " ", raw.strip()).lower()


def normalise_dimension(raw: str) -> str | None:
    """The canonical spelling of a checklist dimension, or None when it is not one of the four."""
    return _DIMENSION_BY_KEY.get(re.sub(r"\s+", " ", raw.strip()).lower())



# --------------------------------------------------------------------------- reading


def _iter_raw_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(locator, raw record) pairs from a JSON, JSONL or Parquet file.

    The locator (``file[i]`` or ``file:line n``) is what errors name, so a user can find
    the record even when its own fields are too broken to identify it.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import polars as pl

        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several unrelated types for unreadable files
            raise InputError(path, f"cannot read Parquet file: {exc}", "a Parquet file of RULER-Bench records") from exc
        for i, row in enumerate(frame.iter_rows(named=True)):
            yield f"{path}[{i}]", row
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read file: {exc}", "a UTF-8 JSON/JSONL file of RULER-Bench records") from exc
    if suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                # Yield the error instead of raising so that skip_invalid can keep going.
                where = f"{path}:line {lineno}"
                yield where, InputError(where, f"not valid JSON: {exc.msg}", "one JSON object per line")
        return
    expected_json = 'a JSON list of records or {"data": [...]}'
    if suffix != ".json":
        raise InputError(path, "unknown record file type", "a .json, .jsonl or .parquet file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg} at line {exc.lineno}", expected_json) from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise InputError(path, "top level is neither a list nor an object with a 'data' list", expected_json)
    for i, record in enumerate(data):
        yield f"{path}[{i}]", record


def _parse_index(value: Any, where: str) -> int:
    """The record's integer index; integer-valued floats and digit strings are accepted.

    Floats occur when a converter stored the column as float (e.g. because of nulls);
    digit strings when JSON was written by hand. Both name the same instance.
    """
    if isinstance(value, bool):
        raise InputError(where, f"index is a boolean ({value!r})", "a non-negative integer")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value.strip())
    else:
        raise InputError(where, f"index {value!r} is not an integer", "a non-negative integer")
    if result < 0:
        raise InputError(where, f"index {result} is negative", "a non-negative integer")
    return result


def _parse_checklist(value: Any, where: str) -> list[ChecklistItem]:
    """The checklist of one record, validated entry by entry."""
    expected_shape = 'a JSON list of one-key objects {dimension: question}, e.g. [{"Visual Fidelity": "..."}]'
    if isinstance(value, str):
        try:
            entries = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(where, f"not valid JSON: {exc.msg}", expected_shape) from exc
    else:
        entries = value
    if not isinstance(entries, list):
        raise InputError(where, f"is a {type(entries).__name__}, not a list", expected_shape)
    if not entries:
        raise InputError(where, "is empty", "at least one checklist question")
    items: list[ChecklistItem] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or len(entry) != 1:
            shape = f"an object with {len(entry)} keys" if isinstance(entry, dict) else f"a {type(entry).__name__}"
            raise InputError(f"{where}[{i}]", f"entry is {shape}", "a one-key object {dimension: question}")
        ((raw_dim, question),) = entry.items()
        dimension = normalise_dimension(str(raw_dim))
        if dimension is None:
            raise InputError(f"{where}[{i}]", f"unknown dimension {raw_dim!r}", f"one of {_DIMENSIONS_TEXT}")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{where}[{i}]", f"question for {dimension!r} is empty or not a string", "a non-empty question string")
        items.append(ChecklistItem(dimension=dimension, question=question.strip()))
    return items


def _optional_text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InputError(where, f"is a {type(value).__name__}, not a string", "a string or null")


def _record_to_instance(record: Any, locator: str, position: int, image_root: Path) -> tuple[tuple[str, int], TaskInstance]:
    """Validate one raw record and build its ``TaskInstance``; returns its (task_name, index) key too."""
    if isinstance(record, InputError):
        raise record
    if not isinstance(record, dict):
        raise InputError(locator, f"record is a {type(record).__name__}", "a JSON object with the RULER-Bench fields")
    missing = [f for f in REQUIRED_FIELDS if record.get(f) is None]
    if missing:
        raise InputError(
            f"{locator}:{missing[0]}", f"missing required field(s) {', '.join(missing)}", f"fields {', '.join(REQUIRED_FIELDS)}"
        )

    task_name = record["task_name"]
    # task_name becomes a directory of the output layout, so it must be one path component.
    if not isinstance(task_name, str) or task_name.strip() in {"", ".", ".."} or "/" in task_name or "\\" in task_name:
        raise InputError(
            f"{locator}:task_name", f"invalid task_name {task_name!r}", "a non-empty name usable as a directory (no '/')"
        )
    task_name = task_name.strip()
    index = _parse_index(record["index"], f"{locator}:index")
    # From here on errors also name the instance, which is how the dataset refers to it.
    where = f"{locator} ({task_name}/{index})"

    raw_category = record["category"]
    if not isinstance(raw_category, str) or not normalise_category(raw_category):
        raise InputError(f"{where}:category", f"invalid category {raw_category!r}", f"one of {', '.join(CATEGORY_TASKS)}")
    category = normalise_category(raw_category)
    if category not in CATEGORY_TASKS:
        log.warning("%s: unknown category %r (known: %s); kept as %r", where, raw_category, ", ".join(CATEGORY_TASKS), category)
    elif TASK_CATEGORY.get(task_name.lower(), category) != category:
        log.warning("%s: task %r is listed under %r, record says %r", where, task_name, TASK_CATEGORY[task_name.lower()], category)

    prompt = record["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}:prompt", "prompt is empty or not a string", "a non-empty prompt string")

    checklist = _parse_checklist(record["checklist"], f"{where}:checklist")
    if category == VISION_RULE and any(item.dimension == INSTRUCTION_FOLLOWING for item in checklist):
        raise InputError(
            f"{where}:checklist",
            "a 'vision rule' instance has an Instruction Following question",
            "no Instruction Following questions in the vision rule category",
        )

    first_frame = resolve_image(record.get("input_image_path"), image_root, f"{where}:input_image_path")
    final_frame = resolve_image(record.get("gt_image_path"), image_root, f"{where}:gt_image_path")
    metadata: dict[str, Any] = {f: _optional_text(record.get(f), f"{where}:{f}") for f in OPTIONAL_TEXT_FIELDS}
    metadata.update(
        input_image_path=record.get("input_image_path") or None,
        gt_image_path=record.get("gt_image_path") or None,
        category_raw=raw_category,
        record_position=position,
    )
    instance = TaskInstance(
        id=f"{task_name}/{index}",
        benchmark="ruler",
        split=None,
        task_family=task_name,
        task_id=task_name,
        index=str(index),
        category=category,
        prompt=prompt,
        first_frame=first_frame,
        final_frame=final_frame,
        metadata=metadata,
        checklist=checklist,
    )
    return (task_name, index), instance


def read_ruler(path: Path, *, image_root: Path | None = None, skip_invalid: bool = False) -> Benchmark:
    """Read a RULER-Bench record file (``.json``, ``.jsonl`` or ``.parquet``) into a ``Benchmark``.

    Every bad record raises ``InputError`` naming the record (file and position, plus
    task/index once known) and the field; with ``skip_invalid`` it becomes an
    ``InvalidItem`` and the valid records are still returned. Problems with the file as
    a whole (unreadable, wrong top-level shape) always raise: there is nothing to keep.
    A second record with the same (task_name, index) is invalid, the first is kept:
    both would write the same output video.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "record file not found", "a RULER-Bench .json, .jsonl or .parquet file")
    root = Path(image_root) if image_root is not None else path.parent
    instances: list[TaskInstance] = []
    invalid: list[InvalidItem] = []
    seen: dict[tuple[str, int], str] = {}
    for position, (locator, record) in enumerate(_iter_raw_records(path)):
        try:
            key, instance = _record_to_instance(record, locator, position, root)
            if key in seen:
                raise InputError(
                    f"{locator} ({key[0]}/{key[1]}):index",
                    f"duplicate (task_name, index) {key}, first at {seen[key]}",
                    "unique (task_name, index) pairs",
                )
        except InputError as exc:
            if not skip_invalid:
                raise
            invalid.append(InvalidItem(where=exc.where, error=str(exc)))
            continue
        seen[key] = locator
        instances.append(instance)
    if invalid:
        log.warning("%s: skipped %d invalid record(s), read %d", path, len(invalid), len(instances))
    else:
        log.info("%s: read %d RULER-Bench instance(s)", path, len(instances))
    return Benchmark(kind="ruler", root=path.parent, instances=instances, invalid=invalid)
