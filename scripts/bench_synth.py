"""Benchmark (not a test): time generating and scoring the synthetic benchmark.

    .venv/bin/python scripts/bench_synth.py [--instances 60]

Prints the wall time of generation (render + PNG + H.264 + metadata) and of scoring the
ground-truth mp4s; the target on a 2-core CPU is under 30 s for 60 instances together.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from core.bench.synth.families import FAMILIES
from core.bench.synth.generate import make_synth_benchmark
from core.scoring import score_benchmark, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=60)
    args = parser.parse_args()
    per_family = math.ceil(args.instances / len(FAMILIES))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bench = make_synth_benchmark(Path(tmp) / "bench", per_family, seed=0)
        t1 = time.perf_counter()
        summary = summarise(score_benchmark(bench, ground_truth=True))
        t2 = time.perf_counter()
    n = len(bench.instances)
    print(f"instances: {n} ({per_family} per family x {len(FAMILIES)} families)")
    print(f"generate:  {t1 - t0:6.2f} s  ({1000 * (t1 - t0) / n:.0f} ms/instance)")
    print(f"score:     {t2 - t1:6.2f} s  ({1000 * (t2 - t1) / n:.0f} ms/instance)")
    print(f"total:     {t2 - t0:6.2f} s  (target < 30 s)")
    print(f"ground truth: mean score {summary.overall.mean_score:.3f}, strict success {summary.overall.success_rate:.1%}")


if __name__ == "__main__":
    main()
