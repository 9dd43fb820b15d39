"""The embedded model zoo: train the tiny Reasoner, surrogate decoder and Teacher, evaluate, ship.

Every stage is a plain function from files to files (a work directory and the output
``models/`` directory), so ``flows/zoo.py`` can wrap each one as a cached Prefect task and
rerun only what changed. Everything is seeded; budgets are in steps, never wall time. Each
training stage takes a ``StageCheckpoint`` (``core.train.checkpoint``): a killed stage resumes
from its last checkpoint and ends with the same weights.

Layout written under ``out`` (default ``models/``)::

    reasoner/           WanImageToVideoPipeline, the 4-step transformer (reflow-distilled; with distill.steps 0, the base in float32)
    reasoner-base/      the same pipeline with the undistilled transformer (30-step reference; stored in bfloat16)
    surrogate-decoder/  SurrogateDecoder (config.json + safetensors), no VAE needed to load it
    teacher/            Qwen2.5-VL model + processor + tokenizer + chat template
    zoo.json            configs, per-stage wall seconds and the quality figures
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from core.bench.layout import Benchmark
from core.bench.record import Purpose, Split, TaskInstance
from core.bench.source import open_benchmark
from core.bench.synth.generate import WORLD_VERSION, make_synth_benchmark
from core.config import StrictConfig
from core.io import STAGE_RECORD, write_json_atomic
from core.media import read_image
from core.method.reasoner import OPTIM_DEFAULTS_FILE, OptimDefaults
from core.models.wan import (
    FLOW_SOURCE_FILE,
    FlowSource,
    WanReasonerArch,
    assemble_pipeline,
    build_scheduler,
    build_text_encoder,
    build_transformer,
    build_vae,
    encode_prompts,
    encode_videos,
    first_frame_prior,
    generate_videos,
    load_reasoner,
    store_weights_as,
)
from core.train.checkpoint import EVERY_SECONDS, MAX_EVERY_SECONDS, StageCheckpoint
from core.train.common import ground_truth_video
from core.train.reasoner import (
    DistillConfig,
    FlowMatchConfig,
    LatentDataset,
    distil,
    moving_latents,
    train_flow_matching,
)
from core.train.surrogate import SurrogateTrainConfig, train_surrogate
from core.train.teacher import TeacherTrainConfig, train_teacher
from core.train.vae import (
    VaeTrainConfig,
    fit_latent_stats,
    stack_videos,
    train_vae,
)

log = logging.getLogger(__name__)

REASONER, REASONER_BASE, SURROGATE, TEACHER = "reasoner", "reasoner-base", "surrogate-decoder", "teacher"
#: The held-out judge: a second Teacher (another seed and data order) that no method optimises against.
JUDGE = "teacher-judge"
#: How the undistilled Reasoner's transformer is stored: it is the 30-step reference the distilled
#: one is measured against, not a model a method runs, and bfloat16 halves it (15 MB at width 256)
#: inside the 40 MiB ``models/`` budget; it loads back as float32.
BASE_DTYPE = torch.bfloat16

#: What the published Reasoner recommends to the test-time optimiser (``OPTIM_DEFAULTS_FILE``):
#: the learning rate measured best for the shipped zoo, far above the paper's 5e-5 for a 5B model.
ZOO_OPTIM_DEFAULTS = OptimDefaults(lr=1e-2, why=(
    "teacher method on 14 validation items (vlmt bench make synth --per-family 2 --seed 1, disjoint from the test "
    "instances): lr 1e-3 0.137, 3e-3 0.154, 1e-2 0.176, 3e-2 0.176, 1e-1 0.176 (vanilla 0.118)"))
UMT5_SPECIALS = ["<pad>", "</s>", "<unk>"]


class ZooConfig(StrictConfig):
    """Everything that decides the shipped zoo. ``vlmt zoo train`` uses the defaults."""

    seed: int = 0
    train_per_family: int = Field(120, description="Train-purpose instances per family.")
    test_per_family: int = Field(10, description="Test-purpose instances per family, for every figure reported.")
    sample_per_family: int = Field(40, description="Reasoner samples per family fed to the Teacher as training videos.")
    reasoner_vocab: int = 400
    arch: WanReasonerArch = WanReasonerArch()
    vae: VaeTrainConfig = VaeTrainConfig()
    surrogate: SurrogateTrainConfig = SurrogateTrainConfig()
    flow: FlowMatchConfig = FlowMatchConfig()
    distill: DistillConfig = DistillConfig()
    teacher: TeacherTrainConfig = TeacherTrainConfig()
    mine_per_family: int = Field(0, ge=0, description=(
        "Train instances per family on which a first-round Teacher's teacher method is run; its optimised videos, "
        "labelled by the scorers, join the final Teacher's data (0: no mining round, the first zoo)."))
    judge_seed: int | None = Field(None, description=(
        "Seed of the held-out judge, a second Teacher trained on the same data in another order (None: no judge)."))
    eval_steps_base: int = 30
    optim_defaults: OptimDefaults | None = Field(None, description=(
        "What the published Reasoner recommends to the test-time optimiser (its optim_defaults.json), measured on "
        "validation items once the zoo is trained (None: ZOO_OPTIM_DEFAULTS, the first zoo's). Not part of any stage "
        "key: publishing writes it, training never reads it (the mining round uses ZOO_OPTIM_DEFAULTS)."))
    checkpoint_seconds: float = Field(
        EVERY_SECONDS, ge=0, le=MAX_EVERY_SECONDS, description=(
            "Wall seconds between two checkpoints of a training loop (0: every step); a killed stage resumes from its "
            "last one. Not part of any stage key: it never changes the weights."))

    @classmethod
    def quick(cls) -> ZooConfig:
        """About a quarter of the full budget: a smoke run of the real recipe."""
        full = cls()
        return cls(
            train_per_family=60, sample_per_family=20,
            vae=full.vae.model_copy(update={"steps": full.vae.steps // 4}),
            surrogate=full.surrogate.model_copy(update={"steps": full.surrogate.steps // 4}),
            flow=full.flow.model_copy(update={"steps": full.flow.steps // 4}),
            distill=full.distill.model_copy(update={"steps": full.distill.steps // 4}),
            teacher=full.teacher.model_copy(update={"steps": max(1, full.teacher.steps // 4)}),
        )

    @classmethod
    def micro(cls) -> ZooConfig:
        """Tiny sizes and a few steps: the test suite trains a whole zoo with it in seconds."""
        return cls(
            train_per_family=2, test_per_family=1, sample_per_family=1, reasoner_vocab=300, arch=WanReasonerArch.micro(),
            vae=VaeTrainConfig(steps=2, batch=2, crop=16),
            surrogate=SurrogateTrainConfig(hidden=8, num_res_blocks=1, steps=2, batch=2),
            flow=FlowMatchConfig(steps=3, batch=2), distill=DistillConfig(teacher_steps=2, pairs_per_item=1, steps=2, batch=2),
            teacher=TeacherTrainConfig.micro(), eval_steps_base=3,
        )


# --------------------------------------------------------------------------- data

def make_benchmarks(work: Path, cfg: ZooConfig) -> tuple[Path, Path]:
    """Train (all families) and test (all families) synth benchmarks under ``work``."""
    train, test = work / "bench-train", work / "bench-test"
    for path, purpose, n in ((train, Purpose.TRAIN, cfg.train_per_family), (test, Purpose.TEST, cfg.test_per_family)):
        if n and not (path / "VBVR-Bench.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            make_synth_benchmark(path, per_family=n, seed=cfg.seed, purpose=purpose)
    return train, test


def in_domain(bench: Benchmark) -> list[TaskInstance]:
    """The Reasoner's world: in-domain families only (OOD families are never trained on)."""
    return bench.select(split=Split.ID)


# --------------------------------------------------------------------------- Reasoner

def build_reasoner_tokenizer(bench: Benchmark, vocab: int):
    from core.models.tokenizer import build_bpe_tokenizer

    prompts = sorted({inst.prompt for inst in bench.instances})
    return build_bpe_tokenizer(prompts, vocab, UMT5_SPECIALS, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def train_reasoner_vae(train_dir: Path, target: Path, cfg: ZooConfig, checkpoint: StageCheckpoint | None = None) -> Path:
    """Stage: the VAE, with latent statistics fitted.

    Trained on every family's ground truth: the VAE is the Reasoner's generic video codec
    (a real Wan VAE encodes any video); only the transformer is kept to in-domain families.
    ``checkpoint`` (every stage's): where its training checkpoints and resumes (``core.train.checkpoint``).
    """
    ckpt = checkpoint or StageCheckpoint.off()
    videos = [ground_truth_video(i) for i in open_benchmark(train_dir).instances]
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.arch)
    curve = train_vae(vae, videos, cfg.vae, ckpt.loop("vae"))
    fit_latent_stats(vae, videos)
    vae.save_pretrained(target)
    write_json_atomic(target / "train_curve.json", curve)
    return target


def train_surrogate_decoder(
    vae_dir: Path, train_dir: Path, target: Path, cfg: ZooConfig, checkpoint: StageCheckpoint | None = None
) -> Path:
    """Stage: distil the surrogate decoder from the trained VAE; saved as its own folder."""
    from diffusers import AutoencoderKLWan

    ckpt = checkpoint or StageCheckpoint.off()
    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval()
    instances = open_benchmark(train_dir).instances  # every family: it decodes OOD outputs too
    videos = [ground_truth_video(i) for i in instances[:: max(1, len(instances) // 200)]]
    surrogate, curve = train_surrogate(vae, videos, cfg.surrogate, ckpt.loop("surrogate"))
    surrogate.save_pretrained(target)
    write_json_atomic(target / "train_curve.json", curve)
    return target


def latent_dataset(pipe, instances: list[TaskInstance], batch: int = 16) -> LatentDataset:
    """The instances' ground-truth videos encoded by ``pipe``'s VAE, their prompts by its text encoder
    (once per unique prompt), and where each video moves: what flow matching trains on."""
    prompts = sorted({i.prompt for i in instances})
    table = torch.cat([encode_prompts(pipe, prompts[j : j + batch]) for j in range(0, len(prompts), batch)])
    lat, moving = [], []
    for j in range(0, len(instances), batch):
        videos = stack_videos([ground_truth_video(i) for i in instances[j : j + batch]])
        lat.append(encode_videos(pipe.vae, videos))
        moving.append(moving_latents(videos, pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial))
    lookup = {p: k for k, p in enumerate(prompts)}
    return LatentDataset(torch.cat(lat), [lookup[i.prompt] for i in instances], table, torch.cat(moving))


def train_reasoner(
    vae_dir: Path, train_dir: Path, base_target: Path, target: Path, cfg: ZooConfig, checkpoint: StageCheckpoint | None = None
) -> tuple[Path, Path]:
    """Stages: flow matching (-> the undistilled ``base_target``) then reflow distillation (-> ``target``;
    with ``cfg.distill.steps`` 0, ``target`` holds the flow-matching transformer itself, in float32).

    Flow matching is a phase of its own: once finished, its weights are kept in ``checkpoint``
    and a resumed run loads them instead of training again.
    """
    from diffusers import AutoencoderKLWan

    ckpt = checkpoint or StageCheckpoint.off()
    bench = open_benchmark(train_dir)
    tokenizer = build_reasoner_tokenizer(bench, cfg.reasoner_vocab)
    torch.manual_seed(cfg.seed)
    pipe = assemble_pipeline(
        tokenizer, build_text_encoder(cfg.arch, len(tokenizer)), AutoencoderKLWan.from_pretrained(vae_dir),
        build_transformer(cfg.arch), build_scheduler(cfg.arch),
    )
    pipe.text_encoder.eval()  # random and frozen: prompts are templated per family (see the model card)
    data = latent_dataset(pipe, in_domain(bench))
    flow_curve = ckpt.module_phase("flow-matching", pipe.transformer, lambda: train_flow_matching(
        pipe.transformer, data, cfg.flow, ckpt.loop("flow-matching")))
    prior = cfg.flow.first_frame_prior
    pipe.save_pretrained(base_target)
    store_weights_as(base_target / "transformer", BASE_DTYPE)  # the 30-step reference; reflow uses the float32 one
    write_json_atomic(base_target / "train_curve.json", flow_curve)
    _write_flow_source(base_target, prior)
    distil_curve: list[float] = []
    if cfg.distill.steps:  # 0: the flow-matching transformer (float32) is the few-step Reasoner as it is
        student, distil_curve = distil(pipe.transformer, pipe.scheduler, data, cfg.distill, ckpt.loop("distil"),
                                       first_frame_prior=prior)
        pipe.register_modules(transformer=student)
    pipe.save_pretrained(target)
    write_json_atomic(target / "train_curve.json", distil_curve)
    _write_flow_source(target, prior)
    return base_target, target


def _write_flow_source(folder: Path, prior: float) -> None:
    """Record where the folder's flow starts, when it is not pure noise (``FlowSource``)."""
    if prior:
        write_json_atomic(folder / FLOW_SOURCE_FILE, FlowSource(
            first_frame_prior=prior, why="trained so (flow.first_frame_prior in the zoo recipe)").model_dump())


def reasoner_samples(
    reasoner_dir: Path, instances: list[TaskInstance], seed: int, steps: int = 4
) -> list[tuple[TaskInstance, np.ndarray]]:
    """The Reasoner's own videos for ``instances`` (4 steps, VAE decode), paired with their instance."""
    if not instances:
        return []
    return sample_instances(load_reasoner(reasoner_dir), reasoner_dir, instances, seed, steps)


def sample_instances(
    pipe, reasoner_dir: Path, instances: list[TaskInstance], seed: int, steps: int, transformer=None,
) -> list[tuple[TaskInstance, np.ndarray]]:
    """``reasoner_samples`` with a loaded pipeline (item k's seed is ``seed + k``); ``transformer``
    overrides the pipeline's (the undistilled reference), on the same seeds."""
    frames = [read_image(i.first_frame) for i in instances]
    videos = generate_videos(pipe, frames, [i.prompt for i in instances], [seed + k for k in range(len(instances))],
                             steps, instances[0].metadata["n_frames"], transformer=transformer,
                             first_frame_prior=first_frame_prior(reasoner_dir))
    return list(zip(instances, videos))


def per_family(bench: Benchmark, n: int) -> list[TaskInstance]:
    """The first ``n`` instances of every family, in benchmark order."""
    chosen, seen = [], {}
    for inst in bench.instances:
        if seen.get(inst.task_family, 0) < n:
            chosen.append(inst)
            seen[inst.task_family] = seen.get(inst.task_family, 0) + 1
    return chosen


# --------------------------------------------------------------------------- Teacher

def train_teacher_stage(
    train_dir: Path, reasoner_dir: Path, target: Path, cfg: ZooConfig, checkpoint: StageCheckpoint | None = None,
    surrogate_dir: Path | None = None,
) -> Path:
    """Stage: the Teacher, on all families, with the Reasoner's own samples among its videos.

    With ``cfg.mine_per_family``, a first-round Teacher is trained on that data, the teacher
    method is run with it on train items (``core.train.mining``, needs ``surrogate_dir``) and
    the final Teacher is trained from scratch with the mined videos added. With
    ``cfg.judge_seed``, the held-out judge is trained on the same videos into ``target/judge``.
    Sampling, the first round and mining are phases: a resumed run loads what they made.
    """
    ckpt = checkpoint or StageCheckpoint.off()
    bench = open_benchmark(train_dir)
    chosen = per_family(bench, cfg.sample_per_family)
    samples = ckpt.phase("reasoner-samples", lambda: reasoner_samples(reasoner_dir, chosen, seed=cfg.seed + 10_000),
                         save=_save_samples, load=lambda folder: _load_samples(folder, chosen))
    mined: list[tuple[TaskInstance, np.ndarray]] = []
    if cfg.mine_per_family:
        if surrogate_dir is None:
            raise ValueError("mine_per_family needs the surrogate decoder the teacher method optimises through")
        from core.train.mining import run_teacher_method

        scratch = target.with_name(target.name + ".round0")
        first = ckpt.phase("teacher-round0", lambda: _train_teacher_folder(
            scratch, bench, cfg.teacher, samples, ckpt.loop("teacher-round0")), save=_copy_folder, load=lambda f: f)
        # mined items come after the sampled ones, so the two sets do not overlap
        pool = per_family(bench, cfg.sample_per_family + cfg.mine_per_family)
        sampled = {i.id for i in chosen}
        to_mine = [i for i in pool if i.id not in sampled]
        mined = ckpt.phase("mined-videos", lambda: run_teacher_method(
            reasoner_dir, surrogate_dir, first, to_mine, lr=ZOO_OPTIM_DEFAULTS.lr, seed=cfg.seed + 30_000,
            only=Purpose.TRAIN),
            save=_save_samples, load=_load_samples)
        shutil.rmtree(scratch, ignore_errors=True)
    train_teacher(target, bench, cfg.teacher, reasoner_samples=samples, mined_videos=mined,
                  checkpoint=ckpt.loop("teacher"))
    if cfg.judge_seed is not None:
        judge_cfg = cfg.teacher.model_copy(update={"seed": cfg.judge_seed})
        train_teacher(target / "judge", bench, judge_cfg, reasoner_samples=samples, mined_videos=mined,
                      checkpoint=ckpt.loop("judge"))
    return target


def _train_teacher_folder(out: Path, bench: Benchmark, cfg: TeacherTrainConfig, samples, checkpoint) -> Path:
    train_teacher(out, bench, cfg, reasoner_samples=samples, checkpoint=checkpoint)
    return out


def _copy_folder(src: Path, folder: Path) -> None:
    shutil.copytree(src, folder, dirs_exist_ok=True)


def _save_samples(samples: list[tuple[TaskInstance, np.ndarray]], folder: Path) -> None:
    ids = [inst.id for inst, _ in samples]
    np.savez(folder / "samples.npz", videos=np.stack([v for _, v in samples]) if samples else np.zeros((0,), np.uint8))
    write_json_atomic(folder / "ids.json", ids)
    write_json_atomic(folder / "instances.json", [inst.model_dump(mode="json") for inst, _ in samples])


def _load_samples(folder: Path, instances: list[TaskInstance] | None = None) -> list[tuple[TaskInstance, np.ndarray]]:
    """Kept samples; ``instances`` None: the instances are read back from the kept ``instances.json``."""
    ids = json.loads((folder / "ids.json").read_text())
    if instances is None:
        instances = [TaskInstance.model_validate(d) for d in json.loads((folder / "instances.json").read_text())]
    if ids != [inst.id for inst in instances]:
        raise ValueError(f"{folder}: samples of other instances than this stage's")
    with np.load(folder / "samples.npz") as kept:
        return list(zip(instances, list(kept["videos"]), strict=True))


# --------------------------------------------------------------------------- publishing

def published_optim_defaults(cfg: ZooConfig) -> OptimDefaults:
    """The test-time optimiser settings the published Reasoner recommends: the config's, else the first zoo's."""
    return cfg.optim_defaults or ZOO_OPTIM_DEFAULTS


def publish(stage_records: dict[str, dict], out: Path, cfg: ZooConfig) -> Path:
    """Copy the stage outputs into ``out`` and write ``zoo.json`` (config, world version, keys, wall seconds)."""
    sources = {
        REASONER: Path(stage_records["reasoner"]["path"]) / REASONER,
        # the undistilled reference ships as its transformer alone: the rest equals the Reasoner's
        REASONER_BASE: Path(stage_records["reasoner"]["path"]) / REASONER_BASE / "transformer",
        SURROGATE: Path(stage_records["surrogate"]["path"]),
        TEACHER: Path(stage_records["teacher"]["path"]),
    }
    judge = Path(stage_records["teacher"]["path"]) / "judge"
    if judge.is_dir():
        sources[JUDGE] = judge
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / JUDGE, ignore_errors=True)  # a judge from an earlier publish never outlives its Teacher
    for name, src in sources.items():
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(STAGE_RECORD, "judge"))
        shutil.rmtree(out / name, ignore_errors=True)
        tmp.rename(out / name)
    write_json_atomic(out / REASONER / OPTIM_DEFAULTS_FILE, published_optim_defaults(cfg).model_dump(mode="json"))
    seconds = {k: v["seconds"] for k, v in stage_records.items()}  # a resumed stage's: summed over its runs
    record = {
        "config": cfg.model_dump(mode="json"),
        "world_version": WORLD_VERSION,
        "stages": {k: _stage_entry(v) for k, v in stage_records.items()},
        "train_seconds_total": round(sum(seconds.values()), 1),
        "machine": _machine(),
    }
    write_json_atomic(out / "zoo.json", record)
    return out


def _stage_entry(record: dict) -> dict:
    """A stage's line in ``zoo.json``: its key and seconds, and its runs when it was resumed."""
    entry = {"key": record["key"], "seconds": record["seconds"]}
    if len(record.get("runs", ())) > 1:
        entry["runs"] = record["runs"]
    return entry


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
