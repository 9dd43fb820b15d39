"""Judge a model's RULER-Bench videos with a Qwen-VL folder, one cached task per video.

RULER-Bench's videos are scored by a VLM judge answering each instance's checklist
(``core/bench/ruler_judge.py`` has the protocol). A rerun, after an interruption or with
new videos, reuses every video already judged with the same judge and config.
``judge_exported`` runs this flow on each method's videos at the end of an evaluate run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger

from core.bench.layout import ruler_output_path
from core.bench.ruler_judge import JudgeConfig, JudgeRecord, JudgeRun, failed_record, judge_run
from core.bench.source import open_benchmark
from core.errors import InputError
from core.io import write_json_atomic
from core.models.teacher import teacher_placement
from core.storage.results import write_judgements
from tasks.caching import RESULTS_DIR, digest, file_digest
from tasks.judge import judge_video
from tasks.models import forget, model_identity

if TYPE_CHECKING:
    from core.bench.record import TaskInstance
    from flows.config import EvaluateConfig

#: Bump when a change to the judge's message or reply handling changes its records.
JUDGE_VERSION = "1"


@flow(name="ruler-judge")
def ruler_judge(bench: str, videos: str, judge: str, work: str = "runs/judge", config_json: str | None = None,
                device: str | None = None, dtype: str | None = None, skip_invalid: bool = False,
                instance_ids: list[str] | None = None) -> dict:
    """Judge ``videos/{task_name}/{index}.mp4`` for every record of ``bench``; returns a ``JudgeRun`` dict.

    Writes the run (every record, every reply, the report) to ``work/judge-<model>.json``
    as well. ``n_reused`` counts the videos whose record came from the cache. With
    ``skip_invalid``, unreadable records are left out (``open_benchmark`` logs them).
    ``instance_ids`` judges only those instances (e.g. the items an evaluation ran).
    """
    logger = get_run_logger()
    benchmark = open_benchmark(bench, skip_invalid=skip_invalid)
    if benchmark.kind != "ruler":
        raise InputError(bench, f"is a {benchmark.kind} benchmark", "a RULER-Bench record file")
    out = Path(videos)
    if not out.is_dir():
        raise InputError(out, "is not a directory", "a model's outputs at {task_name}/{index}.mp4")
    cfg = JudgeConfig.model_validate_json(config_json) if config_json else JudgeConfig()
    device, dtype = teacher_placement(device, dtype)
    judge_id = model_identity(judge, Path(work) / "model-ids.json")
    run_task = judge_video.with_options(result_storage=Path(work) / RESULTS_DIR)
    records: list[JudgeRecord] = []
    reused = 0
    wanted = None if instance_ids is None else set(instance_ids)
    for instance in benchmark.instances:
        if wanted is not None and instance.id not in wanted:
            continue
        video = ruler_output_path(out.parent, instance, out.name)
        key = digest("ruler-judge", JUDGE_VERSION, instance.content_hash(), file_digest(video), judge_id,
                     cfg.model_dump(mode="json"))
        state = run_task(item=instance.model_dump_json(), video=str(video), root=str(benchmark.root), judge=judge,
                         cfg_json=cfg.model_dump_json(), device=device, dtype=dtype, key=key, return_state=True)
        if state.is_completed():
            reused += state.name == "Cached"
            records.append(JudgeRecord.model_validate(state.result()))
        else:  # one video's failure never loses the others' records; a rerun tries it again
            logger.warning("%s: judging failed: %s", instance.id, state.message)
            records.append(failed_record(instance, video, RuntimeError(state.message or state.name)))
    run = judge_run(judge, cfg, records)
    write_json_atomic(Path(work) / f"judge-{out.name}.json", run.model_dump(mode="json"))
    logger.info("judged %d of %d video(s), %d reused from the cache", len(records) - len(run.failed), len(records), reused)
    return run.model_dump(mode="json") | {"n_reused": reused}


def judge_exported(cfg: EvaluateConfig, items: list[TaskInstance], exported: Path, results_root: Path,
                   experiment_id: str) -> dict[str, dict]:
    """RULER-Bench: ``cfg.judge`` labels each method's exported videos; rows go to the ``judgements`` table.

    Each method's videos are judged by the cached ``ruler-judge`` flow (a rerun judges only
    new or changed videos). Returns per method the judged and failed counts and the overall score.
    The run's Reasoner and Teacher are dropped first: a large judge needs the GPU memory.
    """
    import torch

    forget()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    ruler = {inst.id: inst for inst in items if inst.benchmark == "ruler"}
    out: dict[str, dict] = {}
    for method in cfg.methods:
        videos = exported / method.value
        videos.mkdir(parents=True, exist_ok=True)  # no video at all is a failed record per item, not a crash
        run = JudgeRun.model_validate(ruler_judge(
            bench=cfg.bench, videos=str(videos), judge=cfg.judge, work=str(Path(cfg.work) / "judge"),
            config_json=cfg.judge_options.model_dump_json(), skip_invalid=True, instance_ids=list(ruler)))
        for record in run.records:
            write_judgements(results_root, record, ruler[record.instance_id], experiment_id, cfg.variant, method.value,
                             cfg.judge)
        out[method.value] = {"n_judged": len(run.records) - len(run.failed), "n_failed": len(run.failed),
                             "overall_average": run.report.overall_average if run.report else None}
    return out
