"""Rule queries for the synthetic benchmark: what a good Teacher should ask, and the true answers.

This is benchmark knowledge, not a model. For every family it lists one yes/no question
per scorer criterion (``core.scoring.synth``), phrased so that "Yes" means the rule is
satisfied, in the paper's style ("By the end of the video, does ...?", "Does ... avoid
...?", "Does ... stay intact without splitting or vanishing?"). Questions name what the
first frame and the prompt show (the target tile's or goal's colour, the falling blocks'
colours), so a query writer must read the prompt and look at the image to get them right.

Three uses:

* ``rule_queries(meta)``: the reference rule set of an instance (one final-goal query and
  up to three process queries), the target the Teacher learns to write. The two most
  relevant process rules of the family always come first; the third, and the phrasing of
  every question, vary between instances, chosen by a hash of the layout, so the set is
  deterministic per instance but not one fixed string per family.
* ``query_bank(meta)``: every phrasing of every criterion of the instance; the Teacher's
  yes/no training questions come from here, and ``match_query`` maps a generated
  question back to the criterion it checks (how query *content* is evaluated).
* ``label_video(instance, video, queries)``: the ground-truth answers for any video,
  from the rule-based scorer: "Yes" where the query's criterion scores >= 0.5;
  ``query_truths`` the same for a scored video and any query texts (None off the bank).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.bench.record import TaskInstance
from core.errors import InputError
from core.scoring.result import ScoreResult
from core.scoring.synth import score_synth

#: A video answers "Yes" to a query when every criterion it names scores at least this.
YES_THRESHOLD = 0.5
MAX_PROCESS = 3


class RuleQuery(BaseModel):
    """One yes/no rule question and the scorer criterion that answers it.

    ``criterion`` is a scorer criterion name, or several joined by "+" when the question
    asks for all of them at once (key_then_goal's goal: key collected *and* goal reached).
    """

    model_config = ConfigDict(frozen=True)

    text: str
    kind: Literal["goal", "process"]
    criterion: str

    @property
    def criteria(self) -> list[str]:
        return self.criterion.split("+")


class RuleQueries(BaseModel):
    """The Teacher's rule-extraction output: one final-goal query and 1-3 process queries."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1)
    process: list[str] = Field(min_length=1, max_length=MAX_PROCESS)

    @field_validator("goal")
    @classmethod
    def _goal_is_question(cls, v: str) -> str:
        return _check_question(v)

    @field_validator("process")
    @classmethod
    def _process_are_questions(cls, v: list[str]) -> list[str]:
        return [_check_question(q) for q in v]

    def to_json(self) -> str:
        """Compact JSON, the exact text the Teacher is trained to write."""
        return json.dumps({"goal": self.goal, "process": self.process}, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def parse(cls, text: str, where: str = "queries") -> RuleQueries:
        """Parse and validate the Teacher's output; ``InputError`` on bad JSON or a bad shape."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputError(where, f"is not valid JSON ({exc})", '{"goal": "<question>", "process": ["<q1>", ...]}') from exc
        if not isinstance(data, dict):
            raise InputError(where, f"is a JSON {type(data).__name__}", "a JSON object with keys goal and process")
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise InputError(where, f"has the wrong shape: {exc}", "one goal question and 1 to 3 process questions") from exc

    @classmethod
    def from_queries(cls, queries: Sequence[RuleQuery]) -> RuleQueries:
        return cls(goal=next(q.text for q in queries if q.kind == "goal"), process=[q.text for q in queries if q.kind == "process"])


def _check_question(text: str) -> str:
    text = text.strip()
    if not text.endswith("?") or len(text) < 8:
        raise ValueError(f"{text!r} is not a yes/no question (expected a sentence ending with '?')")
    return text


# --------------------------------------------------------------------------- per-family banks

def _and_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _facts(meta: dict[str, Any]) -> dict[str, str]:
    """Instance facts the phrasing names (all visible in the first frame or the prompt)."""
    layout = meta["layout"]
    facts: dict[str, str] = {}
    if meta["family"] in ("color_match", "maze_navigate"):
        facts["colour"] = layout["colour"]
    maze = meta["family"] == "maze_navigate"
    facts["goals"] = "goals" if maze else "green goal"
    facts["blocked"] = f"gray walls and the {layout['other_colour']} goal" if maze else "gray walls"
    if meta["family"] == "gravity_fall":
        facts["blocks"] = _and_list([b["colour"] for b in layout["blocks"]])
    return facts


#: The maze agent's process rules, shared by maze_navigate and key_then_goal.
_AGENT_IN_MAZE_RULES = [
    ("no_wall_crossing", "process", (
        "Does the red agent avoid passing through the {blocked}?",
        "Does the red agent stay on free cells, off the {blocked}?",
    )),
    ("agent_intact", "process", (
        "Does the red agent stay intact without splitting or vanishing?",
        "Does the red agent remain one red square that never disappears or splits?",
    )),
    ("continuous_motion", "process", (
        "Does the red agent move smoothly between neighbouring cells without jumping?",
        "Does the red agent move continuously, never teleporting?",
    )),
    ("walls_preserved", "process", (
        "Do the walls stay in place?",
        "Do the gray walls and the {goals} stay exactly where they are?",
    )),
]

#: family -> (criterion, kind, phrasings). The order of process criteria is their relevance:
#: the first two always appear in ``rule_queries``, one of the rest is drawn per instance.
_BANK: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "maze_navigate": [
        ("reaches_goal", "goal", (
            "By the end of the video, does the red agent reach the {colour} goal cell?",
            "Does the red agent end the video standing on the {colour} goal cell?",
        )),
        *_AGENT_IN_MAZE_RULES,
    ],
    "color_match": [
        ("reaches_matching_tile", "goal", (
            "By the end of the video, does the white cursor stop on the {colour} tile?",
            "Does the white cursor end the video on the {colour} tile?",
        )),
        ("avoids_other_tiles", "process", (
            "Does the white cursor avoid touching the other tiles?",
            "Does the white cursor keep off every tile that is not {colour}?",
        )),
        ("cursor_intact", "process", (
            "Does the white cursor stay intact without splitting, vanishing or changing colour?",
            "Does the white cursor remain one white square that never disappears or splits?",
        )),
        ("continuous_motion", "process", (
            "Does the white cursor move smoothly between neighbouring cells without jumping?",
            "Does the white cursor move continuously, never teleporting?",
        )),
        ("tiles_preserved", "process", (
            "Do the tiles stay in place?",
            "Do the coloured tiles stay exactly where they are?",
        )),
    ],
    "gravity_fall": [
        ("blocks_land_on_support", "goal", (
            "By the end of the video, does each of the {blocks} blocks rest on the first platform or floor beneath it?",
            "Do the {blocks} blocks all land on the first support below them?",
        )),
        ("no_passing_through", "process", (
            "Do the blocks avoid passing through the gray platforms?",
            "Does every block stop on top of its support instead of falling through it?",
        )),
        ("blocks_intact", "process", (
            "Do the {blocks} blocks stay intact without splitting or vanishing?",
            "Does each block remain one square of its own colour that never disappears?",
        )),
        ("continuous_motion", "process", (
            "Do the blocks fall continuously without jumping?",
            "Does every block move smoothly, never teleporting?",
        )),
        ("falls_straight_down", "process", (
            "Do the blocks fall straight down without drifting sideways?",
            "Does every block keep to its own column while it falls?",
        )),
        ("supports_preserved", "process", (
            "Do the platforms and the floor stay in place?",
            "Do the gray platforms and the floor stay unchanged?",
        )),
    ],
    "pattern_grow": [
        ("bar_height_correct", "goal", (
            "By the end of the video, is the orange bar exactly as tall as the pattern of the blue bars requires?",
            "Does the orange bar stop at the height that continues the rule of the blue bars?",
        )),
        ("grows_only_in_its_column", "process", (
            "Is orange paint added only in the empty column right of the blue bars?",
            "Does the orange bar grow in its own column without painting any other cell?",
        )),
        ("never_shrinks", "process", (
            "Do painted orange cells stay painted?",
            "Does the orange bar never shrink or lose a cell?",
        )),
        ("grows_gradually", "process", (
            "Does the orange bar grow one cell at a time?",
            "Does the orange bar grow gradually instead of appearing at once?",
        )),
        ("bars_preserved", "process", (
            "Do the blue bars and the floor stay unchanged?",
            "Do the blue bars and the gray floor stay exactly as they are?",
        )),
    ],
    "flood_fill": [
        ("region_filled", "goal", (
            "By the end of the video, is the whole region enclosed by the gray walls cyan?",
            "Does the cyan paint fill the entire walled region by the end of the video?",
        )),
        ("stays_inside_walls", "process", (
            "Does the cyan paint stay inside the gray walls?",
            "Does the cyan paint avoid leaking past the walls?",
        )),
        ("paint_persists", "process", (
            "Do painted cyan cells stay painted?",
            "Does the cyan paint never disappear once it is painted?",
        )),
        ("spreads_gradually", "process", (
            "Does the cyan paint spread a little at a time?",
            "Does the cyan paint spread gradually from the seed instead of appearing at once?",
        )),
        ("walls_preserved", "process", (
            "Do the walls stay in place?",
            "Do the gray walls stay unchanged?",
        )),
    ],
    "key_then_goal": [
        ("reaches_goal+key_collected", "goal", (
            "By the end of the video, has the red agent collected the yellow key and reached the green goal?",
            "Does the red agent pick up the yellow key and end the video on the green goal cell?",
        )),
        ("key_before_goal", "process", (
            "Does the red agent pick up the yellow key before it reaches the green goal?",
            "Does the yellow key disappear only when the red agent steps onto it, before the goal?",
        )),
        *_AGENT_IN_MAZE_RULES,
    ],
    "symmetry_complete": [
        ("mirror_complete", "goal", (
            "By the end of the video, is the mirror image of the magenta shape painted right of the gray axis?",
            "Does the picture end up symmetric about the gray axis?",
        )),
        ("paints_only_mirror_cells", "process", (
            "Is magenta paint added only on the mirror cells of the shape?",
            "Does the painting avoid every cell that is not part of the mirror image?",
        )),
        ("paint_persists", "process", (
            "Do painted magenta cells stay painted?",
            "Does the new magenta paint never disappear once it is painted?",
        )),
        ("paints_gradually", "process", (
            "Is the mirror image painted cell by cell?",
            "Does the mirror image appear gradually instead of all at once?",
        )),
        ("shape_and_axis_preserved", "process", (
            "Do the original shape and the axis stay unchanged?",
            "Do the magenta shape and the gray axis stay exactly as they are?",
        )),
    ],
}

FAMILIES_WITH_QUERIES: tuple[str, ...] = tuple(_BANK)


def _family_bank(meta: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    family = meta.get("family")
    if family not in _BANK:
        raise InputError("meta.family", f"unknown synth family {family!r}", f"one of {sorted(_BANK)}")
    return _BANK[family]


def _instance_hash(meta: dict[str, Any], salt: str) -> int:
    key = json.dumps({"family": meta["family"], "layout": meta["layout"]}, sort_keys=True) + "|" + salt
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def query_bank(meta: dict[str, Any]) -> list[list[RuleQuery]]:
    """Every criterion of the instance with all its phrasings: ``bank[i]`` = phrasings of criterion i.

    The goal criterion comes first, then the process criteria in relevance order.
    """
    facts = _facts(meta)
    return [
        [RuleQuery(text=t.format(**facts), kind=kind, criterion=crit) for t in texts]  # type: ignore[arg-type]
        for crit, kind, texts in _family_bank(meta)
    ]


def rule_queries(meta: dict[str, Any]) -> list[RuleQuery]:
    """The reference rule set of an instance: the goal query, then three process queries.

    Deterministic per instance (a hash of family and layout picks phrasings and the third
    process rule), so the Teacher's training target is stable across runs.
    """
    bank = query_bank(meta)
    goal, process = bank[0], bank[1:]
    chosen = process[:2]
    rest = process[2:]
    if rest:
        chosen = chosen + [rest[_instance_hash(meta, "third") % len(rest)]]
    picked = [goal] + chosen
    return [variants[_instance_hash(meta, variants[0].criterion) % len(variants)] for variants in picked]


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def match_query(meta: dict[str, Any], text: str) -> RuleQuery | None:
    """The bank query whose phrasing ``text`` is (case and spacing ignored), or None."""
    wanted = _normalise(text)
    for variants in query_bank(meta):
        for q in variants:
            if _normalise(q.text) == wanted:
                return q
    return None


def queries_content_ok(meta: dict[str, Any], queries: RuleQueries) -> bool:
    """Whether a rule set asks the right things: the instance's goal, distinct known process rules."""
    goal = match_query(meta, queries.goal)
    process = [match_query(meta, q) for q in queries.process]
    if goal is None or goal.kind != "goal" or any(p is None or p.kind != "process" for p in process):
        return False
    return len({p.criterion for p in process if p is not None}) == len(process)


def label_video(instance: TaskInstance, video: np.ndarray, queries: Sequence[RuleQuery | str]) -> list[bool]:
    """The true answer ("Yes" = True) to each query for ``video``, from the rule-based scorer.

    A query given as plain text must be one of the instance's bank phrasings (see
    ``match_query``); anything else has no ground truth and is rejected.
    """
    resolved: list[RuleQuery] = []
    for q in queries:
        if isinstance(q, str):
            found = match_query(instance.metadata, q)
            if found is None:
                raise InputError(f"{instance.id}:query", f"{q!r} is not a known rule query of this instance",
                                 "a phrasing from core.bench.synth.queries.query_bank")
            q = found
        resolved.append(q)
    result = score_synth(instance, video)
    return [_holds(result, q) for q in resolved]


def query_truths(instance: TaskInstance, result: ScoreResult, texts: Sequence[str]) -> list[bool | None]:
    """The scorer's answer to each query text for an already scored video ("Yes" = True).

    Lenient where ``label_video`` is strict: a Teacher's extracted query that is not one of the
    instance's bank phrasings has no ground truth and gets None instead of an error, so a
    run's judge can be checked query by query wherever a truth exists.
    """
    matched = [match_query(instance.metadata, text) for text in texts]
    return [None if q is None else _holds(result, q) for q in matched]


def _holds(result: ScoreResult, query: RuleQuery) -> bool:
    return all(result.criterion(name).score >= YES_THRESHOLD for name in query.criteria)
