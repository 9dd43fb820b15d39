"""Work dirs and their file names: ids that one slug would merge keep their own files, rows name
files relative to the work dir (a moved work dir still reports its videos), stage records follow
a moved work dir, an unreadable entry's failure is recorded under its instance's id, and rows a
finished run did not write again are pruned."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from PIL import Image

from core.bench.layout import InvalidItem, invalid_instance_id
from core.bench.record import Purpose
from core.bench.source import open_benchmark
from core.bench.synth.generate import make_synth_benchmark
from core.media import write_video
from core.method.compare import ItemResult
from core.report.build import build_report
from core.report.data import load_report_data
from core.storage.results import (
    ExperimentRecord,
    file_name,
    prune_results,
    result_file_name,
    slug,
    write_experiment,
    write_result,
)
from core.storage.warehouse import consolidate
from tasks.stages import relocated


def _result(instance_id: str, method: str = "vanilla", score: float = 0.5, **kw) -> ItemResult:
    return ItemResult(instance_id=instance_id, family="fam", split="id", faculty="perception", method=method, seed=0,
                      score=score, success=score > 0.5, **kw)


def _video(path: Path, value: int) -> str:
    return str(write_video(path, np.full((4, 16, 16, 3), value, np.uint8), fps=4))


def test_file_names_are_injective_and_keep_names_that_were_already_exact():
    ids = ["a/b", "a_b", "a b", "a__b", "a", "b", "a__b__c", ".hidden", "..", "", "x", "lam=0.5", "lam_0.5"]
    names = [file_name(i) for i in ids]
    assert len(set(names)) == len(ids), names
    assert file_name("a_b") == "a_b" and file_name("vanilla") == "vanilla"  # exact slugs keep their names
    assert all("__" not in n and not n.startswith(".") and "/" not in n for n in names)
    # names of several keys cannot run into each other either
    keys = [(v, i, m) for v in ("a", "a__b") for i in ("b__c", "c") for m in ("m",)]
    assert len({result_file_name(*k) for k in keys}) == len(keys)


def test_ids_a_slug_would_merge_keep_separate_results_and_report_entries(tmp_path):
    work = tmp_path / "work"
    root = work / "results"
    exp = ExperimentRecord(name="collide", config={"bench": "b"}, code_version="t")
    write_experiment(root, exp)
    for k, ident in enumerate(["a/b", "a_b"]):
        video = _video(work / "videos" / f"{k}.mp4", 40 + 100 * k)
        write_result(root, _result(ident, score=0.2 + 0.5 * k, info={"video": video}), exp.experiment_id,
                     video_path=video, base=work)
    db = work / "vlmt.duckdb"
    counts = consolidate(root, db)
    assert counts["results"] == 2 and counts["items"] == 2
    with duckdb.connect(str(db), read_only=True) as con:
        rows = dict(con.execute("SELECT instance_id, score FROM results").fetchall())
    assert rows == {"a/b": 0.2, "a_b": 0.7}
    data = load_report_data(db)
    assert sorted(i.instance_id for i in data.items) == ["a/b", "a_b"]
    page = build_report(db, tmp_path / "report")
    text = page.read_text()
    assert text.count("<video ") == 2 and "video missing" not in text
    media = sorted(p.parent.name for p in (tmp_path / "report" / "media").rglob("*.mp4"))
    assert media == sorted([file_name("a/b"), "a_b"])
    assert f"id='item-{file_name('a/b')}'" in text and "id='item-a_b'" in text


def test_rows_name_files_relative_to_the_work_dir_and_a_moved_work_dir_still_reports_its_videos(tmp_path):
    work = tmp_path / "here" / "work"
    root = work / "results"
    exp = ExperimentRecord(name="moving", config={"work": str(work)}, code_version="t")
    write_experiment(root, exp)
    outside = tmp_path / "bench" / "first.png"
    outside.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(outside)
    video = _video(work / "items" / "x" / "score-1" / "video.mp4", 80)
    write_result(root, _result("S/t/0", info={"video": video, "gif": video, "first_frame": str(outside)}),
                 exp.experiment_id, video_path=video, base=work)
    consolidate(root, work / "vlmt.duckdb")
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        row = con.execute("SELECT video_path, gif_path FROM results").fetchone()
        first = con.execute("SELECT first_frame FROM items").fetchone()[0]
    assert row == ("items/x/score-1/video.mp4",) * 2
    assert first == str(outside)  # outside the work dir: kept as it is
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(work), str(moved))
    data = load_report_data(moved / "vlmt.duckdb")
    assert data.items[0].outcomes["vanilla"].video == str(moved / "items/x/score-1/video.mp4")
    text = build_report(moved / "vlmt.duckdb").read_text()
    assert "video missing" not in text and text.count("<video ") == 1
    # a moved work dir keeps its experiment: where files lie is not what was computed
    assert ExperimentRecord(name="moving", config={"work": str(moved)}, code_version="t").experiment_id == exp.experiment_id


def test_the_experiment_id_leaves_out_where_files_lie_but_not_what_runs():
    from flows.evaluate import EvaluateConfig, experiment_of

    base = EvaluateConfig(work="/a/runs", mlflow_uri=None)
    assert experiment_of(base).experiment_id == experiment_of(
        base.model_copy(update={"work": "/mnt/b/runs", "mlflow_uri": "http://127.0.0.1:5000"})).experiment_id
    assert experiment_of(base).experiment_id != experiment_of(base.model_copy(update={"per_family": 3})).experiment_id
    # an ablation's record holds its base config one level down: its location is left out there too
    grid = {"lam": [0, 1]}
    a = ExperimentRecord(name="abl", kind="ablate", config={"base": base.model_dump(mode="json"), "grid": grid})
    b = ExperimentRecord(name="abl", kind="ablate",
                         config={"base": base.model_copy(update={"work": "/x"}).model_dump(mode="json"), "grid": grid})
    assert a.experiment_id == b.experiment_id


def test_an_unreadable_entry_is_given_its_instances_id_from_the_layout(tmp_path):
    bench = make_synth_benchmark(tmp_path / "bench", per_family=1, seed=2, purpose=Purpose.TEST,
                                 families=["maze_navigate", "gravity_fall"])
    victim = bench.instances[0]
    Path(victim.first_frame).write_bytes(b"not a png")
    opened = open_benchmark(tmp_path / "bench", skip_invalid=True)
    assert [b.instance_id for b in opened.invalid] == [victim.id]
    assert {i.id for i in opened.instances} == {i.id for i in bench.instances} - {victim.id}
    root = opened.root
    # not one instance: no id (its failure keeps where it failed)
    assert invalid_instance_id("vbvr", root, str(root / "In-Domain_2" / "task")) is None
    assert invalid_instance_id("vbvr", root, f"{root / 'VBVR-Bench.json'}:[3]") is None
    assert invalid_instance_id("vbvr", root, "/elsewhere/In-Domain_2/t/00000/meta.json") is None
    assert invalid_instance_id("vbvr", root, f"{root}/In-Domain_2/t/00001/meta.json:family") == "In-Domain_2/t/00001"
    assert invalid_instance_id("ruler", root, "r.jsonl:line 4 (physics_task/12):prompt") == "physics_task/12"
    assert invalid_instance_id("ruler", root, "r.jsonl:line 4:task_name") is None
    assert InvalidItem(where="w", error="e").instance_id is None


def test_pruning_drops_rows_a_finished_run_did_not_write_again_and_files_named_the_old_way(tmp_path):
    root = tmp_path / "results"
    eid = "exp-1"
    for ident in ("S/t/0", "S/t/1"):
        for method in ("vanilla", "still"):
            write_result(root, _result(ident, method), eid, variant="v")
    write_result(root, _result("S/t/0", "vanilla"), eid, variant="other")  # another variant: never touched here
    # a failure keyed by the file that failed to load (as earlier versions wrote it), now readable as S/t/1
    stale = _result("/bench/S/t/1/first_frame.png", "vanilla", error="InputError: bad png", error_stage="load")
    write_result(root, stale, eid, variant="v")
    # rows of S/t/0 under the name an earlier version gave them (slug only): the same key twice
    legacy = f"v__{slug('S/t/0')}__vanilla.parquet"
    for table in ("results", "costs"):
        shutil.copyfile(root / table / eid / result_file_name("v", "S/t/0", "vanilla"), root / table / eid / legacy)
    shutil.copyfile(root / "items" / eid / f"{file_name('S/t/0')}.parquet", root / "items" / eid / f"{slug('S/t/0')}.parquet")
    removed = prune_results(root, eid, "v", {(i, m) for i in ("S/t/0", "S/t/1") for m in ("vanilla", "still")})
    assert sorted(p.name for p in removed) == sorted(
        [result_file_name("v", stale.instance_id, "vanilla")] * 3 + [legacy] * 2 + [f"{file_name(stale.instance_id)}.parquet",
                                                                                  f"{slug('S/t/0')}.parquet"])
    counts = consolidate(root, tmp_path / "db.duckdb")
    assert counts["results"] == 5 and counts["items"] == 2
    rows = pl.read_parquet(root / "results" / eid / result_file_name("other", "S/t/0", "vanilla"))
    assert rows["variant"].to_list() == ["other"]


def test_a_stage_record_follows_its_moved_work_dir():
    record = {"npz": "/old/w/items/X/video-abc/video.npz", "seed": 1, "prompt": "put the items/boxes away",
              "adapter": "/old/w/shared/shared-k/adapter", "cost": {"seconds": {}}}
    moved = relocated(record, Path("/new/place/w/items/X/video-abc"))
    assert moved == {**record, "npz": "/new/place/w/items/X/video-abc/video.npz",
                     "adapter": "/new/place/w/shared/shared-k/adapter"}
    # a selection names its candidate's folder, not its own
    selection = {"by": "judge", "selected": 0, "video": {"npz": "runs/items/X/video-abc/video.npz"}}
    assert relocated(selection, Path("/abs/runs/items/X/select-def"))["video"]["npz"] == "/abs/runs/items/X/video-abc/video.npz"
    assert relocated(selection, Path("runs/items/X/select-def")) is selection  # where it was written: as it is
    shared = {"adapter": "/o/shared/shared-k/adapter", "optim_json": "/o/shared/shared-k/optim.json"}
    assert relocated(shared, Path("/n/shared/shared-k")) == {"adapter": "/n/shared/shared-k/adapter",
                                                              "optim_json": "/n/shared/shared-k/optim.json"}


def test_stage_folders_finished_under_an_items_older_folder_name_are_reused_there(tmp_path):
    from core.bench.record import TaskInstance
    from core.method.methods import MethodConfig
    from core.method.optimise import OptimConfig
    from flows.evaluate import EvaluateConfig, _ItemStages
    from tasks.stages import RECORD

    cfg = EvaluateConfig(work=str(tmp_path), method=MethodConfig(optim=OptimConfig(lr=1e-3)))
    inst = TaskInstance(id="In-Domain_2/t/00000", benchmark="vbvr", task_family="t", task_id="t", index="00000", prompt="p")
    stages_of = _ItemStages(inst, cfg, {"reasoner": "r", "teacher": "t"}, inline=True)
    new = Path(stages_of.target("video/0"))
    assert new.parent == tmp_path / "items" / file_name(inst.id) != tmp_path / "items" / slug(inst.id)
    legacy = tmp_path / "items" / slug(inst.id) / new.name
    legacy.mkdir(parents=True)
    (legacy / RECORD).write_text("{}")
    assert Path(stages_of.target("video/0")) == legacy  # finished there: not computed again
    assert Path(stages_of.target("video/still")).parent == new.parent  # the others go to the new name
    new.mkdir(parents=True)
    (new / RECORD).write_text("{}")
    assert Path(stages_of.target("video/0")) == new
