"""``vlmt zoo``: train the embedded tiny model zoo, distil a surrogate decoder, measure the zoo."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, fail
from cli.display import print_table
from cli.output import quiet_model_loading
from core.checks import check_bench, check_creatable, check_models, check_weights, shipped
from core.errors import VlmtError

app = typer.Typer(help="Train and evaluate the embedded tiny model zoo.", no_args_is_help=True)


class ZooPreset(str, Enum):
    full = "full"
    quick = "quick"
    micro = "micro"


@app.command("train")
def zoo_train(
    out: Annotated[Path, typer.Option(help="Where the models are published.")] = Path("models"),
    work: Annotated[Path, typer.Option(help="Stage outputs and benchmarks (resumable cache).")] = Path("runs/zoo"),
    quick: Annotated[bool, typer.Option("--quick", help="About a quarter of the full budget (a smoke run).")] = False,
    preset: Annotated[ZooPreset | None, typer.Option(help="full, quick or micro (tests); overrides --quick (default: "
                                                                 "full, or quick with --quick).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every stage (default: the config's, 0).")] = None,
    evaluate: Annotated[bool, typer.Option(help="Measure the quality targets and write the model cards.")] = True,
    until: Annotated[str | None, typer.Option(help="Stop after this stage ('reasoner'); rerun later to finish "
                                                           "(default: run every stage).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML overriding any ZooConfig fields of the preset "
                                                     "(e.g. vae: {steps: 16000}); see the README (default: none, "
                                                     "the preset as it is).")] = None,
    parts: Annotated[Path | None, typer.Option(help="Committed finished stages to start from; --no-parts or a "
                                                    "missing folder trains every stage.")] = Path("models/parts"),
    no_parts: Annotated[bool, typer.Option("--no-parts", help="Train every stage, ignoring --parts.")] = False,
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
        quiet_model_loading()
        result = flow(out=str(out), work=str(work), preset=chosen, seed=seed, evaluate=evaluate, until=until,
                      config_file=str(config) if config else None, parts=None if no_parts else str(parts))
    except VlmtError as exc:
        fail(exc)
    print_table(f"zoo trained ({chosen}) in {time.perf_counter() - t0:.0f} s -> {result['models']}", ("stage", "seconds"),
                [[name, f"{rec['seconds']:.0f}"] for name, rec in result["stages"].items()], text=("stage",))
    if "eval" in result:
        _print_zoo_eval(result["eval"])


@app.command("surrogate")
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
        quiet_model_loading()
        result = surrogate_for_vae(vae=str(vae), bench=str(bench), out=str(out), work=str(work),
                                   config_json=cfg.model_dump_json())
    except VlmtError as exc:
        fail(exc)
    console.print(f"surrogate decoder for {result['vae']} -> {result['path']}: {result['psnr_vs_vae_db']:.2f} dB vs the VAE "
                  f"decode, {result['speedup']}x faster ({result['surrogate_decode_s']:.4f} s vs {result['vae_decode_s']:.4f} s "
                  f"per video) on {result['train_videos']} training videos, {result['train_seconds']:.0f} s",
                  highlight=False, soft_wrap=True)


@app.command("eval")
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
        quiet_model_loading()
        result = zoo_evaluate(models=str(models), work=str(work), seed=seed)
    except VlmtError as exc:
        fail(exc)
    _print_zoo_eval(result)
    if as_json:
        print(json.dumps(result, separators=(",", ":"), default=str))


def _print_zoo_eval(ev: dict) -> None:
    from core.zoo_cards import CODEC_REFERENCES

    rows: list[list[str] | None] = [[f"VAE reconstruction PSNR ({split})", f"{v:.2f} dB"]
                                    for split, v in ev["vae_psnr_db"].items()]
    s = ev["surrogate"]
    rows.append(["surrogate vs VAE decode PSNR", f"{s['psnr_vs_vae_db']:.2f} dB"])
    rows.append(["decode s/video: VAE | surrogate", f"{s['vae_decode_s']:.3f} | {s['surrogate_decode_s']:.4f} "
                                                     f"({s['speedup']}x)"])
    for name in ("reasoner", "reasoner_base"):
        r = ev[name]
        rows.append([f"{name} ({r['steps']} steps) score ID | OOD", f"{r['score_id']:.3f} | {r['score_ood']:.3f}"])
    rows.append(["distilled - base (ID)", f"{ev['distilled_minus_base_id']:+.3f}"])
    for name, label in CODEC_REFERENCES.items():
        if r := ev.get(name):
            rows.append([f"{label}: score ID | OOD", f"{r['score_id']:.3f} | {r['score_ood']:.3f}"])
    rows += [[f"teacher {k}", f"{v:.3f}"] for k, v in ev["teacher"].items() if isinstance(v, float)]
    rows += [None, *([k, "[green]met[/]" if ok else "[red]missed[/]"] for k, ok in ev["targets"].items())]
    print_table("Tiny zoo quality on test instances", ("figure", "value"), rows, text=("figure",))
