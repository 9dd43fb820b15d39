"""A fixture experiment for report tests and ``scripts/bench_report.py``: real synth items and
videos, results written through the same storage code as a run, consolidated into DuckDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.bench.record import Purpose
from core.bench.synth.generate import make_synth_benchmark
from core.media import read_video, write_gif, write_video
from core.method.compare import ItemResult
from core.method.cost import CostRecord
from core.storage.results import (
    ExperimentRecord,
    VariantParams,
    slug,
    write_experiment,
    write_result,
)
from core.storage.warehouse import consolidate

METHODS = ["vanilla", "best_of_n", "pass_at_n", "pe", "videotpo", "teacher"]
#: The fixture's sub-criteria: long rule names, as real scorers write them, so that the report has to wrap them.
GOAL, PROCESS = "reaches_the_goal_cell_and_stays_there_until_the_end", "never_passes_through_a_wall_or_an_obstacle"


def fixture_experiment(root: Path, per_family: int = 1, methods: list[str] | None = None,
                       fail: tuple[str, str] | None = None) -> tuple[Path, ExperimentRecord, list]:
    """Write an experiment of every synth family x ``methods``; ``fail`` = (item index, method) recorded as failed.

    Videos are the ground truth, darkened for every method but the teacher's on even items (so
    the outcome filter has both improved and unchanged items). Returns (db, experiment, instances).
    """
    methods = methods or METHODS
    bench = make_synth_benchmark(root / "bench", per_family, seed=5, purpose=Purpose.TEST)
    experiment = ExperimentRecord(name="report-fixture", kind="evaluate", config={"per_family": per_family}, code_version="t")
    results_root = root / "results"
    write_experiment(results_root, experiment)
    params = VariantParams(lam=0.5, max_steps=3)
    for k, inst in enumerate(bench.instances):
        truth = read_video(inst.ground_truth)
        for method in methods:
            folder = root / "media" / slug(inst.id) / method
            folder.mkdir(parents=True, exist_ok=True)
            worse = k % 2 == 0 and method != "teacher"
            frames = (truth * 0.5).astype(np.uint8) if worse else truth
            mp4, gif = write_video(folder / "video.mp4", frames), write_gif(folder / "video.gif", frames)
            score = 0.2 if worse else 0.8
            res = ItemResult(
                instance_id=inst.id, family=inst.task_family, split=inst.split.value, faculty=inst.faculty.value,
                method=method, seed=k, score=score, success=not worse, criteria={GOAL: score, PROCESS: 1.0},
                goal=score, process=1.0, gate=1.0, judge_truth=[not worse, True],
                judge_p_yes=[0.9, 0.7], judge_all_yes=True, heldout_p_yes=[0.2, 0.7],
                heldout_all_yes=False, cost=CostRecord(seconds={"generate": 1.0 + k}, counts={"reasoner_forward": 4}),
                info={"prompt": inst.prompt, "first_frame": str(inst.first_frame), "video": str(mp4), "gif": str(gif),
                      "queries": [{"text": "Does the agent reach the goal?", "kind": "goal"},
                                  {"text": "Does the agent stay on the path?", "kind": "process"}]},
            )
            if method == "teacher":
                res.info["optim"] = {"steps_run": 3, "stop_reason": "max_steps", "final_loss": 0.3,
                                     "trace": [{"step": s, "loss": 1.0 - 0.2 * s, "p_yes": [0.4 + 0.1 * s, 0.5]}
                                               for s in range(3)]}
            if fail == (str(k), method):
                res.error, res.error_stage, res.score = "RuntimeError: poisoned", "optimise", 0.0
            write_result(results_root, res, experiment.experiment_id, "default", params,
                         video_path=None if res.error else str(mp4))
    db = root / "vlmt.duckdb"
    consolidate(results_root, db)
    return db, experiment, bench.instances
