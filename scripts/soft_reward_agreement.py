"""Benchmark (not a test): how well the oracle reward's relaxation (``core.scoring.soft``) tracks
the rule-based scorer (``core.scoring.synth``) on the synthetic benchmark.

    .venv/bin/python scripts/soft_reward_agreement.py [--per-family 5] [--seed 0] [--temperature 20]
                                                      [--blur SIGMA_PX] [--noise SIGMA_LEVELS] [--json]

For ``--per-family`` test instances of every family, it renders the ground truth, every standard
perturbation that applies, ``erase`` and ``still``, and scores each video both ways. It prints
per family the mean soft score of the ground truth and of each class, how often the ground truth
ranks above each class, and the Spearman correlation of soft and hard scores (pooled, and per
family); the last line is one JSON object with ``--json``. ``--blur`` and ``--noise`` degrade every
video first (a Gaussian blur in pixels, Gaussian noise in 0..255 levels), as a generated video is.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import spearmanr  # noqa: E402

from core.bench.record import Purpose  # noqa: E402
from core.bench.synth.family import EXTRA_PERTURBATIONS, PERTURBATIONS  # noqa: E402
from core.bench.synth.generate import make_synth_benchmark, perturbed_video, scene_of  # noqa: E402
from core.bench.synth.scene import render  # noqa: E402
from core.scoring.soft import TEMPERATURE, soft_score  # noqa: E402
from core.scoring.synth import score_synth  # noqa: E402


def degraded(video: np.ndarray, blur: float, noise: float, seed: int) -> np.ndarray:
    if not blur and not noise:
        return video
    out = video.astype(np.float64)
    if blur:
        from scipy.ndimage import gaussian_filter

        out = gaussian_filter(out, sigma=(0, blur, blur, 0))
    if noise:
        out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def videos_of(meta: dict) -> dict[str, np.ndarray]:
    """The ground truth and every perturbation that applies to the instance (lossless renders)."""
    out = {"ground_truth": render(scene_of(meta)[2], meta["width"], meta["height"])}
    for kind in PERTURBATIONS + EXTRA_PERTURBATIONS:
        video = perturbed_video(meta, kind)
        if video is not None:
            out[kind] = video
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=TEMPERATURE)
    parser.add_argument("--blur", type=float, default=0.0)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bench = make_synth_benchmark(tmp, args.per_family, seed=args.seed, purpose=Purpose.TEST)
        rows = []
        for inst in bench.instances:
            for n, (kind, video) in enumerate(videos_of(inst.metadata).items()):
                video = degraded(video, args.blur, args.noise, seed=n)
                with torch.no_grad():
                    soft = float(soft_score(torch.from_numpy(video).float(), inst.metadata, args.temperature))
                rows.append({"family": inst.task_family, "item": inst.id, "kind": kind, "soft": soft,
                             "hard": score_synth(inst, video).score})
    pooled = float(spearmanr([r["soft"] for r in rows], [r["hard"] for r in rows]).statistic)
    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    per_family = {f: float(spearmanr([r["soft"] for r in rs], [r["hard"] for r in rs]).statistic) for f, rs in by_family.items()}
    # the ground truth against each class, item by item
    gt = {r["item"]: r["soft"] for r in rows if r["kind"] == "ground_truth"}
    above: dict[str, list[bool]] = defaultdict(list)
    margin: dict[str, float] = defaultdict(lambda: np.inf)
    means: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        means[r["family"]][r["kind"]].append(r["soft"])
        if r["kind"] != "ground_truth":
            above[r["kind"]].append(gt[r["item"]] > r["soft"])
            margin[r["kind"]] = min(margin[r["kind"]], gt[r["item"]] - r["soft"])
    kinds = ["ground_truth", *PERTURBATIONS, *EXTRA_PERTURBATIONS]
    print(f"soft score (temperature {args.temperature:g}), mean per family and class; '-' where the class does not apply")
    print("family".ljust(18) + "".join(k[:11].rjust(12) for k in kinds))
    for family, by_kind in sorted(means.items()):
        print(family.ljust(18) + "".join((f"{np.mean(by_kind[k]):.3f}" if by_kind.get(k) else "-").rjust(12) for k in kinds))
    print("ground truth above the class (items; smallest margin): "
          + ", ".join(f"{k} {sum(v)}/{len(v)} ({margin[k]:.3f})" for k, v in above.items()))
    print(f"ground truth: lowest soft score {min(gt.values()):.3f}")
    print(f"Spearman(soft, hard) over {len(rows)} videos ({len(bench.instances)} items): {pooled:.3f}; per family: "
          + ", ".join(f"{f} {v:.3f}" for f, v in sorted(per_family.items())))
    if args.json:
        print(json.dumps({"spearman": pooled, "spearman_by_family": per_family, "n_videos": len(rows),
                          "gt_above": {k: [sum(v), len(v)] for k, v in above.items()},
                          "min_margin": dict(margin), "min_gt": min(gt.values())}))


if __name__ == "__main__":
    main()
