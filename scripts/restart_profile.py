"""Where the Reasoner's samples are decided: ground truth noised to each sigma and integrated back.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/restart_profile.py \\
        --stage runs/zoo-v2/stages/reasoner-<key12> --test-bench runs/zoo-v2/stages/bench-<key12>/bench-test \\
        --sigmas 0,0.3,0.5,0.7,1

Uses the stage's undistilled transformer (``reasoner-base/``) and its pipeline's VAE and text encoder
(``core.zoo_eval.restart_profile``). Prints one JSON line per sigma: score and strict success, ID and OOD.
At sigma 0 it is the codec's ceiling, at 1 a sample from noise. Figures: docs/zoo-reasoner.md, "Where a sample is decided".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from core.bench.source import open_benchmark
from core.models.wan import load_reasoner
from core.zoo import REASONER, REASONER_BASE
from core.zoo_eval import check_sigmas, reasoner_stage_problem, restart_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=Path, required=True, help="A Reasoner stage folder (reasoner/ and reasoner-base/).")
    parser.add_argument("--test-bench", type=Path, required=True, help="The zoo config's bench-test folder.")
    parser.add_argument("--sigmas", default="0,0.3,0.5,0.7,1", help="Comma-separated noise levels in [0, 1].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-steps", type=int, default=30, help="Euler steps for the whole range (sigma 1 to 0).")
    args = parser.parse_args()
    if problem := reasoner_stage_problem(args.stage):
        parser.error(problem)
    try:
        sigmas = check_sigmas([float(s) for s in args.sigmas.split(",")])
    except ValueError as err:
        parser.error(f"--sigmas {args.sigmas!r}: expected comma-separated numbers in [0, 1] ({err})")
    from diffusers import WanTransformer3DModel

    bench = open_benchmark(args.test_bench)
    pipe = load_reasoner(args.stage / REASONER)
    base = WanTransformer3DModel.from_pretrained(args.stage / REASONER_BASE / "transformer").eval()
    t0 = time.time()
    for sigma, ev in restart_profile(pipe, base, bench.instances, sigmas, args.seed, args.full_steps).items():
        print(json.dumps({"sigma": sigma, **ev.model_dump(mode="json"), "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
