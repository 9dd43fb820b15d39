"""RULER-Bench: reading its records, parsing judge replies, aggregating scores.

Why this module exists: RULER-Bench is not a directory of instances like VBVR but a
record file (JSON, JSONL or Parquet), and it is scored not by comparison with a
ground-truth video but by a VLM judge that answers a per-instance checklist. So it
needs its own reader (records -> ``TaskInstance``), a strict parser for judge replies
and the official aggregation of checklist labels into 0-100 scores.

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

Image paths are relative to ``image_root`` (default: the record file's directory);
absolute paths are used as they are. A path that is given but does not exist is an
error: a silently missing first frame would turn an I2V task into a T2V task.

Judge protocol: one label per checklist question, Good / Medium / Poor, in checklist
order. A reply with the wrong number of labels or an unknown label raises
``InvalidJudgeReply`` so that the caller retries the judge; it is never counted.

Scores (``aggregate``): Good = 2, Medium = 1, Poor = 0.

- per instance and dimension: the mean label score of that dimension's questions;
- ``per_category[c][d]``: mean over the instances of ``c`` that have ``d`` of those
  values, times 50 (so 0-100);
- ``category_avg[c]``: mean over the instances of ``c`` of the instance's mean over its
  dimensions, times 50;
- ``overall_per_dimension[d]``: mean over the categories that have ``d`` of
  ``per_category[c][d]`` (so "vision rule" does not enter Instruction Following);
- ``overall_average``: mean of the four ``overall_per_dimension`` values.

Outputs go to ``{out_root}/{model}/{task_name}/{index}.mp4``, the official layout.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.bench.record import (
    RULER_DIMENSIONS,
    ChecklistItem,
    RulerDimension,
    TaskInstance,
)
from core.bench.source import Benchmark, InvalidItem
from core.errors import InputError, VlmtError

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

Label = Literal["Good", "Medium", "Poor"]
LABEL_SCORES: dict[str, int] = {"Good": 2, "Medium": 1, "Poor": 0}

REQUIRED_FIELDS: tuple[str, ...] = ("task_name", "index", "category", "prompt", "checklist")
OPTIONAL_TEXT_FIELDS: tuple[str, ...] = ("implicit_explanation", "initial_scenario", "input_video_path")
IMAGE_FIELDS: tuple[str, ...] = ("input_image_path", "gt_image_path")

_DIMENSION_BY_KEY: dict[str, str] = {d.lower(): d for d in RULER_DIMENSIONS}
_DIMENSIONS_TEXT = ", ".join(repr(d) for d in RULER_DIMENSIONS)
_LABELS_TEXT = "/".join(LABEL_SCORES)


def normalise_category(raw: str) -> str:
    """The category name records and judgements are grouped by.

    Case, surrounding space and the choice of ``_``/``-``/space between words vary
    between conversions of the data; they must not split one category in two.
    """
    return re.sub(r"[\s_\-]+", " ", raw.strip()).lower()


def normalise_dimension(raw: str) -> str | None:
    """The canonical spelling of a checklist dimension, or None when it is not one of the four."""
    return _DIMENSION_BY_KEY.get(re.sub(r"\s+", " ", raw.strip()).lower())


def output_path(out_root: Path, instance: TaskInstance, model: str) -> Path:
    """Where ``model``'s video for ``instance`` goes: ``out_root/{model}/{task_name}/{index}.mp4``.

    ``model`` becomes a directory name, so it must be one path component: a ``/`` in it
    would silently nest outputs where the official evaluation does not look.
    """
    if not model or model in {".", ".."} or "/" in model or "\\" in model:
        raise ValueError(f"model name {model!r} must be a single path component (no '/', not '.' or '..')")
    return Path(out_root) / model / instance.task_id / f"{instance.index}.mp4"


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


def _resolve_image(value: Any, image_root: Path, where: str) -> Path | None:
    """The absolute image path, or None where the record gives none (T2V tasks)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InputError(where, f"is a {type(value).__name__}, not a path string", "a path relative to the image root, or null")
    path = Path(value.strip())
    if not path.is_absolute():
        path = image_root / path
    if not path.is_file():
        raise InputError(where, f"image not found: {path}", f"an existing file (relative paths resolve against {image_root})")
    return path.resolve()


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

    first_frame = _resolve_image(record.get("input_image_path"), image_root, f"{where}:input_image_path")
    final_frame = _resolve_image(record.get("gt_image_path"), image_root, f"{where}:gt_image_path")
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


# --------------------------------------------------------------------------- judge replies


class InvalidJudgeReply(VlmtError):
    """A judge reply that cannot be scored; the caller should ask the judge again.

    Raised instead of guessing, because a mis-assigned or dropped label would change
    the score silently.
    """

    def __init__(self, problem: str, n_questions: int, reply: str):
        self.problem = problem
        self.n_questions = n_questions
        self.reply = reply
        excerpt = reply if len(reply) <= 200 else reply[:200] + "..."
        super().__init__(
            f"invalid judge reply: {problem} (expected exactly {n_questions} label(s), one per checklist question "
            f"in order, each one of {_LABELS_TEXT}); reply was {excerpt!r}"
        )


_LABEL_BY_KEY = {label.lower(): label for label in LABEL_SCORES}
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
# "1. Good", "1) Good", "1: Good", "(1) Good", "Q1: Good", "Question 1 - Good"
_NUMBERED = re.compile(r"^(?:\(?\s*(?:q(?:uestion)?\s*)?(\d+)\s*[.):\-]?\s*\)?)\s*(.*)$", re.IGNORECASE)
_BULLET = re.compile(r"^[-*\u2022]\s+")


def _canonical_label(token: Any) -> str | None:
    """``token`` as a label, ignoring case, surrounding markdown emphasis, quotes and final punctuation."""
    if not isinstance(token, str):
        return None
    cleaned = token.strip().strip("*_`\"'").strip().rstrip(".,;!").strip("*_`\"'").strip()
    return _LABEL_BY_KEY.get(cleaned.lower())


def _labels_from_json(text: str) -> list[Any] | None:
    """The label list of a JSON reply (a list, or an object holding exactly one list), else None."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    return data if isinstance(data, list) else None


def parse_judge_labels(reply: str, n_questions: int) -> list[str]:
    """The labels of a judge reply, one per checklist question, in canonical spelling.

    Accepted shapes (case-insensitive, optionally inside a ``` code fence):

    - a JSON list of labels, ``["Good", "Poor"]``, or an object holding one such list;
    - one label per line, optionally numbered (``1. Good``, ``2) Poor``, ``Q3: Medium``)
      or bulleted, blank lines ignored; numbers, when given, must run 1..n in order,
      since labels are matched to questions by position;
    - a single line of comma-separated labels, ``Good, Medium, Poor``.

    Anything else (wrong count, unknown label, commentary lines) raises
    ``InvalidJudgeReply``.
    """
    if n_questions < 1:
        raise ValueError(f"n_questions must be >= 1, got {n_questions}")
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text:
        raise InvalidJudgeReply("reply is empty", n_questions, reply)

    json_labels = _labels_from_json(text) if text[0] in "[{" else None
    if json_labels is not None:
        tokens: list[Any] = json_labels
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) == 1 and "," in lines[0]:
            lines = [part.strip() for part in lines[0].split(",") if part.strip()]
        tokens = []
        numbers: list[int] = []
        for line in lines:
            line = _BULLET.sub("", line)
            numbered = _NUMBERED.match(line)
            if numbered and numbered.group(1) is not None and numbered.group(2):
                numbers.append(int(numbered.group(1)))
                line = numbered.group(2)
            tokens.append(line)
        if numbers and numbers != list(range(1, len(tokens) + 1)):
            raise InvalidJudgeReply(f"numbering {numbers} does not run 1..{len(tokens)} in order", n_questions, reply)

    labels: list[str] = []
    for i, token in enumerate(tokens, start=1):
        label = _canonical_label(token)
        if label is None:
            raise InvalidJudgeReply(f"label {i} is {token!r}, not a known label", n_questions, reply)
        labels.append(label)
    if len(labels) != n_questions:
        raise InvalidJudgeReply(f"got {len(labels)} label(s)", n_questions, reply)
    return labels


# --------------------------------------------------------------------------- aggregation


class JudgedQuestion(BaseModel):
    """One checklist question with the judge's label for it."""

    model_config = ConfigDict(frozen=True)

    dimension: RulerDimension
    question: str
    label: Label


class RulerJudgement(BaseModel):
    """The judge's labels for one instance, ready for ``aggregate``.

    ``category`` is normalised like the reader does, so that judgements built from raw
    records and from ``TaskInstance`` group together.
    """

    model_config = ConfigDict(frozen=True)

    instance_id: str
    task_name: str
    category: str
    labels: list[JudgedQuestion]

    @field_validator("category")
    @classmethod
    def _normalise_category(cls, value: str) -> str:
        category = normalise_category(value)
        if not category:
            raise ValueError("category is empty")
        return category

    @model_validator(mode="after")
    def _check(self) -> RulerJudgement:
        if not self.labels:
            raise ValueError(f"{self.instance_id}: no labels; every instance has at least one checklist question")
        if self.category == VISION_RULE and any(q.dimension == INSTRUCTION_FOLLOWING for q in self.labels):
            raise ValueError(f"{self.instance_id}: a 'vision rule' instance cannot have Instruction Following labels")
        return self


def judgement_from_reply(instance: TaskInstance, reply: str) -> RulerJudgement:
    """Pair a judge reply's labels with ``instance``'s checklist; raises ``InvalidJudgeReply`` to retry."""
    if not instance.checklist:
        raise ValueError(f"{instance.id}: instance has no checklist")
    labels = parse_judge_labels(reply, len(instance.checklist))
    return RulerJudgement(
        instance_id=instance.id,
        task_name=instance.task_id,
        category=instance.category or "",
        labels=[JudgedQuestion(dimension=c.dimension, question=c.question, label=lab) for c, lab in zip(instance.checklist, labels)],
    )


class RulerReport(BaseModel):
    """RULER-Bench scores on the 0-100 scale (see the module docstring for the formulas)."""

    per_category: dict[str, dict[str, float]] = Field(description="category -> dimension -> score")
    category_avg: dict[str, float] = Field(description="category -> mean over instances of the per-instance dimension mean")
    overall_per_dimension: dict[str, float] = Field(description="dimension -> mean over the categories that have it")
    overall_average: float = Field(description="mean of the overall per-dimension scores")
    n_instances: dict[str, int] = Field(description="category -> number of judged instances")


def _mean(values: Iterable[Fraction]) -> Fraction:
    values = list(values)
    return sum(values, Fraction(0)) / len(values)


def _category_order(categories: Iterable[str]) -> list[str]:
    """Card order for the known categories, then unknown ones alphabetically: stable reports."""
    known = list(CATEGORY_TASKS)
    return sorted(set(categories), key=lambda c: (known.index(c) if c in known else len(known), c))


def aggregate(judgements: Iterable[RulerJudgement]) -> RulerReport:
    """Official RULER-Bench scores from per-instance judgements.

    Computed with exact fractions and converted to float at the end, so that scores do
    not depend on the order of instances. An invalid label or a repeated instance id
    raises instead of being counted: both would bias the score without a trace.
    """
    per_cat_dim: dict[str, dict[str, list[Fraction]]] = defaultdict(lambda: defaultdict(list))
    per_cat_inst: dict[str, list[Fraction]] = defaultdict(list)
    seen: set[str] = set()
    for judgement in judgements:
        if judgement.instance_id in seen:
            raise ValueError(f"instance {judgement.instance_id!r} judged twice; pass one judgement per instance")
        seen.add(judgement.instance_id)
        by_dim: dict[str, list[int]] = defaultdict(list)
        for q in judgement.labels:
            if q.label not in LABEL_SCORES:  # guards judgements built with model_construct
                raise InvalidJudgeReply(
                    f"{judgement.instance_id}: label {q.label!r} is not a known label", len(judgement.labels), str(q.label)
                )
            if q.dimension not in RULER_DIMENSIONS:
                raise ValueError(f"{judgement.instance_id}: unknown dimension {q.dimension!r} (expected one of {_DIMENSIONS_TEXT})")
            by_dim[q.dimension].append(LABEL_SCORES[q.label])
        if not by_dim:
            raise ValueError(f"{judgement.instance_id}: no labels")
        if judgement.category == VISION_RULE and INSTRUCTION_FOLLOWING in by_dim:
            raise ValueError(f"{judgement.instance_id}: a 'vision rule' instance cannot have Instruction Following labels")
        dim_means = {d: Fraction(sum(s), len(s)) for d, s in by_dim.items()}
        for d, m in dim_means.items():
            per_cat_dim[judgement.category][d].append(m)
        per_cat_inst[judgement.category].append(_mean(dim_means.values()))
    if not seen:
        raise ValueError("no judgements to aggregate")

    categories = _category_order(per_cat_inst)
    per_category: dict[str, dict[str, Fraction]] = {
        c: {d: _mean(per_cat_dim[c][d]) * 50 for d in RULER_DIMENSIONS if per_cat_dim[c].get(d)} for c in categories
    }
    overall: dict[str, Fraction] = {}
    for d in RULER_DIMENSIONS:
        values = [per_category[c][d] for c in categories if d in per_category[c]]
        if values:
            overall[d] = _mean(values)
    missing = [d for d in RULER_DIMENSIONS if d not in overall]
    if missing:
        log.warning("no judged instance has dimension(s) %s; the overall average uses the other dimensions", ", ".join(missing))
    return RulerReport(
        per_category={c: {d: float(v) for d, v in dims.items()} for c, dims in per_category.items()},
        category_avg={c: float(_mean(per_cat_inst[c]) * 50) for c in categories},
        overall_per_dimension={d: float(v) for d, v in overall.items()},
        overall_average=float(_mean(overall.values())),
        n_instances={c: len(per_cat_inst[c]) for c in categories},
    )
