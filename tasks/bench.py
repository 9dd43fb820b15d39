"""Benchmark tasks: generate the synthetic benchmark and score videos."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from core.bench.record import Purpose, Split
from core.bench.source import open_benchmark
from core.bench.synth.generate import RenderConfig, make_synth_benchmark
from core.scoring import score_benchmark, summarise


@task(name="generate-synth-benchmark", retries=0)
def generate_synth_benchmark(
    out: str, per_family: int, seed: int, split: str | None, purpose: str, render: dict | None = None
) -> str:
    """Write the synthetic benchmark; returns its directory."""
    bench = make_synth_benchmark(
        Path(out), per_family, seed=seed, split=Split(split) if split else None,
        purpose=Purpose(purpose), cfg=RenderConfig(**(render or {})),
    )
    return str(bench.root)


@task(name="score-benchmark")
def score_benchmark_videos(bench_dir: str, videos_dir: str | None = None) -> dict:
    """Score a benchmark's videos (its ground truth when ``videos_dir`` is None); returns the summary."""
    bench = open_benchmark(bench_dir)
    items = score_benchmark(bench, Path(videos_dir) if videos_dir else None, ground_truth=videos_dir is None)
    return summarise(items).model_dump(mode="json")
