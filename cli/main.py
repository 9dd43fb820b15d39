"""``vlmt``: the user's entry point.

The CLI parses arguments, calls the library (``core``) or a flow (``flows``), and
prints. Errors in user input are printed as one line naming the file/field at fault
and exit with status 2; a run in which some items failed exits with status 1 after
printing every result.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from core.checks import (
    check_bench,
    check_creatable,
    check_folder,
    check_models,
    check_run_inputs,
    check_teacher,
    check_weights,
    require_instances,
    shipped,
)
from core.errors import VlmtError

#: Each command without a PREFECT_API_URL starts Prefect's ephemeral server, which must answer within
#: Prefect's default 20 s. Its first start in a fresh PREFECT_HOME takes ~12 s on an idle 2-core CPU,
#: and beside another job it was measured to miss the 20 s and crash `vlmt evaluate` before any work.
#: Set before Prefect is imported (it reads its settings then); a user's own setting wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

app = typer.Typer(help="VLMs as teachers for video reasoning: benchmarks, scoring and the test-time method.", no_args_is_help=True)
bench_app = typer.Typer(help="Make, read and score benchmarks.", no_args_is_help=True)
make_app = typer.Typer(help="Generate a benchmark.", no_args_is_help=True)
zoo_app = typer.Typer(help="Train and evaluate the embedded tiny model zoo.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(zoo_app, name="zoo")
bench_app.add_typer(make_app, name="make")

console = Console()


class SplitOption(str, Enum):
    ID = "ID"
    OOD = "OOD"
    all = "all"


class PurposeOption(str, Enum):
    train = "train"
    test = "test"


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


def _fail(exc: Exception) -> None:
    """Print ``exc`` as one line (a library's multi-line message joined) and exit with status 2."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _invalid_options(exc: ValidationError) -> VlmtError:
    """A config built from options failed validation: one line per field, no traceback."""
    def one(e: dict) -> str:
        where = ".".join(str(x) for x in e["loc"]) or "config"
        got = "" if isinstance(e.get("input"), dict | list) else f" (got {e.get('input')!r})"
        return f"{where}: {e['msg']}{got}"

    return VlmtError(f"invalid options: {'; '.join(one(e) for e in exc.errors())}")


def _parse_size(size: str | None) -> dict[str, int]:
    """'WIDTHxHEIGHT' -> {"width", "height"}; None -> {}."""
    if size is None:
        return {}
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise VlmtError(f"--size: {size!r} (expected WIDTHxHEIGHT in pixels, e.g. 704x704)")
    return {"width": int(parts[0]), "height": int(parts[1])}


def _parse_n(value: str) -> int | str:
    """``--n``: a positive integer, or 'auto' (best-of-N's wall time matched to the teacher method's)."""
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise VlmtError(f"--n: {value!r} (expected a positive integer or 'auto')")
    return int(value)


@make_app.command("synth")
def make_synth(
    out: Annotated[Path, typer.Option(help="Output directory (VBVR layout).")],
    per_family: Annotated[int, typer.Option(min=1, help="Instances per task family.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed; instances are deterministic per (purpose, family, seed, index).")] = 0,
    split: Annotated[SplitOption, typer.Option(help="Which families: in-domain, out-of-domain or all.")] = SplitOption.all,
    purpose: Annotated[PurposeOption, typer.Option(help="Disjoint halves of the instance space; evaluate on test.")] = PurposeOption.test,
    family: Annotated[list[str] | None, typer.Option(help="Only these families (repeatable).")] = None,
    width: int = 64,
    height: int = 64,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 17,
    fps: float = 8.0,
) -> None:
    """Generate the built-in synthetic benchmark in the VBVR-Bench layout."""
    from core.bench.record import Purpose, Split
    from core.bench.synth.generate import RenderConfig, make_synth_benchmark

    try:
        check_creatable(out, "--out")
        cfg = RenderConfig(width=width, height=height, n_frames=frames, fps=fps)
        t0 = time.perf_counter()
        bench = make_synth_benchmark(
            out, per_family, seed=seed, split=None if split == SplitOption.all else Split(split.value),
            purpose=Purpose(purpose.value), cfg=cfg, families=family,
        )
    except (VlmtError, ValueError, KeyError) as exc:
        _fail(exc)
    families = sorted({i.task_family for i in bench.instances})
    console.print(
        f"wrote {len(bench.instances)} {purpose.value} instances of {len(families)} families to {out} "
        f"in {time.perf_counter() - t0:.1f}s"
    )


@bench_app.command("score")
def score(
    bench: Annotated[Path, typer.Option(help="Benchmark directory (VBVR layout) or RULER-Bench record file.")],
    videos: Annotated[Path | None, typer.Option(help="Model outputs at {split}/{task_id}/{index}.mp4; RULER-Bench: the "
                                                     "model's folder of {task_name}/{index}.mp4.")] = None,
    ground_truth: Annotated[bool, typer.Option("--ground-truth", help="Score the benchmark's own ground truth.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the summary.")] = False,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Report unreadable instances instead of stopping.")] = False,
    details: Annotated[Path | None, typer.Option(help="Write every item's sub-criteria (RULER-Bench: every judge reply; "
                                                      "VBVR-Bench: VBVR-EvalKit's whole result) to this JSON file.")] = None,
    judge: Annotated[Path | None, typer.Option(help="RULER-Bench only: a Qwen2.5-VL/Qwen3-VL folder that judges the checklists.")] = None,
    judge_attempts: Annotated[int, typer.Option(min=1, help="RULER-Bench: replies asked for per video before it counts as failed.")] = 3,
    judge_tokens: Annotated[int, typer.Option(min=8, help="RULER-Bench: the judge's reply budget in tokens (raise it for "
                                                          "Thinking judges, whose <think> block is dropped).")] = 256,
    device: Annotated[str | None, typer.Option(help="RULER-Bench judge device: cuda, cpu, or auto (spread over the GPUs; default cuda when available).")] = None,
    work: Annotated[Path, typer.Option(help="RULER-Bench: cache of judged videos (a rerun reuses them).")] = Path("runs/judge"),
) -> None:
    """Score videos: rule-based scorers for synth, VBVR-EvalKit for VBVR, a VLM judge (--judge) for RULER-Bench."""
    from core.bench.source import open_benchmark
    from core.io import write_json_atomic
    from core.scoring import score_benchmark, summarise

    if ground_truth == (videos is not None):
        _fail(VlmtError("give exactly one of --videos DIR or --ground-truth"))
    try:
        if videos is not None:
            check_folder(videos, "--videos", "the folder of the model's videos, laid out as --help says")
        if judge is not None:
            check_teacher(judge, "the judge")
        if details is not None:
            check_creatable(details, "--details", file=True)
        benchmark = open_benchmark(bench, skip_invalid=skip_invalid)
        require_instances(benchmark)
        if benchmark.kind == "ruler":
            _score_ruler(benchmark, bench, skip_invalid, videos, judge, {"attempts": judge_attempts,
                         "max_new_tokens": judge_tokens}, device, work, as_json, details)
            return
        if judge is not None:
            raise VlmtError(f"--judge is for RULER-Bench record files; {bench} is a {benchmark.kind} benchmark")
        if benchmark.kind != "synth":
            _score_external(benchmark, videos, ground_truth, as_json, details)
            return
        with _progress() as progress:
            task = progress.add_task("scoring", total=len(benchmark.instances))
            items = score_benchmark(benchmark, videos, ground_truth=ground_truth, on_item=lambda _: progress.advance(task))
    except VlmtError as exc:
        _fail(exc)
    summary = summarise(items)
    _print_summary(summary)
    for bad in benchmark.invalid:
        console.print(f"[yellow]invalid instance[/] {bad.where}: {bad.error}", highlight=False)
    for item in items:
        if item.error:
            console.print(f"[red]failed[/] {item.instance_id}: {item.error}", highlight=False)
    if details:
        write_json_atomic(details, [i.model_dump(mode="json") for i in items])
    if as_json:
        payload = summary.model_dump(mode="json") | {"n_invalid": len(benchmark.invalid)}
        print(json.dumps(payload, separators=(",", ":")))
    if any(i.error for i in items) or benchmark.invalid:
        raise typer.Exit(1)


def _score_external(benchmark, videos: Path | None, ground_truth: bool, as_json: bool, details: Path | None) -> None:
    """VBVR-Bench is scored by its official toolkit, never by our synth scorers.

    Prints EvalKit's mean per section (In_Domain, Out_of_Domain, overall; a failed video counts
    0.0 there, as in the official aggregation) and every video it could not evaluate; exits 1
    when there is one (or an invalid instance), like the synth path.
    """
    if ground_truth or videos is None:
        raise VlmtError(f"{benchmark.root}: --ground-truth works for synth benchmarks only; give --videos DIR")
    from core.bench.vbvr import score_with_official_toolkit
    from core.io import write_json_atomic

    videos = videos.resolve()
    result = score_with_official_toolkit(benchmark.root, videos, videos.parent / f"{videos.name}_vbvr_eval")
    table = Table(title="VBVR-Bench (official VBVR-EvalKit)")
    for col in ("section", "videos", "errors", "mean score"):
        table.add_column(col, justify="left" if col == "section" else "right")
    for name, sec in result.sections.items():
        table.add_row(name, str(sec.n_videos), str(sec.n_errors), f"{sec.mean_score:.3f}")
    if result.by_category:
        table.add_section()
        for name, value in result.by_category.items():
            table.add_row(f"category: {name}", "", "", f"{value:.3f}")
    console.print(table)
    for bad in benchmark.invalid:
        console.print(f"[yellow]invalid instance[/] {bad.where}: {bad.error}", highlight=False, soft_wrap=True)
    for err in result.errors:
        where = " ".join(x for x in (err.split, err.task, err.video) if x)
        console.print(f"[red]failed[/] {where}: {err.error}", highlight=False, soft_wrap=True)
    if result.errors:
        console.print(f"VBVR-EvalKit could not evaluate {len(result.errors)} video(s); each scored 0.0 in the means above",
                      highlight=False, soft_wrap=True)
    if result.missing:
        shown = ", ".join(result.missing[:5]) + (", ..." if len(result.missing) > 5 else "")
        console.print(f"[yellow]no video[/] for {len(result.missing)} benchmark instance(s) ({shown}): VBVR-EvalKit "
                      "leaves them out of its means", highlight=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if result.results_file:
        console.print(f"VBVR-EvalKit's full result: {result.results_file}", highlight=False, soft_wrap=True)
    if details:
        write_json_atomic(details, result.raw)
    if as_json:
        payload = {name: sec.model_dump(mode="json") for name, sec in result.sections.items()} | {
            "by_category": result.by_category, "n_errors": len(result.errors),
            "errors": [e.model_dump(mode="json") for e in result.errors], "n_missing": len(result.missing),
            "missing": result.missing, "n_invalid": len(benchmark.invalid), "warnings": result.warnings,
            "results_file": result.results_file}
        print(json.dumps(payload, separators=(",", ":"), default=str))
    if result.errors or benchmark.invalid:
        raise typer.Exit(1)


def _score_ruler(benchmark, bench: Path, skip_invalid: bool, videos: Path | None, judge: Path | None, judge_cfg: dict,
                 device: str | None, work: Path, as_json: bool, details: Path | None) -> None:
    """RULER-Bench: a local Qwen-VL judge answers each checklist by the official protocol; official aggregation."""
    from core.bench.ruler_judge import JudgeConfig, JudgeRun
    from core.io import write_json_atomic
    from flows.judge import ruler_judge

    if videos is None or judge is None:
        raise VlmtError(
            f"{benchmark.root}: RULER-Bench is scored by a VLM judge answering each checklist: give --videos "
            "DIR/<model> (outputs at <model>/{task_name}/{index}.mp4) and --judge a Qwen2.5-VL or Qwen3-VL folder "
            "(the official judge is a proprietary VLM; scores from another judge are comparable within a run only)"
        )
    result = ruler_judge(bench=str(bench), videos=str(videos), judge=str(judge), work=str(work), skip_invalid=skip_invalid,
                         config_json=JudgeConfig(**judge_cfg).model_dump_json(), device=device)
    reused = result.pop("n_reused")
    run = JudgeRun.model_validate(result)
    if details:
        write_json_atomic(details, run.model_dump(mode="json"))
    if run.report is not None:
        _print_ruler_report(run.report, judge)
    for record in run.failed:
        console.print(f"[red]failed[/] {record.instance_id}: {record.error}", highlight=False)
    n_judged = len(run.records) - len(run.failed)
    console.print(f"judged {n_judged} of {len(run.records)} video(s) with {judge} (not the official judge); "
                  f"{reused} reused from {work}", highlight=False)
    if as_json:
        payload = {"judge": str(judge), "n_judged": n_judged, "n_failed": len(run.failed), "n_reused": reused,
                   "report": run.report.model_dump(mode="json") if run.report else None}
        print(json.dumps(payload, separators=(",", ":")))
    if run.failed or benchmark.invalid:
        raise typer.Exit(1)


def _print_ruler_report(report, judge: Path) -> None:
    from core.bench.record import RULER_DIMENSIONS

    table = Table(title=f"RULER-Bench (0-100; judge: {judge})")
    for col in ("category", "n", *RULER_DIMENSIONS, "avg"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for cat, dims in report.per_category.items():
        table.add_row(cat, str(report.n_instances[cat]), *(f"{dims[d]:.1f}" if d in dims else "-" for d in RULER_DIMENSIONS),
                      f"{report.category_avg[cat]:.1f}")
    overall = report.overall_per_dimension
    table.add_row("overall", str(sum(report.n_instances.values())),
                  *(f"{overall[d]:.1f}" if d in overall else "-" for d in RULER_DIMENSIONS), f"{report.overall_average:.1f}")
    console.print(table)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty(),
    )


def _print_summary(summary) -> None:
    table = Table(title="Rule-based scores (mean in [0, 1]; strict success rate)")
    for col in ("group", "n", "score", "success", "errors"):
        table.add_column(col, justify="left" if col == "group" else "right")

    def row(name: str, g) -> None:
        table.add_row(name, str(g.n), f"{g.mean_score:.3f}", f"{g.success_rate:.1%}", str(g.n_errors))

    for title, groups in (("split", summary.by_split), ("faculty", summary.by_faculty), ("family", summary.by_family)):
        table.add_section()
        for name, g in groups.items():
            row(f"{title}: {name}", g)
    table.add_section()
    row("overall", summary.overall)
    console.print(table)


class ZooPreset(str, Enum):
    full = "full"
    quick = "quick"
    micro = "micro"


@zoo_app.command("train")
def zoo_train(
    out: Annotated[Path, typer.Option(help="Where the models are published.")] = Path("models"),
    work: Annotated[Path, typer.Option(help="Stage outputs and benchmarks (resumable cache).")] = Path("runs/zoo"),
    quick: Annotated[bool, typer.Option("--quick", help="About a quarter of the full budget (a smoke run).")] = False,
    preset: Annotated[ZooPreset | None, typer.Option(help="full, quick or micro (tests); overrides --quick.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every stage (default: the config's, 0).")] = None,
    evaluate: Annotated[bool, typer.Option(help="Measure the quality targets and write the model cards.")] = True,
    until: Annotated[str | None, typer.Option(help="Stop after this stage ('reasoner'); rerun later to finish.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML overriding any ZooConfig fields of the preset "
                                                     "(e.g. vae: {steps: 16000}); see the README.")] = None,
) -> None:
    """Build the Reasoner, surrogate decoder and Teacher from scratch (offline, seeded) and publish them."""
    from flows.zoo import zoo_config
    from flows.zoo import zoo_train as flow

    chosen = preset.value if preset else ("quick" if quick else "full")
    t0 = time.perf_counter()
    try:
        check_creatable(out, "--out")
        check_creatable(work, "--work")
        if config:
            zoo_config(chosen, seed, str(config))  # a bad file fails here, before Prefect starts
        result = flow(out=str(out), work=str(work), preset=chosen, seed=seed, evaluate=evaluate, until=until,
                      config_file=str(config) if config else None)
    except VlmtError as exc:
        _fail(exc)
    table = Table(title=f"zoo trained ({chosen}) in {time.perf_counter() - t0:.0f} s -> {result['models']}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, rec in result["stages"].items():
        table.add_row(name, f"{rec['seconds']:.0f}")
    console.print(table)
    if "eval" in result:
        _print_zoo_eval(result["eval"])


@zoo_app.command("surrogate")
def zoo_surrogate(
    vae: Annotated[Path, typer.Option(help="A Wan VAE folder, or a Wan pipeline folder (its vae/ is used).")],
    bench: Annotated[Path, typer.Option(help="A benchmark directory whose ground-truth videos are the training data.")],
    out: Annotated[Path, typer.Option(help="The surrogate decoder folder to write.")],
    work: Annotated[Path, typer.Option(help="Cache of the stage record.")] = Path("runs/surrogate"),
    steps: Annotated[int, typer.Option(help="Training steps.")] = 2000,
    crop: Annotated[int, typer.Option(help="Latent window side per training sample.")] = 16,
    videos: Annotated[int, typer.Option(help="Ground-truth videos used (the last min(4, half) measure fidelity).")] = 64,
    device: Annotated[str | None, typer.Option(help="cuda, cpu, ... (default: cuda when available).")] = None,
) -> None:
    """Distil a surrogate decoder for any Wan VAE (e.g. Wan2.2-TI2V-5B's on a GPU) from a benchmark's videos."""
    from core.train.surrogate import SurrogateForConfig, SurrogateTrainConfig, vae_folder
    from flows.zoo import surrogate_for_vae

    cfg = SurrogateForConfig(train=SurrogateTrainConfig(steps=steps), crop=crop, videos=videos, device=device)
    try:
        check_weights(vae_folder(vae), "the VAE")  # every input is checked before Prefect starts
        check_bench(bench)
        check_creatable(out, "--out")
        check_creatable(work, "--work")
        result = surrogate_for_vae(vae=str(vae), bench=str(bench), out=str(out), work=str(work),
                                   config_json=cfg.model_dump_json())
    except VlmtError as exc:
        _fail(exc)
    console.print(f"surrogate decoder for {result['vae']} -> {result['path']}: {result['psnr_vs_vae_db']:.2f} dB vs the VAE "
                  f"decode, {result['speedup']}x faster ({result['surrogate_decode_s']:.4f} s vs {result['vae_decode_s']:.4f} s "
                  f"per video) on {result['train_videos']} training videos, {result['train_seconds']:.0f} s",
                  highlight=False, soft_wrap=True)


@zoo_app.command("eval")
def zoo_eval(
    models: Annotated[Path | None, typer.Option(help="The zoo folder (default: the shipped one).")] = None,
    work: Annotated[Path, typer.Option(help="Where test instances are generated.")] = Path("runs/zoo-eval"),
    seed: Annotated[int, typer.Option(help="Seed of the test instances and samples.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Last line: one JSON object.")] = False,
) -> None:
    """Measure the zoo's quality targets on test instances."""
    from flows.zoo import zoo_evaluate

    models = models or Path(shipped("models"))
    try:
        check_models(models / "reasoner", models / "surrogate-decoder", models / "teacher")
        check_weights(models / "reasoner-base", "the base Reasoner")
        check_creatable(work, "--work")
        result = zoo_evaluate(models=str(models), work=str(work), seed=seed)
    except VlmtError as exc:
        _fail(exc)
    _print_zoo_eval(result)
    if as_json:
        print(json.dumps(result, separators=(",", ":"), default=str))


def _print_zoo_eval(ev: dict) -> None:
    table = Table(title="Tiny zoo quality on test instances")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for split, v in ev["vae_psnr_db"].items():
        table.add_row(f"VAE reconstruction PSNR ({split})", f"{v:.2f} dB")
    s = ev["surrogate"]
    table.add_row("surrogate vs VAE decode PSNR", f"{s['psnr_vs_vae_db']:.2f} dB")
    table.add_row("decode s/video: VAE | surrogate", f"{s['vae_decode_s']:.3f} | {s['surrogate_decode_s']:.4f} ({s['speedup']}x)")
    for name in ("reasoner", "reasoner_base"):
        r = ev[name]
        table.add_row(f"{name} ({r['steps']} steps) score ID | OOD", f"{r['score_id']:.3f} | {r['score_ood']:.3f}")
    table.add_row("distilled - base (ID)", f"{ev['distilled_minus_base_id']:+.3f}")
    from core.zoo import CODEC_REFERENCES

    for name, label in CODEC_REFERENCES.items():
        if r := ev.get(name):
            table.add_row(f"{label}: score ID | OOD", f"{r['score_id']:.3f} | {r['score_ood']:.3f}")
    for k, v in ev["teacher"].items():
        if isinstance(v, float):
            table.add_row(f"teacher {k}", f"{v:.3f}")
    table.add_section()
    for k, ok in ev["targets"].items():
        table.add_row(k, "[green]met[/]" if ok else "[red]missed[/]")
    console.print(table)

class GradModeOption(str, Enum):
    first_step = "first_step"
    last_step = "last_step"
    full = "full"


class QueriesOption(str, Enum):
    teacher = "teacher"
    generic = "generic"


@app.command("sql")
def sql(
    name: Annotated[str | None, typer.Argument(help="A named query from sql/ (see --list), or a .sql file in their "
                                                    "format.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Ad-hoc SQL instead of a named query.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="k=v for a named query's $k.")] = None,
    db: Annotated[str, typer.Option(help="DuckDB file (':memory:' for queries that only read files).")] = "runs/vlmt.duckdb",
    out: Annotated[Path | None, typer.Option(help="Write the result to this .csv or .parquet file instead of printing.")] = None,
    list_queries: Annotated[bool, typer.Option("--list", help="List the named queries and their parameters.")] = False,
) -> None:
    """Query the results database: a named query from sql/ or --query "SELECT ..."."""
    import duckdb

    from core.io import atomic_path
    from core.storage.named import get_query, load_queries
    from core.storage.warehouse import query as run_query

    if list_queries:
        try:
            queries = load_queries()
        except VlmtError as exc:
            _fail(exc)
        for q in queries.values():
            params = ", ".join(f"{p.name}={p.default}" if p.default is not None else p.name for p in q.params)
            console.print(f"[bold]{q.name}[/] ({params or 'no parameters'}): {q.description}", highlight=False)
        return
    try:
        given = {}
        for item in param or []:
            if "=" not in item:
                raise VlmtError(f"--param {item!r}: expected k=v")
            k, v = item.split("=", 1)
            given[k.strip()] = v
        if (name is None) == (query is None):
            raise VlmtError("give exactly one of a query NAME or --query (see --list)")
        if query is not None:
            sql_text, values = query, given
        else:
            named = get_query(name)
            sql_text, values = named.sql, named.bind(given)
        if out is not None:
            if out.suffix not in (".csv", ".parquet"):
                raise VlmtError(f"--out {out}: expected a .csv or .parquet file")
            check_creatable(out, "--out", file=True)
        df = run_query(db, sql_text, values)
    except VlmtError as exc:
        _fail(exc)
    except duckdb.Error as exc:  # the SQL or the database is at fault
        _fail(VlmtError(f"query failed: {exc}"))
    if out is not None:
        with atomic_path(out) as tmp:
            df.write_csv(tmp) if out.suffix == ".csv" else df.write_parquet(tmp)
        console.print(f"wrote {df.height} rows to {out}")
        return
    console.print(_frame_table(df, name or "query"))


def _frame_table(df, title: str, labels: dict[str, str] | None = None) -> Table:
    """A polars frame as a rich table (floats to 4 significant digits; the method column kept whole)."""
    labels = labels or {}
    table = Table(*(Column(labels.get(c, c), overflow="fold", no_wrap=c == "method", min_width=9 if c == "method" else None)
                    for c in df.columns), title=title)
    for row in df.iter_rows():
        table.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return table


def _with_progress(run, progress: Path):
    """Run ``run()`` while a rich bar follows the flow's progress file ((item, method) results done)."""
    import threading

    done = threading.Event()
    progress.unlink(missing_ok=True)

    def follow(bar, task) -> None:
        while not done.wait(0.5):
            try:
                state = json.loads(progress.read_text())
            except (OSError, ValueError):
                continue
            bar.update(task, completed=state["done"], total=state["total"])

    with _progress() as bar:
        task = bar.add_task("(item, method) results", total=None)
        watcher = threading.Thread(target=follow, args=(bar, task), daemon=True)
        watcher.start()
        try:
            return run()
        finally:
            done.set()
            watcher.join()


def _hold_work_dir(ctx: typer.Context, work: str) -> None:
    """Lock ``work`` until the command ends (``core.storage.lock``), before anything touches it; a busy one exits 2."""
    from core.storage.lock import WorkDirBusy, work_dir_lock

    try:
        ctx.with_resource(work_dir_lock(work, "vlmt evaluate"))
    except WorkDirBusy as exc:
        _fail(exc)


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML file of EvaluateConfig fields (options below override it).")] = None,
    bench: Annotated[str | None, typer.Option(help="'synth' or a benchmark directory.")] = None,
    per_family: Annotated[int | None, typer.Option(help="Synth test instances per family.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many items (spread over families).")] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated method names (default: all but the shared and grpo "
                                                      "ablations).")] = None,
    models: Annotated[Path | None, typer.Option(help="Zoo folder with reasoner/, surrogate-decoder/, teacher/ "
                                                     "(default: the shipped one).")] = None,
    n: Annotated[str | None, typer.Option(help="Candidates for best_of_n / pass_at_n, or 'auto': N (and VideoTPO's "
                                                "rounds) matched to the teacher method's wall time per item.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Maximum LoRA updates per item.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale of every Reasoner rollout "
                                                        "(1 = off, the default: distilled Reasoners; ~5 for an "
                                                        "undistilled Wan2.2-TI2V-5B).")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="Negative prompt for guidance.")] = None,
    guidance_2: Annotated[float | None, typer.Option("--guidance-2", help="Two-expert Reasoners (Wan2.2-A14B): the "
                                                     "low-noise expert's guidance scale (default: --guidance).")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per video for benchmarks that do not set them (VBVR's "
                                                    "official layout: read from ground_truth.mp4 by default).")] = None,
    fps: Annotated[float | None, typer.Option(help="Frame rate for such benchmarks.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT for such benchmarks (fitted to the Reasoner's grid).")] = None,
    name: Annotated[str | None, typer.Option(help="Experiment name.")] = None,
    work: Annotated[str | None, typer.Option(help="Root of stage outputs, results and the DuckDB file.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    runner: Annotated[str, typer.Option(help="inline (stages one after another in this process: best on one machine), "
                                             "or a task runner: thread[=N], process[=N], dask[=ADDRESS], ray[=ADDRESS].")] = "inline",
    mlflow_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: SQLite in the work dir).")] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML report (WORK/report/NAME) at the end.")] = True,
    judge: Annotated[str | None, typer.Option(help="RULER-Bench: a Qwen2.5-VL/Qwen3-VL folder that judges every "
                                                   "method's videos after the run (query ruler_scores).")] = None,
    judge_tokens: Annotated[int | None, typer.Option(min=8, help="RULER-Bench: the judge's reply budget in tokens "
                                                                 "(raise it for Thinking judges).")] = None,
) -> None:
    """Run the methods through the cached Prefect pipeline; results go to Parquet and DuckDB."""
    import torch

    from core.method.methods import Method, trains_lora
    from core.method.optimise import learning_rate_source
    from core.method.reasoner import Guidance
    from core.storage.named import get_query
    from core.storage.warehouse import has_table
    from core.storage.warehouse import query as run_query
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
    try:
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
        method_cfg = cfg.method
        if n is not None:
            chosen_n = _parse_n(n)
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
        video = {"n_frames": frames, "fps": fps, **_parse_size(size)}
        update["video"] = {**cfg.video.model_dump(), **{k: v for k, v in video.items() if v is not None}}
        cfg = EvaluateConfig.model_validate({**cfg.model_dump(), **update, "method": method_cfg.model_dump()})
        m = cfg.models  # every path the run reads or writes, checked before Prefect starts or a model loads
        check_run_inputs(bench=cfg.bench, reasoner=m.reasoner, surrogate=m.surrogate, teacher=m.teacher, work=cfg.work,
                         mlflow_uri=cfg.mlflow_uri, judge=cfg.judge)
        if trains_lora(cfg.methods, cfg.auto_n):
            console.print(f"learning rate: {learning_rate_source(cfg.method.optim, cfg.models.reasoner)}", highlight=False)
        cfg = cfg.resolved()  # once: the experiment id below and the flow then read no folder for it
    except VlmtError as exc:
        _fail(exc)
    except ValidationError as exc:
        _fail(_invalid_options(exc))
    _hold_work_dir(ctx, cfg.work)
    t0 = time.perf_counter()
    state = _with_progress(lambda: run_evaluate(cfg, runner, return_state=True), progress_file(cfg, experiment_of(cfg).experiment_id))
    seconds = time.perf_counter() - t0
    db = Path(cfg.work) / "vlmt.duckdb"
    if not db.is_file():
        _fail(VlmtError(f"the run wrote no results ({state.message})"))
    exp = experiment_of(cfg).experiment_id
    q = get_query("method_comparison")
    df = run_query(db, q.sql, q.bind({"experiment": exp}))
    labels = {"mean_score": "score", "success_rate": "success", "n_errors": "errors", "seconds_per_item": "s/item",
              "nfe_per_item": "NFE/item", "judge_fooled_rate": "judge fooled"}
    console.print(_frame_table(df.drop("experiment_id", "variant", "judge_broken", "mean_gated"),
                               f"{cfg.name}: {exp} ({seconds:.0f} s)", labels))
    q = get_query("paired_vs_baseline")
    paired = run_query(db, q.sql, q.bind({"experiment": exp}))
    if paired.height:
        console.print(_frame_table(paired.select("method", "n", "mean_diff", "ci95_low", "ci95_high", "wins", "ties", "losses"),
                                   "against vanilla, same items (95% interval clustered by family)",
                                   {"mean_diff": "difference", "ci95_low": "low", "ci95_high": "high"}))
    failed = run_query(db, "SELECT instance_id, method, error_stage, error FROM results "
                           "WHERE experiment_id = $e AND error IS NOT NULL ORDER BY 1, 2", {"e": exp})
    for inst, method, stage, err in failed.iter_rows():
        console.print(f"[red]failed[/] {inst} {method} at {stage}: {err}", highlight=False, soft_wrap=True)
    console.print(f"\nresults in DuckDB: {db} (experiment {exp})\n"
                  f"  vlmt sql by_faculty_split --db {db} --param experiment={exp}\n"
                  f"  vlmt sql judge_vs_scorer --db {db}    (reward hacking: the judge says Yes to rules the scorer finds broken)\n"
                  f"  vlmt sql judge_per_query --db {db} --param experiment={exp}    (the judge's P(Yes) on broken rules)\n"
                  f"  vlmt sql paired_vs_baseline --db {db} --param experiment={exp}    (gain over vanilla on the same items)\n"
                  f"videos, rules, adapters: {Path(cfg.work) / 'items'}/<item>/<stage>-<key>/", highlight=False, soft_wrap=True)
    if cfg.mlflow_uri != "":
        uri = cfg.mlflow_uri or f"sqlite:///{Path(cfg.work) / 'mlflow.db'}"
        console.print(f"MLflow: mlflow ui --backend-store-uri {uri}", highlight=False, soft_wrap=True)
    exported = Path(cfg.work) / "outputs" / exp
    ruler = Path(cfg.bench).is_file()
    if ruler and cfg.judge and has_table(db, "judgements"):
        q = get_query("ruler_scores")
        scores = run_query(db, q.sql, q.bind({"experiment": exp}))
        console.print(_frame_table(scores.drop("experiment_id", "variant"),
                                   f"RULER-Bench (0-100), judged by {cfg.judge} (not the official judge)", {}))
        console.print(f"  vlmt sql ruler_scores --db {db} --param experiment={exp}    (labels: table judgements)",
                      highlight=False, soft_wrap=True)
    elif exported.is_dir():
        how = (f"RULER-Bench: rerun with --judge <Qwen-VL folder>, or vlmt bench score --bench {cfg.bench} "
               f"--videos {exported}/<method> --judge <Qwen-VL folder>" if ruler else
               f"score with the official toolkit: vlmt bench score --bench {cfg.bench} --videos {exported}/<method>")
        console.print(f"not scored here (no rule-based scorer for this benchmark): each method's videos are in the "
                      f"official layout under {exported}/<method>/\n  {how}", highlight=False, soft_wrap=True)
    if report:
        from core.report.build import build_report

        page = build_report(db, experiment=exp)
        console.print(f"report (videos side by side, plots): {page}\n  rebuild: vlmt report --experiment {cfg.name} "
                      f"--db {db}", highlight=False, soft_wrap=True)
    if not state.is_completed():
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    experiment: Annotated[str | None, typer.Option(help="Experiment name or id prefix (default: the newest).")] = None,
    db: Annotated[Path, typer.Option(help="The DuckDB file of a run.")] = Path("runs/vlmt.duckdb"),
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <db folder>/report/<experiment name>).")] = None,
    variant: Annotated[str | None, typer.Option(help="Ablation variant to show (default: the first).")] = None,
) -> None:
    """Write a static HTML report: method tables beside the paper's, plots, every item's videos side by side."""
    import duckdb

    from core.errors import InputError
    from core.report.build import build_report
    from core.storage.warehouse import WRITTEN_BY_A_RUN

    t0 = time.perf_counter()
    try:
        if out is not None:
            check_creatable(out, "--out")
        page = build_report(db, out, experiment=experiment, variant=variant)
    except InputError as exc:
        _fail(exc)
    except duckdb.Error as exc:  # tables of another shape: another tool's file, or one from an older vlmt
        _fail(InputError(db, f"does not hold the tables the report reads ({exc})", WRITTEN_BY_A_RUN))
    console.print(f"report in {time.perf_counter() - t0:.1f} s: {page}", highlight=False, soft_wrap=True)


@app.command("compare")
def compare_cmd(
    bench: Annotated[str, typer.Option(help="'synth' (generated test instances) or a synth benchmark directory.")] = "synth",
    models: Annotated[Path | None, typer.Option(help="Zoo folder with reasoner/, surrogate-decoder/, teacher/ "
                                                     "(default: the shipped one).")] = None,
    reasoner: Annotated[Path | None, typer.Option(help="A Wan I2V pipeline folder (default: MODELS/reasoner).")] = None,
    surrogate: Annotated[Path | None, typer.Option(help="A surrogate decoder folder (default: MODELS/surrogate-decoder).")] = None,
    teacher: Annotated[Path | None, typer.Option(help="A Qwen2.5-VL folder (default: MODELS/teacher).")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: vanilla,best_of_n,pass_at_n,pe,videotpo,teacher,still "
                                               "(still: the first frame held, a reference), or the grpo ablation.")] =
        "vanilla,best_of_n,pass_at_n,pe,videotpo,teacher,still",
    limit: Annotated[int | None, typer.Option(help="At most this many items (spread over families).")] = None,
    per_family: Annotated[int, typer.Option(help="Test instances per family when --bench synth.")] = 9,
    n: Annotated[str, typer.Option(help="Candidates for best_of_n/pass_at_n, or 'auto': N and VideoTPO's rounds "
                                        "matched to the teacher method's wall time.")] = "auto",
    seed: Annotated[int, typer.Option(help="Base seed (per-item seeds derive from it and the item id).")] = 0,
    lr: Annotated[float | None, typer.Option(help="LoRA learning rate (default: the Reasoner folder's "
                                                  "optim_defaults.json, else the paper's 5e-5).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Maximum LoRA updates per item.")] = None,
    tau: Annotated[float | None, typer.Option(help="Early-stop threshold on the reward loss.")] = None,
    early_stop: Annotated[bool, typer.Option(help="Stop when the loss <= tau.")] = True,
    lam: Annotated[float | None, typer.Option(help="Weight of the goal query (lambda).")] = None,
    grad_mode: Annotated[GradModeOption | None, typer.Option(help="Which sampler steps the gradient flows through.")] = None,
    k_frames: Annotated[int | None, typer.Option(help="Frames the Teacher sees.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    queries: Annotated[QueriesOption, typer.Option(help="teacher: the Teacher writes each item's rules; generic: the "
                                                        "paper's generic-queries ablation (instruction-derived goal, one "
                                                        "generic process query).")] = QueriesOption.teacher,
    grpo_steps: Annotated[int | None, typer.Option(help="grpo: maximum updates per item (one per group).")] = None,
    grpo_group: Annotated[int | None, typer.Option(help="grpo: rollouts per update.")] = None,
    grpo_lr: Annotated[float | None, typer.Option(help="grpo: learning rate (default: --lr's).")] = None,
    grpo_noise: Annotated[float | None, typer.Option(help="grpo: the SDE's noise level a.")] = None,
    grpo_kl: Annotated[float | None, typer.Option(help="grpo: weight of the KL from the frozen Reasoner (0: none).")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale of every Reasoner rollout (1 = off).")] = 1.0,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt for guidance.")] = "",
    guidance_2: Annotated[float | None, typer.Option("--guidance-2", help="Two-expert Reasoners: the low-noise expert's "
                                                     "guidance scale (default: --guidance).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write every (item, method) record to this JSON file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Last line: one JSON object keyed by method.")] = False,
) -> None:
    """Run the methods on benchmark items and print the comparison table (calls core directly)."""
    import torch

    from core.bench.record import Purpose
    from core.bench.source import open_benchmark, spread_over_families
    from core.bench.synth.generate import make_synth_benchmark
    from core.io import write_json_atomic
    from core.method.compare import compare, summarise_methods
    from core.method.methods import Method, MethodConfig, trains_lora
    from core.method.optimise import OptimConfig, learning_rate_source, resolve_optim
    from core.method.reasoner import ReasonerAdapter
    from core.models.teacher import load_teacher

    if threads:
        torch.set_num_threads(threads)
    try:
        chosen = [Method(m.strip()) for m in methods.split(",") if m.strip()]
    except ValueError as exc:
        _fail(VlmtError(f"--methods: {exc} (expected names from {[m.value for m in Method]})"))
    try:
        n = _parse_n(n)
    except VlmtError as exc:
        _fail(exc)
    updates = {k: v for k, v in {"lr": lr, "max_steps": max_steps, "tau": tau, "lam": lam, "k_frames": k_frames}.items() if v is not None}
    if grad_mode:
        updates["grad_mode"] = grad_mode.value
    updates["guidance"] = {"scale": guidance, "negative_prompt": negative_prompt, "scale_2": guidance_2}
    try:
        optim = OptimConfig(**updates, early_stop=early_stop)
    except ValidationError as exc:
        _fail(_invalid_options(exc))
    if rank:
        optim.lora.rank = rank
        optim.lora.alpha = float(rank)
    grpo = {k: v for k, v in {"steps": grpo_steps, "group": grpo_group, "lr": grpo_lr, "noise_level": grpo_noise,
                              "kl": grpo_kl}.items() if v is not None}
    try:
        cfg = MethodConfig(optim=optim, queries=queries.value, grpo=grpo)
    except ValidationError as exc:
        _fail(_invalid_options(exc))
    models = models or Path(shipped("models"))
    reasoner, surrogate = reasoner or models / "reasoner", surrogate or models / "surrogate-decoder"
    teacher = teacher or models / "teacher"
    try:
        check_models(reasoner, surrogate, teacher)  # before any benchmark is made or model loaded
        if out is not None:
            check_creatable(out, "--out", file=True)
        if bench == "synth":
            benchmark = make_synth_benchmark(Path("runs/compare-bench") / f"seed{seed}-pf{per_family}", per_family, seed=seed,
                                             purpose=Purpose.TEST)
        else:
            benchmark = open_benchmark(bench)
        instances = spread_over_families(benchmark.instances, limit)
        r = ReasonerAdapter.from_paths(reasoner, surrogate)
        if trains_lora(chosen, n == "auto"):
            console.print(f"learning rate: {learning_rate_source(cfg.optim, reasoner)}", highlight=False)
        cfg = cfg.model_copy(update={"optim": resolve_optim(cfg.optim, reasoner)})
        t = load_teacher(teacher)
        t0 = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("items x methods", total=len(instances) * len(chosen))
            results = compare(r, t, instances, chosen, cfg, n=n, base_seed=seed,
                              on_result=lambda _: progress.advance(task))
    except VlmtError as exc:
        _fail(exc)
    summary = summarise_methods(results)
    _print_comparison(summary, len(instances), time.perf_counter() - t0)
    for res in results:
        if res.error:
            console.print(f"[red]failed[/] {res.instance_id} {res.method} ({res.error_stage}): {res.error}", highlight=False)
    if out:
        write_json_atomic(out, {"config": cfg.model_dump(mode="json"), "results": [x.model_dump(mode="json") for x in results]})
    if as_json:
        print(json.dumps({k: v.model_dump(mode="json") for k, v in summary.items()}, separators=(",", ":")))
    if any(res.error for res in results):
        raise typer.Exit(1)


def _print_comparison(summary: dict, n_items: int, seconds: float) -> None:
    faculties = sorted({f for s in summary.values() for f in s.by_faculty})
    table = Table(title=f"Methods on {n_items} items ({seconds:.0f} s): score (VBVR-style), strict success, cost, "
                        "judge fooled (broken rules the judge called Yes)")
    cols = ["method", "score", "success", "ID", "OOD", *faculties, "s/item", "NFE/item", "judge fooled", "vs vanilla",
            "errors"]
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right")
    for name, s in summary.items():
        table.add_row(name, f"{s.mean_score:.3f}", f"{s.success_rate:.1%}", f"{s.by_split.get('ID', float('nan')):.3f}",
                      f"{s.by_split.get('OOD', float('nan')):.3f}", *(f"{s.by_faculty.get(f, float('nan')):.3f}" for f in faculties),
                      f"{s.seconds_per_item:.2f}", f"{s.nfe_per_item:.1f}", _rate(s.judge_fooled_rate),
                      _rate(s.judge_fooled_vs_vanilla, signed=True), str(s.n_errors))
    console.print(table)
    paired = {k: s.vs_vanilla for k, s in summary.items() if s.vs_vanilla}
    if paired:
        diff = Table(title="Against vanilla on the same items: score difference, 95% interval (clustered by family), "
                           "items won / tied / lost")
        for c in ("method", "n", "difference", "95% interval", "won / tied / lost"):
            diff.add_column(c, justify="left" if c == "method" else "right")
        for name, d in paired.items():
            diff.add_row(name, str(d.n), f"{d.mean:+.3f}", f"{d.ci95_low:+.3f} to {d.ci95_high:+.3f}",
                         f"{d.wins} / {d.ties} / {d.losses}")
        console.print(diff)
    extras = {k: s.extra for k, s in summary.items() if s.extra}
    if extras:
        console.print(" ".join(f"{k}: {v}" for k, v in extras.items()), highlight=False)


def _rate(value: float | None, signed: bool = False) -> str:
    """A share as a percentage; '-' where it could not be measured (no broken rule was judged)."""
    if value is None:
        return "-"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
