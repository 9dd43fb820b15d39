"""Tests for RULER-Bench: reading records (core.bench.ruler), judge-reply parsing (ruler_replies), scores (ruler_scores)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import polars as pl
import pydantic
import pytest

from core.bench.layout import ruler_output_path
from core.bench.record import RULER_DIMENSIONS
from core.bench.ruler import CATEGORY_TASKS, normalise_category, read_ruler
from core.bench.ruler_replies import judgement_from_reply, parse_judge_labels
from core.bench.ruler_scores import (
    LABEL_SCORES,
    InvalidJudgeReply,
    JudgedQuestion,
    RulerJudgement,
    aggregate,
    category_dimensions,
)
from core.bench.source import open_benchmark
from core.errors import InputError, VlmtError

IF, VC, VF, RC = RULER_DIMENSIONS


def _records() -> list[dict[str, Any]]:
    """Four records: an I2V science task, a T2V game task, and two vision-rule tasks."""
    return [
        {
            "prompt": "A ball is dropped from a table.",
            "implicit_explanation": "Gravity accelerates the ball downwards.",
            "index": 0,
            "checklist": json.dumps([{IF: "Is the ball dropped?"}, {RC: "Does it fall down?"}, {VF: "Is it sharp?"}]),
            "task_name": "physics",
            "category": "science",
            "input_image_path": "imgs/physics_0.png",
            "initial_scenario": "A ball on a table.",
            "gt_image_path": "imgs/physics_0_gt.png",
            "input_video_path": None,
        },
        {
            "prompt": "Solve the maze.",
            "implicit_explanation": "Walls block movement.",
            "index": 3,
            "checklist": json.dumps([{IF: "Does the agent move?"}, {RC: "Does it avoid walls?"}]),
            "task_name": "maze",
            "category": "Game",
            "input_image_path": None,
            "initial_scenario": "A maze.",
            "gt_image_path": "",
            "input_video_path": None,
        },
        {
            "prompt": "Continue the colour pattern.",
            "implicit_explanation": "Colours alternate.",
            "index": 1,
            "checklist": json.dumps([{VC: "Is the scene stable?"}, {RC: "Is the next colour right?"}]),
            "task_name": "color",
            "category": "vision_rule",
            "input_image_path": "imgs/color_1.png",
            "initial_scenario": None,
            "gt_image_path": None,
            "input_video_path": "videos/color_1.mp4",
        },
        {
            "prompt": "Count the apples.",
            "implicit_explanation": "",
            "index": 2,
            "checklist": json.dumps([{"visual fidelity": "Are the apples clear?"}]),
            "task_name": "count",
            "category": "Vision Rule",
            "input_image_path": "imgs/count_2.png",
            "initial_scenario": "Apples.",
            "gt_image_path": None,
            "input_video_path": None,
        },
    ]


def _make_images(root: Path) -> None:
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for name in ("physics_0.png", "physics_0_gt.png", "color_1.png", "count_2.png"):
        (root / "imgs" / name).write_bytes(b"\x89PNG fake " + name.encode())


def _write(path: Path, records: list[dict[str, Any]], fmt: str) -> Path:
    if fmt == "json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif fmt == "json_data":
        path.write_text(json.dumps({"data": records}), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    elif fmt == "parquet":
        pl.DataFrame(records).write_parquet(path)
    else:
        raise AssertionError(fmt)
    return path


_SUFFIX = {"json": ".json", "json_data": ".json", "jsonl": ".jsonl", "parquet": ".parquet"}


# --------------------------------------------------------------------------- reading


def test_same_records_from_json_jsonl_parquet(tmp_path: Path) -> None:
    _make_images(tmp_path)
    benches = {fmt: read_ruler(_write(tmp_path / f"r_{fmt}{sfx}", _records(), fmt)) for fmt, sfx in _SUFFIX.items()}
    reference = benches["json"]
    assert len(reference.instances) == 4 and not reference.invalid
    for fmt, bench in benches.items():
        assert bench.kind == "ruler"
        assert bench.instances == reference.instances, fmt

    phys, maze, color, count = reference.instances
    assert phys.id == "physics/0" and phys.task_family == phys.task_id == "physics" and phys.index == "0"
    assert phys.benchmark == "ruler" and phys.split is None and phys.category == "science"
    assert phys.first_frame == (tmp_path / "imgs/physics_0.png").resolve()
    assert phys.final_frame == (tmp_path / "imgs/physics_0_gt.png").resolve()
    assert [(c.dimension, c.question) for c in phys.checklist] == [
        (IF, "Is the ball dropped?"),
        (RC, "Does it fall down?"),
        (VF, "Is it sharp?"),
    ]
    assert phys.metadata["implicit_explanation"] == "Gravity accelerates the ball downwards."
    assert phys.metadata["initial_scenario"] == "A ball on a table."
    assert phys.metadata["record_position"] == 0
    # T2V: null and empty image paths both mean "no image".
    assert maze.first_frame is None and maze.final_frame is None and maze.category == "game"
    # "vision_rule" and "Vision Rule" normalise to the same category.
    assert color.category == count.category == "vision rule"
    assert color.metadata["input_video_path"] == "videos/color_1.mp4"
    assert color.metadata["category_raw"] == "vision_rule"
    # Dimension names are matched ignoring case and stored canonically.
    assert count.checklist[0].dimension == VF


def test_image_paths_resolve_against_image_root(tmp_path: Path) -> None:
    images = tmp_path / "images_elsewhere"
    _make_images(images)
    (tmp_path / "data").mkdir()
    path = _write(tmp_path / "data" / "ruler.jsonl", _records(), "jsonl")
    # Default root is the record file's directory, where the images are not.
    with pytest.raises(InputError, match="input_image_path"):
        read_ruler(path)
    bench = read_ruler(path, image_root=images)
    assert bench.instances[0].first_frame == (images / "imgs/physics_0.png").resolve()
    # An absolute path is used as it is when it lies in the image root, refused when it does not.
    records = _records()
    records[0]["input_image_path"] = str(images / "imgs/physics_0.png")
    records[0]["gt_image_path"] = None
    records = records[:2]
    bench = read_ruler(_write(tmp_path / "data" / "abs.json", records, "json"), image_root=images)
    assert bench.instances[0].first_frame == (images / "imgs/physics_0.png").resolve()
    with pytest.raises(InputError, match="outside the benchmark directory"):
        read_ruler(tmp_path / "data" / "abs.json", image_root=tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("input_image_path", "ABS_SECRET", "outside the benchmark directory"),  # absolute, out of the directory
        ("gt_image_path", "../secret.png", "outside the benchmark directory"),  # climbs out with ..
        ("input_image_path", "imgs/../../secret.png", "outside the benchmark directory"),
        ("input_image_path", "notes.txt", "not an image file"),  # an existing file, not an image
        ("gt_image_path", "disguised.png", "not an image file"),  # an image's name, not an image's content
    ],
)
def test_image_paths_out_of_the_benchmark_or_not_images_are_refused(
    tmp_path: Path, field: str, value: str, problem: str
) -> None:
    """The report copies the images a record names: a record must not name any file it likes."""
    bench_dir = tmp_path / "bench"
    _make_images(bench_dir)
    (tmp_path / "secret.png").write_bytes(b"\x89PNG a real image, but not the benchmark's")
    (bench_dir / "notes.txt").write_text("private notes")
    (bench_dir / "disguised.png").write_text("root:x:0:0:root:/root:/bin/bash")
    records = _records()
    records[0][field] = str(tmp_path / "secret.png") if value == "ABS_SECRET" else value
    path = _write(bench_dir / "ruler.json", records, "json")
    with pytest.raises(InputError, match=problem) as info:
        read_ruler(path)
    assert info.value.where == f"{path}[0] (physics/0):{field}"
    # ``..`` that stays inside, and an absolute path inside, are fine
    records[0][field] = "imgs/../imgs/physics_0.png" if field == "input_image_path" else str(bench_dir / "imgs/physics_0.png")
    instance = read_ruler(_write(bench_dir / "ok.json", records, "json")).instances[0]
    assert (instance.first_frame if field == "input_image_path" else instance.final_frame) == bench_dir / "imgs/physics_0.png"


def test_images_reached_through_links_inside_the_benchmark_still_load(tmp_path: Path) -> None:
    """A Hugging Face snapshot's files are links to suffix-less blobs elsewhere: containment is judged as written."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "3f2a9c").write_bytes(b"\x89PNG blob")
    bench_dir = tmp_path / "snapshot"
    (bench_dir / "imgs").mkdir(parents=True)
    (bench_dir / "imgs" / "physics_0.png").symlink_to(blobs / "3f2a9c")
    records = _records()[:2]
    records[0]["gt_image_path"] = None
    instance = read_ruler(_write(bench_dir / "ruler.json", records, "json")).instances[0]
    assert instance.first_frame == bench_dir / "imgs" / "physics_0.png"


def test_open_benchmark_and_output_path(tmp_path: Path) -> None:
    _make_images(tmp_path)
    path = _write(tmp_path / "ruler.json", _records(), "json")
    bench = open_benchmark(path)
    assert bench.kind == "ruler" and len(bench.instances) == 4
    inst = bench.instances[1]
    assert ruler_output_path(tmp_path / "out", inst, "wan2.2") == tmp_path / "out" / "wan2.2" / "maze" / "3.mp4"
    assert bench.output_path(tmp_path / "out", inst, "wan2.2") == tmp_path / "out" / "wan2.2" / "maze" / "3.mp4"
    with pytest.raises(ValueError):
        ruler_output_path(tmp_path, inst, "a/b")


def _drop(field: str):
    def mutate(rec: dict[str, Any]) -> None:
        del rec[field]

    return mutate


def _set(field: str, value: Any):
    def mutate(rec: dict[str, Any]) -> None:
        rec[field] = value

    return mutate


BAD_CASES = {
    "missing prompt": (_drop("prompt"), "prompt"),
    "missing checklist": (_drop("checklist"), "checklist"),
    "missing task_name": (_drop("task_name"), "task_name"),
    "null index": (_set("index", None), "index"),
    "index not int": (_set("index", "three"), "index"),
    "checklist not JSON": (_set("checklist", "[{'Visual Fidelity': oops"), "checklist"),
    "checklist not a list": (_set("checklist", json.dumps({VF: "q"})), "checklist"),
    "entry with two keys": (_set("checklist", json.dumps([{VF: "q", RC: "r"}])), "checklist"),
    "entry not an object": (_set("checklist", json.dumps(["Is it sharp?"])), "checklist"),
    "unknown dimension": (_set("checklist", json.dumps([{VF: "q"}, {"Physics": "r"}])), "checklist"),
    "empty checklist": (_set("checklist", "[]"), "checklist"),
    "vision rule with IF": (_set("checklist", json.dumps([{IF: "q"}, {VC: "r"}])), "checklist"),
    "missing input image": (_set("input_image_path", "imgs/nope.png"), "input_image_path"),
    "missing gt image": (_set("gt_image_path", "imgs/nope_gt.png"), "gt_image_path"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_record_names_record_and_field(tmp_path: Path, case: str) -> None:
    _make_images(tmp_path)
    mutate, field = BAD_CASES[case]
    records = _records()
    mutate(records[2])  # the third record is a vision-rule one
    path = _write(tmp_path / "bad.json", records, "json")
    with pytest.raises(InputError) as info:
        read_ruler(path)
    message = str(info.value)
    assert field in info.value.where, message
    assert "bad.json[2]" in info.value.where, message  # file and position of the record
    if case == "unknown dimension":
        assert "'Physics'" in message
        assert all(d in message for d in RULER_DIMENSIONS)


def test_duplicate_task_and_index(tmp_path: Path) -> None:
    _make_images(tmp_path)
    records = _records()
    records.append(copy.deepcopy(records[1]))
    records[-1]["prompt"] = "Another maze."
    path = _write(tmp_path / "dup.jsonl", records, "jsonl")
    with pytest.raises(InputError, match=r"duplicate") as info:
        read_ruler(path)
    assert info.value.where.endswith("(maze/3):index") and "line 5" in info.value.where


def test_skip_invalid_collects_problems(tmp_path: Path) -> None:
    _make_images(tmp_path)
    records = _records()
    records[0]["checklist"] = "not json"
    records[3]["checklist"] = json.dumps([{"Style": "q"}])
    records.append(copy.deepcopy(records[1]))  # duplicate of maze/3
    path = _write(tmp_path / "mixed.jsonl", records, "jsonl")
    with path.open("a", encoding="utf-8") as f:
        f.write("{broken json\n")
    bench = read_ruler(path, skip_invalid=True)
    assert [i.id for i in bench.instances] == ["maze/3", "color/1"]
    assert len(bench.invalid) == 4
    wheres = [item.where for item in bench.invalid]
    assert "physics/0" in wheres[0] and wheres[0].endswith("checklist")
    assert "count/2" in wheres[1] and "checklist[0]" in wheres[1]
    assert wheres[2].endswith("(maze/3):index")
    assert wheres[3].endswith("line 6")
    assert all(item.error for item in bench.invalid)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_ruler(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"records": []}')
    with pytest.raises(InputError, match="data"):
        read_ruler(bad, skip_invalid=True)
    other = tmp_path / "r.csv"
    other.write_text("a,b\n")
    with pytest.raises(InputError, match="json"):
        read_ruler(other)


def test_category_mapping_constant() -> None:
    assert set(CATEGORY_TASKS) == {"science", "game", "semantic", "hypothetical", "humanity", "vision rule"}
    assert sum(len(t) for t in CATEGORY_TASKS.values()) == 7 + 10 + 3 + 2 + 8 + 10
    assert normalise_category(" Vision_Rule ") == normalise_category("vision-rule") == "vision rule"


def test_unknown_category_is_kept_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _make_images(tmp_path)
    records = _records()[1:2]
    records[0]["category"] = "Board_Games"
    with caplog.at_level(logging.WARNING, logger="core.bench.ruler"):
        bench = read_ruler(_write(tmp_path / "r.json", records, "json"))
    assert bench.instances[0].category == "board games"
    assert "unknown category" in caplog.text


# --------------------------------------------------------------------------- judge replies


@pytest.mark.parametrize(
    "reply",
    [
        "Good\nMedium\nPoor",
        "good\n\nMEDIUM\npoor\n",
        "1. Good\n2. Medium\n3. Poor",
        "1) Good\n2) Medium\n3) Poor.",
        "Q1: Good\nQ2: Medium\nQ3: Poor",
        "- **Good**\n- Medium\n- Poor",
        '["Good", "Medium", "Poor"]',
        '["good","medium","poor"]',
        '```json\n["Good", "Medium", "Poor"]\n```',
        '{"labels": ["Good", "Medium", "Poor"]}',
        "Good, Medium, Poor",
    ],
)
def test_parse_judge_labels_accepts_common_shapes(reply: str) -> None:
    assert parse_judge_labels(reply, 3) == ["Good", "Medium", "Poor"]


@pytest.mark.parametrize(
    "reply, n, problem",
    [
        ("Good\nMedium", 3, "got 2 label"),
        ("Good\nMedium\nPoor\nGood", 3, "got 4 label"),
        ('["Good", "Medium"]', 3, "got 2 label"),
        ("Good\nExcellent\nPoor", 3, "'Excellent'"),
        ('["Good", 2, "Poor"]', 3, "2"),
        ("Here are my labels:\nGood\nMedium\nPoor", 3, "not a known label"),
        ("2. Good\n1. Medium\n3. Poor", 3, "numbering"),
        ("", 1, "empty"),
    ],
)
def test_parse_judge_labels_rejects(reply: str, n: int, problem: str) -> None:
    with pytest.raises(InvalidJudgeReply) as info:
        parse_judge_labels(reply, n)
    message = str(info.value)
    assert problem in message
    assert f"expected exactly {n} label" in message and "Good/Medium/Poor" in message
    assert isinstance(info.value, VlmtError)


def test_judgement_from_reply(tmp_path: Path) -> None:
    _make_images(tmp_path)
    inst = read_ruler(_write(tmp_path / "r.json", _records(), "json")).instances[0]
    j = judgement_from_reply(inst, "1. Good\n2. Poor\n3. Medium")
    assert j.instance_id == "physics/0" and j.category == "science" and j.task_name == "physics"
    assert [(q.dimension, q.label) for q in j.labels] == [(IF, "Good"), (RC, "Poor"), (VF, "Medium")]
    with pytest.raises(InvalidJudgeReply):
        judgement_from_reply(inst, "Good\nPoor")


# --------------------------------------------------------------------------- aggregation


def _judgement(instance_id: str, category: str, labels: list[tuple[str, str]]) -> RulerJudgement:
    return RulerJudgement(
        instance_id=instance_id,
        task_name=instance_id.split("/")[0],
        category=category,
        labels=[JudgedQuestion(dimension=d, question=f"q{i}", label=lab) for i, (d, lab) in enumerate(labels)],
    )


def test_aggregate_matches_hand_computation() -> None:
    # Good = 2, Medium = 1, Poor = 0.
    #
    # science / physics/0: IF Good, Medium -> 1.5 ; VC Good -> 2 ; VF Poor, Poor -> 0 ;
    #                      RC Medium, Good, Good -> 5/3.  instance mean = (3/2+2+0+5/3)/4 = 31/24
    # science / chemistry/1: IF Poor -> 0 ; VC Medium, Medium -> 1 ; VF Good -> 2 ;
    #                      RC Good, Poor -> 1.            instance mean = (0+1+2+1)/4 = 1
    # science per dimension (x50): IF (1.5+0)/2*50 = 37.5 ; VC (2+1)/2*50 = 75 ;
    #                      VF (0+2)/2*50 = 50 ; RC (5/3+1)/2*50 = 200/3 (66.67)
    #   (pooling RC questions instead would give 7/5*50 = 70: the per-instance mean matters)
    # science avg = (31/24 + 1)/2*50 = 55/48*50 = 2750/48 (57.29)
    #
    # vision rule / color/0: VC Good, Good -> 2 ; VF Medium -> 1 ; RC Poor, Medium -> 0.5.
    #                      instance mean = 3.5/3 = 7/6
    # vision rule / count/1: VC Medium -> 1 ; VF Good, Poor -> 1 ; RC Good -> 2. mean = 4/3
    # vision rule per dimension: VC (2+1)/2*50 = 75 ; VF (1+1)/2*50 = 50 ; RC (0.5+2)/2*50 = 62.5
    # vision rule avg = (7/6 + 4/3)/2*50 = 15/12*50 = 62.5
    #
    # overall per dimension: IF 37.5 (science only; vision rule has none) ; VC (75+75)/2 = 75 ;
    #                      VF (50+50)/2 = 50 ; RC (200/3 + 62.5)/2 = 775/12 (64.58)
    # overall average = (37.5 + 75 + 50 + 775/12)/4 = (2725/12)/4 = 2725/48 (56.77)
    judgements = [
        _judgement("physics/0", "science", [(IF, "Good"), (IF, "Medium"), (VC, "Good"), (VF, "Poor"), (VF, "Poor"), (RC, "Medium"), (RC, "Good"), (RC, "Good")]),
        _judgement("color/0", "vision_rule", [(VC, "Good"), (VC, "Good"), (VF, "Medium"), (RC, "Poor"), (RC, "Medium")]),
        _judgement("chemistry/1", "Science", [(IF, "Poor"), (VC, "Medium"), (VC, "Medium"), (VF, "Good"), (RC, "Good"), (RC, "Poor")]),
        _judgement("count/1", "vision rule", [(VC, "Medium"), (VF, "Good"), (VF, "Poor"), (RC, "Good")]),
    ]
    report = aggregate(judgements)
    assert report.per_category == {
        "science": {IF: 37.5, VC: 75.0, VF: 50.0, RC: 200 / 3},
        "vision rule": {VC: 75.0, VF: 50.0, RC: 62.5},
    }
    assert report.category_avg == {"science": 2750 / 48, "vision rule": 62.5}
    assert report.overall_per_dimension == {IF: 37.5, VC: 75.0, VF: 50.0, RC: 775 / 12}
    assert report.overall_average == 2725 / 48
    assert report.n_instances == {"science": 2, "vision rule": 2}
    assert report.category_avg["science"] == pytest.approx(57.2916666667)
    assert report.overall_average == pytest.approx(56.7708333333)
    # Order of judgements does not matter.
    assert aggregate(reversed(judgements)) == report


def test_a_dimension_missing_from_a_checklist_scores_0_and_is_counted() -> None:
    # The official eval/cal_acc.py: every instance is scored on all its category's dimensions; one
    # its checklist lacks is 0 for it, in the dimension mean, the instance average and the overall.
    # Good = 2, Medium = 1, Poor = 0.
    #
    # science / physics/0: IF Good -> 2 ; VC missing -> 0 ; VF missing -> 0 ; RC Poor -> 0.  mean = 2/4 = 0.5
    # science / chemistry/1: IF Medium -> 1 ; VC Good -> 2 ; VF Good -> 2 ; RC Good -> 2.  mean = 7/4
    # science per dimension (x50): IF (2+1)/2*50 = 75 ; VC (0+2)/2*50 = 50 ; VF (0+2)/2*50 = 50 ;
    #                      RC (0+2)/2*50 = 50
    # science avg = (1/2 + 7/4)/2*50 = 56.25
    #
    # vision rule / color/2: VC Medium -> 1 ; VF missing -> 0 ; RC missing -> 0 (no IF: not one of its
    #                      dimensions, so not missing).  mean = 1/3
    # vision rule per dimension: VC 50 ; VF 0 ; RC 0.  avg = 1/3*50 = 50/3 (16.67)
    #
    # overall per dimension: IF 75 (science only) ; VC (50+50)/2 = 50 ; VF (50+0)/2 = 25 ; RC (50+0)/2 = 25
    # overall average = (75 + 50 + 25 + 25)/4 = 43.75
    # (Leaving the missing dimensions out instead would give VC 75, VF 100, RC 50, overall 75.)
    judgements = [
        _judgement("physics/0", "science", [(IF, "Good"), (RC, "Poor")]),
        _judgement("chemistry/1", "science", [(IF, "Medium"), (VC, "Good"), (VF, "Good"), (RC, "Good")]),
        _judgement("color/2", "vision rule", [(VC, "Medium")]),
    ]
    report = aggregate(judgements)
    assert report.per_category == {
        "science": {IF: 75.0, VC: 50.0, VF: 50.0, RC: 50.0},
        "vision rule": {VC: 50.0, VF: 0.0, RC: 0.0},
    }
    assert report.category_avg == {"science": 56.25, "vision rule": 50 / 3}
    assert report.overall_per_dimension == {IF: 75.0, VC: 50.0, VF: 25.0, RC: 25.0}
    assert report.overall_average == 43.75
    assert report.n_instances == {"science": 2, "vision rule": 1}
    assert report.n_missing == {"science": {VC: 1, VF: 1}, "vision rule": {VF: 1, RC: 1}}
    assert aggregate(reversed(judgements)) == report


def test_category_dimensions_leave_instruction_following_out_of_vision_rule_only() -> None:
    assert category_dimensions("vision rule") == (VC, VF, RC)
    assert all(category_dimensions(c) == RULER_DIMENSIONS for c in CATEGORY_TASKS if c != "vision rule")
    assert category_dimensions("a later category") == RULER_DIMENSIONS
    # a run that judged only vision rule has no Instruction Following at all: the overall is over the other three
    report = aggregate([_judgement("color/0", "vision rule", [(VC, "Good"), (VF, "Good"), (RC, "Medium")])])
    assert report.overall_per_dimension == {VC: 100.0, VF: 100.0, RC: 50.0} and report.overall_average == 250 / 3
    assert report.n_missing == {}


def test_aggregate_rejects_invalid_input() -> None:
    with pytest.raises(pydantic.ValidationError):
        _judgement("physics/0", "science", [(IF, "Excellent")])
    with pytest.raises(pydantic.ValidationError, match="vision rule"):
        _judgement("color/0", "Vision Rule", [(IF, "Good")])
    # A judgement that bypassed validation still cannot smuggle in an unknown label.
    bad = RulerJudgement.model_construct(
        instance_id="physics/0",
        task_name="physics",
        category="science",
        labels=[JudgedQuestion.model_construct(dimension=IF, question="q", label="Excellent")],
    )
    with pytest.raises(InvalidJudgeReply, match="Excellent"):
        aggregate([bad])
    good = _judgement("physics/0", "science", [(IF, "Good")])
    with pytest.raises(ValueError, match="twice"):
        aggregate([good, good])
    with pytest.raises(ValueError, match="no judgements"):
        aggregate([])
    assert LABEL_SCORES == {"Good": 2, "Medium": 1, "Poor": 0}
