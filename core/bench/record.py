"""The task-instance record every benchmark source produces.

One pydantic model serves the built-in synthetic benchmark, VBVR-Bench and
RULER-Bench, so every later stage (rule extraction, optimisation, scoring, storage)
handles one shape of item.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Split(str, Enum):
    """VBVR's in-domain / out-of-domain split."""

    ID = "ID"
    OOD = "OOD"


class Faculty(str, Enum):
    """The five VBVR reasoning faculties."""

    ABSTRACTION = "Abstraction"
    KNOWLEDGE = "Knowledge"
    PERCEPTION = "Perception"
    SPATIALITY = "Spatiality"
    TRANSFORMATION = "Transformation"


class Purpose(str, Enum):
    """Which disjoint half of the synthetic instance space an instance comes from."""

    TRAIN = "train"
    TEST = "test"


RulerDimension = Literal["Instruction Following", "Visual Consistency", "Visual Fidelity", "Rule Coherence"]
RULER_DIMENSIONS: tuple[str, ...] = (
    "Instruction Following",
    "Visual Consistency",
    "Visual Fidelity",
    "Rule Coherence",
)


class ChecklistItem(BaseModel):
    """One RULER-Bench checklist question and the dimension it scores."""

    model_config = ConfigDict(frozen=True)

    dimension: RulerDimension
    question: str


class TaskInstance(BaseModel):
    """One task instance: the condition (prompt + first frame) and what a solution looks like.

    Paths are absolute. ``metadata`` carries source-specific, machine-readable facts (for
    synth: the layout, the ground-truth trajectory and the scorer's parameters).
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Unique within a benchmark: '{split_dir}/{task_id}/{index}' for VBVR-style sources.")
    benchmark: Literal["synth", "vbvr", "ruler"]
    split: Split | None = Field(default=None, description="ID/OOD for VBVR-style sources; None where the benchmark has no such split (RULER).")
    task_family: str = Field(description="Synth family name, VBVR task id or RULER task name.")
    task_id: str = Field(description="The benchmark's task identifier (VBVR task directory, RULER task_name).")
    index: str = Field(description="Instance index within the task, as the benchmark writes it (e.g. '00000').")
    faculty: Faculty | None = None
    category: str | None = Field(default=None, description="RULER category, when the source has one.")
    prompt: str
    first_frame: Path | None = None
    final_frame: Path | None = None
    ground_truth: Path | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    checklist: list[ChecklistItem] | None = None

    def content_hash(self) -> str:
        """A hash of what defines the instance (prompt, images, metadata), not of where it lies.

        Later stages key their caches on it, so moving a benchmark directory does not
        invalidate finished work, while editing a prompt or an image does.
        """
        h = hashlib.sha256()
        h.update(self.benchmark.encode())
        h.update(self.id.encode())
        h.update(self.prompt.encode())
        for path in (self.first_frame, self.final_frame, self.ground_truth):
            h.update(b"\0")
            if path is not None and path.is_file():
                h.update(path.read_bytes())
        h.update(json.dumps(self.metadata, sort_keys=True, default=str).encode())
        if self.checklist:
            h.update(json.dumps([c.model_dump() for c in self.checklist]).encode())
        return h.hexdigest()
