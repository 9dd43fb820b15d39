"""The methods compared, each one function of (item, adapters, config) -> a video and what it did.

* ``vanilla``: the Reasoner once, from the item's seed.
* ``best_of_n``: N seeds; the Teacher's judge picks the video with the lowest reward loss
  (non-oracle: it sees only what a user would have).
* ``best_of_n_heldout`` (needs a held-out judge, not in the default list): the same N seeds;
  the held-out judge (another Teacher, ``EvaluateConfig.heldout_judge``) picks with the same
  queries. Selection by a judge that nothing else saw: beside ``best_of_n`` it says how much
  of selection's gain is the optimising Teacher's taste. Its own held-out-judge column is not
  independent (that judge chose it). It runs through the pipeline (``vlmt evaluate``).
* ``pass_at_n``: the same N seeds; the benchmark's own scorer picks (the paper's oracle
  Pass@N; an upper bound on selection, not a deployable method).
* ``pe`` (VLM-as-Solver, prompt engineering): the Teacher expands the instruction once, and
  the Reasoner generates from the expanded prompt. Our expansion appends the Teacher's own
  extracted rules to the instruction (one Teacher generation; the tiny zoo Teacher was not
  trained to write free-form prompts, and appending its rules is what a VLM-as-Solver adds).
* ``videotpo`` (VLM-as-Solver, iterative): each round generates two videos from the current
  prompt, the Teacher judges them, and the rules the better one breaks (P(Yes) < 0.5) are
  appended to the prompt as the critique; the best video by the judge over all rounds is kept.
* ``teacher`` (the paper's method): a fresh LoRA optimised on the item by the Teacher's
  differentiable reward, then the final video with the full schedule, the same eps and the VAE.
* ``shared`` (an ablation, not in the default list): one LoRA trained with the same reward
  across all the items, then used for each (the paper's "shared post-training";
  ``core.method.shared``). It needs every item's reward first, so it runs through the
  pipeline (``vlmt evaluate --methods ...,shared``), not ``vlmt compare``.
* ``grpo`` (an ablation, not in the default list): the teacher method's fresh LoRA and reward,
  but the reward used as a black box and optimised by GRPO over stochastic rollouts (the
  paper's "non-differentiable reward"; ``core.method.grpo``), then the final video as the
  teacher method's.
* ``oracle_reward`` (an oracle, not in the default list): the teacher method's optimisation with
  a differentiable relaxation of the benchmark's own scorer as the reward, read from the item's
  ground truth (``core.method.oracle``; synth items only). No Teacher call. An upper bound that
  separates what the Reasoner and its decoders allow from what the Teacher teaches.
* ``still`` (a reference, not a method): the first frame held for the whole video, no Reasoner
  and no Teacher. A rule-based scorer gives it every rule about not breaking the scene and no
  goal (0.3 of 1 on the synth benchmark), so a method shows reasoning only above it.

Every method shares the item's rules (extracted and compiled once per item, or the generic
set under ``MethodConfig.queries = "generic"``); their cost is added to each method that uses
them. Seeds: candidate ``k`` of an item uses ``seed + k``, so
candidate 0 is the vanilla video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import Field, model_serializer

from core.bench.record import TaskInstance
from core.config import StrictConfig, drop_unset
from core.method.cost import CostMeter
from core.method.grpo import GrpoConfig, optimise_item_grpo
from core.method.optimise import OptimConfig, OptimResult, detach_lora, optimise_item
from core.method.oracle import optimise_item_oracle, oracle_reward
from core.method.reasoner import ItemCondition, ReasonerAdapter
from core.method.teacher import CompiledReward, RuleSet, judge, judge_loss
from core.models.teacher import Teacher

log = logging.getLogger(__name__)

V = TypeVar("V")


class Method(str, Enum):
    VANILLA = "vanilla"
    BEST_OF_N = "best_of_n"
    BEST_OF_N_HELDOUT = "best_of_n_heldout"
    PASS_AT_N = "pass_at_n"
    PE = "pe"
    VIDEOTPO = "videotpo"
    TEACHER = "teacher"
    STILL = "still"
    SHARED = "shared"
    GRPO = "grpo"
    ORACLE_REWARD = "oracle_reward"


#: Ablations of the teacher method: run only when named.
ABLATIONS = {Method.SHARED, Method.GRPO}
#: Methods that read the benchmark's answer key (its scorer or ground truth): upper bounds, not
#: deployable methods; marked "oracle" wherever results are shown (``core.report.data``).
ORACLES = {Method.PASS_AT_N, Method.ORACLE_REWARD}
#: Methods that need a held-out judge (``EvaluateConfig.heldout_judge``) besides the optimising Teacher.
NEEDS_HELDOUT_JUDGE = {Method.BEST_OF_N_HELDOUT}
#: What runs unless methods are named: every method and the still reference; not the ablations,
#: nor the oracle reward (it needs synth items), nor what needs a held-out judge.
DEFAULT_METHODS: list[Method] = [m for m in Method if m not in ABLATIONS | NEEDS_HELDOUT_JUDGE | {Method.ORACLE_REWARD}]


#: Methods that need the item's rules from the Teacher.
USES_RULES = {Method.BEST_OF_N, Method.BEST_OF_N_HELDOUT, Method.PE, Method.VIDEOTPO, Method.TEACHER, Method.SHARED, Method.GRPO}
#: Methods that draw N candidates (``MethodConfig.n``) and select one.
CANDIDATE_METHODS = {Method.BEST_OF_N, Method.BEST_OF_N_HELDOUT, Method.PASS_AT_N}
#: Methods that run the Reasoner (and so pay for preparing its condition).
USES_REASONER = set(Method) - {Method.STILL}
#: Methods that train a LoRA (and so read the optimiser's learning rate).
USES_OPTIMISER = {Method.TEACHER, Method.SHARED, Method.GRPO, Method.ORACLE_REWARD}
#: Methods that optimise a fresh LoRA per item (their results carry the optimisation's trace).
PER_ITEM_OPTIMISERS = {Method.TEACHER, Method.GRPO, Method.ORACLE_REWARD}


def trains_lora(methods: Iterable[Method | str], auto_n: bool) -> bool:
    """Whether a run with these methods trains a LoRA: one of them does, or N is chosen
    automatically for a candidate method (which runs the teacher method to time it)."""
    chosen = {Method(m) for m in methods}
    return bool(USES_OPTIMISER & chosen) or (auto_n and bool(CANDIDATE_METHODS & chosen))


class MethodConfig(StrictConfig):
    """Knobs of every method; ``optim`` is the teacher method's."""

    optim: OptimConfig = OptimConfig()
    grpo: GrpoConfig = Field(default_factory=GrpoConfig, description="The grpo ablation's optimiser (with optim's LoRA, "
                                                                     "reward, decoder and stopping rule).")
    n: int = Field(4, ge=1, description="Candidates for best_of_n and pass_at_n.")
    tpo_rounds: int = Field(2, ge=1)
    tpo_videos: int = Field(2, ge=1, description="Videos per VideoTPO round.")
    rule_attempts: int = Field(3, ge=1, description="Teacher replies tried before the recorded fallback.")
    shared_steps: int | None = Field(None, ge=1, description="Updates of the shared method's one LoRA (None: "
                                                          "optim.max_steps x items, the per-item method's budget).")
    queries: Literal["teacher", "generic"] = Field(
        "teacher", description="Where every rule-using method's queries come from: 'teacher' (the Teacher writes the "
                               "item's rules) or 'generic' (the paper's generic-queries ablation: an instruction-derived "
                               "goal query and one generic process query; the Teacher is not asked).")

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        # added after experiment ids were first made from this dump: unset, it leaves them as they were
        return drop_unset(handler(self), queries="teacher", shared_steps=None, grpo=GrpoConfig().model_dump(mode="json"))


@dataclass
class ItemContext:
    """One item's fixed inputs, shared by every method."""

    instance: TaskInstance
    first_frame: np.ndarray
    condition: ItemCondition
    rules: RuleSet | None = None
    reward: CompiledReward | None = None
    scorer: Callable[[TaskInstance, np.ndarray], float] | None = None


@dataclass
class MethodOutput:
    video: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _generate(reasoner: ReasonerAdapter, cond: ItemCondition, optim: OptimConfig, meter: CostMeter) -> np.ndarray:
    """One video with the run's sampler (``optim.sampler_steps``, ``optim.guidance``)."""
    with meter.phase("generate"):
        return reasoner.generate(cond, optim.sampler_steps, optim.guidance)


def _seeded(reasoner: ReasonerAdapter, ctx: ItemContext, seed: int, text=None) -> ItemCondition:
    if seed == ctx.condition.seed and text is None:
        return ctx.condition
    cond = reasoner.prepare(ctx.first_frame, ctx.instance.prompt, seed, ctx.condition.n_frames)
    return cond if text is None else cond.with_text(text)


def _judge(teacher: Teacher, reward: CompiledReward, video: np.ndarray, meter: CostMeter) -> list[float]:
    with meter.phase("judge"):
        return judge(teacher, reward, video, meter)


def _need_reward(ctx: ItemContext) -> CompiledReward:
    if ctx.reward is None:
        raise ValueError("this method needs the item's compiled reward (extract and compile the rules first)")
    return ctx.reward


def still_video(first_frame: np.ndarray, n_frames: int) -> np.ndarray:
    """The ``still`` reference: ``first_frame`` (H, W, 3) held for ``n_frames`` frames."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    return np.repeat(np.asarray(first_frame)[None], n_frames, axis=0)


def run_still(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    with meter.phase("generate"):
        return MethodOutput(still_video(ctx.first_frame, ctx.condition.n_frames))


def run_vanilla(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    return MethodOutput(_generate(reasoner, ctx.condition, cfg.optim, meter), {"seed": ctx.condition.seed})


def candidates(reasoner: ReasonerAdapter, ctx: ItemContext, n: int, optim: OptimConfig, meter: CostMeter) -> list[np.ndarray]:
    return [_generate(reasoner, _seeded(reasoner, ctx, ctx.condition.seed + k), optim, meter) for k in range(n)]


def run_best_of_n(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    reward = _need_reward(ctx)
    videos = candidates(reasoner, ctx, cfg.n, cfg.optim, meter)
    losses = [judge_loss(reward, _judge(teacher, reward, v, meter)) for v in videos]
    k = int(np.argmin(losses))
    return MethodOutput(videos[k], {"n": cfg.n, "selected": k, "judge_losses": losses})


def run_pass_at_n(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    if ctx.scorer is None:
        raise ValueError("pass_at_n needs the benchmark's scorer (it is the oracle baseline)")
    videos = candidates(reasoner, ctx, cfg.n, cfg.optim, meter)
    with meter.phase("oracle_select"):
        scores = [ctx.scorer(ctx.instance, v) for v in videos]
    k = int(np.argmax(scores))
    return MethodOutput(videos[k], {"n": cfg.n, "selected": k, "oracle_scores": scores})


def expanded_prompt(prompt: str, rules: list[str]) -> str:
    """The instruction followed by the rules it must respect (PE and VideoTPO's rewrite)."""
    if not rules:
        return prompt
    return f"{prompt.strip()} Make sure the answer to each is yes: {' '.join(rules)}"


def run_pe(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    if ctx.rules is None:
        raise ValueError("pe needs the item's rules")
    prompt = expanded_prompt(ctx.instance.prompt, [q for q, _ in ctx.rules.queries])
    with meter.phase("encode_prompt"):
        cond = ctx.condition.with_text(reasoner.encode_text(prompt))
    return MethodOutput(_generate(reasoner, cond, cfg.optim, meter), {"prompt": prompt})


def videotpo_search(
    prompt: str, reward: CompiledReward, rounds: int, per_round: int,
    generate: Callable[[int, str], V], judge_video: Callable[[V], list[float]],
) -> tuple[list[V], list[float], list[dict]]:
    """VideoTPO's loop, shared by ``vlmt compare`` and the pipeline's ``videotpo`` stage.

    Each round generates ``per_round`` videos from the current prompt (``generate(k, prompt)``
    makes the k-th video of the search, from seed + k), the Teacher judges them, and the rules
    the round's best video breaks (P(Yes) < 0.5) are appended to the instruction as the
    critique. Returns every video, its reward loss, and the per-round history.
    """
    videos: list[V] = []
    losses: list[float] = []
    history = []
    current = prompt
    for r in range(rounds):
        round_best: tuple[float, list[float]] | None = None
        for j in range(per_round):
            video = generate(r * per_round + j, current)
            p = judge_video(video)
            loss = judge_loss(reward, p)
            videos.append(video)
            losses.append(loss)
            if round_best is None or loss < round_best[0]:
                round_best = (loss, p)
        assert round_best is not None
        broken = [q.text for q, p in zip(reward.queries, round_best[1], strict=True) if p < 0.5]
        history.append({"round": r, "prompt": current, "best_loss": round_best[0], "broken": broken})
        if not broken:
            break
        current = expanded_prompt(prompt, broken)
    return videos, losses, history


def run_videotpo(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    reward = _need_reward(ctx)
    texts: dict[str, torch.Tensor | None] = {ctx.instance.prompt: None}

    def generate(k: int, prompt: str) -> np.ndarray:
        if prompt not in texts:
            with meter.phase("encode_prompt"):
                texts[prompt] = reasoner.encode_text(prompt)
        return _generate(reasoner, _seeded(reasoner, ctx, ctx.condition.seed + k, texts[prompt]), cfg.optim, meter)

    videos, losses, history = videotpo_search(ctx.instance.prompt, reward, cfg.tpo_rounds, cfg.tpo_videos, generate,
                                              lambda video: _judge(teacher, reward, video, meter))
    k = int(np.argmin(losses))
    return MethodOutput(videos[k], {"rounds": history, "n_rounds": len(history), "selected_round": k // cfg.tpo_videos})


def _adapted_video(reasoner: ReasonerAdapter, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter,
                   optimise: Callable[[], OptimResult], **info: Any) -> MethodOutput:
    """Optimise the item's LoRA with ``optimise``, then the final video with it; the LoRA is removed after."""
    try:
        result = optimise()
        video = _generate(reasoner, ctx.condition, cfg.optim, meter)
    finally:
        detach_lora(reasoner)
    return MethodOutput(video, {"optim": result.model_dump(), **info})


def run_teacher(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    reward = _need_reward(ctx)
    return _adapted_video(reasoner, ctx, cfg, meter,
                          lambda: optimise_item(reasoner, teacher, ctx.condition, reward, cfg.optim))


def run_grpo(reasoner: ReasonerAdapter, teacher: Teacher, ctx: ItemContext, cfg: MethodConfig, meter: CostMeter) -> MethodOutput:
    reward = _need_reward(ctx)
    return _adapted_video(reasoner, ctx, cfg, meter,
                          lambda: optimise_item_grpo(reasoner, teacher, ctx.condition, reward, cfg.optim, cfg.grpo))


def run_oracle_reward(reasoner: ReasonerAdapter, teacher: Teacher | None, ctx: ItemContext, cfg: MethodConfig,
                      meter: CostMeter) -> MethodOutput:
    """The teacher method's loop with the oracle reward (``core.method.oracle``); ``teacher`` is not used."""
    reward = oracle_reward(ctx.instance)
    return _adapted_video(reasoner, ctx, cfg, meter,
                          lambda: optimise_item_oracle(reasoner, ctx.condition, reward, cfg.optim),
                          reward=reward.name)


RUNNERS: dict[Method, Callable[..., MethodOutput]] = {
    Method.VANILLA: run_vanilla,
    Method.BEST_OF_N: run_best_of_n,
    Method.PASS_AT_N: run_pass_at_n,
    Method.PE: run_pe,
    Method.VIDEOTPO: run_videotpo,
    Method.TEACHER: run_teacher,
    Method.STILL: run_still,
    Method.GRPO: run_grpo,
    Method.ORACLE_REWARD: run_oracle_reward,
}
