"""One LoRA for all items: the paper's "shared post-training with the same reward" ablation.

The teacher method adapts a fresh LoRA to each item. This ablation asks what that per-item
adaptation buys: the same Reasoner, the same Teacher reward (each item's own compiled
queries), the same differentiable first step and decoder, but one adapter trained across the
items and then used for every one of them (method ``shared``; the paper reports 0.688
against the per-item method's 0.781 on VBVR).

Choices where the paper is silent, recorded here: the adapter trains on the evaluated items
themselves (the reward needs no label, so this is the closest shared counterpart of the
per-item method, which also sees only the item); each step takes one item, in a seeded
shuffled order, epoch after epoch; the default budget is as many updates as the per-item
method may spend in all (``max_steps`` x items); there is no early stop (``tau`` is an item's
criterion), and a non-finite loss, gradient or parameter stops training and restores the
adapter of the last finite step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from peft.utils import set_peft_model_state_dict
from pydantic import BaseModel, Field

from core.errors import InputError
from core.method.optimise import (
    ADAPTER_NAME,
    OptimConfig,
    attach_lora,
    learning_rate,
    lora_state,
    reward_step,
    update_lora,
)
from core.method.reasoner import ItemCondition, ReasonerAdapter
from core.method.teacher import CompiledReward
from core.models.teacher import Teacher

log = logging.getLogger(__name__)


class SharedStep(BaseModel):
    step: int
    item: int = Field(description="Index of the item this step trained on.")
    loss: float
    grad_norm: float | None = None
    seconds: float


class SharedResult(BaseModel):
    items: int
    steps_run: int = Field(description="Updates applied to the kept adapter.")
    stop_reason: str = Field(description="'steps', or 'nonfinite_*' (training stopped, the last finite adapter kept).")
    first_epoch_loss: float = Field(description="Mean reward loss over the first pass through the items.")
    last_epoch_loss: float = Field(description="Mean reward loss over the last len(items) steps run.")
    trace: list[SharedStep]


def shared_steps(cfg: OptimConfig, n_items: int, steps: int | None) -> int:
    """The budget: ``steps``, or as many updates as the per-item method may spend on ``n_items`` items."""
    return cfg.max_steps * n_items if steps is None else steps


def train_shared_adapter(
    reasoner: ReasonerAdapter,
    teacher: Teacher,
    items: Sequence[tuple[ItemCondition, CompiledReward]],
    cfg: OptimConfig,
    steps: int | None = None,
    seed: int = 0,
) -> SharedResult:
    """Train one fresh LoRA on every item's reward in turn; it stays attached (see ``save_adapter``).

    ``cfg`` gives the LoRA, learning rate, clipping, gradient mode, decoder and K as for the
    per-item method; ``steps`` (default ``shared_steps``) the number of updates.
    """
    if not items:
        raise InputError("shared adapter", "has no items to train on", "at least one item with a compiled reward")
    total = shared_steps(cfg, len(items), steps)
    params = attach_lora(reasoner, cfg.lora, cfg.lora_seed)
    opt = torch.optim.AdamW(params, lr=learning_rate(cfg, reasoner), weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    meter = reasoner.meter
    trace: list[SharedStep] = []
    last_good = lora_state(reasoner)
    stop = "steps"
    for step in range(total):
        if not order:
            order = rng.permutation(len(items)).tolist()
        k = order.pop()
        cond, reward = items[k]
        start = time.perf_counter()
        with meter.phase("optimise"):
            loss, _ = reward_step(reasoner, teacher, cond, reward, cfg)
            value = float(loss.detach())
            if not math.isfinite(value):
                stop = "nonfinite_loss"
                trace.append(SharedStep(step=step, item=k, loss=value, seconds=time.perf_counter() - start))
                break
            grad_norm, why = update_lora(loss, params, opt, cfg, meter)
            trace.append(SharedStep(step=step, item=k, loss=value, grad_norm=grad_norm, seconds=time.perf_counter() - start))
            if why:
                stop = why
                break
            last_good = lora_state(reasoner)
        if (step + 1) % max(1, total // 10) == 0:  # a long loop inside a stage (the CLI's bar is already live)
            recent = [t.loss for t in trace[-len(items):]]
            log.info("shared adapter: step %d of %d, mean loss over the last %d steps %.4f", step + 1, total, len(recent),
                     float(np.mean(recent)))
    applied = sum(1 for t in trace if t.grad_norm is not None and math.isfinite(t.grad_norm))
    if stop != "steps":
        log.warning("shared adapter: %s at step %d; keeping the adapter after %d updates", stop, len(trace) - 1, applied)
        set_peft_model_state_dict(reasoner.transformer, last_good, adapter_name=ADAPTER_NAME)
        if stop == "nonfinite_params":
            applied -= 1
    reasoner.transformer.requires_grad_(False)
    losses = [t.loss for t in trace if math.isfinite(t.loss)]
    n = len(items)
    return SharedResult(items=n, steps_run=applied, stop_reason=stop,
                        first_epoch_loss=float(np.mean(losses[:n])) if losses else math.nan,
                        last_epoch_loss=float(np.mean(losses[-n:])) if losses else math.nan, trace=trace)
