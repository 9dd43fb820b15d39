"""The ``oracle_reward`` method: the teacher method's per-item optimisation with the benchmark's
own rules, relaxed, as the reward (an upper bound, not a method one could deploy).

The teacher method's score mixes two things: what the Reasoner, its LoRA and the decoders
can be made to show in ``max_steps`` updates, and what the Teacher's log P("Yes") teaches.
This method keeps the first and replaces the second by the best teacher a synth item can
have: ``core.scoring.soft.SoftSynthReward``, a differentiable relaxation of the rule-based
scorer, read from the item's ground-truth metadata. Everything else is the teacher method's
(``optimise.optimise_item``): a fresh LoRA of the same spec and seed, the clean-latent
prediction of ``grad_mode``, the surrogate decoder, AdamW at the same learning rate,
``adapt_lora``'s loop (at most ``max_steps`` updates, early stop at ``tau``, the NaN guard),
and the final video from the same noise with the full schedule and the VAE.

Differences, each forced by the reward: the relaxation reads every decoded frame, as the
scorer does (``k_frames`` and ``lam`` are the Teacher's and are not read); its loss is
``1 - soft score``, so ``tau`` = 0.22 stops at a soft score of 0.78; a step's trace has no
P(Yes). The Teacher is never called, so the method costs no Teacher call and its rules are
not extracted for it. It reads the answer key, like ``pass_at_n``: it is marked as an oracle
in every table (``ORACLES``). Only synth items carry that key; ``require_oracle_items``
refuses any other item before anything heavy runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from core.bench.record import TaskInstance
from core.errors import InputError
from core.method.optimise import OptimConfig, OptimResult, optimise_against
from core.method.reasoner import ItemCondition, ReasonerAdapter
from core.scoring.soft import SoftSynthReward

def oracle_problem(instance: TaskInstance) -> str | None:
    """Why ``instance`` cannot take the oracle reward, or None if it can."""
    if instance.benchmark != "synth":
        return (f"is a {instance.benchmark} item: the oracle reward relaxes the synth benchmark's rule-based scorer "
                "and needs its ground-truth metadata, which this benchmark does not carry")
    if "scoring" not in instance.metadata or "grid" not in instance.metadata:
        return "has no scoring spec in its meta.json (the synth generator writes one)"
    return None


def require_oracle_items(instances: Iterable[TaskInstance]) -> None:
    """Every item can take the oracle reward; else an ``InputError`` naming the first that cannot, and why."""
    for inst in instances:
        problem = oracle_problem(inst)
        if problem:
            raise InputError(f"methods: oracle_reward, item {inst.id}", problem,
                             "synth items only (run the other methods on this benchmark)")


def oracle_reward(instance: TaskInstance) -> SoftSynthReward:
    """The item's oracle reward (``require_oracle_items`` first)."""
    require_oracle_items([instance])
    return SoftSynthReward(instance.metadata)


def oracle_step(reasoner: ReasonerAdapter, item: ItemCondition, reward: SoftSynthReward, cfg: OptimConfig) -> torch.Tensor:
    """One differentiable evaluation of the current adapter: ``reward_step`` with the oracle in the Teacher's place."""
    z0 = reasoner.predict_clean(item, cfg.sampler_steps, cfg.grad_mode, cfg.guidance)
    return reward(reasoner.decode(z0, cfg.decoder)[0])


def optimise_item_oracle(reasoner: ReasonerAdapter, item: ItemCondition, reward: SoftSynthReward,
                         cfg: OptimConfig) -> OptimResult:
    """``optimise_item`` with the oracle reward: a fresh LoRA for one item; the kept adapter stays attached."""
    return optimise_against(reasoner, item, cfg, lambda: (oracle_step(reasoner, item, reward, cfg), []),
                            through_teacher=False)
