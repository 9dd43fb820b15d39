"""Train the Reasoner's transformer by flow matching, then step-distil it to 4 steps.

Flow matching (rectified flow, the objective Wan is trained with): ``z_s = (1 - s) x0 + s z1``,
the transformer predicts ``v = z1 - x0``; the first latent frame is the clean encoded first
frame at timestep 0 (TI2V conditioning) and is excluded from the loss. The source ``z1`` is
the noise ``eps``, or with ``first_frame_prior`` ``p`` > 0, ``eps + p * first`` (the first frame's
latent on every frame, ``core.models.wan.FlowSource``; measured no better on the zoo's data,
docs/zoo-reasoner.md). ``motion_weight`` adds a squared error over the latent pixels that move.

Step distillation is *reflow* (Liu et al., "Flow Straight and Fast", ICLR 2023; the first
stage of InstaFlow, Liu et al. ICLR 2024): the undistilled model's own deterministic ODE
samples (30 Euler steps) pair each noise ``eps`` with an endpoint ``x_T``; the student, a copy
of the teacher, is trained on the straight path between them, at the noise levels of the
4-step schedule. On a straight path the velocity is constant, so one Euler step from pure
noise already lands on ``x_T``: the first step's clean-latent prediction
``eps - v(eps, t=1)`` is sharp, which is what the method differentiates (METHOD.md).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from pydantic import Field, model_serializer

from core.config import StrictConfig, drop_unset
from core.models.wan import FrameCondition, sample_latents, sampling_sigmas, velocity
from core.train.checkpoint import TrainingCheckpoint, resume
from core.train.common import one_cycle, seed_everything, step_progress

log = logging.getLogger(__name__)


class LatentDataset:
    """Normalised video latents with their text embeddings (shared per unique prompt) and, optionally,
    where each video moves (``moving``: (N, T', h, w) bool, ``moving_latents``)."""

    def __init__(self, latents: torch.Tensor, prompt_index: Sequence[int], text_table: torch.Tensor,
                 moving: torch.Tensor | None = None) -> None:
        if len(latents) != len(prompt_index):
            raise ValueError(f"{len(latents)} latents but {len(prompt_index)} prompt indices")
        if moving is not None and moving.shape != (latents.shape[0], *latents.shape[2:]):
            raise ValueError(f"moving mask {tuple(moving.shape)} for latents {tuple(latents.shape)}: expected (N, T', h, w)")
        self.latents = latents
        self.prompt_index = torch.as_tensor(list(prompt_index), dtype=torch.long)
        self.text_table = text_table
        self.moving = moving

    def __len__(self) -> int:
        return len(self.latents)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latents[idx], self.text_table[self.prompt_index[idx]]

    def moving_at(self, idx: torch.Tensor) -> torch.Tensor | None:
        return None if self.moving is None else self.moving[idx]


def moving_latents(videos: torch.Tensor, temporal: int, spatial: int) -> torch.Tensor:
    """(B, 3, T, H, W) videos -> (B, T', h, w) bool: latent pixels whose image patch differs from the
    first frame's (an object there now, or gone from there), pooled as the VAE compresses (the first
    latent frame is the first frame alone, each later one ``temporal`` frames)."""
    change = (videos - videos[:, :, :1]).abs().amax(1)[:, 1:]  # (B, T - 1, H, W)
    b, _, h, w = change.shape
    pooled = torch.nn.functional.max_pool3d(change[:, None], (temporal, spatial, spatial))[:, 0]
    first = torch.zeros(b, 1, h // spatial, w // spatial, dtype=torch.bool)
    return torch.cat([first, pooled > 1e-3], dim=1)


class FlowMatchConfig(StrictConfig):
    steps: int = Field(4000, ge=1)
    batch: int = Field(8, ge=1)
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    first_frame_prior: float = Field(0.0, ge=0.0, description=(
        "The flow's source is noise plus this times the first frame's latent on every frame (written to the "
        "Reasoner folder's flow_source.json; 0: pure noise, as every diffusers Wan folder)."))
    motion_weight: float = Field(0.0, ge=0.0, description=(
        "Weight of an extra squared error on the latent pixels that move (moving_latents): a moving sprite is a "
        "few percent of the latents, and what an undertrained transformer loses first."))
    sigma_shift: float = Field(1.0, gt=0.0, description=(
        "Training noise levels are uniform draws u mapped to shift * u / (1 + (shift - 1) * u), the time shift of "
        "SD3 and Wan (FlowMatchEulerDiscreteScheduler's shift): above 1, more steps at high noise, where a sample's "
        "layout is decided; 1: uniform."))

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        return drop_unset(handler(self), first_frame_prior=0.0, motion_weight=0.0, sigma_shift=1.0)


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Uniform ``u`` in [0, 1] -> noise levels under the time shift ``shift`` (identity at 1; monotone, ends fixed)."""
    return u if shift == 1.0 else shift * u / (1 + (shift - 1) * u)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, moving: torch.Tensor | None = None,
                motion_weight: float = 0.0) -> torch.Tensor:
    """MSE over latent frames 1.. (frame 0 is the given condition), plus ``motion_weight`` times
    the MSE over the ``moving`` latent pixels ((B, T', h, w) bool) when given."""
    err = ((pred[:, :, 1:] - target[:, :, 1:]) ** 2).mean(1)  # (B, T' - 1, h, w)
    loss = err.mean()
    if moving is not None and motion_weight:
        mask = moving[:, 1:].to(err.dtype)
        loss = loss + motion_weight * (err * mask).sum() / mask.sum().clamp_min(1.0)
    return loss


def _optimiser(model: torch.nn.Module, lr: float, weight_decay: float, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = one_cycle(opt, lr, steps)
    return opt, sched


def _regress_velocity(
    model: WanTransformer3DModel, batch, description: str, cfg: FlowMatchConfig | DistillConfig, weight_decay: float,
    gen: torch.Generator, checkpoint: TrainingCheckpoint | None, motion_weight: float = 0.0,
) -> list[float]:
    """The loop flow matching and reflow share: regress ``v = z1 - x`` on ``z = (1 - s) x + s z1``.

    ``batch(step)`` returns ``(x, z1, sigma, text, moving)``, drawn with ``gen``; ``x``'s first
    latent frame is the condition, ``z1`` the flow's source, ``moving`` None or the mask that
    ``motion_weight`` weighs (flow matching only). ``cfg`` gives the steps and learning rate. Returns the smoothed loss every 50 steps.
    """
    opt, sched = _optimiser(model, cfg.lr, weight_decay, cfg.steps)
    ckpt = resume(checkpoint, cfg, {"transformer": model}, opt, sched, gen)
    curve, running = ckpt.restore(curve=[], running=0.0)
    with step_progress(description, cfg.steps, ckpt.step) as advance:
        for step in range(ckpt.step, cfg.steps):
            x, source, sigma, text, moving = batch(step)
            s = sigma.view(-1, 1, 1, 1, 1)
            noisy, cond = (1 - s) * x + s * source, FrameCondition.first_frame_of(x)
            loss = _masked_mse(velocity(model, noisy, cond, sigma * 1000.0, text), source - x, moving, motion_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            if step % 50 == 0:
                curve.append(round(running, 5))
            advance(loss=running)
            ckpt.tick(step + 1, curve=curve, running=running)
    return curve


def train_flow_matching(
    transformer: WanTransformer3DModel, data: LatentDataset, cfg: FlowMatchConfig, checkpoint: TrainingCheckpoint | None = None
) -> list[float]:
    """Train ``transformer`` in place; noise levels uniform in [0, 1], time-shifted by ``cfg.sigma_shift``.
    Returns the loss curve.

    ``checkpoint``: save there periodically and resume from it (``core.train.checkpoint``).
    """
    gen = seed_everything(cfg.seed)
    transformer.train()

    def batch(_step: int):
        idx = torch.randint(len(data), (cfg.batch,), generator=gen)
        x0, text = data.batch(idx)
        source = FrameCondition.first_frame_of(x0, cfg.first_frame_prior).source(torch.randn(x0.shape, generator=gen))
        return x0, source, shift_sigmas(torch.rand(cfg.batch, generator=gen), cfg.sigma_shift), text, data.moving_at(idx)

    curve = _regress_velocity(transformer, batch, "Reasoner flow matching", cfg, cfg.weight_decay, gen, checkpoint,
                              cfg.motion_weight)
    transformer.eval()
    return curve


class DistillConfig(StrictConfig):
    teacher_steps: int = Field(30, ge=2, description="Euler steps of the undistilled model that make the reflow pairs.")
    student_steps: int = Field(4, ge=1)
    pairs_per_item: int = Field(1, ge=1, description="Noise draws per training item.")
    steps: int = Field(500, ge=0, description=(
        "Reflow steps; 0: no reflow, the flow-matching transformer itself is the few-step Reasoner (with time-shifted "
        "training noise levels it samples as well at 4 Euler steps as at 30, and the reflow lost successes: "
        "docs/zoo-reasoner.md)."))
    batch: int = Field(8, ge=1)
    lr: float = 3e-4
    uniform_fraction: float = Field(0.25, ge=0, le=1, description="Share of samples at uniform noise levels, not only the schedule's.")
    seed: int = 1


@torch.no_grad()
def reflow_pairs(
    teacher: WanTransformer3DModel, scheduler: FlowMatchEulerDiscreteScheduler, data: LatentDataset, cfg: DistillConfig,
    gen: torch.Generator, chunk: int = 32, first_frame_prior: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source, teacher endpoint, item index) triples from the undistilled model's ODE; the
    source is the noise, plus the first frame where the teacher was trained with a prior."""
    items = torch.arange(len(data)).repeat(cfg.pairs_per_item)
    noise = torch.randn((len(items), *data.latents.shape[1:]), generator=gen)
    sources, ends = [], []
    with step_progress("reflow pairs", (len(items) + chunk - 1) // chunk) as advance:
        for i in range(0, len(items), chunk):
            x0, text = data.batch(items[i : i + chunk])
            cond = FrameCondition.first_frame_of(x0, first_frame_prior)
            sources.append(cond.source(noise[i : i + chunk]))
            ends.append(sample_latents(lambda _t: teacher, noise[i : i + chunk], cond, text, scheduler, cfg.teacher_steps))
            advance()
    return torch.cat(sources), torch.cat(ends), items


def distil(
    teacher: WanTransformer3DModel, scheduler: FlowMatchEulerDiscreteScheduler, data: LatentDataset, cfg: DistillConfig,
    checkpoint: TrainingCheckpoint | None = None, first_frame_prior: float = 0.0,
) -> tuple[WanTransformer3DModel, list[float]]:
    """A reflowed copy of ``teacher`` for ``cfg.student_steps``-step Euler sampling, from the
    source ``teacher`` was trained with (``first_frame_prior``).

    ``checkpoint``: save there periodically and resume from it (``core.train.checkpoint``). The
    reflow pairs are not kept: a resumed run recomputes them (seeded, so the same pairs).
    """
    gen = seed_everything(cfg.seed)
    teacher.eval()
    sources, ends, items = reflow_pairs(teacher, scheduler, data, cfg, gen, first_frame_prior=first_frame_prior)
    levels = sampling_sigmas(scheduler, cfg.student_steps)[:-1]  # the student's noise levels, 1.0 first
    student = copy.deepcopy(teacher).train()

    def batch(_step: int):
        idx = torch.randint(len(items), (cfg.batch,), generator=gen)
        _, text = data.batch(items[idx])
        sigma = levels[torch.randint(len(levels), (cfg.batch,), generator=gen)]
        uniform = torch.rand(cfg.batch, generator=gen) < cfg.uniform_fraction
        sigma = torch.where(uniform, torch.rand(cfg.batch, generator=gen), sigma)
        return ends[idx], sources[idx], sigma, text, None

    curve = _regress_velocity(student, batch, "Reasoner distillation", cfg, 0.0, gen, checkpoint)
    student.eval()
    return student, curve
