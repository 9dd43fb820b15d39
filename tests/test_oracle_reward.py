"""The oracle_reward method: the synth scorer's differentiable relaxation (``core.scoring.soft``) agrees
with the scorer, takes gradients, and drives the teacher method's loop without the Teacher; an upper
bound marked as an oracle, refused on items that carry no ground truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from core.bench.record import Purpose
from core.bench.source import open_benchmark
from core.bench.synth.families import FAMILIES
from core.bench.synth.family import PERTURBATIONS
from core.bench.synth.generate import make_synth_benchmark, perturbed_video, scene_of
from core.bench.synth.scene import render
from core.errors import InputError
from core.media import read_image, read_video
from core.method.compare import compare, summarise_methods
from core.method.methods import DEFAULT_METHODS, ORACLES, Method, MethodConfig
from core.method.optimise import OptimConfig, detach_lora
from core.method.oracle import optimise_item_oracle, oracle_reward, oracle_step, require_oracle_items
from core.method.reasoner import ReasonerAdapter
from core.scoring.soft import SoftSynthReward, decoded_to_rgb, soft_criteria, soft_score
from core.scoring.synth import score_synth
from tests.method_helpers import build_micro_reasoner, build_micro_teacher

PAINT = {"pattern_grow", "flood_fill", "symmetry_complete"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_synth_benchmark(tmp_path_factory.mktemp("bench"), per_family=2, purpose=Purpose.TEST)


def _soft(video: np.ndarray, meta: dict) -> float:
    with torch.no_grad():
        return float(soft_score(torch.from_numpy(video).float(), meta))


def _ground_truth(meta: dict) -> np.ndarray:
    return render(scene_of(meta)[2], meta["width"], meta["height"])


# --------------------------------------------------------------------------- the relaxation


def test_the_soft_score_is_high_on_the_ground_truth_and_low_on_still_erased_and_wrong_end_videos(bench):
    """Measured on 5 items per family (scripts/soft_reward_agreement.py): the lossless ground truth >= 0.997,
    its H.264 copy >= 0.985, still <= 0.24, erase <= 0.09, wrong_end <= 0.6 (key_then_goal keeps the key)."""
    assert {i.task_family for i in bench.instances} == set(FAMILIES)
    for inst in bench.instances:
        meta = inst.metadata
        gt = _soft(_ground_truth(meta), meta)
        assert gt > 0.99, inst.id
        assert _soft(read_video(inst.ground_truth), meta) > 0.97, inst.id  # H.264 and all
        still = _soft(perturbed_video(meta, "still"), meta)
        assert still < 0.3 and still < gt - 0.6, inst.id
        erase = perturbed_video(meta, "erase")  # None for the paint families: paint that never appears is "still"
        if erase is not None:
            assert _soft(erase, meta) < 0.15, inst.id
        wrong_end = perturbed_video(meta, "wrong_end")
        if wrong_end is not None:
            assert _soft(wrong_end, meta) < gt - 0.3, inst.id


def test_the_ground_truth_ranks_above_every_perturbation_and_the_soft_score_tracks_the_scorer(bench):
    """On 5 items per family the ground truth ranked above all 341 perturbed videos (by 0.057 at least) and
    Spearman(soft, hard) was 0.995; here on 2 items per family."""
    soft, hard = [], []
    for inst in bench.instances:
        meta = inst.metadata
        gt_video = _ground_truth(meta)
        gt = _soft(gt_video, meta)
        soft.append(gt)
        hard.append(score_synth(inst, gt_video).score)
        for kind in PERTURBATIONS:
            video = perturbed_video(meta, kind)
            if video is None:
                continue
            s = _soft(video, meta)
            assert s < gt - 0.03, (inst.id, kind, s, gt)
            soft.append(s)
            hard.append(score_synth(inst, video).score)
    assert spearmanr(soft, hard).statistic > 0.95


def test_the_criteria_are_the_scorers_by_name_kind_and_weight(bench):
    for inst in bench.instances:
        video = _ground_truth(inst.metadata)
        hard = {c.name: (c.kind, c.weight) for c in score_synth(inst, video).criteria}
        soft = {c.name: (c.kind, c.weight) for c in soft_criteria(torch.from_numpy(video).float(), inst.metadata)}
        assert soft.keys() == hard.keys(), inst.id
        for name, (kind, weight) in soft.items():
            assert kind == hard[name][0] and weight == pytest.approx(hard[name][1]), (inst.id, name)


def test_the_loss_is_differentiable_and_a_step_against_its_gradient_raises_the_score(bench):
    """From a still video (pure palette colours, where a softmax barely moves) the goals' long reach still gives a
    finite, non-zero gradient; a small step against it raises the soft score in every family. A full step (the
    largest pixel moved by 255 levels) paints the cells to paint, and the hard score rises from 0.075 to ~0.92 in
    the paint families (measured; in the sprite families it paints the target cell beside the object, which the
    scorer does not credit)."""
    for inst in bench.instances[::2]:  # one item per family
        meta = inst.metadata
        still = torch.from_numpy(perturbed_video(meta, "still")).float().requires_grad_(True)
        loss = 1.0 - soft_score(still, meta)
        loss.backward()
        grad = still.grad
        assert torch.isfinite(grad).all() and grad.abs().max() > 0, inst.id
        direction = grad / grad.abs().max()
        before = float(1.0 - loss.detach())
        assert _soft((still.detach() - 4.0 * direction).numpy(), meta) > before, inst.id
        if inst.task_family in PAINT:
            stepped = (still.detach() - 255.0 * direction).clamp(0, 255).round().to(torch.uint8).numpy()
            assert score_synth(inst, stepped).score > score_synth(inst, perturbed_video(meta, "still")).score + 0.5, inst.id


def test_the_reward_is_a_named_weighted_loss_on_the_decoders_video(bench):
    inst = bench.instances[0]
    reward = SoftSynthReward(inst.metadata, weight=2.0)
    frames = torch.from_numpy(_ground_truth(inst.metadata)).float()
    video = (frames / 127.5 - 1.0).permute(3, 0, 1, 2).requires_grad_(True)  # (3, T, H, W) in [-1, 1], as decoded
    assert torch.allclose(decoded_to_rgb(video), frames, atol=1e-3)
    loss = reward(video)
    assert reward.name == "soft_synth" and 0 <= float(loss.detach()) < 2.0 * 0.01
    loss.backward()
    assert torch.isfinite(video.grad).all()
    with pytest.raises(InputError, match="meta"):
        SoftSynthReward({"family": "unknown"})


# --------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def models(bench, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("models")
    reasoner_dir, surrogate_dir = build_micro_reasoner(bench, out)
    return reasoner_dir, surrogate_dir, build_micro_teacher(bench, out)


@pytest.fixture()
def reasoner(models):
    return ReasonerAdapter.from_paths(models[0], models[1], device="cpu")


def test_oracle_reward_runs_the_teacher_methods_loop_without_the_teacher_and_is_marked_an_oracle(reasoner, bench):
    """No Teacher at all (None is passed): no Teacher call is counted, no rules are extracted; the trace is
    adapt_lora's, its first loss the reward of the fresh (zero) LoRA; the record says it is an oracle."""
    items = [bench.instances[0], bench.instances[6]]  # a sprite family and a paint family
    cfg = MethodConfig(optim=OptimConfig(max_steps=3, sampler_steps=2, early_stop=False))
    results = compare(reasoner, None, items, [Method.ORACLE_REWARD], cfg, n=1)
    for inst, r in zip(items, results, strict=True):
        assert r.error is None, r.error
        assert r.video.shape == (inst.metadata["n_frames"], 64, 64, 3) and r.video.dtype == np.uint8
        assert r.info["oracle"] is True and r.info["reward"] == "soft_synth" and r.rules_source is None
        counts = r.cost.counts
        assert not any(k.startswith("teacher") for k in counts) and counts["reasoner_backward"] == 3
        trace = r.info["optim"]["trace"]
        assert [t["step"] for t in trace] == [0, 1, 2, 3] and all(t["p_yes"] == [] for t in trace)
        assert r.info["optim"]["stop_reason"] == "max_steps" and trace[-1]["loss"] < trace[0]["loss"]
        assert 0 < trace[0]["loss"] <= 1
        assert r.score == score_synth(inst, r.video).score
    summary = summarise_methods(results)["oracle_reward"]
    assert summary.teacher_calls_per_item == 0 and summary.extra["stop_reasons"] == {"max_steps": 2}
    # step 0 is the reward of the Reasoner with the fresh adapter (B = 0): the Reasoner's own prediction
    inst = items[0]
    cond = reasoner.prepare(read_image(inst.first_frame), inst.prompt, results[0].seed, inst.metadata["n_frames"])
    with torch.no_grad():
        first = float(oracle_step(reasoner, cond, oracle_reward(inst), cfg.optim))
    assert first == pytest.approx(results[0].info["optim"]["trace"][0]["loss"], abs=1e-5)
    # an early stop at tau, as the teacher method's
    res = optimise_item_oracle(reasoner, cond, oracle_reward(inst), cfg.optim.model_copy(update={"early_stop": True,
                                                                                                   "tau": 1.0}))
    detach_lora(reasoner)
    assert res.stop_reason == "tau" and res.steps_run == 0


def test_oracle_reward_is_optional_and_an_oracle_everywhere_methods_are_listed():
    from core.report.data import ORACLE_METHODS, method_label
    from core.report.plots import METHOD_COLOURS

    assert Method.ORACLE_REWARD not in DEFAULT_METHODS
    assert ORACLE_METHODS == {m.value for m in ORACLES} == {"pass_at_n", "oracle_reward"}
    assert method_label("oracle_reward") == "oracle_reward (oracle)"
    assert "oracle_reward" in METHOD_COLOURS and len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    for name in ("ablation_pivot", "criteria_by_method"):
        assert "'oracle_reward'" in (Path(__file__).parents[1] / "sql" / f"{name}.sql").read_text()


def _official(bench_root: Path, out: Path) -> Path:
    """The synth benchmark as an official VBVR layout: no meta.json, so no ground truth to reward."""
    shutil.copytree(bench_root, out)
    for meta in out.glob("*/*/*/meta.json"):
        meta.unlink()
    (out / "VBVR-Bench.json").unlink()
    return out


def test_a_non_synth_item_is_refused_naming_the_item_and_why(bench, tmp_path):
    vbvr = open_benchmark(_official(bench.root, tmp_path / "official")).instances
    assert vbvr and all(i.benchmark == "vbvr" for i in vbvr)
    with pytest.raises(InputError, match=rf"oracle_reward, item {vbvr[0].id}: is a vbvr item.*ground-truth metadata"):
        require_oracle_items(vbvr)
    # refused by compare before any method runs (no Reasoner or Teacher is touched: both are None here)
    with pytest.raises(InputError, match=vbvr[0].id):
        compare(None, None, vbvr, [Method.VANILLA, Method.ORACLE_REWARD], MethodConfig(), n=1)
    with pytest.raises(InputError, match="no scoring spec"):
        require_oracle_items([bench.instances[0].model_copy(update={"metadata": {"family": "maze_navigate"}})])
    require_oracle_items(bench.instances)  # synth items pass


def test_vlmt_compare_refuses_it_on_another_benchmark_before_loading_a_model(bench, models, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from core.method import reasoner as reasoner_module

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the items were checked")

    monkeypatch.setattr(reasoner_module.ReasonerAdapter, "from_paths", no_load)
    official = _official(bench.root, tmp_path / "official")
    r = CliRunner().invoke(app, ["compare", "--bench", str(official), "--methods", "vanilla,oracle_reward", "--reasoner",
                                 str(models[0]), "--surrogate", str(models[1]), "--teacher", str(models[2])],
                           env={"COLUMNS": "300"})
    flat = " ".join(r.output.split())
    assert r.exit_code != 0 and "oracle_reward, item" in flat and "is a vbvr item" in flat, r.output


# --------------------------------------------------------------------------- the pipeline


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs")  # the inline stages outside a flow
def test_the_pipeline_runs_oracle_reward_without_rules_caches_it_and_refuses_other_benchmarks(bench, models, tmp_path):
    from flows import keys
    from flows.evaluate import EvaluateConfig, ModelPaths, evaluate, stage_keys

    paths = ModelPaths(reasoner=str(models[0]), surrogate=str(models[1]), teacher=str(models[2]))
    bench_dir = tmp_path / "bench"
    make_synth_benchmark(bench_dir, per_family=1, seed=3, purpose=Purpose.TEST, families=["maze_navigate", "flood_fill"])
    cfg = EvaluateConfig(name="oracle", bench=str(bench_dir), models=paths, work=str(tmp_path / "work"), mlflow_uri="",
                         methods=[Method.ORACLE_REWARD],
                         method=MethodConfig(optim=OptimConfig(max_steps=2, sampler_steps=2, k_frames=4)))
    out = evaluate(config=cfg)
    assert not out["failed"] and set(out["summary"]) == {"oracle_reward"}
    work = Path(cfg.work)
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT score, steps_run, rules_source FROM results").fetchall()
        costs = con.execute("SELECT teacher_forward + teacher_backward + teacher_generate, reasoner_backward "
                            "FROM costs").fetchall()
        traces = con.execute("SELECT count(*) FROM traces WHERE method = 'oracle_reward'").fetchone()[0]
    assert len(rows) == 2 and all(score is not None and steps == 2 and src is None for score, steps, src in rows)
    assert costs == [(0, 2), (0, 2)] and traces == 2 * 3
    stages = sorted(p.name.split("-")[0] for p in (work / "items").glob("*/*"))
    assert stages == ["oracle_reward"] * 2 + ["score"] * 2 + ["video"] * 2  # no rules, no reward: no Teacher
    assert all((p / "adapter").is_dir() for p in (work / "items").glob("*/oracle_reward-*"))
    before = {p: p.stat().st_mtime_ns for p in (work / "items").glob("*/*")}
    evaluate(config=cfg)
    assert {p: p.stat().st_mtime_ns for p in (work / "items").glob("*/*")} == before, "a rerun recomputes nothing"
    # the row the flow keeps says it is an oracle (from the cached stages, inline)
    from core.method.compare import item_seed
    from flows.evaluate import _model_ids, load_items
    from flows.item_chain import _outcome, _submit_item

    resolved = cfg.resolved()
    inst = load_items(resolved)[0][0]
    chains = _submit_item(inst, resolved, _model_ids(resolved), inline=True)
    row = _outcome(inst, Method.ORACLE_REWARD, chains[Method.ORACLE_REWARD], item_seed(inst, cfg.seed))
    assert row.error is None and row.info["oracle"] is True and row.info["optim"]["steps_run"] == 2
    assert {p: p.stat().st_mtime_ns for p in (work / "items").glob("*/*")} == before

    # the relaxation's version moves its own stages only
    ids = {"reasoner": "R", "surrogate": "S", "teacher": "T"}
    k0 = stage_keys("item", 7, cfg.resolved(), ids)
    keys_before = dict(k0)
    original = keys.ORACLE_REWARD_VERSION
    try:
        keys.ORACLE_REWARD_VERSION = "oracle-reward-next"
        moved = stage_keys("item", 7, cfg.resolved(), ids)
    finally:
        keys.ORACLE_REWARD_VERSION = original
    assert {k for k in keys_before if keys_before[k] != moved[k]} == {"oracle_reward", "video/oracle_reward",
                                                                       "score/oracle_reward"}

    # another benchmark: refused before any stage runs, naming the item
    official = _official(bench_dir, tmp_path / "official")
    refused = cfg.model_copy(update={"bench": str(official), "work": str(tmp_path / "work-official")})
    with pytest.raises(InputError, match=r"oracle_reward, item .*: is a vbvr item"):
        evaluate(config=refused)
    assert not (tmp_path / "work-official" / "items").exists()
