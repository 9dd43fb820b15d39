"""The zoo flow: build the embedded default models from scratch, evaluate them, ship them.

    benchmarks -> VAE -> surrogate decoder
                      -> Reasoner (flow matching, then 4-step distillation) -> Teacher
    -> publish to ``out`` (default ``models/``) -> evaluate on test instances -> model cards

Each stage's cache key is computed here from exactly what it depends on, so changing the
Teacher's recipe retrains only the Teacher, and a rerun after a crash resumes at the first
unfinished stage, from that stage's last checkpoint (``<work>/stages/<stage>.ckpt``, every
``checkpoint_seconds``; see ``core.train.checkpoint``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from core import zoo
from core.bench.synth.generate import WORLD_VERSION
from core.config import load_config
from core.zoo_cards import write_cards
from tasks import zoo as stages
from tasks.caching import digest, dir_digest, reuse_only_if, seed_from
from tasks.models import model_identity

#: Bump when a stage's code changes what it produces.
CODE_VERSION = "zoo-2"


def zoo_config(preset: str = "full", seed: int | None = None, config_file: str | None = None) -> zoo.ZooConfig:
    """The preset, with a config file's fields over it (YAML, any subset of ``ZooConfig``), then ``seed``."""
    presets = {"full": zoo.ZooConfig, "quick": zoo.ZooConfig.quick, "micro": zoo.ZooConfig.micro}
    if preset not in presets:
        raise ValueError(f"preset {preset!r}: expected one of {sorted(presets)}")
    cfg = presets[preset]()
    if config_file:
        cfg = load_config(zoo.ZooConfig, config_file, base=cfg)
    return cfg if seed is None else cfg.model_copy(update={"seed": seed})


def config_keys(cfg: zoo.ZooConfig, world: int = WORLD_VERSION) -> tuple[str, str]:
    """The benchmarks' and the VAE's stage keys: they depend on the config and the synthetic world alone.

    Later stages depend on trained weights. World 1 (the first zoo's) is not in its keys: they
    were made before worlds had versions, and stay as recorded.
    """
    c = cfg.model_dump(mode="json")
    versioned = [world] if world > 1 else []
    k_bench = digest("bench", CODE_VERSION, *versioned, c["seed"], c["train_per_family"], c["test_per_family"])
    vae_arch = {k: v for k, v in c["arch"].items() if k.startswith("vae_")}
    return k_bench, digest("vae", CODE_VERSION, k_bench, vae_arch, c["vae"])


def _run(task, work: Path, name: str, parts: str | None = None, **kwargs) -> dict:
    """Run a stage task into ``<work>/stages/<name>``, its cache records in ``<work>/prefect-results``.

    The cache is refreshed when the stage's output directory has disappeared. ``parts``: a
    folder of finished stage folders committed with the repository (``models/parts``); one named
    ``name`` whose ``stage.json`` carries this stage's key is copied in first (``seed_from``), so
    that a fresh clone starts from the components that already passed their gates.
    """
    target = Path(work) / "stages" / name
    if parts is not None:
        seed_from(Path(parts) / name, target, kwargs["key"])
    return reuse_only_if(task, target, work)(target=str(target), **kwargs)


@flow(name="zoo-train")
def zoo_train(
    out: str = "models", work: str = "runs/zoo", preset: str = "full", seed: int | None = None, evaluate: bool = True,
    until: str | None = None, config_file: str | None = None, parts: str | None = "models/parts",
) -> dict:
    """Train the tiny Reasoner, surrogate decoder and Teacher; publish them under ``out``.

    ``config_file`` (YAML) overrides any of the preset's fields, e.g. more steps or a wider VAE
    for a longer budget; ``seed`` (None: the preset's or the file's) overrides both.
    ``until="reasoner"`` stops after the Reasoner stages (nothing is published); a later full
    run picks up from there. ``parts``: committed finished stages to start from (``seed_from``);
    None trains every stage.
    """
    log = get_run_logger()
    cfg = zoo_config(preset, seed, config_file)
    cfg_json = cfg.model_dump_json()
    c = cfg.model_dump(mode="json")

    k_bench, k_vae = config_keys(cfg)
    bench = _run(stages.benchmarks, work, f"bench-{k_bench[:12]}", cfg_json=cfg_json, key=k_bench)
    vae = _run(stages.vae, work, f"vae-{k_vae[:12]}", parts, bench_dir=bench["path"], cfg_json=cfg_json, key=k_vae)
    vae_id = dir_digest(vae["path"])

    k_sur = digest("surrogate", CODE_VERSION, k_bench, vae_id, c["surrogate"])
    sur = _run(stages.surrogate, work, f"surrogate-{k_sur[:12]}", parts, vae_dir=vae["path"], bench_dir=bench["path"],
               cfg_json=cfg_json, key=k_sur)

    k_rea = digest("reasoner", CODE_VERSION, k_bench, vae_id, c["arch"], c["flow"], c["distill"], c["reasoner_vocab"])
    rea = _run(stages.reasoner, work, f"reasoner-{k_rea[:12]}", parts, vae_dir=vae["path"], bench_dir=bench["path"],
               cfg_json=cfg_json, key=k_rea)
    reasoner_dir = str(Path(rea["path"]) / zoo.REASONER)
    if until == "reasoner":
        return {"models": None, "stages": {"benchmarks": bench, "vae": vae, "surrogate": sur, "reasoner": rea}}

    # options the first zoo did not have enter the key only when set (its key stays as it was); mining
    # runs the teacher method, so the surrogate it optimises through matters only then
    options = {}
    if mining := c["mine_per_family"]:
        options |= {"mine_per_family": mining, "surrogate": dir_digest(sur["path"])}
    if c["judge_seed"] is not None:
        options["judge_seed"] = c["judge_seed"]
    k_tea = digest("teacher", CODE_VERSION, k_bench, dir_digest(reasoner_dir), c["teacher"], c["sample_per_family"],
                   *([options] if options else []))
    tea = _run(stages.teacher, work, f"teacher-{k_tea[:12]}", parts, bench_dir=bench["path"], reasoner_dir=reasoner_dir,
               surrogate_dir=sur["path"] if mining else None,
               cfg_json=cfg_json, key=k_tea)

    records = {"benchmarks": bench, "vae": vae, "surrogate": sur, "reasoner": rea, "teacher": tea}
    models = stages.publish(records, out, cfg_json)
    log.info("zoo published under %s (training %.0f s in all)", models, sum(r["seconds"] for r in records.values()))
    result = {"models": models, "stages": records}
    if evaluate:
        result["eval"] = stages.evaluate(models, bench["path"], cfg_json)
        write_cards(Path(models), result["eval"])
    return result


@flow(name="zoo-evaluate")
def zoo_evaluate(models: str = "models", work: str = "runs/zoo-eval", seed: int = 0) -> dict:
    """Measure the zoo's quality figures on freshly generated test instances."""
    cfg = zoo.ZooConfig(seed=seed)
    cfg_json = cfg.model_dump_json()
    c = cfg.model_dump(mode="json")
    k_bench = digest("bench", CODE_VERSION, c["seed"], 0, c["test_per_family"])
    bench = _run(stages.benchmarks, work, f"bench-{k_bench[:12]}",
                 cfg_json=cfg.model_copy(update={"train_per_family": 0}).model_dump_json(), key=k_bench)
    return stages.evaluate(models, bench["path"], cfg_json)


@flow(name="surrogate-for-vae")
def surrogate_for_vae(vae: str, bench: str, out: str, work: str = "runs/surrogate", config_json: str | None = None) -> dict:
    """Distil a surrogate decoder for any Wan VAE (a user's real one on a GPU) into ``out``.

    Cached on the VAE's weights, the benchmark's path and the config: a rerun with the same
    inputs reuses the finished folder.
    """
    from core.train.surrogate import SurrogateForConfig, vae_folder

    cfg = SurrogateForConfig.model_validate_json(config_json) if config_json else SurrogateForConfig()
    vae_id = model_identity(vae_folder(vae), Path(work) / "model-ids.json")  # the VAE alone, not a pipeline's transformer
    key = digest("surrogate-for", CODE_VERSION, vae_id, str(Path(bench).resolve()), cfg.model_dump(mode="json"))
    return reuse_only_if(stages.surrogate_for, Path(out), work)(vae_dir=vae, bench_dir=bench, target=out,
                                                               cfg_json=cfg.model_dump_json(), key=key)
