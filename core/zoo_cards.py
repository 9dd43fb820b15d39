"""Model cards for a published zoo: a README.md in every model folder, with every figure.

The figures come from ``core.zoo_eval.evaluate_zoo`` (test instances only) and the stage records in
``zoo.json``; the cards say which command measured them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from core.io import write_json_atomic, write_text_atomic
from core.method.reasoner import OPTIM_DEFAULTS_FILE, recommended_lr
from core.zoo import JUDGE, REASONER, REASONER_BASE, SURROGATE, TEACHER


def _params(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in folder.rglob("*.safetensors"):
        with safe_open(f, "pt") as st:
            total += sum(int(np.prod(st.get_slice(k).get_shape())) for k in st.keys())  # noqa: SIM118 (safe_open is not a dict)
    return total


def _size_mib(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 2)


def _split_scores(ev: dict, name: str) -> str:
    c = ev.get(name)
    if not c:
        return "not measured"
    success = c.get("success_per_family")
    return (f"ID {c['score_id']:.3f}, OOD {c['score_ood']:.3f}, strict success ID {c['success_id']:.2f}, "
            f"OOD {c['success_ood']:.2f}" + (f" (per family: {success})" if success else ""))


#: The references around a Reasoner's score (``ZooEval`` fields): what the codec alone makes of
#: a held first frame and of the ground truth. The card's table and ``vlmt zoo eval`` show both.
CODEC_REFERENCES = {
    "still_floor": "first frame held (changes nothing), through the VAE",
    "vae_ceiling": "ground truth through the VAE (ceiling)",
}


def _reference_rows(ev: dict) -> str:
    """The Reasoner table's reference rows (``CODEC_REFERENCES``)."""
    rows = []
    for name, label in CODEC_REFERENCES.items():
        if c := ev.get(name):
            rows.append(f"| {label} | {c['score_id']:.3f} | {c['score_ood']:.3f} | {c['success_id']:.2f} | {c['success_ood']:.2f} |\n")
    return "".join(rows)


def criterion_table(per_criterion: dict[str, dict[str, float]]) -> str:
    """The Teacher card's limitations: per criterion, its accuracy beside a constant answer's.

    A criterion where the accuracy is at or below the majority answer's rate, with P(Yes) about
    the same whether the rule holds or not, is one the Teacher cannot judge; its reward then
    carries no signal about that rule (and an optimiser is free to break it).
    """
    if not per_criterion:
        return ""
    blind = [name for name, c in per_criterion.items() if c["accuracy"] <= c["majority_rate"]]
    rows = "".join(
        f"| {name} | {int(c['n'])} | {c['accuracy']:.3f} | {c['majority_rate']:.3f} | {_fixed(c['p_yes_when_yes'])} | "
        f"{_fixed(c['p_yes_when_no'])} |{' no better than constant |' if name in blind else ' |'}\n"
        for name, c in per_criterion.items())
    return (f"\n## Limitations: what it can tell, per criterion\n\nNo better than a constant answer on {len(blind)} of "
            f"{len(per_criterion)} criteria (accuracy at or below the majority answer's rate).\n\n"
            "| criterion | questions | accuracy | constant answer | P(Yes) when kept | P(Yes) when broken | |\n"
            "|---|---|---|---|---|---|---|\n" + rows)


def _fixed(value: float | None) -> str:
    """Two decimals; a dash where there is no value (no question of that truth: NaN, null once in JSON)."""
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def _mining_sentence(cfg: dict) -> str:
    if not cfg.get("mine_per_family"):
        return ""
    return (f", and the teacher method's own optimised videos on {cfg['mine_per_family']} train items per family, "
            f"made with a first-round Teacher of the same recipe (one mining round)")


def _few_steps(cfg: dict) -> tuple[str, str]:
    """How the 4-step Reasoner was made, for the card's headline and its training line."""
    d = cfg["distill"]
    if d["steps"]:
        return ("step-distilled to **4 steps** by reflow",
                f", then reflow distillation ({d['steps']} steps on {d['teacher_steps']}-step ODE pairs)")
    return "sampled at **4 Euler steps** without distillation (`distill.steps: 0`)", ", no reflow"


def _sampling_note(cfg: dict) -> str:
    """Where diffusers' own call cannot sample this folder: its TI2V timestep mask assumes a 2x2 patch."""
    if cfg["arch"].get("dit_patch", 2) == 2:
        return ""
    return (" The transformer's patch is not 2x2, which diffusers' TI2V call (`pipe(...)`) hard-codes in its timestep "
            "mask: the folder loads with `WanImageToVideoPipeline.from_pretrained`, and samples with "
            "`core.models.wan.generate_videos(pipe, ...)` (the same arithmetic; what every stage uses).")


def write_cards(models: Path, evaluation: dict) -> None:
    """A README.md model card in every folder, and the figures in ``zoo.json``."""
    record = json.loads((models / "zoo.json").read_text())
    record["eval"] = evaluation
    write_json_atomic(models / "zoo.json", record)
    cfg, st, ev = record["config"], record["stages"], evaluation
    common = (
        f"Trained from scratch by `vlmt zoo train` (flow `zoo-train`), seed {cfg['seed']}, offline, on the built-in "
        f"synthetic benchmark's *train* instances ({cfg['train_per_family']} per family); every figure below is on "
        f"*test* instances ({cfg['test_per_family']} per family), which never overlap with train. Machine: "
        f"{record['machine']}. Whole zoo: {record['train_seconds_total'] / 60:.1f} min of training.\n"
    )
    r, b = ev["reasoner"], ev["reasoner_base"]
    made, trained = _few_steps(cfg)
    cards = {
        REASONER: (
            "diffusers", "WanImageToVideoPipeline",
            (
                f"A tiny Wan2.2-TI2V-style Reasoner (`expand_timesteps=True`), {made}.\n\n"
                f"- Architecture: `{json.dumps(cfg['arch'])}`; {_params(models / REASONER):,} parameters in all.\n"
                f"- Text encoder: a tiny UMT5, randomly initialised and frozen (prompts are templated per family, so the "
                f"first frame carries most of the task); tokenizer: byte-level BPE built from the benchmark's prompts.\n"
                f"- VAE: tiny `AutoencoderKLWan`, trained for reconstruction on every family's ground truth "
                f"({cfg['vae']['steps']} steps); PSNR on test videos: {ev['vae_psnr_db']} dB; synth score of "
                f"VAE-reconstructed ground truth (the ceiling of any Reasoner output with this codec): "
                f"{_split_scores(ev, 'vae_ceiling')}; the first frame held for the whole video (a Reasoner that "
                f"changes nothing: every process rule kept, no goal), through the same codec: "
                f"{_split_scores(ev, 'still_floor')}.\n"
                f"- Transformer: flow matching on the in-domain families only ({cfg['flow']['steps']} steps){trained}. "
                f"Use `num_inference_steps=4, guidance_scale=1.0`.{_sampling_note(cfg)}\n"
                f"- Test-time optimisation: `{OPTIM_DEFAULTS_FILE}` recommends learning rate {recommended_lr(models / REASONER)[0]:g} "
                f"for the item LoRA (an experiment that leaves `lr` unset uses it; the paper's 5e-5 is for a 5B model).\n"
                f"- Wall time: VAE {st['vae']['seconds']:.0f} s, transformer + distillation {st['reasoner']['seconds']:.0f} s.\n\n"
                f"| sampler | ID score | OOD score | ID strict success | OOD strict success |\n|---|---|---|---|---|\n"
                f"| this model, 4 steps | {r['score_id']:.3f} | {r['score_ood']:.3f} | {r['success_id']:.2f} | {r['success_ood']:.2f} |\n"
                f"| undistilled (`reasoner-base`), {b['steps']} steps | {b['score_id']:.3f} | {b['score_ood']:.3f} | "
                f"{b['success_id']:.2f} | {b['success_ood']:.2f} |\n{_reference_rows(ev)}\nPer family (4 steps): {r['per_family']}\n"
            ),
        ),
        REASONER_BASE: (
            "diffusers", "WanTransformer3DModel",
            (
                f"The undistilled Reasoner's transformer (flow matching only, {cfg['flow']['steps']} steps on in-domain "
                f"families): the reference the 4-step `reasoner` is measured against. Its text encoder, VAE and "
                f"scheduler are the `reasoner` folder's; load it with `WanTransformer3DModel.from_pretrained(path)` and "
                f"pass it as `transformer=` to `WanImageToVideoPipeline.from_pretrained(\"models/reasoner\", ...)`. "
                f"Sample with 30 steps.\n\n"
                f"ID score {b['score_id']:.3f}, OOD score {b['score_ood']:.3f} ({b['steps']} Euler steps).\n"
            ),
        ),
        SURROGATE: (
            "diffusers", "SurrogateDecoder",
            (
                f"A surrogate for the Reasoner's VAE decoder (`core.models.surrogate.SurrogateDecoder`, "
                f"{_params(models / SURROGATE):,} parameters), distilled from the VAE's own decodes of clean and noisy "
                f"latents ({cfg['surrogate']['steps']} steps, {st['surrogate']['seconds']:.0f} s). Load with "
                f"`SurrogateDecoder.from_pretrained(path)`; it takes the same raw latents as `vae.decode`.\n\n"
                f"- PSNR against the VAE decode: {ev['surrogate']['psnr_vs_vae_db']} dB\n"
                f"- Decode time per video: VAE {ev['surrogate']['vae_decode_s']} s, surrogate "
                f"{ev['surrogate']['surrogate_decode_s']} s ({ev['surrogate']['speedup']}x faster)\n"
            ),
        ),
        TEACHER: (
            "transformers", "Qwen2_5_VLForConditionalGeneration",
            (
                f"A tiny Qwen2.5-VL Teacher ({_params(models / TEACHER):,} parameters) trained on all seven families to "
                f"write rule queries as JSON and to answer Yes/No about a video, with augmentation (blur, noise, shifts). "
                f"Its training videos include ground truth, rule-breaking perturbations and the Reasoner's own samples "
                f"labelled by the rule-based scorers{_mining_sentence(cfg)}. Recipe: `{json.dumps(cfg['teacher'])}`; "
                f"{st['teacher']['seconds']:.0f} s.\n\nFigures on test instances: "
                f"`{json.dumps({k: v for k, v in ev['teacher'].items() if k != 'per_criterion'})}`\n"
                + criterion_table(ev["teacher"].get("per_criterion") or {})
            ),
        ),
    }
    if ev.get("judge") and (models / JUDGE).is_dir():
        cards[JUDGE] = (
            "transformers", "Qwen2_5_VLForConditionalGeneration",
            (
                f"The held-out judge: a second Teacher of the same recipe and data, trained with seed "
                f"{cfg['judge_seed']} (its own initialisation, stand-ins and batch order). No method optimises against "
                f"it; it measures whether optimised videos fool a judge they were not optimised against.\n\n"
                f"Figures on the same test videos as `teacher`: "
                f"`{json.dumps({k: v for k, v in ev['judge'].items() if k != 'per_criterion'})}`\n"
                + criterion_table(ev["judge"].get("per_criterion") or {})
            ),
        )
    for name, (library, cls, body) in cards.items():
        text = (
            f"---\nlibrary_name: {library}\nlicense: apache-2.0\ntags: [vlmt, tiny, synthetic]\n---\n\n"
            f"# vlmt tiny zoo: {name} (`{cls}`)\n\n{body}\n{common}\nFolder size: {_size_mib(models / name)} MiB.\n"
            f"Targets checked by `vlmt zoo eval`: `{json.dumps(ev['targets'])}`\n"
        )
        write_text_atomic(models / name / "README.md", text)
