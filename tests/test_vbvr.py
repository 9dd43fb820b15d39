"""Tests for core.bench.vbvr (reading/writing the official VBVR-Bench layout) and
core.bench.vbvr_official (scoring with the official toolkit).

Fixtures are generated into tmp dirs (small PNGs via PIL, one short mp4 via
core.media.write_video), so no binaries are committed.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.bench.layout import SPLIT_DIR_PREFIX, vbvr_output_path
from core.bench.record import Faculty, Split
from core.bench.source import open_benchmark
from core.bench.vbvr import (
    INDEX_NAME,
    read_vbvr,
    split_dir_name,
    split_from_dir,
    write_index,
)
from core.bench.vbvr_official import score_with_official_toolkit
from core.errors import InputError, MissingDependencyError
from core.media import write_video

W, H = 16, 12
ID_TASK = "G-18_grid_shortest_path_data-generator"
OOD_TASK = "O-9_shape_scaling_data-generator"
LAYOUT = [
    ("In-Domain_50", ID_TASK, "00000"),
    ("In-Domain_50", ID_TASK, "00001"),
    ("Out-of-Domain_50", OOD_TASK, "00000"),
    ("Out-of-Domain_50", OOD_TASK, "00001"),
]
# The last official instance has neither final frame nor ground truth (both optional there).
BARE = ("Out-of-Domain_50", OOD_TASK, "00001")


def _png(path: Path, value: int, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _prompt(rel: tuple[str, str, str]) -> str:
    return f"Solve {rel[1]} instance {rel[2]}."


@pytest.fixture(scope="session")
def gt_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real, tiny mp4; every instance gets a copy (one ffmpeg call for the whole file)."""
    path = tmp_path_factory.mktemp("video") / "gt.mp4"
    return write_video(path, np.zeros((3, H, W, 3), np.uint8), fps=4)


@pytest.fixture(scope="session")
def official_template(tmp_path_factory: pytest.TempPathFactory, gt_video: Path) -> Path:
    """A hand-made official-layout benchmark with a VBVR-Bench.json written by hand."""
    root = tmp_path_factory.mktemp("official")
    entries = []
    for n, rel in enumerate(LAYOUT):
        d = root.joinpath(*rel)
        _png(d / "first_frame.png", 10 * n)
        (d / "prompt.txt").write_text(_prompt(rel) + "\n")
        entry = {
            "id": n,
            "prompt": _prompt(rel),
            "first_image": base64.b64encode((d / "first_frame.png").read_bytes()).decode(),
            "first_frame_path": "/".join(rel) + "/first_frame.png",
            "prompt_path": "/".join(rel) + "/prompt.txt",
        }
        if rel != BARE:
            _png(d / "final_frame.png", 200)
            shutil.copy(gt_video, d / "ground_truth.mp4")
            entry["final_frame_path"] = "/".join(rel) + "/final_frame.png"
            entry["ground_truth_video_path"] = "/".join(rel) + "/ground_truth.mp4"
        entries.append(entry)
    # Some generators leave extra videos beside the instance files; they must be ignored.
    (root.joinpath(*LAYOUT[0]) / "first_video.mp4").write_bytes(b"not read")
    (root.joinpath(*LAYOUT[0]) / "last_video.mp4").write_bytes(b"not read")
    entries[0]["category"] = "Spatiality"
    (root / INDEX_NAME).write_text(json.dumps(entries))
    return root


@pytest.fixture
def official(tmp_path: Path, official_template: Path) -> Path:
    root = tmp_path / "bench"
    shutil.copytree(official_template, root)
    return root


@pytest.fixture
def official_no_index(official: Path) -> Path:
    (official / INDEX_NAME).unlink()
    return official


SYNTH_META = {
    "generator": "vlmt-synth",
    "format_version": 1,
    "family": "maze_navigate",
    "faculty": "Spatiality",
    "split": "ID",
    "purpose": "test",
    "width": W,
    "height": H,
    "n_frames": 3,
    "fps": 4,
    "seed": 7,
}


@pytest.fixture
def synth(tmp_path: Path, gt_video: Path) -> Path:
    """A one-task synth benchmark (two instances) as our generator lays it out."""
    root = tmp_path / "synth"
    for index in ("00000", "00001"):
        d = root / "In-Domain_1" / "maze_navigate" / index
        _png(d / "first_frame.png", 30)
        _png(d / "final_frame.png", 60)
        shutil.copy(gt_video, d / "ground_truth.mp4")
        (d / "prompt.txt").write_text("Move the agent to the goal.")
        (d / "meta.json").write_text(json.dumps(SYNTH_META))
    return root


def _inst_dir(root: Path, n: int) -> Path:
    return root.joinpath(*LAYOUT[n])


# --------------------------------------------------------------------------- split names


def test_split_dir_names() -> None:
    assert SPLIT_DIR_PREFIX == {Split.ID: "In-Domain", Split.OOD: "Out-of-Domain"}
    assert split_dir_name(Split.ID, 50) == "In-Domain_50"
    assert split_dir_name(Split.OOD, 7) == "Out-of-Domain_7"
    assert split_from_dir("In-Domain_50") == Split.ID
    assert split_from_dir("Out-of-Domain_3") == Split.OOD
    with pytest.raises(InputError, match="Hidden_40"):
        split_from_dir("Hidden_40")


# --------------------------------------------------------------------------- reading


def _check_official(bench, root: Path) -> None:
    assert bench.kind == "vbvr"
    assert bench.invalid == []
    assert [i.id for i in bench.instances] == ["/".join(rel) for rel in LAYOUT]
    for inst, rel in zip(bench.instances, LAYOUT):
        d = root.resolve().joinpath(*rel)
        assert inst.benchmark == "vbvr"
        assert inst.split == (Split.ID if rel[0].startswith("In-") else Split.OOD)
        assert inst.task_id == inst.task_family == rel[1]
        assert inst.index == rel[2]
        assert inst.prompt == _prompt(rel)  # stripped of the trailing newline
        assert inst.first_frame == d / "first_frame.png" and inst.first_frame.is_absolute()
        if rel == BARE:
            assert inst.final_frame is None and inst.ground_truth is None
        else:
            assert inst.final_frame == d / "final_frame.png"
            assert inst.ground_truth == d / "ground_truth.mp4"


def test_read_official_with_index(official: Path) -> None:
    bench = read_vbvr(official)
    _check_official(bench, official)
    assert bench.root == official.resolve()
    # The index's category sets the faculty of official instances; others stay unknown.
    assert bench.instances[0].faculty == Faculty.SPATIALITY
    assert all(i.faculty is None for i in bench.instances[1:])
    assert bench.select(split=Split.OOD)[0].id == "Out-of-Domain_50/" + OOD_TASK + "/00000"


def test_read_official_without_index(official_no_index: Path) -> None:
    bench = read_vbvr(official_no_index)
    _check_official(bench, official_no_index)
    assert all(i.faculty is None for i in bench.instances)
    # open_benchmark dispatches directories here.
    assert [i.id for i in open_benchmark(official_no_index).instances] == [i.id for i in bench.instances]


def test_read_synth(synth: Path) -> None:
    bench = read_vbvr(synth)
    assert bench.kind == "synth"
    assert len(bench.instances) == 2
    inst = bench.instances[0]
    assert inst.id == "In-Domain_1/maze_navigate/00000"
    assert inst.benchmark == "synth"
    assert inst.task_family == "maze_navigate"
    assert inst.faculty == Faculty.SPATIALITY
    assert inst.split == Split.ID
    assert inst.metadata == SYNTH_META
    assert inst.ground_truth is not None and inst.ground_truth.name == "ground_truth.mp4"


def test_mixed_benchmark_is_vbvr(synth: Path, official_template: Path) -> None:
    shutil.copytree(official_template / "Out-of-Domain_50", synth / "Out-of-Domain_50")
    bench = read_vbvr(synth)
    assert bench.kind == "vbvr"
    assert {i.benchmark for i in bench.instances} == {"synth", "vbvr"}


# --------------------------------------------------------------------------- index and outputs


def test_write_index_round_trip(official_no_index: Path) -> None:
    root = official_no_index
    bench = read_vbvr(root)
    path = write_index(root, bench.instances)
    assert path == root.resolve() / INDEX_NAME

    entries = json.loads(path.read_text())
    assert isinstance(entries, list) and len(entries) == 4
    first = entries[0]
    assert first["prompt"] == _prompt(LAYOUT[0])
    assert first["first_frame_path"] == "/".join(LAYOUT[0]) + "/first_frame.png"
    assert first["prompt_path"] == "/".join(LAYOUT[0]) + "/prompt.txt"
    assert first["ground_truth_video_path"] == "/".join(LAYOUT[0]) + "/ground_truth.mp4"
    assert "ground_truth_video_path" not in entries[3]  # the bare instance has none
    decoded = Image.open(io.BytesIO(base64.b64decode(first["first_image"])))
    assert decoded.format == "PNG"
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(Image.open(bench.instances[0].first_frame).convert("RGB")))

    again = read_vbvr(root)
    assert again.invalid == []
    assert [i.model_dump() for i in again.instances] == [i.model_dump() for i in bench.instances]


def test_write_index_round_trips_faculty(synth: Path) -> None:
    bench = read_vbvr(synth)
    write_index(synth, bench.instances)
    entries = json.loads((synth / INDEX_NAME).read_text())
    assert entries[0]["category"] == "Spatiality"
    assert read_vbvr(synth).instances == bench.instances


def test_output_path(official: Path, tmp_path: Path) -> None:
    bench = read_vbvr(official)
    out = tmp_path / "outputs"
    assert vbvr_output_path(out, bench.instances[0]) == out / "In-Domain_50" / ID_TASK / "00000.mp4"
    assert vbvr_output_path(out, bench.instances[3]) == out / "Out-of-Domain_50" / OOD_TASK / "00001.mp4"
    assert bench.output_path(out, bench.instances[2]) == out / "Out-of-Domain_50" / OOD_TASK / "00000.mp4"


# --------------------------------------------------------------------------- errors


def test_missing_prompt(official: Path) -> None:
    prompt = _inst_dir(official, 1) / "prompt.txt"
    prompt.unlink()
    with pytest.raises(InputError) as err:
        read_vbvr(official)
    assert str(prompt.resolve()) in str(err.value)
    assert "not found" in str(err.value)


def test_empty_prompt(official_no_index: Path) -> None:
    prompt = _inst_dir(official_no_index, 2) / "prompt.txt"
    prompt.write_text("  \n")
    with pytest.raises(InputError, match="prompt is empty") as err:
        read_vbvr(official_no_index)
    assert str(prompt.resolve()) in str(err.value)


def test_unreadable_first_frame(official: Path) -> None:
    frame = _inst_dir(official, 0) / "first_frame.png"
    frame.write_bytes(b"\x00garbage bytes, not a PNG\xff" * 4)
    with pytest.raises(InputError, match="unreadable image") as err:
        read_vbvr(official)
    assert str(frame.resolve()) in str(err.value)


def test_unknown_top_level_directory(official: Path) -> None:
    (official / "Hidden_40").mkdir()
    with pytest.raises(InputError, match="unknown directory") as err:
        read_vbvr(official)
    assert "Hidden_40" in str(err.value)


def test_hidden_entries_and_top_level_files_are_ignored(official: Path) -> None:
    (official / ".cache").mkdir()
    (official / "README.md").write_text("dataset card")
    assert len(read_vbvr(official).instances) == 4


def test_empty_benchmark_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no instances"):
        read_vbvr(tmp_path)


def test_synth_wrong_image_size(synth: Path) -> None:
    frame = synth / "In-Domain_1" / "maze_navigate" / "00001" / "final_frame.png"
    _png(frame, 60, size=(W + 4, H))
    with pytest.raises(InputError) as err:
        read_vbvr(synth)
    message = str(err.value)
    assert str(frame.resolve()) in message
    assert f"{W}x{H}" in message and f"{W + 4}x{H}" in message


def test_synth_malformed_meta(synth: Path) -> None:
    meta = synth / "In-Domain_1" / "maze_navigate" / "00000" / "meta.json"
    meta.write_text('{"generator": "vlmt-synth", ')
    with pytest.raises(InputError, match="meta.json") as err:
        read_vbvr(synth)
    assert str(meta.resolve()) in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("faculty", "Memory"), ("split", "OOD"), ("width", "16"), ("format_version", 2), ("family", None)],
)
def test_synth_bad_meta_field(synth: Path, field: str, value: object) -> None:
    meta_path = synth / "In-Domain_1" / "maze_navigate" / "00000" / "meta.json"
    meta = dict(SYNTH_META)
    if value is None:
        del meta[field]
    else:
        meta[field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError) as err:
        read_vbvr(synth)
    assert f"meta.json:{field}" in str(err.value)


def test_synth_requires_ground_truth(synth: Path) -> None:
    gt = synth / "In-Domain_1" / "maze_navigate" / "00000" / "ground_truth.mp4"
    gt.unlink()
    with pytest.raises(InputError, match="not found") as err:
        read_vbvr(synth)
    assert str(gt.resolve()) in str(err.value)


def test_index_lists_instance_missing_on_disk(official: Path) -> None:
    shutil.rmtree(_inst_dir(official, 1))
    with pytest.raises(InputError, match="missing on disk") as err:
        read_vbvr(official)
    assert "/".join(LAYOUT[1]) in str(err.value)


def test_index_path_must_exist(official: Path) -> None:
    entries = json.loads((official / INDEX_NAME).read_text())
    entries[3]["final_frame_path"] = "/".join(BARE) + "/final_frame.png"  # the bare instance has none
    (official / INDEX_NAME).write_text(json.dumps(entries))
    with pytest.raises(InputError, match="final_frame_path") as err:
        read_vbvr(official)
    assert "not found" in str(err.value)


def test_malformed_index(official: Path) -> None:
    (official / INDEX_NAME).write_text("[{]")
    with pytest.raises(InputError, match=INDEX_NAME):
        read_vbvr(official)
    (official / INDEX_NAME).write_text(json.dumps({"samples": []}))
    with pytest.raises(InputError, match="JSON list"):
        read_vbvr(official)


def test_index_prompt_mismatch_prefers_prompt_txt(official: Path, caplog: pytest.LogCaptureFixture) -> None:
    entries = json.loads((official / INDEX_NAME).read_text())
    entries[2]["prompt"] = "a different, outdated prompt"
    (official / INDEX_NAME).write_text(json.dumps(entries))
    with caplog.at_level(logging.WARNING, logger="core.bench.vbvr"):
        bench = read_vbvr(official)
    assert bench.instances[2].prompt == _prompt(LAYOUT[2])
    assert any("prompt differs" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- skip_invalid


def test_skip_invalid_collects_problems(official: Path) -> None:
    (_inst_dir(official, 0) / "prompt.txt").unlink()
    (_inst_dir(official, 2) / "first_frame.png").write_bytes(b"garbage")
    (official / "stray_dir").mkdir()
    with pytest.raises(InputError):
        read_vbvr(official)

    bench = read_vbvr(official, skip_invalid=True)
    assert [i.id for i in bench.instances] == ["/".join(LAYOUT[1]), "/".join(LAYOUT[3])]
    assert len(bench.invalid) == 3
    wheres = " ".join(item.where for item in bench.invalid)
    assert "stray_dir" in wheres
    assert str((_inst_dir(official, 0) / "prompt.txt").resolve()) in wheres
    assert str((_inst_dir(official, 2) / "first_frame.png").resolve()) in wheres
    assert all(item.error for item in bench.invalid)


# --------------------------------------------------------------------------- official toolkit


def test_score_without_toolkit_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vbvr_bench", None)  # absent, whatever is installed
    with pytest.raises(MissingDependencyError) as err:
        score_with_official_toolkit(tmp_path, tmp_path, tmp_path / "scores")
    message = str(err.value)
    assert "vbvr_bench" in message and "VBVR-EvalKit" in message and "pip install" in message
    assert "synth benchmarks are scored by vlmt" in message
    assert not (tmp_path / "scores").exists()


# VBVR-EvalKit's result, shaped as its VBVRBench.evaluate returns it (see the comment in core/bench/vbvr_official.py):
# no top-level mean_score; failed videos carry `error` and count 0.0 in the means.
DOT_TASK = "O-34_dot_to_dot_task_data-generator"


def _evalkit_result() -> dict:
    detailed = [
        {"score": 0.9, "dimensions": {"task_specific": 0.9}, "video_path": "v/In-Domain_50/G-18/00000.mp4",
         "task_name": ID_TASK, "split": "In_Domain", "video_idx": "00000"},
        {"score": 0.0, "error": "invalid index to scalar variable.", "dimensions": {},
         "video_path": "v/In-Domain_50/O-34/00000.mp4", "task_name": DOT_TASK, "split": "In_Domain", "video_idx": "00000"},
        {"score": 0.6, "dimensions": {"task_specific": 0.6}, "video_path": "v/Out-of-Domain_50/O-9/00000.mp4",
         "task_name": OOD_TASK, "split": "Out_of_Domain", "video_idx": "00000"},
    ]
    return {
        "overall": {"mean_score": 0.5, "num_videos": 3, "In_Domain_score": 0.45, "Out_of_Domain_score": 0.6,
                    "by_category": {"Spatiality": 0.45, "Transformation": 0.6}},
        "In_Domain": {"scores": [0.9, 0.0], "mean_score": 0.45, "num_videos": 2,
                      "by_task": {ID_TASK: {"scores": [0.9], "mean_score": 0.9, "dimensions": {"task_specific": 0.9}},
                                  DOT_TASK: {"scores": [0.0], "mean_score": 0.0, "dimensions": {}}}},
        "Out_of_Domain": {"scores": [0.6], "mean_score": 0.6, "num_videos": 1,
                          "by_task": {OOD_TASK: {"scores": [0.6], "mean_score": 0.6, "dimensions": {}}}},
        "by_task": {},
        "detailed": detailed,
    }


def _fake_toolkit(monkeypatch: pytest.MonkeyPatch, result: dict, calls: list | None = None) -> None:
    """A stand-in `vbvr_bench` module whose VBVRBench returns ``result`` (and records its calls)."""
    import types

    class VBVRBench:
        def __init__(self, gt_base_path: str, output_path: str = "./evaluation_results/", **_: object):
            self.gt, self.out = gt_base_path, output_path

        def evaluate(self, videos_path: str, name: str | None = None, **_: object) -> dict:
            print("Found N videos to evaluate")  # EvalKit prints; the delegation sends it to stderr
            if calls is not None:
                calls.append((self.gt, videos_path, name))
            Path(self.out, f"{name}_eval_results.json").write_text(json.dumps(result))
            return result

    module = types.ModuleType("vbvr_bench")
    module.VBVRBench = VBVRBench  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vbvr_bench", module)


def _fake_opencv(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    import types

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__=version))


def _videos_for(root: Path, videos: Path, skip: int = 0) -> Path:
    """An (undecodable, the fake toolkit does not read it) mp4 per instance of ``root``, but the last ``skip``."""
    insts = sorted(p for p in root.glob("*/*/*") if p.is_dir())
    for inst in insts[: len(insts) - skip]:
        out = videos / inst.parent.parent.name / inst.parent.name / f"{inst.name}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"not decoded by the fake toolkit")
    return videos


def test_read_official_result_reads_evalkit_sections_and_errors() -> None:
    from core.bench.vbvr_official import read_official_result

    raw = _evalkit_result()
    raw["Out_of_Domain"]["by_task"][OOD_TASK]["error"] = "task-level failure"  # not seen from EvalKit, still reported
    res = read_official_result(raw)
    assert list(res.sections) == ["In_Domain", "Out_of_Domain", "overall"]
    assert res.sections["overall"].mean_score == 0.5 and res.sections["overall"].n_videos == 3
    assert res.sections["In_Domain"].mean_score == 0.45 and res.sections["In_Domain"].n_errors == 1
    assert res.sections["Out_of_Domain"].n_errors == 1 and res.sections["overall"].n_errors == 2
    video_error, task_error = res.errors
    assert (video_error.split, video_error.task, video_error.error) == ("In_Domain", DOT_TASK, "invalid index to scalar variable.")
    assert video_error.video.endswith("00000.mp4")
    assert (task_error.task, task_error.video, task_error.error) == (OOD_TASK, None, "task-level failure")
    assert res.by_category == {"Spatiality": 0.45, "Transformation": 0.6}
    assert res.raw == raw  # kept whole, for --details


@pytest.mark.parametrize("raw", [{"mean_score": {}}, {"overall": {}, "In_Domain": {}, "Out_of_Domain": {}}, [1, 2]])
def test_read_official_result_refuses_an_unknown_shape(raw: object) -> None:
    """The old reading printed an empty table for a result it did not understand; now it says so."""
    from core.bench.vbvr_official import read_official_result
    from core.errors import VlmtError

    with pytest.raises(VlmtError, match="VBVR-EvalKit"):
        read_official_result(raw)


def test_toolkit_delegation_returns_scores_errors_and_missing_videos(
    official: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list = []
    _fake_toolkit(monkeypatch, _evalkit_result(), calls)
    _fake_opencv(monkeypatch, "4.10.0")
    videos = _videos_for(official, tmp_path / "videos", skip=1)
    res = score_with_official_toolkit(official, videos, tmp_path / "scores")
    assert calls == [(str(official), str(videos), "model")]
    assert res.sections["overall"].mean_score == 0.5 and len(res.errors) == 1
    assert res.missing == [f"Out-of-Domain_50/{OOD_TASK}/00001"]
    assert res.warnings == []
    assert res.results_file == str(tmp_path / "scores" / "model_eval_results.json")
    out = capsys.readouterr()
    assert "Found N videos" in out.err and "Found N videos" not in out.out  # stdout stays the CLI's


@pytest.mark.parametrize("where", ["benchmark", "videos"])
def test_toolkit_delegation_refuses_split_folders_evalkit_does_not_walk(
    official: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """vlmt reads In-Domain_7, but EvalKit walks only In-Domain_50 / Out-of-Domain_50: zero videos, silently."""
    calls: list = []
    _fake_toolkit(monkeypatch, _evalkit_result(), calls)
    videos = _videos_for(official, tmp_path / "videos")
    root = official if where == "benchmark" else videos
    (root / "In-Domain_50").rename(root / "In-Domain_7")
    with pytest.raises(InputError) as err:
        score_with_official_toolkit(official, videos, tmp_path / "scores")
    assert err.value.where == str(root / "In-Domain_7")
    assert "'In-Domain_7'" in str(err.value) and "'In-Domain_50'" in str(err.value) and "'Out-of-Domain_50'" in str(err.value)
    assert calls == []  # refused before the toolkit ran


def test_toolkit_delegation_refuses_a_videos_directory_without_videos(
    official: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list = []
    _fake_toolkit(monkeypatch, _evalkit_result(), calls)
    (tmp_path / "videos" / "elsewhere").mkdir(parents=True)
    with pytest.raises(InputError, match="no video where VBVR-EvalKit looks"):
        score_with_official_toolkit(official, tmp_path / "videos", tmp_path / "scores")
    assert calls == []


def test_toolkit_delegation_warns_once_under_opencv_5(
    official: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """EvalKit's dot-to-dot evaluator fails on every video under opencv 5.x (0.0 instead of 0.93)."""
    from core.bench import vbvr_official

    vbvr_official._log_once.cache_clear()
    _fake_toolkit(monkeypatch, _evalkit_result())
    _fake_opencv(monkeypatch, "5.0.0")
    videos = _videos_for(official, tmp_path / "videos")
    with caplog.at_level(logging.WARNING, logger="core.bench.vbvr_official"):
        first = score_with_official_toolkit(official, videos, tmp_path / "scores")
        second = score_with_official_toolkit(official, videos, tmp_path / "scores")
    assert len(first.warnings) == 1 and first.warnings == second.warnings
    assert "opencv 5.0.0" in first.warnings[0] and "opencv-python<5" in first.warnings[0]
    assert sum("opencv-python<5" in r.getMessage() for r in caplog.records) == 1
    vbvr_official._log_once.cache_clear()


def test_missing_toolkit_message_pins_opencv_below_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vbvr_bench", None)
    with pytest.raises(MissingDependencyError, match="opencv-python<5"):
        score_with_official_toolkit(tmp_path, tmp_path, tmp_path / "scores")
