"""One velocity evaluation of the transformer, and sampling with the folder's own solver.

``solve`` steps the folder's scheduler as ``pipe(...)`` does, so a vanilla video here is the one the
pipeline makes; ``guided`` adds classifier-free guidance, ``generate_videos`` batches items.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from core.models.wan.conditioning import FrameCondition, encode_conditions
from core.models.wan.encoding import decode_latents, encode_prompts, item_noise, latent_shape, tensor_to_frames
from core.models.wan.loading import expert, single_transformer_error


def velocity(
    transformer: WanTransformer3DModel, noisy: torch.Tensor, condition: FrameCondition, timestep: torch.Tensor,
    text: torch.Tensor,
) -> torch.Tensor:
    """The transformer's flow velocity for latents at ``timestep`` (per batch element, ``1000 * sigma``)."""
    x = condition.model_input(noisy)
    t = condition.timesteps(x, timestep, tuple(transformer.config.patch_size[1:]))
    return transformer(hidden_states=x, timestep=t, encoder_hidden_states=text,
                       encoder_hidden_states_image=condition.image_embeds, return_dict=False)[0]


def fresh_scheduler(scheduler: SchedulerMixin, steps: int, device: torch.device | str | None = None) -> SchedulerMixin:
    """A new scheduler of the folder's class and config, set for ``steps`` on ``device``.

    Multistep solvers (UniPC, Wan2.2's default) keep per-run state, so every rollout gets
    its own; the pipeline's scheduler object is never stepped. Its timesteps live where the
    latents do (the transformer embeds them on its own device), as in ``pipe(...)``.
    """
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(steps, device=device)
    return fresh


def sampling_sigmas(scheduler: SchedulerMixin, steps: int) -> torch.Tensor:
    """The scheduler's sigma schedule for ``steps`` (ending with 0)."""
    return fresh_scheduler(scheduler, steps).sigmas.clone().float()


def solve(
    velocity_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    scheduler: SchedulerMixin,
    steps: int,
    graph_from: int | None = None,
) -> torch.Tensor:
    """Integrate from ``noise`` with the folder's own solver: ``scheduler.step`` at its timesteps.

    This is what ``pipe(...)`` does (Euler for ``FlowMatchEulerDiscreteScheduler``, UniPC for
    Wan2.2's folders). ``velocity_at(z, t)`` gives the velocity for a (B,) timestep, guided or
    not (``guided``). Steps before ``graph_from`` run without an autograd graph; ``None``
    builds none at all.
    """
    sched = fresh_scheduler(scheduler, steps, noise.device)
    z = noise
    for i, t in enumerate(sched.timesteps):
        with torch.set_grad_enabled(torch.is_grad_enabled() and graph_from is not None and i >= graph_from):
            v = velocity_at(z, t.expand(z.shape[0]).to(z.dtype))
            z = sched.step(v, t, z, return_dict=False)[0]
    return z


#: A guidance scale, or one per timestep (``guidance_scale_at``: two-expert folders).
Scale = float | Callable[[torch.Tensor], float]


def guidance_scale_at(pipe: WanImageToVideoPipeline, scale: float, scale_2: float | None) -> Scale:
    """The scale at each timestep as ``pipe(guidance_scale=scale, guidance_scale_2=scale_2)`` applies it.

    ``scale_2`` guides the low-noise expert's steps of a two-expert folder (Wan2.2-A14B);
    None means ``scale`` throughout, as in diffusers. A single-transformer folder refuses it.
    """
    if scale_2 is None:
        return scale
    if pipe.config.get("boundary_ratio") is None:
        raise single_transformer_error(scale_2, f"this {type(pipe).__name__}")
    return lambda t: scale if expert(pipe, t) is pipe.transformer else scale_2


def guided(velocity_at: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], text: torch.Tensor,
           negative: torch.Tensor | None, scale: Scale) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``velocity_at(z, t, text)`` with classifier-free guidance, as ``pipe(...)`` combines it:
    ``v_neg + scale * (v - v_neg)``; ``scale == 1`` (or no ``negative``) is one plain call.
    ``scale`` may depend on the timestep (``guidance_scale_at``)."""
    if negative is None or scale == 1.0:
        return lambda z, t: velocity_at(z, t, text)

    def call(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_neg = velocity_at(z, t, negative)
        s = scale(t) if callable(scale) else scale
        return v_neg + s * (velocity_at(z, t, text) - v_neg)

    return call


def sample_latents(
    transformer_at: Callable[[torch.Tensor], WanTransformer3DModel],
    noise: torch.Tensor,
    condition: FrameCondition,
    text: torch.Tensor,
    scheduler: SchedulerMixin,
    steps: int,
    negative: torch.Tensor | None = None,
    guidance_scale: Scale = 1.0,
) -> torch.Tensor:
    """Sample clean latents from ``noise`` with the scheduler's solver (no graph); the condition
    put back in TI2V. The flow starts at ``condition.source(noise)``.

    ``transformer_at(t)`` is the transformer for timestep ``t`` (one model, or ``expert``);
    ``negative`` text embeddings with ``guidance_scale > 1`` add classifier-free guidance
    (a scale per timestep: ``guidance_scale_at``).
    """
    def at(z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return velocity(transformer_at(t), z, condition, t, c)

    return condition.finish(solve(guided(at, text, negative, guidance_scale), condition.source(noise), scheduler, steps))


@torch.no_grad()
def generate_videos(
    pipe: WanImageToVideoPipeline,
    first_frames: list[np.ndarray],
    prompts: list[str],
    seeds: list[int],
    steps: int,
    n_frames: int,
    transformer: WanTransformer3DModel | None = None,
    batch: int = 16,
    guidance_scale: float = 1.0,
    negative_prompt: str = "",
    guidance_scale_2: float | None = None,
    first_frame_prior: float = 0.0,
) -> list[np.ndarray]:
    """Sample videos with ``steps`` solver steps and decode them with the VAE; (T, H, W, 3) uint8 each.

    Same arithmetic as ``pipe(...)``, batched over items; ``guidance_scale > 1`` adds
    classifier-free guidance against ``negative_prompt`` (two transformer calls per step),
    ``guidance_scale_2`` that of a two-expert folder's low-noise expert.
    ``transformer`` overrides the pipeline's (e.g. to compare an undistilled one); otherwise each
    step uses the pipeline's ``expert`` for its timestep. ``first_frame_prior``: the folder's
    (``first_frame_prior(path)``); 0 starts from pure noise, as ``pipe(...)``.
    """
    h, w = first_frames[0].shape[:2]
    shape = latent_shape(pipe, n_frames, h, w)
    videos: list[np.ndarray] = []
    for i in range(0, len(prompts), batch):
        cond = encode_conditions(pipe, first_frames[i : i + batch], n_frames, first_frame_prior)
        text = encode_prompts(pipe, prompts[i : i + batch])
        negative = encode_prompts(pipe, [negative_prompt] * len(text)) if guidance_scale != 1.0 else None
        noise = torch.stack([item_noise(shape, s) for s in seeds[i : i + batch]])
        pick = (lambda _t: transformer) if transformer is not None else (lambda t: expert(pipe, t))
        z = sample_latents(pick, noise, cond, text, pipe.scheduler, steps, negative,
                           guidance_scale_at(pipe, guidance_scale, guidance_scale_2))
        videos += [tensor_to_frames(v) for v in decode_latents(pipe.vae, z)]
    return videos
