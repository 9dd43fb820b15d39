"""The Reasoner adapter: a diffusers Wan image-to-video pipeline made differentiable.

``WanImageToVideoPipeline.__call__`` runs under ``no_grad``, so the method needs its own
sampling loop over the same components (``core.models.wan`` holds the arithmetic, tested
equal to ``pipe(...)``). This module adds what test-time optimisation needs on top:

* ``prepare``: everything that depends only on the item, computed once: the prompt
  embedding, the encoded first frame, and the noise ``eps`` drawn from the item's recorded
  seed (reused unchanged for the final video, as the paper does);
* ``predict_clean``: the clean-latent prediction with a gradient mode. ``first_step`` (the
  paper's): ``z0_hat = eps - s_0 * u(eps, s_0, c)`` with ``s_0 = 1`` (the schedule's first
  noise level); ``last_step``: earlier steps without a graph, the last one with; ``full``:
  the whole rollout in the graph (with gradient checkpointing where the model supports it).
  Rollouts step the folder's own scheduler, so a video is the one ``pipe(...)`` makes;
* ``decode``: the surrogate decoder (default while optimising) or the VAE;
* ``frames_for_teacher``: K frames sampled uniformly, in [0, 1], for the Teacher.

The same code serves our tiny CPU zoo and a real Wan2.2-TI2V-5B (or a Wan2.1-style I2V
checkpoint: ``core.models.wan.FrameCondition``) on a GPU: on CUDA (``precision="auto"``) the
frozen transformer(s) and text encoder are loaded in bfloat16 (``from_paths``), the transformer
runs under bf16 autocast with gradient checkpointing, and the item LoRA, the VAE and the
surrogate stay float32; on CPU everything is float32 unless ``precision="bf16"`` asks for the
GPU's arrangement there. Components are moved to the device once, at construction.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from pydantic import ConfigDict, Field, model_serializer, model_validator

from core.config import StrictConfig, drop_unset, load_config
from core.errors import InputError
from core.media import sample_indices
from core.method.cost import CostMeter
from core.models.surrogate import SurrogateDecoder
from core.models.wan import (
    FrameCondition,
    check_supported,
    decode_latents,
    denormalise,
    encode_conditions,
    encode_prompts,
    expert,
    first_frame_prior,
    fresh_scheduler,
    guidance_scale_at,
    guided,
    item_noise,
    latent_shape,
    load_reasoner,
    solve,
    tensor_to_frames,
    velocity,
)

log = logging.getLogger(__name__)

#: Item conditions ``ReasonerAdapter.prepare`` keeps (a few MB each for a real Wan model).
PREPARED_KEPT = 8


class GradMode(str, Enum):
    """Which part of the sampler the reward's gradient flows through."""

    FIRST_STEP = "first_step"
    LAST_STEP = "last_step"
    FULL = "full"


class Decoder(str, Enum):
    SURROGATE = "surrogate"
    VAE = "vae"


class Guidance(StrictConfig):
    """Classifier-free guidance of the Reasoner's rollouts, as ``pipe(guidance_scale=...)`` does it.

    Off (scale 1) by default: step-distilled Reasoners (the paper's DMD2 Wan2.2-5B, the zoo's
    reflowed one) are sampled without it. An undistilled Wan2.2-TI2V-5B wants ~5; every
    velocity then costs two transformer calls (counted in the NFE), in the optimisation too.
    """

    model_config = ConfigDict(frozen=True)

    scale: float = Field(1.0, ge=1.0)
    negative_prompt: str = ""
    scale_2: float | None = Field(None, ge=1.0, description="The low-noise expert's scale in a two-expert folder "
                                                             "(diffusers' guidance_scale_2); None: scale.")

    @model_validator(mode="after")
    def _check(self) -> Guidance:
        if self.scale_2 is not None and self.scale == 1.0:
            raise ValueError("scale_2 is set but scale is 1, which turns guidance off (as in pipe(...)): set scale > 1")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        """Leave ``scale_2`` out while unset, so cache keys made before it existed stay valid."""
        return drop_unset(handler(self), scale_2=None)


@dataclass(frozen=True)
class ItemCondition:
    """What one item contributes to every rollout: fixed for the whole optimisation.

    ``noise`` is where the item's flow starts: eps for its seed (plus the first frame where the
    Reasoner folder sets a prior, ``FrameCondition.source``; what ``pipe(..., latents=)``
    takes); the final video reuses it. Frozen, and its tensors
    are never written in place, because ``ReasonerAdapter.prepare`` hands the same one to
    every stage of an item.
    """

    text: torch.Tensor
    condition: FrameCondition
    noise: torch.Tensor
    seed: int
    n_frames: int

    def with_text(self, text: torch.Tensor) -> ItemCondition:
        return ItemCondition(text, self.condition, self.noise, self.seed, self.n_frames)


#: The paper's learning rate (Wan2.2-5B, rank-16 LoRA): what an experiment gets for a Reasoner
#: folder that recommends none.
PAPER_LR = 5e-5
#: A Reasoner folder's own recommendation for the test-time optimiser, as transformers' model
#: folders carry a ``generation_config.json``: fields an experiment leaves unset take it.
OPTIM_DEFAULTS_FILE = "optim_defaults.json"


class OptimDefaults(StrictConfig):
    """``<reasoner>/optim_defaults.json``: the test-time optimiser settings this Reasoner was tuned with."""

    lr: float = Field(gt=0, description="AdamW learning rate of the item LoRA.")
    why: str = Field("", description="Where the value comes from (a measurement, a paper).")


def recommended_lr(reasoner_dir: str | Path) -> tuple[float, str]:
    """The learning rate a Reasoner folder asks for, and where it comes from: its
    ``optim_defaults.json``, else (a real checkpoint has none) the paper's."""
    path = Path(reasoner_dir) / OPTIM_DEFAULTS_FILE
    if path.is_file():
        return load_config(OptimDefaults, path).lr, f"from {path}"
    return PAPER_LR, f"the paper's: {reasoner_dir} has no {OPTIM_DEFAULTS_FILE}"


#: The frozen components that hold bfloat16 weights in the GPU's precision; the VAE, the image
#: encoder and the surrogate stay float32.
BF16_COMPONENTS = ("transformer", "transformer_2", "text_encoder")
Precision = Literal["auto", "fp32", "bf16"]


def _placement(device: str | torch.device | None, precision: str) -> tuple[torch.device, bool]:
    """The device (cuda when available) and whether the frozen weights and the transformer's
    compute are bfloat16 (``precision="auto"``: on CUDA)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError("precision", f"is {precision!r}", "auto, fp32 or bf16")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _float32_patch_embedding(conv: torch.nn.Conv3d) -> None:
    """Make ``conv`` (a transformer's patch embedding) compute in float32 whatever the autocast.

    On the CPU, torch 2.13's oneDNN bfloat16 Conv3d returns wrong values for Wan's patch
    embedding at a 4x4 patch (kernel = stride = (1, 4, 4), the shipped Reasoner): relative error
    1.2 against float32, so bfloat16 videos differed from float32 ones by 56 of 255 levels
    (measured 2026-12-06; the 2x2 patch was not affected). One convolution in float32 costs
    nothing, and unlike switching oneDNN off (a process-wide flag) it is safe beside other threads.
    CUDA is not affected (on an H100 bfloat16 videos differ from float32 by 0.10 of 255).
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            bias = None if conv.bias is None else conv.bias.float()
            return torch.nn.functional.conv3d(x.float(), conv.weight.float(), bias, conv.stride, conv.padding,
                                              conv.dilation, conv.groups)

    conv.forward = forward


class ReasonerAdapter:
    """A loaded Reasoner (pipeline + optional surrogate decoder) with the method's operations.

    ``meter`` counts transformer forwards/backwards (NFE) and decoder calls; pass the one
    the caller accounts costs with.
    """

    def __init__(
        self,
        pipe: WanImageToVideoPipeline,
        surrogate: SurrogateDecoder | None = None,
        device: str | torch.device | None = None,
        gradient_checkpointing: bool | None = None,
        precision: Precision = "auto",
        default_lr: float = PAPER_LR,
        first_frame_prior: float = 0.0,
    ) -> None:
        """``precision`` decides the transformer's autocast; the weights keep the dtypes ``pipe``
        was loaded with (``from_paths`` loads them for the precision)."""
        if not isinstance(pipe, WanImageToVideoPipeline):
            raise InputError("reasoner", f"is a {type(pipe).__name__}", "a diffusers WanImageToVideoPipeline")
        check_supported(pipe)
        self.device, bf16 = _placement(device, precision)
        on_cuda = self.device.type == "cuda"
        experts = [tf for tf in (pipe.transformer, pipe.transformer_2) if tf is not None]
        self.pipe = pipe.to(self.device)
        self.pipe.text_encoder.requires_grad_(False)
        self.pipe.vae.requires_grad_(False)
        if self.pipe.image_encoder is not None:
            self.pipe.image_encoder.requires_grad_(False)
        for tf in experts:
            tf.requires_grad_(False)
        self.surrogate = surrogate.to(self.device).requires_grad_(False).eval() if surrogate is not None else None
        if gradient_checkpointing if gradient_checkpointing is not None else on_cuda:
            for tf in experts:
                tf.enable_gradient_checkpointing()
        #: The transformer's compute dtype; None: float32 throughout.
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        if bf16 and self.device.type == "cpu":
            for tf in experts:
                _float32_patch_embedding(tf.patch_embedding)
        self.meter = CostMeter()
        self._prepared: OrderedDict[tuple, ItemCondition] = OrderedDict()
        self._negatives: dict[str, torch.Tensor] = {}  # negative-prompt embeddings for guidance
        #: The saved item adapter attached to the transformer now, if any (``core.method.optimise``).
        self.saved_adapter: str | None = None
        #: The learning rate for an optimiser config that leaves ``lr`` unset: the folder's
        #: ``optim_defaults.json`` when loaded by path (``from_paths``), else the paper's.
        self.default_lr = default_lr
        #: Where the flow starts (``core.models.wan.FlowSource``): the folder's when loaded by path, else pure noise.
        self.first_frame_prior = first_frame_prior

    @classmethod
    def from_paths(
        cls, reasoner: str | Path, surrogate: str | Path | None = None, device: str | torch.device | None = None,
        precision: Precision = "auto",
    ) -> ReasonerAdapter:
        """Load a Wan I2V pipeline folder and, optionally, a surrogate decoder folder.

        In bfloat16 precision (``precision="auto"`` on CUDA) the ``BF16_COMPONENTS`` load in
        bfloat16 by the libraries' own rules (``from_pretrained``'s dtype: diffusers keeps Wan's
        norms, time embedder and modulation table in float32), which halves the frozen weights
        (Wan2.2-TI2V-5B's transformer 20 -> 10 GB, its UMT5-XXL 23 -> 11 GB) and never holds them
        in float32 on the way.
        """
        device, bf16 = _placement(device, precision)
        default_lr, _ = recommended_lr(reasoner)
        dtype = {**dict.fromkeys(BF16_COMPONENTS, torch.bfloat16), "default": torch.float32} if bf16 else torch.float32
        pipe = load_reasoner(reasoner, dtype=dtype)
        sur = None
        if surrogate is not None:
            if not (Path(surrogate) / "config.json").is_file():
                raise InputError(surrogate, "is not a surrogate decoder folder (no config.json)",
                                 "a folder written by `vlmt zoo train` or core.train.surrogate")
            sur = SurrogateDecoder.from_pretrained(surrogate)
            vae, sc = pipe.vae.config, sur.config
            fields = ("z_dim", "scale_factor_spatial", "scale_factor_temporal")
            if any(getattr(vae, f) != getattr(sc, f) for f in fields):
                raise InputError(f"{surrogate}: config.json", f"decodes {[getattr(sc, f) for f in fields]} ({', '.join(fields)})",
                                 f"{[getattr(vae, f) for f in fields]} as the Reasoner's VAE: a surrogate distilled "
                                 "for this VAE (vlmt zoo surrogate --vae ...)")
        return cls(pipe, sur, device, precision=precision, default_lr=default_lr,
                   first_frame_prior=first_frame_prior(reasoner))

    @property
    def transformer(self) -> WanTransformer3DModel:
        """The transformer that carries the item LoRA: the only one, or the high-noise expert of two."""
        return self.pipe.transformer

    # ------------------------------------------------------------------ per item

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        return encode_prompts(self.pipe, [prompt])

    @torch.no_grad()
    def prepare(self, first_frame: np.ndarray, prompt: str, seed: int, n_frames: int) -> ItemCondition:
        """Encode prompt and first frame once and draw the item's noise from ``seed``.

        The last few conditions are kept: an item's stages (its videos, its optimisation, its
        final video) each ask for the same one, and the text encoder and VAE are frozen, so
        the answer cannot change. The cost falls on the first stage that asks.
        """
        if first_frame.ndim != 3 or first_frame.shape[2] != 3:
            raise InputError("first_frame", f"has shape {first_frame.shape}", "(H, W, 3) uint8")
        key = (hashlib.sha256(np.ascontiguousarray(first_frame).tobytes()).hexdigest(), first_frame.shape, prompt, seed,
               n_frames)
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]
        h, w = first_frame.shape[:2]
        shape = latent_shape(self.pipe, n_frames, h, w)
        cond = encode_conditions(self.pipe, [first_frame], n_frames, self.first_frame_prior)
        noise = cond.source(item_noise(shape, seed)[None].to(self.device, cond.latents.dtype))
        item = self._prepared[key] = ItemCondition(self.encode_text(prompt), cond, noise, seed, n_frames)
        if len(self._prepared) > PREPARED_KEPT:
            self._prepared.popitem(last=False)
        return item

    # ------------------------------------------------------------------ sampling

    def _velocity(self, z: torch.Tensor, item: ItemCondition, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.meter.count("reasoner_forward")
        model = expert(self.pipe, timestep)
        if self.autocast_dtype is None:
            return velocity(model, z, item.condition, timestep, text)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return velocity(model, z, item.condition, timestep, text).float()

    def velocity_fn(self, item: ItemCondition, guidance: Guidance | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The velocity the solver integrates: guided when ``guidance.scale > 1``."""
        g = guidance or Guidance()
        negative = None
        if g.scale != 1.0:
            if g.negative_prompt not in self._negatives:
                self._negatives[g.negative_prompt] = self.encode_text(g.negative_prompt)
            negative = self._negatives[g.negative_prompt]
        return guided(lambda z, t, text: self._velocity(z, item, t, text), item.text, negative,
                      guidance_scale_at(self.pipe, g.scale, g.scale_2))

    def predict_clean(self, item: ItemCondition, steps: int, mode: GradMode = GradMode.FIRST_STEP,
                      guidance: Guidance | None = None) -> torch.Tensor:
        """The clean-latent prediction (normalised latents; TI2V: first frame = the condition).

        Gradients flow only where ``mode`` says; ``first_step`` costs one (guided: two)
        transformer calls whatever ``steps`` is (``differentiated_calls`` says how many calls
        a backward spans). The other modes integrate with the folder's own solver
        (``core.models.wan.solve``).
        """
        mode = GradMode(mode)
        z = item.noise
        call = self.velocity_fn(item, guidance)
        if mode is GradMode.FIRST_STEP:
            sched = fresh_scheduler(self.pipe.scheduler, steps, z.device)
            t0 = sched.timesteps[:1].to(z.dtype)
            z0 = z - float(sched.sigmas[0]) * call(z, t0)
            return item.condition.finish(z0)
        graph_from = steps - 1 if mode is GradMode.LAST_STEP else 0
        if mode is GradMode.LAST_STEP and torch.is_grad_enabled():
            last = fresh_scheduler(self.pipe.scheduler, steps).timesteps[-1:]
            if expert(self.pipe, last) is not self.transformer:
                raise InputError("grad_mode", "is last_step, whose step runs the low-noise expert (no LoRA on it)",
                                 "first_step or full for a two-expert Reasoner")
        return item.condition.finish(solve(call, z, self.pipe.scheduler, steps, graph_from))

    @torch.no_grad()
    def sample(self, item: ItemCondition, steps: int, guidance: Guidance | None = None) -> torch.Tensor:
        """Sampling over the full schedule without a graph (the final video's latents)."""
        return self.predict_clean(item, steps, GradMode.FULL, guidance).detach()

    # ------------------------------------------------------------------ decoding

    def decode(self, latents: torch.Tensor, decoder: Decoder = Decoder.SURROGATE) -> torch.Tensor:
        """Normalised latents -> (B, 3, T, H, W) in [-1, 1] by the surrogate or the VAE."""
        decoder = Decoder(decoder)
        self.meter.count(f"decode_{decoder.value}")
        if decoder is Decoder.VAE:
            return decode_latents(self.pipe.vae, latents)
        if self.surrogate is None:
            raise InputError("decoder", "is 'surrogate' but no surrogate decoder was loaded",
                             "a surrogate folder (ReasonerAdapter.from_paths(..., surrogate=...)) or decoder='vae'")
        return self.surrogate(denormalise(self.pipe.vae, latents))

    @torch.no_grad()
    def generate(self, item: ItemCondition, steps: int, guidance: Guidance | None = None) -> np.ndarray:
        """The final video: full schedule, the item's eps, the VAE decode; (T, H, W, 3) uint8."""
        return tensor_to_frames(self.decode(self.sample(item, steps, guidance), Decoder.VAE)[0])


def differentiated_calls(mode: GradMode, steps: int, guidance: Guidance | None = None) -> int:
    """How many transformer calls one backward through ``predict_clean`` traverses."""
    calls = {GradMode.FIRST_STEP: 1, GradMode.LAST_STEP: 1, GradMode.FULL: steps}[GradMode(mode)]
    return calls * (2 if guidance is not None and guidance.scale != 1.0 else 1)


def frames_for_teacher(video: torch.Tensor, k: int) -> tuple[torch.Tensor, list[int]]:
    """(3, T, H, W) in [-1, 1] -> ((K, 3, H, W) in [0, 1], indices): K frames spread evenly.

    K is capped by the video length (a 17-frame video gives 17 frames for K = 24).
    """
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError("video", f"has shape {tuple(video.shape)}", "(3, T, H, W)")
    if k < 1:
        raise InputError("k_frames", f"is {k}", "at least 1")
    idx = sample_indices(video.shape[1], k).tolist()
    frames = video[:, idx].permute(1, 0, 2, 3)
    return (frames + 1.0) / 2.0, idx
