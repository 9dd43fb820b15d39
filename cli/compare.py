"""``vlmt compare``: run the methods on benchmark items in this process (no Prefect, no cache) and
print the comparison table; the quick way to try options before a cached ``vlmt evaluate`` run.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from cli.common import console, fail, invalid_options, parse_n
from cli.display import print_table, progress, rate
from cli.output import quiet_model_loading
from core.checks import check_creatable, check_models, shipped
from core.errors import VlmtError


# core.method.reasoner.GradMode's values; its module imports torch, which `vlmt --help` must not wait for.
class GradModeOption(str, Enum):
    first_step = "first_step"
    last_step = "last_step"
    full = "full"


class QueriesOption(str, Enum):
    teacher = "teacher"
    generic = "generic"


def compare_cmd(
    bench: Annotated[str, typer.Option(help="'synth' (generated test instances) or a synth benchmark directory.")] = "synth",
    models: Annotated[Path | None, typer.Option(help="Zoo folder with reasoner/, surrogate-decoder/, teacher/ "
                                                     "(default: the shipped one).")] = None,
    reasoner: Annotated[Path | None, typer.Option(help="A Wan I2V pipeline folder (default: MODELS/reasoner).")] = None,
    surrogate: Annotated[Path | None, typer.Option(help="A surrogate decoder folder (default: MODELS/surrogate-decoder).")] = None,
    teacher: Annotated[Path | None, typer.Option(help="A Qwen2.5-VL folder (default: MODELS/teacher).")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: vanilla,best_of_n,pass_at_n,pe,videotpo,teacher,still "
                                               "(still: the first frame held, a reference), the grpo ablation, or "
                                               "oracle_reward (an oracle: the scorer's relaxation as the reward).")] =
        "vanilla,best_of_n,pass_at_n,pe,videotpo,teacher,still",
    limit: Annotated[int | None, typer.Option(help="At most this many items, spread over families "
                                                        "(default: every item).")] = None,
    per_family: Annotated[int, typer.Option(help="Test instances per family when --bench synth.")] = 9,
    n: Annotated[str, typer.Option(help="Candidates for best_of_n/pass_at_n, or 'auto': N and VideoTPO's rounds "
                                        "matched to the teacher method's wall time.")] = "auto",
    seed: Annotated[int, typer.Option(help="Base seed (per-item seeds derive from it and the item id).")] = 0,
    lr: Annotated[float | None, typer.Option(help="LoRA learning rate (default: the Reasoner folder's "
                                                  "optim_defaults.json, else the paper's 5e-5).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Maximum LoRA updates per item (default: 40).")] = None,
    tau: Annotated[float | None, typer.Option(help="Early-stop threshold on the reward loss (default: "
                                                     "0.22).")] = None,
    early_stop: Annotated[bool, typer.Option(help="Stop when the loss <= tau.")] = True,
    lam: Annotated[float | None, typer.Option(help="Weight of the goal query, lambda (default: 0.5).")] = None,
    grad_mode: Annotated[GradModeOption | None, typer.Option(help="Which sampler steps the "
                                                               "gradient flows through (default: first_step).")] = None,
    k_frames: Annotated[int | None, typer.Option(help="Frames the Teacher sees (default: 24).")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank, and alpha (default: 16).")] = None,
    queries: Annotated[QueriesOption, typer.Option(help="teacher: the Teacher writes each item's rules; generic: the "
                                                        "paper's generic-queries ablation (instruction-derived goal, one "
                                                        "generic process query).")] = QueriesOption.teacher,
    grpo_steps: Annotated[int | None, typer.Option(help="grpo: maximum updates per item, one per "
                                                        "group (default: 9).")] = None,
    grpo_group: Annotated[int | None, typer.Option(help="grpo: rollouts per update (default: 4).")] = None,
    grpo_lr: Annotated[float | None, typer.Option(help="grpo: learning rate (default: --lr's).")] = None,
    grpo_noise: Annotated[float | None, typer.Option(help="grpo: the SDE's noise level a (default: 0.7).")] = None,
    grpo_kl: Annotated[float | None, typer.Option(help="grpo: weight of the KL from the frozen "
                                                     "Reasoner, 0: none (default: 0).")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale of every Reasoner rollout (1 = off).")] = 1.0,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt for guidance.")] = "",
    guidance_2: Annotated[float | None, typer.Option("--guidance-2", help="Two-expert Reasoners: the low-noise expert's "
                                                     "guidance scale (default: --guidance).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's own choice).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write every (item, method) record to this "
                                                   "JSON file (default: none).")] = None,
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
    from core.method.oracle import require_oracle_items
    from core.method.reasoner import ReasonerAdapter
    from core.models.teacher import load_teacher

    if threads:
        torch.set_num_threads(threads)
    try:
        chosen = [Method(m.strip()) for m in methods.split(",") if m.strip()]
    except ValueError as exc:
        fail(VlmtError(f"--methods: {exc} (expected names from {[m.value for m in Method]})"))
    try:
        n = parse_n(n)
    except VlmtError as exc:
        fail(exc)
    updates = {k: v for k, v in {"lr": lr, "max_steps": max_steps, "tau": tau, "lam": lam, "k_frames": k_frames}.items() if v is not None}
    if grad_mode:
        updates["grad_mode"] = grad_mode.value
    updates["guidance"] = {"scale": guidance, "negative_prompt": negative_prompt, "scale_2": guidance_2}
    try:
        optim = OptimConfig(**updates, early_stop=early_stop)
    except ValidationError as exc:
        fail(invalid_options(exc))
    if rank:
        optim.lora.rank = rank
        optim.lora.alpha = float(rank)
    grpo = {k: v for k, v in {"steps": grpo_steps, "group": grpo_group, "lr": grpo_lr, "noise_level": grpo_noise,
                              "kl": grpo_kl}.items() if v is not None}
    try:
        cfg = MethodConfig(optim=optim, queries=queries.value, grpo=grpo)
    except ValidationError as exc:
        fail(invalid_options(exc))
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
        if Method.ORACLE_REWARD in chosen:
            require_oracle_items(instances)  # before any model loads
        quiet_model_loading()
        r = ReasonerAdapter.from_paths(reasoner, surrogate)
        if trains_lora(chosen, n == "auto"):
            console.print(f"learning rate: {learning_rate_source(cfg.optim, reasoner)}", highlight=False)
        cfg = cfg.model_copy(update={"optim": resolve_optim(cfg.optim, reasoner)})
        t = load_teacher(teacher)
        t0 = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("items x methods", total=len(instances) * len(chosen))
            results = compare(r, t, instances, chosen, cfg, n=n, base_seed=seed, on_result=lambda _: bar.advance(task))
    except VlmtError as exc:
        fail(exc)
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
    """The methods' table (per-faculty columns are the first left out on a narrow terminal), then the paired one."""
    faculties = sorted({f for s in summary.values() for f in s.by_faculty})
    header = ["method", "score", "success", "ID", "OOD", *faculties, "s/item", "NFE/item", "judge fooled", "vs vanilla",
              "errors"]
    rows = [[name, f"{s.mean_score:.3f}", f"{s.success_rate:.1%}", f"{s.by_split.get('ID', float('nan')):.3f}",
             f"{s.by_split.get('OOD', float('nan')):.3f}", *(f"{s.by_faculty.get(f, float('nan')):.3f}" for f in faculties),
             f"{s.seconds_per_item:.2f}", f"{s.nfe_per_item:.1f}", rate(s.judge_fooled_rate),
             rate(s.judge_fooled_vs_vanilla, signed=True), str(s.n_errors)] for name, s in summary.items()]
    print_table(f"Methods on {n_items} items ({seconds:.0f} s): score (VBVR-style), strict success, cost, judge fooled "
                "(broken rules the judge called Yes)", header, rows, text=("method",),
                drop=(*reversed(faculties), "NFE/item", "errors", "vs vanilla", "ID", "OOD", "s/item"),
                more="; --json or --out FILE.json keeps every figure")
    paired = {k: s.vs_vanilla for k, s in summary.items() if s.vs_vanilla}
    if paired:
        print_table("Against vanilla on the same items: score difference, 95% interval (clustered by family), "
                    "items won / tied / lost", ("method", "n", "difference", "95% interval", "won / tied / lost"),
                    [[name, str(d.n), f"{d.mean:+.3f}", f"{d.ci95_low:+.3f} to {d.ci95_high:+.3f}",
                      f"{d.wins} / {d.ties} / {d.losses}"] for name, d in paired.items()],
                    text=("method",), drop=("n", "won / tied / lost"))
    extras = {k: s.extra for k, s in summary.items() if s.extra}
    if extras:
        console.print(" ".join(f"{k}: {v}" for k, v in extras.items()), highlight=False)
