"""Measure a trained Reasoner stage against issue 26's Reasoner gate, before the rest of the zoo exists.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/reasoner_gate.py \
        --stage runs/zoo-v2/stages/reasoner-<key12> --test-bench runs/zoo-v2/stages/bench-<key12>/bench-test

The same figures ``vlmt zoo eval`` writes in the cards (``core.zoo_eval.evaluate_reasoner``): the distilled
Reasoner at 4 steps, its undistilled transformer at ``--base-steps`` with the same seeds, the
``still`` floor through the codec, the four gate targets, and per family/criterion how many 4-step
videos break it. Prints one JSON line. Figures: docs/zoo-reasoner.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from core.bench.source import open_benchmark
from core.zoo import REASONER, REASONER_BASE
from core.zoo_eval import evaluate_reasoner, reasoner_stage_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=Path, required=True, help="A Reasoner stage folder (reasoner/ and reasoner-base/).")
    parser.add_argument("--test-bench", type=Path, required=True, help="The zoo config's bench-test folder.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the samples (vlmt zoo eval's: the zoo's seed, 0).")
    parser.add_argument("--base-steps", type=int, default=30, help="Euler steps of the undistilled transformer.")
    args = parser.parse_args()
    if problem := reasoner_stage_problem(args.stage):
        parser.error(problem)
    bench = open_benchmark(args.test_bench)
    t0 = time.time()
    gate = evaluate_reasoner(args.stage / REASONER, args.stage / REASONER_BASE / "transformer", bench, args.seed,
                             args.base_steps)
    print(json.dumps({**gate.model_dump(mode="json"), "targets": gate.targets(), "seconds": round(time.time() - t0)}))


if __name__ == "__main__":
    main()
