"""RULER-Bench judge replies: reading a reply into one label per checklist question.

Why this module exists: a judge's reply is free text, and a mis-read label changes a
score silently. So replies are parsed strictly: a reply with the wrong number of labels
or an unknown label raises ``InvalidJudgeReply`` (``core.bench.ruler_scores``) so that
the caller retries the judge; it is never counted.

One label per checklist question, Good / Medium / Poor, in checklist order. Two reply
formats, one per judge protocol (``core.bench.ruler_judge.PROTOCOLS``):

- ``numbered``: numbered lines, ``1. Good`` (``parse_judge_labels``), after a leading
  ``<think>...</think>`` block if any (``parse_numbered_reply``, ``final_answer``);
- ``official``: the official judge's ``<think>...</think><answer>["Good", ...]</answer>``
  (``parse_official_labels``).

``judgement_from_reply`` pairs the labels with the instance's checklist, giving the
``RulerJudgement`` that ``aggregate`` scores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from core.bench.record import TaskInstance
from core.bench.ruler_scores import LABEL_SCORES, InvalidJudgeReply, JudgedQuestion, RulerJudgement

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

    return _checked_labels(tokens, n_questions, reply)


def _checked_labels(tokens: list[Any], n_questions: int, reply: str) -> list[str]:
    """``tokens`` as canonical labels; an unknown label or a wrong count raises ``InvalidJudgeReply``."""
    labels: list[str] = []
    for i, token in enumerate(tokens, start=1):
        label = _canonical_label(token)
        if label is None:
            raise InvalidJudgeReply(f"label {i} is {token!r}, not a known label", n_questions, reply)
        labels.append(label)
    if len(labels) != n_questions:
        raise InvalidJudgeReply(f"got {len(labels)} label(s)", n_questions, reply)
    return labels


_THINK_OPEN = re.compile(r"^\s*<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def parse_official_labels(reply: str, n_questions: int) -> list[str]:
    """The labels of a reply in the official judge's format, ``<think>...</think><answer>[...]</answer>``.

    The official judge reasons freely inside ``<think>`` and then gives the labels as a
    JSON list inside ``<answer>``. The reasoning, up to the first ``</think>`` (whose
    ``<think>`` the chat template may have written), is ignored (it may quote labels or
    tags), and may be absent; an unterminated ``<think>`` is invalid rather than parsed
    from half a thought. After it there must be exactly one ``<answer>`` block holding a
    JSON list (optionally in a ``` code fence) of one label per question, in order; text
    around the block is ignored, since the block alone says which labels are meant.
    Anything else (no or several blocks, not a JSON list, wrong count, unknown label)
    raises ``InvalidJudgeReply``.
    """
    if n_questions < 1:
        raise ValueError(f"n_questions must be >= 1, got {n_questions}")
    text = reply
    closing = _THINK_CLOSE.search(text)
    if closing is not None:  # a Thinking model's template may open the block in the prompt: only "</think>" is replied
        text = text[closing.end():]
    elif _THINK_OPEN.match(text):
        raise InvalidJudgeReply("unterminated <think> block", n_questions, reply)
    blocks = _ANSWER.findall(text)
    if len(blocks) != 1:
        raise InvalidJudgeReply(f"{len(blocks)} <answer>...</answer> block(s) after the reasoning, not 1", n_questions, reply)
    body = blocks[0].strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        tokens = json.loads(body)
    except json.JSONDecodeError:
        tokens = None
    if not isinstance(tokens, list):
        raise InvalidJudgeReply(f"the <answer> block {body[:80]!r} is not a JSON list of labels", n_questions, reply)
    return _checked_labels(tokens, n_questions, reply)


_THINKING = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)


def final_answer(reply: str) -> str:
    """The reply without a leading ``<think>...</think>`` block (Qwen3-VL "Thinking" judges reason first).

    An unterminated block is left as it is, so that the reply is invalid and asked again
    rather than parsed from half a thought.
    """
    return _THINKING.sub("", reply, count=1).strip()


def parse_numbered_reply(reply: str, n_questions: int) -> list[str]:
    """The ``numbered`` protocol's labels: ``parse_judge_labels`` after any leading ``<think>`` block."""
    return parse_judge_labels(final_answer(reply), n_questions)


#: ``(reply, n_questions) -> labels``: a reply format's parser (``parse_judge_labels``, ``parse_official_labels``).
LabelParser = Callable[[str, int], list[str]]


def judgement_from_reply(instance: TaskInstance, reply: str, parse: LabelParser = parse_judge_labels) -> RulerJudgement:
    """Pair a judge reply's labels (read by ``parse``) with ``instance``'s checklist; raises ``InvalidJudgeReply`` to retry."""
    if not instance.checklist:
        raise ValueError(f"{instance.id}: instance has no checklist")
    labels = parse(reply, len(instance.checklist))
    return RulerJudgement(
        instance_id=instance.id,
        task_name=instance.task_id,
        category=instance.category or "",
        labels=[JudgedQuestion(dimension=c.dimension, question=c.question, label=lab) for c, lab in zip(instance.checklist, labels)],
    )
