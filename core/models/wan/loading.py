"""Loading a Wan image-to-video folder by path, and the checks that refuse what this code cannot condition.

The same loader serves the zoo's tiny checkpoint, a real ``Wan2.2-TI2V-5B`` folder, a Wan2.1-style
I2V folder and a two-expert Wan2.2-I2V-A14B one (``expert`` picks the transformer per timestep).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from pydantic import Field

from core.checks import naming_bad_weights
from core.config import StrictConfig, load_config
from core.errors import InputError


#: A Reasoner folder's own statement of where its flow starts (``FlowSource``); without it, pure noise.
FLOW_SOURCE_FILE = "flow_source.json"


class FlowSource(StrictConfig):
    """``<reasoner>/flow_source.json``: the flow's source is ``eps + first_frame_prior * first``.

    Written by the zoo's training when it trains with a prior (``FlowMatchConfig``), so the
    sampler of every consumer (the method, ``vlmt zoo eval``, mining) starts where the
    transformer was trained to start. Real checkpoints have none: pure noise, as diffusers.
    """

    first_frame_prior: float = Field(0.0, ge=0.0, description="Weight of the first frame's latent in the source.")
    why: str = ""


def first_frame_prior(reasoner_dir: str | Path) -> float:
    """The prior a Reasoner folder was trained with (``flow_source.json``), else 0 (pure noise)."""
    path = Path(reasoner_dir) / FLOW_SOURCE_FILE
    return load_config(FlowSource, path).first_frame_prior if path.is_file() else 0.0


def load_reasoner(path: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype | dict[str, torch.dtype] = torch.float32) -> WanImageToVideoPipeline:
    """Load a Wan image-to-video pipeline folder (one transformer, or two experts); refuse anything else clearly.

    ``dtype`` may name one per component (diffusers' ``{"transformer": ..., "default": ...}``)."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise InputError(str(index), "does not exist", "a diffusers pipeline folder with model_index.json")
    with naming_bad_weights(path):
        pipe = WanImageToVideoPipeline.from_pretrained(path, dtype=dtype)
    check_supported(pipe, str(index))
    return pipe.to(device)


def check_guidance_2(path: str | Path, scale_2: float | None) -> None:
    """Refuse a second guidance scale for a folder without two experts, from its ``model_index.json`` (no loading)."""
    if scale_2 is None:
        return
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise InputError(str(index), "does not exist", "a diffusers pipeline folder with model_index.json")
    if json.loads(index.read_text()).get("boundary_ratio") is None:
        raise single_transformer_error(scale_2, str(path))


def single_transformer_error(scale_2: float, what: str) -> InputError:
    """The refusal of a second guidance scale (``guidance.scale_2``) for a folder with one transformer."""
    return InputError("guidance.scale_2", f"is {scale_2}, but {what} has a single transformer (no boundary_ratio)",
                      "no second scale (it guides the low-noise expert of a two-expert folder such as Wan2.2-A14B)")


def check_supported(pipe: WanImageToVideoPipeline, where: str = "reasoner") -> None:
    """Raise ``InputError`` for a Wan I2V pipeline whose layout this code cannot condition correctly."""
    two_experts = pipe.transformer_2 is not None or pipe.config.get("boundary_ratio") is not None
    if pipe.transformer is None or (two_experts and (pipe.transformer_2 is None or pipe.config.boundary_ratio is None)):
        raise InputError(where, "lacks a transformer (or one of a two-expert pair, or its boundary_ratio)",
                         "transformer, and for two experts transformer_2 and boundary_ratio (Wan2.2-I2V-A14B)")
    z = pipe.vae.config.z_dim
    expected = z if pipe.config.expand_timesteps else 2 * z + pipe.vae_scale_factor_temporal
    style = "expand_timesteps=True (TI2V)" if pipe.config.expand_timesteps else "expand_timesteps=False (mask + latents)"
    for name in ("transformer", "transformer_2") if two_experts else ("transformer",):
        tf = getattr(pipe, name).config
        if tf.in_channels != expected:
            raise InputError(f"{where}: {name}.in_channels", f"is {tf.in_channels}",
                             f"{expected} for a VAE with z_dim {z} and {style}")
        if tf.image_dim is not None and (pipe.image_encoder is None or pipe.image_processor is None):
            raise InputError(f"{where}: {name}.image_dim", f"is {tf.image_dim} but the pipeline has no image encoder",
                             "an image_encoder and image_processor in the folder, or a transformer with image_dim null")


def expert(pipe: WanImageToVideoPipeline, timestep: torch.Tensor) -> WanTransformer3DModel:
    """The transformer ``pipe(...)`` uses at ``timestep``: the high-noise one unless two experts
    split the schedule at ``boundary_ratio`` and ``timestep`` lies below it."""
    ratio = pipe.config.get("boundary_ratio")
    if ratio is None or float(timestep.flatten()[0]) >= ratio * pipe.scheduler.config.num_train_timesteps:
        return pipe.transformer
    return pipe.transformer_2
