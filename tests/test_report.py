"""``vlmt report``: the HTML report of an experiment, its content, and its behaviour in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from core.errors import InputError
from core.report.build import build_report
from core.report.data import load_report_data
from tests.report_helpers import METHODS, fixture_experiment


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    db, experiment, instances = fixture_experiment(root, fail=("1", "teacher"))
    page = build_report(db, root / "out")
    return page, experiment, instances


def test_report_shows_every_method_and_item_and_every_file_it_references_exists(report):
    page, experiment, instances = report
    text = page.read_text()
    assert experiment.experiment_id in text
    for inst in instances:
        assert "id='item-" in text and inst.id in text
        assert inst.prompt.split()[0] in text
    summary = text[text.index("id='summary'"):text.index("</table>", text.index("id='summary'"))]
    for method in METHODS:
        assert f"<td>{method}</td>" in summary
        assert text.count(f"data-method='{method}'") == len(instances) - (method == "teacher")  # one failed
    assert "failed at optimise: RuntimeError: poisoned" in text
    assert "0.781" in summary  # the paper's teacher figure beside ours
    # the judge-fooled rate: the fixture's darkened videos break the goal while the judge says 0.9
    assert "judge fooled" in summary
    vanilla = summary[summary.index("<td>vanilla</td>"):]
    assert "<td>1.00</td>" in vanilla[:vanilla.index("</tr>")]
    refs = re.findall(r"(?:src)='([^']+)'", text)
    assert sum(r.endswith(".mp4") for r in refs) == len(instances) * len(METHODS) - 1
    assert sum(r.endswith(".png") and r.startswith("plots/") for r in refs) == 4
    for ref in refs:
        assert (page.parent / ref).is_file(), ref
        assert not ref.startswith(("http:", "https:", "/"))  # self-contained: nothing fetched from elsewhere
    assert "Does the agent reach the goal?" in text
    # the score's parts and the judge query by query, from the named queries
    parts = text[text.index("id='parts'"):text.index("</table>", text.index("id='parts'"))]
    judged = text[text.index("id='judge-queries'"):text.index("</table>", text.index("id='judge-queries'"))]
    for method in METHODS:
        assert f"<td>{method}</td>" in parts and f"<td>{method}</td>" in judged


def test_outcome_filter_values_follow_the_scores(report):
    page, _, instances = report
    data = load_report_data(page.parent.parent / "vlmt.duckdb")
    outcomes = {i.instance_id: i.outcome for i in data.items}
    # even items: vanilla darkened (fails), teacher correct -> fixed; odd: equal -> unchanged; item 1's teacher failed
    assert outcomes[instances[0].id] == "fixed"
    assert outcomes[instances[1].id] == "n/a"
    assert outcomes[instances[3].id] == "unchanged"
    row = {r["method"]: r for r in data.summary}
    assert row["teacher"]["errors"] == 1 and row["vanilla"]["errors"] == 0
    assert row["teacher"]["mean_score"] == pytest.approx(0.8)
    # darkened items: goal 0.2 and the judge says Yes (0.9) to a goal the scorer says is not reached
    worse = [i for i in range(len(instances)) if i % 2 == 0]
    goal = {(r["method"], r["split"]): r["goal"] for r in data.parts}
    for split in {inst.split.value for inst in instances}:
        ks = [k for k, inst in enumerate(instances) if inst.split.value == split]
        assert goal[("vanilla", split)] == pytest.approx(sum(0.2 if k in worse else 0.8 for k in ks) / len(ks), abs=1e-3)
    judged = {(r["method"], r["kind"]): r for r in data.judge_queries}
    assert judged[("vanilla", "goal")]["n_broken"] == len(worse)
    assert judged[("vanilla", "goal")]["false_yes_rate"] == 1.0 and judged[("teacher", "goal")]["n_broken"] == 0


def test_unknown_experiment_names_what_exists(report):
    page, _, _ = report
    with pytest.raises(InputError, match="'nope' matches no experiment.*report-fixture"):
        load_report_data(page.parent.parent / "vlmt.duckdb", experiment="nope")


def _chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def test_in_headless_chromium_videos_play_in_step_and_filters_show_exactly_the_matching_items(report, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("VLMT_REQUIRE_BROWSER") == "1":
            pytest.fail("VLMT_REQUIRE_BROWSER=1 but no chromium on PATH (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on PATH: install Debian's `chromium` package to run the browser test")
    page, _, instances = report
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=10000", "--dump-dom",
         page.resolve().as_uri() + "#selftest"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="selftest-result"[^>]*>([^<]+)</pre>', dom)
    assert found, "the page's self-test wrote no result"
    out = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    cards = page.read_text().split("<section class='item'")[1:]
    first_with_video = next(c for c in cards if "<video" in c)
    assert len(out["videos"]) == first_with_video.count("<video") >= len(METHODS) - 1
    for video in out["videos"]:
        assert video["error"] is None and video["readyState"] >= 2 and video["width"] == 64, video
        assert not video["paused"] and video["currentTime"] > 0, video
    times = [v["currentTime"] for v in out["videos"]]
    assert max(times) - min(times) < 0.2  # in sync
    families = {i.task_family for i in instances}
    assert set(out["filters"]["f-family"]) == families
    for select in out["filters"].values():
        for value, shown in select.items():
            assert shown["all_match"] and shown["shown"] == shown["expected"], (value, shown)
    assert out["filters"]["f-outcome"]["fixed"]["shown"] >= 1
    assert out["count_text"] == f"{len(instances)} of {len(instances)} items"


def test_a_judged_ruler_run_shows_the_judges_scores_and_each_videos_labels(tmp_path):
    """RULER rows are unscored; the report shows ruler_scores and, per video, the judge's labels or its failure."""
    from core.bench.record import TaskInstance
    from core.bench.ruler_replies import judgement_from_reply
    from core.bench.ruler_scores import aggregate
    from core.bench.ruler_judge import JudgeAttempt, JudgeRecord
    from core.method.compare import ItemResult
    from core.storage.results import (
        ExperimentRecord,
        write_experiment,
        write_judgements,
        write_result,
    )
    from core.storage.warehouse import consolidate

    root = tmp_path / "results"
    experiment = ExperimentRecord(name="ruler", config={"bench": "ruler.jsonl"}, code_version="t")
    write_experiment(root, experiment)
    checklist = [{"dimension": "Rule Coherence", "question": "Does the ball fall?"},
                 {"dimension": "Visual Fidelity", "question": "Is the ball sharp?"}]
    instance = TaskInstance(id="physics/0", benchmark="ruler", task_family="physics", task_id="physics", index="0",
                            category="science", prompt="Drop the ball.", checklist=checklist)
    judgements = []
    for method, reply in (("vanilla", "Poor\nGood"), ("teacher", "1. Good\n2. Medium"), ("pe", "Excellent")):
        write_result(root, ItemResult(instance_id=instance.id, family="physics", split=None, faculty=None, method=method,
                                      seed=0, score=None, success=None), experiment.experiment_id)
        record = JudgeRecord(instance_id=instance.id, task_name="physics", category="science", video="v.mp4",
                             attempts=[JudgeAttempt(reply=reply)])
        if method == "pe":
            record.error = "no valid judge reply in 1 attempt(s); last: label 1 is 'Excellent'"
        else:
            record.judgement = judgement_from_reply(instance, reply)
            judgements.append((method, record.judgement))
        write_judgements(root, record, instance, experiment.experiment_id, "default", method, "/models/judge-7b")
    db = tmp_path / "vlmt.duckdb"
    consolidate(root, db)
    data = load_report_data(db)
    by_method = {r["method"]: r for r in data.ruler}
    for method, judgement in judgements:
        assert by_method[method]["overall_average"] == pytest.approx(aggregate([judgement]).overall_average, abs=0.01)
    assert by_method["pe"]["n_failed"] == 1 and by_method["pe"]["overall_average"] is None
    text = build_report(db, tmp_path / "out").read_text()
    assert "id='ruler'" in text and "/models/judge-7b" in text
    teacher = data.items[0].outcomes["teacher"].ruler_labels
    assert [(r["dimension"], r["label"]) for r in teacher] == [("Rule Coherence", "Good"), ("Visual Fidelity", "Medium")]
    assert "Visual Fidelity: <b>Medium</b>" in text and "judge failed: no valid judge reply in 1 attempt(s)" in text


def test_the_report_copies_only_images_and_videos_from_the_work_and_benchmark_directories(tmp_path, caplog):
    """A row may name any path (a RULER record's image path); the shared report folder gets none from elsewhere."""
    import numpy as np

    from core.media import write_image, write_video
    from core.method.compare import ItemResult
    from core.storage.results import ExperimentRecord, write_experiment, write_result
    from core.storage.warehouse import consolidate

    work, bench, outside = tmp_path / "work", tmp_path / "bench", tmp_path / "outside"
    frame = np.full((16, 16, 3), 90, dtype=np.uint8)
    write_image(bench / "img.png", frame)
    write_image(outside / "secret.png", frame)
    (bench / "notes.png").write_text("not an image, named like one")
    write_video(work / "v.mp4", np.repeat(frame[None], 4, axis=0), fps=4)
    write_video(outside / "v.mp4", np.repeat(frame[None], 4, axis=0), fps=4)
    (work / "passwd.mp4").write_text("root:x:0:0:root:/root:/bin/bash")
    rows = {  # item -> (first frame, video)
        "a/0": (outside / "secret.png", work / "v.mp4"),  # image outside both directories; a good video
        "b/1": (bench / "notes.png", work / "passwd.mp4"),  # neither is what it is named
        "c/2": (bench / "img.png", outside / "v.mp4"),  # a good image; a video from outside
    }
    experiment = ExperimentRecord(name="paths", config={"bench": str(bench / "ruler.jsonl")}, code_version="t")
    write_experiment(work / "results", experiment)
    for k, (item, (first, video)) in enumerate(rows.items()):
        res = ItemResult(instance_id=item, family=item[0], split=None, faculty=None, method="vanilla", seed=k,
                         score=None, success=None, info={"prompt": "p", "first_frame": str(first)})
        write_result(work / "results", res, experiment.experiment_id, video_path=str(video))
    consolidate(work / "results", work / "vlmt.duckdb")
    with caplog.at_level("WARNING"):
        page = build_report(work / "vlmt.duckdb", tmp_path / "out")
    copied = {f"{p.parent.name.split('-')[0]}/{p.name}" for p in (page.parent / "media").rglob("*") if p.is_file()}
    assert copied == {"a_0/vanilla.mp4", "c_2/first.png"}  # folders are the item ids' file names
    text = page.read_text()
    assert "secret" not in "".join(re.findall(r"src='([^']+)'", text)) and text.count("<video") == 1
    assert "secret.png lies outside the work and benchmark directories" in caplog.text
    assert "notes.png is not an image file" in caplog.text and "passwd.mp4 is not a video file" in caplog.text
    assert f"{outside / 'v.mp4'} lies outside" in caplog.text
