"""Benchmark (not a test): building the HTML report of a 60-item experiment.

    .venv/bin/python scripts/bench_report.py [--per-family 9]

Writes a fixture experiment (every synth family x 6 methods, real mp4/GIF files, results
through the run's storage code, one DuckDB file), then times ``build_report`` and measures
the report folder (every method's video and each item's ground truth copied beside it).
Targets: under 30 s and under 50 MB for 60 items.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-family", type=int, default=9, help="Items per synth family (7 families).")
    args = parser.parse_args()
    from core.report.build import build_report
    from tests.report_helpers import METHODS, fixture_experiment

    with tempfile.TemporaryDirectory() as tmp:
        db, _, instances = fixture_experiment(Path(tmp), per_family=args.per_family)
        t0 = time.perf_counter()
        page = build_report(db, Path(tmp) / "report")
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in page.parent.rglob("*") if p.is_file()) / 2**20
        videos = list((page.parent / "media").rglob("*.mp4"))
        truths = sum(v.name == "ground_truth.mp4" for v in videos)
    figures = {"items": len(instances), "methods": len(METHODS), "build_s": round(seconds, 2), "size_mib": round(size, 2),
               "videos": len(videos), "ground_truth_videos": truths}
    print(f"report of {len(instances)} items x {len(METHODS)} methods: {seconds:.1f} s (target < 30 s), "
          f"{size:.1f} MiB (target < 50 MB); {len(videos)} videos, {truths} of them ground truth")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
