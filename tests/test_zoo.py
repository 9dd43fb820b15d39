"""A micro zoo trained end to end through the real flow, stages and loaders (tiny sizes, a few steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from PIL import Image
from safetensors import safe_open


@pytest.fixture(scope="module")
def micro_zoo(prefect_harness, tmp_path_factory):
    from flows.zoo import zoo_train

    root = tmp_path_factory.mktemp("zoo")
    result = zoo_train(out=str(root / "models"), work=str(root / "work"), preset="micro", seed=0, evaluate=True)
    return root, result


def test_micro_zoo_publishes_every_model_with_cards_and_figures(micro_zoo):
    root, _ = micro_zoo
    models = root / "models"
    for name in ("reasoner", "reasoner-base", "surrogate-decoder", "teacher"):
        assert (models / name / "README.md").is_file(), name
        assert list((models / name).rglob("*.safetensors")), name
    record = json.loads((models / "zoo.json").read_text())
    assert record["train_seconds_total"] > 0
    # the undistilled reference is stored in bfloat16 and loads back as float32
    with safe_open(models / "reasoner-base" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert {p.dtype for p in WanTransformer3DModel.from_pretrained(models / "reasoner-base").parameters()} == {torch.float32}
    # the Reasoner recommends a learning rate: a config without optim_defaults publishes the first zoo's
    from core.zoo import ZOO_OPTIM_DEFAULTS
    assert json.loads((models / "reasoner" / "optim_defaults.json").read_text()) == ZOO_OPTIM_DEFAULTS.model_dump(mode="json")
    assert set(record["eval"]["targets"]) >= {"codec_success_ge_0.9_every_family", "reasoner_success_id_in_0.2_0.5",
                                              "reasoner_above_still", "teacher_accuracy_ge_0.9", "teacher_query_json_ge_0.95"}
    assert 0.0 <= record["eval"]["reasoner"]["score_id"] <= 1.0
    # the references around the Reasoner's score: a held first frame and the truth, both through the codec
    floor, ceiling = record["eval"]["still_floor"], record["eval"]["vae_ceiling"]
    assert (floor["n_id"], floor["n_ood"]) == (ceiling["n_id"], ceiling["n_ood"]) == (5, 2)
    assert floor["success_id"] == floor["success_ood"] == 0.0  # changing nothing never reaches a goal
    card = (models / "reasoner" / "README.md").read_text()
    assert f"| first frame held (changes nothing), through the VAE | {floor['score_id']:.3f} |" in card
    assert "step-distilled to **4 steps** by reflow" in card and "no reflow" not in card  # the micro recipe reflows
    # the Teacher card's limitations: one row per criterion, and the count of those no better than a constant answer
    per = record["eval"]["teacher"]["per_criterion"]
    teacher_card = (models / "teacher" / "README.md").read_text()
    blind = sum(c["accuracy"] <= c["majority_rate"] for c in per.values())
    assert per and f"No better than a constant answer on {blind} of {len(per)} criteria" in teacher_card
    assert all(f"| {name} | {int(c['n'])} | {c['accuracy']:.3f} |" in teacher_card for name, c in per.items())


def test_shipped_reasoner_generates_from_a_synth_first_frame(micro_zoo):
    from core.bench.source import open_benchmark
    from core.media import read_image

    root, _ = micro_zoo
    bench = open_benchmark(next((root / "work" / "stages").glob("bench-*")) / "bench-test")
    inst = bench.instances[0]
    pipe = WanImageToVideoPipeline.from_pretrained(root / "models" / "reasoner")
    out = pipe(image=Image.fromarray(read_image(inst.first_frame)), prompt=inst.prompt, height=64, width=64,
               num_frames=17, num_inference_steps=4, guidance_scale=1.0, output_type="np").frames[0]
    assert out.shape == (17, 64, 64, 3) and np.isfinite(out).all()


def test_surrogate_loads_without_the_vae(micro_zoo):
    from core.models.surrogate import SurrogateDecoder

    root, _ = micro_zoo
    sur = SurrogateDecoder.from_pretrained(root / "models" / "surrogate-decoder")
    c = sur.config
    z = torch.randn(1, c.z_dim, 1 + 16 // c.scale_factor_temporal, 64 // c.scale_factor_spatial, 64 // c.scale_factor_spatial)
    assert sur(z).shape == (1, 3, 17, 64, 64)


def test_the_reasoner_gate_script_measures_a_stage_as_the_zoo_eval_does(micro_zoo):
    """scripts/reasoner_gate.py on the Reasoner stage folder gives the figures vlmt zoo eval wrote for
    the published copy (same seeds, the stored bfloat16 reference): a gate measured before the Teacher exists."""
    import subprocess
    import sys

    root, _ = micro_zoo
    stages = root / "work" / "stages"
    stage = next(p for p in stages.glob("reasoner-*") if p.suffix not in (".tmp", ".ckpt"))
    out = subprocess.run([sys.executable, "scripts/reasoner_gate.py", "--stage", str(stage), "--test-bench",
                          str(next(stages.glob("bench-*")) / "bench-test"), "--base-steps", "3"],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    gate = json.loads(out.stdout.strip().splitlines()[-1])
    record = json.loads((root / "models" / "zoo.json").read_text())["eval"]
    for name in ("reasoner", "reasoner_base", "still_floor"):
        assert gate[name] == record[name], name
    assert gate["targets"] == {k: v for k, v in record["targets"].items() if k in gate["targets"]}
    assert len(gate["targets"]) == 4
    assert sum(gate["broken"].values()) > 0  # a 3-step micro Reasoner breaks rules; each counted per family/criterion
    assert all(k.split("/")[0] in record["reasoner"]["per_family"] for k in gate["broken"])


def test_rerun_reuses_every_finished_stage(micro_zoo, tmp_path):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.zoo import zoo_train

    root, first = micro_zoo
    assert list((root / "work" / "prefect-results").iterdir()), "the cache records belong in the work dir"
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "empty-default-storage"}):
        again = zoo_train(out=str(tmp_path / "models"), work=str(root / "work"), preset="micro", seed=0, evaluate=False)
    for stage, rec in first["stages"].items():
        assert again["stages"][stage] == rec, stage  # same key, same path, same recorded seconds: not recomputed
    # as if each stage had been killed after moving its folder into place, before Prefect stored its result
    shutil.rmtree(root / "work" / "prefect-results")
    stamps = {p: p.stat().st_mtime_ns for p in (root / "work" / "stages").glob("*/stage.json")}
    third = zoo_train(out=str(tmp_path / "models3"), work=str(root / "work"), preset="micro", seed=0, evaluate=False)
    assert third["stages"] == first["stages"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a finished stage without its cache entry was redone"


def test_committed_finished_stages_are_started_from_not_retrained(micro_zoo, tmp_path):
    from flows.zoo import zoo_train

    root, first = micro_zoo
    parts = tmp_path / "parts"
    for stage in ("vae", "surrogate", "reasoner"):
        shipped = Path(first["stages"][stage]["path"])
        shutil.copytree(shipped, parts / shipped.name)
    (parts / "vae-000000000000").mkdir()  # an unfinished folder (no stage.json) is never copied
    work = tmp_path / "work"
    again = zoo_train(out=str(tmp_path / "models"), work=str(work), preset="micro", seed=0, evaluate=False,
                      until="reasoner", parts=str(parts))
    for stage in ("vae", "surrogate", "reasoner"):
        rec = again["stages"][stage]
        assert Path(rec["path"]).parent == work / "stages", stage
        # the committed record (its key and the seconds it was trained in) is what the new work dir holds
        assert {k: v for k, v in rec.items() if k != "path"} == {
            k: v for k, v in first["stages"][stage].items() if k != "path"}, stage
    assert not (work / "stages" / "vae-000000000000").exists()


def test_a_surrogate_for_any_wan_vae_is_distilled_by_the_cli_and_reused(micro_zoo, tmp_path):
    """`vlmt zoo surrogate`: a pipeline folder's VAE, a benchmark's ground-truth mp4s, latent windows."""
    from typer.testing import CliRunner

    from cli.main import app
    from core.models.surrogate import SurrogateDecoder

    root, _ = micro_zoo
    bench = next((root / "work" / "stages").glob("bench-*")) / "bench-test"
    out = tmp_path / "surrogate"
    args = ["zoo", "surrogate", "--vae", str(root / "models" / "reasoner"), "--bench", str(bench), "--out", str(out),
            "--work", str(tmp_path / "work"), "--steps", "3", "--crop", "4", "--videos", "6", "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "dB vs the VAE decode" in r.output and "on 3 training videos" in r.output  # 6 videos: 3 train, 3 measure
    sur = SurrogateDecoder.from_pretrained(out)
    vae_cfg = json.loads((root / "models" / "reasoner" / "vae" / "config.json").read_text())
    assert sur.config.z_dim == vae_cfg["z_dim"] and sur.config.latents_std == vae_cfg["latents_std"]
    assert sur(torch.randn(1, sur.config.z_dim, 5, 16, 16)).shape == (1, 3, 17, 64, 64)  # whole latents, not windows
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert np.isfinite(fidelity["psnr_vs_vae_db"]) and len(fidelity["curve"]) == 1
    before = (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before  # the finished folder is reused
    shutil.rmtree(tmp_path / "work" / "prefect-results")  # no cache entry: the folder itself is the result
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and f"{fidelity['psnr_vs_vae_db']:.2f} dB" in r.output, r.output
    assert (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    r = CliRunner().invoke(app, [*args[:2], "--vae", str(root / "models" / "teacher"), *args[4:]])
    assert r.exit_code == 2 and "not a VAE folder" in r.output


def test_the_shipped_zoos_recipe_is_the_config_in_the_repo():
    """`vlmt zoo train --config configs/zoo-v2.yaml` makes the shipped zoo: its first stage keys are the ones recorded."""
    from flows.zoo import config_keys, zoo_config

    root = Path(__file__).resolve().parents[1]
    shipped = json.loads((root / "models" / "zoo.json").read_text())
    keys = (shipped["stages"]["benchmarks"]["key"], shipped["stages"]["vae"]["key"])
    assert config_keys(zoo_config("full", 0, str(root / "configs" / "zoo-v2.yaml")), world=shipped["world_version"]) == keys
    assert config_keys(zoo_config("full", 0), world=shipped["world_version"]) != keys  # the preset alone is the first zoo's


def test_the_benchmark_key_names_the_synthetic_world():
    """A work dir holding another world's instances never serves them: the world version is in the key."""
    from core.bench.synth.generate import WORLD_VERSION
    from flows.zoo import config_keys, zoo_config

    cfg = zoo_config("full", 0)
    assert WORLD_VERSION > 1
    assert config_keys(cfg)[0] != config_keys(cfg, world=1)[0] != config_keys(cfg, world=WORLD_VERSION + 1)[0]


def test_a_config_file_overrides_the_preset_field_by_field(tmp_path):
    from flows.zoo import zoo_config

    f = tmp_path / "zoo.yaml"
    f.write_text("seed: 3\nvae: {steps: 16000}\narch: {vae_residual: true, vae_dim_mult: [1, 2, 4]}\n")
    cfg = zoo_config("full", None, str(f))
    assert (cfg.seed, cfg.vae.steps, cfg.arch.vae_residual, cfg.arch.vae_dim_mult) == (3, 16000, True, [1, 2, 4])
    assert cfg.vae.batch == 8 and cfg.arch.dit_layers == 4 and cfg.teacher.steps == 1200  # the rest: the preset's
    assert zoo_config("micro", 7, str(f)).model_copy(update={"seed": 0}) != zoo_config("micro", 0)
    assert zoo_config("micro", 7, str(f)).seed == 7 and zoo_config("micro", None, str(f)).teacher.steps == 6


@pytest.mark.parametrize(("text", "message"), [
    ("vae: {stpes: 8000}\n", "zoo.yaml:vae.stpes: is not a field of this config"),
    ("teacher: {arch: {text_layers: many}}\n", "zoo.yaml:teacher.arch.text_layers: Input should be a valid integer"),
    ("vae: {steps: 0}\n", "zoo.yaml:vae.steps: Input should be greater than or equal to 1 (got 0)"),
    ("- vae\n", "zoo.yaml: holds a list"),
])
def test_a_bad_config_file_is_refused_naming_the_file_and_field(tmp_path, text, message):
    from typer.testing import CliRunner

    from cli.main import app

    f = tmp_path / "zoo.yaml"
    f.write_text(text)
    r = CliRunner().invoke(app, ["zoo", "train", "--preset", "micro", "--config", str(f), "--work", str(tmp_path / "w"),
                                 "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert not (tmp_path / "w").exists()  # refused before any stage ran


def test_a_config_file_that_changes_the_teacher_retrains_only_the_teacher(micro_zoo, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    root, first = micro_zoo
    f = tmp_path / "teacher.yaml"
    f.write_text("teacher: {steps: 4}\n")
    r = CliRunner().invoke(app, ["zoo", "train", "--preset", "micro", "--config", str(f), "--seed", "0", "--no-evaluate",
                                 "--work", str(root / "work"), "--out", str(tmp_path / "models")])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "models" / "zoo.json").read_text())
    assert record["config"]["teacher"]["steps"] == 4
    assert json.loads((tmp_path / "models" / "teacher" / "train_report.json").read_text())["steps"] == 4
    for stage in ("benchmarks", "vae", "surrogate", "reasoner"):
        assert record["stages"][stage]["key"] == first["stages"][stage]["key"], stage
    assert record["stages"]["teacher"]["key"] != first["stages"]["teacher"]["key"]


def test_a_mining_round_and_a_held_out_judge_are_trained_and_published(micro_zoo, tmp_path):
    from core import zoo

    root, first = micro_zoo
    stages = first["stages"]
    cfg = zoo.ZooConfig.micro().model_copy(update={"mine_per_family": 1, "judge_seed": 1})
    target = tmp_path / "stage"
    zoo.train_teacher_stage(Path(stages["benchmarks"]["path"]) / "bench-train", Path(stages["reasoner"]["path"]) / zoo.REASONER,
                            target, cfg, surrogate_dir=Path(stages["surrogate"]["path"]))
    report = json.loads((target / "train_report.json").read_text())
    assert report["data_counts"]["mined"] == 7  # the teacher method's video on one train item of each family
    assert report["data_counts"]["reasoner"] == 7
    assert json.loads((target / "judge" / "train_config.json").read_text())["seed"] == 1
    assert json.loads((target / "train_config.json").read_text())["seed"] == 0
    assert (target / "model.safetensors").read_bytes() != (target / "judge" / "model.safetensors").read_bytes()
    assert not (tmp_path / "stage.round0").exists(), "the first-round Teacher is scratch"

    out = zoo.publish({**stages, "teacher": {**stages["teacher"], "path": str(target)}}, tmp_path / "models", cfg)
    assert (out / zoo.JUDGE / "model.safetensors").is_file()
    assert not (out / zoo.TEACHER / "judge").exists()


def test_mining_refuses_test_instances(micro_zoo):
    from core.bench.source import open_benchmark
    from core.errors import InputError
    from core.bench.record import Purpose
    from core.train.mining import run_teacher_method

    root, first = micro_zoo
    test = open_benchmark(Path(first["stages"]["benchmarks"]["path"]) / "bench-test").instances
    with pytest.raises(InputError, match="train-purpose"):
        run_teacher_method("unused", "unused", "unused", test[:1], lr=1e-2, seed=0, only=Purpose.TRAIN)


def test_the_judge_is_evaluated_on_the_teachers_test_videos_and_carded(micro_zoo, tmp_path):
    from flows.zoo import zoo_train

    root, _ = micro_zoo
    config = tmp_path / "zoo.yaml"
    config.write_text("mine_per_family: 1\njudge_seed: 1\n")
    result = zoo_train(out=str(tmp_path / "models"), work=str(root / "work"), preset="micro", seed=0, evaluate=True,
                       config_file=str(config))
    ev = result["eval"]
    for name in ("teacher", "judge"):
        by_source = ev[name]["false_yes_by_source"]
        # judged on the teacher method's own test videos and on the two reward hacks, like the Teacher
        assert {"mined", "perturbation:erase", "perturbation:still"} <= set(by_source), (name, by_source)
        assert 0.0 <= ev[name]["balanced_accuracy_goal"] <= 1.0
        assert f"{name}_false_yes_erase_still_le_0.1" in ev["targets"]
    assert ev["teacher"]["counts"]["videos"] == ev["judge"]["counts"]["videos"]
    card = (tmp_path / "models" / "teacher-judge" / "README.md").read_text()
    assert "held-out judge" in card and "seed 1" in card


def test_the_restart_profile_starts_at_the_codecs_ceiling_and_ends_at_a_sample_from_noise(micro_zoo):
    """scripts/restart_profile.py: at sigma 0 the figures are the codec's (ground truth through the VAE), as
    vlmt zoo eval recorded them; at sigma 1 the whole ODE (3 steps here); bad input refused by name."""
    import subprocess
    import sys

    root, _ = micro_zoo
    stages = root / "work" / "stages"
    stage = next(p for p in stages.glob("reasoner-*") if p.suffix not in (".tmp", ".ckpt"))
    bench = str(next(stages.glob("bench-*")) / "bench-test")
    cwd = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "scripts/restart_profile.py", "--stage", str(stage), "--test-bench", bench,
                          "--sigmas", "0,1", "--full-steps", "3"], capture_output=True, text=True, check=True, cwd=cwd)
    rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["sigma"] for r in rows] == [0.0, 1.0] and [r["steps"] for r in rows] == [0, 3]
    ceiling = json.loads((root / "models" / "zoo.json").read_text())["eval"]["vae_ceiling"]
    for field in ("score_id", "score_ood", "success_id", "success_ood", "per_family"):
        assert rows[0][field] == ceiling[field], field
    bad = subprocess.run([sys.executable, "scripts/restart_profile.py", "--stage", str(stage), "--test-bench", bench,
                          "--sigmas", "0,2"], capture_output=True, text=True, cwd=cwd)
    assert bad.returncode == 2 and "--sigmas" in bad.stderr and "[0, 1]" in bad.stderr


def test_the_reasoner_card_says_when_it_is_not_distilled():
    from core.zoo import ZooConfig
    from core.zoo_cards import _few_steps

    cfg = ZooConfig().model_dump(mode="json")
    headline, training = _few_steps(cfg)
    assert "reflow distillation (500 steps on 30-step ODE pairs)" in training and "reflow" in headline
    cfg["distill"]["steps"] = 0
    headline, training = _few_steps(cfg)
    assert training == ", no reflow" and "without distillation" in headline


def test_the_reasoner_card_says_how_to_sample_a_patch_diffusers_call_cannot():
    """A 4x4-patch transformer (the shipped one) loads with diffusers but its TI2V call assumes 2x2: the card says so."""
    from core.zoo import ZooConfig
    from core.zoo_cards import _sampling_note

    cfg = ZooConfig().model_dump(mode="json")
    assert _sampling_note(cfg) == ""
    cfg["arch"]["dit_patch"] = 4
    assert "generate_videos" in _sampling_note(cfg) and "2x2" in _sampling_note(cfg)
    shipped = json.loads((Path(__file__).resolve().parents[1] / "models" / "zoo.json").read_text())["config"]
    card = (Path(__file__).resolve().parents[1] / "models" / "reasoner" / "README.md").read_text()
    assert (_sampling_note(shipped) in card) and bool(_sampling_note(shipped)) == (shipped["arch"].get("dit_patch", 2) != 2)


def test_the_recommended_learning_rate_is_a_recipe_field_outside_every_stage_key(tmp_path):
    """optim_defaults in a zoo config is what publishing writes to reasoner/optim_defaults.json; no stage key moves."""
    from core.method.reasoner import OPTIM_DEFAULTS_FILE
    from core.zoo import ZOO_OPTIM_DEFAULTS, published_optim_defaults
    from flows.zoo import config_keys, zoo_config

    plain = zoo_config("full", 0)
    f = tmp_path / "zoo.yaml"
    f.write_text("optim_defaults: {lr: 3.0e-4, why: measured}\n")
    tuned = zoo_config("full", 0, str(f))
    assert published_optim_defaults(plain) == ZOO_OPTIM_DEFAULTS
    assert published_optim_defaults(tuned).lr == 3e-4 and published_optim_defaults(tuned).why == "measured"
    assert config_keys(tuned) == config_keys(plain)
    root = Path(__file__).resolve().parents[1]
    shipped = json.loads((root / "models" / "reasoner" / OPTIM_DEFAULTS_FILE).read_text())
    assert shipped == published_optim_defaults(zoo_config("full", 0, str(root / "configs" / "zoo-v2.yaml"))).model_dump(mode="json")
