"""The method on tiny random Wan and Qwen2.5-VL models: gradients, optimisation, stops, rules, adapters."""

from __future__ import annotations

import json
import math
import threading
from typing import NamedTuple

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline

from core.bench.record import Purpose
from core.bench.synth.generate import make_synth_benchmark
from core.errors import InputError
from core.media import read_image
from core.method.optimise import (
    OptimConfig,
    _lora_params,
    attach_lora,
    detach_lora,
    learning_rate_source,
    load_adapter,
    lora_state,
    optimise_item,
    resolve_optim,
    reward_step,
    save_adapter,
)
from core.method.reasoner import (
    OPTIM_DEFAULTS_FILE,
    PAPER_LR,
    GradMode,
    Guidance,
    ReasonerAdapter,
    differentiated_calls,
    frames_for_teacher,
)
from core.method.teacher import (
    GENERIC_PROCESS_QUERY,
    RuleSet,
    compile_reward,
    extract_rules,
    judge,
    query_logprobs,
    repair_rules,
    reward_loss,
)
from core.models.teacher import (
    frames_to_tensor,
    load_teacher,
    shared_video_encoding,
    teacher_placement,
    video_qa_batch,
    vision_tower,
)
from core.models.wan import load_reasoner
from tests.method_helpers import build_micro_reasoner, build_micro_teacher


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_synth_benchmark(tmp_path_factory.mktemp("bench"), per_family=1, purpose=Purpose.TEST)


@pytest.fixture(scope="module")
def models(bench, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("models")
    reasoner_dir, surrogate_dir = build_micro_reasoner(bench, out)
    teachers = {f: build_micro_teacher(bench, out, family=f) for f in ("qwen2_5_vl", "qwen3_vl")}
    return reasoner_dir, surrogate_dir, teachers


@pytest.fixture()
def reasoner(models):
    return ReasonerAdapter.from_paths(models[0], models[1], device="cpu")


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def teacher(models, request):
    return load_teacher(models[2][request.param])


RULES = RuleSet(goal="Does the red agent reach the green goal cell?", process=["Does the red agent stay intact?",
                                                                               "Does the agent avoid the walls?"],
                source="teacher", attempts=1)


@pytest.fixture()
def item(bench, reasoner, teacher):
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    cond = reasoner.prepare(first, inst.prompt, seed=7, n_frames=inst.metadata["n_frames"])
    reward = compile_reward(teacher, RULES, inst.metadata["n_frames"], first.shape[:2], k_frames=8, lam=0.5)
    return cond, reward


@pytest.mark.parametrize("mode", list(GradMode))
def test_gradients_reach_the_lora_in_every_mode(reasoner, teacher, item, mode):
    cond, reward = item
    params = attach_lora(reasoner, OptimConfig().lora, seed=0)
    loss, _ = reward_step(reasoner, teacher, cond, reward, OptimConfig(grad_mode=mode, k_frames=8))
    loss.backward()
    named = dict(reasoner.transformer.named_parameters())
    b_grads = [p.grad for n, p in named.items() if "lora_B" in n]
    assert b_grads and all(g is not None for g in b_grads)
    assert sum(float(g.abs().sum()) for g in b_grads) > 0
    assert all(p.grad is None for n, p in named.items() if "lora_" not in n)  # the backbone stays frozen
    assert len(params) == len([n for n in named if "lora_" in n])
    detach_lora(reasoner)


@pytest.mark.parametrize("layout", ["wan21", "wan22_5b"])
def test_other_wan_layouts_take_gradients_in_every_mode_optimise_and_reload(bench, models, layout, tmp_path):
    """The Wan2.1 I2V layout and Wan2.2-TI2V-5B's (patchified residual VAE, UniPC) through the same
    adapter: LoRA gradients in every mode, a changed video, and the saved adapter reproduces it."""
    reasoner_dir, surrogate_dir = build_micro_reasoner(bench, tmp_path, layout=layout)
    other = ReasonerAdapter.from_paths(reasoner_dir, surrogate_dir, device="cpu")
    teacher = load_teacher(models[2]["qwen2_5_vl"])
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    cond = other.prepare(first, inst.prompt, seed=7, n_frames=inst.metadata["n_frames"])
    if layout == "wan21":
        assert cond.condition.concat and cond.condition.image_embeds is not None
    else:
        assert cond.noise.shape[-2:] == (4, 4) and other.pipe.vae.config.patch_size == 2  # 64 px / 16
    reward = compile_reward(teacher, RULES, inst.metadata["n_frames"], first.shape[:2], k_frames=8, lam=0.5)
    for mode in GradMode:
        attach_lora(other, OptimConfig().lora, seed=0)
        loss, _ = reward_step(other, teacher, cond, reward, OptimConfig(grad_mode=mode, k_frames=8))
        loss.backward()
        named = dict(other.transformer.named_parameters())
        assert sum(float(p.grad.abs().sum()) for n, p in named.items() if "lora_B" in n) > 0, mode
        assert all(p.grad is None for n, p in named.items() if "lora_" not in n)
        detach_lora(other)
    base = other.generate(cond, steps=4)
    res = optimise_item(other, teacher, cond, reward, OptimConfig(lr=5e-2, max_steps=3, early_stop=False, k_frames=8))
    adapted = other.generate(cond, steps=4)
    assert res.steps_run == 3 and not np.array_equal(adapted, base)
    state = lora_state(other)
    save_adapter(other, tmp_path / "adapter", OptimConfig().lora)
    detach_lora(other)
    load_adapter(other, tmp_path / "adapter")
    assert np.array_equal(other.generate(cond, steps=4), adapted)
    reloaded = lora_state(other)
    assert all(torch.equal(state[k], reloaded[k]) for k in state)
    # diffusers pads an adapter loaded on a Wan I2V transformer with an image projection with
    # zero LoRA on that cross-attention's image keys and values (add_k_proj / add_v_proj)
    extra = set(reloaded) - set(state)
    assert bool(extra) == (layout == "wan21")
    assert all(".add_k_proj." in k or ".add_v_proj." in k for k in extra)
    assert all(not reloaded[k].any() for k in extra if "lora_B" in k)
    detach_lora(other)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_teacher_activation_checkpointing_recomputes_layers_and_keeps_the_reward_and_its_gradient(models, bench, family):
    """On for GPUs by default: every vision block and decoder layer runs again in the backward
    pass (only its input is kept), the loss and the pixels' gradient are the same, the judge too."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    inst = bench.instances[0]
    frames = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    runs = {}
    for ckpt in (False, True):
        teacher = load_teacher(models[2][family], activation_checkpointing=ckpt)
        reward = compile_reward(teacher, RULES, inst.metadata["n_frames"], (64, 64), k_frames=8, lam=0.5)
        layers = [m for m in teacher.model.modules() if isinstance(m, GradientCheckpointingLayer)]
        calls = []
        # transformers checkpoints a layer's forward, not its __call__, and the recompute stops as soon
        # as the last kept tensor is back: count the calls that enter each layer's MLP
        hooks = [m.mlp.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1)) for m in layers]
        f = frames.clone().requires_grad_()
        loss = reward_loss(reward, query_logprobs(teacher, reward, f))
        forward_calls = len(calls)
        loss.backward()
        for h in hooks:
            h.remove()
        attention_training = [m.training for m in teacher.model.modules() if not isinstance(m, GradientCheckpointingLayer)
                              and m is not teacher.model]
        assert not any(attention_training), "only the checkpointed layers' own flags may change"
        with torch.no_grad():  # the judge's pass: no graph, so nothing to checkpoint
            judged = query_logprobs(teacher, reward, frames).exp()
        runs[ckpt] = (loss.item(), f.grad, forward_calls, len(calls), len(layers), judged)
    (l0, g0, fwd0, all0, n, j0), (l1, g1, fwd1, all1, _, j1) = runs[False], runs[True]
    assert torch.allclose(j0, j1, atol=1e-7)
    assert n >= 2 and fwd0 == fwd1 and all0 == fwd0, "without checkpointing the backward recomputes nothing"
    assert all1 == 2 * fwd1, "with it, every layer runs once more in the backward pass"
    assert abs(l0 - l1) < 1e-6 and torch.allclose(g0, g1, atol=1e-7, rtol=1e-5) and g0.abs().sum() > 0
    # the GPU's Teacher, bfloat16 weights with checkpointing, on the CPU: the same reward and gradient to bf16's precision
    half = load_teacher(models[2][family], dtype="bfloat16", device="cpu", activation_checkpointing=True)
    assert half.model.dtype == torch.bfloat16
    reward = compile_reward(half, RULES, inst.metadata["n_frames"], (64, 64), k_frames=8, lam=0.5)
    f = frames.clone().requires_grad_()
    loss = reward_loss(reward, query_logprobs(half, reward, f))
    loss.backward()
    assert abs(loss.item() - l0) < 1e-2 * abs(l0) and f.grad.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(f.grad.flatten(), g0.flatten(), dim=0) > 0.999


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("ckpt", [False, True])
def test_the_video_is_encoded_once_for_all_queries_with_the_same_reward_and_gradient(models, bench, family, ckpt):
    """The M queries' sequences each carry the video; the vision tower now sees one copy (1/M of
    its patches) and the log-probabilities, the judge and the pixels' gradient are unchanged,
    with and without activation checkpointing (the GPU default)."""
    inst = bench.instances[0]
    teacher = load_teacher(models[2][family], activation_checkpointing=ckpt)
    reward = compile_reward(teacher, RULES, inst.metadata["n_frames"], (64, 64), k_frames=8, lam=0.5)
    m = len(reward.queries)
    frames = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    first_block = vision_tower(teacher.model).blocks[0]
    runs = {}
    for share in (False, True):
        rows = []
        hook = first_block.register_forward_pre_hook(lambda _m, args, rows=rows: rows.append(args[0].shape[0]))
        f = frames.clone().requires_grad_()
        logp = query_logprobs(teacher, reward, f, share_video=share)
        reward_loss(reward, logp).backward()
        with torch.no_grad():
            judged = query_logprobs(teacher, reward, frames, share_video=share).exp()
        hook.remove()
        runs[share] = (logp.detach(), f.grad, judged, rows)
    (l0, g0, j0, rows0), (l1, g1, j1, rows1) = runs[False], runs[True]
    assert m >= 2 and rows0[0] == m * rows1[0] and set(rows1) == {rows1[0]}, "one copy of the patches, every pass"
    assert torch.allclose(l0, l1, atol=1e-6) and torch.allclose(j0, j1, atol=1e-7)
    assert g0.abs().sum() > 0 and torch.allclose(g0, g1, atol=1e-7, rtol=1e-5)


class _Tower(torch.nn.Module):
    """A stand-in vision tower: merged tokens (every 4th row, doubled) and, optionally, a scalar."""

    spatial_merge_size = 2

    def __init__(self, scalar: bool) -> None:
        super().__init__()
        self.scalar, self.seen = scalar, []

    def forward(self, hidden: torch.Tensor, grid_thw: torch.Tensor):
        self.seen.append(hidden.shape[0])
        merged = hidden[::4] * 2
        return (merged, torch.tensor(float(hidden.shape[0]))) if self.scalar else _Pair(merged, [merged + 1])


class _Pair(NamedTuple):
    merged: torch.Tensor
    deepstack: list


def test_shared_encoding_passes_through_what_it_cannot_share_and_recomputes_what_it_cannot_repeat(caplog):
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    video, grid = torch.randn(16, 5), torch.tensor([[1, 4, 4]])
    for scalar in (False, True):
        model.model.visual = tower = _Tower(scalar)
        whole = tower(video.repeat(3, 1), grid_thw=grid.repeat(3, 1))
        tower.seen.clear()
        with caplog.at_level("WARNING"), shared_video_encoding(model, 3):
            shared = tower(video.repeat(3, 1), grid_thw=grid.repeat(3, 1))
            other_grids = tower(torch.randn(32, 5), grid_thw=torch.tensor([[1, 4, 4], [1, 2, 8]]))
            from_another_thread = []
            worker = threading.Thread(target=lambda out=from_another_thread, t=tower: out.append(
                t(video.repeat(3, 1), grid_thw=grid.repeat(3, 1))))
            worker.start()
            worker.join()
        assert torch.equal(shared[0], whole[0]) and other_grids[0].shape[0] == 8
        if scalar:  # not per token: recomputed from the whole input, and said so
            assert torch.equal(shared[1], whole[1]) and tower.seen[:2] == [16, 48]
            assert "not per video token" in caplog.text
        else:
            assert isinstance(shared, _Pair) and torch.equal(shared.deepstack[0], whole.deepstack[0])
            assert tower.seen[0] == 16
        assert tower.seen[-2:] == [32, 48], "unequal grids and other threads' calls pass through"
        assert torch.equal(from_another_thread[0][0], whole[0])
    tower(video.repeat(3, 1), grid_thw=grid.repeat(3, 1))
    assert tower.seen[-1] == 48, "the hooks are gone after the context"


def test_another_threads_call_in_the_middle_of_a_shared_encoding_leaves_it_intact():
    """A Teacher shared by threads: another thread's call to the tower while ours is inside it
    (between our two hooks) is encoded whole, and ours still gets its copies."""
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.visual = tower = _Tower(scalar=False)
    video, grid = torch.randn(16, 5), torch.tensor([[1, 4, 4]])
    whole = tower(video.repeat(3, 1), grid_thw=grid.repeat(3, 1))
    other: list = []
    inner_forward = tower.forward

    def forward_with_a_call_from_another_thread(hidden, grid_thw):
        if threading.current_thread() is threading.main_thread() and not other:
            worker = threading.Thread(target=lambda: other.append(tower(torch.randn(32, 5), grid_thw=torch.tensor([[1, 4, 8]]))))
            worker.start()
            worker.join()
        return inner_forward(hidden, grid_thw)

    tower.forward = forward_with_a_call_from_another_thread
    with shared_video_encoding(model, 3):
        shared = tower(video.repeat(3, 1), grid_thw=grid.repeat(3, 1))
    assert other[0][0].shape[0] == 8 and torch.equal(shared[0], whole[0]) and torch.equal(shared[1][0], whole[1][0])


@pytest.mark.parametrize("mode", list(GradMode))
def test_reasoner_gradient_checkpointing_recomputes_blocks_and_keeps_the_lora_gradient(models, bench, mode):
    """On for GPUs by default: each differentiated transformer call's blocks run again in the
    backward pass, and the loss and the LoRA's gradient are the same as without."""
    teacher = load_teacher(models[2]["qwen2_5_vl"])
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    runs = {}
    for ckpt in (False, True):
        reasoner = ReasonerAdapter(load_reasoner(models[0]), None, device="cpu", gradient_checkpointing=ckpt)
        cond = reasoner.prepare(first, inst.prompt, seed=7, n_frames=inst.metadata["n_frames"])
        reward = compile_reward(teacher, RULES, inst.metadata["n_frames"], first.shape[:2], k_frames=8, lam=0.5)
        attach_lora(reasoner, OptimConfig().lora, seed=0)
        calls = []
        hooks = [b.ffn.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1)) for b in reasoner.transformer.blocks]
        cfg = OptimConfig(grad_mode=mode, k_frames=8, decoder="vae")
        loss, _ = reward_step(reasoner, teacher, cond, reward, cfg)
        forward_calls = len(calls)
        loss.backward()
        for h in hooks:
            h.remove()
        grads = {n: p.grad.clone() for n, p in reasoner.transformer.named_parameters() if "lora_" in n}
        runs[ckpt] = (loss.item(), grads, forward_calls, len(calls))
        detach_lora(reasoner)
    (l0, g0, fwd0, all0), (l1, g1, fwd1, all1) = runs[False], runs[True]
    blocks = len(reasoner.transformer.blocks)
    trained = differentiated_calls(mode, 4, Guidance())
    assert fwd0 == fwd1 and fwd0 % blocks == 0 and all0 == fwd0, "without checkpointing the backward recomputes nothing"
    assert all1 == fwd1 + trained * blocks, "every differentiated call's blocks run once more"
    assert abs(l0 - l1) < 1e-6 and g0.keys() == g1.keys()
    assert all(torch.allclose(g0[k], g1[k], atol=1e-8, rtol=1e-5) for k in g0) and any(g.abs().sum() > 0 for g in g0.values())


def test_an_unset_learning_rate_is_the_reasoner_folders_recommendation_else_the_papers(models, bench, tmp_path):
    """``optim_defaults.json`` travels with the Reasoner (the zoo's 1e-2); a folder without one (a
    real checkpoint) gets the paper's 5e-5; a learning rate the experiment sets always wins."""
    zoo_dir = models[0]
    assert json.loads((zoo_dir / OPTIM_DEFAULTS_FILE).read_text())["lr"] == 1e-2
    real_dir, real_sur = build_micro_reasoner(bench, tmp_path, layout="wan22_5b")
    assert not (real_dir / OPTIM_DEFAULTS_FILE).exists()
    assert resolve_optim(OptimConfig(), zoo_dir).lr == 1e-2 and resolve_optim(OptimConfig(), real_dir).lr == PAPER_LR == 5e-5
    assert resolve_optim(OptimConfig(lr=3e-3), zoo_dir).lr == resolve_optim(OptimConfig(lr=3e-3), real_dir).lr == 3e-3
    assert ReasonerAdapter.from_paths(real_dir, real_sur, device="cpu").default_lr == PAPER_LR
    # what the commands print before they start
    assert learning_rate_source(OptimConfig(), zoo_dir) == f"0.01 (from {zoo_dir / OPTIM_DEFAULTS_FILE})"
    assert learning_rate_source(OptimConfig(), real_dir) == f"5e-05 (the paper's: {real_dir} has no {OPTIM_DEFAULTS_FILE})"
    assert learning_rate_source(OptimConfig(lr=3e-3), real_dir) == "0.003 (set by the experiment)"
    # the optimiser uses it: one update with lr unset equals one with the folder's lr set, not the paper's
    zoo = ReasonerAdapter.from_paths(zoo_dir, models[1], device="cpu")
    assert zoo.default_lr == 1e-2
    teacher = load_teacher(models[2]["qwen2_5_vl"])
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    cond = zoo.prepare(first, inst.prompt, seed=7, n_frames=inst.metadata["n_frames"])
    reward = compile_reward(teacher, RULES, inst.metadata["n_frames"], first.shape[:2], k_frames=8, lam=0.5)
    states = {}
    for lr in (None, 1e-2, 5e-5):
        optimise_item(zoo, teacher, cond, reward, OptimConfig(lr=lr, max_steps=1, early_stop=False, k_frames=8))
        states[lr] = lora_state(zoo)
        detach_lora(zoo)
    assert all(torch.equal(states[None][k], states[1e-2][k]) for k in states[None])
    assert not all(torch.equal(states[None][k], states[5e-5][k]) for k in states[None])
    # a bad file names itself and the field
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / OPTIM_DEFAULTS_FILE).write_text('{"lr": -1}')
    with pytest.raises(InputError, match="optim_defaults.json:lr"):
        resolve_optim(OptimConfig(), bad)
    (bad / OPTIM_DEFAULTS_FILE).write_text('{"learning_rate": 0.01}')
    with pytest.raises(InputError, match="optim_defaults.json:lr: Field required; and 1 more"):
        resolve_optim(OptimConfig(), bad)


def test_the_gpus_precision_on_the_cpu_keeps_the_lora_in_float32_and_the_method_intact(models, bench, tmp_path):
    """``precision="bf16"`` (the default on CUDA, forced here on the CPU, where it runs under CPU
    autocast): frozen bfloat16 weights except what their classes keep in float32, a float32 LoRA
    with gradients in every mode, an optimisation that changes the video, an adapter that reloads
    to it, GRPO, and a vanilla video within a level or so of the float32 one."""
    from core.method.grpo import GrpoConfig, optimise_item_grpo

    teacher = load_teacher(models[2]["qwen2_5_vl"])
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    fp32 = ReasonerAdapter.from_paths(models[0], models[1], device="cpu")
    bf16 = ReasonerAdapter.from_paths(models[0], models[1], device="cpu", precision="bf16")
    assert fp32.autocast_dtype is None and bf16.autocast_dtype == torch.bfloat16
    # loaded as the libraries load bfloat16: diffusers keeps the transformer's _keep_in_fp32_modules in
    # float32; transformers keeps T5's `wo` in float32 only for float16, so the text encoder is all bfloat16
    keep = set(bf16.transformer._keep_in_fp32_modules)
    dtypes = {n: p.dtype for n, p in bf16.transformer.named_parameters()}
    assert all(d == (torch.float32 if keep & set(n.split(".")) else torch.bfloat16) for n, d in dtypes.items())
    assert torch.bfloat16 in dtypes.values()
    assert any(p.dtype == torch.float32 for n, p in bf16.transformer.named_parameters() if "norm" in n)
    assert {p.dtype for p in bf16.pipe.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.pipe.vae.parameters()} == {p.dtype for p in bf16.surrogate.parameters()} == {torch.float32}
    n = inst.metadata["n_frames"]
    cond, cond32 = bf16.prepare(first, inst.prompt, seed=7, n_frames=n), fp32.prepare(first, inst.prompt, seed=7, n_frames=n)
    reward = compile_reward(teacher, RULES, n, first.shape[:2], k_frames=8, lam=0.5)
    base = bf16.generate(cond, steps=4)
    assert np.abs(base.astype(float) - fp32.generate(cond32, steps=4)).mean() < 1.0  # in 0..255 levels
    for mode in GradMode:
        params = attach_lora(bf16, OptimConfig().lora, seed=0)
        assert {p.dtype for p in params} == {torch.float32}
        loss, _ = reward_step(bf16, teacher, cond, reward, OptimConfig(grad_mode=mode, k_frames=8))
        loss.backward()
        assert torch.isfinite(loss) and sum(float(p.grad.abs().sum()) for p in params) > 0, mode
        detach_lora(bf16)
    res = optimise_item(bf16, teacher, cond, reward, OptimConfig(lr=5e-2, max_steps=3, early_stop=False, k_frames=8))
    adapted = bf16.generate(cond, steps=4)
    assert res.steps_run == 3 and not np.array_equal(adapted, base)
    save_adapter(bf16, tmp_path / "adapter", OptimConfig().lora)
    detach_lora(bf16)
    load_adapter(bf16, tmp_path / "adapter")
    assert np.array_equal(bf16.generate(cond, steps=4), adapted)
    detach_lora(bf16)
    grpo = optimise_item_grpo(bf16, teacher, cond, reward, OptimConfig(k_frames=8, max_steps=1, early_stop=False),
                              GrpoConfig(steps=1, group=2))
    assert all(math.isfinite(x) for x in grpo.trace[0].group_losses)
    detach_lora(bf16)


def test_teacher_placement_defaults_to_the_gpu_in_bfloat16_and_the_cpu_in_float32(models, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert teacher_placement() == ("cuda", "bfloat16") and teacher_placement("auto") == ("auto", "bfloat16")
    assert teacher_placement("cuda:1", "float32") == ("cuda:1", "float32") and teacher_placement("cpu") == ("cpu", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert teacher_placement() == ("cpu", None) and teacher_placement("auto") == ("auto", None)
    teacher = load_teacher(models[2]["qwen2_5_vl"])  # without a GPU: the CPU, float32, no checkpointing
    assert teacher.model.device.type == "cpu" and teacher.model.dtype == torch.float32
    assert not any(getattr(m, "gradient_checkpointing", False) for m in teacher.model.modules())


@pytest.mark.parametrize("mode", [GradMode.LAST_STEP, GradMode.FULL])
def test_a_multistep_solver_folder_takes_gradients_through_its_own_steps(models, bench, mode):
    """Rollouts step the folder's scheduler (UniPC for Wan2.2): differentiable, and the video is pipe(...)'s."""
    from diffusers import UniPCMultistepScheduler
    from PIL import Image

    pipe = load_reasoner(models[0])
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    solver = ReasonerAdapter(WanImageToVideoPipeline(**pipe.components | {"scheduler": unipc, "expand_timesteps": True}), device="cpu")
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    cond = solver.prepare(first, inst.prompt, seed=7, n_frames=17)
    attach_lora(solver, OptimConfig().lora, seed=0)
    with torch.no_grad():  # a non-zero LoRA B, so that gradients reach A as well
        for n, p in solver.transformer.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.02)
    solver.decode(solver.predict_clean(cond, 3, mode), "vae").mean().backward()
    grads = [p.grad for n, p in solver.transformer.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    detach_lora(solver)
    theirs = solver.pipe(image=Image.fromarray(first), prompt=inst.prompt, height=64, width=64, num_frames=17,
                         num_inference_steps=3, guidance_scale=1.0, latents=cond.noise, output_type="np").frames[0]
    assert np.abs(solver.generate(cond, 3).astype(float) / 255 - theirs).max() < 2 / 255


def test_a_folder_with_a_first_frame_prior_starts_every_item_there_and_samples_as_the_pipeline_from_it(models, bench, tmp_path):
    """flow_source.json (the zoo writes it when trained with a prior) moves each item's start to
    eps + p * first; the final video is then pipe(..., latents=that start)'s."""
    import shutil

    from PIL import Image

    folder = tmp_path / "reasoner"
    shutil.copytree(models[0], folder)
    (folder / "flow_source.json").write_text(json.dumps({"first_frame_prior": 1.0}))
    plain, primed = (ReasonerAdapter.from_paths(f, None, device="cpu") for f in (models[0], folder))
    assert (plain.first_frame_prior, primed.first_frame_prior) == (0.0, 1.0)
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    a, b = (r.prepare(first, inst.prompt, seed=7, n_frames=17) for r in (plain, primed))
    assert torch.allclose(b.noise - a.noise, b.condition.latents.expand_as(b.noise), atol=1e-6)
    theirs = primed.pipe(image=Image.fromarray(first), prompt=inst.prompt, height=64, width=64, num_frames=17,
                         num_inference_steps=3, guidance_scale=1.0, latents=b.noise, output_type="np").frames[0]
    ours = primed.generate(b, 3)
    assert np.abs(ours.astype(float) / 255 - theirs).max() < 2 / 255
    assert np.abs(ours.astype(int) - plain.generate(a, 3).astype(int)).max() > 10  # the start matters

    (folder / "flow_source.json").write_text(json.dumps({"first_frame_prior": -1}))
    with pytest.raises(InputError, match=r"flow_source.json.*first_frame_prior"):
        ReasonerAdapter.from_paths(folder, None, device="cpu")


def test_the_grpo_sde_with_a_first_frame_prior_is_the_plain_sde_shifted_and_keeps_the_flows_marginals():
    """With the source eps + m, y = z - s m is a flow from pure noise: each step is Flow-GRPO's on y,
    shifted back. Checked on the exact velocity of a one-point data distribution, whose marginal at
    level s is (1 - s) x0 + s (eps + m)."""
    from core.method.grpo import SdeSchedule

    sigmas = [1.0, 0.75, 0.5, 0.25, 0.0]
    schedule = SdeSchedule(torch.tensor([1000.0, 750.0, 500.0, 250.0]), sigmas, [0, 1, 2])
    x0, m = 0.5, 2.0
    start = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    z, y = start + m, start.clone()
    prior = torch.full_like(z, m)
    draws = torch.Generator().manual_seed(1)
    def eps_mean(state: torch.Tensor, level: float) -> float:
        return float(((state - (1 - level) * x0) / level - m).mean())

    for i, s in enumerate(sigmas[:-1]):
        mean, std = schedule.transition(i, z, (z - x0) / s, 0.7, prior)
        plain_mean, plain_std = schedule.transition(i, y, (y - x0) / s, 0.7)
        unshifted_mean, _ = schedule.transition(i, z, (z - x0) / s, 0.7)
        assert std == plain_std and torch.allclose(mean - sigmas[i + 1] * m, plain_mean, atol=1e-5)
        step = torch.randn(z.shape, generator=draws)
        z, y, unshifted = mean + std * step, plain_mean + std * step, unshifted_mean + std * step
        if sigmas[i + 1] > 0:  # the source's part of z keeps mean m; a step without the shift drifts towards 0
            assert abs(eps_mean(z, sigmas[i + 1])) < 0.02 and eps_mean(unshifted, sigmas[i + 1]) < -0.5
    assert torch.allclose(z, torch.full_like(z, x0), atol=1e-5)  # the last step is deterministic and lands on x0


def test_guidance_is_the_pipelines_and_costs_two_calls_per_velocity(reasoner, bench):
    """Classifier-free guidance (undistilled Reasoners): pipe(guidance_scale=...)'s video, twice the calls."""
    from PIL import Image

    from core.method.cost import CostMeter

    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    cond = reasoner.prepare(first, inst.prompt, seed=7, n_frames=17)
    g = Guidance(scale=4.0, negative_prompt="a blurry still image")
    reasoner.meter = CostMeter()
    ours = reasoner.generate(cond, 3, g)
    assert reasoner.meter.take().counts["reasoner_forward"] == 6
    theirs = reasoner.pipe(image=Image.fromarray(first), prompt=inst.prompt, negative_prompt=g.negative_prompt,
                           guidance_scale=4.0, height=64, width=64, num_frames=17, num_inference_steps=3,
                           latents=cond.noise, output_type="np").frames[0]
    assert np.abs(ours.astype(float) / 255 - theirs).max() < 2 / 255
    assert np.abs(ours.astype(float) - reasoner.generate(cond, 3)).max() > 10  # guidance changes the video
    attach_lora(reasoner, OptimConfig().lora, seed=0)
    reasoner.decode(reasoner.predict_clean(cond, 3, GradMode.FIRST_STEP, g), "vae").mean().backward()
    assert sum(float(p.grad.abs().sum()) for n, p in reasoner.transformer.named_parameters() if "lora_B" in n) > 0
    assert differentiated_calls(GradMode.FIRST_STEP, 3, g) == 2
    detach_lora(reasoner)


def test_a_two_expert_reasoner_samples_like_its_pipeline_and_its_lora_sits_on_the_high_noise_expert(models, bench):
    """Wan2.2-I2V-A14B's layout: transformer above boundary_ratio * 1000, transformer_2 below."""
    import copy

    from PIL import Image

    from core.models.surrogate import SurrogateDecoder

    pipe = load_reasoner(models[0])
    low = copy.deepcopy(pipe.transformer)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in low.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    parts = {k: v for k, v in pipe.components.items() if k != "transformer_2"}
    two = ReasonerAdapter(WanImageToVideoPipeline(**parts, transformer_2=low, boundary_ratio=0.6, expand_timesteps=True),
                          SurrogateDecoder.from_pretrained(models[1]), device="cpu")
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    cond = two.prepare(first, inst.prompt, seed=7, n_frames=17)
    ours = two.generate(cond, 4)
    theirs = two.pipe(image=Image.fromarray(first), prompt=inst.prompt, height=64, width=64, num_frames=17,
                      num_inference_steps=4, guidance_scale=1.0, latents=cond.noise, output_type="np").frames[0]
    assert np.abs(ours.astype(float) / 255 - theirs).max() < 2 / 255
    one = ReasonerAdapter(load_reasoner(models[0]), device="cpu")
    assert np.abs(ours.astype(float) - one.generate(one.prepare(first, inst.prompt, 7, 17), 4)).max() > 10  # both ran
    # guidance_scale_2: the low-noise expert's own scale, as pipe(guidance_scale=, guidance_scale_2=) applies it
    g2 = Guidance(scale=3.0, scale_2=1.0, negative_prompt="a blurry still image")
    ours_g = two.generate(cond, 4, g2)
    theirs_g = two.pipe(image=Image.fromarray(first), prompt=inst.prompt, negative_prompt=g2.negative_prompt, height=64,
                        width=64, num_frames=17, num_inference_steps=4, guidance_scale=3.0, guidance_scale_2=1.0,
                        latents=cond.noise, output_type="np").frames[0]
    assert np.abs(ours_g.astype(float) / 255 - theirs_g).max() < 2 / 255
    one_scale = g2.model_copy(update={"scale_2": None})
    assert float((two.sample(cond, 4, g2) - two.sample(cond, 4, one_scale)).abs().max()) > 0.01  # low-noise steps changed
    assert torch.equal(two.sample(cond, 4, one_scale), two.sample(cond, 4, g2.model_copy(update={"scale_2": 3.0})))
    with pytest.raises(InputError, match="guidance.scale_2"):
        one.generate(one.prepare(first, inst.prompt, 7, 17), 4, g2)  # a single transformer has no second expert
    attach_lora(two, OptimConfig().lora, seed=0)
    for mode in (GradMode.FIRST_STEP, GradMode.FULL):
        two.decode(two.predict_clean(cond, 4, mode)).mean().backward()
        assert sum(float(p.grad.abs().sum()) for n, p in two.transformer.named_parameters() if "lora_B" in n) > 0
        assert not any("lora_" in n for n, _ in low.named_parameters())  # the low-noise expert has none
        two.transformer.zero_grad()
    with pytest.raises(InputError, match="low-noise expert"):
        two.predict_clean(cond, 4, GradMode.LAST_STEP)
    detach_lora(two)


def test_loss_decreases_and_early_stop_triggers_at_tau(reasoner, teacher, item):
    cond, reward = item
    cfg = OptimConfig(lr=3e-2, max_steps=8, early_stop=False, k_frames=8)
    res = optimise_item(reasoner, teacher, cond, reward, cfg)
    losses = [s.loss for s in res.trace]
    assert res.stop_reason == "max_steps" and res.steps_run == 8 and len(losses) == 9
    assert losses[-1] < losses[0] - 1e-3
    # the first step whose loss is <= tau is where the early-stopping run must stop
    tau = losses[4]
    first_hit = next(i for i, v in enumerate(losses) if v <= tau)
    res2 = optimise_item(reasoner, teacher, cond, reward, cfg.model_copy(update={"early_stop": True, "tau": tau}))
    assert res2.stop_reason == "tau" and res2.steps_run == first_hit
    assert [s.loss for s in res2.trace] == pytest.approx(losses[: first_hit + 1], rel=1e-4)
    detach_lora(reasoner)


def poison_decode(monkeypatch, reasoner, at_call: int):
    """Make the ``at_call``-th decode return NaN (a diverging step); returns the real decode to restore."""
    calls = {"n": 0}
    real_decode = reasoner.decode

    def poisoned(latents, decoder):
        calls["n"] += 1
        out = real_decode(latents, decoder)
        return out * float("nan") if calls["n"] == at_call else out

    monkeypatch.setattr(reasoner, "decode", poisoned)
    return real_decode


def test_nan_guard_keeps_the_best_adapter(reasoner, teacher, item, monkeypatch):
    cond, reward = item
    cfg = OptimConfig(lr=3e-2, max_steps=10, early_stop=False, k_frames=8)
    real_decode = poison_decode(monkeypatch, reasoner, at_call=5)
    res = optimise_item(reasoner, teacher, cond, reward, cfg)
    assert res.stop_reason == "nonfinite_loss" and len(res.trace) == 5 and math.isnan(res.trace[-1].loss)
    finite = [s.loss for s in res.trace[:-1]]
    assert res.best_loss == pytest.approx(min(finite)) and res.steps_run == res.best_step
    monkeypatch.setattr(reasoner, "decode", real_decode)
    with torch.no_grad():
        loss, _ = reward_step(reasoner, teacher, cond, reward, cfg)
    assert float(loss) == pytest.approx(res.best_loss, rel=1e-4)  # the restored adapter is the best one
    detach_lora(reasoner)


def test_one_shared_adapter_trains_on_every_items_reward_in_turn(reasoner, teacher, bench, monkeypatch):
    """The shared ablation: each epoch visits every item once, the one LoRA moves and lowers the items' mean loss;
    a non-finite loss stops training and restores the adapter of the last finite update."""
    from core.method.shared import shared_steps, train_shared_adapter

    items = []
    for k, inst in enumerate(bench.instances[:3]):
        first = read_image(inst.first_frame)
        cond = reasoner.prepare(first, inst.prompt, seed=11 + k, n_frames=inst.metadata["n_frames"])
        items.append((cond, compile_reward(teacher, RULES, inst.metadata["n_frames"], first.shape[:2], k_frames=8, lam=0.5)))
    cfg = OptimConfig(lr=5e-2, max_steps=3, k_frames=8)

    def mean_loss() -> float:
        with torch.no_grad():
            return float(np.mean([float(reward_step(reasoner, teacher, c, r, cfg)[0]) for c, r in items]))

    before = mean_loss()
    assert shared_steps(cfg, len(items), None) == 9 and shared_steps(cfg, len(items), 5) == 5
    res = train_shared_adapter(reasoner, teacher, items, cfg, seed=3)
    assert res.stop_reason == "steps" and res.steps_run == 9 and res.items == 3 and len(res.trace) == 9
    for epoch in range(3):  # a seeded shuffle per epoch: every item once
        assert sorted(t.item for t in res.trace[3 * epoch : 3 * epoch + 3]) == [0, 1, 2]
    assert [t.item for t in train_shared_adapter(reasoner, teacher, items, cfg, seed=3).trace] == [t.item for t in res.trace]
    assert any(float(v.abs().sum()) > 0 for k, v in lora_state(reasoner).items() if "lora_B" in k)
    assert mean_loss() < before

    real_decode = poison_decode(monkeypatch, reasoner, at_call=4)
    broken = train_shared_adapter(reasoner, teacher, items, cfg, seed=3)
    assert broken.stop_reason == "nonfinite_loss" and broken.steps_run == 3 and math.isnan(broken.trace[-1].loss)
    monkeypatch.setattr(reasoner, "decode", real_decode)
    kept = lora_state(reasoner)
    attach_lora(reasoner, cfg.lora, cfg.lora_seed)
    optimiser = torch.optim.AdamW(_lora_params(reasoner.transformer), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for t in broken.trace[:3]:  # replaying the three finite updates gives the kept adapter
        cond, reward = items[t.item]
        loss, _ = reward_step(reasoner, teacher, cond, reward, cfg)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(_lora_params(reasoner.transformer), cfg.grad_clip)
        optimiser.step()
    replayed = lora_state(reasoner)
    assert all(torch.allclose(kept[k], replayed[k], atol=1e-6) for k in kept)
    detach_lora(reasoner)
    with pytest.raises(InputError, match="no items"):
        train_shared_adapter(reasoner, teacher, [], cfg)
    from core.method.compare import compare
    from core.method.methods import Method, MethodConfig

    with pytest.raises(InputError, match="methods: shared.*vlmt evaluate"):  # it needs every item first: the pipeline
        compare(reasoner, teacher, bench.instances[:1], [Method.VANILLA, Method.SHARED], MethodConfig())


def test_a_shared_cost_is_split_evenly_over_the_items():
    from core.method.cost import CostRecord

    total = CostRecord(seconds={"optimise": 90.0, "prepare": 3.0}, counts={"reasoner_backward": 120, "teacher_backward": 121},
                       peak_memory_mib=512.0)
    one = total.share(3)
    assert one.seconds == {"optimise": 30.0, "prepare": 1.0} and one.counts == {"reasoner_backward": 40, "teacher_backward": 40}
    assert one.peak_memory_mib == 512.0  # the peak is not divided: every item needed it
    with pytest.raises(ValueError, match="at least one item"):
        total.share(0)


def test_saved_adapter_reloads_with_diffusers_and_reproduces_the_video(reasoner, teacher, item, tmp_path):
    cond, reward = item
    base = reasoner.generate(cond, steps=4)
    optimise_item(reasoner, teacher, cond, reward, OptimConfig(lr=5e-2, max_steps=4, early_stop=False, k_frames=8))
    adapted = reasoner.generate(cond, steps=4)
    assert not np.array_equal(adapted, base)
    state = lora_state(reasoner)
    save_adapter(reasoner, tmp_path / "adapter", OptimConfig().lora)
    detach_lora(reasoner)
    assert np.array_equal(reasoner.generate(cond, steps=4), base)  # detaching restores the frozen Reasoner
    load_adapter(reasoner, tmp_path / "adapter")
    assert np.array_equal(reasoner.generate(cond, steps=4), adapted)
    reloaded = lora_state(reasoner)
    assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)
    detach_lora(reasoner)



def test_final_video_stage_reuses_the_attached_adapter_only_while_it_is_the_saved_one(reasoner, teacher, item, bench,
                                                                                     tmp_path, monkeypatch):
    from core.pipeline.stages import generate_stage, load_frames, optimise_stage

    inst, (_, reward) = bench.instances[0], item
    reward_json = tmp_path / "reward.json"
    reward_json.write_text(reward.model_dump_json())
    loads = []
    real_load = reasoner.pipe.load_lora_weights
    monkeypatch.setattr(reasoner.pipe, "load_lora_weights", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    cfg = OptimConfig(lr=5e-2, max_steps=3, early_stop=False, k_frames=8)
    opt = optimise_stage(reasoner, teacher, inst, reward_json, cfg, seed=7, out_dir=tmp_path / "opt")
    adapted = load_frames(generate_stage(reasoner, inst, 7, 4, tmp_path / "v1", adapter=opt.adapter).npz)
    assert loads == []  # the optimise stage left exactly this adapter attached
    base = load_frames(generate_stage(reasoner, inst, 7, 4, tmp_path / "v0").npz)
    assert not np.array_equal(base, adapted)  # no adapter asked for: none attached
    again = load_frames(generate_stage(reasoner, inst, 7, 4, tmp_path / "v2", adapter=opt.adapter).npz)
    assert len(loads) == 1 and np.array_equal(again, adapted)  # reloaded from the file: the same video
    detach_lora(reasoner)


def test_prepare_hands_back_the_same_condition_for_the_same_item(reasoner, bench):
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    n = inst.metadata["n_frames"]
    cond = reasoner.prepare(first, inst.prompt, seed=3, n_frames=n)
    assert reasoner.prepare(first.copy(), inst.prompt, seed=3, n_frames=n) is cond
    other = reasoner.prepare(first, inst.prompt, seed=4, n_frames=n)
    assert other is not cond and not torch.equal(other.noise, cond.noise) and torch.equal(other.condition.latents, cond.condition.latents)
    assert not torch.equal(reasoner.prepare(first, inst.prompt + " Quickly.", seed=3, n_frames=n).text, cond.text)

def test_compiled_ids_equal_the_processor_batch_and_judge_matches(teacher, bench):
    inst = bench.instances[0]
    video = (np.random.default_rng(0).random((17, 64, 64, 3)) * 255).astype(np.uint8)
    reward = compile_reward(teacher, RULES, 17, (64, 64), k_frames=24)
    assert reward.frame_indices == list(range(17))  # K is capped by the video length
    for q in reward.queries:
        batch = video_qa_batch(teacher, [frames_to_tensor(video)], [q.text])
        prompt_ids = batch.input_ids[0, : batch.answer_pos[0] + 1].tolist()
        assert q.input_ids[: q.answer_start] == prompt_ids
    from core.models.teacher import p_yes

    p = judge(teacher, reward, video)
    assert p == pytest.approx([p_yes(teacher, video, q.text) for q in reward.queries], rel=1e-4)
    assert reward.weights == [0.5, 0.25, 0.25]
    del inst


def test_frames_for_teacher_caps_k_and_maps_to_unit_range():
    video = torch.linspace(-1, 1, 3 * 5 * 2 * 2).view(3, 5, 2, 2)
    frames, idx = frames_for_teacher(video, 24)
    assert idx == [0, 1, 2, 3, 4] and frames.shape == (5, 3, 2, 2)
    assert float(frames.min()) == 0.0 and float(frames.max()) == 1.0
    _, idx3 = frames_for_teacher(video, 3)
    assert idx3 == [0, 2, 4]


def test_malformed_rules_are_repaired_or_fall_back(teacher, bench, monkeypatch):
    fixed, fixes = repair_rules('Sure! {"goal": "Does the ball reach the goal", "process": ["Does the ball stay intact?",'
                                ' "Does the ball stay intact?", "Does the ball reach the goal?",],} Hope this helps')
    assert fixed is not None and fixed.goal == "Does the ball reach the goal?"
    assert fixed.process == ["Does the ball stay intact?"] and len(fixes) == 2
    assert repair_rules("no json here")[0] is None
    assert repair_rules('{"goal": "Does it work?", "process": []}')[0] is None

    replies = iter(['{"goal": "x"}', "garbage", "more garbage"])
    monkeypatch.setattr("core.method.teacher.generate_queries", lambda *a, **k: next(replies))
    inst = bench.instances[0]
    rules = extract_rules(teacher, read_image(inst.first_frame), inst.prompt, max_attempts=3)
    assert rules.source == "fallback" and rules.attempts == 3 and len(rules.replies) == 3
    assert inst.prompt.rstrip(".") in rules.goal and rules.process == [GENERIC_PROCESS_QUERY]
    assert rules.problems  # why each reply was rejected is recorded

    replies2 = iter(['{"goal": "Does the agent reach the goal?", "process": ["Does the agent avoid walls?"]}'])
    monkeypatch.setattr("core.method.teacher.generate_queries", lambda *a, **k: next(replies2))
    ok = extract_rules(teacher, read_image(inst.first_frame), inst.prompt)
    assert ok.source == "teacher" and ok.attempts == 1


def test_generic_queries_skip_the_teacher_and_are_recorded(reasoner, teacher, bench, monkeypatch):
    """The generic-queries ablation: the instruction-derived goal plus the generic process query, no Teacher call;
    every rule-using method then works from them, and the set's source is recorded."""
    from core.method.compare import compare
    from core.method.methods import Method, MethodConfig

    def no_teacher(*_a, **_k):
        raise AssertionError("the generic set must not ask the Teacher")

    monkeypatch.setattr("core.method.teacher.generate_queries", no_teacher)
    inst = bench.instances[0]
    rules = extract_rules(teacher, read_image(inst.first_frame), inst.prompt, queries="generic")
    assert rules.source == "generic" and rules.attempts == 0 and not rules.replies
    assert inst.prompt.rstrip(".") in rules.goal and rules.process == [GENERIC_PROCESS_QUERY]
    with pytest.raises(InputError, match="queries.*'teacher' or 'generic'"):
        extract_rules(teacher, read_image(inst.first_frame), inst.prompt, queries="specific")

    (pe,) = compare(reasoner, teacher, [inst], [Method.PE], MethodConfig(queries="generic"), n=1)
    assert pe.error is None and pe.rules_source == "generic"
    assert "teacher_generate" not in pe.cost.counts and len(pe.judge_p_yes) == 2  # the goal and one process query
    # unset, the knob leaves the config's dump (and so experiment ids made before it existed) as it was
    assert "queries" not in MethodConfig().model_dump() and MethodConfig(queries="generic").model_dump()["queries"] == "generic"


def test_unsupported_inputs_fail_clearly(models, teacher):
    from diffusers import FlowMatchEulerDiscreteScheduler

    with pytest.raises(InputError, match="WanImageToVideoPipeline"):
        ReasonerAdapter(FlowMatchEulerDiscreteScheduler())
    pipe = load_reasoner(models[0])
    parts = {k: v for k, v in pipe.components.items() if k != "transformer_2"}
    with pytest.raises(InputError, match="transformer_2 and boundary_ratio"):
        ReasonerAdapter(WanImageToVideoPipeline(**parts, transformer_2=pipe.transformer, expand_timesteps=True))
    with pytest.raises(InputError, match="in_channels.*expand_timesteps=False"):
        ReasonerAdapter(WanImageToVideoPipeline(**parts | {"expand_timesteps": False}))
    with pytest.raises(InputError, match="lam"):
        compile_reward(teacher, RULES, 17, (64, 64), lam=1.5)
    reasoner = ReasonerAdapter.from_paths(models[0], None, device="cpu")
    with pytest.raises(InputError, match="surrogate"):
        reasoner.decode(torch.zeros(1, 4, 5, 16, 16))
    from core.models.surrogate import SurrogateDecoder

    other = models[1].parent / "surrogate-z8"
    SurrogateDecoder(z_dim=8, scale_factor_spatial=4, scale_factor_temporal=4, hidden=8, num_res_blocks=1).save_pretrained(other)
    with pytest.raises(InputError, match=r"surrogate-z8: config.json.*\[8, 4, 4\].*\[4, 4, 4\].*vlmt zoo surrogate"):
        ReasonerAdapter.from_paths(models[0], other, device="cpu")


def test_qwen3_video_prompt_equals_the_library_processor_and_folder_loads(models):
    """Qwen3-VL's per-patch timestamps: our layout is the real ``Qwen3VLProcessor.replace_video_token``'s."""
    from types import SimpleNamespace

    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    folder = models[2]["qwen3_vl"]
    assert AutoProcessor.from_pretrained(folder, local_files_only=True).tokenizer is not None
    assert isinstance(Qwen3VLForConditionalGeneration.from_pretrained(folder, local_files_only=True),
                      Qwen3VLForConditionalGeneration)
    teacher = load_teacher(folder)
    assert teacher.family == "qwen3_vl" and teacher.video_kwargs(2) == {}
    frames = torch.rand(9, 3, 64, 64)
    indices = [0, 2, 4, 6, 8, 10, 12, 14, 16]
    from core.models.teacher import video_to_pixels

    _, grid = video_to_pixels(frames, teacher.vision)
    lib = SimpleNamespace(video_processor=SimpleNamespace(merge_size=teacher.vision.merge_size,
                                                          temporal_patch_size=teacher.vision.temporal_patch_size),
                          vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>",
                          video_token="<|video_pad|>")
    lib._calculate_timestamps = lambda idx, fps, merge: Qwen3VLProcessor._calculate_timestamps(lib, idx, fps, merge)
    inputs = {"video_grid_thw": grid, "video_metadata": [SimpleNamespace(fps=8.0, frames_indices=list(indices))]}
    assert teacher.video_text(grid, indices, fps=8.0) == Qwen3VLProcessor.replace_video_token(lib, inputs, 0)


def test_a_tokenizer_that_splits_yes_differently_in_context_is_refused(teacher):
    """The reward reads exactly the answer's tokens; if "Yes" alone and in the turn differ, say so."""
    import dataclasses

    class SplitsYes:
        def __init__(self, tok):
            self._tok = tok

        def __getattr__(self, name):
            return getattr(self._tok, name)

        def __call__(self, text, **kw):
            out = self._tok(text, **kw)
            if text == "Yes":
                out["input_ids"] = self._tok("Ye", **kw)["input_ids"] + self._tok("s", **kw)["input_ids"]
            return out

    broken = dataclasses.replace(teacher, tokenizer=SplitsYes(teacher.tokenizer))
    with pytest.raises(InputError, match="tokenises 'Yes'"):
        compile_reward(broken, RULES, 17, (64, 64), k_frames=8)


def test_summaries_carry_the_paired_difference_from_vanilla():
    """Score minus vanilla's on the same items: mean, family-clustered error and 95% interval,
    wins/ties/losses; items either side failed are left out."""
    from core.method.compare import ItemResult, summarise_methods

    vanilla = [0.1, 0.2, 0.3, 0.4, 0.5, 0.2]
    teacher = [0.3, 0.2, 0.6, 0.4, 0.9, 0.1]
    families = ["a", "a", "b", "b", "c", "c"]

    def result(method: str, k: int, score: float, error: str | None = None) -> ItemResult:
        return ItemResult(instance_id=f"i{k}", family=families[k % 6], split="ID", faculty="x", method=method, seed=k,
                          score=score, error=error)

    results = ([result("vanilla", k, v) for k, v in enumerate(vanilla)]
               + [result("teacher", k, t) for k, t in enumerate(teacher)]
               + [result("teacher", 9, 0.0, error="boom"), result("vanilla", 8, 0.7)])  # neither pairs
    summary = summarise_methods(results)
    d = summary["teacher"].vs_vanilla
    diffs = np.array(teacher) - np.array(vanilla)
    resid = diffs - diffs.mean()
    # CR1 by hand: per-family residual sums (a: 0.2-m + 0-m, ...), G/(G-1), over n; t(0.975, 2) = 4.303
    sums = [resid[0] + resid[1], resid[2] + resid[3], resid[4] + resid[5]]
    se = np.sqrt(3 / 2 * sum(x**2 for x in sums)) / 6
    assert d.baseline == "vanilla" and d.n == 6 and d.clusters == 3
    assert d.mean == pytest.approx(diffs.mean()) and d.std_error == pytest.approx(se)
    assert (d.ci95_low, d.ci95_high) == (pytest.approx(diffs.mean() - 4.3027 * se, abs=1e-4),
                                         pytest.approx(diffs.mean() + 4.3027 * se, abs=1e-4))
    assert (d.wins, d.ties, d.losses) == (3, 2, 1)
    assert summary["vanilla"].vs_vanilla is None


def test_clustered_interval_widens_when_families_move_together():
    """Differences that share a family effect are fewer independent facts than items: the clustered
    interval is wider than the i.i.d. one, and with one family it falls back to the i.i.d. one."""
    from core.method.compare import clustered_interval

    rng = np.random.default_rng(0)
    effect = {"a": 0.3, "b": -0.2, "c": 0.1, "d": 0.0}
    groups = [g for g in effect for _ in range(10)]
    diffs = np.array([effect[g] + rng.normal(0, 0.02) for g in groups])
    se, half, g = clustered_interval(diffs, groups)
    iid = diffs.std(ddof=1) / np.sqrt(len(diffs))
    assert g == 4 and se > 2 * iid and half > 1.96 * se
    se1, half1, g1 = clustered_interval(diffs, ["x"] * len(diffs))
    assert g1 == 1 and se1 == pytest.approx(iid) and half1 == pytest.approx(2.0227 * iid, abs=1e-3)


def test_judge_fooled_rate_counts_broken_rules_the_judge_called_yes():
    """A constructed case: the judge says Yes to a rule the scorer finds broken; the rate fires, per
    method, with its change from vanilla; queries without a scorer answer count in neither."""
    from core.method.compare import ItemResult, judge_fooled_counts, summarise_methods

    assert judge_fooled_counts([0.9, 0.8, 0.2, 0.7], [False, True, False, None]) == (2, 1)

    def result(method: str, k: int, p_yes: list[float], truth: list[bool | None]) -> ItemResult:
        return ItemResult(instance_id=f"i{k}", family="f", split="ID", faculty="x", method=method, seed=k, score=0.2,
                          judge_p_yes=p_yes, judge_truth=truth)

    results = [result("vanilla", 0, [0.1, 0.9], [False, True]), result("vanilla", 1, [0.6, 0.3], [False, False]),
               result("teacher", 0, [0.9, 0.9], [False, False]), result("teacher", 1, [0.7, 0.4], [False, True]),
               ItemResult(instance_id="i2", family="f", split="ID", faculty="x", method="teacher", seed=2,
                          judge_p_yes=[0.9], judge_truth=[False], error="boom")]  # failed: counts in neither
    summary = summarise_methods(results)
    assert (summary["vanilla"].judge_broken, summary["vanilla"].judge_fooled_rate) == (3, pytest.approx(1 / 3))
    assert (summary["teacher"].judge_broken, summary["teacher"].judge_fooled_rate) == (3, pytest.approx(1.0))
    assert summary["teacher"].judge_fooled_vs_vanilla == pytest.approx(2 / 3)
    assert summary["vanilla"].judge_fooled_vs_vanilla == pytest.approx(0.0)
    # nothing broken: no rate at all rather than a 0% that could not have fired
    clean = summarise_methods([result("vanilla", 0, [0.9], [True])])
    assert clean["vanilla"].judge_fooled_rate is None


def test_auto_tpo_rounds_fits_videotpos_rounds_into_the_teacher_methods_wall_time():
    """(median teacher s - median once-per-item s) / median s per round: 10 s against 1 s once plus
    0.9 s a round (a probe of 2 rounds at 2.8 s) gives 10 rounds."""
    from core.method.compare import ItemResult, auto_tpo_rounds
    from core.method.cost import CostRecord

    def result(method: str, k: int, seconds: dict, **info) -> ItemResult:
        return ItemResult(instance_id=f"i{k}", family="f", split="ID", faculty="x", method=method, seed=k,
                          cost=CostRecord(seconds=seconds), info=info)

    results = [result("teacher", k, {"optimise": 9.0 + k % 2 * 0.0, "generate": 1.0}) for k in range(3)]
    results += [result("videotpo", k, {"prepare": 0.4, "rules": 0.6, "generate": 1.2, "judge": 0.6}, n_rounds=2)
                for k in range(3)]
    assert auto_tpo_rounds(results) == 10
    with pytest.raises(ValueError, match="VideoTPO"):
        auto_tpo_rounds([r for r in results if r.method == "teacher"])


def test_auto_n_divides_median_teacher_time_by_median_candidate_time():
    from core.method.compare import ItemResult, auto_n
    from core.method.cost import CostRecord

    def result(method: str, seconds: dict[str, float], judge: float | None = None) -> ItemResult:
        r = ItemResult(instance_id="i", family="f", split=None, faculty=None, method=method, seed=0,
                       cost=CostRecord(seconds=seconds))
        if judge is not None:
            r.info["judge_seconds"] = judge
        return r

    teacher = [result("teacher", {"optimise": 9.0, "rules": 1.0}) for _ in range(3)]
    # the first generation in a process carries torch's warm-up; a mean would give round(10 / 1.1) = 9
    vanilla = [result("vanilla", {"generate": g}, judge=0.1) for g in (2.2, 0.4, 0.4)]
    assert auto_n(teacher + vanilla) == 20
    assert auto_n([result("teacher", {"optimise": 0.1})] + vanilla) == 2  # never below 2
    with pytest.raises(ValueError, match="needs the teacher and vanilla"):
        auto_n(teacher)


def test_vlmt_compare_guidance_doubles_the_nfe(models, tmp_path):
    """`vlmt compare --guidance`: the same item, twice the transformer calls per video, the guidance recorded."""
    import json

    from typer.testing import CliRunner

    from cli.main import app

    def run(*extra: str) -> dict:
        args = ["compare", "--reasoner", str(models[0]), "--surrogate", str(models[1]), "--teacher",
                str(models[2]["qwen2_5_vl"]), "--per-family", "1", "--limit", "1", "--methods", "vanilla", "--json",
                "--out", str(tmp_path / f"records{len(extra)}.json"), *extra]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        return json.loads(r.output.strip().splitlines()[-1])

    taught = CliRunner().invoke(app, ["compare", "--reasoner", str(models[0]), "--surrogate", str(models[1]), "--teacher",
                                      str(models[2]["qwen2_5_vl"]), "--per-family", "1", "--limit", "1", "--methods",
                                      "teacher", "--max-steps", "1", "--out", str(tmp_path / "taught.json")])
    assert taught.exit_code == 0, taught.output
    assert f"learning rate: 0.01 (from {models[0] / 'optim_defaults.json'})" in " ".join(taught.output.split())
    assert json.loads((tmp_path / "taught.json").read_text())["config"]["optim"]["lr"] == 0.01  # the value used
    plain, guided = run(), run("--guidance", "3", "--negative-prompt", "static")
    assert "learning rate" not in CliRunner().invoke(app, ["compare", "--limit", "1", "--methods", "vanilla", "--reasoner",
                                                           str(models[0]), "--surrogate", str(models[1]), "--teacher",
                                                           str(models[2]["qwen2_5_vl"]), "--per-family", "1"]).output
    assert guided["vanilla"]["nfe_per_item"] == 2 * plain["vanilla"]["nfe_per_item"] == 8
    # no rules in play, so no judge: the rate is absent (null), never a 0% that could not fire
    assert "judge_fooled_rate" in plain["vanilla"] and plain["vanilla"]["judge_fooled_rate"] is None
    records = json.loads((tmp_path / "records4.json").read_text())
    assert records["config"]["optim"]["guidance"] == {"scale": 3.0, "negative_prompt": "static"}
    # with rules in play the final video is judged query by query, the scorer's answer (None off the bank) beside each
    pe = CliRunner().invoke(app, ["compare", "--reasoner", str(models[0]), "--surrogate", str(models[1]), "--teacher",
                                  str(models[2]["qwen2_5_vl"]), "--per-family", "1", "--limit", "1", "--methods", "pe",
                                  "--out", str(tmp_path / "pe.json")])
    assert pe.exit_code == 0, pe.output
    (result,) = json.loads((tmp_path / "pe.json").read_text())["results"]
    assert result["judge_p_yes"] and len(result["judge_truth"]) == len(result["judge_p_yes"])
    assert all(t is None or isinstance(t, bool) for t in result["judge_truth"])
    generic = CliRunner().invoke(app, ["compare", "--reasoner", str(models[0]), "--surrogate", str(models[1]), "--teacher",
                                       str(models[2]["qwen2_5_vl"]), "--per-family", "1", "--limit", "1", "--methods", "pe",
                                       "--queries", "generic", "--out", str(tmp_path / "generic.json")])
    assert generic.exit_code == 0, generic.output
    records = json.loads((tmp_path / "generic.json").read_text())
    assert records["config"]["queries"] == "generic" and records["results"][0]["rules_source"] == "generic"
    bad = CliRunner().invoke(app, ["compare", "--guidance", "1", "--guidance-2", "3", "--limit", "1"])
    assert bad.exit_code == 2 and "invalid options" in bad.output and "set scale > 1" in bad.output
    single = CliRunner().invoke(app, ["compare", "--reasoner", str(models[0]), "--surrogate", str(models[1]), "--teacher",
                                      str(models[2]["qwen2_5_vl"]), "--per-family", "1", "--limit", "1", "--methods",
                                      "vanilla", "--guidance", "3", "--guidance-2", "2"])
    assert single.exit_code != 0 and "guidance.scale_2" in single.output  # a single-transformer folder has no second expert


def test_the_still_reference_holds_the_first_frame_without_a_model_call(reasoner, bench):
    """`still`: every frame is the first frame; no Reasoner or Teacher call is made or charged; on the synth
    scorer it reaches no goal and keeps only the rules that really hold (no credit for motion it never made)."""
    from core.method.compare import compare, summarise_methods
    from core.method.methods import Method, MethodConfig
    from core.scoring.synth import score_synth

    results = compare(reasoner, None, bench.instances, [Method.STILL], MethodConfig(), n=1)
    assert len(results) == len(bench.instances)
    for inst, r in zip(bench.instances, results, strict=True):
        first = read_image(inst.first_frame)
        assert r.error is None and r.video.shape == (inst.metadata["n_frames"], *first.shape)
        assert (r.video == first).all()
        assert r.cost.reasoner_nfe == 0 and not r.cost.counts and set(r.cost.seconds) == {"generate"}
        scored = score_synth(inst, r.video)
        assert scored.goal == 0 and 0 < scored.process < 1 and scored.score <= 0.35 and not scored.success
        # the result carries the scorer's parts (goal, process, gate, the gated score) for goal_vs_process
        assert (r.goal, r.process, r.gate, r.gated) == (scored.goal, scored.process, scored.gate, scored.gated)
    summary = summarise_methods(results)["still"]
    assert summary.nfe_per_item == 0 and summary.teacher_calls_per_item == 0


# --------------------------------------------------------------------------- the grpo ablation

@pytest.fixture()
def grpo_item(models, bench, reasoner):
    """One item with the Qwen2.5-VL micro Teacher (GRPO needs no second family: it only reads P(Yes))."""
    teacher = load_teacher(models[2]["qwen2_5_vl"])
    inst = bench.instances[0]
    first = read_image(inst.first_frame)
    cond = reasoner.prepare(first, inst.prompt, seed=7, n_frames=inst.metadata["n_frames"])
    return teacher, cond, compile_reward(teacher, RULES, inst.metadata["n_frames"], first.shape[:2], k_frames=8, lam=0.5)


def test_the_noise_free_sde_is_the_folders_sampler_and_its_densities_are_recomputable(reasoner, grpo_item):
    from core.method.grpo import GrpoConfig, SdeSchedule, log_density, rollout

    teacher, cond, reward = grpo_item
    cfg = OptimConfig(k_frames=8)
    schedule = SdeSchedule.of(reasoner, cfg.sampler_steps)
    assert schedule.sigmas[0] == 1.0 and schedule.sigmas[-1] == 0.0 and schedule.trained == [0, 1, 2]
    quiet = rollout(reasoner, teacher, cond, reward, cfg, GrpoConfig(noise_level=1e-7), schedule, torch.Generator().manual_seed(0))
    ode = reasoner.sample(cond, cfg.sampler_steps)
    assert torch.allclose(cond.condition.finish(quiet.states[-1]), ode, atol=1e-4)

    noisy = rollout(reasoner, teacher, cond, reward, cfg, GrpoConfig(), schedule, torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy.states[-1], quiet.states[-1], atol=1e-2)  # the SDE noise makes rollouts differ
    assert sorted(noisy.old_logp) == schedule.trained and len(noisy.states) == cfg.sampler_steps + 1
    call = reasoner.velocity_fn(cond, cfg.guidance)
    for i in schedule.trained:  # the same adapter gives back the recorded density: the ratio starts at 1
        with torch.no_grad():
            mean, std = schedule.step(call, i, noisy.states[i], GrpoConfig().noise_level)
        assert std > 0 and float(log_density(noisy.states[i + 1], mean, std, cond)) == pytest.approx(float(noisy.old_logp[i]))
    with pytest.raises(InputError, match="sampler_steps.*at least 2"):
        SdeSchedule.of(reasoner, 1)


def grpo_group(reasoner, grpo_item, size: int, seed: int, perturb: bool):
    """A fresh LoRA (``perturb``: with a random non-zero B) and ``size`` seeded rollouts of the item; returns
    (condition, optimiser config, GRPO config, schedule, LoRA parameters, rollouts)."""
    from core.method.grpo import GrpoConfig, SdeSchedule, rollout

    teacher, cond, reward = grpo_item
    cfg, grpo = OptimConfig(k_frames=8, grad_clip=None), GrpoConfig(group=size)
    schedule = SdeSchedule.of(reasoner, cfg.sampler_steps)
    params = attach_lora(reasoner, cfg.lora, seed=0)
    if perturb:
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p) * 0.05)
    gen = torch.Generator().manual_seed(seed)
    return cond, cfg, grpo, schedule, params, [rollout(reasoner, teacher, cond, reward, cfg, grpo, schedule, gen)
                                               for _ in range(size)]


def test_a_grpo_update_moves_probability_towards_the_better_rollouts(reasoner, grpo_item):
    """To first order, an SGD step on the policy gradient raises sum_g A_g * log p(rollout_g): the better
    rollouts (positive advantage) gain density relative to the worse."""
    from core.method.grpo import advantages, log_density, policy_update

    # a non-zero B, so the update is not confined to B's first step
    cond, cfg, grpo, schedule, params, group = grpo_group(reasoner, grpo_item, size=4, seed=1, perturb=True)
    adv = advantages([r.loss for r in group])
    assert adv is not None and float(adv.sum()) == pytest.approx(0.0, abs=1e-5)
    assert int(torch.argmax(adv)) == int(np.argmin([r.loss for r in group]))  # the lowest loss has the best advantage

    call = reasoner.velocity_fn(cond, cfg.guidance)

    def densities() -> list[float]:
        with torch.no_grad():
            out = []
            for r in group:
                total = 0.0
                for i in schedule.trained:
                    mean, std = schedule.step(call, i, r.states[i], grpo.noise_level)
                    total += float(log_density(r.states[i + 1], mean, std, cond))
                out.append(total)
            return out

    before = densities()
    assert before == pytest.approx([sum(float(v) for v in r.old_logp.values()) for r in group], rel=1e-5)
    # lr 0 measures the gradient; then a step that moves the parameters by 1e-2 in all (small, above float noise)
    grad_norm, why = policy_update(reasoner, cond, group, cfg, grpo, schedule, params, torch.optim.SGD(params, lr=0.0))
    assert why is None and grad_norm > 0 and densities() == before
    policy_update(reasoner, cond, group, cfg, grpo, schedule, params, torch.optim.SGD(params, lr=1e-2 / grad_norm))
    change = np.array(densities()) - np.array(before)
    assert np.abs(change).max() > 1e-5
    assert float(np.dot(adv.numpy(), change)) > 0
    # a group whose rollouts all scored the same carries no signal: no update
    state = lora_state(reasoner)
    same = [type(r)(r.states, r.old_logp, 0.5, r.p_yes) for r in group]
    assert advantages([0.5] * 4) is None
    assert policy_update(reasoner, cond, same, cfg, grpo, schedule, params, torch.optim.SGD(params, lr=1.0)) == (0.0, None)
    assert all(torch.equal(state[k], v) for k, v in lora_state(reasoner).items())
    # updates_per_group reuses the group: k optimiser steps, k backward passes per transition; once the adapter has
    # moved, a transition whose ratio left [1 - c, 1 + c] in its advantage's favour contributes no gradient
    steps = []
    sgd = torch.optim.SGD(params, lr=1e-2 / grad_norm)
    sgd.register_step_post_hook(lambda *_: steps.append(1))
    reasoner.meter.take()
    policy_update(reasoner, cond, group, cfg, grpo.model_copy(update={"updates_per_group": 2}), schedule, params, sgd)
    assert len(steps) == 2 and reasoner.meter.take().counts["reasoner_backward"] == 2 * grpo.group * len(schedule.trained)
    with torch.no_grad():
        now = [{i: log_density(r.states[i + 1], *schedule.step(call, i, r.states[i], grpo.noise_level), cond)
                for i in schedule.trained} for r in group]

    def with_ratio(e: float) -> list:  # old densities such that every ratio is exp(e * sign(A))
        return [type(r)(r.states, {i: v - e * float(torch.sign(a)) for i, v in cur.items()}, r.loss, r.p_yes)
                for r, cur, a in zip(group, now, adv, strict=True)]

    clipped, _ = policy_update(reasoner, cond, with_ratio(1.0), cfg, grpo, schedule, params, torch.optim.SGD(params, lr=0.0))
    pulled, _ = policy_update(reasoner, cond, with_ratio(-1.0), cfg, grpo, schedule, params, torch.optim.SGD(params, lr=0.0))
    assert clipped == 0.0 and pulled > 0  # beyond the clip in the advantage's favour: no gradient; against it: the full one
    detach_lora(reasoner)


def test_grpos_kl_term_vanishes_at_the_fresh_adapter_and_pulls_the_policy_back_to_the_reasoner(reasoner, grpo_item):
    from core.method.grpo import (
        GrpoConfig,
        kl_to_reference,
        policy_update,
        reference_means,
    )

    # B = 0: the policy is the frozen Reasoner
    cond, cfg, grpo, schedule, params, group = grpo_group(reasoner, grpo_item, size=3, seed=2, perturb=False)
    call = reasoner.velocity_fn(cond, cfg.guidance)

    def total_kl() -> float:
        refs = reference_means(reasoner, call, schedule, group, grpo.noise_level)
        with torch.no_grad():
            out = 0.0
            for r, ref in zip(group, refs, strict=True):
                for i in schedule.trained:
                    mean, std = schedule.step(call, i, r.states[i], grpo.noise_level)
                    out += float(kl_to_reference(mean, ref[i], std, cond))
            return out

    def grads(g: GrpoConfig) -> list[torch.Tensor]:
        norm, _ = policy_update(reasoner, cond, group, cfg, g, schedule, params, torch.optim.SGD(params, lr=0.0))
        return [p.grad.clone() for p in params], norm

    assert total_kl() == 0.0
    plain, _ = grads(grpo)
    reasoner.meter.take()
    with_kl, _ = grads(grpo.model_copy(update={"kl": 10.0}))
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain, with_kl, strict=True))  # its gradient is 0 there
    trained = grpo.group * len(schedule.trained)
    assert reasoner.meter.take().counts["reasoner_forward"] == 2 * trained  # one reference call per transition
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    before = total_kl()
    heavy = grpo.model_copy(update={"kl": 1e6})
    _, norm = grads(heavy)
    policy_update(reasoner, cond, group, cfg, heavy, schedule, params, torch.optim.SGD(params, lr=1e-2 / norm))
    assert 0 < total_kl() < before and all(p.requires_grad for p in params)  # pulled back; the LoRA still trains
    assert "kl" not in GrpoConfig().model_dump() and GrpoConfig(kl=0.1).model_dump()["kl"] == 0.1
    detach_lora(reasoner)


def test_grpo_runs_the_items_loop_with_its_stops_counts_and_seeded_rollouts(reasoner, grpo_item, monkeypatch):
    from core.method.grpo import GrpoConfig, optimise_item_grpo

    teacher, cond, reward = grpo_item
    cfg, grpo = OptimConfig(k_frames=8, early_stop=False), GrpoConfig(steps=2, group=2)
    reasoner.meter.take()
    res = optimise_item_grpo(reasoner, teacher, cond, reward, cfg, grpo)
    counts = reasoner.meter.take().counts
    assert res.stop_reason == "max_steps" and res.steps_run == 2 and len(res.trace) == 3
    for step in res.trace:
        assert len(step.group_losses) == 2 and step.loss == pytest.approx(np.mean(step.group_losses))
        assert len(step.p_yes) == len(reward.queries)
    assert any(float(v.abs().sum()) > 0 for k, v in lora_state(reasoner).items() if "lora_B" in k)
    # 3 groups of 2 rollouts x 4 steps; 2 updates x 2 rollouts x 3 trained steps, each a forward and a backward
    assert counts["reasoner_forward"] == 3 * 2 * 4 + 2 * 2 * 3 and counts["reasoner_backward"] == 2 * 2 * 3
    assert counts["teacher_forward"] == 3 * 2 and counts["decode_surrogate"] == 3 * 2 and "teacher_backward" not in counts
    again = optimise_item_grpo(reasoner, teacher, cond, reward, cfg, grpo)  # seeded: the same rollouts and updates
    assert np.allclose([s.group_losses for s in again.trace], [s.group_losses for s in res.trace], rtol=1e-5)
    # early stop on the group's mean loss
    tau = res.trace[1].loss
    stopped = optimise_item_grpo(reasoner, teacher, cond, reward, cfg.model_copy(update={"early_stop": True, "tau": tau}), grpo)
    assert stopped.stop_reason == "tau" and stopped.steps_run <= 1
    # a diverging rollout stops the loop and keeps the best adapter, as for the gradient method
    poison_decode(monkeypatch, reasoner, at_call=3)
    broken = optimise_item_grpo(reasoner, teacher, cond, reward, cfg, grpo)
    assert broken.stop_reason == "nonfinite_loss" and broken.steps_run == 0 and len(broken.trace) == 2
    detach_lora(reasoner)


def test_grpo_schedules_a_multistep_solver_folder_and_trains_only_the_high_noise_expert(models, bench):
    """Real layouts: UniPC's flow sigmas (Wan2.2's folders) give the SDE its noise levels; with two experts only
    the steps of the transformer that carries the LoRA are trained."""
    import copy

    from diffusers import UniPCMultistepScheduler

    from core.method.grpo import SdeSchedule

    pipe = load_reasoner(models[0])
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    solver = ReasonerAdapter(WanImageToVideoPipeline(**pipe.components | {"scheduler": unipc, "expand_timesteps": True}),
                             device="cpu")
    sched = SdeSchedule.of(solver, 4)
    assert len(sched.sigmas) == 5 and sched.sigmas[-1] == 0.0 and sched.trained == [0, 1, 2]
    assert all(a > b for a, b in zip(sched.sigmas, sched.sigmas[1:], strict=False))
    parts = {k: v for k, v in pipe.components.items() if k != "transformer_2"}
    two = ReasonerAdapter(WanImageToVideoPipeline(**parts, transformer_2=copy.deepcopy(pipe.transformer), boundary_ratio=0.6,
                                                  expand_timesteps=True), device="cpu")
    assert SdeSchedule.of(two, 4).trained == [0, 1]  # noise levels 1.0 and 0.75 are above 0.6; 0.5 is the low expert's
    low_only = ReasonerAdapter(WanImageToVideoPipeline(**parts, transformer_2=copy.deepcopy(pipe.transformer),
                                                       boundary_ratio=0.999, expand_timesteps=True), device="cpu")
    assert SdeSchedule.of(low_only, 4).trained == [0]


def test_a_run_trains_a_lora_when_a_method_does_or_auto_n_times_the_teacher_method():
    from core.method.methods import trains_lora

    assert trains_lora(["teacher"], auto_n=False) and trains_lora(["vanilla", "grpo"], auto_n=False)
    assert trains_lora(["best_of_n"], auto_n=True) and not trains_lora(["best_of_n"], auto_n=False)
    assert not trains_lora(["vanilla", "pe", "videotpo", "still"], auto_n=True)  # auto N only matters for candidates
