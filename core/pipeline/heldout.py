"""The held-out judge: a second Teacher that only measures, never optimises or selects.

A video optimised against one Teacher (the teacher method) or chosen by it (best-of-N,
VideoTPO) may satisfy that Teacher without satisfying the rules: the judge-fooled rate of the
score stage measures that with the Teacher that was optimised against, which flatters it. The
held-out judge (another seed and data order, ``vlmt zoo train`` with ``judge_seed``; or any
other Qwen-VL folder) answers the very same questions on the same frames, so a method that
learned the rules and one that learned the optimising Teacher's blind spots come apart.

    heldout : item + video.npz + reward.json + judge -> heldout.json (HeldoutRecord)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel

from core.io import write_json_atomic
from core.method.cost import CostRecord
from core.method.teacher import all_yes, judge, recompile_reward
from core.models.teacher import Teacher
from core.pipeline.stages import VideoRecord, load_frames, load_reward


class HeldoutRecord(BaseModel):
    """The held-out judge's P(Yes) per query of the item's reward. The scorer's answer to each is the
    score stage's ``judge_truth``: the same queries on the same video, so it is not computed again."""

    p_yes: list[float]
    all_yes: bool = False
    cost: CostRecord = CostRecord()


def heldout_stage(video: VideoRecord, judge_teacher: Teacher, reward_json: Path, out: Path) -> HeldoutRecord:
    """Judge ``video`` with ``judge_teacher`` on the queries of ``reward_json`` (compiled for the judge)."""
    t0 = time.perf_counter()
    reward = recompile_reward(judge_teacher, load_reward(reward_json))
    p_yes = judge(judge_teacher, reward, load_frames(video.npz))
    record = HeldoutRecord(p_yes=p_yes, all_yes=all_yes(p_yes),
                           cost=CostRecord(seconds={"heldout_judge": round(time.perf_counter() - t0, 4)}))
    write_json_atomic(out, json.loads(record.model_dump_json()))
    return record
