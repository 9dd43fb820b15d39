"""RULER-Bench's judge protocol, run with a local Qwen-VL model.

Why this module exists: RULER-Bench scores a video by a VLM judge that labels each
checklist question Good / Medium / Poor. The official judge is a proprietary model that
cannot be called from here, so without a judge a RULER run ends with unscored videos.
Researchers commonly substitute a strong open VLM (e.g. Qwen2.5-VL-72B or Qwen3-VL on a
GPU); this module runs the official protocol with any Qwen2.5-VL / Qwen3-VL folder, so
the scores are comparable between methods of one run, and reports which judge made
them (scores from a different judge are not the leaderboard's numbers).

The protocol (../shared/BENCHMARKS.md), one user message in this order:

1. the input image, if any;
2. the input prompt;
3. the ground-truth image, if any;
4. the implicit explanation, if any;
5. the input video's frames, if any;
6. the video to evaluate, as frames at 2 fps, longest side at most 512 pixels;
7. the numbered checklist questions, with the instruction to answer one label per
   question, each judged independently, a question whose premise is not met being Poor.

Two protocols (``JudgeConfig.protocol``), differing only in the words around the
questions and in the reply they ask for (``PROTOCOLS``):

- ``numbered`` (the default): one ``<number>. <label>`` line per question; a leading
  ``<think>...</think>`` is ignored (``core.bench.ruler_replies.final_answer``);
- ``official``: the official judge's system prompt, free reasoning inside
  ``<think>...</think>``, then the labels as a JSON list inside ``<answer>...</answer>``.
  The local judge renders one user turn (``core.models.teacher.generate_reply``), so the
  system prompt is that turn's first text part. Its wording is ours, written to the
  official format (../shared/BENCHMARKS.md). Reasoning is long: raise ``max_new_tokens``.

A reply with the wrong number of labels or an unknown label is invalid (read by
``core.bench.ruler_replies``: ``parse_numbered_reply``, ``parse_official_labels``): the
judge is asked again, greedily first and then by seeded sampling (a greedy retry would
repeat the same reply), at most ``JudgeConfig.attempts`` times. An instance without a
valid reply is recorded as failed, with every reply kept, and left out of the aggregate:
never silently counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_serializer

from core.bench.layout import Benchmark, ruler_output_path
from core.bench.record import TaskInstance
from core.bench.ruler_replies import LabelParser, judgement_from_reply, parse_numbered_reply, parse_official_labels
from core.bench.ruler_scores import InvalidJudgeReply, RulerJudgement, RulerReport, aggregate
from core.config import StrictConfig, drop_unset
from core.errors import InputError, VlmtError
from core.media import read_image, read_video, resize_image, video_header
from core.models.teacher import ChatPart, ImagePart, Teacher, VideoPart, generate_reply

log = logging.getLogger(__name__)

#: What follows the numbered checklist: the label set, independence, the premise rule and the reply format.
JUDGE_INSTRUCTION = (
    "Judge the generated video on each numbered question independently. Answer each with exactly one label: "
    "Good, Medium or Poor. If a question's premise is not met in the video, its label is Poor. "
    "Reply with one line per question, in order, written as '<number>. <label>', and nothing else."
)

#: The official judge's role and rules, sent first (the ``official`` protocol).
OFFICIAL_SYSTEM_PROMPT = (
    "You are an expert evaluator of videos generated from an instruction. You are given the task's inputs (an input "
    "image, the input prompt and, where available, a ground-truth image, an implicit explanation of the rule involved "
    "and an input video), the generated video, and a numbered checklist of questions about it. Judge each question "
    "independently and answer it with exactly one label: Good, Medium or Poor. If a question's premise is not met in "
    "the video, its label is Poor. First reason inside <think>...</think>, then give the labels, one per question "
    "and in order, as a JSON list inside <answer>...</answer>, for example: "
    '<think>...</think><answer>["Good", "Poor", "Medium"]</answer>'
)
#: What follows the numbered checklist in the ``official`` protocol.
OFFICIAL_INSTRUCTION = (
    "Judge each numbered question independently with one label: Good, Medium or Poor (Poor if its premise is not met). "
    "Reason inside <think>...</think>, then answer with the labels in question order as a JSON list inside "
    "<answer>...</answer>."
)

#: ``(parts, attempt) -> reply``: one call of the judge model (attempt 0 is the first try).
ReplyFn = Callable[[Sequence[ChatPart], int], str]

ProtocolName = Literal["numbered", "official"]


@dataclass(frozen=True)
class JudgeProtocol:
    """What a protocol says around the questions and how it reads the reply.

    ``system`` (if any) opens the message; ``instruction`` follows the numbered questions;
    ``parse`` turns a reply into one label per question or raises ``InvalidJudgeReply``.
    """

    system: str | None
    instruction: str
    parse: LabelParser


PROTOCOLS: dict[str, JudgeProtocol] = {
    "numbered": JudgeProtocol(system=None, instruction=JUDGE_INSTRUCTION, parse=parse_numbered_reply),
    "official": JudgeProtocol(system=OFFICIAL_SYSTEM_PROMPT, instruction=OFFICIAL_INSTRUCTION, parse=parse_official_labels),
}


class JudgeConfig(StrictConfig):
    """How the judge sees the videos and how often it is asked again."""

    model_config = ConfigDict(frozen=True)

    fps: float = Field(2.0, gt=0, description="Frames per second sampled from each video (the protocol's 2).")
    max_side: int = Field(512, ge=16, description="Longest side of the sampled frames (the protocol's 512); never upscaled.")
    attempts: int = Field(3, ge=1, description="Replies asked for per instance before it is recorded as failed.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature of the retries (the first try is greedy).")
    max_new_tokens: int = Field(256, ge=8, description="Reply budget; raise it for judges that reason first (Thinking).")
    seed: int = Field(0, description="Seed of the retries' sampling: reruns give the same replies.")
    protocol: ProtocolName = Field(
        "numbered", description="Reply format asked for: 'numbered' lines, or 'official' (the official judge's system "
        "prompt and <think>...</think><answer>[labels]</answer>; give it a larger max_new_tokens).")

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        # protocol came after judge records were first cached under keys made from this dump:
        # left at its default it is left out, so those keys (and their records) hold
        return drop_unset(handler(self), protocol="numbered")

    @property
    def judge_protocol(self) -> JudgeProtocol:
        """The prompt words and reply parser of ``protocol``."""
        return PROTOCOLS[self.protocol]


class JudgeAttempt(BaseModel):
    """One reply of the judge and, if it could not be scored, why."""

    reply: str
    problem: str | None = None


class JudgeRecord(BaseModel):
    """Everything the judge said about one instance's video, scored or not."""

    instance_id: str
    task_name: str
    category: str | None
    video: str
    attempts: list[JudgeAttempt] = Field(default_factory=list)
    judgement: RulerJudgement | None = None
    error: str | None = None
    seconds: float = 0.0


class JudgeRun(BaseModel):
    """A judged set of videos: per-instance records and, when any instance was judged, the report."""

    judge: str
    config: JudgeConfig
    records: list[JudgeRecord]
    report: RulerReport | None

    @property
    def failed(self) -> list[JudgeRecord]:
        return [r for r in self.records if r.judgement is None]


def judge_frames(video: np.ndarray, fps: float, cfg: JudgeConfig) -> np.ndarray:
    """``video`` (recorded at ``fps``) resampled to ``cfg.fps`` from its first frame, longest side <= ``cfg.max_side``."""
    if fps <= 0:
        raise InputError("video", f"frame rate is {fps}", "a positive frame rate")
    n = len(video)
    times = np.arange(0.0, n / fps, 1.0 / cfg.fps)
    frames = video[np.minimum(np.round(times * fps).astype(int), n - 1)]
    h, w = frames.shape[1:3]
    scale = cfg.max_side / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        frames = np.stack([resize_image(f, *size) for f in frames])
    return frames


def _read_judge_video(path: Path, cfg: JudgeConfig) -> VideoPart:
    _, fps, _, _ = video_header(path)
    return VideoPart(judge_frames(read_video(path), fps, cfg), cfg.fps)


def checklist_text(instance: TaskInstance, instruction: str = JUDGE_INSTRUCTION) -> str:
    """The numbered checklist questions followed by the answer ``instruction`` (the protocol's)."""
    if not instance.checklist:
        raise InputError(f"{instance.id}:checklist", "is empty", "at least one checklist question")
    lines = [f"{i}. {item.question}" for i, item in enumerate(instance.checklist, start=1)]
    return "Questions:\n" + "\n".join(lines) + "\n" + instruction


def judge_parts(instance: TaskInstance, video: Path, cfg: JudgeConfig, root: Path) -> list[ChatPart]:
    """The protocol's user message for ``instance`` and the generated ``video``, in the protocol's order.

    ``root`` resolves a relative ``input_video_path`` (the record file's directory). A
    referenced input that cannot be read is an error naming it, not a silently shorter message.
    The ``official`` protocol's system prompt comes first (the local judge has no system turn).
    """
    protocol = cfg.judge_protocol
    parts: list[ChatPart] = [protocol.system] if protocol.system else []
    if instance.first_frame is not None:
        parts += ["Input image:", ImagePart(read_image(instance.first_frame))]
    parts.append(f"Input prompt: {instance.prompt.strip()}")
    if instance.final_frame is not None:
        parts += ["Ground-truth image:", ImagePart(read_image(instance.final_frame))]
    explanation = (instance.metadata.get("implicit_explanation") or "").strip()
    if explanation:
        parts.append(f"Implicit explanation: {explanation}")
    input_video = instance.metadata.get("input_video_path")
    if input_video:
        path = Path(input_video) if Path(input_video).is_absolute() else root / input_video
        if not path.is_file():
            raise InputError(f"{instance.id}:input_video_path", f"{path} not found", "an existing video file")
        parts += ["Input video:", _read_judge_video(path, cfg)]
    parts += ["Generated video to evaluate:", _read_judge_video(video, cfg), checklist_text(instance, protocol.instruction)]
    return parts


def judge_instance(instance: TaskInstance, video: Path, reply_fn: ReplyFn, cfg: JudgeConfig, root: Path) -> JudgeRecord:
    """Ask the judge about one video until a reply scores or the attempts run out.

    Bad input (a missing or unreadable video or image) is a failed record; a fault of the
    judge itself (e.g. CUDA out of memory) propagates, so that a cached pipeline does not
    keep it as the instance's result (``judge_videos`` records it and goes on).
    """
    t0 = time.perf_counter()
    record = new_record(instance, video)
    try:
        parts = judge_parts(instance, video, cfg, root)
        for attempt in range(cfg.attempts):
            reply = reply_fn(parts, attempt)
            try:
                record.judgement = judgement_from_reply(instance, reply, cfg.judge_protocol.parse)
                record.attempts.append(JudgeAttempt(reply=reply))
                break
            except InvalidJudgeReply as exc:
                record.attempts.append(JudgeAttempt(reply=reply, problem=exc.problem))
                log.info("%s: attempt %d: %s", instance.id, attempt + 1, exc.problem)
        else:
            record.error = f"no valid judge reply in {cfg.attempts} attempt(s); last: {record.attempts[-1].problem}"
    except (VlmtError, OSError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.seconds = round(time.perf_counter() - t0, 3)
    if record.error:
        log.warning("%s: %s", instance.id, record.error)
    return record


def qwen_vl_reply_fn(teacher: Teacher, cfg: JudgeConfig) -> ReplyFn:
    """A ``ReplyFn`` over a loaded Qwen-VL folder: greedy first, then sampling seeded by ``cfg.seed`` and the attempt."""
    import torch

    def reply(parts: Sequence[ChatPart], attempt: int) -> str:
        if attempt == 0:
            return generate_reply(teacher, parts, cfg.max_new_tokens)
        torch.manual_seed(cfg.seed + attempt)
        return generate_reply(teacher, parts, cfg.max_new_tokens, sample=True, temperature=cfg.temperature)

    return reply


def judge_videos(benchmark: Benchmark, videos: Path, reply_fn: ReplyFn, cfg: JudgeConfig, judge: str,
                 on_item: Callable[[JudgeRecord], None] | None = None) -> JudgeRun:
    """Judge a model's RULER-Bench outputs at ``videos/{task_name}/{index}.mp4``.

    ``videos`` is the model's directory of the official layout (``vlmt evaluate`` exports
    each method's there); its name is the model name. Missing or unreadable videos are
    failed records; the report aggregates the judged instances only.
    """
    if benchmark.kind != "ruler":
        raise InputError(benchmark.root, f"is a {benchmark.kind} benchmark", "a RULER-Bench record file")
    videos = Path(videos)
    if not videos.is_dir():
        raise InputError(videos, "is not a directory", "a model's outputs at {task_name}/{index}.mp4")
    records = []
    for instance in benchmark.instances:
        video = ruler_output_path(videos.parent, instance, videos.name)
        try:
            record = judge_instance(instance, video, reply_fn, cfg, benchmark.root)
        except Exception as exc:  # one item's failure never loses the others' results
            log.exception("%s: the judge failed", instance.id)
            record = failed_record(instance, video, exc)
        records.append(record)
        if on_item:
            on_item(record)
    return judge_run(judge, cfg, records)


def new_record(instance: TaskInstance, video: Path, error: str | None = None) -> JudgeRecord:
    """An instance's record before the judge has spoken (or with the error that stopped it)."""
    return JudgeRecord(instance_id=instance.id, task_name=instance.task_id, category=instance.category, video=str(video),
                       error=error)


def failed_record(instance: TaskInstance, video: Path, exc: BaseException) -> JudgeRecord:
    """The record of an instance whose judging raised."""
    return new_record(instance, video, f"{type(exc).__name__}: {exc}")


def judge_run(judge: str, cfg: JudgeConfig, records: list[JudgeRecord]) -> JudgeRun:
    """Records plus the official aggregate of the judged ones (None when none was judged)."""
    judged = [r.judgement for r in records if r.judgement is not None]
    return JudgeRun(judge=judge, config=cfg, records=records, report=aggregate(judged) if judged else None)
