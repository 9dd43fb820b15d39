"""The ``vlmt bench`` commands, run through typer's test runner."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_make_and_score_ground_truth_json(tmp_path):
    out = tmp_path / "bench"
    r = runner.invoke(app, ["bench", "make", "synth", "--out", str(out), "--per-family", "1", "--seed", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["bench", "score", "--bench", str(out), "--ground-truth", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["overall"]["mean_score"] == 1.0 and summary["overall"]["n"] == 7
    assert set(summary["by_split"]) == {"ID", "OOD"} and len(summary["by_faculty"]) == 5


def test_score_model_videos_and_report_missing_ones(tmp_path):
    out = tmp_path / "bench"
    runner.invoke(app, ["bench", "make", "synth", "--out", str(out), "--per-family", "1", "--split", "OOD"])
    videos = tmp_path / "videos"
    for gt in sorted(out.glob("*/*/*/ground_truth.mp4"))[:1]:
        split, task, index = gt.parts[-4:-1]
        (videos / split / task).mkdir(parents=True)
        shutil.copy(gt, videos / split / task / f"{index}.mp4")
    r = runner.invoke(app, ["bench", "score", "--bench", str(out), "--videos", str(videos), "--json"])
    assert r.exit_code == 1
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["overall"]["n"] == 2 and summary["overall"]["n_errors"] == 1
    assert summary["overall"]["mean_score"] == 0.5
    assert "not found" in r.output


def test_bad_input_is_one_clear_line(tmp_path):
    r = runner.invoke(app, ["bench", "score", "--bench", str(tmp_path / "nope"), "--ground-truth"])
    assert r.exit_code == 2 and "benchmark path not found" in r.output
    r = runner.invoke(app, ["bench", "make", "synth", "--out", str(tmp_path / "x"), "--width", "63"])
    assert r.exit_code == 2 and "even" in r.output
    r = runner.invoke(app, ["bench", "make", "synth", "--out", str(tmp_path / "y"), "--family", "nope"])
    assert r.exit_code == 2 and "unknown synth family" in r.output


def test_official_vbvr_layout_needs_the_official_toolkit(tmp_path):
    """A non-synth VBVR directory is never scored by our synth scorers."""
    out = tmp_path / "bench"
    runner.invoke(app, ["bench", "make", "synth", "--out", str(out), "--per-family", "1", "--family", "maze_navigate"])
    for meta in out.glob("*/*/*/meta.json"):
        meta.unlink()  # now it is an official-layout directory without our metadata
    (out / "VBVR-Bench.json").unlink()
    (tmp_path / "v").mkdir()  # an existing videos folder: a missing one is refused first (tests/test_bad_input.py)
    r = runner.invoke(app, ["bench", "score", "--bench", str(out), "--videos", str(tmp_path / "v")])
    assert r.exit_code == 2 and "vbvr_bench" in r.output


def test_the_cli_gives_prefects_ephemeral_server_time_to_start_unless_told_otherwise():
    """Prefect's 20 s default was missed beside another job (a crash before any work); a user's setting wins."""
    import os
    import subprocess
    import sys

    probe = ("import cli.main\nfrom prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s\n"
             "print(s.value())")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}

    def timeout(**extra: str) -> str:
        return subprocess.run([sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True,
                              check=True).stdout.split()[-1]

    assert timeout() == "120"
    assert timeout(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="45") == "45"


# --------------------------------------------------------------------------- VBVR-Bench through VBVR-EvalKit
# VBVR-EvalKit (`vbvr_bench`) is optional and not installed here: a stand-in walks the videos the way the
# toolkit does (only In-Domain_50 / Out-of-Domain_50) and returns a result of the toolkit's shape.

EVALKIT_TASKS = {  # split folder -> task -> (instances, score of each; None: the evaluator fails)
    "In-Domain_50": {"G-18_grid_shortest_path_data-generator": (2, 0.8), "O-34_dot_to_dot_task_data-generator": (1, None)},
    "Out-of-Domain_50": {"O-39_maze_data-generator": (2, 0.6)},
}


def _official_bench(root):
    """A tiny official-layout VBVR benchmark (first frames and prompts only; no synth meta.json)."""
    import numpy as np
    from PIL import Image

    for split, tasks in EVALKIT_TASKS.items():
        for task, (n, _) in tasks.items():
            for i in range(n):
                inst = root / split / task / f"{i:05d}"
                inst.mkdir(parents=True)
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(inst / "first_frame.png")
                (inst / "prompt.txt").write_text(f"Solve {task}.")
    return root


def _fake_evalkit(monkeypatch):
    """Install a `vbvr_bench` stand-in shaped like VBVR-EvalKit's VBVRBench."""
    import os
    import sys
    import types

    class VBVRBench:
        def __init__(self, gt_base_path, output_path="./evaluation_results/", device="cuda", rules_path=None):
            self.gt_base_path, self.output_path = gt_base_path, output_path

        def evaluate(self, videos_path, name=None, **kwargs):
            logical = {"In-Domain_50": "In_Domain", "Out-of-Domain_50": "Out_of_Domain"}
            results = {"overall": {}, "In_Domain": {"scores": [], "by_task": {}},
                       "Out_of_Domain": {"scores": [], "by_task": {}}, "by_task": {}, "detailed": []}
            for folder in ("In-Domain_50", "Out-of-Domain_50"):  # exact names, as EvalKit walks them
                split_path = os.path.join(videos_path, folder)
                if not os.path.exists(split_path):
                    continue
                for task in sorted(os.listdir(split_path)):
                    for video in sorted(os.listdir(os.path.join(split_path, task))):
                        score = EVALKIT_TASKS[folder][task][1]
                        entry = ({"score": 0.0, "error": "invalid index to scalar variable.", "dimensions": {}}
                                 if score is None else {"score": score, "dimensions": {"task_specific": score}})
                        entry |= {"video_path": os.path.join(split_path, task, video), "task_name": task,
                                  "split": logical[folder], "video_idx": video.removesuffix(".mp4")}
                        results["detailed"].append(entry)
                        section = results[logical[folder]]
                        section["scores"].append(entry["score"])
                        section["by_task"].setdefault(task, {"scores": [], "dimensions": {}})["scores"].append(entry["score"])
            for split in ("In_Domain", "Out_of_Domain"):
                s = results[split]
                s["num_videos"] = len(s["scores"])
                s["mean_score"] = sum(s["scores"]) / len(s["scores"]) if s["scores"] else 0.0
                for task_data in s["by_task"].values():
                    task_data["mean_score"] = sum(task_data["scores"]) / len(task_data["scores"])
            n = results["In_Domain"]["num_videos"] + results["Out_of_Domain"]["num_videos"]
            results["overall"] = {
                "mean_score": sum(results["In_Domain"]["scores"] + results["Out_of_Domain"]["scores"]) / n,
                "num_videos": n, "In_Domain_score": results["In_Domain"]["mean_score"],
                "Out_of_Domain_score": results["Out_of_Domain"]["mean_score"], "by_category": {"Spatiality": 0.5}}
            os.makedirs(self.output_path, exist_ok=True)
            with open(os.path.join(self.output_path, f"{name}_eval_results.json"), "w") as f:
                json.dump(results, f)
            print(f"Found {n} videos to evaluate")
            return results

    module = types.ModuleType("vbvr_bench")
    module.VBVRBench = VBVRBench
    monkeypatch.setitem(sys.modules, "vbvr_bench", module)


def _fake_opencv(monkeypatch, version):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__=version))


def _model_videos(bench, videos, skip=()):
    for inst in sorted(p for p in bench.glob("*/*/*") if p.is_dir()):
        rel = inst.relative_to(bench)
        if rel.as_posix() in skip:
            continue
        (videos / rel.parent).mkdir(parents=True, exist_ok=True)
        (videos / rel.parent / f"{inst.name}.mp4").write_bytes(b"video")
    return videos


def test_vbvr_score_prints_evalkit_sections_and_every_failed_video(tmp_path, monkeypatch):
    """EvalKit's result has overall / In_Domain / Out_of_Domain, no top-level mean_score (once an empty table)."""
    _fake_evalkit(monkeypatch)
    _fake_opencv(monkeypatch, "4.10.0")
    bench = _official_bench(tmp_path / "bench")
    videos = _model_videos(bench, tmp_path / "videos", skip={"Out-of-Domain_50/O-39_maze_data-generator/00001"})
    details = tmp_path / "evalkit.json"
    r = runner.invoke(app, ["bench", "score", "--bench", str(bench), "--videos", str(videos), "--json",
                            "--details", str(details)])
    assert r.exit_code == 1, r.output  # a video EvalKit could not evaluate is a failed item, as for synth
    table = r.output.split("VBVR-Bench (official VBVR-EvalKit", 1)[1]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in table.splitlines()
            if line.startswith("│") and line.split("│")[1].strip() in ("In_Domain", "Out_of_Domain", "overall")}
    assert rows == {"In_Domain": ["3", "1", "0.533"], "Out_of_Domain": ["1", "0", "0.600"], "overall": ["4", "1", "0.550"]}
    assert "failed In_Domain O-34_dot_to_dot_task_data-generator" in r.output
    assert "invalid index to scalar variable." in r.output
    assert "no video for 1 benchmark instance(s) (Out-of-Domain_50/O-39_maze_data-generator/00001)" in r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # stdout: what a pipe sees
    assert "mean_score" not in summary  # the old, always empty, top-level key
    assert summary["overall"] == {"mean_score": 0.55, "n_videos": 4, "n_errors": 1}
    assert summary["In_Domain"]["mean_score"] == 1.6 / 3 and summary["In_Domain"]["n_errors"] == 1
    assert summary["Out_of_Domain"] == {"mean_score": 0.6, "n_videos": 1, "n_errors": 0}
    assert summary["n_errors"] == 1 and summary["errors"][0]["task"] == "O-34_dot_to_dot_task_data-generator"
    assert summary["errors"][0]["error"] == "invalid index to scalar variable."
    assert summary["errors"][0]["video"].endswith("In-Domain_50/O-34_dot_to_dot_task_data-generator/00000.mp4")
    assert summary["n_missing"] == 1 and summary["missing"] == ["Out-of-Domain_50/O-39_maze_data-generator/00001"]
    assert summary["by_category"] == {"Spatiality": 0.5} and summary["warnings"] == []
    assert summary["results_file"] == str(tmp_path / "videos_vbvr_eval" / "model_eval_results.json")
    assert json.loads(details.read_text())["overall"]["num_videos"] == 4


def test_vbvr_score_exits_0_when_evalkit_evaluates_every_video(tmp_path, monkeypatch):
    _fake_evalkit(monkeypatch)
    _fake_opencv(monkeypatch, "4.10.0")
    monkeypatch.setitem(EVALKIT_TASKS["In-Domain_50"], "O-34_dot_to_dot_task_data-generator", (1, 0.9))
    bench = _official_bench(tmp_path / "bench")
    r = runner.invoke(app, ["bench", "score", "--bench", str(bench), "--videos", str(_model_videos(bench, tmp_path / "v")),
                            "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # stdout: what a pipe sees
    assert summary["n_errors"] == 0 and summary["overall"]["n_videos"] == 5
    assert not [line for line in r.output.splitlines() if line.startswith("failed")]


def test_vbvr_score_warns_under_opencv_5(tmp_path, monkeypatch):
    """EvalKit's dot-to-dot evaluator fails on every video under opencv 5.x: say so beside the numbers."""
    _fake_evalkit(monkeypatch)
    _fake_opencv(monkeypatch, "5.0.0")
    bench = _official_bench(tmp_path / "bench")
    r = runner.invoke(app, ["bench", "score", "--bench", str(bench), "--videos", str(_model_videos(bench, tmp_path / "v")),
                            "--json"])
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # stdout: what a pipe sees
    assert len(summary["warnings"]) == 1 and "opencv-python<5" in summary["warnings"][0]
    assert "warning: opencv 5.0.0 is installed" in r.output


def test_vbvr_score_refuses_split_folders_evalkit_does_not_walk(tmp_path, monkeypatch):
    """vlmt reads In-Domain_7 and writes outputs back under it; EvalKit would score zero videos there, silently."""
    _fake_evalkit(monkeypatch)
    bench = _official_bench(tmp_path / "bench")
    (bench / "In-Domain_50").rename(bench / "In-Domain_7")
    videos = _model_videos(bench, tmp_path / "videos")
    r = runner.invoke(app, ["bench", "score", "--bench", str(bench), "--videos", str(videos)])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bench / "In-Domain_7") in errors[0]
    assert "'In-Domain_50'" in errors[0] and "'Out-of-Domain_50'" in errors[0]
    assert not (tmp_path / "videos_vbvr_eval").exists()
