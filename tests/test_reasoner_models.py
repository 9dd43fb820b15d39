"""The Reasoner's model family with tiny random configs: build, save, load, sample, train a step."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline
from PIL import Image

from core.bench.record import Purpose
from core.bench.synth.generate import make_synth_benchmark
from core.errors import InputError
from core.media import read_image
from core.models.surrogate import SurrogateDecoder
from core.models.tokenizer import build_bpe_tokenizer
from core.models.wan import (
    FLOW_SOURCE_FILE,
    WanReasonerArch,
    assemble_pipeline,
    build_scheduler,
    build_text_encoder,
    build_transformer,
    build_vae,
    encode_conditions,
    encode_first_frames,
    encode_prompts,
    first_frame_prior,
    generate_videos,
    item_noise,
    latent_shape,
    load_reasoner,
    sampling_sigmas,
    store_weights_as,
)
import core.train.reasoner as reasoner
from core.train.common import one_cycle
from core.train.reasoner import (
    DistillConfig,
    FlowMatchConfig,
    LatentDataset,
    _masked_mse,
    distil,
    moving_latents,
    reflow_pairs,
    shift_sigmas,
    train_flow_matching,
)
from core.train.surrogate import SurrogateTrainConfig, decoder_fidelity, train_surrogate
from core.train.vae import VaeTrainConfig, recolour, stack_videos, train_vae
from tests.method_helpers import build_micro_reasoner


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_synth_benchmark(tmp_path_factory.mktemp("bench"), per_family=1, purpose=Purpose.TEST)


@pytest.fixture(scope="module")
def pipe(bench):
    torch.manual_seed(0)
    arch = WanReasonerArch.micro()
    tok = build_bpe_tokenizer([i.prompt for i in bench.instances], 300, ["<pad>", "</s>", "<unk>"],
                              pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    return assemble_pipeline(tok, build_text_encoder(arch, len(tok)), build_vae(arch), build_transformer(arch),
                             build_scheduler(arch))


def test_saved_pipeline_loads_with_diffusers_and_generates(pipe, bench, tmp_path):
    pipe.save_pretrained(tmp_path / "reasoner")
    loaded = WanImageToVideoPipeline.from_pretrained(tmp_path / "reasoner")
    assert loaded.config.expand_timesteps
    inst = bench.instances[0]
    frames = loaded(image=Image.fromarray(read_image(inst.first_frame)), prompt=inst.prompt, height=64, width=64, num_frames=17,
                    num_inference_steps=2, guidance_scale=1.0, output_type="np").frames[0]
    assert frames.shape == (17, 64, 64, 3)
    assert np.isfinite(frames).all()


@pytest.mark.parametrize(("solver", "guidance"), [("flow_match_euler", 1.0), ("unipc", 1.0), ("flow_match_euler", 3.0)])
def test_batched_sampler_matches_the_pipeline(pipe, bench, solver, guidance):
    """Our loop is the pipeline's arithmetic with the folder's own solver: same noise, same video.

    UniPC (``use_flow_sigmas``) is what Wan2.2's folders ship; Euler over its sigmas differs
    from ``pipe(...)`` by up to 13/255 on this random model, so the solver must be the folder's.
    """
    if solver == "unipc":
        unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
        pipe = WanImageToVideoPipeline(**pipe.components | {"scheduler": unipc, "expand_timesteps": True})
    inst = bench.instances[0]
    image = read_image(inst.first_frame)
    shape = latent_shape(pipe, 17, 64, 64)
    noise = item_noise(shape, seed=3)[None]
    ours = generate_videos(pipe, [image], [inst.prompt], [3], steps=3, n_frames=17, guidance_scale=guidance,
                           negative_prompt="static")[0]
    theirs = pipe(image=Image.fromarray(image), prompt=inst.prompt, height=64, width=64, num_frames=17, num_inference_steps=3,
                  guidance_scale=guidance, negative_prompt="static", latents=noise, output_type="np").frames[0]
    assert np.abs(ours.astype(float) / 255 - theirs).max() < 2 / 255


def test_a_4x4_patch_transformer_samples_with_one_timestep_per_token_and_leaves_the_default_dump_alone(pipe, bench):
    """``dit_patch: 4`` (the second zoo's). diffusers' own TI2V call hard-codes a 2x2 patch when it
    spreads the timestep over tokens (``pipeline_wan_i2v.py``: ``first_frame_mask[0][0][:, ::2, ::2]``),
    so it fails on such a transformer; our sampler gives one timestep per token at any patch. At 2
    the arch's dump, and every stage key made from it, is what it was before the field existed."""
    from core.models.wan import token_timesteps

    arch = WanReasonerArch(**WanReasonerArch.micro().model_dump() | {"dit_patch": 4, "dit_heads": 8})  # 64 wide
    torch.manual_seed(1)
    wide = WanImageToVideoPipeline(**pipe.components | {"transformer": build_transformer(arch), "expand_timesteps": True})
    assert tuple(wide.transformer.config.patch_size) == (1, 4, 4)
    latents = torch.zeros(1, 4, 5, 16, 16)
    t = token_timesteps(latents, torch.tensor([700.0]), (4, 4))
    assert t.shape == (1, 5 * 4 * 4) and (t[0, :16] == 0).all() and (t[0, 16:] == 700).all()
    inst = bench.instances[0]
    image = read_image(inst.first_frame)
    a, b = (generate_videos(wide, [image], [inst.prompt], [3], steps=2, n_frames=17)[0] for _ in range(2))
    assert a.shape == (17, 64, 64, 3) and (a == b).all()
    with pytest.raises(RuntimeError, match="must match the size"):  # the pipeline's own call, as documented
        wide(image=Image.fromarray(image), prompt=inst.prompt, height=64, width=64, num_frames=17, num_inference_steps=1,
             output_type="np")
    assert "dit_patch" not in WanReasonerArch().model_dump()
    assert WanReasonerArch(dit_patch=4, dit_heads=16).model_dump()["dit_patch"] == 4


def test_an_arch_too_narrow_for_its_tokens_is_refused_before_training(tmp_path):
    """A 4x4 patch of 16 latent channels is 256 values a token: a 128-wide transformer's velocity has
    rank 128 there and cannot remove the noise (the second zoo's second attempt: speckled samples)."""
    with pytest.raises(ValueError, match="128 is narrower than a token's dit_patch.*256"):
        WanReasonerArch(dit_patch=4, dit_heads=8)
    from core.config import load_config
    from core.zoo import ZooConfig

    recipe = tmp_path / "zoo.yaml"
    recipe.write_text("arch: {dit_patch: 4, dit_heads: 8, dit_ffn_dim: 512}\n")
    with pytest.raises(InputError, match=r"zoo.yaml.*arch.*narrower"):
        load_config(ZooConfig, recipe)


def test_a_reference_transformer_stored_in_bfloat16_loads_back_as_float32(tmp_path):
    """The zoo stores its undistilled Reasoner so (half the bytes); readers get float32 weights equal
    to the bfloat16-rounded originals, and the same outputs up to that rounding."""
    from diffusers import WanTransformer3DModel

    tf = build_transformer(WanReasonerArch()).eval()
    tf.save_pretrained(tmp_path / "tf")
    full = (tmp_path / "tf" / "diffusion_pytorch_model.safetensors").stat().st_size
    store_weights_as(tmp_path / "tf", torch.bfloat16)
    assert (tmp_path / "tf" / "diffusion_pytorch_model.safetensors").stat().st_size < 0.6 * full
    back = WanTransformer3DModel.from_pretrained(tmp_path / "tf").eval()
    for (name, a), (_, b) in zip(tf.state_dict().items(), back.state_dict().items(), strict=True):
        assert b.dtype == torch.float32 and torch.equal(b, a.to(torch.bfloat16).float()), name
    with pytest.raises(InputError, match="no \\*.safetensors"):
        store_weights_as(tmp_path, torch.bfloat16)


def test_wan21_style_pipeline_loads_and_our_sampler_matches_it(bench, tmp_path):
    """The Wan2.1 I2V layout (mask + condition latents on the channel axis, CLIP image embedding) by path."""
    reasoner_dir, _ = build_micro_reasoner(bench, tmp_path, layout="wan21")
    wan21 = load_reasoner(reasoner_dir)
    assert not wan21.config.expand_timesteps and wan21.transformer.config.image_dim is not None
    inst = bench.instances[0]
    image = read_image(inst.first_frame)
    cond = encode_conditions(wan21, [image], 17)
    assert cond.concat and cond.latents.shape == (1, 4 + 4, 5, 16, 16) and cond.image_embeds is not None
    noise = item_noise(latent_shape(wan21, 17, 64, 64), seed=3)[None]
    ours = generate_videos(wan21, [image], [inst.prompt], [3], steps=3, n_frames=17)[0]
    theirs = wan21(image=Image.fromarray(image), prompt=inst.prompt, height=64, width=64, num_frames=17,
                   num_inference_steps=3, guidance_scale=1.0, latents=noise, output_type="np").frames[0]
    assert np.abs(ours.astype(float) / 255 - theirs).max() < 2 / 255
    other = bench.instances[1]
    moved = generate_videos(wan21, [read_image(other.first_frame)], [inst.prompt], [3], steps=3, n_frames=17)[0]
    assert np.abs(moved.astype(float) - ours).max() > 10  # the first frame conditions the video
    with pytest.raises(InputError, match="first_frame_prior.*TI2V"):  # the prior is a TI2V source
        encode_conditions(wan21, [image], 17, prior=1.0)


def test_a_wan22_5b_shaped_pipeline_matches_our_sampler_and_gets_a_surrogate(bench, tmp_path):
    """Wan2.2-TI2V-5B's own VAE layout (2x2 pixel patches in 12 channels, residual blocks, 16x
    spatial) and UniPC solver by path: our sampler is ``pipe(...)``'s, and the generic surrogate
    distillation trains a decoder for that VAE which the Reasoner adapter accepts."""
    from core.method.reasoner import ReasonerAdapter
    from core.train.surrogate import SurrogateForConfig, distil_surrogate_for

    reasoner_dir, _ = build_micro_reasoner(bench, tmp_path, layout="wan22_5b")
    pipe = load_reasoner(reasoner_dir)
    vae = pipe.vae.config
    assert (vae.patch_size, vae.in_channels, vae.is_residual, pipe.vae_scale_factor_spatial) == (2, 12, True, 16)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler" and pipe.config.expand_timesteps
    inst = bench.instances[0]
    image = read_image(inst.first_frame)
    shape = latent_shape(pipe, 17, 64, 64)
    assert shape == (vae.z_dim, 5, 4, 4)
    ours = generate_videos(pipe, [image], [inst.prompt], [3], steps=3, n_frames=17)[0]
    theirs = pipe(image=Image.fromarray(image), prompt=inst.prompt, height=64, width=64, num_frames=17, num_inference_steps=3,
                  guidance_scale=1.0, latents=item_noise(shape, seed=3)[None], output_type="np").frames[0]
    assert ours.shape == (17, 64, 64, 3) and np.abs(ours.astype(float) / 255 - theirs).max() < 2 / 255
    report = distil_surrogate_for(reasoner_dir, bench.root, tmp_path / "surrogate", SurrogateForConfig(
        train=SurrogateTrainConfig(steps=2, batch=2), crop=2, videos=4, device="cpu"))
    assert report["train_videos"] == 2 and np.isfinite(report["psnr_vs_vae_db"])
    sur = ReasonerAdapter.from_paths(reasoner_dir, tmp_path / "surrogate", device="cpu").surrogate
    assert sur(torch.randn(1, *shape)).shape == (1, 3, 17, 64, 64)


def test_vae_surrogate_and_transformer_train_a_few_steps(pipe, bench):
    videos = [np.asarray(read_image(i.first_frame))[None].repeat(17, 0) for i in bench.instances[:3]]
    curve = train_vae(pipe.vae, videos, VaeTrainConfig(steps=2, batch=2, crop=16))
    assert len(curve) == 1 and np.isfinite(curve[0])
    sur, _ = train_surrogate(pipe.vae, videos, SurrogateTrainConfig(hidden=8, num_res_blocks=1, steps=2, batch=2))
    fid = decoder_fidelity(pipe.vae, sur, videos[:1])
    assert fid.surrogate_decode_s > 0 and np.isfinite(fid.psnr_vs_vae_db)

    cond = encode_first_frames(pipe.vae, [v[0] for v in videos])
    lat = cond.repeat(1, 1, latent_shape(pipe, 17, 64, 64)[1], 1, 1)
    data = LatentDataset(lat, [0, 1, 2], encode_prompts(pipe, [i.prompt for i in bench.instances[:3]]))
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    train_flow_matching(pipe.transformer, data, FlowMatchConfig(steps=2, batch=2))
    assert any(not torch.equal(before[k], v) for k, v in pipe.transformer.state_dict().items())
    student, curve = distil(pipe.transformer, pipe.scheduler, data, DistillConfig(teacher_steps=2, steps=2, batch=2))
    assert student is not pipe.transformer and np.isfinite(curve[0])


def test_the_motion_mask_marks_the_latent_pixels_a_sprite_enters_or_leaves_and_weighs_the_loss():
    video = torch.zeros(1, 3, 9, 16, 16)
    video[:, 0, 5:, 4:8, 8:12] = 1.0  # a sprite appears at frame 5 in latent pixel (1, 2) of a 4x spatial VAE
    video[:, 1, 7:, 12:16, 0:4] = 1.0  # another at frame 7, latent pixel (3, 0)
    moving = moving_latents(video, temporal=4, spatial=4)
    assert moving.shape == (1, 3, 4, 4) and not moving[:, :2].any()  # frames 1-4 are still
    assert moving[0, 2].nonzero().tolist() == [[1, 2], [3, 0]]
    assert not moving_latents(video[:, :, :1].repeat(1, 1, 9, 1, 1), 4, 4).any()
    pred, target = torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2, 3, 4, 4)
    pred[0, :, 2, 1, 2] = 1.0  # an error only where the sprite moves
    plain = _masked_mse(pred, target)
    assert float(plain) == pytest.approx(1 / 32)
    assert float(_masked_mse(pred, target, moving, 1.0)) == pytest.approx(1 / 32 + 1 / 2)  # + the mean over 2 moving pixels


def test_a_first_frame_prior_trains_and_reflows_from_noise_plus_the_first_frame(pipe, bench):
    videos = [np.asarray(read_image(i.first_frame))[None].repeat(17, 0) for i in bench.instances[:3]]
    first = encode_first_frames(pipe.vae, [v[0] for v in videos])
    data = LatentDataset(first.repeat(1, 1, latent_shape(pipe, 17, 64, 64)[1], 1, 1), [0, 1, 2],
                         encode_prompts(pipe, [i.prompt for i in bench.instances[:3]]))
    cfg = DistillConfig(teacher_steps=2, steps=2, batch=2)
    plain, primed = (reflow_pairs(pipe.transformer, pipe.scheduler, data, cfg, torch.Generator().manual_seed(0),
                                  first_frame_prior=p) for p in (0.0, 1.0))
    assert torch.equal(plain[2], primed[2])  # the same items, the same noise: the sources differ by the first frame
    assert torch.allclose(primed[0] - plain[0], first[plain[2]].expand_as(plain[0]), atol=1e-6)
    assert not torch.allclose(primed[1], plain[1], atol=1e-3)
    flow = FlowMatchConfig(steps=2, batch=2, first_frame_prior=1.0)
    assert np.isfinite(train_flow_matching(copy.deepcopy(pipe.transformer), data, flow)[0])
    assert "first_frame_prior" not in FlowMatchConfig().model_dump()  # keys made before the prior stay valid
    assert flow.model_dump()["first_frame_prior"] == 1.0


def test_the_time_shift_moves_training_noise_levels_up_and_the_loop_draws_them(pipe, bench, monkeypatch):
    u = torch.linspace(0, 1, 101)
    assert torch.equal(shift_sigmas(u, 1.0), u)
    shifted = shift_sigmas(u, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted[1:] > shifted[:-1]).all())
    assert float(shifted[50]) == pytest.approx(0.75)  # SD3's shift 3: half of the draws above 0.75
    videos = [np.asarray(read_image(i.first_frame))[None].repeat(17, 0) for i in bench.instances[:2]]
    first = encode_first_frames(pipe.vae, [v[0] for v in videos])
    data = LatentDataset(first.repeat(1, 1, latent_shape(pipe, 17, 64, 64)[1], 1, 1), [0, 1],
                         encode_prompts(pipe, [i.prompt for i in bench.instances[:2]]))
    seen: list[torch.Tensor] = []
    real = reasoner.velocity
    monkeypatch.setattr(reasoner, "velocity", lambda m, z, c, t, x: seen.append(t / 1000.0) or real(m, z, c, t, x))
    drawn = {}
    for shift in (1.0, 3.0):
        seen.clear()
        train_flow_matching(copy.deepcopy(pipe.transformer), data, FlowMatchConfig(steps=3, batch=2, sigma_shift=shift))
        drawn[shift] = torch.cat(seen)
    assert torch.allclose(drawn[3.0], shift_sigmas(drawn[1.0], 3.0))  # same seed, same draws, shifted
    assert not torch.allclose(drawn[3.0], drawn[1.0])
    assert "sigma_shift" not in FlowMatchConfig().model_dump()  # stage keys made before the option stay valid
    assert FlowMatchConfig(sigma_shift=3.0).model_dump()["sigma_shift"] == 3.0


def test_generate_videos_with_a_prior_is_the_pipeline_from_that_source_and_reads_it_from_the_folder(pipe, bench, tmp_path):
    inst = bench.instances[0]
    image = read_image(inst.first_frame)
    cond = encode_conditions(pipe, [image], 17, prior=1.0)
    source = cond.source(item_noise(latent_shape(pipe, 17, 64, 64), seed=3)[None])
    ours = generate_videos(pipe, [image], [inst.prompt], [3], steps=3, n_frames=17, first_frame_prior=1.0)[0]
    theirs = pipe(image=Image.fromarray(image), prompt=inst.prompt, height=64, width=64, num_frames=17, num_inference_steps=3,
                  guidance_scale=1.0, latents=source, output_type="np").frames[0]
    assert np.abs(ours.astype(float) / 255 - theirs).max() < 2 / 255
    folder = tmp_path / "reasoner"
    folder.mkdir()
    assert first_frame_prior(folder) == 0.0  # a real checkpoint: pure noise
    (folder / FLOW_SOURCE_FILE).write_text(json.dumps({"first_frame_prior": 0.5, "why": "test"}))
    assert first_frame_prior(folder) == 0.5
    (folder / FLOW_SOURCE_FILE).write_text(json.dumps({"first_frame_prior": "lots"}))
    with pytest.raises(InputError, match=r"flow_source.json.*first_frame_prior"):
        first_frame_prior(folder)


def _lr_curve(steps: int, make) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make(opt)
    curve = []
    for _ in range(steps):
        curve.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return curve


def test_the_training_schedule_runs_at_any_step_count_and_keeps_the_shipped_recipes():
    # torch's OneCycleLR at 5% warm-up raises ZeroDivisionError at exactly 20 steps
    with pytest.raises(ZeroDivisionError):
        _lr_curve(20, lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=20, pct_start=0.05))
    for steps in range(1, 61):
        curve = _lr_curve(steps, lambda opt, n=steps: one_cycle(opt, 0.1, n))
        assert len(curve) == steps and all(0 < lr <= 0.1 + 1e-12 for lr in curve)
    assert max(_lr_curve(20, lambda opt: one_cycle(opt, 0.1, 20))) == pytest.approx(0.1)
    for steps in (1200, 4000, 6000):  # the zoo's step counts: the same schedule as before
        torch_curve = _lr_curve(steps, lambda opt, n=steps: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.1, total_steps=n, pct_start=0.05))
        assert _lr_curve(steps, lambda opt, n=steps: one_cycle(opt, 0.1, n)) == torch_curve


def test_the_vae_trains_for_twenty_steps(pipe, bench):
    videos = [np.asarray(read_image(i.first_frame))[None].repeat(17, 0) for i in bench.instances[:2]]
    curve = train_vae(pipe.vae, videos, VaeTrainConfig(steps=20, batch=1, crop=16))
    assert len(curve) == 1 and np.isfinite(curve[0])


def test_surrogate_shapes_follow_the_vae():
    sur = SurrogateDecoder(z_dim=4, scale_factor_spatial=4, scale_factor_temporal=4, hidden=8, num_res_blocks=1)
    out = sur(torch.randn(2, 4, 5, 16, 16))
    assert out.shape == (2, 3, 17, 64, 64)
    assert out.abs().max() <= 1


def test_schedule_starts_at_pure_noise(pipe):
    sigmas = sampling_sigmas(pipe.scheduler, 4)
    assert len(sigmas) == 5 and float(sigmas[0]) == pytest.approx(1.0) and float(sigmas[-1]) == 0.0


def test_recolour_permutes_and_flips_whole_clips_exactly():
    gen = torch.Generator().manual_seed(0)
    clips = torch.rand(16, 3, 5, 8, 8) * 2 - 1
    assert torch.equal(recolour(clips, 0.0, gen), clips)
    out = recolour(clips, 1.0, gen)
    changed = 0
    for a, b in zip(clips, out):
        # every output channel is one input channel, possibly negated, and all three are used
        sources = []
        for c in range(3):
            match = [k for k in range(3) if torch.equal(b[c], a[k]) or torch.equal(b[c], -a[k])]
            assert match, "an output channel is not a (negated) input channel"
            sources.append(match[0])
        assert sorted(sources) == [0, 1, 2]
        changed += not torch.equal(a, b)
    assert changed >= 12, "with probability 1 nearly every clip (47 of 48 transforms) must change"


def test_a_residual_vae_builds_trains_saves_and_reloads_as_wan22s(bench, tmp_path):
    """``arch.vae_residual``: Wan2.2's VAE blocks (avg-pool / duplicate shortcuts) through the same code."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    arch = WanReasonerArch.micro().model_copy(update={"vae_residual": True})
    vae = build_vae(arch)
    assert vae.config.is_residual and type(vae.decoder.up_blocks[0]).__name__ == "WanResidualUpBlock"
    videos = [np.asarray(read_image(i.first_frame))[None].repeat(17, 0) for i in bench.instances[:2]]
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    assert np.isfinite(train_vae(vae, videos, VaeTrainConfig(steps=2, batch=2, crop=16))[0])
    assert any(not torch.equal(before[k], v) for k, v in vae.state_dict().items())
    vae.save_pretrained(tmp_path / "vae")
    loaded = AutoencoderKLWan.from_pretrained(tmp_path / "vae")
    x = stack_videos(videos[:1])
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert z.shape == (1, 4, 5, 16, 16)
        assert torch.allclose(loaded.encode(x).latent_dist.mode(), z) and torch.allclose(loaded.decode(z).sample, vae.decode(z).sample)
    # unset, the option leaves the arch's dump (and so every zoo cache key) as it was before it existed
    assert "vae_residual" not in WanReasonerArch().model_dump() and WanReasonerArch(vae_residual=True).model_dump()["vae_residual"]


def test_the_motion_term_sees_only_pixels_that_change_between_frames():
    from core.train.vae import motion_mse

    x = torch.full((1, 3, 4, 8, 8), -0.9)
    x[:, :, 2, 3, 3] = 0.8  # one pixel lights up in frame 2 only
    y = x.clone()
    y[:, :, 0, 0, 0] += 1.0  # an error on a static pixel is not the motion term's
    assert motion_mse(x, y).item() == 0.0
    y[:, :, 1, 3, 3] += 0.5  # frame 1 at that pixel precedes the change: counted
    assert motion_mse(x, y).item() == pytest.approx(3 * 0.25 / 3)  # three moving (frame, pixel) sites, one wrong


def test_the_palette_hinge_penalises_only_palette_pixels_beyond_the_margin():
    from core.bench.synth.palette import RGB
    from core.train.vae import palette_hinge

    x = torch.full((1, 3, 1, 2, 2), 0.5)  # RGB (191, 191, 191) is no palette colour
    red = torch.tensor(RGB[3] / 127.5 - 1.0)
    x[0, :, 0, 0, 0] = red
    w = torch.ones(1, 1, 1, 2, 2)
    y = x.clone()
    y[0, 0, 0, 0, 0] -= 0.1  # within the margin
    y[0, :, 0, 1, 1] += 1.0  # far off, on a non-palette pixel
    assert palette_hinge(x, y, w, margin=0.2).item() == 0.0
    y[0, 0, 0, 0, 0] = red[0] - 0.5
    assert palette_hinge(x, y, w, margin=0.2).item() == pytest.approx((0.5 - 0.2) / 4)


def test_a_vae_without_temporal_compression_keeps_every_frame_and_trains_with_both_terms(bench):
    torch.manual_seed(0)
    arch = WanReasonerArch.micro().model_copy(update={"vae_temporal_downsample": [False, False]})
    vae = build_vae(arch)
    assert vae.config.scale_factor_temporal == 1
    videos = [np.asarray(read_image(i.first_frame))[None].repeat(17, 0) for i in bench.instances[:2]]
    videos[1][5:, :8, :8] = 255  # something that changes, for the motion term
    cfg = VaeTrainConfig(steps=2, batch=2, crop=16, clip_frames=9, palette_weight=1.0, motion_weight=4.0)
    assert np.isfinite(train_vae(vae, videos, cfg)[0])
    with torch.no_grad():
        z = vae.encode(stack_videos(videos[:1])).latent_dist.mode()
    assert z.shape[2] == 17
    sur = SurrogateDecoder(z_dim=4, scale_factor_spatial=4, scale_factor_temporal=1, hidden=8, num_res_blocks=1)
    assert sur(z).shape == (1, 3, 17, 64, 64)
