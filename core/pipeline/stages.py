"""The method's stages as functions from files to files: what each Prefect task of the
evaluate flow runs (``tasks/stages.py`` adds cache keys, retries and persistence).

    rules    : item + Teacher                       -> rules.json     (RuleSet)
    reward   : rules.json + Teacher                 -> reward.json    (CompiledReward)
    optimise : item + reward.json + Reasoner/Teacher -> adapter/ + optim.json (trace; teacher or grpo)
    oracle   : item (its ground truth) + Reasoner    -> adapter/ + optim.json (trace; oracle_reward)
    generate : item + seed [+ adapter/ or prompt]   -> video.npz
    still    : item                                 -> video.npz      (the first frame held: a reference)
    select   : candidate videos + judge or scorer   -> selection.json
    videotpo : item + reward.json                   -> video.npz per round + videotpo.json
    score    : item + video.npz [+ reward.json]     -> score.json (scorer + Teacher judge) + video.mp4 + video.gif

Every stage writes its outputs atomically and returns a small record of paths and numbers,
never tensors or modules, so that a stage can be cached, resumed or run in another process.
The raw frames (``video.npz``, lossless) are what later stages read and score; the mp4 and
GIF are for people (H.264 is lossy, so scoring the mp4 would differ from scoring the output),
so only the videos a method returns get them: the score stage writes them beside its score.
Best-of-N candidates and VideoTPO's rounds stay npz-only.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from core.bench.record import TaskInstance
from core.bench.synth.queries import query_truths
from core.errors import InputError
from core.io import write_bytes_atomic, write_json_atomic
from core.media import read_image, resize_image, write_gif, write_video
from core.method.cost import CostMeter, CostRecord
from core.method.grpo import GrpoConfig, optimise_item_grpo
from core.method.methods import still_video, videotpo_search
from core.method.optimise import (
    OptimConfig,
    OptimResult,
    detach_lora,
    load_adapter,
    optimise_item,
    save_adapter,
)
from core.method.oracle import optimise_item_oracle, oracle_reward
from core.method.reasoner import Guidance, ItemCondition, ReasonerAdapter
from core.method.shared import train_shared_adapter
from core.method.teacher import (
    CompiledReward,
    RuleSet,
    all_yes,
    compile_reward,
    extract_rules,
    judge,
    judge_loss,
)
from core.models.teacher import Teacher
from core.scoring.synth import score_synth

VIDEO_NPZ = "video.npz"


class VideoRecord(BaseModel):
    """A generated video: its lossless frames, and what it cost."""

    npz: str
    seed: int
    prompt: str
    adapter: str | None = None
    cost: CostRecord = CostRecord()


class OptimRecord(BaseModel):
    adapter: str
    optim_json: str
    steps_run: int
    stop_reason: str
    final_loss: float
    cost: CostRecord = CostRecord()


class SelectionRecord(BaseModel):
    by: Literal["judge", "oracle"]
    selected: int
    values: list[float]
    video: VideoRecord
    cost: CostRecord = CostRecord()
    rounds: int | None = Field(None, description="VideoTPO: the rounds run (None: a selection among candidates).")


class ScoreRecord(BaseModel):
    """``score``/``success`` are None for benchmarks without a rule-based scorer here (VBVR's and
    RULER's official scorers run on the exported videos, ``core.bench.source.official_output_path``)."""

    score: float | None
    success: bool | None
    criteria: dict[str, float] = Field(default_factory=dict)
    goal: float | None = Field(None, description="The scorer's goal part (weighted mean of goal criteria, ungated).")
    process: float | None = Field(None, description="The scorer's process part (weighted mean of process rules).")
    gate: float | None = Field(None, description="The lowest process score.")
    gated: float | None = Field(None, description="The earlier gated score (goal credit x gate + process), not the headline.")
    judge_p_yes: list[float] = Field(default_factory=list)
    judge_truth: list[bool | None] = Field(
        default_factory=list, description="The scorer's answer to each judged query (synth; None: not a bank phrasing).")
    judge_all_yes: bool = False
    mp4: str | None = None
    gif: str | None = None
    cost: CostRecord = CostRecord()


# --------------------------------------------------------------------------- helpers

def load_frames(npz: str | Path) -> np.ndarray:
    with np.load(npz) as data:
        return data["frames"]


def save_frames(frames: np.ndarray, out_dir: Path) -> Path:
    """Write ``video.npz``, the lossless frames that are scored, atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames)
    return write_bytes_atomic(out_dir / VIDEO_NPZ, buf.getvalue())


def save_media(frames: np.ndarray, out_dir: Path, fps: float = 8.0) -> tuple[Path, Path]:
    """Write the viewable copies, ``video.mp4`` and ``video.gif``, atomically each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_video(out_dir / "video.mp4", frames, fps=fps), write_gif(out_dir / "video.gif", frames, fps=fps)


def load_reward(path: str | Path) -> CompiledReward:
    return CompiledReward.model_validate_json(Path(path).read_text())


def load_rules(path: str | Path) -> RuleSet:
    return RuleSet.model_validate_json(Path(path).read_text())


def _video_size(instance: TaskInstance) -> tuple[int, int]:
    """(height, width) of the item's video, from its spec (``core.pipeline.video_spec``)."""
    meta = instance.metadata
    if instance.first_frame is None or not {"n_frames", "height", "width"} <= meta.keys():
        raise InputError(f"instance {instance.id}", "has no first frame or no video spec (n_frames, fps, height, width)",
                         "an instance passed through core.pipeline.video_spec.with_video_spec (the evaluate flow does)")
    return int(meta["height"]), int(meta["width"])


def item_first_frame(instance: TaskInstance) -> np.ndarray:
    """The first frame at the item's video size (resized where the benchmark's image is not the
    size the Reasoner generates at)."""
    return resize_image(read_image(instance.first_frame), *_video_size(instance))


def _prepare(reasoner: ReasonerAdapter, instance: TaskInstance, prompt: str, seed: int) -> ItemCondition:
    """The item's condition (shared by its stages: ``ReasonerAdapter.prepare`` keeps it)."""
    return reasoner.prepare(item_first_frame(instance), prompt, seed, int(instance.metadata["n_frames"]))


def _fps(instance: TaskInstance) -> float:
    return float(instance.metadata.get("fps", 8.0))


# --------------------------------------------------------------------------- stages

def rules_stage(teacher: Teacher, instance: TaskInstance, out: Path, attempts: int, seed: int,
                queries: str = "teacher") -> tuple[Path, CostRecord]:
    """Stage 1: the Teacher's rules for the item (repaired, retried or a recorded fallback), or the generic set."""
    meter = CostMeter()
    with meter.phase("rules"):
        rules = extract_rules(teacher, read_image(instance.first_frame), instance.prompt, attempts, seed=seed, meter=meter,
                              queries=queries)
    return write_json_atomic(out, rules.model_dump(mode="json")), meter.take()


def reward_stage(teacher: Teacher, instance: TaskInstance, rules_json: Path, out: Path, k_frames: int,
                 lam: float) -> tuple[Path, CostRecord]:
    """Stage 2: everything of the reward that does not depend on the video, compiled once."""
    meter = CostMeter()
    with meter.phase("compile_reward"):
        reward = compile_reward(teacher, load_rules(rules_json), int(instance.metadata["n_frames"]), _video_size(instance),
                                k_frames, lam, fps=_fps(instance))
    return write_json_atomic(out, reward.model_dump(mode="json")), meter.take()


def generate_stage(
    reasoner: ReasonerAdapter, instance: TaskInstance, seed: int, steps: int, out_dir: Path,
    adapter: Path | None = None, prompt: str | None = None, guidance: Guidance | None = None,
) -> VideoRecord:
    """Stage 4 (and every baseline's generation): one video from the item's seed.

    With ``adapter`` the saved item LoRA is attached first (not reloaded when the optimise
    stage left that very adapter attached); without, any adapter is removed. With ``prompt``
    the instruction is replaced (PE, VideoTPO).
    """
    meter = CostMeter()
    reasoner.meter = meter
    text = prompt or instance.prompt
    if adapter is not None:
        load_adapter(reasoner, adapter)
    else:
        detach_lora(reasoner)
    with meter.phase("generate"):
        cond = _prepare(reasoner, instance, text, seed)
        frames = reasoner.generate(cond, steps, guidance)
    npz = save_frames(frames, out_dir)
    return VideoRecord(npz=str(npz), seed=seed, prompt=text,
                       adapter=str(adapter) if adapter else None, cost=meter.take())


def still_stage(instance: TaskInstance, seed: int, out_dir: Path) -> VideoRecord:
    """The ``still`` reference: the item's first frame held for its whole video (no model runs)."""
    meter = CostMeter()
    with meter.phase("generate"):
        frames = still_video(item_first_frame(instance), int(instance.metadata["n_frames"]))
    return VideoRecord(npz=str(save_frames(frames, out_dir)), seed=seed, prompt=instance.prompt, cost=meter.take())


def optimise_stage(
    reasoner: ReasonerAdapter, teacher: Teacher, instance: TaskInstance, reward_json: Path, cfg: OptimConfig, seed: int,
    out_dir: Path, grpo: GrpoConfig | None = None,
) -> OptimRecord:
    """Stage 3: a fresh LoRA optimised on the item; writes ``adapter/`` and ``optim.json`` (the trace).

    By the reward's gradient (the teacher method), or with ``grpo`` by GRPO on the reward as a
    black box (the ``grpo`` ablation). The saved adapter stays attached, so the final video's
    stage, next in the same process, need not reload it; a failure removes it.
    """
    reward = load_reward(reward_json)
    if grpo is None:
        return _optimised(reasoner, instance, cfg, seed, out_dir,
                          lambda cond: optimise_item(reasoner, teacher, cond, reward, cfg))
    return _optimised(reasoner, instance, cfg, seed, out_dir,
                      lambda cond: optimise_item_grpo(reasoner, teacher, cond, reward, cfg, grpo))


def oracle_reward_stage(reasoner: ReasonerAdapter, instance: TaskInstance, cfg: OptimConfig, seed: int,
                        out_dir: Path) -> OptimRecord:
    """Stage 3 of the ``oracle_reward`` method: ``optimise_stage`` with the synth scorer's relaxation as the
    reward (``core.method.oracle``), read from the item's metadata; no Teacher, no rules. Synth items only."""
    reward = oracle_reward(instance)
    return _optimised(reasoner, instance, cfg, seed, out_dir, lambda cond: optimise_item_oracle(reasoner, cond, reward, cfg))


def _optimised(reasoner: ReasonerAdapter, instance: TaskInstance, cfg: OptimConfig, seed: int, out_dir: Path,
               optimise: Callable[[ItemCondition], OptimResult]) -> OptimRecord:
    """Run ``optimise`` on the item's condition, save the adapter it leaves attached and its trace."""
    meter = CostMeter()
    reasoner.meter = meter
    try:
        with meter.phase("prepare"):
            cond = _prepare(reasoner, instance, instance.prompt, seed)
        result = optimise(cond)
        adapter = save_adapter(reasoner, out_dir / "adapter", cfg.lora).parent
    except BaseException:
        detach_lora(reasoner)
        raise
    optim_json = write_json_atomic(out_dir / "optim.json", result.model_dump(mode="json"))
    return OptimRecord(adapter=str(adapter), optim_json=str(optim_json), steps_run=result.steps_run,
                       stop_reason=result.stop_reason, final_loss=result.final_loss, cost=meter.take())


def shared_stage(
    reasoner: ReasonerAdapter, teacher: Teacher, instances: list[TaskInstance], reward_jsons: list[Path], seeds: list[int],
    cfg: OptimConfig, steps: int | None, seed: int, out_dir: Path,
) -> OptimRecord:
    """The ``shared`` ablation's one LoRA, trained on every item's reward; writes ``adapter/``,
    ``shared.json`` (the whole trace) and ``optim.json`` (its summary, in the per-item record's shape).

    The record's cost is one item's share of the training (``CostRecord.share``), so the
    method's seconds and NFE per item compare with the per-item method's.
    """
    if not (len(instances) == len(reward_jsons) == len(seeds)):
        raise ValueError("shared_stage needs one reward and one seed per instance")
    meter = CostMeter()
    reasoner.meter = meter
    rewards = [load_reward(r) for r in reward_jsons]
    try:
        with meter.phase("prepare"):
            items = [(_prepare(reasoner, inst, inst.prompt, s), reward) for inst, s, reward in zip(instances, seeds, rewards,
                                                                                                   strict=True)]
        result = train_shared_adapter(reasoner, teacher, items, cfg, steps, seed)
        adapter = save_adapter(reasoner, out_dir / "adapter", cfg.lora).parent
    except BaseException:
        detach_lora(reasoner)
        raise
    write_json_atomic(out_dir / "shared.json", result.model_dump(mode="json"))
    summary = {"steps_run": result.steps_run, "stop_reason": result.stop_reason, "items": result.items,
               "initial_loss": result.first_epoch_loss, "final_loss": result.last_epoch_loss, "trace": []}
    optim_json = write_json_atomic(out_dir / "optim.json", summary)
    return OptimRecord(adapter=str(adapter), optim_json=str(optim_json), steps_run=result.steps_run,
                       stop_reason=result.stop_reason, final_loss=result.last_epoch_loss,
                       cost=meter.take().share(len(items)))


def select_stage(
    videos: list[VideoRecord], by: Literal["judge", "oracle"], instance: TaskInstance,
    teacher: Teacher | None = None, reward_json: Path | None = None,
) -> SelectionRecord:
    """Best-of-N (``judge``: lowest reward loss by the Teacher) or Pass@N (``oracle``: the scorer)."""
    if not videos:
        raise ValueError("select_stage needs at least one candidate video")
    meter = CostMeter()
    if by == "judge":
        if teacher is None or reward_json is None:
            raise ValueError("selection by judge needs the Teacher and the compiled reward")
        reward = load_reward(reward_json)
        with meter.phase("judge"):
            values = [judge_loss(reward, judge(teacher, reward, load_frames(v.npz), meter)) for v in videos]
        k = int(np.argmin(values))
    else:
        with meter.phase("oracle_select"):
            values = [score_synth(instance, load_frames(v.npz)).score for v in videos]
        k = int(np.argmax(values))
    return SelectionRecord(by=by, selected=k, values=[float(x) for x in values], video=videos[k],
                           cost=_with_videos(meter, videos))


def videotpo_stage(
    reasoner: ReasonerAdapter, teacher: Teacher, instance: TaskInstance, reward_json: Path, seed: int, steps: int,
    rounds: int, per_round: int, out_dir: Path, guidance: Guidance | None = None,
) -> SelectionRecord:
    """VideoTPO (``core.method.methods.videotpo_search``) with every video saved; the judge's best is selected."""
    reward = load_reward(reward_json)
    meter = CostMeter()

    def generate(k: int, prompt: str) -> VideoRecord:
        return generate_stage(reasoner, instance, seed + k, steps, out_dir / f"r{k // per_round}-{k % per_round}",
                              prompt=prompt, guidance=guidance)

    def judge_video(video: VideoRecord) -> list[float]:
        with meter.phase("judge"):
            return judge(teacher, reward, load_frames(video.npz), meter)

    videos, losses, history = videotpo_search(instance.prompt, reward, rounds, per_round, generate, judge_video)
    write_json_atomic(out_dir / "videotpo.json", history)
    k = int(np.argmin(losses))
    return SelectionRecord(by="judge", selected=k, values=losses, video=videos[k], cost=_with_videos(meter, videos),
                           rounds=len(history))


def _with_videos(meter: CostMeter, videos: list[VideoRecord]) -> CostRecord:
    """The meter's cost plus the cost of generating ``videos``."""
    cost = meter.take()
    for v in videos:
        cost = cost.merged(v.cost)
    return cost


def score_stage(
    instance: TaskInstance, video: VideoRecord, out: Path, teacher: Teacher | None = None, reward_json: Path | None = None,
) -> ScoreRecord:
    """Stage 5: the benchmark's rule-based score (synth; None elsewhere) and, when a reward is
    given, the Teacher's judge; and the scored video's viewable copies (mp4, GIF) beside ``out``."""
    frames = load_frames(video.npz)
    t0 = time.perf_counter()
    result = None
    if instance.benchmark == "synth":
        result = score_synth(instance, frames)
        record = ScoreRecord(score=result.score, success=result.success, criteria={c.name: c.score for c in result.criteria},
                             goal=result.goal, process=result.process, gate=result.gate, gated=result.gated)
    else:
        record = ScoreRecord(score=None, success=None)
    seconds = {"score": time.perf_counter() - t0}
    if teacher is not None and reward_json is not None:
        t0 = time.perf_counter()
        reward = load_reward(reward_json)
        record.judge_p_yes = judge(teacher, reward, frames)
        record.judge_all_yes = all_yes(record.judge_p_yes)
        if result is not None:
            record.judge_truth = query_truths(instance, result, [q.text for q in reward.queries])
        seconds["judge_final"] = time.perf_counter() - t0
    record.cost = CostRecord(seconds={k: round(v, 4) for k, v in seconds.items()})
    mp4, gif = save_media(frames, out.parent, _fps(instance))
    record.mp4, record.gif = str(mp4), str(gif)
    write_json_atomic(out, json.loads(record.model_dump_json()))
    return record
