"""Zoo training stages as cached Prefect tasks (bodies in ``core.zoo``).

Inputs and outputs are paths and JSON; every task takes the ``key`` its flow computed from
the stage's own config, the identity of its inputs and the code version (see
``tasks.caching``), and returns ``{"path", "key", "seconds"}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from core import zoo, zoo_eval
from core.io import write_json_atomic
from core.train.checkpoint import StageCheckpoint
from core.train.surrogate import SurrogateForConfig, distil_surrogate_for
from tasks.caching import build_into, given_key

_cached = {"cache_key_fn": given_key, "persist_result": True}


@task(name="zoo-benchmarks", **_cached)
def benchmarks(target: str, cfg_json: str, key: str) -> dict:
    cfg = zoo.ZooConfig.model_validate_json(cfg_json)
    return build_into(target, key, lambda tmp: zoo.make_benchmarks(tmp, cfg))


def _checkpoint(target: str, key: str, cfg: zoo.ZooConfig) -> StageCheckpoint:
    """A training stage's checkpoints: ``<target>.ckpt``, valid for ``key`` only (``core.train.checkpoint``)."""
    return StageCheckpoint.beside(target, key, cfg.checkpoint_seconds)


@task(name="zoo-vae", **_cached)
def vae(bench_dir: str, target: str, cfg_json: str, key: str) -> dict:
    cfg = zoo.ZooConfig.model_validate_json(cfg_json)
    ckpt = _checkpoint(target, key, cfg)
    return build_into(target, key, lambda tmp: zoo.train_reasoner_vae(Path(bench_dir) / "bench-train", tmp, cfg, ckpt), ckpt)


@task(name="zoo-surrogate-decoder", **_cached)
def surrogate(vae_dir: str, bench_dir: str, target: str, cfg_json: str, key: str) -> dict:
    cfg = zoo.ZooConfig.model_validate_json(cfg_json)
    ckpt = _checkpoint(target, key, cfg)
    return build_into(
        target, key, lambda tmp: zoo.train_surrogate_decoder(Path(vae_dir), Path(bench_dir) / "bench-train", tmp, cfg, ckpt),
        ckpt,
    )


@task(name="zoo-reasoner", **_cached)
def reasoner(vae_dir: str, bench_dir: str, target: str, cfg_json: str, key: str) -> dict:
    """Flow matching then distillation; ``target`` holds ``reasoner-base/`` and ``reasoner/``."""
    cfg = zoo.ZooConfig.model_validate_json(cfg_json)
    ckpt = _checkpoint(target, key, cfg)

    def build(tmp: Path) -> None:
        zoo.train_reasoner(Path(vae_dir), Path(bench_dir) / "bench-train", tmp / zoo.REASONER_BASE, tmp / zoo.REASONER,
                           cfg, ckpt)

    return build_into(target, key, build, ckpt)


@task(name="zoo-teacher", **_cached)
def teacher(bench_dir: str, reasoner_dir: str, target: str, cfg_json: str, key: str, surrogate_dir: str | None = None) -> dict:
    cfg = zoo.ZooConfig.model_validate_json(cfg_json)
    ckpt = _checkpoint(target, key, cfg)
    return build_into(
        target, key, lambda tmp: zoo.train_teacher_stage(
            Path(bench_dir) / "bench-train", Path(reasoner_dir), tmp, cfg, ckpt,
            surrogate_dir=Path(surrogate_dir) if surrogate_dir else None),
        ckpt,
    )


@task(name="zoo-evaluate")
def evaluate(models: str, bench_dir: str, cfg_json: str) -> dict:
    cfg = zoo.ZooConfig.model_validate_json(cfg_json)
    return zoo_eval.evaluate_zoo(Path(models), Path(bench_dir) / "bench-test", cfg).model_dump(mode="json")


@task(name="zoo-publish")
def publish(stage_records: dict[str, dict], out: str, cfg_json: str) -> str:
    cfg = zoo.ZooConfig.model_validate_json(cfg_json)
    return str(zoo.publish(stage_records, Path(out), cfg))


@task(name="surrogate-for-vae", **_cached)
def surrogate_for(vae_dir: str, bench_dir: str, target: str, cfg_json: str, key: str) -> dict:
    """A surrogate decoder for any Wan VAE (``core.train.surrogate.distil_surrogate_for``)."""
    cfg = SurrogateForConfig.model_validate_json(cfg_json)

    fidelity: dict = {}
    ckpt = StageCheckpoint.beside(target, key)

    def build(tmp: Path) -> None:
        fidelity.update(distil_surrogate_for(Path(vae_dir), Path(bench_dir), tmp, cfg, ckpt.loop("surrogate")))
        write_json_atomic(tmp / "fidelity.json", fidelity)

    record = build_into(target, key, build, ckpt)  # a finished folder is returned without building: read its fidelity
    return {**record, **(fidelity or json.loads((Path(target) / "fidelity.json").read_text()))}
