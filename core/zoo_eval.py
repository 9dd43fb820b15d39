"""The zoo's quality figures (issue 26's gates), measured on test-purpose instances only.

``evaluate_zoo`` measures a published zoo folder (what ``vlmt zoo eval`` and the cards show);
``evaluate_reasoner`` measures the Reasoner alone, so its gate can be checked on a stage folder
before the Teacher that depends on it is trained (``scripts/reasoner_gate.py``). Every Reasoner
figure is the rule-based synth score of decoded videos; the codec figures pass ground truth and
the held first frame through the same VAE.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field

from core.bench.layout import Benchmark
from core.bench.record import Split, TaskInstance
from core.bench.source import open_benchmark
from core.media import read_image
from core.models.surrogate import SurrogateDecoder
from core.models.wan import (
    FrameCondition,
    decode_latents,
    encode_videos,
    load_reasoner,
    tensor_to_frames,
    velocity,
)
from core.scoring.result import ScoreResult
from core.scoring.synth import score_synth
from core.train.common import ground_truth_video
from core.train.surrogate import decoder_fidelity
from core.train.teacher_eval import evaluate_teacher
from core.train.vae import reconstruction_psnr, stack_videos
from core.zoo import JUDGE, REASONER, REASONER_BASE, SURROGATE, TEACHER, ZOO_OPTIM_DEFAULTS, ZooConfig, latent_dataset, reasoner_samples, sample_instances


class ReasonerEval(BaseModel):
    steps: int
    score_id: float
    score_ood: float
    success_id: float
    success_ood: float
    n_id: int
    n_ood: int
    per_family: dict[str, float]
    success_per_family: dict[str, float] = Field(
        default_factory=dict, description="Share of strict successes per family (the codec gate is per family).")


def score_videos(samples: list[tuple[TaskInstance, np.ndarray]], steps: int) -> ReasonerEval:
    return summarise([(inst, score_synth(inst, video)) for inst, video in samples], steps)


def summarise(results: list[tuple[TaskInstance, ScoreResult]], steps: int) -> ReasonerEval:
    """``(instance, score_synth result)`` pairs -> the split and family means of ``ReasonerEval``."""

    def mean(values: list[float]) -> float:
        return round(float(np.mean(values)), 4) if values else float("nan")

    by_split = {s: [r for i, r in results if i.split == s] for s in Split}
    families = sorted({i.task_family for i, _ in results})
    return ReasonerEval(
        steps=steps,
        score_id=mean([r.score for r in by_split[Split.ID]]), score_ood=mean([r.score for r in by_split[Split.OOD]]),
        success_id=mean([float(r.success) for r in by_split[Split.ID]]),
        success_ood=mean([float(r.success) for r in by_split[Split.OOD]]),
        n_id=len(by_split[Split.ID]), n_ood=len(by_split[Split.OOD]),
        per_family={f: mean([r.score for i, r in results if i.task_family == f]) for f in families},
        success_per_family={f: mean([float(r.success) for i, r in results if i.task_family == f]) for f in families},
    )


@torch.no_grad()
def score_through_codec(vae, instances: list[TaskInstance], videos: list[np.ndarray], batch: int = 8) -> ReasonerEval:
    """The synth score of ``videos`` (one per instance) after a VAE round trip (encode, decode).

    Every Reasoner output is a VAE decode, so this is how the codec alone treats a video: on the
    ground truth it bounds what any sampler or test-time method can score (a Reasoner near this
    ceiling is limited by the VAE, not by its reasoning); on the ``still`` reference (the first
    frame held) it is the floor that a Reasoner which changes nothing already reaches.
    """
    samples = []
    for i in range(0, len(instances), batch):
        decoded = decode_latents(vae, encode_videos(vae, stack_videos(videos[i : i + batch])))
        samples += [(inst, tensor_to_frames(v)) for inst, v in zip(instances[i : i + batch], decoded, strict=True)]
    return score_videos(samples, steps=0)


class ZooEval(BaseModel):
    vae_psnr_db: dict[str, float]
    vae_ceiling: ReasonerEval | None = Field(None, description="Synth score of VAE-reconstructed ground truth.")
    still_floor: ReasonerEval | None = Field(
        None, description="Synth score of the first frame held for the whole video, through the VAE (a Reasoner that changes nothing).")
    surrogate: dict[str, float]
    reasoner: ReasonerEval
    reasoner_base: ReasonerEval
    distilled_minus_base_id: float
    teacher: dict
    judge: dict | None = Field(None, description="The held-out judge's figures on the same test videos (None: no judge).")
    targets: dict[str, bool]


class ReasonerGate(BaseModel):
    """The Reasoner's figures of issue 26's gate: its own 4-step samples, the undistilled sampler,
    and the held first frame (through the codec) it must beat."""

    reasoner: ReasonerEval
    reasoner_base: ReasonerEval
    still_floor: ReasonerEval
    distilled_minus_base_id: float
    broken: dict[str, int] = Field(default_factory=dict, description=(
        "Per family/criterion: how many of the Reasoner's 4-step test videos break it (score < 1)."))

    def targets(self) -> dict[str, bool]:
        d, floor = self.reasoner, self.still_floor
        return {
            "reasoner_success_id_in_0.2_0.5": 0.2 <= d.success_id <= 0.5,
            "reasoner_success_ood_below_id": d.success_ood < d.success_id,
            "reasoner_above_still": d.score_id > floor.score_id and d.score_ood > floor.score_ood,
            "distilled_within_0.05_of_base": abs(self.distilled_minus_base_id) <= 0.05,
        }


def reasoner_stage_problem(stage: Path) -> str | None:
    """Why ``stage`` is not a finished Reasoner stage folder (None when it is): the scripts that
    measure a stage before the zoo is published check this before loading anything."""
    for needed in (f"{REASONER}/model_index.json", f"{REASONER_BASE}/transformer/config.json"):
        if not (stage / needed).is_file():
            return f"{stage / needed}: does not exist (expected a Reasoner stage folder with {REASONER}/ and {REASONER_BASE}/)"
    return None


def evaluate_reasoner(reasoner: Path, base_transformer: Path, bench: Benchmark, seed: int, base_steps: int) -> ReasonerGate:
    """The distilled Reasoner (4 steps) and its undistilled transformer (``base_steps``) on every
    instance of ``bench``, with the same seeds, and the ``still`` floor through its VAE."""
    # imported here: training the zoo needs neither the pipeline's transformer class nor the method package
    from diffusers import WanTransformer3DModel

    from core.method.methods import still_video

    pipe = load_reasoner(reasoner)
    results = [(inst, score_synth(inst, video)) for inst, video in sample_instances(pipe, reasoner, bench.instances, seed, 4)]
    distilled = summarise(results, 4)
    broken = Counter(f"{inst.task_family}/{c.name}" for inst, r in results for c in r.criteria if c.score < 1.0)
    base_tf = WanTransformer3DModel.from_pretrained(base_transformer).eval()
    base = score_videos(sample_instances(pipe, reasoner, bench.instances, seed, base_steps, transformer=base_tf), base_steps)
    n_frames = bench.instances[0].metadata["n_frames"]
    stills = [still_video(read_image(i.first_frame), n_frames) for i in bench.instances]
    floor = score_through_codec(pipe.vae, bench.instances, stills)
    return ReasonerGate(reasoner=distilled, reasoner_base=base, still_floor=floor,
                        distilled_minus_base_id=round(distilled.score_id - base.score_id, 4), broken=dict(sorted(broken.items())))


def check_sigmas(sigmas: list[float]) -> list[float]:
    """``sigmas`` as given, or a ValueError naming those outside [0, 1] (before any model work)."""
    if bad := [s for s in sigmas if not 0.0 <= s <= 1.0]:
        raise ValueError(f"sigmas {bad}: expected noise levels in [0, 1]")
    return sigmas


@torch.no_grad()
def restart_profile(
    pipe, transformer, instances: list[TaskInstance], sigmas: list[float], seed: int = 0, full_steps: int = 30, batch: int = 14,
) -> dict[float, ReasonerEval]:
    """Where a sample is decided: ground truth noised to each ``sigma`` and integrated back by
    ``transformer``'s own ODE (Euler, linear in sigma, ``round(full_steps * sigma)`` steps), decoded and scored.

    At sigma 0 it is the codec's ceiling; at 1 a sample from pure noise. Where strict success
    falls between the two is the noise range in which the transformer loses the layout: a high
    score from low sigma and none from high sigma says that the details are drawn right and the
    solution is not found (docs/zoo-reasoner.md, "Where a sample is decided").
    """
    check_sigmas(sigmas)
    data = latent_dataset(pipe, instances, batch)
    x0, text = data.latents, data.text_table[data.prompt_index]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    profile = {}
    for sigma in sigmas:
        n = round(full_steps * sigma)
        levels = torch.linspace(sigma, 0.0, n + 1)
        samples = []
        for j in range(0, len(instances), batch):
            x, cond = x0[j : j + batch], FrameCondition.first_frame_of(x0[j : j + batch])
            z = (1 - sigma) * x + sigma * noise[j : j + batch]
            for k in range(n):
                t = torch.full((len(x),), float(levels[k]) * 1000.0)
                z = z + (levels[k + 1] - levels[k]) * velocity(transformer, z, cond, t, text[j : j + batch])
            decoded = decode_latents(pipe.vae, cond.finish(z))
            samples += [(inst, tensor_to_frames(v)) for inst, v in zip(instances[j : j + batch], decoded, strict=True)]
        profile[sigma] = score_videos(samples, n)
    return profile


def evaluate_zoo(models: Path, test_dir: Path, cfg: ZooConfig) -> ZooEval:
    """Every quality figure of the issue, on test-purpose instances only."""
    bench = open_benchmark(test_dir)
    pipe = load_reasoner(models / REASONER)
    gt = {s: [ground_truth_video(i) for i in bench.select(split=s)] for s in Split}
    vae_psnr = {s.value: round(reconstruction_psnr(pipe.vae, v), 2) for s, v in gt.items() if v}
    in_order = [i for s in Split for i in bench.select(split=s)]
    ceiling = score_through_codec(pipe.vae, in_order, [v for s in Split for v in gt[s]])
    surrogate = SurrogateDecoder.from_pretrained(models / SURROGATE).eval()
    fidelity = decoder_fidelity(pipe.vae, surrogate, gt[Split.ID][:20] + gt[Split.OOD][:10])
    gate = evaluate_reasoner(models / REASONER, models / REASONER_BASE, bench, cfg.seed, cfg.eval_steps_base)
    samples = reasoner_samples(models / REASONER, bench.instances, seed=cfg.seed + 20_000)
    judged = _teacher_test_videos(models, bench, samples, cfg)
    teacher = evaluate_teacher(models / TEACHER, bench, **judged).model_dump()
    judge = evaluate_teacher(models / JUDGE, bench, **judged).model_dump() if (models / JUDGE).is_dir() else None
    targets = {  # issue 26's gates
        "codec_score_ge_0.95_every_family": min(ceiling.per_family.values()) >= 0.95,
        "codec_success_ge_0.9_every_family": min(ceiling.success_per_family.values()) >= 0.9,
        "surrogate_psnr_ge_25": fidelity.psnr_vs_vae_db >= 25,
        "surrogate_speedup_ge_5": fidelity.speedup >= 5,
        **gate.targets(),
        **_teacher_targets("teacher", teacher),
        **(_teacher_targets("judge", judge) if judge else {}),
    }
    return ZooEval(vae_psnr_db=vae_psnr, vae_ceiling=ceiling, still_floor=gate.still_floor, surrogate=fidelity.model_dump(),
                   reasoner=gate.reasoner, reasoner_base=gate.reasoner_base,
                   distilled_minus_base_id=gate.distilled_minus_base_id, teacher=teacher, judge=judge, targets=targets)


def _teacher_test_videos(models: Path, bench: Benchmark, samples: list, cfg: ZooConfig) -> dict:
    """What a Teacher is judged on besides ground truth and perturbations: the Reasoner's samples,
    ``erase``/``still`` videos, and, for a zoo trained with a mining round, the teacher method's
    own optimised videos on the test items (the videos a judge must not be fooled by)."""
    judged: dict = {"reasoner_samples": samples, "extra_perturbations": ("erase", "still")}
    if cfg.mine_per_family:
        from core.train.mining import run_teacher_method

        judged["mined_videos"] = run_teacher_method(models / REASONER, models / SURROGATE, models / TEACHER,
                                                    bench.instances, lr=ZOO_OPTIM_DEFAULTS.lr, seed=cfg.seed + 40_000)
    return judged


def _teacher_targets(name: str, ev: dict) -> dict[str, bool]:
    """Issue 26's Teacher gates, for the Teacher and for the held-out judge alike."""
    hacks = [ev["false_yes_by_source"].get(f"perturbation:{k}", float("nan")) for k in ("erase", "still")]
    return {
        f"{name}_query_json_ge_0.95": ev.get("query_valid_rate", 0) >= 0.95,
        f"{name}_accuracy_ge_0.9": ev["accuracy"] >= 0.9,
        f"{name}_goal_balanced_ge_0.85": ev["balanced_accuracy_goal"] >= 0.85,
        f"{name}_false_yes_erase_still_le_0.1": all(h <= 0.1 for h in hacks),
    }
