"""Benchmark (not a test): `make demo` and `make test` from a fresh clone, timed, and the size of models/.

    python3 scripts/bench_fresh_clone.py [--repo .] [--shared ../shared] [--work /tmp/vlmt-fresh]
                                         [--skip-test] [--keep]

Clones ``--repo`` (its committed HEAD) into ``--work/vlmt``, links ``--shared`` beside it as
CI does, then runs, timing each: ``make setup`` (the virtual environment from scratch), ``make demo``,
and ``make test``. Prints one JSON line with the seconds, the exit codes, the size of
``models/`` in MiB and the machine's cores and load before the start (the issue-26 targets are
demo <= 5 minutes and test <= 15 minutes on an *idle* 2-core machine: a load above ~0.5 means the
figures are not of an idle machine). Needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, int]:
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    return round(time.perf_counter() - start, 1), rc


def folder_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vlmt-fresh"))
    parser.add_argument("--skip-test", action="store_true", help="time setup and demo only")
    parser.add_argument("--keep", action="store_true", help="leave the clone in place afterwards")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    clone = args.work / "vlmt"
    subprocess.run(["git", "clone", "-q", str(args.repo.resolve()), str(clone)], check=True)
    (args.work / "shared").symlink_to(args.shared.resolve())
    figures: dict = {
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                 check=True).stdout.strip(),
        "cores": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2), "models_mib": folder_mib(clone / "models"),
    }
    for target in ["setup", "demo"] + ([] if args.skip_test else ["test"]):
        seconds, rc = timed(["make", target], clone, args.work / f"{target}.log")
        figures[f"{target}_s"], figures[f"{target}_rc"] = seconds, rc
        if rc:
            break
    print(json.dumps(figures))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
