"""``vlmt evaluate``: run the methods through the cached Prefect pipeline, then print the results
and the commands that look further (``vlmt sql``, ``mlflow ui``, the report), as they run from here.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.common import command, console, fail, parse_n, parse_size, refusing_bad_input
from cli.display import print_frame, with_progress
from cli.output import quiet_model_loading
from core.checks import check_run_inputs
from core.errors import VlmtError


def _start(ctx: typer.Context, work: str) -> float:
    """Hold ``work``, quieten model loading; the start time of the run."""
    _hold_work_dir(ctx, work)
    quiet_model_loading()
    return time.perf_counter()


def _hold_work_dir(ctx: typer.Context, work: str) -> None:
    """Lock ``work`` until the command ends (``core.storage.lock``), before anything touches it; a busy one exits 2."""
    from core.storage.lock import WorkDirBusy, work_dir_lock

    try:
        ctx.with_resource(work_dir_lock(work, "vlmt evaluate"))
    except WorkDirBusy as exc:
        fail(exc)


def evaluate(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML file of EvaluateConfig fields; the options below override "
                                                         "it (default: none, every field at its default).")] = None,
    bench: Annotated[str | None, typer.Option(help="'synth' or a benchmark directory (default: synth).")] = None,
    per_family: Annotated[int | None, typer.Option(help="Synth test instances per family (default: 2).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many items, spread over families "
                                                        "(default: every item).")] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated method names (default: "
                                                      "vanilla,best_of_n,pass_at_n,pe,videotpo,teacher,still: all but "
                                                      "the shared and grpo ablations, the oracle_reward "
                                                      "upper bound and best_of_n_heldout, which needs "
                                                      "--heldout-judge).")] = None,
    models: Annotated[Path | None, typer.Option(help="Zoo folder with reasoner/, surrogate-decoder/, teacher/ "
                                                     "(default: the shipped one); its teacher-judge/, where it has one, "
                                                     "is the held-out judge unless --heldout-judge says otherwise.")] = None,
    n: Annotated[str | None, typer.Option(help="Candidates for best_of_n / pass_at_n, or 'auto': N (and VideoTPO's "
                                                "rounds) matched to the teacher method's wall time per item (default: 4).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Maximum LoRA updates per item (default: 40).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale of every Reasoner rollout "
                                                        "(1 = off, for distilled Reasoners; ~5 for an "
                                                        "undistilled Wan2.2-TI2V-5B) (default: 1).")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="Negative prompt for guidance (default: none).")] = None,
    guidance_2: Annotated[float | None, typer.Option("--guidance-2", help="Two-expert Reasoners (Wan2.2-A14B): the "
                                                     "low-noise expert's guidance scale (default: --guidance).")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per video for benchmarks that do not set them (VBVR's "
                                                    "official layout) (default: the ground-truth video's).")] = None,
    fps: Annotated[float | None, typer.Option(help="Frame rate for such benchmarks (default: the "
                                                       "ground-truth video's).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT for such benchmarks, fitted to "
                                                      "the Reasoner's grid (default: the ground-truth video's).")] = None,
    name: Annotated[str | None, typer.Option(help="Experiment name (default: evaluate).")] = None,
    work: Annotated[str | None, typer.Option(help="Root of stage outputs, results and the DuckDB "
                                                     "file WORK/vlmt.duckdb (default: runs).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's own choice).")] = None,
    runner: Annotated[str, typer.Option(help="inline (stages one after another in this process: best on one machine), "
                                             "or a task runner: thread[=N], process[=N], dask[=ADDRESS], ray[=ADDRESS].")] = "inline",
    mlflow_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI; '' turns tracking off "
                                                          "(default: sqlite:///WORK/mlflow.db).")] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML report (WORK/report/NAME) at the end.")] = True,
    judge: Annotated[str | None, typer.Option(help="RULER-Bench: a Qwen2.5-VL/Qwen3-VL folder that judges every "
                                                   "method's videos after the run, query ruler_scores "
                                                   "(default: none, no judging).")] = None,
    judge_tokens: Annotated[int | None, typer.Option(min=8, help="RULER-Bench: the judge's reply budget in tokens "
                                                                 "(raise it for Thinking judges) (default: 256).")] = None,
    heldout_judge: Annotated[str | None, typer.Option(help="A second Qwen-VL Teacher that answers every method's queries "
                                                           "on its video, never optimised or selected against: column "
                                                           "'held-out fooled' (default: none; '' turns one off).")] = None,
) -> None:
    """Run the methods through the cached Prefect pipeline; results go to Parquet and DuckDB.

    An option left out takes --config's value, else the default shown. A --config file with
    ``base:`` and ``grid:`` is an ablation: every grid combination runs as a variant of one
    experiment (then only --work, --threads, --mlflow-uri and --report apply).
    """
    import torch

    from core.method.methods import Method, trains_lora
    from core.method.optimise import learning_rate_source
    from core.method.reasoner import Guidance
    from flows.evaluate import (
        EvaluateConfig,
        ModelPaths,
        experiment_of,
        progress_file,
        run_evaluate,
        task_runner,
    )

    if threads:
        torch.set_num_threads(threads)
    if config is not None and is_ablation_file(config):
        given = {k for k, v in locals().items() if k in ABLATION_REFUSES and v is not None}
        if given or runner != "inline":
            fail(VlmtError(f"{config} is an ablation (base + grid): set {sorted(given or {'runner'})[0]} in its base, "
                           f"not on the command line"))
        return _ablate(ctx, config, work, mlflow_uri, report)
    with refusing_bad_input():
        cfg = EvaluateConfig.from_yaml(config) if config else EvaluateConfig()
        update: dict = {k: v for k, v in {"bench": bench, "per_family": per_family, "limit": limit, "name": name,
                                          "work": work, "mlflow_uri": mlflow_uri, "judge": judge}.items() if v is not None}
        task_runner(runner)  # validate before starting anything
        if methods:
            try:
                update["methods"] = [Method(m.strip()) for m in methods.split(",") if m.strip()]
            except ValueError as exc:
                raise VlmtError(f"--methods: {exc} (expected names from {[m.value for m in Method]})") from exc
        if models:
            update["models"] = ModelPaths(reasoner=str(models / "reasoner"), surrogate=str(models / "surrogate-decoder"),
                                          teacher=str(models / "teacher"))
            if (models / "teacher-judge").is_dir() and heldout_judge is None:
                update["heldout_judge"] = str(models / "teacher-judge")
        if heldout_judge is not None:
            update["heldout_judge"] = heldout_judge or None
        method_cfg = cfg.method
        if n is not None:
            chosen_n = parse_n(n)
            update["auto_n"] = chosen_n == "auto"
            if chosen_n != "auto":
                method_cfg = method_cfg.model_copy(update={"n": chosen_n})
        if max_steps is not None:
            method_cfg = method_cfg.model_copy(update={"optim": method_cfg.optim.model_copy(update={"max_steps": max_steps})})
        if guidance is not None or negative_prompt is not None or guidance_2 is not None:
            g = method_cfg.optim.guidance.model_dump()
            g.update({k: v for k, v in {"scale": guidance, "negative_prompt": negative_prompt,
                                        "scale_2": guidance_2}.items() if v is not None})
            method_cfg = method_cfg.model_copy(
                update={"optim": method_cfg.optim.model_copy(update={"guidance": Guidance.model_validate(g)})})
        if judge_tokens is not None:
            update["judge_options"] = cfg.judge_options.model_copy(update={"max_new_tokens": judge_tokens}).model_dump()
        video = {"n_frames": frames, "fps": fps, **parse_size(size)}
        update["video"] = {**cfg.video.model_dump(), **{k: v for k, v in video.items() if v is not None}}
        cfg = EvaluateConfig.model_validate({**cfg.model_dump(), **update, "method": method_cfg.model_dump()})
        check_paths(cfg)
        if trains_lora(cfg.methods, cfg.auto_n):
            console.print(f"learning rate: {learning_rate_source(cfg.method.optim, cfg.models.reasoner)}", highlight=False)
        cfg = cfg.resolved()  # once: the experiment id below and the flow then read no folder for it
    t0 = _start(ctx, cfg.work)
    exp = experiment_of(cfg).experiment_id
    state = with_progress(lambda: run_evaluate(cfg, runner, return_state=True), progress_file(cfg, exp))
    seconds = time.perf_counter() - t0
    db = Path(cfg.work) / "vlmt.duckdb"
    if not db.is_file():
        fail(VlmtError(f"the run wrote no results ({state.message})"))
    _print_results(cfg, exp, db, seconds, report)
    if not state.is_completed():
        raise typer.Exit(1)


def _print_results(cfg, exp: str, db: Path, seconds: float, report: bool) -> None:
    """The method table, the paired table, each failure, then what to run next: commands that work as printed
    from here (this vlmt and this MLflow, by path where they are not the ones on PATH)."""
    from core.storage.named import get_query
    from core.storage.warehouse import has_table
    from core.storage.warehouse import query as run_query

    q = get_query("method_comparison")
    df = run_query(db, q.sql, q.bind({"experiment": exp}))
    labels = {"mean_score": "score", "success_rate": "success", "n_errors": "errors", "seconds_per_item": "s/item",
              "nfe_per_item": "NFE/item", "judge_fooled_rate": "judge fooled", "heldout_fooled_rate": "held-out fooled",
              "teacher_calls_per_item": "Teacher calls", "mean_steps": "steps", "early_stop_share": "stopped early"}
    more = f"; {vlmt_sql('method_comparison', db, exp)} shows every column"
    if df["heldout_fooled_rate"].is_null().all():  # no held-out judge in this run
        df = df.drop("heldout_fooled_rate")
    print_frame(df.drop("experiment_id", "variant", "judge_broken", "mean_gated"), f"{cfg.name}: {exp} ({seconds:.0f} s)",
                labels, drop=("stopped early", "steps", "Teacher calls", "NFE/item", "n", "errors", "s/item", "held-out fooled",
                              "success", "judge fooled"), more=more)
    _print_paired(db, exp)
    failed = run_query(db, "SELECT instance_id, method, error_stage, error FROM results "
                           "WHERE experiment_id = $e AND error IS NOT NULL ORDER BY 1, 2", {"e": exp})
    for inst, method, stage, err in failed.iter_rows():
        console.print(f"[red]failed[/] {inst} {method} at {stage}: {err}", highlight=False, soft_wrap=True)
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731  whole lines: copyable
    say(f"\nresults in DuckDB: {db} (experiment {exp})")
    for query, why in (("by_faculty_split", ""),
                       ("judge_vs_scorer", "reward hacking: the judge says Yes to rules the scorer finds broken"),
                       ("judge_per_query", "the judge's P(Yes) on broken rules"),
                       ("paired_vs_baseline", "gain over vanilla on the same items")):
        say(f"  {vlmt_sql(query, db, exp)}" + (f"    ({why})" if why else ""))
    say(f"videos, rules, adapters: {Path(cfg.work) / 'items'}/<item>/<stage>-<key>/")
    if cfg.mlflow_uri != "":
        uri = cfg.mlflow_uri or f"sqlite:///{Path(cfg.work) / 'mlflow.db'}"
        say(f"MLflow: {command('mlflow')} ui --backend-store-uri {shlex.quote(uri)}")
    exported = Path(cfg.work) / "outputs" / exp
    ruler = Path(cfg.bench).is_file()
    vlmt = command()
    if ruler and cfg.judge and has_table(db, "judgements"):
        q = get_query("ruler_scores")
        scores = run_query(db, q.sql, q.bind({"experiment": exp}))
        print_frame(scores.drop("experiment_id", "variant"),
                    f"RULER-Bench (0-100), judged by {cfg.judge} (not the official judge)")
        say(f"  {vlmt_sql('ruler_scores', db, exp)}    (labels: table judgements)")
    elif exported.is_dir():
        bench, videos = shlex.quote(cfg.bench), f"{shlex.quote(str(exported))}/<method>"
        how = (f"RULER-Bench: rerun with --judge <Qwen-VL folder>, or {vlmt} bench score --bench {bench} "
               f"--videos {videos} --judge <Qwen-VL folder>" if ruler else
               f"score with the official toolkit: {vlmt} bench score --bench {bench} --videos {videos}")
        say(f"not scored here (no rule-based scorer for this benchmark): each method's videos are in the "
            f"official layout under {exported}/<method>/\n  {how}")
    if report:
        from core.report.build import build_report

        page = build_report(db, experiment=exp)
        say(f"report (videos side by side, plots): {page}\n  rebuild: {vlmt} report --experiment "
            f"{shlex.quote(cfg.name)} --db {shlex.quote(str(db))}")


def check_paths(cfg) -> None:
    """Every path an ``EvaluateConfig`` run reads or writes, checked before Prefect starts or a model loads."""
    m = cfg.models
    check_run_inputs(bench=cfg.bench, reasoner=m.reasoner, surrogate=m.surrogate, teacher=m.teacher, work=cfg.work,
                     mlflow_uri=cfg.mlflow_uri, judge=cfg.judge, heldout_judge=cfg.heldout_judge)


#: ``vlmt evaluate`` options an ablation file's ``base`` sets instead.
ABLATION_REFUSES = ("bench", "per_family", "limit", "methods", "models", "n", "max_steps", "guidance", "negative_prompt",
                    "guidance_2", "frames", "fps", "size", "name", "judge", "judge_tokens", "heldout_judge")


def is_ablation_file(path: Path) -> bool:
    """A YAML mapping with ``grid`` at its top: an ``AblateConfig`` (``flows.ablate``), not an ``EvaluateConfig``."""
    from core.io import read_yaml_mapping

    try:
        return "grid" in read_yaml_mapping(path, "a mapping of EvaluateConfig or AblateConfig fields")
    except VlmtError as exc:
        fail(exc)


def _ablate(ctx: typer.Context, config: Path, work: str | None, mlflow_uri: str | None, report: bool) -> None:
    """Run an ablation file: its variants as one experiment, then the summary and the paired tables per variant."""
    from core.storage.named import get_query
    from core.storage.warehouse import query as run_query
    from flows.ablate import AblateConfig, ablate, ablation_experiment

    with refusing_bad_input():
        cfg = AblateConfig.from_yaml(config)
        base = cfg.base.model_copy(update={k: v for k, v in {"work": work, "mlflow_uri": mlflow_uri}.items() if v is not None})
        check_paths(base)
        cfg, experiment = ablation_experiment(cfg.model_copy(update={"base": base}))
        cfg.variants()  # a bad knob fails now
    t0 = _start(ctx, base.work)
    state = ablate(config=cfg, inline=True, return_state=True)
    seconds = time.perf_counter() - t0
    db = Path(base.work) / "vlmt.duckdb"
    if not db.is_file():
        fail(VlmtError(f"the ablation wrote no results ({state.message})"))
    exp = experiment.experiment_id
    q = get_query("ablation_summary")
    print_frame(run_query(db, q.sql, q.bind({"experiment": exp})), f"{base.name}: {exp} ({seconds:.0f} s)",
                {"mean_score": "score", "success_rate": "success", "judge_fooled_rate": "judge fooled",
                 "heldout_fooled_rate": "held-out fooled", "seconds_per_item": "s/item", "seconds_per_step": "s/step"},
                more=f"; {vlmt_sql('ablation_summary', db, exp)}")
    q = get_query("paired_vs_baseline")
    for measure in ("score", "success"):
        paired = run_query(db, q.sql, q.bind({"experiment": exp, "measure": measure}))
        if paired.height:
            print_frame(paired.select("variant", "method", "mean_diff", "ci95_low", "ci95_high"),
                        f"{measure} against vanilla per variant (95% interval clustered by family)",
                        {"mean_diff": "difference", "ci95_low": "low", "ci95_high": "high"})
    if report:
        from core.report.build import build_report

        for variant in sorted(v for v, _ in cfg.variants()):
            page = build_report(db, Path(base.work) / "report" / exp / variant, experiment=exp, variant=variant)
            console.print(f"report of {variant}: {page}", highlight=False, soft_wrap=True)
    if not state.is_completed():
        raise typer.Exit(1)


def _print_paired(db: Path, exp: str) -> None:
    """Each method against vanilla on the same items: score, then strict success where any item's differs."""
    from core.storage.named import get_query
    from core.storage.warehouse import query as run_query

    q = get_query("paired_vs_baseline")
    for measure in ("score", "success"):
        paired = run_query(db, q.sql, q.bind({"experiment": exp, "measure": measure}))
        if not paired.height:
            continue
        if measure == "success" and (paired["ties"] == paired["n"]).all():
            console.print("strict success: every method succeeds on exactly the items vanilla does", highlight=False)
            continue
        print_frame(paired.select("method", "n", "mean_diff", "ci95_low", "ci95_high", "wins", "ties", "losses"),
                    f"{measure} against vanilla, same items (95% interval clustered by family)",
                    {"mean_diff": "difference", "ci95_low": "low", "ci95_high": "high"},
                    drop=("n", "ties", "wins", "losses"),
                    more=f"; {vlmt_sql('paired_vs_baseline', db, exp)}" + (" --param measure=success" if measure == "success" else ""))


def vlmt_sql(query: str, db: Path, exp: str) -> str:
    """The command line of named query ``query`` on this experiment, as the user can run it from here."""
    return f"{command()} sql {query} --db {shlex.quote(str(db))} --param experiment={shlex.quote(exp)}"
