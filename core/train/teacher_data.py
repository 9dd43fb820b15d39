"""The Teacher's training videos and their yes/no labels: ground truth, perturbations,
Reasoner samples, mined videos; and the label-preserving augmentation applied to them.

Split from ``core.train.teacher`` (training); ``core.train.teacher_eval`` builds its
held-out videos here too.

Judging data: every training instance's ground truth, *every* applicable rule-breaking
perturbation (``PERTURBATIONS``), Reasoner samples when given, and Reasoner stand-ins
(blurred, noisy, ghosted, frame-shuffled variants of the former), all labelled by the
rule-based scorers through ``label_video``. Every criterion of an instance is asked about
every video (with a random phrasing each time), Yes and No are drawn equally often, and
training-time augmentation (blur, noise, 1-pixel shifts, brightness) keeps labels but
makes answers, and the pixel gradients the method uses, smooth.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from core.bench.layout import Benchmark
from core.bench.record import TaskInstance
from core.bench.synth.family import PERTURBATIONS
from core.bench.synth.generate import perturbed_video
from core.bench.synth.queries import (
    RuleQueries,
    label_video,
    query_bank,
    rule_queries,
)
from core.config import StrictConfig
from core.errors import InputError
from core.train.common import ground_truth_video

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- configs

class AugmentConfig(StrictConfig):
    """Label-preserving training augmentation (well inside the scorers' tolerances)."""

    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.4, 1.2)
    noise_prob: float = 0.5
    noise_std: tuple[float, float] = (0.005, 0.03)
    shift_prob: float = 0.3
    shift_px: int = 1
    brightness: float = Field(0.06, description="Multiplicative jitter: x * (1 + U(-b, b)).")


# --------------------------------------------------------------------------- data

@dataclass
class QAVideo:
    """One judged video and the truth of every criterion of its instance."""

    instance: int
    source: str  # "gt", "perturbation:<kind>", "reasoner", "standin:<kind>"
    labels: list[bool]  # per query_bank criterion


@dataclass
class TeacherData:
    """Everything the Teacher trains on, built once, labelled by the scorers."""

    instances: list[TaskInstance]
    videos: list[torch.Tensor]  # (T, 3, H, W) uint8 each
    items: list[QAVideo]
    banks: list[list[list[str]]]  # per instance: per criterion: phrasings
    kinds: list[list[str]]  # per instance: per criterion: "goal" | "process"
    first_frames: list[np.ndarray]
    query_targets: list[str]  # per instance: the reference rule set as JSON
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def criterion_groups(self, pairs: np.ndarray) -> list[str]:
        """Each (video, criterion) pair's "family/criteria" name, the unit ``balance="criterion"`` evens out."""
        names = {}
        for k, inst in enumerate(self.instances):
            names[k] = [inst.task_family + "/" + "+".join(variants[0].criteria) for variants in query_bank(inst.metadata)]
        return [names[self.items[v].instance][c] for v, c in pairs]

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """All (video, criterion) pairs as an (N, 2) index array, and their labels."""
        idx, lab = [], []
        for v, item in enumerate(self.items):
            for c, y in enumerate(item.labels):
                idx.append((v, c))
                lab.append(y)
        return np.asarray(idx, dtype=np.int64).reshape(-1, 2), np.asarray(lab, dtype=bool)


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of (K, 3, H, W) floats, edges replicated."""
    if sigma <= 0:
        return frames
    k = _gauss_kernel(sigma).to(frames)
    r = len(k) // 2
    x = F.pad(frames, (r, r, r, r), mode="replicate")
    c = frames.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def standin_video(video: np.ndarray, other: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A Reasoner-like variant of a rendered video: what a small generator's output looks like.

    Always blurred and noisy (decoder softness); plus one of: nothing, ghosting with another
    video of the same instance (two half-present objects, the typical diffusion failure),
    a shuffled stretch of frames, or a stalled/skipped stretch. The scorer labels the result.
    """
    x = video.astype(np.float32)
    kind = str(rng.choice(["soft", "ghost", "shuffle", "stall"]))
    t = len(x)
    if kind == "ghost" and other is not None:
        a = float(rng.uniform(0.35, 0.65))
        x = a * x + (1 - a) * other.astype(np.float32)
    elif kind == "shuffle":
        s = int(rng.integers(1, t - 4))
        w = int(rng.integers(3, 6))
        seg = np.arange(s, min(t, s + w))
        x[seg] = x[rng.permutation(seg)]
    elif kind == "stall":
        s = int(rng.integers(1, t - 6))
        w = int(rng.integers(3, 6))
        idx = np.arange(t)
        idx[s : s + w] = s
        x = x[idx]
    else:
        kind = "soft"
    ft = torch.from_numpy(x).permute(0, 3, 1, 2) / 255.0
    ft = blur(ft, float(rng.uniform(0.6, 1.3)))
    ft = ft + torch.from_numpy(rng.normal(0, rng.uniform(0.005, 0.02), ft.shape).astype(np.float32))
    out = (ft.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out, kind


def _per_family(instances: Sequence[TaskInstance], n: int | None) -> list[TaskInstance]:
    if n is None:
        return list(instances)
    chosen, seen = [], {}
    for inst in instances:
        if seen.get(inst.task_family, 0) < n:
            chosen.append(inst)
            seen[inst.task_family] = seen.get(inst.task_family, 0) + 1
    return chosen


def _label_job(job: tuple[TaskInstance, np.ndarray, list]) -> list[bool]:
    return label_video(*job)


def _label_all(jobs: list[tuple[TaskInstance, np.ndarray, list]], workers: int) -> list[list[bool]]:
    """Score every video (the slow part: ~35 ms each), in ``workers`` processes when > 1."""
    if workers <= 1 or len(jobs) < 64:
        return [_label_job(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent holds torch/OpenBLAS thread pools that a fork can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_label_job, jobs, chunksize=32))


def build_teacher_data(
    train_bench: Benchmark | Sequence[TaskInstance],
    reasoner_samples: Sequence[tuple[TaskInstance, np.ndarray]] = (),
    *,
    instances_per_family: int | None = None,
    standins_per_instance: int = 2,
    seed: int = 0,
    workers: int = 1,
    extra_perturbations: Sequence[str] = (),
    mined_videos: Sequence[tuple[TaskInstance, np.ndarray]] = (),
) -> TeacherData:
    """Query-writing examples and labelled judging videos for ``train_bench``'s instances.

    Judging videos per instance: the ground truth, every applicable perturbation, and
    ``standins_per_instance`` Reasoner stand-ins; plus every given Reasoner sample (its
    instance is added if it is not among the chosen ones), and likewise every mined video (the
    teacher method's own output, ``core.train.mining``). Labels come from the scorers.
    ``extra_perturbations`` (``EXTRA_PERTURBATIONS``) add one video each where they apply,
    after the stand-ins, so every other video is what it would be without them.
    """
    t0 = time.perf_counter()
    all_instances = train_bench.instances if isinstance(train_bench, Benchmark) else list(train_bench)
    instances = _per_family([i for i in all_instances if i.benchmark == "synth"], instances_per_family)
    if not instances:
        raise InputError("train_bench", "has no synth instances", "a synthetic benchmark (core.bench.synth)")
    index = {inst.id: k for k, inst in enumerate(instances)}
    for inst, _ in [*reasoner_samples, *mined_videos]:
        if inst.id not in index:
            index[inst.id] = len(instances)
            instances.append(inst)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    data = TeacherData(instances=instances, videos=[], items=[], banks=[], kinds=[], first_frames=[], query_targets=[])
    counts: dict[str, int] = {}
    jobs: list[tuple[TaskInstance, np.ndarray, list]] = []

    def add(k: int, video: np.ndarray, source: str, queries) -> None:
        jobs.append((instances[k], video, queries))
        data.videos.append(torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).contiguous())
        data.items.append(QAVideo(k, source, []))
        key = source.split(":")[0]
        counts[key] = counts.get(key, 0) + 1

    for k, inst in enumerate(instances):
        bank = query_bank(inst.metadata)
        data.banks.append([[q.text for q in variants] for variants in bank])
        data.kinds.append([variants[0].kind for variants in bank])
        reference = [variants[0] for variants in bank]
        gt = ground_truth_video(inst)
        data.first_frames.append(gt[0])
        data.query_targets.append(RuleQueries.from_queries(rule_queries(inst.metadata)).to_json())
        add(k, gt, "gt", reference)
        broken = []
        for kind in PERTURBATIONS:
            v = perturbed_video(inst.metadata, kind, seed=seed)
            if v is not None:
                add(k, v, f"perturbation:{kind}", reference)
                broken.append(v)
        for _ in range(standins_per_instance):
            pool = [gt] + broken
            base = pool[int(rng.integers(len(pool)))]
            other = pool[int(rng.integers(len(pool)))]
            v, kind = standin_video(base, other, rng)
            add(k, v, f"standin:{kind}", reference)
        for kind in extra_perturbations:
            v = perturbed_video(inst.metadata, kind, seed=seed)
            if v is not None:
                add(k, v, f"perturbation:{kind}", reference)
    for source, videos in (("reasoner", reasoner_samples), ("mined", mined_videos)):
        for inst, video in videos:
            add(index[inst.id], np.asarray(video, dtype=np.uint8), source,
                [variants[0] for variants in query_bank(inst.metadata)])
    for item, labels in zip(data.items, _label_all(jobs, workers), strict=True):
        item.labels = labels
    data.seconds = round(time.perf_counter() - t0, 2)
    _, labels = data.pairs()
    counts.update({"instances": len(instances), "videos": len(data.items), "pairs": len(labels),
                   "pairs_yes": int(labels.sum()), "pairs_no": int((~labels).sum())})
    data.counts = counts
    log.info("teacher data: %s in %.1f s", counts, data.seconds)
    return data



# --------------------------------------------------------------------------- augmentation

def augment_video(frames: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving jitter of one (K, 3, H, W) video in [0, 1]."""

    def u() -> float:
        return float(torch.rand((), generator=gen))

    x = frames
    if cfg.brightness > 0:
        x = x * (1.0 + (2 * u() - 1) * cfg.brightness)
    if cfg.shift_px > 0 and u() < cfg.shift_prob:
        dy, dx = (int(torch.randint(-cfg.shift_px, cfg.shift_px + 1, (), generator=gen)) for _ in range(2))
        p = cfg.shift_px
        x = F.pad(x, (p, p, p, p), mode="replicate")[:, :, p + dy : p + dy + frames.shape[2], p + dx : p + dx + frames.shape[3]]
    if u() < cfg.blur_prob:
        lo, hi = cfg.blur_sigma
        x = blur(x, lo + (hi - lo) * u())
    if u() < cfg.noise_prob:
        lo, hi = cfg.noise_std
        x = x + torch.randn(x.shape, generator=gen) * (lo + (hi - lo) * u())
    return x.clamp(0.0, 1.0)
