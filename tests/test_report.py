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
    refs = re.findall(r"(?:src)='([^']+)'", text)
    assert sum(r.endswith(".mp4") for r in refs) == len(instances) * len(METHODS) - 1
    assert sum(r.endswith(".png") and r.startswith("plots/") for r in refs) == 4
    for ref in refs:
        assert (page.parent / ref).is_file(), ref
        assert not ref.startswith(("http:", "https:", "/"))  # self-contained: nothing fetched from elsewhere
    assert "Does the agent reach the goal?" in text


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
