"""The evaluate flow on micro random models: every method through cached Prefect tasks, results
in DuckDB, reruns that reuse finished stages, keys that change only where they should, and a
poisoned item that fails alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from core.bench.record import Purpose
from core.bench.synth.generate import make_synth_benchmark
from core.errors import InputError
from core.media import read_video
from core.method.methods import DEFAULT_METHODS, Method, MethodConfig
from core.method.optimise import OptimConfig
from core.method.reasoner import Guidance
from core.pipeline.stages import load_frames
from core.pipeline.video_spec import VideoOverride
from core.storage.tracking import default_tracking_uri
from flows.evaluate import EvaluateConfig, ModelPaths, evaluate, experiment_of
from tests.method_helpers import build_micro_reasoner, build_micro_teacher

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    bench = make_synth_benchmark(root / "bench", per_family=1, seed=3, purpose=Purpose.TEST,
                                 families=["maze_navigate", "gravity_fall"])
    reasoner, surrogate = build_micro_reasoner(bench, root)
    teacher = build_micro_teacher(bench, root)
    models = ModelPaths(reasoner=str(reasoner), surrogate=str(surrogate), teacher=str(teacher))
    return root, models


def config(root: Path, models: ModelPaths, work: str, bench: str | None = None, track: bool = False,
           **optim) -> EvaluateConfig:
    return EvaluateConfig(
        name="micro", bench=bench or str(root / "bench"), models=models, work=str(root / work),
        mlflow_uri=None if track else "",
        method=MethodConfig(optim=OptimConfig(max_steps=2, k_frames=4, sampler_steps=2, **optim), n=2, tpo_rounds=1),
    )


def mlflow_runs(uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("micro")
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}


def stage_dirs(work: Path) -> dict[str, float]:
    """Every stage output directory and its modification time."""
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in (work / "items").glob("*/*") if p.is_dir()}


def test_every_method_runs_and_lands_in_duckdb(setup):
    root, models = setup
    cfg = config(root, models, "w1")
    out = evaluate(config=cfg)
    assert set(out["summary"]) == {m.value for m in DEFAULT_METHODS} == {m.value for m in Method} - {"shared", "grpo", "oracle_reward",
                                                                                                        "best_of_n_heldout"}
    assert not out["failed"]
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        n, n_err = con.execute("SELECT count(*), count(error) FROM results").fetchone()
        assert (n, n_err) == (2 * len(DEFAULT_METHODS), 0)
        steps = con.execute("SELECT count(*) FROM traces WHERE method = 'teacher'").fetchone()[0]
        assert steps >= 2  # the teacher method's optimisation curve, per item
        videos = [r[0] for r in con.execute("SELECT video_path FROM results").fetchall()]
        still = con.execute("SELECT count(*), max(reasoner_nfe + teacher_forward) FROM costs WHERE method = 'still'").fetchone()
        parts = con.execute("SELECT method, score, goal_score, process_score, gate FROM results").fetchall()
        judged = con.execute("SELECT json_array_length(judge_p_yes_json), json_array_length(judge_truth_json) "
                             "FROM results").fetchall()
    # relative to the work dir, so that a moved work dir keeps its rows valid
    assert all(not Path(v).is_absolute() and (Path(cfg.work) / v).is_file() and v.endswith(".mp4") for v in videos)
    # the still reference: no model call; its video is the item's first frame held (the only video stage without calls)
    assert still == (2, 0)
    # every synth result carries the score's parts; the held first frame reaches nothing and earns no credit
    # for the rules about motion it never made
    assert all(None not in row for row in parts)
    assert all(row[1] <= 0.35 and row[2] == 0 and row[3] < 1.0 for row in parts if row[0] == "still")
    # every final video is judged, and the scorer's answer (or NULL off the bank) stands beside each query's P(Yes)
    assert all(n_p is not None and n_p >= 1 and n_t == n_p for n_p, n_t in judged)
    records = [json.loads(r.read_text()) for r in (Path(cfg.work) / "items").glob("*/video-*/record.json")]
    held = [r for r in records if not r["cost"]["counts"]]
    assert len(held) == 2
    for rec in held:
        frames = load_frames(rec["npz"])
        assert frames.shape == (17, 64, 64, 3) and (frames == frames[:1]).all()


def test_rerun_reuses_every_stage_and_lr_change_keeps_the_rules(setup):
    root, models = setup
    cfg = config(root, models, "w2", track=True)
    first = evaluate(config=cfg.model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]}))
    runs_before = mlflow_runs(first["mlflow"]["tracking_uri"])
    before = stage_dirs(Path(cfg.work))
    again = evaluate(config=cfg.model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]}))
    assert stage_dirs(Path(cfg.work)) == before, "a rerun must not rewrite finished stages"
    assert again["summary"] == first["summary"] or all(
        again["summary"][m]["mean_score"] == first["summary"][m]["mean_score"] for m in first["summary"])
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 2 * 2  # no duplicated rows
    runs = mlflow_runs(again["mlflow"]["tracking_uri"])
    assert set(runs) == set(runs_before) and len(runs) == 1 + 2 * 2, "a rerun must reuse its MLflow runs"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(again["mlflow"]["tracking_uri"])
    teacher_run = next(r for r in runs.values() if r.data.tags.get("method") == "teacher")
    assert len(client.get_metric_history(teacher_run.info.run_id, "optim_loss")) >= 2
    assert {"score", "goal_score", "process_score", "gate"} <= set(teacher_run.data.metrics)
    assert any(a.path.endswith(".mp4") for a in client.list_artifacts(teacher_run.info.run_id))
    # as if killed after each stage wrote its record.json, before Prefect stored the result: nothing is redone
    shutil.rmtree(Path(cfg.work) / "prefect-results")
    evaluate(config=cfg.model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]}))
    assert stage_dirs(Path(cfg.work)) == before, "a finished stage without its cache entry was redone"

    lr_cfg = config(root, models, "w2", lr=5e-4).model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
    evaluate(config=lr_cfg)
    after = stage_dirs(Path(cfg.work))
    new = set(after) - set(before)
    assert new and all(Path(p).name.split("-")[0] in {"optimise", "video", "score"} for p in new), new
    assert {p for p in before if "/rules-" in p or "/reward-" in p} <= set(after)
    assert all(after[p] == before[p] for p in before), "finished stages were rewritten"


def test_a_held_out_judge_answers_every_methods_queries_and_joins_a_finished_run_without_rerunning_it(setup, tmp_path):
    """The held-out judge's columns: its own P(Yes) on the queries the optimising Teacher asked."""
    root, models = setup
    methods = [Method.VANILLA, Method.BEST_OF_N, Method.TEACHER]
    cfg = config(root, models, "w-heldout").model_copy(update={"methods": methods})
    evaluate(config=cfg)
    before = stage_dirs(Path(cfg.work))
    assert not any("/heldout-" in d for d in before)
    # the same weights as the optimising Teacher: a held-out judge in name only answers exactly as it does
    twin = shutil.copytree(models.teacher, tmp_path / "twin")
    out = evaluate(config=cfg.model_copy(update={"heldout_judge": str(twin)}))
    after = stage_dirs(Path(cfg.work))
    assert {d for d in after if d not in before} == {d for d in after if "/heldout-" in d} != set()
    assert all(after[d] == before[d] for d in before), "adding a judge reran a finished stage"
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT judge_p_yes_json, heldout_p_yes_json, judge_broken, heldout_broken, judge_fooled, "
                           "heldout_fooled FROM results").fetchall()
    assert len(rows) == 2 * len(methods)
    for judge_p, heldout_p, *counts in rows:
        assert np.allclose(json.loads(judge_p), json.loads(heldout_p), rtol=1e-4, atol=0)
        assert counts[0] == counts[1] and counts[2] == counts[3]
    assert all(s["heldout_fooled_rate"] == s["judge_fooled_rate"] for s in out["summary"].values())

    # another Teacher (another seed) answers otherwise, on the same number of queries
    other = build_micro_teacher(make_synth_benchmark(tmp_path / "b", per_family=1, seed=3, purpose=Purpose.TEST,
                                                     families=["maze_navigate", "gravity_fall"]), tmp_path / "other", seed=5)
    evaluate(config=cfg.model_copy(update={"heldout_judge": str(other)}))
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT judge_p_yes_json, heldout_p_yes_json FROM results").fetchall()
    pairs = [(json.loads(a), json.loads(b)) for a, b in rows]
    assert all(len(a) == len(b) for a, b in pairs) and not any(np.allclose(a, b, rtol=1e-2, atol=0) for a, b in pairs)


def test_best_of_n_selected_by_the_held_out_judge_reuses_the_candidates_and_asks_that_judge(setup, tmp_path):
    """best_of_n_heldout: best-of-N's N videos, picked by the held-out judge with the same queries."""
    root, models = setup
    cfg = config(root, models, "w-heldout-select").model_copy(update={"methods": [Method.BEST_OF_N]})
    with pytest.raises(ValueError, match="best_of_n_heldout, which selects with the held-out judge: set heldout_judge"):
        EvaluateConfig.model_validate({**cfg.model_dump(mode="json"), "methods": ["best_of_n_heldout"]})
    evaluate(config=cfg)
    before = stage_dirs(Path(cfg.work))
    other = build_micro_teacher(make_synth_benchmark(tmp_path / "b", per_family=1, seed=3, purpose=Purpose.TEST,
                                                     families=["maze_navigate", "gravity_fall"]), tmp_path / "other", seed=5)
    both = cfg.model_copy(update={"methods": [Method.BEST_OF_N, Method.BEST_OF_N_HELDOUT], "heldout_judge": str(other)})
    out = evaluate(config=both)
    assert not out["failed"] and set(out["summary"]) == {"best_of_n", "best_of_n_heldout"}
    after = stage_dirs(Path(cfg.work))
    new = {d for d in after if d not in before}
    # the N candidates, the rules and the reward were reused: only the pick, its score and the held-out answers ran
    assert {Path(d).name.split("-")[0] for d in new} == {"select", "score", "heldout"}
    assert all(after[d] == before[d] for d in before)
    for item in (Path(cfg.work) / "items").iterdir():
        picks = [json.loads((d / "record.json").read_text()) for d in sorted(item.glob("select-*"))
                 if json.loads((d / "record.json").read_text())["by"] == "judge"]
        assert len(picks) == 2 and len(picks[0]["values"]) == len(picks[1]["values"]) == 2
        assert not np.allclose(picks[0]["values"], picks[1]["values"])  # another judge's reward losses
    # the judge decides this method's videos, so it names the experiment; another judge is another experiment
    assert experiment_of(both).experiment_id != experiment_of(both.model_copy(update={"heldout_judge": "elsewhere"})).experiment_id


def test_a_failing_held_out_judge_keeps_every_score(setup, tmp_path):
    root, models = setup
    broken = shutil.copytree(models.teacher, tmp_path / "broken")
    weights = next(Path(broken).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: it cannot load
    cfg = config(root, models, "w-heldout-bad").model_copy(
        update={"methods": [Method.VANILLA, Method.TEACHER], "heldout_judge": str(broken)})
    out = evaluate(config=cfg)
    assert not out["failed"]
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT score, error, heldout_p_yes_json, heldout_error FROM results").fetchall()
    assert len(rows) == 4 and all(score is not None and err is None and heldout is None for score, err, heldout, _ in rows)
    assert all("broken" in why and "safetensors" in why for *_, why in rows), rows[0][3]


def test_a_poisoned_item_fails_alone(setup, tmp_path):
    root, models = setup
    bench = tmp_path / "bench"
    shutil.copytree(root / "bench", bench)
    victim = min(bench.rglob("first_frame.png"))
    victim.write_bytes(b"not a png")
    cfg = config(root, models, "w3", bench=str(bench)).model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
    with pytest.raises(Exception, match="failed"):
        evaluate(config=cfg)
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT instance_id, method, error IS NULL, error_stage FROM results ORDER BY 1, 2").fetchall()
        errors = [r[0] for r in con.execute("SELECT error FROM results WHERE error IS NOT NULL").fetchall()]
    assert all("first_frame.png" in e for e in errors), errors
    assert len(rows) == 4
    bad = [r for r in rows if not r[2]]
    good = [r for r in rows if r[2]]
    assert len(bad) == 2 and len(good) == 2
    assert {r[0] for r in bad} != {r[0] for r in good}
    # recorded under the item's own id (from the layout), which its rows keep once the file is fixed
    victim_id = "/".join(victim.parent.relative_to(bench).parts)
    assert all(r[3] == "load" and r[0] == victim_id for r in bad), bad


def test_a_stage_failing_mid_run_is_recorded_with_its_stage(setup, monkeypatch):
    root, models = setup
    from core.pipeline import stages as core_stages

    real = core_stages.optimise_stage

    def optimise_or_fail(reasoner, teacher, instance, *args, **kwargs):
        if "maze" in instance.task_family:
            raise FloatingPointError("loss is nan at step 0")
        return real(reasoner, teacher, instance, *args, **kwargs)

    monkeypatch.setattr(core_stages, "optimise_stage", optimise_or_fail)
    cfg = config(root, models, "w4").model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
    with pytest.raises(Exception, match="1 of 4"):
        evaluate(config=cfg)
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT family, method, error_stage, error FROM results ORDER BY 1, 2").fetchall()
    failed = [r for r in rows if r[3] is not None]
    assert [(r[0], r[1], r[2]) for r in failed] == [("maze_navigate", "teacher", "optimise")]
    assert "loss is nan" in failed[0][3]


def test_auto_n_sets_best_of_ns_n_from_the_teacher_methods_recorded_cost_and_resumes(setup):
    from core.method.compare import auto_n
    from flows.evaluate import _outcome, _submit_item, load_items
    from tasks.models import model_identity

    root, models = setup
    cfg = config(root, models, "w-auto").model_copy(update={"methods": [Method.BEST_OF_N, Method.PASS_AT_N], "auto_n": True})
    out = evaluate(config=cfg)
    assert not out["failed"]
    n = out["n"]
    # the N the helpers' cached stages imply: vanilla and the teacher method, rerun from the cache
    items, _ = load_items(cfg)
    ids = {k: model_identity(getattr(models, k)) for k in ("reasoner", "teacher", "surrogate")}
    in_play = cfg.model_copy(update={"methods": [Method.VANILLA, Method.TEACHER, Method.BEST_OF_N, Method.PASS_AT_N]}).resolved()
    helpers = [_outcome(inst, m, chain, 0) for inst in items for m, chain in
               _submit_item(inst, in_play, ids, inline=True, only=[Method.VANILLA, Method.TEACHER]).items()]
    assert all(h.error is None and h.info.get("judge_seconds", 0) > 0 for h in helpers if h.method == "vanilla")
    assert n == auto_n(helpers) >= 2
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT method, n, count(*) FROM results GROUP BY 1, 2 ORDER BY 1").fetchall()
    assert rows == [("best_of_n", n, 2), ("pass_at_n", n, 2)]  # the helpers' rows are not the user's
    for item_dir in (Path(cfg.work) / "items").iterdir():  # N candidates, plus the teacher method's final video
        assert len(list(item_dir.glob("video-*"))) == n + 1
    before = stage_dirs(Path(cfg.work))
    assert evaluate(config=cfg)["n"] == n, "a rerun reads the same recorded costs, so picks the same N"
    assert stage_dirs(Path(cfg.work)) == before


def test_auto_n_matches_videotpos_rounds_to_the_teacher_methods_cost_and_reports_only_the_matched_run(setup):
    root, models = setup
    cfg = config(root, models, "w-auto-tpo").model_copy(update={"methods": [Method.VIDEOTPO], "auto_n": True})
    out = evaluate(config=cfg)
    assert not out["failed"] and out["tpo_rounds"] >= 1
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT method, tpo_rounds, count(*) FROM results GROUP BY 1, 2").fetchall()
    assert rows == [("videotpo", out["tpo_rounds"], 2)]  # the probe's rows are not the user's
    assert out["summary"]["videotpo"]["extra"] == {"rounds": out["tpo_rounds"]}
    before = stage_dirs(Path(cfg.work))
    assert evaluate(config=cfg)["tpo_rounds"] == out["tpo_rounds"], "a rerun reads the same recorded costs"
    assert stage_dirs(Path(cfg.work)) == before


def test_an_official_vbvr_layout_runs_unscored_and_exports_videos_for_the_official_scorer(setup, tmp_path):
    """No synth metadata: the video spec comes from ground_truth.mp4, rows are unscored (NULL), and
    each method's videos land at {split_dir}/{task_id}/{index}.mp4 for VBVR-EvalKit."""
    root, models = setup
    bench = tmp_path / "official"
    shutil.copytree(root / "bench", bench)
    for meta in bench.glob("*/*/*/meta.json"):
        meta.unlink()
    (bench / "VBVR-Bench.json").unlink()
    cfg = config(root, models, "w-official", bench=str(bench)).model_copy(
        update={"methods": [Method.VANILLA, Method.TEACHER], "work": str(tmp_path / "work")})
    out = evaluate(config=cfg)
    assert not out["failed"] and out["exported"]
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT instance_id, method, score, success, judge_broken, judge_goal_p_yes FROM results").fetchall()
    # no rule-based scorer here: no score, and no criterion known to be broken, so no judge-fooled count
    assert len(rows) == 4 and all(r[2] is None and r[3] is None and r[4] == 0 for r in rows)
    assert all(r[5] is not None for r in rows)  # the Teacher still judged every final video
    for inst_id, method, *_ in rows:
        split_dir, task_id, index = inst_id.split("/")
        assert (Path(out["exported"]) / method / split_dir / task_id / f"{index}.mp4").is_file()
    assert out["summary"]["teacher"]["mean_score"] != out["summary"]["teacher"]["mean_score"]  # NaN: nothing scored
    with pytest.raises(InputError, match="pass_at_n"):
        evaluate(config=cfg.model_copy(update={"methods": [Method.PASS_AT_N]}))


def test_ruler_records_run_with_the_video_override_and_a_text_only_record_fails_alone(setup, tmp_path):
    root, models = setup
    firsts = sorted((root / "bench").glob("*/*/*/first_frame.png"))
    shutil.copyfile(firsts[0], tmp_path / "first_frame.png")  # a record's image lies inside its benchmark
    records = [{"prompt": f"task {i}", "index": i, "task_name": task, "category": "vision rule",
                "checklist": json.dumps([{"Rule Coherence": "Is the rule followed?"}]), "input_image_path": img}
               for i, (task, img) in enumerate([("color", "first_frame.png"), ("count", None)])]
    path = tmp_path / "ruler.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cfg = config(root, models, "w-ruler", bench=str(path)).model_copy(
        update={"methods": [Method.VANILLA], "work": str(tmp_path / "work")})
    with pytest.raises(RuntimeError, match="2 of 2"):  # no ground truth, no override: neither can be generated
        evaluate(config=cfg)
    run = cfg.model_copy(update={"video": VideoOverride(n_frames=17, fps=8, height=64, width=64),
                                 "work": str(tmp_path / "work2"), "judge": models.teacher, "mlflow_uri": None})
    out = evaluate(config=run, return_state=True)
    with duckdb.connect(str(tmp_path / "work2" / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT instance_id, score, error FROM results ORDER BY 1").fetchall()
        judged = con.execute("SELECT instance_id, method, judge, dimension, label, attempts, error FROM judgements "
                             "ORDER BY 1").fetchall()
    assert rows[0][:2] == ("color/0", None) and rows[0][2] is None
    assert rows[1][:2] == ("count/1", None) and "first_frame" in rows[1][2]  # failed alone, and not scored 0
    assert not out.is_completed() and list((tmp_path / "work2" / "outputs").glob("*/vanilla/color/0.mp4"))
    # --judge: the (random) judge's every reply for the video it got is recorded; no labels, so nothing is scored
    # (the text-only record never became an item: it has its failed result row and nothing to judge)
    assert [r[:4] for r in judged] == [("color/0", "vanilla", models.teacher, "Rule Coherence")]
    assert judged[0][4] is None and judged[0][5] == 3 and "no valid judge reply in 3 attempt(s)" in judged[0][6]
    assert experiment_of(run).experiment_id == experiment_of(run.model_copy(update={"judge": None})).experiment_id
    with pytest.raises(InputError, match="not a Qwen-VL model folder"):  # refused before any generation
        evaluate(config=run.model_copy(update={"judge": models.reasoner, "work": str(tmp_path / "work3")}))
    two_scales = run.method.model_copy(update={"optim": run.method.optim.model_copy(
        update={"guidance": Guidance(scale=3.0, scale_2=2.0)})})
    with pytest.raises(InputError, match="guidance.scale_2"):  # the micro Reasoner has one transformer
        evaluate(config=run.model_copy(update={"method": two_scales, "work": str(tmp_path / "work3")}))
    assert not (tmp_path / "work3" / "items").exists()
    parent = next(r for r in mlflow_runs(default_tracking_uri(tmp_path / "work2")).values()
                  if "vanilla.ruler_n_failed" in r.data.metrics)
    assert parent.data.metrics["vanilla.ruler_n_failed"] == 1 and parent.data.metrics["vanilla.ruler_n_judged"] == 0

    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    (tmp_path / "ruler.yaml").write_text(yaml.safe_dump(run.model_dump(mode="json")))
    r = CliRunner().invoke(app, ["evaluate", "--config", str(tmp_path / "ruler.yaml"), "--no-report"])
    assert r.exit_code == 1  # the text-only record failed
    flat = " ".join(r.output.split())  # a table's title wraps to the table's width
    assert "RULER-Bench (0-100), judged by" in flat and "vlmt sql ruler_scores" in flat, r.output


def test_vlmt_evaluate_reads_yaml_and_prints_the_table(setup, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    root, models = setup
    cfg = config(root, models, "w5")
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    r = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--methods", "vanilla,pass_at_n", "--name", "cli"])
    assert r.exit_code == 0, r.output
    assert "vanilla" in r.output and "pass_at_n" in r.output and "vlmt sql" in r.output
    assert "judge" in r.output and "fooled" in r.output and "against vanilla" in r.output  # the rate and the paired table
    assert "learning rate" not in r.output  # no method here trains a LoRA
    r = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--methods", "teacher", "--name", "cli", "--no-report"])
    assert r.exit_code == 0, r.output
    assert f"learning rate: 0.01 (from {Path(models.reasoner) / 'optim_defaults.json'})" in " ".join(r.output.split())
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [vanilla, nope]\n")
    r = CliRunner().invoke(app, ["evaluate", "--config", str(bad)])
    assert r.exit_code != 0
    assert r.exit_code == 2 and "bad.yaml:methods.1: Input should be" in " ".join(r.output.split()), r.output
    bad.write_text("method: {optim: {max_step: 5}}\n")  # a typo must not silently run the default 40 steps
    r = CliRunner().invoke(app, ["evaluate", "--config", str(bad)])
    assert r.exit_code == 2 and "bad.yaml:method.optim.max_step: is not a field" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--n", "0"])
    assert r.exit_code == 2 and "--n: '0' (expected a positive integer or 'auto')" in r.output


def test_vlmt_evaluate_runs_an_ablation_file_as_variants_and_reruns_it_from_cache(setup, tmp_path):
    import time

    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    root, models = setup
    base = config(root, models, "w-cli-ablate").model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
    path = tmp_path / "ablate.yaml"
    path.write_text(yaml.safe_dump({"base": base.model_dump(mode="json"), "grid": {"lam": [0.0, 1.0]}}))
    r = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--no-report"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "lam=0.0" in text and "lam=1.0" in text and "s/step" in text and "success against vanilla per variant" in text
    start = time.perf_counter()
    again = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--no-report"])
    assert again.exit_code == 0 and time.perf_counter() - start < 60, again.output
    assert not list(Path(base.work).glob("items/*/*.tmp*"))
    r = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--methods", "vanilla"])
    assert r.exit_code == 2 and "is an ablation (base + grid): set methods in its base" in " ".join(r.output.split())


def test_vlmt_evaluate_models_takes_the_zoos_judge_as_the_held_out_judge(setup, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    root, models = setup
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for name, path in (("reasoner", models.reasoner), ("surrogate-decoder", models.surrogate), ("teacher", models.teacher),
                       ("teacher-judge", models.teacher)):
        (zoo / name).symlink_to(path)
    work = tmp_path / "w"
    common = ["evaluate", "--models", str(zoo), "--bench", str(root / "bench"), "--methods", "vanilla,teacher",
              "--max-steps", "1", "--mlflow-uri", "", "--no-report", "--work"]
    r = CliRunner().invoke(app, [*common, str(work)])
    assert r.exit_code == 0, r.output
    assert len(list(work.glob("items/*/heldout-*/record.json"))) == 2 * 2
    r = CliRunner().invoke(app, [*common, str(tmp_path / "w-off"), "--heldout-judge", ""])
    assert r.exit_code == 0, r.output
    assert not list((tmp_path / "w-off").glob("items/*/heldout-*"))


def test_inline_thread_and_a_local_dask_cluster_give_the_same_results(setup):
    from flows.evaluate import run_evaluate

    root, models = setup
    scores = {}
    for runner in ("inline", "thread", "dask"):
        cfg = config(root, models, f"w-{runner}").model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
        run_evaluate(cfg, runner)
        with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
            scores[runner] = con.execute(
                "SELECT instance_id, method, score, final_loss FROM results ORDER BY 1, 2").fetchall()
    assert len(scores["dask"]) == 4
    assert scores["dask"] == scores["thread"] == scores["inline"]


def test_an_inline_rerun_reads_finished_stages_without_a_task_run_and_gets_the_same_rows(setup, monkeypatch):
    from prefect.tasks import Task

    from flows.evaluate import run_evaluate

    root, models = setup
    cfg = config(root, models, "w-inline-rerun").model_copy(update={"methods": [Method.VANILLA, Method.BEST_OF_N,
                                                                                Method.TEACHER]})
    query = "SELECT instance_id, method, score, final_loss, judge_p_yes_json FROM results ORDER BY 1, 2"
    run_evaluate(cfg, "inline")
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        first = con.execute(query).fetchall()
    before = stage_dirs(Path(cfg.work))
    calls = []
    real_call = Task.__call__
    monkeypatch.setattr(Task, "__call__", lambda self, *a, **k: calls.append(self.name) or real_call(self, *a, **k))
    run_evaluate(cfg, "inline")
    assert calls == []  # every stage had finished: its record is read, no cached task run is made
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        assert con.execute(query).fetchall() == first and len(first) == 6
    assert stage_dirs(Path(cfg.work)) == before
    # a stage whose folder is gone runs again, as a task
    shutil.rmtree(next(Path(cfg.work).glob("items/*/score-*")))
    run_evaluate(cfg, "inline")
    assert calls == ["score-video"]


def test_ablate_runs_a_grid_as_variants_of_one_experiment(setup, monkeypatch):
    import flows.ablate
    import flows.evaluate
    from core.storage.named import load_queries
    from core.storage.warehouse import query
    from flows.ablate import AblateConfig, ablate

    root, models = setup
    writes, real_write = [], flows.evaluate.write_database

    def counted(work):
        writes.append(work)
        return real_write(work)

    monkeypatch.setattr(flows.evaluate, "write_database", counted)
    monkeypatch.setattr(flows.ablate, "write_database", counted)
    base = config(root, models, "w6").model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
    out = ablate(config=AblateConfig(base=base, grid={"lam": [0.0, 1.0]}))
    assert sorted(out["variants"]) == ["lam=0.0", "lam=1.0"]
    assert len(writes) == 1 and out["rows"]["results"] == 8  # rebuilt once, after the last variant: 2 items x 2 methods x 2
    work = Path(base.work)
    db = work / "vlmt.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT DISTINCT experiment_id, variant, lam FROM results ORDER BY 2").fetchall()
    assert [(v, lam) for _, v, lam in rows] == [("lam=0.0", 0.0), ("lam=1.0", 1.0)]
    assert len({e for e, _, _ in rows}) == 1
    # the rules and the vanilla videos are shared by the variants; rewards and adapters are not
    kinds = [p.name.split("-")[0] for p in (work / "items").glob("*/*")]
    assert kinds.count("rules") == 2 and kinds.count("reward") == 4 and kinds.count("optimise") == 4
    q = load_queries()["ablation_pivot"]
    pivot = query(db, q.sql, q.bind({"experiment": out["experiment_id"]}))
    assert sorted(pivot["lam"].to_list()) == [0.0, 1.0]


def test_a_decoder_grid_optimises_through_the_vae_and_reports_seconds_per_step(setup):
    """Surrogate vs VAE decoding during optimisation: only the optimiser's chain reruns; rows and the summary say which."""
    from core.storage.named import load_queries
    from core.storage.warehouse import query
    from flows.ablate import AblateConfig, ablate

    root, models = setup
    base = config(root, models, "w-decoder").model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
    out = ablate(config=AblateConfig(base=base, grid={"decoder": ["surrogate", "vae"]}))
    work = Path(base.work)
    kinds = [p.name.split("-")[0] for p in (work / "items").glob("*/*")]
    assert kinds.count("rules") == 2 and kinds.count("reward") == 2 and kinds.count("optimise") == 4
    q = load_queries()["ablation_summary"]
    rows = query(work / "vlmt.duckdb", q.sql, q.bind({"experiment": out["experiment_id"]})).to_dicts()
    teacher = {r["variant"]: r for r in rows if r["method"] == "teacher"}
    assert set(teacher) == {"decoder=surrogate", "decoder=vae"}
    assert all(r["seconds_per_step"] > 0 and r["mean_steps"] >= 0 and r["n"] == 2 for r in teacher.values())
    assert all(r["seconds_per_step"] is None for r in rows if r["method"] == "vanilla")
    decoders = query(work / "vlmt.duckdb", "SELECT DISTINCT variant, decoder FROM results WHERE method = 'teacher'", {})
    assert sorted(decoders.rows()) == [("decoder=surrogate", "surrogate"), ("decoder=vae", "vae")]
    with pytest.raises(Exception, match="decoder"):
        AblateConfig(base=base, grid={"decoder": ["taesd"]}).variants()


def test_a_queries_grid_reruns_the_rules_onwards_and_records_the_generic_set(setup):
    """The paper's generic-queries ablation as a grid: the generic variant gets its own rules (not the Teacher's),
    shares the vanilla videos, and its rows say which queries they were made with."""
    from core.storage.named import load_queries
    from core.storage.warehouse import query
    from flows.ablate import AblateConfig, ablate

    root, models = setup
    base = config(root, models, "w7").model_copy(update={"methods": [Method.VANILLA, Method.TEACHER]})
    out = ablate(config=AblateConfig(base=base, grid={"queries": ["teacher", "generic"]}))
    assert sorted(out["variants"]) == ["queries=generic", "queries=teacher"]
    work = Path(base.work)
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT variant, queries, rules_source, queries_json FROM results WHERE method = 'teacher'"
                           " ORDER BY instance_id, variant").fetchall()
    assert [(v, q) for v, q, _, _ in rows] == [("queries=generic", "generic"), ("queries=teacher", "teacher")] * 2
    generic = [json.loads(qj) for v, _, src, qj in rows if v == "queries=generic" and src == "generic"]
    assert len(generic) == 2 and all([q["kind"] for q in g] == ["goal", "process"] for g in generic)
    assert all(src != "generic" for v, _, src, _ in rows if v == "queries=teacher")
    kinds = [p.name.split("-")[0] for p in (work / "items").glob("*/*")]
    assert kinds.count("rules") == 4 and kinds.count("optimise") == 4
    assert kinds.count("video") == 2 + 4  # one vanilla video per item, shared; one teacher video per item and variant
    q = load_queries()["ablation_pivot"]
    pivot = query(work / "vlmt.duckdb", q.sql, q.bind({"experiment": out["experiment_id"]}))
    assert sorted(pivot["queries"].to_list()) == ["generic", "teacher"]


def test_the_shared_ablation_trains_one_adapter_for_all_items_and_resumes(setup):
    """`shared`: one experiment-level stage trains one LoRA on both items' rewards (max_steps x items updates),
    each item's video is generated with it, its cost is shared out, and a rerun redoes nothing."""
    root, models = setup
    cfg = config(root, models, "w8").model_copy(update={"methods": [Method.VANILLA, Method.TEACHER, Method.SHARED]})
    out = evaluate(config=cfg)
    assert set(out["summary"]) == {"vanilla", "teacher", "shared"} and not out["failed"]
    work = Path(cfg.work)
    (shared_dir,) = (work / "shared").glob("shared-*")
    trained = json.loads((shared_dir / "shared.json").read_text())
    steps = 2 * cfg.method.optim.max_steps
    assert trained["items"] == 2 and trained["steps_run"] == steps and len(trained["trace"]) == steps
    assert sorted(t["item"] for t in trained["trace"]) == [0, 0, 1, 1]
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT r.error, r.steps_run, r.rules_source, c.reasoner_backward, c.seconds_json FROM results r "
                           "JOIN costs c USING (experiment_id, variant, instance_id, method) WHERE method = 'shared'").fetchall()
        n_traces = con.execute("SELECT count(*) FROM traces WHERE method = 'shared'").fetchone()[0]
        videos = con.execute("SELECT s.video_path, v.video_path FROM results s JOIN results v USING (instance_id) "
                             "WHERE s.method = 'shared' AND v.method = 'vanilla'").fetchall()
    assert len(rows) == 2 and all(err is None and run == steps and src is not None for err, run, src, _, _ in rows)
    backward = json.loads((shared_dir / "record.json").read_text())["cost"]["counts"]["reasoner_backward"]
    assert all(b == backward for _, _, _, b, _ in rows) and backward == steps // 2  # one item's share of the training
    assert n_traces == 0  # the shared trace lives in shared.json, not once per item
    assert len(videos) == 2 and all(not np.array_equal(read_video(work / a), read_video(work / b)) for a, b in videos)  # adapted
    kinds = [p.name.split("-")[0] for p in (work / "items").glob("*/*")]
    assert kinds.count("optimise") == 2 and kinds.count("video") == 2 * 3  # vanilla, teacher and shared per item

    before = {**stage_dirs(work), "shared": shared_dir.stat().st_mtime_ns}
    again = evaluate(config=cfg)
    assert {**stage_dirs(work), "shared": shared_dir.stat().st_mtime_ns} == before, "a rerun must not retrain or regenerate"
    assert again["summary"]["shared"]["mean_score"] == out["summary"]["shared"]["mean_score"]

    # through a task runner (futures instead of inline calls) the same adapter and the same scores
    from flows.evaluate import run_evaluate

    threaded = cfg.model_copy(update={"work": str(root / "w8-thread")})
    run_evaluate(threaded, "thread")
    (threaded_dir,) = (Path(threaded.work) / "shared").glob("shared-*")
    assert threaded_dir.name == shared_dir.name
    with duckdb.connect(str(Path(threaded.work) / "vlmt.duckdb"), read_only=True) as con:
        scores = con.execute("SELECT instance_id, score FROM results WHERE method = 'shared' ORDER BY 1").fetchall()
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        assert scores == con.execute("SELECT instance_id, score FROM results WHERE method = 'shared' ORDER BY 1").fetchall()


def test_the_grpo_ablation_optimises_each_item_by_rollouts_and_resumes(setup):
    """`grpo`: per item, optimise-item with GRPO (group losses in optim.json, the group means in traces), then the
    final video with its adapter; it reuses the teacher method's rules and reward, and a rerun redoes nothing."""
    root, models = setup
    base = config(root, models, "w9")
    cfg = base.model_copy(update={"methods": [Method.VANILLA, Method.TEACHER, Method.GRPO], "method": base.method.model_copy(
        update={"grpo": base.method.grpo.model_copy(update={"steps": 1, "group": 2})})})
    out = evaluate(config=cfg)
    assert set(out["summary"]) == {"vanilla", "teacher", "grpo"} and not out["failed"]
    work = Path(cfg.work)
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT r.steps_run, r.stop_reason, c.reasoner_nfe, c.teacher_forward, c.teacher_backward "
                           "FROM results r JOIN costs c USING (experiment_id, variant, instance_id, method) "
                           "WHERE method = 'grpo'").fetchall()
        traces = con.execute("SELECT count(*) FROM traces WHERE method = 'grpo'").fetchone()[0]
        videos = con.execute("SELECT g.video_path, v.video_path FROM results g JOIN results v USING (instance_id) "
                             "WHERE g.method = 'grpo' AND v.method = 'vanilla'").fetchall()
    # 2 groups of 2 rollouts x 2 sampler steps, one update on 2 rollouts x 1 trained step, the final video's 2 steps
    # one Teacher forward per rollout, none backward (the rules are a generation, counted apart)
    assert rows == [(1, "max_steps", 2 * 2 * 2 + 2 * (1 + 1) + 2, 2 * 2, 0)] * 2
    assert traces == 2 * 2
    assert len(videos) == 2 and all(not np.array_equal(read_video(work / a), read_video(work / b)) for a, b in videos)  # adapted
    kinds = sorted(p.name.split("-")[0] for p in (work / "items").glob("*/*"))
    assert kinds.count("optimise") == kinds.count("grpo") == kinds.count("rules") == 2  # one rule set per item serves both
    grpo_traces = [json.loads(p.read_text())["trace"] for p in (work / "items").glob("*/grpo-*/optim.json")]
    assert len(grpo_traces) == 2 and all(len(step["group_losses"]) == 2 for t in grpo_traces for step in t)
    before = stage_dirs(work)
    again = evaluate(config=cfg)
    assert stage_dirs(work) == before and again["summary"]["grpo"]["mean_score"] == out["summary"]["grpo"]["mean_score"]


def test_an_ablation_file_with_a_misspelt_field_is_refused_naming_it(tmp_path):
    from core.errors import InputError
    from flows.ablate import AblateConfig

    f = tmp_path / "ablate.yaml"
    f.write_text("base: {method: {optim: {lamda: 0.5}}}\ngrid: {lr: [0.01, 0.001]}\n")
    with pytest.raises(InputError, match=r"ablate.yaml:base.method.optim.lamda: is not a field"):
        AblateConfig.from_yaml(f)
    f.write_text("base: {method: {optim: {lam: 0.25}}}\ngrid: {lr: [0.01, 0.001]}\n")
    cfg = AblateConfig.from_yaml(f)
    assert cfg.base.method.optim.lam == 0.25 and [c.method.optim.lr for _, c in cfg.variants()] == [0.01, 0.001]
    budgets = AblateConfig(base=EvaluateConfig(methods=["vanilla", "grpo"]), grid={"grpo_steps": [3, 9]}).variants()
    assert [(name, c.method.grpo.steps, c.params().grpo_steps) for name, c in budgets] == [
        ("grpo_steps=3", 3, 3), ("grpo_steps=9", 9, 9)]
    assert EvaluateConfig(methods=["vanilla", "teacher"]).params().grpo_steps is None  # no grpo rows: no budget


def _changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
    return {k for k in a if a[k] != b[k]}


def test_a_score_version_bump_rescores_a_finished_work_dir_and_regenerates_nothing(setup, monkeypatch):
    """Cached videos stay; every score stage reruns, and Pass@N re-selects (by the scorer) from its
    cached candidates; nothing else runs again."""
    from flows import keys

    root, models = setup
    cfg = config(root, models, "w-rescore").model_copy(
        update={"methods": [Method.VANILLA, Method.PASS_AT_N, Method.TEACHER, Method.STILL]})
    evaluate(config=cfg)
    before = stage_dirs(Path(cfg.work))
    monkeypatch.setattr(keys, "SCORE_VERSION", "score-next")
    evaluate(config=cfg)
    after = stage_dirs(Path(cfg.work))
    new = sorted(set(after) - set(before))
    kinds = [Path(p).name.split("-")[0] for p in new]
    assert kinds.count("score") == 2 * 4 and kinds.count("select") == 2 and len(new) == 2 * 4 + 2, new
    assert all(after[p] == before[p] for p in before), "a finished stage was rewritten"
    with duckdb.connect(str(Path(cfg.work) / "vlmt.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 2 * 4  # replaced, not added


def test_stage_keys_change_exactly_where_they_should():
    from flows.evaluate import stage_keys

    ids = {"reasoner": "R", "surrogate": "S", "teacher": "T"}
    base = EvaluateConfig(method=MethodConfig(n=2)).resolved()
    k0 = stage_keys("item", 7, base, ids)
    with pytest.raises(ValueError, match="unresolved"):
        stage_keys("item", 7, EvaluateConfig(), ids)

    def with_optim(**kw) -> dict[str, str]:
        cfg = base.model_copy(update={"method": base.method.model_copy(update={"optim": base.method.optim.model_copy(update=kw)})})
        return stage_keys("item", 7, cfg, ids)

    teacher_chain = {"optimise", "video/teacher", "score/teacher"}
    grpo_chain = {"grpo", "video/grpo", "score/grpo"}
    oracle_chain = {"oracle_reward", "video/oracle_reward", "score/oracle_reward"}
    oracle_video = oracle_chain - {"score/oracle_reward"}  # read neither the Teacher nor its reward (only its score is judged)
    assert _changed(k0, with_optim(lr=5e-5)) == teacher_chain | grpo_chain | oracle_chain  # grpo's lr unless it sets its own
    assert _changed(k0, with_optim(max_steps=10)) == teacher_chain | oracle_chain
    assert _changed(k0, with_optim(grad_mode="full")) == teacher_chain | oracle_chain

    def with_grpo(**kw) -> dict[str, str]:
        cfg = base.model_copy(update={"method": base.method.model_copy(update={"grpo": base.method.grpo.model_copy(update=kw)})})
        return stage_keys("item", 7, cfg, ids)

    assert _changed(k0, with_grpo(steps=3)) == grpo_chain and _changed(k0, with_grpo(noise_level=0.3)) == grpo_chain
    own_lr = with_grpo(lr=1e-3)
    own_cfg = base.model_copy(update={"method": base.method.model_copy(update={"grpo": base.method.grpo.model_copy(
        update={"lr": 1e-3}), "optim": base.method.optim.model_copy(update={"lr": 5e-5})})})
    assert _changed(own_lr, stage_keys("item", 7, own_cfg, ids)) == teacher_chain | oracle_chain  # grpo's own lr
    after_reward = {k for k in k0 if k not in {"rules", "video/0", "video/1", "video/pe", "select/oracle", "video/still",
                                               *oracle_video}}
    assert _changed(k0, with_optim(lam=1.0)) == after_reward  # the reward, and all its users (judge included)
    assert _changed(k0, with_optim(k_frames=8)) == after_reward
    untouched_by_reasoner = {"rules", "reward", "video/still", "score/still"}  # the still reference runs no model
    assert _changed(k0, stage_keys("item", 7, base, {**ids, "teacher": "T2"})) == set(k0) - {"video/0", "video/1",
                                                                                             "select/oracle", "video/still",
                                                                                             *oracle_video}
    assert _changed(k0, stage_keys("item", 7, base, {**ids, "reasoner": "R2"})) == set(k0) - untouched_by_reasoner
    assert _changed(k0, stage_keys("item", 7, base, {**ids, "surrogate": "S2"})) == teacher_chain | grpo_chain | oracle_chain
    assert _changed(k0, stage_keys("other", 7, base, ids)) == set(k0)
    assert _changed(k0, with_optim(sampler_steps=8)) == set(k0) - untouched_by_reasoner
    assert _changed(k0, with_optim(guidance=Guidance(scale=5.0))) == set(k0) - untouched_by_reasoner
    assert _changed(k0, stage_keys("item", 8, base, ids)) >= {"video/still", "video/0"}
    assert _changed(k0, with_optim(guidance=Guidance(scale=1.0))) == set()  # off: the keys made before guidance existed
    generic = base.model_copy(update={"method": base.method.model_copy(update={"queries": "generic"})})
    assert _changed(k0, stage_keys("item", 7, generic, ids)) == set(k0) - {"video/0", "video/1", "select/oracle",
                                                                             "video/still", *oracle_video}
    teacher_queries = base.model_copy(update={"method": base.method.model_copy(update={"queries": "teacher"})})
    assert stage_keys("item", 7, teacher_queries, ids) == k0  # the default: the keys made before the knob existed
    assert stage_keys("item", 7, base, ids) == k0  # deterministic
    # a held-out judge adds its own stage per method and moves nothing else; another judge moves only those
    judged = stage_keys("item", 7, base, {**ids, "heldout_judge": "J"})
    heldout = {k for k in judged if k.startswith("heldout/")}
    # and best_of_n_heldout's pick and its score, which exist only with a judge to pick by
    selection = {"select/heldout", "score/best_of_n_heldout"}
    assert {k: v for k, v in judged.items() if k not in heldout | selection} == k0 and selection <= set(judged)
    assert heldout == {f"heldout/{m.value}" for m in Method} - {"heldout/shared"}
    assert judged["select/heldout"] not in (judged["select/judge"], judged["select/oracle"])
    assert _changed(judged, stage_keys("item", 7, base, {**ids, "heldout_judge": "J2"})) == heldout | selection
    assert _changed(judged, stage_keys("item", 7, base, {**ids, "heldout_judge": "J", "teacher": "T2"})) >= heldout


def test_the_optimisers_version_moves_only_the_gradient_trained_adapters_and_what_follows(monkeypatch):
    from flows import keys

    ids = {"reasoner": "R", "surrogate": "S", "teacher": "T"}
    cfg = EvaluateConfig(method=MethodConfig(n=2)).resolved()
    k0, shared0 = keys.stage_keys("item", 7, cfg, ids, shared="A"), keys.shared_key(cfg, ids, ["r1", "r2"])
    monkeypatch.setattr(keys, "OPTIMISE_VERSION", "optimise-next")
    assert _changed(k0, keys.stage_keys("item", 7, cfg, ids, shared="A")) == {"optimise", "video/teacher", "score/teacher"}
    assert keys.shared_key(cfg, ids, ["r1", "r2"]) != shared0


def test_an_unset_learning_rate_is_resolved_from_the_reasoner_folder_before_ids_keys_and_rows(setup, tmp_path):
    """Ids, keys and rows carry the learning rate a run uses: the same as setting it explicitly; another
    folder's recommendation (same weights) moves only what the learning rate decides."""
    from flows.evaluate import stage_keys

    root, models = setup
    unset, explicit = config(root, models, "w"), config(root, models, "w", lr=1e-2)
    assert unset.method.optim.lr is None
    resolved = unset.resolved()
    assert resolved.method.optim.lr == 1e-2 and resolved.params().lr == 1e-2 and resolved.resolved() is resolved
    assert experiment_of(unset).experiment_id == experiment_of(explicit).experiment_id
    ids = {"reasoner": "R", "surrogate": "S", "teacher": "T"}
    k0 = stage_keys("item", 7, resolved, ids)
    assert k0 == stage_keys("item", 7, explicit, ids)
    other = tmp_path / "reasoner"
    shutil.copytree(models.reasoner, other)
    (other / "optim_defaults.json").write_text('{"lr": 0.02}')
    moved = config(root, models.model_copy(update={"reasoner": str(other)}), "w").resolved()
    assert moved.method.optim.lr == 0.02
    assert _changed(k0, stage_keys("item", 7, moved, ids)) == {"optimise", "video/teacher", "score/teacher", "grpo",
                                                                "video/grpo", "score/grpo", "oracle_reward",
                                                                "video/oracle_reward", "score/oracle_reward"}
    (other / "optim_defaults.json").unlink()  # a folder without one (a real checkpoint): the paper's
    assert config(root, models.model_copy(update={"reasoner": str(other)}), "w").resolved().method.optim.lr == 5e-5


def test_runner_specs_build_prefect_task_runners_or_say_what_is_expected():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from core.errors import InputError
    from flows.evaluate import task_runner

    assert task_runner("inline") is None  # the flow calls its tasks itself
    threads = task_runner("thread=3")
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    assert isinstance(task_runner("process=2"), ProcessPoolTaskRunner)
    assert isinstance(task_runner("dask"), DaskTaskRunner)
    assert task_runner("dask=tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    with pytest.raises(InputError, match="--runner.*'fibres'.*inline, thread"):
        task_runner("fibres")
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="prefect-ray"):
            task_runner("ray")
    else:
        assert type(task_runner("ray")).__name__ == "RayTaskRunner"


def test_a_fixed_entry_replaces_its_load_failure_and_no_stale_failure_row_is_left(setup, tmp_path):
    """Issue 28.5: the failure of an unreadable item is keyed by the item's id, so the item's rows
    replace it once the file is fixed; a failure keyed otherwise (as earlier versions wrote it) goes."""
    from core.method.compare import ItemResult
    from core.storage.named import get_query
    from core.storage.results import write_result
    from core.storage.warehouse import query

    root, models = setup
    bench = tmp_path / "bench"
    shutil.copytree(root / "bench", bench)
    victim = min(bench.rglob("first_frame.png"))
    victim_id = "/".join(victim.parent.relative_to(bench).parts)
    png = victim.read_bytes()
    victim.write_bytes(b"not a png")
    cfg = config(root, models, "w-fixed", bench=str(bench)).model_copy(update={"methods": [Method.VANILLA, Method.STILL]})
    with pytest.raises(Exception, match="2 of 4"):
        evaluate(config=cfg)
    exp = experiment_of(cfg).experiment_id
    # a failure row keyed by the file that failed to load, as earlier versions wrote it
    write_result(Path(cfg.work) / "results", ItemResult(instance_id=str(victim), family="unknown", split=None, faculty=None,
                                                        method="vanilla", seed=0, error="InputError: not a png",
                                                        error_stage="load"), exp, cfg.variant)
    victim.write_bytes(png)
    out = evaluate(config=cfg)
    assert not out["failed"]
    db = Path(cfg.work) / "vlmt.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT instance_id, method, error FROM results ORDER BY 1, 2").fetchall()
        items = con.execute("SELECT count(*), count(DISTINCT instance_id) FROM items").fetchone()
    assert len(rows) == 2 * 2 and all(error is None for *_, error in rows), rows
    assert victim_id in {r[0] for r in rows} and items == (2, 2)
    q = get_query("method_comparison")
    table = query(db, q.sql, q.bind({"experiment": exp}))
    assert table["n"].to_list() == [2, 2] and table["n_errors"].to_list() == [0, 0]


def test_a_moved_work_dir_keeps_its_experiment_reuses_every_stage_and_reports_its_videos(setup, tmp_path, monkeypatch):
    """Issue 28.7: move the work dir and rerun: the same experiment id (and MLflow parent run), no
    stage computed again, rows naming files inside the work dir, and a report that shows the videos."""
    from mlflow.tracking import MlflowClient

    from core.pipeline import stages as core_stages
    from core.report.build import build_report

    root, models = setup
    cfg = config(root, models, "w-move", track=True).model_copy(update={"methods": [Method.VANILLA, Method.STILL]})
    first = evaluate(config=cfg)
    before = stage_dirs(Path(cfg.work))
    moved = tmp_path / "remounted" / "runs-moved"
    moved.parent.mkdir()
    shutil.move(cfg.work, moved)

    def recomputed(*args, **kwargs):
        raise AssertionError("a finished stage was computed again after the work dir moved")

    for name in ("generate_stage", "still_stage", "score_stage"):
        monkeypatch.setattr(core_stages, name, recomputed)
    again = evaluate(config=cfg.model_copy(update={"work": str(moved)}))
    assert again["experiment_id"] == first["experiment_id"] and not again["failed"]
    assert again["summary"] == first["summary"]
    assert stage_dirs(moved) == before
    with duckdb.connect(str(moved / "vlmt.duckdb"), read_only=True) as con:
        videos = [r[0] for r in con.execute("SELECT video_path FROM results").fetchall()]
        assert con.execute("SELECT count(*) FROM experiments").fetchone()[0] == 1
    assert len(videos) == 4 and all(not Path(v).is_absolute() and (moved / v).is_file() for v in videos), videos
    text = build_report(moved / "vlmt.duckdb").read_text()
    # every method's video and each item's ground truth (found in the moved work dir's benchmark)
    assert "video missing" not in text and text.count("<video ") == 4 + 2
    # the MLflow store moved with the work dir: one parent run, one point per metric
    assert again["mlflow"]["parent_run_id"] == first["mlflow"]["parent_run_id"]
    client = MlflowClient(again["mlflow"]["tracking_uri"])
    parent = again["mlflow"]["parent_run_id"]
    metrics = client.get_run(parent).data.metrics
    assert metrics and all(len(client.get_metric_history(parent, k)) == 1 for k in metrics)
    # and a third run finds its cache entries where the work dir is now
    assert evaluate(config=cfg.model_copy(update={"work": str(moved)}))["summary"] == first["summary"]
