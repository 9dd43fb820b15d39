"""``vlmt report``: the HTML report of an experiment, its content, and its behaviour in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InputError
from core.report import plots
from core.report.build import CURVE_ITEMS, build_report
from core.report.data import PAPER_LABEL, ItemView, find_ground_truth, item_order, load_report_data
from core.report.html import SUMMARY_COLUMNS
from tests.report_helpers import GOAL, METHODS, fixture_experiment

REPO = Path(__file__).resolve().parents[1]
#: A method name too long for any column: the report must wrap it, in tables, captions and legends.
LONG = "a_method_whose_name_is_far_too_long_for_its_column_anywhere"
#: The module fixture's methods: the real ones and the long name.
RUN_METHODS = [*METHODS, LONG]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    db, experiment, instances = fixture_experiment(root, methods=RUN_METHODS, fail=("1", "teacher"))
    page = build_report(db, root / "out")
    return page, experiment, instances


def _table(text: str, ident: str) -> str:
    start = text.index(f"id='{ident}'")
    return text[start:text.index("</table>", start)]


def _cards(text: str) -> list[str]:
    return text.split("<section class='item'")[1:]


def test_report_shows_every_method_and_item_and_every_file_it_references_exists(report):
    page, experiment, instances = report
    text = page.read_text()
    assert experiment.experiment_id in text
    for inst in instances:
        assert "id='item-" in text and inst.id in text
        assert inst.prompt.split()[0] in text
    summary = _table(text, "summary")
    for method in RUN_METHODS:
        assert f"data-m='{method}'" in summary
        assert text.count(f"data-method='{method}'") == len(instances) - (method == "teacher")  # one failed
    assert "failed at optimise: RuntimeError: poisoned" in text
    assert "0.781" in summary  # the paper's teacher figure beside ours
    # the judge-fooled rate: the fixture's darkened videos break the goal while the judge says 0.9
    assert "judge fooled" in summary
    vanilla = summary[summary.index("data-m='vanilla'"):]
    assert "<td class='n'>1.00</td>" in vanilla[:vanilla.index("</tr>")]
    # the held-out judge, at 0.2 on the broken goal, is fooled by none of them
    assert "held-out fooled" in summary and "<td class='n'>1.00</td><td class='n'>0.00</td>" in vanilla[:vanilla.index("</tr>")]
    refs = re.findall(r"(?:src)='([^']+)'", text)
    # every method's video but the failed one, and each item's ground truth
    assert sum(r.endswith(".mp4") for r in refs) == len(instances) * len(RUN_METHODS) - 1 + len(instances)
    assert sum(r.endswith(".png") and r.startswith("plots/") for r in refs) == 4
    for ref in refs:
        assert (page.parent / ref).is_file(), ref
        assert not ref.startswith(("http:", "https:", "/"))  # self-contained: nothing fetched from elsewhere
    assert "Does the agent reach the goal?" in text
    # the score's parts and the judge query by query, from the named queries
    parts, judged = _table(text, "parts"), _table(text, "judge-queries")
    for method in RUN_METHODS:
        assert f"data-m='{method}'" in parts and f"data-m='{method}'" in judged


def test_each_item_shows_its_ground_truth_video_first_copied_from_the_benchmark(report):
    page, _, instances = report
    text = page.read_text()
    by_id = {inst.id: inst for inst in instances}
    cards = _cards(text)
    assert len(cards) == len(instances)
    for card in cards:
        ident = re.search(r"<h3>([^ <]+)", card).group(1)
        videos = re.findall(r"<video src='([^']+)'[^>]*?(data-role='ground-truth'|data-method='[^']+')", card)
        assert videos[0][1] == "data-role='ground-truth'", ident  # the ground truth comes before the methods
        assert [v for v in videos if "ground-truth" in v[1]] == videos[:1]
        copied = page.parent / videos[0][0]
        assert copied.name == "ground_truth.mp4"
        assert copied.read_bytes() == by_id[ident].ground_truth.read_bytes()
        assert "no ground-truth video" not in card


def test_the_ground_truth_is_found_beside_the_first_frame_or_under_the_benchmark_by_id(tmp_path):
    bench = tmp_path / "bench"
    inst = bench / "In-Domain_50" / "G-1_task" / "00003"
    inst.mkdir(parents=True)
    (inst / "ground_truth.mp4").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    gt = str(inst / "ground_truth.mp4")
    assert find_ground_truth("any/id", str(inst / "first_frame.png"), []) == gt  # synth and VBVR keep both together
    assert find_ground_truth("In-Domain_50/G-1_task/00003", str(tmp_path / "elsewhere" / "f.png"), [bench]) == gt
    assert find_ground_truth("In-Domain_50/G-1_task/00003", None, [bench]) == gt
    assert find_ground_truth("physics/0", None, [bench]) is None  # e.g. RULER-Bench: none


def test_the_legends_explain_every_column_and_every_cell(report):
    page, _, _ = report
    text = page.read_text()
    summary = _table(text, "summary")
    headers = re.findall(r"<th(?: class='[^']*')?>([^<]+)</th>", summary.split("</tr>", 1)[1])
    legend = text[text.index("id='legend-columns'"):text.index("</dl>", text.index("id='legend-columns'"))]
    terms = re.findall(r"<dt>([^<]+)</dt>", legend)
    ours = [h for h, _ in SUMMARY_COLUMNS]
    assert headers == [*ours, "score", "s / item"]
    assert terms == [*ours, "paper score", "paper s / item"]  # every column, in the table's order
    for words in ("weighted sum", "0.7", "0.3", "every goal criterion is met and no process rule is broken",
                  "NFE", "of the rules the scorer finds broken", "judge called Yes", "oracle"):
        assert words in legend, words
    methods = text[text.index("id='legend-methods'"):text.index("</dl>", text.index("id='legend-methods'"))]
    for method in RUN_METHODS:
        assert f">{method}</span>" in methods
    assert "the benchmark&#x27;s own scorer picks" in methods and "upper bound" in methods
    items = text[text.index("id='legend-items'"):text.index("</dl>", text.index("id='legend-items'"))]
    for term in ("ground truth", "success", "fail", "failed at &lt;stage&gt;", "teacher vs vanilla"):
        assert f"<dt>{term}</dt>" in items, term
    for term in ("unscored", "video missing"):  # explained where the page has such a cell; this one has none
        assert f"<dt>{term}</dt>" not in items and f">{term}<" not in text, term
    assert "strict success not met" in items
    # no bare "fail": each one names what was not met (the fixture's darkened videos miss the goal, 0.2)
    fails = re.findall(r"<span class='fail'>fail</span>(.{0,120})", text)
    assert fails and all(f.startswith(f" <span class='why'>not met: {GOAL} 0.20") for f in fails), fails[:2]


def test_the_papers_figures_are_marked_as_the_papers_with_why_they_differ(report):
    page, _, _ = report
    text = page.read_text()
    summary = _table(text, "summary")
    group = re.search(r"<th colspan='(\d+)' class='group paper' id='paper-group'>([^<]+)</th>", summary)
    assert group and group.group(2) == PAPER_LABEL == "paper (Wan2.2-5B + Qwen3-VL-4B on VBVR-Bench)"
    assert "<colgroup span='2' class='paper'>" in summary and group.group(1) == "2"
    for row in summary.split("<tbody>")[1].split("</tr>")[:-1]:
        cells = re.findall(r"<td class='([^']*)'", row)
        assert cells[-2:] == ["n paper", "n paper"] and all("paper" not in c for c in cells[:-2]), row
    teacher = summary[summary.index("data-m='teacher'"):]
    assert "<td class='n paper'>0.781</td>" in teacher[:teacher.index("</tr>")]
    note = text[text.index("id='paper-note'"):text.index("</p>", text.index("id='paper-note'"))]
    assert "tiny in-house models" in note and "synthetic benchmark" in note and "not comparable" in note


def test_no_link_leads_outside_the_report_and_every_named_document_exists(report):
    page, _, _ = report
    text = page.read_text()
    assert "METHOD.md" not in text and "../" not in text
    for href in re.findall(r"href=['\"]([^'\"]+)", text):
        if href.startswith("#"):
            assert f"id='{href[1:]}'" in text, href
        else:
            assert not re.match(r"[a-z]+:", href) and (page.parent / href).is_file(), href
    named = set(re.findall(r"\b((?:docs|sql)/[\w./-]+\.(?:md|sql))", text))
    assert {"docs/paper.md", "docs/results.md"} <= named
    for path in named:
        assert (REPO / path).is_file(), path


def test_items_come_by_family_then_id(report):
    page, _, instances = report
    shown = [re.search(r"<h3>([^ <]+)", c).group(1) for c in _cards(page.read_text())]
    family = {inst.id: inst.task_family for inst in instances}
    assert shown == sorted(shown, key=lambda i: (family[i], i))

    def view(ident: str, fam: str) -> ItemView:
        return ItemView(instance_id=ident, family=fam, split=None, faculty=None, prompt=None, first_frame=None,
                        outcomes={})

    mixed = [view("t/10", "b"), view("t/9", "b"), view("z/1", "a"), view("t/2", "b"), view("a/5", "c")]
    assert [(v.family, v.instance_id) for v in item_order(mixed)] == [
        ("a", "z/1"), ("b", "t/2"), ("b", "t/9"), ("b", "t/10"), ("c", "a/5")]  # digit runs as numbers


def test_the_oracle_is_marked_in_every_table_caption_and_plot_legend(report, monkeypatch):
    page, _, _ = report
    text = page.read_text()
    oracle = "pass_at_n</span> <small class='oracle'"
    for ident in ("summary", "parts", "judge-queries", "by-group"):
        assert oracle in _table(text, ident), ident
    assert all(oracle in card for card in _cards(text))
    assert "<dt><span class='mname'" in text and oracle in text[text.index("id='legend-methods'"):]
    assert text.count("<small class='oracle'") == text.count("pass_at_n</span>")  # nowhere unmarked
    data = load_report_data(page.parent.parent / "vlmt.duckdb")
    figures = _drawn(data, monkeypatch, page.parent.parent / "plots-oracle")
    labels = {a.get_label() for f in figures.values() for ax in f.axes for a in ax.collections + ax.texts}
    labels |= {t.get_text() for f in figures.values() for ax in f.axes for t in ax.texts}
    assert "pass_at_n (oracle)" in labels and "pass_at_n" not in labels


def _drawn(data, monkeypatch, folder: Path) -> dict:
    """Every plot of ``data`` drawn, with its matplotlib figure kept (``plots._save`` closes it otherwise)."""
    kept = {}
    save = plots._save

    def keep(fig, path):
        kept[path.stem] = fig
        fig.canvas.draw()
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    folder.mkdir(exist_ok=True)
    items = list(dict.fromkeys(t["instance_id"] for t in data.traces))
    plots.score_vs_cost(data.summary, folder / "score_vs_cost.png")
    plots.early_stop_steps(data.costs, folder / "early_stop_steps.png")
    plots.optimisation_curves(data.traces, items, folder / "optimisation_curves.png")
    plots.judge_vs_scorer(data.costs, folder / "judge_vs_scorer.png")
    return kept


def test_one_colour_per_method_in_every_plot_and_table(report, monkeypatch):
    from matplotlib.colors import to_hex

    page, _, _ = report
    known = ["vanilla", "best_of_n", "pass_at_n", "pe", "videotpo", "teacher", "shared", "grpo", "still"]
    colours = [plots.method_colour(m) for m in known]
    assert len(set(colours)) == len(known)  # distinct
    assert [plots.method_colour(m) for m in known] == colours  # fixed
    # an unknown name: the same colour in another process (no salted hash), and a valid colour
    other = subprocess.run([sys.executable, "-c", f"from core.report.plots import method_colour; print(method_colour({LONG!r}))"],
                           capture_output=True, text=True, check=True, cwd=REPO,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert other == plots.method_colour(LONG) and re.fullmatch(r"#[0-9a-f]{6}", other)
    data = load_report_data(page.parent.parent / "vlmt.duckdb")
    figures = _drawn(data, monkeypatch, page.parent.parent / "plots-colours")
    seen: dict[str, set[str]] = {}
    teacher_shades = {c for n in range(1, 2 * CURVE_ITEMS) for c in plots.shades(plots.method_colour("teacher"), n)}
    for name, fig in figures.items():
        for ax in fig.axes:
            for artist in [*ax.collections, *ax.lines, *ax.patches]:
                method = artist.get_gid()
                if method is None:
                    continue
                colour = to_hex(artist.get_facecolor()[0] if artist in ax.collections else
                                artist.get_color() if artist in ax.lines else artist.get_facecolor())
                seen.setdefault(name, set()).add(method)
                if name in ("score_vs_cost", "judge_vs_scorer"):  # one point set per method: the method's colour
                    assert colour == plots.method_colour(method), (name, method, colour)
                else:  # the teacher method alone: shades of its colour
                    assert method == "teacher" and colour in teacher_shades, (name, colour)
    assert seen["score_vs_cost"] == seen["judge_vs_scorer"] == set(RUN_METHODS)
    assert seen["optimisation_curves"] == seen["early_stop_steps"] == {"teacher"}
    # the page keys each method by the same colour
    text = page.read_text()
    for method in RUN_METHODS:
        keys = set(re.findall(rf"border-left-color:(#[0-9a-f]{{6}})'>{method}</span>", text))
        assert keys == {plots.method_colour(method)}, (method, keys)


def test_plot_titles_count_what_they_draw(report, tmp_path):
    page, _, instances = report
    text = page.read_text()
    data = load_report_data(page.parent.parent / "vlmt.duckdb")
    captions = re.findall(r"<figcaption>([^<]+)</figcaption>", text)
    n_curves = min(CURVE_ITEMS, len({t["instance_id"] for t in data.traces}))
    drawn = [r for r in data.costs if r["judge_goal_p_yes"] is not None and r["score"] is not None]
    teacher = [r for r in data.costs if r["method"] == "teacher" and r["steps_run"] is not None]
    assert captions == [
        f"Score versus cost ({len(RUN_METHODS)} methods; matched compute)",
        f"Early-stop steps of the teacher method ({len(teacher)} items)",
        f"Optimisation curves of the teacher method ({n_curves} items)",
        f"Judge versus scorer ({len(drawn)} videos of {len(RUN_METHODS)} methods; reward hacking)",
    ]
    assert len(teacher) == len(instances) - 1 and n_curves == CURVE_ITEMS < len(instances)
    # an item asked for but without a trace is not counted
    traced = sorted({t["instance_id"] for t in data.traces})[:2]
    plot = plots.optimisation_curves(data.traces, [*traced, "no/such/item"], tmp_path / "c.png")
    assert plot.title == "Optimisation curves of the teacher method (2 items)" and plot.path.is_file()


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


#: CSS that undoes the report's wrapping (fixed narrow tables, no line breaks): the overlap check must catch it.
_NO_WRAP = ("<style>table.grid{table-layout:fixed;width:24em}table.grid th,table.grid td,.method figcaption,.crit li,"
            ".why{white-space:nowrap;overflow-wrap:normal;word-break:normal}table.grid td.m{min-width:0}</style>")


def _selftest(page: Path, profile: Path) -> dict:
    """Open ``page#selftest`` in headless Chromium (800 px wide) and return what the page's self-test wrote."""
    browser = _chromium()
    if browser is None:
        if os.environ.get("VLMT_REQUIRE_BROWSER") == "1":
            pytest.fail("VLMT_REQUIRE_BROWSER=1 but no chromium on PATH (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on PATH: install Debian's `chromium` package to run the browser test")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", "--window-size=800,600",
         "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=10000", "--dump-dom",
         page.resolve().as_uri() + "#selftest"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="selftest-result"[^>]*>([^<]+)</pre>', dom)
    assert found, "the page's self-test wrote no result"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))


def test_in_headless_chromium_videos_play_in_step_and_filters_show_exactly_the_matching_items(report, tmp_path):
    page, _, instances = report
    out = _selftest(page, tmp_path / "profile")
    first_with_video = next(c for c in _cards(page.read_text()) if "<video" in c)
    assert len(out["videos"]) == first_with_video.count("<video") >= len(METHODS)
    for video in out["videos"]:
        assert video["error"] is None and video["readyState"] >= 2 and video["width"] == 64, video
        assert not video["paused"] and video["currentTime"] > 0, video
    # the ground truth is one of them: it loads and plays, in step with the methods' videos
    truth = [v for v in out["videos"] if v["role"] == "ground-truth"]
    assert len(truth) == 1 and truth[0]["src"].endswith("/ground_truth.mp4"), out["videos"]
    times = [v["currentTime"] for v in out["videos"]]
    assert max(times) - min(times) < 0.2  # in sync
    # no label runs into its neighbour: table cells, an item's columns, its videos and their captions
    overlaps = out["overlaps"]
    assert overlaps["found"] == [], overlaps["found"][:5]
    assert overlaps["rows"] > len(instances) * 2 and overlaps["pairs"] > 500  # the check saw the whole page
    families = {i.task_family for i in instances}
    assert set(out["filters"]["f-family"]) == families
    for select in out["filters"].values():
        for value, shown in select.items():
            assert shown["all_match"] and shown["shown"] == shown["expected"], (value, shown)
    assert out["filters"]["f-outcome"]["fixed"]["shown"] >= 1
    assert out["count_text"] == f"{len(instances)} of {len(instances)} items"


def test_in_headless_chromium_the_overlap_check_catches_labels_that_do_not_wrap(report, tmp_path):
    """The check above would pass on a page it cannot see into; here the wrapping is undone and it must object."""
    page, _, _ = report
    broken = page.with_name("index-nowrap.html")
    broken.write_text(page.read_text().replace("</head>", _NO_WRAP + "</head>", 1))
    try:
        overlaps = _selftest(broken, tmp_path / "profile")["overlaps"]
    finally:
        broken.unlink()
    where = overlaps["where"]  # overlapping pairs per table or item
    assert where.get("summary") and any(w.startswith("item-") for w in where), where
    # a caption's long rule name ran into the next video's figure
    assert any(f["a"].startswith("figure.method") and f["b"].startswith("figure.method") for f in overlaps["found"]
               if f["row"].startswith("item-")), overlaps["found"]


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
    assert "<span class='unscored'>unscored</span>" in text and "<dt>unscored</dt>" in text  # and the legend says why


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
    assert "<dt>video missing</dt>" in text  # the refused videos' cells, explained
    cards = _cards(text)  # none in the benchmark: each item says so, once
    assert len(cards) == len(rows) and all(c.count("no ground-truth video for this item") == 1 for c in cards)
    assert "secret.png lies outside the work and benchmark directories" in caplog.text
    assert "notes.png is not an image file" in caplog.text and "passwd.mp4 is not a video file" in caplog.text
    assert f"{outside / 'v.mp4'} lies outside" in caplog.text
