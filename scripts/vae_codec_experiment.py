"""Measure a candidate Reasoner VAE against the codec gate: ground truth through the VAE, scored.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/vae_codec_experiment.py --work runs/vae-exp \
        --temporal 0,0 --motion-weight 4 --crop 32 --clip-frames 9 --steps 3000
    .venv/bin/python scripts/vae_codec_experiment.py --vae runs/zoo-v2/stages/vae-<key12> \
        --test-bench runs/zoo-v2/stages/bench-<key12>/bench-test      # measure a trained VAE only

Trains a VAE from ``core.models.wan.build_vae`` on world-v2 train instances with
``core.train.vae``'s loss (``VaeTrainConfig``: ``--palette-weight``/``--margin`` for the palette
hinge, ``--motion-weight`` for the moving-pixel term, ``--crop``, ``--clip-frames``), then prints
one JSON line: wall seconds, PSNR, the codec ceiling (``core.zoo_eval.score_through_codec``) on test
instances (per family, strict success included), the rules the codec alone breaks, and per palette
colour the share of its pixels decoded within the scorer's tolerance.
Figures: docs/zoo.md, "Toward the second zoo".
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from core.bench.record import Purpose
from core.bench.source import open_benchmark
from core.bench.synth.generate import make_synth_benchmark, scene_of
from core.bench.synth.palette import RGB
from core.bench.synth.scene import render
from core.models.wan import WanReasonerArch, build_vae, decode_latents, encode_videos, tensor_to_frames
from core.scoring.synth import score_synth
from core.train.common import ground_truth_video
from core.train.vae import VaeTrainConfig, fit_latent_stats, reconstruction_psnr, stack_videos, train_vae
from core.zoo_eval import score_videos


def shuffled_palette_videos(instances: list, copies: int, seed: int = 0) -> list[np.ndarray]:
    """Each instance's ground truth re-rendered ``copies`` times, every colour id in a random palette colour.

    A rare colour (the white cursor: one sprite in one family) is then as common as any; the
    rendering is exact, blended sprite edges included (``render(..., rgb=...)``).
    """
    rng = np.random.default_rng(seed)
    out = []
    for inst in instances:
        meta = inst.metadata
        _, _, scene = scene_of(meta)
        for _ in range(copies):
            out.append(render(scene, meta["width"], meta["height"], rgb=RGB[rng.permutation(len(RGB))]))
    return out


def colour_fidelity(decoded: list[np.ndarray], videos: list[np.ndarray], tolerance: float = 60.0) -> dict[str, float]:
    """Per palette colour: the share of its exact ground-truth pixels decoded within ``tolerance`` (RGB units)."""
    from core.bench.synth.palette import NAMES

    truth = np.stack(videos).reshape(-1, 3).astype(np.float32)
    got = np.stack(decoded).reshape(-1, 3).astype(np.float32)
    shares = {}
    for k, name in enumerate(NAMES):
        exact = (truth == RGB[k]).all(axis=1)
        if exact.sum() >= 50:
            shares[name] = round(float((np.linalg.norm(got[exact] - RGB[k], axis=1) < tolerance).mean()), 3)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/vae-exp"))
    parser.add_argument("--mult", default="1,2,2", help="vae_dim_mult: its length - 1 spatial halvings")
    parser.add_argument("--temporal", default=None, help="vae_temporal_downsample as 0/1 per level, e.g. 0,1 (default: all 1)")
    parser.add_argument("--z", type=int, default=16)
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--residual", action="store_true")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--palette-weight", type=float, default=0.0, help="VaeTrainConfig.palette_weight")
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--train-per-family", type=int, default=60)
    parser.add_argument("--palette-shuffle", type=int, default=0,
                        help="extra copies of each training video rendered with the palette's colours shuffled")
    parser.add_argument("--motion-weight", type=float, default=0.0,
                        help="weight of an extra squared error on pixels that change between frames")
    parser.add_argument("--clip-frames", type=int, default=None, help="VaeTrainConfig.clip_frames")
    parser.add_argument("--crop", type=int, default=16, help="VaeTrainConfig.crop")
    parser.add_argument("--colour-aug", type=float, default=0.3, help="VaeTrainConfig.colour_aug")
    parser.add_argument("--vae", type=Path, default=None,
                        help="measure this trained VAE folder (e.g. a zoo stage's) instead of training one")
    parser.add_argument("--test-bench", type=Path, default=None, help="test instances (default: <work>/bench-test)")
    args = parser.parse_args()
    if args.vae is not None:
        measure(AutoencoderKLWan.from_pretrained(args.vae).eval(), args.test_bench or args.work / "bench-test",
                {"vae": str(args.vae)})
        return

    train, test = args.work / "bench-train", args.work / "bench-test"
    for path, purpose, n in ((train, Purpose.TRAIN, args.train_per_family), (test, Purpose.TEST, 10)):
        if not (path / "VBVR-Bench.json").is_file():
            make_synth_benchmark(path, per_family=n, seed=0, purpose=purpose)
    instances = open_benchmark(train).instances
    videos = [ground_truth_video(i) for i in instances] + shuffled_palette_videos(instances, args.palette_shuffle)
    mult = [int(m) for m in args.mult.split(",")]
    arch = WanReasonerArch(vae_dim_mult=mult, vae_z_dim=args.z, vae_base_dim=args.base, vae_residual=args.residual,
                           vae_temporal_downsample=[t == "1" for t in args.temporal.split(",")] if args.temporal
                           else [True] * (len(mult) - 1))
    torch.manual_seed(0)
    vae = build_vae(arch)
    cfg = VaeTrainConfig(steps=args.steps, lr=args.lr, colour_aug=args.colour_aug, clip_frames=args.clip_frames,
                         crop=args.crop, palette_weight=args.palette_weight, palette_margin=args.margin,
                         motion_weight=args.motion_weight)
    start = time.perf_counter()
    train_vae(vae, videos, cfg)
    seconds = time.perf_counter() - start
    fit_latent_stats(vae, videos[:64])
    vae.save_pretrained(args.work / "vae")
    measure(vae, args.test_bench or test, {"args": vars(args) | {"work": str(args.work)}, "train_s": round(seconds)})


@torch.no_grad()
def measure(vae, test: Path, head: dict) -> None:
    """Print the codec figures of ``vae`` on the test instances at ``test`` as one JSON line.

    Each test video goes through the VAE once for the scores, the broken rules and the colours
    (``score_through_codec``'s round trip); the PSNR is ``reconstruction_psnr``'s, on unquantised decodes.
    """
    instances = open_benchmark(test).instances
    gt = [ground_truth_video(i) for i in instances]
    decoded = [tensor_to_frames(v) for k in range(0, len(gt), 8)
               for v in decode_latents(vae, encode_videos(vae, stack_videos(gt[k : k + 8])))]
    ceiling = score_videos(list(zip(instances, decoded, strict=True)), steps=0)
    failures: Counter = Counter()  # which rules the codec alone breaks, the gate's strict failures
    for inst, video in zip(instances, decoded, strict=True):
        failures.update(f"{inst.task_family}/{c.name}" for c in score_synth(inst, video).criteria
                        if c.score < (0.999 if c.kind == "goal" else 1.0))
    print(json.dumps(head | {"parameters": sum(p.numel() for p in vae.parameters()),
                             "psnr_db": round(reconstruction_psnr(vae, gt), 2), "ceiling": ceiling.model_dump(),
                             "broken_criteria": dict(failures.most_common()),
                             "colours_within_tolerance": colour_fidelity(decoded[::3], gt[::3])}))

if __name__ == "__main__":
    main()
