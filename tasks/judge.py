"""The RULER-Bench judge as a cached task: one video's checklist labels per task run.

Judging with a large VLM is the expensive part of scoring RULER-Bench, so each video's
record is cached under a key of everything it depends on (the instance, the video's
bytes, the judge's weights, the judge config): an interrupted or extended run judges only
what it has not judged yet. A fault of the judge (e.g. out of memory) fails the task and
is not cached; bad input (a missing video) is a failed record, cached until the video changes.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from core.bench.record import TaskInstance
from core.bench.ruler_judge import JudgeConfig, judge_instance, qwen_vl_reply_fn
from tasks import models
from tasks.caching import given_key


@task(name="judge-video", cache_key_fn=given_key, persist_result=True, result_serializer="json")
def judge_video(item: str, video: str, root: str, judge: str, cfg_json: str, device: str | None, dtype: str | None,
                key: str) -> dict:
    """The judge's record for one instance's video (a ``JudgeRecord`` as JSON-able dict)."""
    instance = TaskInstance.model_validate_json(item)
    cfg = JudgeConfig.model_validate_json(cfg_json)
    teacher, lock = models.teacher(judge, device, dtype)
    with lock:
        record = judge_instance(instance, Path(video), qwen_vl_reply_fn(teacher, cfg), cfg, Path(root))
    return record.model_dump(mode="json")
