"""The Reasoner's model family: a diffusers Wan image-to-video pipeline.

One specification object for the family, in the finetrainers spirit: how to build a tiny
random one from an architecture config (the shipped zoo is in the Wan2.2 TI2V style), how to
load any one by path (our shipped tiny checkpoint, a real ``Wan2.2-TI2V-5B`` folder, or a
Wan2.1-style I2V folder such as ``Wan2.1-I2V-14B-480P-Diffusers``), and the few model-level
operations that training and the method share:

* latent normalisation (``latents_mean`` / ``latents_std`` from the VAE config),
* the first-frame conditioning, in the two ways ``WanImageToVideoPipeline`` does it
  (``FrameCondition``): with ``expand_timesteps=True`` (TI2V) the first latent frame is the
  clean encoded first frame and its tokens get timestep 0; otherwise (Wan2.1 I2V) a mask and
  the encoded ``[first frame, grey frames]`` video are concatenated to the noisy latents on
  the channel axis, and a CLIP image embedding goes to the transformer when it has an image
  projection,
* one velocity evaluation of the transformer, and sampling with the folder's own solver
  (``scheduler.step``: Euler for the zoo's ``FlowMatchEulerDiscreteScheduler``, UniPC for
  Wan2.2's folders), so a vanilla video is the one ``pipe(...)`` makes.

Two-expert pipelines (Wan2.2-I2V-A14B: ``transformer_2`` and ``boundary_ratio``) sample as
the pipeline does, the high-noise ``transformer`` at timesteps >= ``boundary_ratio * 1000``
and ``transformer_2`` below (``expert``). The test-time LoRA goes on the high-noise expert,
the one the paper's first-step gradient passes through.

Flow-matching convention (diffusers' ``FlowMatchEulerDiscreteScheduler``): ``z_s = (1 - s) x0
+ s z1`` for noise level ``s`` in [0, 1], timestep ``t = 1000 s``, velocity ``v = z1 - x0``;
so the clean-latent prediction at any level is ``x0_hat = z_s - s v``. The flow's source ``z1``
is the noise ``eps`` (every diffusers Wan folder), or ``eps + p * first`` for a folder whose
``flow_source.json`` sets a first-frame prior ``p`` (``FlowSource``): the TI2V first frame's
latent on every frame, so that what the video keeps of its first frame is there before the
transformer acts. ``pipe(image, prompt, latents=z1)`` samples such a folder as we do.

One module a job: ``build`` (a tiny random folder from ``WanReasonerArch``), ``loading`` (any
folder by path, its checks, ``expert``), ``encoding`` (latents, text, noise), ``conditioning``
(``FrameCondition``), ``sampling`` (velocity, solver, guidance, ``generate_videos``). This
package re-exports them all, so callers import from ``core.models.wan``.
"""

from core.models.wan.build import (
    WanReasonerArch,
    assemble_pipeline,
    build_scheduler,
    build_text_encoder,
    build_transformer,
    build_vae,
    store_weights_as,
)
from core.models.wan.conditioning import (
    FrameCondition,
    encode_conditions,
    token_timesteps,
    with_condition,
)
from core.models.wan.encoding import (
    MAX_SEQUENCE_LENGTH,
    decode_latents,
    denormalise,
    encode_first_frames,
    encode_prompts,
    encode_videos,
    frames_to_tensor,
    item_noise,
    latent_shape,
    latent_stats,
    normalise,
    tensor_to_frames,
)
from core.models.wan.loading import (
    FLOW_SOURCE_FILE,
    FlowSource,
    check_guidance_2,
    check_supported,
    expert,
    first_frame_prior,
    load_reasoner,
    single_transformer_error,
)
from core.models.wan.sampling import (
    Scale,
    fresh_scheduler,
    generate_videos,
    guidance_scale_at,
    guided,
    sample_latents,
    sampling_sigmas,
    solve,
    velocity,
)

__all__ = [
    "FLOW_SOURCE_FILE",
    "FlowSource",
    "FrameCondition",
    "MAX_SEQUENCE_LENGTH",
    "Scale",
    "WanReasonerArch",
    "assemble_pipeline",
    "build_scheduler",
    "build_text_encoder",
    "build_transformer",
    "build_vae",
    "check_guidance_2",
    "check_supported",
    "decode_latents",
    "denormalise",
    "encode_conditions",
    "encode_first_frames",
    "encode_prompts",
    "encode_videos",
    "expert",
    "first_frame_prior",
    "frames_to_tensor",
    "fresh_scheduler",
    "generate_videos",
    "guidance_scale_at",
    "guided",
    "item_noise",
    "latent_shape",
    "latent_stats",
    "load_reasoner",
    "normalise",
    "sample_latents",
    "sampling_sigmas",
    "single_transformer_error",
    "solve",
    "store_weights_as",
    "tensor_to_frames",
    "token_timesteps",
    "velocity",
    "with_condition",
]
