"""On-policy videos for the Teacher: what the teacher method itself makes of train items.

A Teacher trained on ground truth and hand-made perturbations meets, at test time, the videos
its own reward pushes the Reasoner toward; on the first zoo those were videos with the moving
object erased, which the Teacher judged intact. A mining round runs the teacher method with a
first-round Teacher on train-purpose items and keeps each item's final (optimised) video; the
rule-based scorers label them like every other training video, and the final Teacher is
trained with them (issue 26, point 2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.bench.record import Purpose, TaskInstance
from core.errors import InputError

log = logging.getLogger(__name__)


def run_teacher_method(
    reasoner_dir: str | Path,
    surrogate_dir: str | Path,
    teacher_dir: str | Path,
    instances: Sequence[TaskInstance],
    lr: float,
    seed: int,
    only: Purpose | None = None,
) -> list[tuple[TaskInstance, np.ndarray]]:
    """The teacher method's final video for each item, paired with its instance.

    ``only=Purpose.TRAIN`` (mining: test instances must never shape a model) refuses any
    instance of another purpose before anything loads.

    ``lr`` is the optimiser's learning rate (the zoo's published recommendation: a Reasoner
    stage folder has no ``optim_defaults.json`` before it is published). An item whose method
    run failed is left out (logged): one item never stops a stage.
    """
    # the method package loads the pipeline's classes; the zoo imports it only where it runs it
    from core.method.compare import compare
    from core.method.methods import Method, MethodConfig
    from core.method.optimise import OptimConfig
    from core.method.reasoner import ReasonerAdapter
    from core.models.teacher import load_teacher

    if only is not None:
        other = [i.id for i in instances if i.metadata.get("purpose") != only.value]
        if other:
            raise InputError("instances", f"include instances that are not {only.value}-purpose ({other[:3]})",
                             f"{only.value}-purpose instances only: test instances must never shape a model")
    if not instances:
        return []
    reasoner = ReasonerAdapter.from_paths(reasoner_dir, surrogate_dir, device="cpu")
    teacher = load_teacher(teacher_dir, device="cpu")
    results = compare(reasoner, teacher, list(instances), [Method.TEACHER], MethodConfig(optim=OptimConfig(lr=lr)), n=1,
                      base_seed=seed)
    by_id = {i.id: i for i in instances}
    videos = []
    for r in results:
        if r.error or r.video is None:
            log.warning("teacher method: %s left out (%s)", r.instance_id, r.error)
            continue
        videos.append((by_id[r.instance_id], r.video))
    log.info("teacher method: %d of %d items gave a video", len(videos), len(instances))
    return videos
