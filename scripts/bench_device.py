"""Benchmark (not a test): the method on this machine's device, as the pipeline places it, in one prepared run.

    .venv/bin/python scripts/bench_device.py [--models models] [--limit 7] [--methods vanilla,teacher]
                                             [--max-steps 10] [--device cuda] [--bench DIR] [--json]

Made for a session with a GPU, whose device time is short: one command that

1. loads the Reasoner and the Teacher the way ``vlmt evaluate`` does on this device (on CUDA:
   bfloat16 frozen weights, bf16 autocast, gradient and activation checkpointing; on the CPU:
   float32) and prints that arrangement;
2. runs the methods on ``--limit`` test items (one per synth family first), printing mean score,
   seconds and Reasoner NFE per item, and the peak memory (CUDA: ``torch.cuda.max_memory_allocated``;
   CPU: the process's maximum resident set);
3. frees the models, loads the Reasoner in the other precision (float32 after bfloat16, or the
   reverse on the CPU) and remakes the vanilla videos of the same items from the same noise:
   the mean absolute difference (0..255 levels) says how much the GPU's bfloat16 changes a video.

Point ``--models`` at a folder with ``reasoner/``, ``surrogate-decoder/`` and ``teacher/`` (e.g.
Wan2.2-TI2V-5B, a surrogate from ``vlmt zoo surrogate``, Qwen3-VL-4B) and ``--bench`` at a
benchmark directory to run a real checkpoint; videos are then made at each item's own size.
The last line is one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def vanilla_videos(reasoner, instances, cfg, base_seed: int) -> list[np.ndarray]:
    """Each item's vanilla video exactly as the vanilla method makes it (its seed, sampler and guidance)."""
    from core.media import read_image
    from core.method.compare import item_seed

    videos = []
    for inst in instances:
        cond = reasoner.prepare(read_image(inst.first_frame), inst.prompt, item_seed(inst, base_seed),
                                int(inst.metadata["n_frames"]))
        videos.append(reasoner.generate(cond, cfg.optim.sampler_steps, cfg.optim.guidance))
    return videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models", help="A folder with reasoner/, surrogate-decoder/, teacher/.")
    parser.add_argument("--bench", default=None, help="A benchmark directory (default: synth test items).")
    parser.add_argument("--limit", type=int, default=7, help="Items, spread over families.")
    parser.add_argument("--methods", default="vanilla,teacher")
    parser.add_argument("--max-steps", type=int, default=10, help="The teacher method's LoRA updates per item.")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object on the last line.")
    args = parser.parse_args()

    from core.bench.record import Purpose
    from core.bench.source import open_benchmark, spread_over_families
    from core.bench.synth.generate import make_synth_benchmark
    from core.method.compare import compare, summarise_methods, synth_score
    from core.method.methods import Method, MethodConfig
    from core.method.optimise import OptimConfig, learning_rate_source, resolve_optim
    from core.method.reasoner import ReasonerAdapter
    from core.models.teacher import load_teacher

    models = Path(args.models)
    reasoner_dir, surrogate_dir = models / "reasoner", models / "surrogate-decoder"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    methods = [Method(m.strip()) for m in args.methods.split(",") if m.strip()]
    cfg = MethodConfig(optim=resolve_optim(OptimConfig(max_steps=args.max_steps), reasoner_dir))
    with tempfile.TemporaryDirectory() as tmp:
        bench = (open_benchmark(args.bench) if args.bench
                 else make_synth_benchmark(Path(tmp) / "bench", per_family=1, seed=args.seed, purpose=Purpose.TEST))
        instances = spread_over_families(bench.instances, args.limit)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_load = time.perf_counter()
        reasoner = ReasonerAdapter.from_paths(reasoner_dir, surrogate_dir, device=device)
        teacher = load_teacher(models / "teacher", device=str(device))
        load_seconds = time.perf_counter() - t_load
        arrangement = {
            "device": str(device),
            "reasoner_weights": str(reasoner.transformer.dtype),
            "reasoner_text_encoder": str(reasoner.pipe.text_encoder.dtype),
            "reasoner_autocast": str(reasoner.autocast_dtype),
            "reasoner_checkpointing": bool(reasoner.transformer.is_gradient_checkpointing),
            "teacher_weights": str(teacher.model.dtype),
            "teacher_checkpointing": any(getattr(m, "gradient_checkpointing", False) for m in teacher.model.modules()),
            "learning_rate": learning_rate_source(OptimConfig(), reasoner_dir),
        }
        print(json.dumps(arrangement, indent=1))
        t0 = time.perf_counter()
        results = compare(reasoner, teacher, instances, methods, cfg, base_seed=args.seed)
        run_seconds = time.perf_counter() - t0
        peak = peak_memory_gib(device)
        summary = summarise_methods(results)
        for name, s in summary.items():
            print(f"{name:10s} score {s.mean_score:.3f}  {s.seconds_per_item:7.2f} s/item  {s.nfe_per_item:6.1f} NFE/item"
                  f"  errors {s.n_errors}")
        print(f"{len(instances)} items in {run_seconds:.1f} s (models loaded in {load_seconds:.1f} s); peak memory "
              f"{peak:.2f} GiB ({'CUDA allocated' if device.type == 'cuda' else 'process RSS'})")
        first = vanilla_videos(reasoner, instances, cfg, args.seed)
        other = "fp32" if reasoner.autocast_dtype is not None else "bf16"
        del reasoner, teacher
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        again = vanilla_videos(ReasonerAdapter.from_paths(reasoner_dir, surrogate_dir, device=device, precision=other),
                               instances, cfg, args.seed)
        diffs = [float(np.abs(a.astype(np.float64) - b).mean()) for a, b in zip(first, again, strict=True)]
        print(f"vanilla videos, this device's precision vs {other}: mean |difference| {np.mean(diffs):.3f} of 255 "
              f"(per item max {max(diffs):.3f})")
        synth = [i for i, inst in enumerate(instances) if inst.benchmark == "synth"]
        scores = {name: [synth_score(instances[i], videos[i]) for i in synth] for name, videos in (("this", first), (other, again))}
        if synth:
            changed = sum(a != b for a, b in zip(scores["this"], scores[other], strict=True))
            print(f"their synth scores: {np.mean(scores['this']):.3f} vs {np.mean(scores[other]):.3f} ({changed} of "
                  f"{len(synth)} items scored differently)")
    if args.json:
        print(json.dumps({"arrangement": arrangement, "items": len(instances), "run_seconds": round(run_seconds, 1),
                          "load_seconds": round(load_seconds, 1), "peak_memory_gib": round(peak, 2),
                          "methods": {k: {"score": v.mean_score, "seconds_per_item": v.seconds_per_item,
                                          "nfe_per_item": v.nfe_per_item, "errors": v.n_errors} for k, v in summary.items()},
                          "precision_check": {"other": other, "mean_abs_diff": float(np.mean(diffs)),
                                              "max_item_mean_abs_diff": max(diffs), "scores": scores}},
                         separators=(",", ":")))


if __name__ == "__main__":
    main()
