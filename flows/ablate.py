"""The ablate flow: one experiment, a grid of method knobs, each combination a variant.

Every variant runs the evaluate flow's cached stages, so an ablation recomputes only what a
knob touches: a lambda grid shares the rules and baselines of every variant and reruns
reward compilation onwards; a LoRA-rank grid reruns optimisation onwards; a ``queries``
grid (``[teacher, generic]``, the paper's generic-queries ablation) reruns rules onwards; a ``grpo_steps``
grid reruns only the grpo ablation's optimisation onwards; a ``decoder`` grid (``[surrogate, vae]``: what the
optimiser decodes latents with) reruns optimisation onwards. Results land in
the same DuckDB tables with the knobs as columns (``vlmt sql ablation_pivot``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import Field

from core.config import StrictConfig, load_config
from core.errors import InputError
from core.method.reasoner import GradMode
from core.storage.results import ExperimentRecord
from flows.evaluate import EvaluateConfig, evaluate, write_database
from flows.keys import CODE_VERSION

#: Grid names -> how to set them on an EvaluateConfig.
KNOBS = ("lam", "grad_mode", "k_frames", "max_steps", "early_stop", "lr", "lora_rank", "n", "queries", "grpo_steps",
         "decoder")


class AblateConfig(StrictConfig):
    base: EvaluateConfig = Field(default_factory=lambda: EvaluateConfig(methods=["vanilla", "teacher"]))
    grid: dict[str, list[Any]] = Field(default_factory=lambda: {"lam": [0.0, 0.5, 1.0]})

    @classmethod
    def from_yaml(cls, path: str | Path) -> AblateConfig:
        return load_config(cls, path)

    def variants(self) -> list[tuple[str, EvaluateConfig]]:
        unknown = sorted(set(self.grid) - set(KNOBS))
        if unknown:
            raise InputError(f"grid.{unknown[0]}", "is not an ablatable knob", f"one of {list(KNOBS)}")
        names = sorted(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in names)):
            setting = dict(zip(names, values, strict=True))
            name = ",".join(f"{k}={v}" for k, v in setting.items()) or "base"
            out.append((name, apply_knobs(self.base, setting).model_copy(update={"variant": name})))
        return out


def apply_knobs(base: EvaluateConfig, setting: dict[str, Any]) -> EvaluateConfig:
    optim = base.method.optim.model_dump()
    method = base.method.model_dump()
    for k, v in setting.items():
        if k == "lora_rank":
            optim["lora"] = {**optim["lora"], "rank": int(v), "alpha": float(v)}
        elif k == "n":
            method["n"] = int(v)
        elif k == "queries":
            method["queries"] = v
        elif k == "grpo_steps":
            method["grpo"] = {**method.get("grpo", {}), "steps": int(v)}  # absent from the dump while default
        elif k == "grad_mode":
            optim[k] = GradMode(v)
        else:
            optim[k] = v
    method["optim"] = optim
    return EvaluateConfig.model_validate({**base.model_dump(), "method": method})


def ablation_experiment(cfg: AblateConfig) -> tuple[AblateConfig, ExperimentRecord]:
    """``cfg`` with its base resolved (the id and every variant carry the lr used), and its experiment."""
    cfg = cfg.model_copy(update={"base": cfg.base.resolved()})
    return cfg, ExperimentRecord(name=cfg.base.name, kind="ablate", config=cfg.model_dump(mode="json"),
                                 code_version=CODE_VERSION)


@flow(name="ablate")
def ablate(config: AblateConfig | None = None, config_file: str | None = None, inline: bool = False) -> dict:
    """Run every grid combination as a variant of one experiment; returns each variant's summary.

    ``inline``: each variant calls its stage tasks in this thread (see ``flows.evaluate.run_evaluate``).
    """
    logger = get_run_logger()
    cfg = AblateConfig.from_yaml(config_file) if config_file else (config or AblateConfig())
    cfg, experiment = ablation_experiment(cfg)
    out: dict[str, Any] = {"experiment_id": experiment.experiment_id, "variants": {}, "failed": []}
    try:
        for name, variant in cfg.variants():
            logger.info("variant %s", name)
            state = evaluate(config=variant, experiment=experiment, inline=inline, write_db=False, return_state=True)
            if state.is_completed():
                out["variants"][name] = state.result()["summary"]
            else:
                out["failed"].append(name)
    finally:  # once for every variant, and whatever stopped the loop: the finished variants' rows are kept
        out["rows"] = write_database(cfg.base.work)
    if out["failed"]:
        raise RuntimeError(f"variants with failures: {out['failed']} (results of the rest are in DuckDB)")
    return out
