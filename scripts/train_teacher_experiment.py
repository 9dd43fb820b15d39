"""Train the tiny Teacher on a fresh synthetic benchmark and print its evaluation figures.

Usage (tuning runs on a shared machine should keep --threads 1):

    python scripts/train_teacher_experiment.py --steps 1500 --threads 2 --work /tmp/teacher-exp
    python scripts/train_teacher_experiment.py --minutes 3 --set text_layers=2 --set lr=3e-3

``--work`` keeps the generated benchmarks between runs (they are regenerated only when
missing); ``--set key=value`` overrides TeacherTrainConfig fields, or TeacherArchConfig
fields when the key is one of the architecture's.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from core.bench.record import Purpose
from core.bench.source import open_benchmark
from core.bench.synth.generate import make_synth_benchmark
from core.models.teacher import TeacherArchConfig
from core.train.teacher import (
    TeacherTrainConfig,
    train_teacher,
)
from core.train.teacher_data import TeacherData, build_teacher_data
from core.train.teacher_eval import evaluate_teacher


def _bench(path: Path, per_family: int, purpose: Purpose, seed: int):
    if (path / "VBVR-Bench.json").is_file() and len(open_benchmark(path).instances) >= 7 * per_family:
        return open_benchmark(path)
    return make_synth_benchmark(path, per_family=per_family, seed=seed, purpose=purpose)


def _cached_data(path: Path, build) -> TeacherData:
    """Labelled data is the slow part of a run; experiments that share it reuse it."""
    if path.is_file():
        return torch.load(path, weights_only=False)
    data = build()
    torch.save(data, path)
    return data


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="Directory for benchmarks and the model (default: a temp dir).")
    ap.add_argument("--train-per-family", type=int, default=None, help="Default: the config's instances_per_family.")
    ap.add_argument("--test-per-family", type=int, default=10)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None, help="Wall-time cap on the step loop.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--micro", action="store_true", help="Start from TeacherTrainConfig.micro().")
    ap.add_argument("--no-cache", action="store_true", help="Rebuild the labelled data even if --work has it.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    cfg = TeacherTrainConfig.micro() if args.micro else TeacherTrainConfig()
    arch_fields = set(TeacherArchConfig.model_fields)
    arch_updates, updates = {}, {}
    for item in args.set:
        key, value = item.split("=", 1)
        (arch_updates if key in arch_fields else updates)[key] = _parse_value(value)
    if args.steps is not None:
        updates["steps"] = args.steps
    if args.minutes is not None:
        updates["max_minutes"] = args.minutes
    updates["threads"] = args.threads
    cfg = cfg.model_copy(update={**updates, "arch": cfg.arch.model_copy(update=arch_updates)})
    cfg = TeacherTrainConfig.model_validate(cfg.model_dump())

    work = args.work or Path(tempfile.mkdtemp(prefix="teacher-exp-"))
    per_family = args.train_per_family or cfg.instances_per_family or 60
    t0 = time.perf_counter()
    train = _bench(work / "bench-train", per_family, Purpose.TRAIN, cfg.seed)
    test = _bench(work / "bench-test", args.test_per_family, Purpose.TEST, cfg.seed)
    t_bench = time.perf_counter() - t0
    print(f"config: {cfg.model_dump_json()}")
    t1 = time.perf_counter()
    workers = cfg.label_workers or args.threads
    tag = f"{cfg.instances_per_family}-{cfg.standins_per_instance}-{cfg.seed}"
    train_data = None if args.no_cache else _cached_data(work / f"train-data-{tag}.pt", lambda: build_teacher_data(
        train, instances_per_family=cfg.instances_per_family, standins_per_instance=cfg.standins_per_instance,
        seed=cfg.seed, workers=workers))
    report = train_teacher(work / "teacher", train, cfg, data=train_data)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    test_data = None if args.no_cache else _cached_data(work / f"test-data-{args.test_per_family}.pt", lambda: build_teacher_data(
        test, instances_per_family=args.test_per_family, standins_per_instance=2, seed=12345, workers=workers))
    ev = evaluate_teacher(work / "teacher", test, data=test_data)
    t_eval = time.perf_counter() - t2
    print(json.dumps(report.model_dump(mode="json", exclude={"curve"}), indent=1))
    print("curve:", report.curve)
    print(json.dumps(ev.model_dump(mode="json"), indent=1))
    print(f"\nbenchmarks {t_bench:.0f} s | train_teacher {t_train:.0f} s (data {report.seconds_data:.0f} s, "
          f"steps {report.seconds_train:.0f} s) | eval {t_eval:.0f} s | folder {report.size_mib:.2f} MiB | "
          f"params {report.params / 1e6:.2f} M")
    print(f"SUMMARY acc={ev.accuracy:.4f} goal={ev.accuracy_goal:.4f} process={ev.accuracy_process:.4f} "
          f"bal={ev.balanced_accuracy:.4f} reasoner({ev.reasoner_source})={ev.accuracy_reasoner:.4f} "
          f"false_yes={ev.false_yes_rate:.4f} false_pass={ev.false_pass_rate:.4f} json_valid={ev.query_valid_rate:.4f} "
          f"json_content={ev.query_content_rate:.4f} json_exact={ev.query_exact_rate:.4f}")


if __name__ == "__main__":
    main()
