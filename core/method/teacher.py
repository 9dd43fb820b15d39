"""The Teacher adapter: rule extraction, reward compilation, the differentiable reward, the judge.

Stage 1, ``extract_rules``: the Teacher reads the first frame and the instruction and writes
one final-goal query and 1-3 process queries as JSON ("Yes" = satisfied). The reply is
validated with pydantic; a malformed reply is repaired (JSON cut out of surrounding text,
trailing commas, duplicate or extra queries), else retried with sampling a bounded number
of times, else replaced by a goal query derived from the instruction plus the paper's
generic process query. Which of these happened is recorded in ``RuleSet.source``.
``generic_rules`` gives that same task-agnostic set on purpose, without asking the Teacher:
the paper's "generic queries" ablation (``MethodConfig.queries = "generic"``).

Stage 2, ``compile_reward``: everything that does not depend on the video is done once per
item: the token ids of each templated query with the answer "Yes" in the assistant turn
(rendered by the model folder's own chat template, the video placeholder expanded to the
number of merged patches the processor would produce for K frames of this size), the answer
span, which positions' logits predict it, the frame indices, and lambda. The result is a small
pydantic object, serialisable to JSON.

Stage 3, ``query_losses`` / ``reward_loss``: L_VQA(v, q) = -sum_l log P(a_l | v, q, a_<l) on
the answer span, differentiable with respect to the frames through ``video_to_pixels``;
L = lambda * L_goal + (1 - lambda) / M * sum_m L_proc_m. ``judge`` gives P(Yes) per query
without a graph (for selection and reporting).
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import nullcontext
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from core.bench.synth.queries import MAX_PROCESS, RuleQueries
from core.errors import InputError
from core.method.cost import CostMeter
from core.models.teacher import (
    YES,
    Teacher,
    frames_to_tensor,
    generate_queries,
    mm_token_types,
    n_vision_tokens,
    qa_messages,
    render_chat,
    shared_video_encoding,
    video_to_pixels,
)

log = logging.getLogger(__name__)

#: The paper's generic process query (its "generic queries" ablation), used by the fallback.
GENERIC_PROCESS_QUERY = "Does every object stay intact and move without teleporting or passing through obstacles?"


# --------------------------------------------------------------------------- stage 1: rules

class RuleSet(BaseModel):
    """The rules of one item and how they were obtained.

    ``source``: ``teacher`` (valid reply), ``repaired`` (a reply fixed by ``repair_rules``),
    ``fallback`` (no usable reply; goal derived from the instruction), ``generic`` (the
    generic-queries ablation: the fallback's task-agnostic set by request, the Teacher not
    asked). ``replies`` keeps every raw reply, ``problems`` why each was rejected or repaired.
    """

    goal: str
    process: list[str] = Field(min_length=1, max_length=MAX_PROCESS)
    source: Literal["teacher", "repaired", "fallback", "generic"]
    attempts: int = Field(ge=0)
    replies: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)

    @property
    def queries(self) -> list[tuple[str, Literal["goal", "process"]]]:
        return [(self.goal, "goal")] + [(q, "process") for q in self.process]


def _json_object(text: str) -> dict | None:
    """The first {...} object in ``text``, tolerating trailing commas and single quotes."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    body = text[start : end + 1]
    for candidate in (body, re.sub(r",\s*([}\]])", r"\1", body)):
        for variant in (candidate, candidate.replace("'", '"')):
            try:
                data = json.loads(variant)
            except json.JSONDecodeError:
                continue
            return data if isinstance(data, dict) else None
    return None


def _as_question(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    if len(text) < 8:
        return None
    return text if text.endswith("?") else text.rstrip(".!") + "?"


def repair_rules(text: str) -> tuple[RuleQueries | None, list[str]]:
    """Try to turn a malformed reply into a valid rule set; (rules or None, what was fixed).

    Fixes: JSON embedded in prose, trailing commas, single quotes, a missing "?", a process
    query given as a string, duplicate queries, a process query equal to the goal (a
    contradictory/degenerate set), more than three process queries (the first three kept).
    """
    data = _json_object(text)
    if data is None:
        return None, ["no JSON object in the reply"]
    fixes: list[str] = []
    goal = _as_question(data.get("goal"))
    if goal is None:
        return None, ["no usable 'goal' question"]
    process = data.get("process")
    if isinstance(process, str):
        process, _ = [process], fixes.append("process was a string")
    if not isinstance(process, list):
        return None, ["no 'process' list"]
    kept: list[str] = []
    for q in process:
        q2 = _as_question(q)
        if q2 is None:
            fixes.append(f"dropped non-question {q!r}")
        elif q2.lower() == goal.lower() or q2.lower() in (k.lower() for k in kept):
            fixes.append(f"dropped duplicate {q2!r}")
        else:
            kept.append(q2)
    if len(kept) > MAX_PROCESS:
        fixes.append(f"kept the first {MAX_PROCESS} of {len(kept)} process queries")
        kept = kept[:MAX_PROCESS]
    if not kept:
        return None, fixes + ["no process question left"]
    return RuleQueries(goal=goal, process=kept), fixes


def fallback_rules(prompt: str) -> RuleQueries:
    """A goal query derived from the instruction plus the generic process query."""
    instruction = " ".join(prompt.split()).rstrip(".!?")
    return RuleQueries(goal=f"By the end of the video, is this done: {instruction}?", process=[GENERIC_PROCESS_QUERY])


def generic_rules(prompt: str) -> RuleSet:
    """The paper's "generic queries" ablation: "goal achieved?" and "process valid?", no Teacher call.

    The Teacher's judging prompt holds only the video and the question, so a bare "is the goal
    achieved?" would not say which goal; the goal query therefore carries the instruction
    (``fallback_rules``'s). What this ablation removes is the Teacher reading the task and
    writing its specific rules; the judge and the reward are unchanged.
    """
    rules = fallback_rules(prompt)
    return RuleSet(goal=rules.goal, process=rules.process, source="generic", attempts=0)


def extract_rules(
    teacher: Teacher,
    first_frame: np.ndarray,
    prompt: str,
    max_attempts: int = 3,
    seed: int = 0,
    meter: CostMeter | None = None,
    queries: Literal["teacher", "generic"] = "teacher",
) -> RuleSet:
    """Stage 1: the Teacher writes the item's rules; repaired, retried, or a recorded fallback.

    The first attempt decodes greedily (deterministic); retries sample (temperature 0.8)
    from ``seed + attempt`` so that they can differ. ``queries="generic"`` returns
    ``generic_rules`` instead (the ablation; no Teacher call).
    """
    if queries == "generic":
        return generic_rules(prompt)
    if queries != "teacher":
        raise InputError("queries", f"is {queries!r}", "'teacher' or 'generic'")
    replies: list[str] = []
    problems: list[str] = []
    for attempt in range(max_attempts):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + attempt)
            reply = generate_queries(teacher, first_frame, prompt, sample=attempt > 0)
        if meter is not None:
            meter.count("teacher_generate")
        replies.append(reply)
        try:
            rules = RuleQueries.parse(reply, where=f"rules reply {attempt + 1}")
            return RuleSet(goal=rules.goal, process=rules.process, source="teacher", attempts=attempt + 1,
                           replies=replies, problems=problems)
        except InputError as exc:
            problems.append(str(exc))
        repaired, fixes = repair_rules(reply)
        if repaired is not None:
            problems += fixes
            return RuleSet(goal=repaired.goal, process=repaired.process, source="repaired", attempts=attempt + 1,
                           replies=replies, problems=problems)
        problems += fixes
    fb = fallback_rules(prompt)
    log.warning("rule extraction fell back to the instruction after %d replies: %s", max_attempts, problems[-1:])
    return RuleSet(goal=fb.goal, process=fb.process, source="fallback", attempts=max_attempts, replies=replies,
                   problems=problems)


# --------------------------------------------------------------------------- stage 2: compile

class CompiledQuery(BaseModel):
    """One query's token ids (prompt + answer) and the span the loss reads."""

    text: str
    kind: Literal["goal", "process"]
    input_ids: list[int]
    answer_start: int = Field(description="Index of the first answer token in input_ids.")
    answer_ids: list[int]


class CompiledReward(BaseModel):
    """Everything about the reward that does not depend on the video (stage 2's output)."""

    queries: list[CompiledQuery]
    lam: float = Field(ge=0.0, le=1.0, description="Weight of the goal query; (1 - lam) is shared by the process queries.")
    n_frames: int
    frame_indices: list[int]
    frame_size: tuple[int, int]
    fps: float = Field(description="Frame rate of the judged videos (Qwen3-VL writes frame timestamps).")
    grid_thw: tuple[int, int, int]
    n_video_tokens: int
    answer: str = YES

    @property
    def weights(self) -> list[float]:
        n_proc = sum(q.kind == "process" for q in self.queries)
        return [self.lam if q.kind == "goal" else (1.0 - self.lam) / n_proc for q in self.queries]


def compile_reward(
    teacher: Teacher, rules: RuleSet, n_frames: int, frame_size: tuple[int, int], k_frames: int = 24, lam: float = 0.5,
    fps: float | None = None,
) -> CompiledReward:
    """Stage 2: tokenise every query with the answer in the assistant turn, once per item."""
    return _compile(teacher, rules.queries, n_frames, frame_size, k_frames, lam, fps)


def recompile_reward(teacher: Teacher, reward: CompiledReward) -> CompiledReward:
    """``reward``'s queries, frames and weights, tokenised for another Qwen-VL ``teacher``.

    The held-out judge answers exactly the questions the optimising Teacher asked, on the same
    frames; only the token ids (its own tokenizer and video tokens) are its own.
    """
    return _compile(teacher, [(q.text, q.kind) for q in reward.queries], reward.n_frames, reward.frame_size,
                    len(reward.frame_indices), reward.lam, reward.fps)


def _compile(
    teacher: Teacher, queries: list[tuple[str, Literal["goal", "process"]]], n_frames: int, frame_size: tuple[int, int],
    k_frames: int, lam: float, fps: float | None,
) -> CompiledReward:
    from core.media import sample_indices

    if not 0.0 <= lam <= 1.0:
        raise InputError("lam", f"is {lam}", "a weight in [0, 1]")
    idx = sample_indices(n_frames, k_frames).tolist()
    if len(idx) < k_frames:
        log.info("video has %d frames < K=%d: the Teacher sees all %d", n_frames, k_frames, n_frames)
    fps = fps or teacher.video_fps
    probe = torch.zeros(len(idx), 3, *frame_size)
    _, grid = video_to_pixels(probe, teacher.vision)
    n_tokens = n_vision_tokens(grid, teacher.vision.merge_size)
    video_text = teacher.video_text(grid, idx, fps)
    tok = teacher.tokenizer
    answer_ids = tok(YES, add_special_tokens=False)["input_ids"]
    compiled = []
    for text, kind in queries:
        messages = qa_messages(text)
        prompt = render_chat(tok, messages, add_generation_prompt=True, video_text=video_text)
        full = render_chat(tok, messages + [{"role": "assistant", "content": YES}], add_generation_prompt=False,
                           video_text=video_text)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
        span = f_ids[len(p_ids) : len(p_ids) + len(answer_ids)]
        if f_ids[: len(p_ids)] != p_ids or span != answer_ids:
            raise InputError("teacher tokenizer", f"tokenises {YES!r} in the assistant turn as {tok.convert_ids_to_tokens(span)} "
                             f"but alone as {tok.convert_ids_to_tokens(answer_ids)}",
                             "the answer's tokens to be the same in context (the reward reads exactly those)")
        compiled.append(CompiledQuery(text=text, kind=kind, input_ids=p_ids + answer_ids, answer_start=len(p_ids),
                                      answer_ids=answer_ids))
    return CompiledReward(queries=compiled, lam=lam, n_frames=n_frames, frame_indices=idx, frame_size=frame_size, fps=fps,
                          grid_thw=tuple(int(g) for g in grid[0]), n_video_tokens=n_tokens)


# --------------------------------------------------------------------------- stage 3: reward

def query_logprobs(
    teacher: Teacher, reward: CompiledReward, frames: torch.Tensor, meter: CostMeter | None = None,
    share_video: bool = True,
) -> torch.Tensor:
    """(M,) log P(answer span | video, query) for every compiled query; differentiable in ``frames``.

    ``frames``: (K, 3, H, W) in [0, 1], the reward's ``frame_indices`` of the video. The M
    queries run as one batch, each sequence carrying the video; ``share_video`` encodes it
    once for all of them (``shared_video_encoding``; same result, 1/M of the vision tower).
    """
    if frames.shape[0] != len(reward.frame_indices) or tuple(frames.shape[-2:]) != tuple(reward.frame_size):
        raise InputError("frames", f"have shape {tuple(frames.shape)}",
                         f"({len(reward.frame_indices)}, 3, {reward.frame_size[0]}, {reward.frame_size[1]}) as compiled")
    pixels, grid = video_to_pixels(frames, teacher.vision)
    m = len(reward.queries)
    seqs = [q.input_ids for q in reward.queries]
    width = max(len(s) for s in seqs)
    ids = torch.full((m, width), teacher.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((m, width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    device = teacher.model.device
    extra = {k: v.to(device) for k, v in teacher.video_kwargs(m).items()}
    with shared_video_encoding(teacher.model, m) if share_video else nullcontext():
        hidden = teacher.model.model(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            mm_token_type_ids=mm_token_types(ids, teacher.image_token_id, teacher.video_token_id).to(device),
            pixel_values_videos=pixels.repeat(m, 1).to(device, teacher.model.dtype), video_grid_thw=grid.repeat(m, 1).to(device),
            use_cache=False, **extra,
        ).last_hidden_state
    if meter is not None:
        meter.count("teacher_forward")
    out = []
    for i, q in enumerate(reward.queries):
        pos = torch.arange(q.answer_start - 1, q.answer_start - 1 + len(q.answer_ids), device=device)
        logp = torch.log_softmax(teacher.model.lm_head(hidden[i, pos]).float(), dim=-1)
        out.append(logp.gather(1, torch.tensor(q.answer_ids, device=device)[:, None]).sum())
    return torch.stack(out)


def reward_loss(reward: CompiledReward, logprobs: torch.Tensor) -> torch.Tensor:
    """L = lambda * L_goal + (1 - lambda) / M * sum_m L_proc_m, with L_VQA = -log P(Yes)."""
    w = torch.tensor(reward.weights, dtype=logprobs.dtype, device=logprobs.device)
    return (w * -logprobs).sum()


def video_frames(reward: CompiledReward, video: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 video -> the compiled frames as (K, 3, H, W) in [0, 1]."""
    if len(video) != reward.n_frames:
        raise InputError("video", f"has {len(video)} frames", f"{reward.n_frames} as compiled")
    return frames_to_tensor(video[reward.frame_indices])


@torch.no_grad()
def judge(teacher: Teacher, reward: CompiledReward, video: np.ndarray, meter: CostMeter | None = None) -> list[float]:
    """P(Yes) per query for a decoded video (no graph): for selection and reporting."""
    return query_logprobs(teacher, reward, video_frames(reward, video), meter).exp().tolist()


def judge_loss(reward: CompiledReward, p_yes: list[float]) -> float:
    """The reward loss from judged probabilities (what best-of-N minimises)."""
    return float(reward_loss(reward, torch.tensor(p_yes).clamp_min(1e-12).log()))


#: The judge answers Yes to a query when its P(Yes) is above this.
YES_THRESHOLD = 0.5


def all_yes(p_yes: list[float], threshold: float = YES_THRESHOLD) -> bool:
    """The judge's verdict that every rule holds (a column; the per-query judge-fooled rate is the headline)."""
    return all(p > threshold for p in p_yes)
