"""Generate the synthetic benchmark on disk in the VBVR layout.

Train and test instances never overlap, by construction: an instance's purpose is a
function of its content. ``sha256(family + canonical layout) % 5 == 0`` makes it a
*test* instance, anything else a *train* instance, and the sampler redraws until the
layout lands in the requested half. So no seed choice can put one layout in both.
Seeds are also namespaced by purpose (``SeedSequence([purpose, family, seed, index])``),
so ``--seed 0`` for train and for test are unrelated streams. Evaluation defaults to test.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from core.bench.layout import Benchmark
from core.bench.record import Purpose, Split
from core.bench.synth.families import FAMILIES, get_family
from core.bench.synth.family import Resample, SynthFamily
from core.bench.synth.scene import Scene, render
from core.io import write_json_atomic, write_text_atomic
from core.media import write_image, write_video

log = logging.getLogger(__name__)

GENERATOR = "vlmt-synth"
FORMAT_VERSION = 1
#: the synthetic world's rules and rendering; 2 since 2026-12-05 (instructions name the target, docs/benchmarks.md).
#: Part of the zoo's benchmark stage key, so a work dir never reuses instances of another world.
WORLD_VERSION = 2
TEST_BUCKETS = 5  # one in five of all layouts is reserved for test
_PURPOSE_CODE = {Purpose.TRAIN: 0, Purpose.TEST: 1}
_MAX_DRAWS = 10_000


class RenderConfig(BaseModel):
    """How instances are rendered. Defaults: 64x64, 17 frames, 8 fps."""

    width: int = Field(64, ge=16)
    height: int = Field(64, ge=16)
    n_frames: int = Field(17, ge=5, le=1000)
    fps: float = Field(8.0, gt=0)

    @model_validator(mode="after")
    def _even(self) -> RenderConfig:
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even for H.264 (got {self.width}x{self.height})")
        return self


def layout_purpose(family: SynthFamily, layout: dict[str, Any]) -> Purpose:
    digest = hashlib.sha256((family.name + json.dumps(layout, sort_keys=True)).encode()).digest()
    return Purpose.TEST if int.from_bytes(digest[:8], "big") % TEST_BUCKETS == 0 else Purpose.TRAIN


def sample_layout(family: SynthFamily, purpose: Purpose, seed: int, index: int) -> dict[str, Any]:
    """The index-th layout of ``family`` for ``purpose`` and ``seed``: deterministic."""
    rng = np.random.default_rng(np.random.SeedSequence([_PURPOSE_CODE[purpose], family.number, seed, index]))
    for _ in range(_MAX_DRAWS):
        try:
            layout = family.sample(rng)
        except Resample:
            continue
        if layout_purpose(family, layout) == purpose:
            return layout
    raise RuntimeError(f"{family.name}: no valid {purpose.value} layout in {_MAX_DRAWS} draws (seed {seed}, index {index})")


def build_meta(
    family: SynthFamily, layout: dict[str, Any], scene: Scene, cfg: RenderConfig, purpose: Purpose, seed: int, index: int
) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "family": family.name,
        "task_id": family.task_id,
        "faculty": family.faculty.value,
        "split": family.split.value,
        "purpose": purpose.value,
        "seed": seed,
        "index": index,
        "width": cfg.width,
        "height": cfg.height,
        "n_frames": cfg.n_frames,
        "fps": cfg.fps,
        "grid": family.grid,
        "layout": layout,
        "scoring": family.scoring_spec(layout, scene),
        "trajectory": scene.to_json(),
    }


def write_instance(
    out_dir: Path, family: SynthFamily, layout: dict[str, Any], cfg: RenderConfig, purpose: Purpose, seed: int, index: int
) -> dict[str, Any]:
    """Write one instance directory in the VBVR layout, plus our meta.json."""
    scene = family.solve(layout, cfg.n_frames)
    video = render(scene, cfg.width, cfg.height)
    meta = build_meta(family, layout, scene, cfg, purpose, seed, index)
    write_image(out_dir / "first_frame.png", video[0])
    write_image(out_dir / "final_frame.png", video[-1])
    write_video(out_dir / "ground_truth.mp4", video, fps=cfg.fps)
    write_text_atomic(out_dir / "prompt.txt", family.prompt(layout) + "\n")
    write_json_atomic(out_dir / "meta.json", meta)  # last: its presence marks a complete instance
    return meta


def select_families(split: Split | None = None, families: Iterable[str] | None = None) -> list[SynthFamily]:
    chosen = [get_family(n) for n in families] if families else list(FAMILIES.values())
    return [f for f in chosen if split is None or f.split == split]


def make_synth_benchmark(
    out: str | Path,
    per_family: int,
    seed: int = 0,
    split: Split | None = None,
    purpose: Purpose = Purpose.TEST,
    cfg: RenderConfig | None = None,
    families: Iterable[str] | None = None,
) -> Benchmark:
    """Generate ``per_family`` instances of each selected family under ``out`` and read them back."""
    from core.bench.vbvr import read_vbvr, split_dir_name, write_index

    cfg = cfg or RenderConfig()
    out = Path(out)
    chosen = select_families(split, families)
    if not chosen:
        raise ValueError(f"no synth family matches split={split} families={families}")
    n_tasks = {s: sum(f.split == s for f in chosen) for s in Split}
    for family in chosen:
        task_dir = out / split_dir_name(family.split, n_tasks[family.split]) / family.task_id
        for index in range(per_family):
            layout = sample_layout(family, purpose, seed, index)
            write_instance(task_dir / f"{index:05d}", family, layout, cfg, purpose, seed, index)
        log.info("wrote %d instances of %s", per_family, family.name)
    bench = read_vbvr(out)
    write_index(out, bench.instances)
    return bench


def scene_of(instance_meta: dict[str, Any]) -> tuple[SynthFamily, dict[str, Any], Scene]:
    """Re-solve an instance from its metadata (family, layout, frame count)."""
    family = get_family(instance_meta["family"])
    layout = instance_meta["layout"]
    return family, layout, family.solve(layout, instance_meta["n_frames"])


def perturbed_video(instance_meta: dict[str, Any], kind: str, seed: int = 0) -> np.ndarray | None:
    """The instance's ground truth with one rule broken by perturbation ``kind``, or None.

    None means the class does not apply to this instance (e.g. no obstacle to pass through).
    """
    family, layout, scene = scene_of(instance_meta)
    broken = family.perturb(kind, layout, scene, np.random.default_rng(seed))
    if broken is None:
        return None
    return render(broken, instance_meta["width"], instance_meta["height"])
