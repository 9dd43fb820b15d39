"""The evaluate flow's stages as cached Prefect tasks (bodies in ``core.pipeline.stages``).

Every task takes the ``key`` its flow computed (``flows/keys.py``: the item's content
hash, only the config fields the stage depends on, the identity of each model it uses, and a
code version) and writes its files into a directory named after that key. Tasks return small
JSON records of paths and numbers; models are loaded per process by ``tasks.models``. The
item arrives as its JSON text: Prefect walks every task parameter (to find futures), and an
item's metadata holds thousands of values, where a string is one.
Transient failures (a worker lost, CUDA out of memory) get bounded retries; bad input and corrupt
files (``VlmtError``) are not retried (``tasks.caching.transient_only``); a bad item fails its own
chain only.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from prefect import task

from core.bench.record import TaskInstance
from core.io import write_json_atomic
from core.method.grpo import GrpoConfig
from core.method.methods import expanded_prompt
from core.method.optimise import OptimConfig
from core.method.reasoner import Guidance
from core.pipeline import stages as core_stages
from core.pipeline.heldout import heldout_stage
from tasks import models
from tasks.caching import RESULT_SERIALIZER, RETRIES, given_key

#: Cached on the flow's key, persisted as JSON (never pickle), retried on transient faults only.
_cached = {"cache_key_fn": given_key, "persist_result": True, "result_serializer": RESULT_SERIALIZER, **RETRIES}


#: Written last by every stage: the flow reuses a cached result only where this file exists,
#: so a cache entry never points at outputs that were deleted or lie in another work dir.
RECORD = "record.json"


def _dir(target: str) -> Path:
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _done(target: str, record: dict) -> dict:
    write_json_atomic(Path(target) / RECORD, record)
    return record


def resumable(fn: Callable[..., dict]) -> Callable[..., dict]:
    """A stage whose ``record.json`` exists has finished: return that record instead of running again.

    The record is the task's return value, written last and atomically into a directory
    named after the stage's key; Prefect persists its cache entry only after the task
    returns. A run killed between the two (or a wiped ``prefect-results``) would otherwise
    recompute a finished stage.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs) -> dict:
        record = finished_record(signature.bind(*args, **kwargs).arguments["target"])
        return record if record is not None else fn(*args, **kwargs)

    return run


def finished_record(target: str | Path) -> dict | None:
    """The record of the stage finished in ``target`` (its paths relocated to where the work dir is
    now), or None where it has not finished."""
    target = Path(target)
    if not (target / RECORD).is_file():
        return None
    return relocated(json.loads((target / RECORD).read_text()), target)


#: Record fields that hold paths (stage outputs, all inside the work dir).
PATH_FIELDS = frozenset({"npz", "adapter", "optim_json", "mp4", "gif", "rules", "reward"})


def _work_of_target(target: Path) -> Path | None:
    """The work dir of a stage folder: ``<work>/items/<item>/<stage>`` or ``<work>/shared/<stage>``."""
    parts = target.parts
    if len(parts) >= 3 and parts[-3] == "items":
        return Path(*parts[:-3])
    if len(parts) >= 2 and parts[-2] == "shared":
        return Path(*parts[:-2])
    return None


def _work_of_path(path: str) -> Path | None:
    """The work dir a recorded output path was written under (the folder above its ``items``/``shared``)."""
    parts = Path(path).parts
    for i in range(len(parts) - 1, -1, -1):
        if (parts[i] == "items" and i + 2 < len(parts)) or (parts[i] == "shared" and i + 1 < len(parts)):
            return Path(*parts[:i])
    return None


def relocated(record: dict, target: Path) -> dict:
    """``record``, read from ``target``'s ``record.json``, with its paths where its work dir is now.

    A record names its outputs (and the upstream outputs it used) by the paths they had when
    it was written; after the work dir was moved or remounted, those lie under the new work dir.
    """
    new = _work_of_target(Path(target))
    old = next((w for w in map(_work_of_path, _path_values(record)) if w is not None), None)
    if new is None or old is None or old == new:
        return record
    n = len(old.parts)

    def move(value, field: str | None = None):
        if isinstance(value, dict):
            return {k: move(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v, field) for v in value]
        if field in PATH_FIELDS and isinstance(value, str) and Path(value).parts[:n] == old.parts:
            return str(new.joinpath(*Path(value).parts[n:]))
        return value

    return move(record)


def _path_values(value, field: str | None = None):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _path_values(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _path_values(v, field)
    elif field in PATH_FIELDS and isinstance(value, str):
        yield value


@task(name="extract-rules", **_cached)
@resumable
def extract_rules(item: str, teacher: str, attempts: int, seed: int, target: str, key: str,
                  queries: str = "teacher") -> dict:
    instance = TaskInstance.model_validate_json(item)
    t, lock = models.teacher(teacher)
    with lock:
        path, cost = core_stages.rules_stage(t, instance, _dir(target) / "rules.json", attempts, seed, queries)
    rules = core_stages.load_rules(path)
    # the queries ride in the record, so later stages and the flow need not reread rules.json
    return _done(target, {"rules": str(path), "source": rules.source,
                          "queries": [{"text": q, "kind": kind} for q, kind in rules.queries],
                          "cost": cost.model_dump(mode="json")})


@task(name="compile-reward", **_cached)
@resumable
def compile_reward(item: str, teacher: str, rules: dict, k_frames: int, lam: float, target: str,
                   key: str) -> dict:
    instance = TaskInstance.model_validate_json(item)
    t, lock = models.teacher(teacher)
    with lock:
        path, cost = core_stages.reward_stage(t, instance, Path(rules["rules"]), _dir(target) / "reward.json", k_frames, lam)
    return _done(target, {"reward": str(path), "source": rules["source"], "cost": cost.model_dump(mode="json")})


@task(name="optimise-item", **_cached)
@resumable
def optimise_item(item: str, reasoner: str, surrogate: str | None, teacher: str, reward: dict,
                  optim_json: str, seed: int, target: str, key: str, grpo_json: str | None = None) -> dict:
    """Stage 3 for the teacher method, or with ``grpo_json`` (a ``GrpoConfig``) for the grpo ablation."""
    instance = TaskInstance.model_validate_json(item)
    r, r_lock = models.reasoner(reasoner, surrogate)
    t, t_lock = models.teacher(teacher)
    with r_lock, t_lock:
        record = core_stages.optimise_stage(r, t, instance, Path(reward["reward"]), OptimConfig.model_validate_json(optim_json),
                                            seed, _dir(target), GrpoConfig.model_validate_json(grpo_json) if grpo_json else None)
    return _done(target, record.model_dump(mode="json"))


@task(name="optimise-oracle-reward", **_cached)
@resumable
def optimise_oracle_reward(item: str, reasoner: str, surrogate: str | None, optim_json: str, seed: int, target: str,
                           key: str) -> dict:
    """Stage 3 for the ``oracle_reward`` method: the synth scorer's relaxation as the reward (no Teacher is loaded)."""
    instance = TaskInstance.model_validate_json(item)
    r, r_lock = models.reasoner(reasoner, surrogate)
    with r_lock:
        record = core_stages.oracle_reward_stage(r, instance, OptimConfig.model_validate_json(optim_json), seed, _dir(target))
    return _done(target, record.model_dump(mode="json"))


@task(name="train-shared-adapter", **_cached)
@resumable
def train_shared_adapter(items: list[str], rewards: list[dict], reasoner: str, surrogate: str | None, teacher: str,
                         optim_json: str, seeds: list[int], steps: int | None, seed: int, target: str, key: str) -> dict:
    """The ``shared`` ablation: one LoRA trained on all ``items``' rewards (an experiment-level stage)."""
    instances = [TaskInstance.model_validate_json(item) for item in items]
    r, r_lock = models.reasoner(reasoner, surrogate)
    t, t_lock = models.teacher(teacher)
    with r_lock, t_lock:
        record = core_stages.shared_stage(r, t, instances, [Path(w["reward"]) for w in rewards], seeds,
                                          OptimConfig.model_validate_json(optim_json), steps, seed, _dir(target))
    return _done(target, record.model_dump(mode="json"))


@task(name="generate-video", **_cached)
@resumable
def generate_video(item: str, reasoner: str, surrogate: str | None, seed: int, steps: int, target: str,
                   key: str, adapter: dict | None = None, rules: dict | None = None, guidance: dict | None = None) -> dict:
    """A video from the item's seed; with ``adapter`` (teacher method) or ``rules`` (PE: the
    instruction followed by the Teacher's rules); ``guidance`` as ``core.method.reasoner.Guidance``."""
    instance = TaskInstance.model_validate_json(item)
    prompt = None
    if rules is not None:
        prompt = expanded_prompt(instance.prompt, [q["text"] for q in rules["queries"]])
    r, lock = models.reasoner(reasoner, surrogate)
    with lock:
        record = core_stages.generate_stage(r, instance, seed, steps, _dir(target),
                                            adapter=Path(adapter["adapter"]) if adapter else None, prompt=prompt,
                                            guidance=Guidance.model_validate(guidance or {}))
    return _done(target, record.model_dump(mode="json"))


@task(name="still-video", **_cached)
@resumable
def still_video(item: str, seed: int, target: str, key: str) -> dict:
    """The ``still`` reference video: the item's first frame held (no model is loaded)."""
    record = core_stages.still_stage(TaskInstance.model_validate_json(item), seed, _dir(target))
    return _done(target, record.model_dump(mode="json"))


@task(name="select-video", **_cached)
@resumable
def select_video(item: str, videos: list[dict], by: Literal["judge", "oracle"], teacher: str | None,
                 reward: dict | None, target: str, key: str) -> dict:
    instance = TaskInstance.model_validate_json(item)
    recs = [core_stages.VideoRecord.model_validate(v) for v in videos]
    if by == "judge":
        t, lock = models.teacher(teacher)
        with lock:
            sel = core_stages.select_stage(recs, by, instance, t, Path(reward["reward"]))
    else:
        sel = core_stages.select_stage(recs, by, instance)
    return _done(str(_dir(target)), sel.model_dump(mode="json"))


@task(name="videotpo", **_cached)
@resumable
def videotpo(item: str, reasoner: str, surrogate: str | None, teacher: str, reward: dict, seed: int,
             steps: int, rounds: int, per_round: int, target: str, key: str, guidance: dict | None = None) -> dict:
    instance = TaskInstance.model_validate_json(item)
    r, r_lock = models.reasoner(reasoner, surrogate)
    t, t_lock = models.teacher(teacher)
    with r_lock, t_lock:
        sel = core_stages.videotpo_stage(r, t, instance, Path(reward["reward"]), seed, steps, rounds, per_round, _dir(target),
                                         Guidance.model_validate(guidance or {}))
    return _done(target, sel.model_dump(mode="json"))


@task(name="score-video", **_cached)
@resumable
def score_video(item: str, video: dict, teacher: str | None, reward: dict | None, target: str,
                key: str) -> dict:
    """Score a video record, or the chosen video of a selection record."""
    instance = TaskInstance.model_validate_json(item)
    rec = core_stages.VideoRecord.model_validate(video.get("video", video))
    if teacher is not None and reward is not None:
        t, lock = models.teacher(teacher)
        with lock:
            score = core_stages.score_stage(instance, rec, _dir(target) / "score.json", t, Path(reward["reward"]))
    else:
        score = core_stages.score_stage(instance, rec, _dir(target) / "score.json")
    return _done(target, score.model_dump(mode="json"))


@task(name="judge-heldout", **_cached)
@resumable
def judge_heldout(item: str, video: dict, judge: str, reward: dict, target: str, key: str) -> dict:
    """The held-out judge's answers on a method's returned video (``core.pipeline.heldout``)."""
    rec = core_stages.VideoRecord.model_validate(video.get("video", video))
    t, lock = models.teacher(judge)
    with lock:
        record = heldout_stage(rec, t, Path(reward["reward"]), _dir(target) / "heldout.json")
    return _done(target, record.model_dump(mode="json"))
