"""Stage 3: per-item test-time optimisation of a fresh LoRA on the frozen Reasoner.

Each step: predict the clean latent (by default from the first sampler step only), decode it
with the surrogate decoder, sample K frames, read the Teacher's log P("Yes") for every
compiled query, and take an AdamW step on L = lambda * L_goal + (1 - lambda)/M * sum L_proc.

Step ``i`` evaluates the adapter after ``i`` updates. The loop stops when

* ``early_stop`` and L <= tau (the paper's 0.22, about 0.8 overall "Yes" confidence): the
  adapter that reached it is kept;
* ``max_steps`` updates were made: one last forward (no graph) measures the final adapter,
  which is kept, as in the paper's fixed-step ablation;
* the loss or a gradient is NaN/inf: the adapter with the lowest loss seen so far is restored
  and the reason recorded.

Defaults (documented choices where the paper is silent): rank 16, alpha 16 (scale 1), the
self- and cross-attention projections of every block (``to_q``, ``to_k``, ``to_v``,
``to_out.0``), dropout 0, AdamW with zero weight decay, gradient clipping at 1.0. The
learning rate is the Reasoner's: left unset (``lr=None``), it is what the folder recommends in
``optim_defaults.json`` (``core.method.reasoner.recommended_lr``), else the paper's 5e-5 (Wan2.2-5B,
rank 16). The shipped zoo recommends 1e-2, tuned on a validation set disjoint from the test
instances (``vlmt bench make synth --seed 1``: 1e-3 0.137, 3e-3 0.154, 1e-2 0.176, 3e-2 and 1e-1
0.176 too); a real checkpoint without the file gets the paper's value.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import WanImageToVideoPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from pydantic import BaseModel, Field

from core.config import StrictConfig
from core.errors import InputError
from core.method.cost import CostMeter
from core.method.reasoner import (
    Decoder,
    GradMode,
    Guidance,
    ItemCondition,
    ReasonerAdapter,
    differentiated_calls,
    frames_for_teacher,
    recommended_lr,
)
from core.method.teacher import CompiledReward, query_logprobs, reward_loss
from core.models.teacher import Teacher

log = logging.getLogger(__name__)

ADAPTER_NAME = "vlmt_item"
ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"


class LoraSpec(StrictConfig):
    rank: int = Field(16, ge=1)
    alpha: float = Field(16.0, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
                                      description="Module name suffixes in diffusers' Wan naming.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def peft_config(self) -> LoraConfig:
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=list(self.target_modules),
                          lora_dropout=self.dropout, init_lora_weights=True)


class OptimConfig(StrictConfig):
    """Everything that decides one item's optimisation (the optimise stage's cache key)."""

    lora: LoraSpec = LoraSpec()
    lr: float | None = Field(None, gt=0, description=(
        "AdamW learning rate. None: the Reasoner folder's optim_defaults.json, else the paper's 5e-5 "
        "(resolve_optim; the flows and vlmt compare resolve it before keys are made)."))
    weight_decay: float = Field(0.0, ge=0)
    max_steps: int = Field(40, ge=0, description="Maximum number of LoRA updates.")
    tau: float = Field(0.22, description="Early-stop threshold on the reward loss.")
    early_stop: bool = True
    grad_clip: float | None = Field(1.0, gt=0)
    lam: float = Field(0.5, ge=0.0, le=1.0)
    grad_mode: GradMode = GradMode.FIRST_STEP
    decoder: Decoder = Decoder.SURROGATE
    k_frames: int = Field(24, ge=1)
    sampler_steps: int = Field(4, ge=1, description="The Reasoner's step schedule (4 for the distilled zoo model).")
    guidance: Guidance = Field(default_factory=Guidance,
                               description="Classifier-free guidance of every rollout (off for distilled Reasoners).")
    lora_seed: int = Field(0, description="Seed of the LoRA's random A init (B starts at zero).")


class StepRecord(BaseModel):
    step: int
    loss: float
    p_yes: list[float]
    grad_norm: float | None = None
    seconds: float
    group_losses: list[float] | None = Field(None, description="GRPO: the reward loss of each rollout of the step's "
                                                               "group (``loss`` is their mean).")


class OptimResult(BaseModel):
    steps_run: int = Field(description="LoRA updates applied to the kept adapter.")
    stop_reason: str
    initial_loss: float
    final_loss: float
    best_step: int
    best_loss: float
    trace: list[StepRecord]


def _lora_params(transformer: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in transformer.named_parameters() if "lora_" in n and ADAPTER_NAME in n]


def attach_lora(reasoner: ReasonerAdapter, spec: LoraSpec, seed: int) -> list[torch.nn.Parameter]:
    """Add a fresh, seeded LoRA to the frozen transformer; returns its trainable parameters."""
    detach_lora(reasoner)  # also clears ``saved_adapter``: this LoRA is not in any file yet
    tf = reasoner.transformer
    tf.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tf.add_adapter(spec.peft_config(), adapter_name=ADAPTER_NAME)
    tf.set_adapter(ADAPTER_NAME)
    params = _lora_params(tf)
    if not params:
        raise InputError("lora.target_modules", f"{spec.target_modules} matched no module of {type(tf).__name__}",
                         "suffixes of its Linear layers, e.g. to_q, to_k, to_v, to_out.0, ffn.net.0.proj")
    for p in params:
        # peft gives the LoRA its base layer's dtype; over bfloat16 weights (the GPU's precision)
        # the trained parameters stay float32, as diffusers' cast_training_params keeps them
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def detach_lora(reasoner: ReasonerAdapter) -> None:
    """Remove the item's adapter, leaving the Reasoner exactly as loaded."""
    if _has_item_adapter(reasoner):
        reasoner.transformer.delete_adapters(ADAPTER_NAME)
    reasoner.saved_adapter = None


def _has_item_adapter(reasoner: ReasonerAdapter) -> bool:
    return ADAPTER_NAME in getattr(reasoner.transformer, "peft_config", {})


def lora_state(reasoner: ReasonerAdapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(reasoner.transformer, adapter_name=ADAPTER_NAME).items()}


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def reward_step(
    reasoner: ReasonerAdapter, teacher: Teacher, item: ItemCondition, reward: CompiledReward, cfg: OptimConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """One differentiable evaluation: (loss, log P(Yes) per query) for the current adapter."""
    z0 = reasoner.predict_clean(item, cfg.sampler_steps, cfg.grad_mode, cfg.guidance)
    video = reasoner.decode(z0, cfg.decoder)[0]
    frames, _ = frames_for_teacher(video, cfg.k_frames)
    logp = query_logprobs(teacher, reward, frames, reasoner.meter)
    return reward_loss(reward, logp), logp


def step_lora(params: list[torch.nn.Parameter], opt: torch.optim.Optimizer, grad_clip: float | None) -> tuple[float, str | None]:
    """Clip the gradients already in ``params`` and take one optimiser step: (the gradient norm
    before clipping, why to stop or None).

    A non-finite gradient skips the update ("nonfinite_grad"); an update that leaves a
    non-finite parameter is reported ("nonfinite_params") for the caller to restore.
    """
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf))
    if not math.isfinite(grad_norm):
        return grad_norm, "nonfinite_grad"
    opt.step()
    if not all(_finite(p) for p in params):
        return grad_norm, "nonfinite_params"
    return grad_norm, None


def update_lora(loss: torch.Tensor, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer, cfg: OptimConfig,
                meter: CostMeter, through_teacher: bool = True) -> tuple[float, str | None]:
    """One clipped update of the LoRA from the differentiable reward ``loss`` (``step_lora``).

    ``through_teacher``: the loss's graph runs through the Teacher (counted as one Teacher
    backward); the oracle reward's does not.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    meter.count("reasoner_backward", differentiated_calls(cfg.grad_mode, cfg.sampler_steps, cfg.guidance))
    if through_teacher:
        meter.count("teacher_backward")
    return step_lora(params, opt, cfg.grad_clip)


class Evaluation(NamedTuple):
    """What one evaluation of the current adapter gives the loop: the loss it stops on, P(Yes)
    per query, what the update needs, and the losses of a group of rollouts (GRPO) if any."""

    loss: float
    p_yes: list[float]
    state: Any
    group_losses: list[float] | None = None


def adapt_lora(
    reasoner: ReasonerAdapter, cfg: OptimConfig, max_steps: int, seed: int,
    evaluate: Callable[[bool], Evaluation], update: Callable[[Any], tuple[float, str | None]],
) -> OptimResult:
    """The per-item loop around any LoRA optimiser (the module doc's stopping rules).

    ``evaluate(last)`` measures the attached adapter (``last``: no update follows, so no graph
    is needed); ``update(state)`` applies one update from that evaluation and returns
    ``step_lora``'s answer. The gradient method (``optimise_item``) and GRPO
    (``core.method.grpo``) differ only in these two functions.
    """
    meter = reasoner.meter
    trace: list[StepRecord] = []
    best_loss, best_step, best_state = math.inf, 0, lora_state(reasoner)
    stop = "max_steps"
    for step in range(max_steps + 1):
        start = time.perf_counter()
        last = step == max_steps
        with meter.phase("optimise"):
            ev = evaluate(last)
            record = {"step": step, "loss": ev.loss, "p_yes": ev.p_yes, "group_losses": ev.group_losses}
            if not math.isfinite(ev.loss):
                stop = "nonfinite_loss"
                trace.append(StepRecord(**record, seconds=time.perf_counter() - start))
                break
            if ev.loss < best_loss:
                best_loss, best_step, best_state = ev.loss, step, lora_state(reasoner)
            if last or (cfg.early_stop and ev.loss <= cfg.tau):
                stop = "max_steps" if last else "tau"
                trace.append(StepRecord(**record, seconds=time.perf_counter() - start))
                break
            grad_norm, why = update(ev.state)
            trace.append(StepRecord(**record, grad_norm=grad_norm, seconds=time.perf_counter() - start))
            if why:
                stop = why
                break
    if stop.startswith("nonfinite"):
        log.warning("item seed %d: %s at step %d; keeping the best adapter (step %d, loss %.4f)",
                    seed, stop, len(trace) - 1, best_step, best_loss)
        set_peft_model_state_dict(reasoner.transformer, best_state, adapter_name=ADAPTER_NAME)
        kept_step, final = best_step, best_loss
    else:
        kept_step, final = trace[-1].step, trace[-1].loss
    reasoner.transformer.requires_grad_(False)
    return OptimResult(steps_run=kept_step, stop_reason=stop, initial_loss=trace[0].loss, final_loss=final,
                       best_step=best_step, best_loss=best_loss, trace=trace)


def resolve_optim(cfg: OptimConfig, reasoner_dir: str | Path) -> OptimConfig:
    """``cfg`` with an unset ``lr`` filled: the folder's recommendation, else the paper's.

    Experiments resolve before their keys and ids are made, so a run's records carry the
    learning rate it used and a changed recommendation reruns the optimisation.
    """
    if cfg.lr is not None:
        return cfg
    return cfg.model_copy(update={"lr": recommended_lr(reasoner_dir)[0]})


def learning_rate_source(cfg: OptimConfig, reasoner_dir: str | Path) -> str:
    """Which learning rate a run will use and where it comes from, for the line a command prints
    before it starts (a folder copied without its ``optim_defaults.json`` silently gets the paper's)."""
    if cfg.lr is not None:
        return f"{cfg.lr:g} (set by the experiment)"
    lr, source = recommended_lr(reasoner_dir)
    return f"{lr:g} ({source})"


def learning_rate(cfg: OptimConfig, reasoner: ReasonerAdapter) -> float:
    """The optimiser's learning rate: ``cfg.lr``, or the loaded Reasoner's default when unset."""
    return cfg.lr if cfg.lr is not None else reasoner.default_lr


def optimise_item(
    reasoner: ReasonerAdapter, teacher: Teacher, item: ItemCondition, reward: CompiledReward, cfg: OptimConfig
) -> OptimResult:
    """Optimise a fresh LoRA for one item; the kept adapter stays attached (see ``save_adapter``)."""

    def step() -> tuple[torch.Tensor, list[float]]:
        loss, logp = reward_step(reasoner, teacher, item, reward, cfg)
        return loss, logp.detach().exp().tolist()

    return optimise_against(reasoner, item, cfg, step)


def optimise_against(
    reasoner: ReasonerAdapter, item: ItemCondition, cfg: OptimConfig,
    step: Callable[[], tuple[torch.Tensor, list[float]]], through_teacher: bool = True,
) -> OptimResult:
    """A fresh LoRA for one item, trained by gradient against any differentiable reward.

    ``step()`` evaluates the attached adapter: (loss, P(Yes) per query, or [] for a reward
    without queries). The Teacher's reward (``optimise_item``) and the oracle reward
    (``core.method.oracle``) differ only there, and in whether the backward pass runs through
    the Teacher (``through_teacher``, for the cost meter).
    """
    params = attach_lora(reasoner, cfg.lora, cfg.lora_seed)
    opt = torch.optim.AdamW(params, lr=learning_rate(cfg, reasoner), weight_decay=cfg.weight_decay)

    def evaluate(last: bool) -> Evaluation:
        with torch.set_grad_enabled(not last):
            loss, p_yes = step()
        return Evaluation(float(loss.detach()), p_yes, loss)

    return adapt_lora(reasoner, cfg, cfg.max_steps, item.seed, evaluate,
                      lambda loss: update_lora(loss, params, opt, cfg, reasoner.meter, through_teacher))


def save_adapter(reasoner: ReasonerAdapter, out_dir: str | Path, spec: LoraSpec) -> Path:
    """Write the attached adapter in diffusers' LoRA format (PEFT keys, safetensors, with its config).

    ``WanImageToVideoPipeline.load_lora_weights(out_dir)`` loads it back.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(reasoner.transformer, adapter_name=ADAPTER_NAME)
    metadata = spec.peft_config().to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])
    tmp = out / f".{ADAPTER_WEIGHTS}.partial"
    tmp.mkdir(exist_ok=True)
    WanImageToVideoPipeline.save_lora_weights(tmp, transformer_lora_layers=state, weight_name=ADAPTER_WEIGHTS,
                                              transformer_lora_adapter_metadata=metadata)
    (tmp / ADAPTER_WEIGHTS).replace(out / ADAPTER_WEIGHTS)
    tmp.rmdir()
    reasoner.saved_adapter = _file_identity(out / ADAPTER_WEIGHTS)
    return out / ADAPTER_WEIGHTS


def _file_identity(path: Path) -> str:
    """Which file, and which version of it: resolved path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def load_adapter(reasoner: ReasonerAdapter, adapter_dir: str | Path) -> None:
    """Load a saved item adapter onto the Reasoner with diffusers' LoRA loader (replacing any).

    When that very file is already attached (``save_adapter`` just wrote it from the attached
    LoRA, as the optimise stage does right before the final video), nothing is reloaded: the
    weights in memory are the weights in the file. On a Wan2.1 I2V folder (a transformer with an
    image projection) diffusers pads the loaded adapter with zero LoRA on the image cross-attention
    (``add_k_proj`` / ``add_v_proj``) and peft warns about the extra modules: the video is the same.
    """
    path = Path(adapter_dir)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise InputError(weights, "does not exist", "an adapter folder written by save_adapter")
    identity = _file_identity(weights)
    if reasoner.saved_adapter == identity and _has_item_adapter(reasoner):
        reasoner.transformer.set_adapter(ADAPTER_NAME)
        return
    detach_lora(reasoner)
    reasoner.pipe.load_lora_weights(str(path), weight_name=ADAPTER_WEIGHTS, adapter_name=ADAPTER_NAME)
    reasoner.transformer.set_adapter(ADAPTER_NAME)
    reasoner.saved_adapter = identity
