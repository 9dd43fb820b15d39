"""``vlmt bench``: make a synthetic benchmark, and score videos against any benchmark.

Synth benchmarks are scored by their rule-based scorers, VBVR-Bench by its official toolkit
(VBVR-EvalKit) and RULER-Bench by a local Qwen-VL judge answering each checklist.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, fail
from cli.display import print_table, progress
from cli.output import quiet_model_loading
from core.bench.record import Purpose, Split
from core.checks import check_creatable, check_folder, check_teacher, require_instances
from core.errors import VlmtError

app = typer.Typer(help="Make, read and score benchmarks.", no_args_is_help=True)
make_app = typer.Typer(help="Generate a benchmark.", no_args_is_help=True)
app.add_typer(make_app, name="make")


class SplitOption(str, Enum):
    ID = "ID"
    OOD = "OOD"
    all = "all"


@make_app.command("synth")
def make_synth(
    out: Annotated[Path, typer.Option(help="Output directory (VBVR layout).")],
    per_family: Annotated[int, typer.Option(min=1, help="Instances per task family.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed; instances are deterministic per (purpose, family, seed, index).")] = 0,
    split: Annotated[SplitOption, typer.Option(help="Which families: in-domain, out-of-domain or all.")] = SplitOption.all,
    purpose: Annotated[Purpose, typer.Option(help="Disjoint halves of the instance space; evaluate on test.")] = Purpose.TEST,
    family: Annotated[list[str] | None, typer.Option(help="Only these families (repeatable).")] = None,
    width: Annotated[int, typer.Option(help="Frame width in pixels (even).")] = 64,
    height: Annotated[int, typer.Option(help="Frame height in pixels (even).")] = 64,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 17,
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 8.0,
) -> None:
    """Generate the built-in synthetic benchmark in the VBVR-Bench layout."""
    from core.bench.synth.generate import RenderConfig, make_synth_benchmark

    try:
        check_creatable(out, "--out")
        cfg = RenderConfig(width=width, height=height, n_frames=frames, fps=fps)
        t0 = time.perf_counter()
        bench = make_synth_benchmark(
            out, per_family, seed=seed, split=None if split == SplitOption.all else Split(split.value),
            purpose=purpose, cfg=cfg, families=family,
        )
    except (VlmtError, ValueError, KeyError) as exc:
        fail(exc)
    families = sorted({i.task_family for i in bench.instances})
    console.print(
        f"wrote {len(bench.instances)} {purpose.value} instances of {len(families)} families to {out} "
        f"in {time.perf_counter() - t0:.1f}s"
    )


@app.command("score")
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
        fail(VlmtError("give exactly one of --videos DIR or --ground-truth"))
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
        with progress() as bar:
            task = bar.add_task("scoring", total=len(benchmark.instances))
            items = score_benchmark(benchmark, videos, ground_truth=ground_truth, on_item=lambda _: bar.advance(task))
    except VlmtError as exc:
        fail(exc)
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
    from core.bench.vbvr_official import score_with_official_toolkit
    from core.io import write_json_atomic

    videos = videos.resolve()
    result = score_with_official_toolkit(benchmark.root, videos, videos.parent / f"{videos.name}_vbvr_eval")
    rows = [[name, str(sec.n_videos), str(sec.n_errors), f"{sec.mean_score:.3f}"] for name, sec in result.sections.items()]
    if result.by_category:
        rows += [None, *([f"category: {name}", "", "", f"{value:.3f}"] for name, value in result.by_category.items())]
    print_table("VBVR-Bench (official VBVR-EvalKit)", ("section", "videos", "errors", "mean score"), rows,
                text=("section",))
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
    quiet_model_loading()
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

    rows = [[cat, str(report.n_instances[cat]), *(f"{dims[d]:.1f}" if d in dims else "-" for d in RULER_DIMENSIONS),
             f"{report.category_avg[cat]:.1f}"] for cat, dims in report.per_category.items()]
    overall = report.overall_per_dimension
    rows.append(["overall", str(sum(report.n_instances.values())),
                 *(f"{overall[d]:.1f}" if d in overall else "-" for d in RULER_DIMENSIONS), f"{report.overall_average:.1f}"])
    print_table(f"RULER-Bench (0-100; judge: {judge})", ("category", "n", *RULER_DIMENSIONS, "avg"), rows,
                text=("category",), drop=("n",), more="; --json prints every figure")


def _print_summary(summary) -> None:
    def row(name: str, g) -> list[str]:
        return [name, str(g.n), f"{g.mean_score:.3f}", f"{g.success_rate:.1%}", str(g.n_errors)]

    rows: list[list[str] | None] = []
    for title, groups in (("split", summary.by_split), ("faculty", summary.by_faculty), ("family", summary.by_family)):
        rows += [None, *(row(f"{title}: {name}", g) for name, g in groups.items())]
    rows += [None, row("overall", summary.overall)]
    print_table("Rule-based scores (mean in [0, 1]; strict success rate)", ("group", "n", "score", "success", "errors"),
                rows, text=("group",), drop=("errors", "n"), more="; --json prints every figure")
