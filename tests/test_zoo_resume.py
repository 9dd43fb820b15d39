"""Every zoo training loop and stage survives interruption: it checkpoints, resumes, and ends
with bitwise the same weights as an uninterrupted run (``core.train.checkpoint``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core import zoo
from core.bench.source import open_benchmark
from core.models.wan import first_frame_prior
from core.train.checkpoint import StageCheckpoint, TrainingCheckpoint, TrainingStopped, resume
from core.train.common import ground_truth_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The micro zoo's config, its train benchmark and a trained VAE (uninterrupted)."""
    cfg = zoo.ZooConfig.micro()
    work = tmp_path_factory.mktemp("resume")
    train, _ = zoo.make_benchmarks(work, cfg.model_copy(update={"test_per_family": 0}))
    zoo.train_reasoner_vae(train, work / "vae", cfg)
    return cfg, train, work


def weights(*modules: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def assert_same_weights(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for sa, sb in zip(a, b, strict=True):
        assert sa.keys() == sb.keys()
        differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


#: Files of a stage's output that record wall time: compared without their seconds.
TIMED = {"stage.json", "train_report.json"}


def assert_same_folders(a: Path, b: Path) -> None:
    """Every weight file, config and curve of two stage outputs, byte for byte (timed records but for their seconds)."""
    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in {".safetensors", ".json"} and p.name != "stage.json")

    assert files(a) and files(a) == files(b)
    differ = [str(f) for f in files(a) if f.name not in TIMED and (a / f).read_bytes() != (b / f).read_bytes()]
    assert not differ, differ
    for f in (f for f in files(a) if f.name in TIMED):
        untimed = [{k: v for k, v in json.loads((root / f).read_text()).items() if not k.startswith("seconds")} for root in (a, b)]
        assert untimed[0] == untimed[1], f


def stopped_then_resumed(run, folder: Path, stop_after: int, key: str = "test"):
    """``run(checkpoint)`` trains from fresh objects: stop it after ``stop_after`` steps, then resume it."""
    with pytest.raises(TrainingStopped):
        run(TrainingCheckpoint(folder, key, every_seconds=0, stop_after=stop_after))
    assert TrainingCheckpoint(folder, key).saved_step() == stop_after
    return run(TrainingCheckpoint(folder, key, every_seconds=0))


# --------------------------------------------------------------------------- each loop

def _vae_loop(micro):
    from core.models.wan import build_vae
    from core.train.vae import VaeTrainConfig, train_vae

    cfg, train, _ = micro
    videos = [ground_truth_video(i) for i in open_benchmark(train).instances[:4]]

    def run(checkpoint):
        torch.manual_seed(0)
        vae = build_vae(cfg.arch)
        curve = train_vae(vae, videos, VaeTrainConfig(steps=5, batch=2, crop=16), checkpoint)
        return weights(vae), curve

    return run


def _surrogate_loop(micro):
    from diffusers import AutoencoderKLWan

    from core.train.surrogate import SurrogateTrainConfig, train_surrogate

    cfg, train, work = micro
    vae = AutoencoderKLWan.from_pretrained(work / "vae").eval()
    videos = [ground_truth_video(i) for i in open_benchmark(train).instances[:4]]

    def run(checkpoint):
        model, curve = train_surrogate(vae, videos, SurrogateTrainConfig(hidden=8, num_res_blocks=1, steps=5, batch=2),
                                       checkpoint)
        return weights(model), curve

    return run


def _latents(micro):
    """The Reasoner stage's pipeline and latent dataset, built as ``zoo.train_reasoner`` builds them."""
    from diffusers import AutoencoderKLWan

    from core.models.wan import assemble_pipeline, build_scheduler, build_text_encoder, build_transformer

    cfg, train, work = micro
    bench = open_benchmark(train)
    tokenizer = zoo.build_reasoner_tokenizer(bench, cfg.reasoner_vocab)
    torch.manual_seed(0)
    pipe = assemble_pipeline(tokenizer, build_text_encoder(cfg.arch, len(tokenizer)), AutoencoderKLWan.from_pretrained(
        work / "vae"), build_transformer(cfg.arch), build_scheduler(cfg.arch))
    return pipe, zoo.latent_dataset(pipe, zoo.in_domain(bench))


def _flow_loop(micro):
    from core.models.wan import build_transformer
    from core.train.reasoner import FlowMatchConfig, train_flow_matching

    cfg = micro[0]
    _, data = _latents(micro)

    def run(checkpoint):
        torch.manual_seed(1)
        transformer = build_transformer(cfg.arch)
        curve = train_flow_matching(transformer, data, FlowMatchConfig(steps=5, batch=2), checkpoint)
        return weights(transformer), curve

    return run


def _distil_loop(micro):
    from core.train.reasoner import DistillConfig, distil

    pipe, data = _latents(micro)

    def run(checkpoint):
        student, curve = distil(pipe.transformer, pipe.scheduler, data,
                                DistillConfig(teacher_steps=2, steps=5, batch=2), checkpoint)
        return weights(student), curve

    return run


def _teacher_loop(micro, tmp_path):
    from safetensors.torch import load_file

    from core.train.teacher import TeacherTrainConfig, train_teacher
    from core.train.teacher_data import build_teacher_data

    cfg, train, _ = micro
    bench = open_benchmark(train)
    data = build_teacher_data(bench, instances_per_family=1, standins_per_instance=1, seed=0, workers=1)
    runs = iter(range(100))

    def run(checkpoint):
        out = tmp_path / f"teacher-{next(runs)}"
        tcfg = TeacherTrainConfig.micro().model_copy(update={"label_workers": 1})
        report = train_teacher(out, bench, tcfg, data=data, checkpoint=checkpoint)
        curve = (report.curve, report.loss_qa_first, report.loss_qa_last, report.loss_query_first, report.loss_query_last)
        return [load_file(out / "model.safetensors")], curve

    return run


LOOPS = {"vae": _vae_loop, "surrogate": _surrogate_loop, "flow_matching": _flow_loop, "distil": _distil_loop,
         "teacher": _teacher_loop}


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_stopped_loop_resumes_to_the_uninterrupted_weights_and_curve(micro, tmp_path, loop, caplog):
    make = LOOPS[loop]
    run = make(micro, tmp_path) if loop == "teacher" else make(micro)
    reference, reference_curve = run(None)
    with caplog.at_level(logging.INFO, logger="core.train.checkpoint"):
        resumed, curve = stopped_then_resumed(run, tmp_path / "ckpt", stop_after=3 if loop == "teacher" else 2)
    assert "from its checkpoint at step" in caplog.text
    assert_same_weights(reference, resumed)
    assert curve == reference_curve


def test_a_checkpoint_keeps_only_its_latest_step_and_saves_on_its_clock(micro, tmp_path):
    run = _vae_loop(micro)
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingStopped):
        run(TrainingCheckpoint(folder, "k", every_seconds=0, stop_after=3))
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "state-00000003.pt", "vae-00000003.safetensors"]
    run(TrainingCheckpoint(tmp_path / "slow", "k", every_seconds=600))  # a short run never reaches its first save
    assert not (tmp_path / "slow").exists()
    with pytest.raises(ValueError, match="every_seconds"):
        TrainingCheckpoint(folder, "k", every_seconds=601)
    with pytest.raises(ValueError, match="checkpoint_seconds"):
        zoo.ZooConfig(checkpoint_seconds=601)


# --------------------------------------------------------------------------- keys

def test_a_checkpoint_of_another_key_or_config_is_not_resumed(micro, tmp_path, caplog):
    from core.models.wan import build_vae
    from core.train.vae import VaeTrainConfig, train_vae

    cfg, train, _ = micro
    videos = [ground_truth_video(i) for i in open_benchmark(train).instances[:4]]

    def run(checkpoint, lr=3e-3):
        torch.manual_seed(0)
        vae = build_vae(cfg.arch)
        curve = train_vae(vae, videos, VaeTrainConfig(steps=4, batch=2, crop=16, lr=lr), checkpoint)
        return weights(vae), curve

    reference = run(None)
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingStopped):
        run(TrainingCheckpoint(folder, "stage-a", every_seconds=0, stop_after=2))
    with caplog.at_level(logging.INFO, logger="core.train.checkpoint"):
        other_key = run(TrainingCheckpoint(folder, "stage-b", every_seconds=0))
    assert "ignoring the checkpoint" in caplog.text and "made for another config" in caplog.text
    assert "from its checkpoint" not in caplog.text
    assert_same_weights(reference[0], other_key[0])  # trained from step 0
    assert TrainingCheckpoint(folder, "stage-b").saved_step() == 4  # and replaced the other key's checkpoint

    with pytest.raises(TrainingStopped):
        run(TrainingCheckpoint(folder, "stage-b", every_seconds=0, stop_after=2), lr=1e-2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="core.train.checkpoint"):
        same_key_other_config = run(TrainingCheckpoint(folder, "stage-b", every_seconds=0))
    assert "ignoring the checkpoint" in caplog.text
    assert_same_weights(reference[0], same_key_other_config[0])


def test_a_stage_checkpoint_of_another_key_is_emptied(tmp_path, caplog):
    folder = tmp_path / "vae-abc.ckpt"
    first = StageCheckpoint(folder, "key-a", every_seconds=0)
    first.phase("p", lambda: 1, save=lambda v, f: (f / "v.json").write_text(json.dumps(v)), load=lambda f: 2)
    assert (folder / "phases" / "p").is_dir() and json.loads((folder / "runs.json").read_text())["key"] == "key-a"
    with caplog.at_level(logging.INFO, logger="core.train.checkpoint"):
        again = StageCheckpoint(folder, "key-b", every_seconds=0)
    assert "made for another stage key" in caplog.text and not folder.exists()
    ran = again.phase("p", lambda: 1, save=lambda v, f: None, load=lambda f: 2)
    assert ran == 1 and again.runs()[0]["phases_kept"] == []  # computed, not loaded


def test_a_loop_checkpoint_cannot_run_code(tmp_path):
    """States are read with weights_only: a pickled object in a shared work dir is refused, not run."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = TrainingCheckpoint(tmp_path / "ckpt", "k", every_seconds=0)
    state = resume(ckpt, {"c": 1}, {"m": model}, opt)
    state.tick(1, curve=[1.0])
    meta = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    torch.save({"evil": Path("x")}, tmp_path / "ckpt" / meta["files"]["state"])  # not a plain state
    again = resume(ckpt, {"c": 1}, {"m": model}, opt)
    assert again.step == 0 and not (tmp_path / "ckpt").exists()


# --------------------------------------------------------------------------- multi-phase stages

def test_the_reasoner_stage_never_redoes_its_finished_flow_matching(micro, tmp_path):
    cfg, train, work = micro
    cfg = cfg.model_copy(update={"flow": cfg.flow.model_copy(update={"first_frame_prior": 1.0, "motion_weight": 1.0})})
    zoo.train_reasoner(work / "vae", train, tmp_path / "ref" / "base", tmp_path / "ref" / "reasoner", cfg)
    folder = tmp_path / "reasoner.ckpt"
    with pytest.raises(TrainingStopped):  # killed in flow matching
        zoo.train_reasoner(work / "vae", train, tmp_path / "a" / "base", tmp_path / "a" / "reasoner", cfg,
                           StageCheckpoint(folder, "k", 0, stop_after={"flow-matching": 2}))
    with pytest.raises(TrainingStopped):  # killed in distillation, after flow matching finished
        zoo.train_reasoner(work / "vae", train, tmp_path / "b" / "base", tmp_path / "b" / "reasoner", cfg,
                           StageCheckpoint(folder, "k", 0, stop_after={"distil": 1}))
    assert (folder / "phases" / "flow-matching").is_dir() and not (folder / "flow-matching").exists()
    last = StageCheckpoint(folder, "k", 0)
    zoo.train_reasoner(work / "vae", train, tmp_path / "c" / "base", tmp_path / "c" / "reasoner", cfg, last)
    runs = last.runs()
    assert [r["resumed_from"] for r in runs] == [{}, {"flow-matching": 2}, {"distil": 1}]
    assert runs[-1]["phases_kept"] == ["flow-matching"]
    assert_same_folders(tmp_path / "ref", tmp_path / "c")
    assert first_frame_prior(tmp_path / "c" / "base") == first_frame_prior(tmp_path / "c" / "reasoner") == 1.0


def test_without_reflow_the_reasoner_is_the_flow_matching_transformer(micro, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    cfg, train, work = micro
    cfg = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"steps": 0})})
    with monkeypatch.context() as patch:  # no reflow pairs either: they cost 30-step samples of every item
        patch.setattr(zoo, "distil", lambda *a, **k: pytest.fail("distil called with distill.steps 0"))
        zoo.train_reasoner(work / "vae", train, tmp_path / "base", tmp_path / "reasoner", cfg)
    few = load_file(next((tmp_path / "reasoner" / "transformer").glob("*.safetensors")))
    base = load_file(next((tmp_path / "base" / "transformer").glob("*.safetensors")))  # stored in bfloat16
    assert few.keys() == base.keys() and all(t.dtype == torch.float32 for t in few.values())
    assert all(torch.equal(few[k].to(base[k].dtype), base[k]) for k in few)
    with_reflow = tmp_path / "with-reflow"
    zoo.train_reasoner(work / "vae", train, tmp_path / "base2", with_reflow, micro[0])
    reflowed = load_file(next((with_reflow / "transformer").glob("*.safetensors")))
    assert any(not torch.equal(reflowed[k], few[k]) for k in few)  # the reflow moves weights; 0 steps does not


def test_the_teacher_stage_keeps_its_reasoner_samples(micro, tmp_path):
    cfg, train, work = micro
    reasoner = tmp_path / "reasoner"
    zoo.train_reasoner(work / "vae", train, tmp_path / "base", reasoner, cfg)
    zoo.train_teacher_stage(train, reasoner, tmp_path / "ref", cfg)
    folder = tmp_path / "teacher.ckpt"
    with pytest.raises(TrainingStopped):
        zoo.train_teacher_stage(train, reasoner, tmp_path / "a", cfg, StageCheckpoint(folder, "k", 0, stop_after={"teacher": 3}))
    assert (folder / "phases" / "reasoner-samples" / "samples.npz").is_file()
    last = StageCheckpoint(folder, "k", 0)
    zoo.train_teacher_stage(train, reasoner, tmp_path / "b", cfg, last)
    assert last.runs()[-1] == {**last.runs()[-1], "resumed_from": {"teacher": 3}, "phases_kept": ["reasoner-samples"]}
    assert_same_folders(tmp_path / "ref", tmp_path / "b")
    report = json.loads((tmp_path / "b" / "train_report.json").read_text())
    assert report["data_counts"]["reasoner"] == len(zoo.per_family(open_benchmark(train), cfg.sample_per_family))


# --------------------------------------------------------------------------- a real kill

STAGE_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from tasks.zoo import vae
bench, target, cfg_json, key = sys.argv[1:]
print("RECORD " + json.dumps(vae.fn(bench, target, cfg_json, key)), flush=True)
"""


def _stage(bench: Path, target: Path, cfg: zoo.ZooConfig) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", STAGE_SCRIPT, str(bench), str(target), cfg.model_dump_json(), "key-1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _record(proc: subprocess.Popen) -> tuple[dict, str]:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return json.loads(next(line for line in out.splitlines() if line.startswith("RECORD "))[7:]), out


def test_a_stage_killed_mid_training_resumes_from_its_checkpoint(micro, tmp_path):
    """``kill -9`` during the VAE stage (the zoo task's body, as the flow runs it), then a rerun."""
    base, _, work = micro
    cfg = base.model_copy(update={"vae": base.vae.model_copy(update={"steps": 12}), "checkpoint_seconds": 0})
    bench = work  # the stage reads <bench>/bench-train
    reference = _stage(bench, tmp_path / "reference", cfg)  # uninterrupted, alongside the one to kill
    target = tmp_path / "stages" / "vae-key"
    killed = _stage(bench, target, cfg)
    meta = Path(f"{target}.ckpt") / "vae" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not meta.is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert killed.poll() is None, "the stage finished (or failed) before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert not target.exists() and Path(f"{target}.ckpt").is_dir()

    record, log = _record(_stage(bench, target, cfg))
    k = record["runs"][-1]["resumed_from"]["vae"]
    assert len(record["runs"]) == 2 and 0 < k < 12
    assert f"from its checkpoint at step {k}" in log
    assert record["seconds"] == pytest.approx(sum(r["seconds"] for r in record["runs"]), abs=0.5)
    assert record["seconds"] > record["runs"][-1]["seconds"]  # the killed run's seconds count too
    assert json.loads((target / "stage.json").read_text()) == {k: v for k, v in record.items() if k != "path"}
    assert not Path(f"{target}.ckpt").exists()  # deleted once the stage's output is in place

    ref_record, _ = _record(reference)
    assert len(ref_record["runs"]) == 1
    assert_same_folders(tmp_path / "reference", target)


def test_zoo_json_reports_a_resumed_stage_with_its_runs():
    runs = [{"seconds": 10.0, "resumed_from": {}, "phases_kept": []},
            {"seconds": 5.0, "resumed_from": {"vae": 12}, "phases_kept": []}]
    assert zoo._stage_entry({"key": "k", "seconds": 15.0, "path": "p", "runs": runs}) == {"key": "k", "seconds": 15.0,
                                                                                          "runs": runs}
    assert zoo._stage_entry({"key": "k", "seconds": 15.0, "runs": runs[:1]}) == {"key": "k", "seconds": 15.0}


def test_every_random_state_a_loop_may_use_is_restored(tmp_path):
    import random

    import numpy as np

    def draws(gen: torch.Generator) -> tuple:
        return (torch.rand(3, generator=gen).tolist(), torch.rand(3).tolist(), np.random.rand(3).tolist(),
                np.random.randn(1).tolist(), [random.random() for _ in range(3)], random.gauss(0, 1))

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn(1), random.gauss(0, 1)  # cached Gaussians are part of the state too
    ckpt = TrainingCheckpoint(tmp_path / "ckpt", "k", every_seconds=0)
    resume(ckpt, {}, {"m": model}, opt, generator=gen).tick(1)
    expected = draws(gen)
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    other = torch.Generator().manual_seed(9)
    assert resume(ckpt, {}, {"m": model}, opt, generator=other).step == 1
    assert draws(other) == expected


def test_a_rerun_of_the_zoo_flow_resumes_its_unfinished_stage(prefect_harness, micro, tmp_path):
    """`vlmt zoo train`'s flow finds the checkpoint an interrupted run left beside the stage's folder."""
    from flows.zoo import config_keys, zoo_train
    from tasks.zoo import benchmarks

    cfg, _, reference = micro
    work = tmp_path / "work"
    k_bench, k_vae = config_keys(cfg)
    bench = benchmarks.fn(str(work / "stages" / f"bench-{k_bench[:12]}"), cfg.model_dump_json(), k_bench)["path"]
    target = work / "stages" / f"vae-{k_vae[:12]}"
    with pytest.raises(TrainingStopped):  # the interrupted run: its VAE stage stopped after step 1
        zoo.train_reasoner_vae(Path(bench) / "bench-train", tmp_path / "partial", cfg,
                               StageCheckpoint(Path(f"{target}.ckpt"), k_vae, 0, stop_after={"vae": 1}))
    result = zoo_train(out=str(tmp_path / "models"), work=str(work), preset="micro", seed=0, evaluate=False, until="reasoner")
    vae = result["stages"]["vae"]
    assert [r["resumed_from"] for r in vae["runs"]] == [{}, {"vae": 1}] and len(result["stages"]["surrogate"]["runs"]) == 1
    assert not Path(f"{target}.ckpt").exists()
    assert_same_folders(reference / "vae", target)
