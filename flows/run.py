"""One evaluate run's shared state: its items, the models' ids, and the rows it writes.

The flow runs the item chains (``flows.item_chain``) in up to four phases: the methods, or
auto_n's two phases (``flows.matched``), then the shared ablation (``flows.shared``). Every
phase writes its rows the same way, through one ``EvaluationRun``: a row goes to Parquet as
soon as its item finishes, is counted in the progress file, and a non-synth item's video is
copied into the benchmark's official layout for its own scorer.
"""

from __future__ import annotations

import shutil
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import TYPE_CHECKING

from core.bench.record import TaskInstance
from core.bench.source import official_output_path
from core.io import atomic_path, write_json_atomic
from core.method.compare import ItemResult, item_seed
from core.method.methods import Method
from core.storage.results import VariantParams, slug, write_result
from flows.item_chain import Stage, _Chain, _outcome, _submit_item

if TYPE_CHECKING:
    from flows.config import EvaluateConfig


def results_root(work: str | Path) -> Path:
    """Where a run in ``work`` writes its Parquet rows (one folder per table), and what DuckDB is built from."""
    return Path(work) / "results"


def progress_file(cfg: EvaluateConfig, experiment_id: str) -> Path:
    """Where the flow counts finished (item, method) results, for progress displays."""
    return Path(cfg.work) / "progress" / f"{experiment_id}-{slug(cfg.variant)}.json"


class EvaluationRun:
    """The items, models and rows of one evaluate run (of ``experiment_id``), shared by its phases."""

    def __init__(self, cfg: EvaluateConfig, items: list[TaskInstance], ids: dict[str, str], inline: bool,
                 experiment_id: str, logger: Logger | LoggerAdapter) -> None:
        self.cfg, self.items, self.ids, self.inline, self.logger = cfg, items, ids, inline, logger
        self.experiment_id = experiment_id
        self.work = Path(cfg.work)
        self.results_root = results_root(self.work)
        self.exported = self.work / "outputs" / experiment_id  # {method}/ in the official layout (non-synth items)
        self.params = cfg.params()
        self.progress = progress_file(cfg, experiment_id)
        self.results: list[ItemResult] = []
        self.total = 0

    def start(self, failed_to_load: list[ItemResult]) -> None:
        """Write the rows of the entries that failed to load, and start the progress count."""
        self.results = failed_to_load
        for res in self.results:
            write_result(self.results_root, res, self.experiment_id, self.cfg.variant, self.params)
        self.total = len(self.results) + len(self.items) * len(self.cfg.methods)
        write_json_atomic(self.progress, {"done": len(self.results), "total": self.total})

    def keep(self, res: ItemResult, row_params: VariantParams) -> None:
        """Write one (item, method) row and count it."""
        write_result(self.results_root, res, self.experiment_id, self.cfg.variant, row_params,
                     video_path=res.info.get("video"), base=self.work)
        self.results.append(res)
        write_json_atomic(self.progress, {"done": len(self.results), "total": self.total})

    def run_phase(self, methods: list[Method], phase_cfg: EvaluateConfig, row_params: VariantParams,
                  shared: tuple[Stage, str] | None = None,
                  ready: dict[str, tuple[Stage, Stage]] | None = None,
                  probes: frozenset[Method] = frozenset()) -> list[ItemResult]:
        """Every item's ``methods``; rows are written for the requested ones (auto_n adds helpers).

        ``ready``: rules and reward stages already submitted, by item id (not submitted again);
        ``probes``: methods run only to measure their cost (auto_n's VideoTPO probe), no rows.
        """
        cfg = self.cfg
        done: list[ItemResult] = []

        def collect(inst: TaskInstance, chains: dict[Method, _Chain]) -> None:
            for method, chain in chains.items():
                done.append(_outcome(inst, method, chain, item_seed(inst, cfg.seed)))
                if method in cfg.methods and method not in probes:
                    self.keep(done[-1], row_params)
                    if inst.benchmark != "synth" and done[-1].error is None:  # for the official scorer
                        with atomic_path(official_output_path(self.exported, inst, method.value)) as tmp:
                            shutil.copyfile(done[-1].info["video"], tmp)

        # inline, an item's stages have run when _submit_item returns; submitted, they run concurrently
        pending = []
        for inst in self.items:
            pending.append((inst, _submit_item(inst, phase_cfg, self.ids, self.inline, only=methods, shared=shared,
                                               rules_and_reward=(ready or {}).get(inst.id))))
            if self.inline:
                collect(*pending.pop())
        for inst, chains in pending:
            collect(inst, chains)
        return done
