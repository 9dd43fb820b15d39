"""The evaluate flow: benchmark x methods x config -> videos, scores, Parquet rows, DuckDB.

Per item, the stages run as cached tasks: rule extraction -> reward compilation -> per-item
optimisation -> final generation -> scoring, each method taking the part of that chain it
needs (``flows.item_chain``), each stage keyed by exactly what it reads (``flows.keys``).
Rerunning the same command after a crash reuses every finished stage. An item whose stage
fails is recorded with the error and the stage; the other items finish; the flow raises at
the end if anything failed.

The flow, under the work dir's lock, in order:

1. load the items (an entry that fails validation is a failed row, not a skipped one) and
   check the options that would otherwise fail after hours of generation;
2. identify the models (their content identities are part of every stage key);
3. run every item's chains; with ``auto_n``, in two phases, best-of-N's N and VideoTPO's
   rounds matched to the teacher method's wall time per item (``flows.matched``);
4. the ``shared`` ablation, one LoRA for all items (``flows.shared``);
5. with a RULER-Bench judge, judge every method's exported videos (``flows.judge``);
6. consolidate the rows into DuckDB, log to MLflow (``flows.tracking``), report failures.

``run_evaluate`` runs it with a ``--runner`` (``flows.runners``). The CLI, scripts and tests
import those names, the config and the item chain's from here, so they are re-exported below.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from core.bench.layout import InvalidItem, synth_bench_dir
from core.bench.record import Purpose, TaskInstance
from core.bench.source import open_benchmark, spread_over_families
from core.bench.synth.generate import make_synth_benchmark
from core.errors import InputError
from core.method.compare import ItemResult, summarise_methods
from core.method.methods import NEEDS_HELDOUT_JUDGE, Method
from core.method.oracle import require_oracle_items
from core.models.teacher import teacher_model_type
from core.models.wan import check_guidance_2
from core.pipeline.video_spec import reasoner_grid, with_video_spec
from core.storage.lock import work_dir_lock
from core.storage.results import ExperimentRecord, prune_results, write_experiment
from core.storage.warehouse import consolidate
from flows import keys
from flows.config import EvaluateConfig, ModelPaths
from flows.item_chain import _ItemStages, _outcome, _submit_item
from flows.judge import judge_exported
from flows.keys import shared_key, stage_keys
from flows.matched import run_matched, to_match
from flows.run import EvaluationRun, progress_file, results_root
from flows.runners import LOCAL_DASK_CLUSTER, RUNNERS, task_runner
from flows.shared import run_shared
from flows.tracking import open_tracker, track
from tasks.models import model_identity

# Re-exported for the CLI, scripts and tests (the versions are not: patch them in flows.keys).
__all__ = ["LOCAL_DASK_CLUSTER", "RUNNERS", "EvaluateConfig", "ModelPaths", "_ItemStages", "_outcome", "_submit_item",
           "evaluate", "experiment_of", "load_items", "progress_file", "run_evaluate", "shared_key", "stage_keys",
           "task_runner"]


def load_items(cfg: EvaluateConfig) -> tuple[list[TaskInstance], list[InvalidItem]]:
    """The items to run, and the entries that failed validation (recorded as failed, not skipped)."""
    if cfg.bench == "synth":
        out = synth_bench_dir(cfg.work, cfg.bench_seed, cfg.per_family)
        if not (out / "VBVR-Bench.json").is_file():
            make_synth_benchmark(out, cfg.per_family, seed=cfg.bench_seed, purpose=Purpose.TEST)
        bench = open_benchmark(out, skip_invalid=True)
    else:
        bench = open_benchmark(cfg.bench, skip_invalid=True)
    grid = reasoner_grid(cfg.models.reasoner)
    items, invalid = [], list(bench.invalid)
    for inst in spread_over_families(bench.instances, cfg.limit):
        try:
            items.append(with_video_spec(inst, grid, cfg.video))
        except InputError as exc:  # this item cannot be generated; the others still run
            invalid.append(InvalidItem(where=inst.id, error=str(exc), instance_id=inst.id))
    return items, invalid


def _failure_ids(invalid: list[InvalidItem], items: list[TaskInstance]) -> list[tuple[InvalidItem, str]]:
    """Each unreadable entry and the id its failure rows get: its instance's id where known (so the
    rows of the entry, once fixed, replace them), else where it failed; never a readable item's id."""
    taken = {inst.id for inst in items}
    out = []
    for bad in invalid:
        ident = bad.instance_id if bad.instance_id and bad.instance_id not in taken else bad.where
        taken.add(ident)
        out.append((bad, ident))
    return out


def _failed_to_load(cfg: EvaluateConfig, items: list[TaskInstance], invalid: list[InvalidItem],
                    unscored: list[str]) -> list[ItemResult]:
    """A failed row (stage ``load``) per method for each entry that failed validation."""
    no_score = {"score": None, "success": None} if unscored else {}  # unscored benchmarks: failures carry no 0 either
    return [ItemResult(instance_id=ident, family="unknown", split=None, faculty=None, method=method.value, seed=cfg.seed,
                       error=bad.error, error_stage="load", **no_score)
            for bad, ident in _failure_ids(invalid, items) for method in cfg.methods]


def _check_inputs(cfg: EvaluateConfig, items: list[TaskInstance], unscored: list[str]) -> None:
    """Option mistakes must fail now, not after hours of generation."""
    if unscored and Method.PASS_AT_N in cfg.methods:
        raise InputError("methods: pass_at_n", f"selects by a rule-based scorer, which {unscored[0]} items lack here",
                         "the other methods (their videos are exported for the benchmark's official scorer)")
    if Method.ORACLE_REWARD in cfg.methods:
        require_oracle_items(items)  # its reward is the synth scorer's relaxation, read from the item's ground truth
    check_guidance_2(cfg.models.reasoner, cfg.method.optim.guidance.scale_2)
    if cfg.judge:
        teacher_model_type(cfg.judge)
    if cfg.heldout_judge:
        teacher_model_type(cfg.heldout_judge)


def _model_ids(cfg: EvaluateConfig) -> dict[str, str]:
    """The models' content identities (memoised in ``<work>/model-ids.json``), as the stage keys name them."""
    memo = Path(cfg.work) / "model-ids.json"
    ids = {"reasoner": model_identity(cfg.models.reasoner, memo), "teacher": model_identity(cfg.models.teacher, memo)}
    if cfg.models.surrogate:
        ids["surrogate"] = model_identity(cfg.models.surrogate, memo)
    if cfg.heldout_judge:
        ids["heldout_judge"] = model_identity(cfg.heldout_judge, memo)
    return ids


def run_evaluate(cfg: EvaluateConfig, runner: str = "inline", return_state: bool = False):
    """Run the evaluate flow with the chosen runner (one of ``RUNNERS``).

    ``inline`` (the default for one machine) calls each stage task directly in the flow's
    thread, one after another: still cached, retried and tracked by Prefect, but with the
    compute in the main thread, where torch's CPU threads are fastest, and with no two stages
    competing for the same cores or the same model. The task runners run stages concurrently;
    they pay off with several workers (a Dask worker per GPU), not on a 2-core CPU
    (``scripts/bench_pipeline.py --runner`` measures each).
    """
    chosen = task_runner(runner)
    if chosen is None:
        return evaluate(config=cfg, inline=True, return_state=return_state)
    return evaluate.with_options(task_runner=chosen)(config=cfg, return_state=return_state)


def experiment_of(cfg: EvaluateConfig) -> ExperimentRecord:
    """The experiment a config belongs to (its id names its rows in DuckDB; where the run keeps
    its files, ``work`` and ``mlflow_uri``, is not part of it: ``results.LOCATION_FIELDS``)."""
    cfg = cfg.resolved()
    # the judges only score, except a held-out judge that best_of_n_heldout selects with
    scoring_only = {"judge", "judge_options"} | (set() if NEEDS_HELDOUT_JUDGE & set(cfg.methods) else {"heldout_judge"})
    return ExperimentRecord(name=cfg.name, kind="evaluate", config=cfg.model_dump(mode="json", exclude=scoring_only),
                            code_version=keys.CODE_VERSION)


def write_database(work: str | Path) -> dict[str, int]:
    """Rebuild ``<work>/vlmt.duckdb`` from every Parquet row under ``<work>/results``; returns row counts."""
    return consolidate(results_root(work), Path(work) / "vlmt.duckdb")


@flow(name="evaluate")
def evaluate(config: EvaluateConfig | None = None, config_file: str | None = None,
             experiment: ExperimentRecord | None = None, inline: bool = False, write_db: bool = True) -> dict:
    """Run ``config.methods`` on the benchmark's items; write results to Parquet and DuckDB.

    Returns the per-method summary; raises at the end (after writing everything) if any
    (item, method) failed. ``experiment`` groups several configs (an ablation's variants)
    under one experiment id. ``inline`` runs the stage tasks one after another in the flow's
    own thread instead of submitting them to the task runner (see ``run_evaluate``). ``write_db``
    False leaves the DuckDB file to the caller: rebuilding it reads every Parquet file of the work
    dir (7 s for the claims runs' 13,000), so an ablation writes it once, after its last variant.
    """
    cfg = (EvaluateConfig.from_yaml(config_file) if config_file else (config or EvaluateConfig())).resolved()
    # one run per work dir, taken before anything touches it (the CLI holds it already; a deployment run takes it here)
    with work_dir_lock(cfg.work, "evaluate flow"):
        return _evaluate(cfg, experiment, inline, write_db)


def _evaluate(cfg: EvaluateConfig, experiment: ExperimentRecord | None, inline: bool, write_db: bool) -> dict:
    """The evaluate flow's body, run under the work dir's lock."""
    logger = get_run_logger()
    work = Path(cfg.work)
    # 1. the items, and the option mistakes that must fail before any stage runs
    items, invalid = load_items(cfg)
    unscored = sorted({inst.benchmark for inst in items if inst.benchmark != "synth"})
    _check_inputs(cfg, items, unscored)
    # 2. the models, the experiment, its rows (the entries that failed to load first)
    ids = _model_ids(cfg)
    experiment = experiment or experiment_of(cfg)
    tracker = open_tracker(cfg)
    run = EvaluationRun(cfg, items, ids, inline, experiment.experiment_id, logger)
    write_experiment(run.results_root, experiment)
    logger.info("experiment %s: %d items x %d methods", experiment.experiment_id, len(items), len(cfg.methods))
    run.start(_failed_to_load(cfg, items, invalid, unscored))

    # 3. every item's chain: rules -> reward -> per-item optimisation -> final video -> score
    chosen_n = None
    ran = cfg  # the config as run: with auto_n, method.n (and tpo_rounds) become the matched ones
    main = [m for m in cfg.methods if m is not Method.SHARED]
    if cfg.auto_n and to_match(main):
        chosen_n, ran = run_matched(run, main)  # the baselines at the teacher method's wall time
    elif main:
        run.run_phase(main, cfg, run.params)
    # 4. the shared ablation: one adapter trained on every item's reward
    if Method.SHARED in cfg.methods:
        run_shared(run)
    # 5. RULER-Bench: the judge labels every method's exported videos
    judged, judge_error = {}, None
    if cfg.judge and any(inst.benchmark == "ruler" for inst in items):
        try:
            judged = judge_exported(cfg, items, run.exported, run.results_root, experiment.experiment_id)
        except Exception as exc:  # the methods' results are kept (consolidated below) whatever the judge does
            judge_error = f"{type(exc).__name__}: {exc}"
            logger.exception("judging with %s failed", cfg.judge)

    # 6. consolidate, track, report failures
    results = run.results
    # rows this run did not write again are stale (an entry that no longer fails to load, an item gone from the bench)
    prune_results(run.results_root, experiment.experiment_id, cfg.variant, {(r.instance_id, r.method) for r in results})
    counts = write_database(work) if write_db else None
    summary = {k: v.model_dump(mode="json") for k, v in summarise_methods(results).items()}
    failed = [r for r in results if r.error]
    out = {"experiment_id": experiment.experiment_id, "summary": summary, "rows": counts,
           "exported": str(run.exported) if unscored else None, "judged": judged, "judge_error": judge_error,
           "n": chosen_n if cfg.auto_n else cfg.method.n, "tpo_rounds": ran.method.tpo_rounds,
           "failed": [{"item": r.instance_id, "method": r.method, "stage": r.error_stage, "error": r.error} for r in failed]}
    if tracker is not None:
        out["mlflow"] = track(tracker.result(), ran, experiment, results, summary, bool(failed), judged)
    if failed:
        for f in out["failed"]:
            logger.error("failed: %s %s at %s: %s", f["item"], f["method"], f["stage"], f["error"])
        raise RuntimeError(f"{len(failed)} of {len(results)} (item, method) results failed; the rest are in {work / 'vlmt.duckdb'}")
    if judge_error:
        raise RuntimeError(f"judging with {cfg.judge} failed ({judge_error}); the methods' results are in {work / 'vlmt.duckdb'}")
    return out
