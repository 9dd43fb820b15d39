"""``vlmt report``: a static HTML report of one experiment, with its videos and plots beside it.

    out/index.html            the report (inline CSS and JS; no network fetches)
    out/plots/*.png           matplotlib figures
    out/media/<item>/...      each item's first frame, its ground-truth video and every method's mp4

Media are copied only from the work directory and the benchmark's, and only when they are
the image or video their place says (``_media_source``): the folder is meant to be shared,
and a first frame's path comes from a benchmark record.

The page explains itself to a reader who has not seen the project: a legend under the method
table names what every column and method is (``_methods_legend``), another says what every
per-item cell means (``_items_legend``), the paper's figures sit in their own column group
headed ``PAPER_LABEL`` with the reason they are not comparable, and each method keeps one
colour in the tables and in every plot (``plots.method_colour``). It links to nothing outside
its folder: repository documents are named as plain paths (docs/paper.md, docs/results.md).

The report is built in a sibling folder and moved into place at the end, so a report that is
being rebuilt is never half written. Opening ``index.html#selftest`` runs the page's own
checks (videos, the ground truth's included, load and play; no label overlaps its neighbour;
filters show exactly the matching items) and writes them as JSON into ``#selftest-result``;
the browser test reads that.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from pathlib import Path

from core.bench.ruler_paths import inside, looks_like_image
from core.io import file_head
from core.report import plots
from core.report.data import (
    METHOD_NOTES,
    ORACLE_METHODS,
    PAPER_LABEL,
    PAPER_VBVR,
    SCORE_DELTA,
    ItemView,
    MethodOutcome,
    ReportData,
    load_report_data,
)
from core.storage.results import file_name, slug

log = logging.getLogger(__name__)

#: Items whose optimisation curves are drawn (the first ones with a trace).
CURVE_ITEMS = 6


def build_report(db: str | Path, out: str | Path | None = None, experiment: str | None = None,
                 variant: str | None = None) -> Path:
    """Write the report of ``experiment`` (default: the newest) from ``db`` into ``out``; returns index.html.

    ``out`` defaults to ``<db folder>/report/<experiment name>``.
    """
    data = load_report_data(db, experiment, variant)
    out = Path(out) if out is not None else Path(db).parent / "report" / slug(data.name)
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "plots").mkdir(parents=True)
    figures = _plots(data, tmp / "plots")
    media = _copy_media(data.items, tmp / "media", [Path(r) for r in data.media_roots])
    (tmp / "index.html").write_text(render(data, figures, media), encoding="utf-8")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    log.info("report of %s (%d items) in %s", data.name, len(data.items), out)
    return out / "index.html"


def _plots(data: ReportData, folder: Path) -> dict[str, str]:
    """Write the figures; returns each one's title (which counts what it draws) -> its path in the report."""
    traced = {t["instance_id"] for t in data.traces}
    curve_items = [i.instance_id for i in data.items if i.instance_id in traced][:CURVE_ITEMS]  # the page's order
    written = [
        plots.score_vs_cost(data.summary, folder / "score_vs_cost.png"),
        plots.early_stop_steps(data.costs, folder / "early_stop_steps.png"),
        plots.optimisation_curves(data.traces, curve_items, folder / "optimisation_curves.png"),
        plots.judge_vs_scorer(data.costs, folder / "judge_vs_scorer.png"),
    ]
    return {plot.title: f"plots/{plot.path.name}" for plot in written}


#: Video file suffixes the report copies, and how each format starts: an ISO media ``ftyp`` box, or EBML.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv"})


def _looks_like_video(path: Path) -> bool:
    """Whether ``path`` has a video suffix and starts like an MP4/MOV or a WebM/Matroska file."""
    head = file_head(path, 8) if path.suffix.lower() in VIDEO_SUFFIXES else None
    if head is None:
        return False
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3"


def _media_source(src: str | None, kind: str, roots: list[Path], what: str) -> Path | None:
    """``src`` if the report may copy it as a ``kind`` ('image' or 'video'), else None.

    Why: the report folder is meant to be shared, and a row's path can come from a benchmark
    record (a RULER image path). So, besides what ``core.bench.ruler`` refuses at load time,
    a file is copied only from the work or benchmark directory and only if it is the kind of
    file its place in the page says (by suffix and content). A missing file is skipped quietly
    (a deleted work directory); a refused one is logged.
    """
    if not src or not Path(src).is_file():
        return None
    path = Path(src)
    if not any(inside(path, root) for root in roots):
        log.warning("%s: not copied into the report: %s lies outside the work and benchmark directories (%s)", what, src,
                    ", ".join(map(str, roots)))
        return None
    if not (looks_like_image(path) if kind == "image" else _looks_like_video(path)):
        log.warning("%s: not copied into the report: %s is not %s file", what, src, "an image" if kind == "image" else "a video")
        return None
    return path


#: The media key (and file name) of an item's ground-truth video; no method has this name.
GROUND_TRUTH = "ground_truth"


def _copy_media(items: list[ItemView], folder: Path, roots: list[Path]) -> dict[tuple[str, str], str]:
    """Copy first frames and videos from ``roots`` beside the report; returns
    (item, method | 'first' | GROUND_TRUTH) -> relative path."""
    rel: dict[tuple[str, str], str] = {}
    for item in items:
        sub = folder / file_name(item.instance_id)
        sources = {"first": (item.first_frame, "image"), GROUND_TRUTH: (item.ground_truth, "video"),
                   **{m: (o.video, "video") for m, o in item.outcomes.items() if m != GROUND_TRUTH}}
        for name, (src, kind) in sources.items():
            path = _media_source(src, kind, roots, f"{item.instance_id} ({name})")
            if path is None:
                continue
            sub.mkdir(parents=True, exist_ok=True)
            target = sub / f"{file_name(name)}{path.suffix.lower()}"
            shutil.copyfile(path, target)
            rel[(item.instance_id, name)] = target.relative_to(folder.parent).as_posix()
    return rel


# --------------------------------------------------------------------------- HTML

def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


#: A label with a word longer than this may break anywhere (class ``long``); shorter words wrap only between words,
#: so "vanilla" never becomes "vanill / a" while a 60-character rule or method name still fits its column.
LONG_WORD = 14


def _is_long(text: str) -> bool:
    return any(len(word) > LONG_WORD for word in text.split())


def _label(value) -> str:
    """A text cell's content, escaped; marked ``long`` when one of its words would not fit a column."""
    text = "" if value is None else str(value)
    return f"<span class='long'>{_e(text)}</span>" if _is_long(text) else _e(text)


#: What each oracle reads of the answer key (the oracle mark's tooltip).
_ORACLE_WHY = {"pass_at_n": "the benchmark&#39;s scorer picks the video",
               "oracle_reward": "a relaxation of the benchmark&#39;s scorer is its reward"}


def _method_name(method: str) -> str:
    """A method as every table and caption shows it: its plot colour, its name, and the oracle marked."""
    why = _ORACLE_WHY.get(method, "it reads the benchmark&#39;s answer key")
    oracle = (f" <small class='oracle' title='{why}: an upper bound, not a method'>oracle</small>"
              if method in ORACLE_METHODS else "")
    cls = "mname long" if _is_long(method) else "mname"
    # the colour key is the name's left border, so it never wraps away from the name
    return f"<span class='{cls}' style='border-left-color:{plots.method_colour(method)}'>{_e(method)}</span>{oracle}"


def _method_cell(method: str) -> str:
    return f"<td class='m' data-m='{_e(method)}'>{_method_name(method)}</td>"


def _td(value: str) -> str:
    return f"<td class='n'>{value}</td>"


#: The method table's columns: (header, legend). The legend under the table repeats them in order.
SUMMARY_COLUMNS: list[tuple[str, str]] = [
    ("method", "the method, in its colour in every plot; <i>oracle</i> marks pass_at_n, whose video the benchmark's "
               "scorer picks, and oracle_reward, optimised against a relaxation of that scorer (see the methods "
               "below)."),
    ("items", "items with a result for the method, failed ones included."),
    ("errors", "items where the method raised an error: no video, left out of every mean."),
    ("score", "mean over the items of the VBVR-style score: the weighted sum of the item's sub-criteria in [0, 1], "
              "the goal criteria weighing 0.7 in all and the process rules 0.3. Partial credit: one broken rule costs "
              "its weight, not the whole video."),
    ("strict success", "share of the items where every goal criterion is met and no process rule is broken at all "
                       "(the paper's binary figure; much harder than the score)."),
    ("s / item", "mean wall-clock seconds per item, everything the method ran (rules, generation, optimisation, "
                 "judging)."),
    ("NFE / item", "mean Reasoner forward passes (network function evaluations) per item: compute independent of "
                   "the machine."),
    ("judge fooled", "of the rules the scorer finds broken (video by video, query by query), the share the Teacher's "
                     "judge called Yes: reward hacking, where a high reward does not mean a solved task. – where the "
                     "scorer found no rule broken."),
    ("held-out fooled", "the same share by the held-out judge, a second Teacher (another seed and data order) that no "
                        "method optimised against or selected with: a method that learned the rules fools it no more "
                        "than vanilla does; one that learned its Teacher's blind spots does. – where the run had none."),
]
PAPER_COLUMNS: list[tuple[str, str]] = [
    ("score", "the paper's VBVR-Bench overall score for the same method (docs/paper.md)."),
    ("s / item", "the paper's seconds per item; – where the paper gives none."),
]


def _paper_reason(setup: dict[str, str]) -> str:
    """One line: why the paper's figures differ from this run's."""
    zoo = (setup.get("reasoner", "").rstrip("/").endswith("models/reasoner")
           and setup.get("teacher", "").rstrip("/").endswith("models/teacher"))
    models = ("tiny in-house models (the project's zoo: models/reasoner, models/teacher)" if zoo
              else f"the Reasoner {_e(setup.get('reasoner'))} and the Teacher {_e(setup.get('teacher'))}")
    bench = ("a synthetic benchmark (synth)" if setup.get("bench", "synth") == "synth"
             else f"the benchmark {_e(setup.get('bench'))}")
    return (f"Why the paper's figures differ: this run used {models} on {bench}; the paper used Wan2.2-5B and "
            f"Qwen3-VL-4B on VBVR-Bench. The two are <b>not comparable</b>; the paper's columns are there for "
            f"orientation only. Source: docs/paper.md in the repository; the project's measured tables: docs/results.md.")


def _summary_table(data: ReportData) -> str:
    ours = "".join(f"<th>{_e(h)}</th>" for h, _ in SUMMARY_COLUMNS)
    paper = "".join(f"<th class='paper'>{_e(h)}</th>" for h, _ in PAPER_COLUMNS)
    head = (f"<colgroup span='{len(SUMMARY_COLUMNS)}'></colgroup><colgroup span='{len(PAPER_COLUMNS)}' class='paper'>"
            f"</colgroup><thead><tr><th colspan='{len(SUMMARY_COLUMNS)}' class='group'>this run ({len(data.items)} items)"
            f"</th><th colspan='{len(PAPER_COLUMNS)}' class='group paper' id='paper-group'>{_e(PAPER_LABEL)}</th></tr>"
            f"<tr>{ours}{paper}</tr></thead>")
    rows = []
    for r in data.summary:
        fig = PAPER_VBVR.get(r["method"], {})
        rows.append(
            f"<tr>{_method_cell(r['method'])}{_td(r['n'])}{_td(r['errors'])}{_td(_num(r['mean_score']))}"
            f"{_td(_num(r['success_rate'], 2))}{_td(_num(r['seconds_per_item'], 1))}{_td(_num(r['nfe_per_item'], 1))}"
            f"{_td(_num(r['judge_fooled_rate'], 2))}{_td(_num(r.get('heldout_fooled_rate'), 2))}<td class='n paper'>{_num(fig.get('score'))}</td>"
            f"<td class='n paper'>{_num(fig.get('seconds_per_item'), 0)}</td></tr>")
    return (f"<div class='wide'><table class='grid' id='summary'>{head}<tbody>{''.join(rows)}</tbody></table></div>"
            f"<p class='paper-note' id='paper-note'>{_paper_reason(data.setup)}</p>")


def _methods_legend(data: ReportData) -> str:
    """What every column of the method table means, the paper's two included, and what each method is."""
    cols = "".join(f"<dt>{_e(h)}</dt><dd>{d}</dd>" for h, d in SUMMARY_COLUMNS)
    cols += "".join(f"<dt>paper {_e(h)}</dt><dd>under “{_e(PAPER_LABEL)}”: {_e(d)}</dd>" for h, d in PAPER_COLUMNS)
    methods = "".join(f"<dt>{_method_name(m)}</dt><dd>{_e(METHOD_NOTES.get(m, 'no description recorded for this method.'))}"
                      f"</dd>" for m in data.methods)
    return (f"<details open class='legend'><summary>What the columns mean</summary><dl id='legend-columns'>{cols}</dl>"
            f"</details><details open class='legend'><summary>What the methods are</summary>"
            f"<dl id='legend-methods'>{methods}</dl></details>")


def _ruler_table(data: ReportData) -> str:
    """RULER-Bench scores by the judge (0-100), when the run was judged."""
    if not data.ruler:
        return ""
    cols = ["instruction_following", "visual_consistency", "visual_fidelity", "rule_coherence", "overall_average"]
    head = ("<tr><th>method</th><th>judge</th><th>judged</th><th>failed</th>"
            + "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in cols) + "</tr>")
    rows = "".join(f"<tr>{_method_cell(r['method'])}<td>{_label(r['judge'])}</td>{_td(r['n_judged'])}{_td(r['n_failed'])}"
                   + "".join(_td(_num(r[c], 1)) for c in cols) + "</tr>" for r in data.ruler)
    return (f"<h2>RULER-Bench <small>(0-100, by the judge named; not the official judge)</small></h2>"
            f"<div class='wide'><table class='grid' id='ruler'>{head}{rows}</table></div>")


def _rows_table(rows: list[dict], ident: str, title: str, note: str) -> str:
    """A named query's rows as a table (columns in the query's order), with its heading; nothing without rows."""
    if not rows:
        return ""
    cols = list(rows[0])
    head = "<tr>" + "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in cols) + "</tr>"

    def cell(col: str, value) -> str:
        if col == "method" and isinstance(value, str):
            return _method_cell(value)
        return _td(_num(value)) if isinstance(value, float) else f"<td>{_label(value)}</td>"

    body = "".join("<tr>" + "".join(cell(c, r[c]) for c in cols) + "</tr>" for r in rows)
    return (f"<h2>{_e(title)}</h2><p><small>{_e(note)}</small></p>"
            f"<div class='wide'><table class='grid' id='{ident}'>{head}{body}</table></div>")


def _analysis_tables(data: ReportData) -> str:
    return _rows_table(
        data.parts, "parts", "Where the score comes from (synth)",
        "goal: the goal criteria before the gate; gate: the lowest process score, which multiplies the goal credit; "
        "process: the process rules. A gain in process alone is rules kept, not goals reached. (sql/goal_vs_process.sql)",
    ) + _rows_table(
        data.judge_queries, "judge-queries", "The judge query by query",
        "The Teacher's P(Yes) against the scorer's answer to the same query. P(Yes) rising on broken rules after "
        "optimisation is the judge being fooled. (sql/judge_per_query.sql)",
    )


def _ruler_labels(labels: list[dict]) -> str:
    """One line per judged checklist question, or the judge's failure; grouped by judge."""
    lines = []
    judges = list(dict.fromkeys(r["judge"] for r in labels))
    for judge in judges:
        rows = [r for r in labels if r["judge"] == judge]
        who = f"{Path(judge).name}: " if len(judges) > 1 else ""
        if rows[0]["label"] is None:
            lines.append(f"<li class='error'>judge {_e(who)}failed: {_e(rows[0]['error'])}</li>")
            continue
        lines += [f"<li>{_e(who)}{_e(r['dimension'])}: <b>{_e(r['label'])}</b> <small>{_e(r['question'])}</small></li>"
                  for r in rows]
    return "".join(lines)


def _group_table(data: ReportData) -> str:
    groups = sorted({(r["faculty"] or "–", r["split"] or "–") for r in data.by_group})
    cell = {((r["faculty"] or "–"), (r["split"] or "–"), r["method"]): r for r in data.by_group}
    head = ("<tr><th>faculty</th><th>split</th>" + "".join(f"<th class='m'>{_method_name(m)}</th>" for m in data.methods)
            + "</tr>")
    rows = []
    for fac, split in groups:
        cells = "".join(
            f"<td class='n'>{_num(cell[(fac, split, m)]['mean_score'])} <small>({cell[(fac, split, m)]['n']})</small></td>"
            if (fac, split, m) in cell else "<td class='n'>–</td>" for m in data.methods)
        rows.append(f"<tr><td>{_label(fac)}</td><td>{_label(split)}</td>{cells}</tr>")
    return f"<div class='wide'><table class='grid' id='by-group'>{head}{''.join(rows)}</table></div>"


#: A goal criterion counts as met from this score, a process rule only at 1 (``core.scoring.result``).
GOAL_MET = 0.999


def not_met(criteria: dict[str, float]) -> list[tuple[str, float]]:
    """The sub-criteria behind a strict failure: those below 1, lowest first (the rows do not say which are goal
    criteria, met from 0.999, and which are process rules, met only at 1; a score under 0.999 fails either)."""
    return sorted(((k, v) for k, v in criteria.items() if v < 1.0), key=lambda kv: (kv[1], kv[0]))


def _verdict(o: MethodOutcome) -> str:
    """The cell's verdict: success, or fail with the sub-criteria not met, or unscored."""
    if o.score is None:
        return "<span class='unscored'>unscored</span>"
    if o.success:
        return "<span class='success'>success</span>"
    missed = not_met(o.criteria)
    why = (", ".join(f"{_e(k)} {_num(v, 3 if v >= GOAL_MET else 2)}" for k, v in missed) if missed
           else "no sub-criteria recorded")
    return f"<span class='fail'>fail</span> <span class='why'>not met: {why}</span>"


def _item_card(item: ItemView, methods: list[str], media: dict[tuple[str, str], str]) -> str:
    first = media.get((item.instance_id, "first"))
    queries = "".join(f"<li><b>{_e(q.get('kind'))}</b>: {_e(q.get('text'))}</li>" for q in item.queries) or "<li>–</li>"
    gt = media.get((item.instance_id, GROUND_TRUTH))
    if gt:
        gt_body = (f"<video src='{_e(gt)}' muted loop playsinline preload='auto' data-role='ground-truth'></video>"
                   f"<figcaption><b>ground truth</b> <small>the benchmark's reference solution</small></figcaption>")
    else:
        gt_body = ("<div class='missing'>no ground-truth video for this item</div>"
                   "<figcaption><b>ground truth</b></figcaption>")
    cells = [f"<figure class='method gt'>{gt_body}</figure>"]
    for m in methods:
        o = item.outcomes.get(m)
        if o is None:
            continue
        src = media.get((item.instance_id, m))
        if o.error:
            body = f"<div class='error'>failed at {_e(o.error_stage)}: {_e(o.error)}</div>"
        elif src:
            body = f"<video src='{_e(src)}' muted loop playsinline preload='auto' data-method='{_e(m)}'></video>"
        else:
            body = "<div class='error'>video missing</div>"
        missed = {k for k, _ in not_met(o.criteria)} if o.score is not None and not o.success else set()
        crit = "".join(f"<li{' class=bad' if k in missed else ''}>{_e(k)}: {_num(v, 2)}</li>"
                       for k, v in sorted(o.criteria.items())) + _ruler_labels(o.ruler_labels)
        verdict = "" if o.error else _verdict(o)
        cells.append(f"<figure class='method'>{body}<figcaption><b>{_method_name(m)}</b> {_num(o.score)} {verdict}"
                     f"<ul class='crit'>{crit}</ul></figcaption></figure>")
    img = f"<img src='{_e(first)}' alt='first frame' class='first'>" if first else ""
    return (
        f"<section class='item' data-family='{_e(item.family)}' data-split='{_e(item.split or '')}' "
        f"data-outcome='{_e(item.outcome)}' id='item-{_e(file_name(item.instance_id))}'>"
        f"<h3>{_e(item.instance_id)} <small>{_e(item.family)} · {_e(item.split)} · {_e(item.faculty)} · "
        f"teacher vs vanilla: {_e(item.outcome)}</small></h3>"
        f"<div class='row'><div class='prompt'>{img}<p>{_e(item.prompt)}</p><ol class='queries'>{queries}</ol></div>"
        f"<div class='videos'>{''.join(cells)}</div></div></section>")


def _items_legend(data: ReportData, media: dict[tuple[str, str], str]) -> str:
    """What the per-item cells mean: every kind of cell, the rare ones (unscored, failed, missing) where the page has one."""
    outcomes = [(i, o) for i in data.items for o in i.outcomes.values()]
    shown = {
        "unscored": any(o.score is None and not o.error for _, o in outcomes),
        "failed at <stage>": any(o.error for _, o in outcomes),
        "video missing": any(not o.error and (i.instance_id, o.method) not in media for i, o in outcomes),
    }
    entries = [
        ("left", "the item's first frame (the image condition), its prompt, and the Teacher's queries: one goal query "
                 "and up to three process queries, each phrased so that Yes means the rule holds."),
        ("ground truth", "the benchmark's reference solution (its ground_truth.mp4), played in step with the methods' "
                         "videos; “no ground-truth video for this item” where the benchmark has none (RULER-Bench "
                         "ships none)."),
        ("method, number", "the method's video and its score for this item (the VBVR-style score of the method table)."),
        ("success", "strict success: every goal criterion met and no process rule broken."),
        ("fail", "strict success not met. “not met:” lists the sub-criteria below their bar (a goal criterion counts "
                 "as met from 0.999, a process rule only at 1), lowest first. A failed video can still score well: "
                 "the score gives partial credit."),
        ("unscored", "no score in this run: VBVR-Bench and RULER-Bench videos are scored after the run by the "
                     "benchmark's own scorer (vlmt bench score), or by the judge named in the RULER table."),
        ("failed at <stage>", "the method raised an error in that stage: no video and no score (the errors column)."),
        ("video missing", "the result names a video the report could not find or was not allowed to copy."),
        ("list under a video", "every sub-criterion's score in [0, 1], named as the scorer names it; red: not met. "
                               "For a judged RULER run, the judge's label per checklist question."),
        ("teacher vs vanilla", f"fixed: the teacher method succeeds where vanilla fails; broken: the reverse; improved / "
                               f"worsened: the score moves by at least {SCORE_DELTA} either way; unchanged: neither; "
                               f"n/a: one of the two has no score."),
    ]
    body = "".join(f"<dt>{_e(t)}</dt><dd>{_e(d)}</dd>" for t, d in entries if shown.get(t, True))
    return (f"<details open class='legend'><summary>What each item shows</summary>"
            f"<dl id='legend-items'>{body}</dl></details>")


def _select(ident: str, label: str, values: list[str]) -> str:
    opts = "".join(f"<option value='{_e(v)}'>{_e(v)}</option>" for v in values)
    return f"<label>{label} <select id='{ident}'><option value=''>all</option>{opts}</select></label>"


def render(data: ReportData, figures: dict[str, str], media: dict[tuple[str, str], str]) -> str:
    families = sorted({i.family for i in data.items})
    splits = sorted({i.split for i in data.items if i.split})
    outcomes = ["fixed", "broken", "improved", "worsened", "unchanged", "n/a"]
    plots_html = "".join(f"<figure><img src='{_e(src)}' alt='{_e(t)}'><figcaption>{_e(t)}</figcaption></figure>"
                         for t, src in figures.items())
    cards = "".join(_item_card(i, data.methods, media) for i in data.items)
    meta = json.dumps({"experiment_id": data.experiment_id, "items": len(data.items), "methods": data.methods})
    colours = "".join(f"<span class='key'>{_method_name(m)}</span>" for m in data.methods)
    return _PAGE.format(
        title=_e(f"vlmt report: {data.name}"), name=_e(data.name), experiment_id=_e(data.experiment_id), kind=_e(data.kind),
        created=_e(data.created_at), variant=_e(data.variant),
        summary=_summary_table(data) + _methods_legend(data), extra=_ruler_table(data) + _analysis_tables(data),
        groups=_group_table(data), colours=colours,
        plots=plots_html, filters=_select("f-family", "family", families) + _select("f-split", "split", splits)
        + _select("f-outcome", "teacher vs vanilla", outcomes), items_legend=_items_legend(data, media), cards=cards,
        meta=_e(meta), css=_CSS, js=_JS, n_items=len(data.items))


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.grid{border-collapse:collapse;margin:.5em 0 1em;table-layout:auto}
.wide{max-width:100%;overflow-x:auto}  /* a table too wide for the window scrolls by itself, not the page */
table.grid td,table.grid th{border:1px solid #ccc;padding:.25em .45em;text-align:right;vertical-align:top;
  overflow-wrap:break-word;word-break:normal}
/* a label with a long word (a rule or method name) wraps anywhere rather than push into the next column */
.long{overflow-wrap:anywhere;word-break:break-word}
table.grid td:first-child,table.grid td.m{min-width:6.5em}
table.grid td:first-child,table.grid th:first-child,table.grid td.m,table.grid th.group{text-align:left}
table.grid th.group{text-align:center}
table.grid td.n{white-space:nowrap}
table.grid .paper{background:#f3f0e6;color:#555}table.grid th.paper{font-style:italic}
.mname{border-left:.8em solid #999;padding-left:.3em}
.oracle{color:#7a3b69;font-weight:bold}
.paper-note{font-size:.85em;color:#555;max-width:60em}
details.legend{margin:.3em 0 1em;max-width:60em;font-size:.85em}details.legend summary{cursor:pointer;font-weight:bold}
dl{display:grid;grid-template-columns:minmax(6em,14em) 1fr;gap:.2em 1em;margin:.4em 0}
dt{font-weight:bold;overflow-wrap:anywhere;word-break:break-word}dd{margin:0;overflow-wrap:anywhere;word-break:break-word}
.key{margin-right:1em;white-space:nowrap}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{max-width:100%}
.plots figcaption{font-size:.85em;max-width:36em;overflow-wrap:anywhere}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
.filters label{margin-right:1em}
.item{border-top:1px solid #ddd;padding:.5em 0}.item h3{margin:.3em 0;overflow-wrap:anywhere}
.item small{color:#666;font-weight:normal}
.row{display:flex;gap:1em;align-items:flex-start}.prompt{width:16em;flex:none;overflow-wrap:anywhere;word-break:break-word}
.prompt p{font-size:.9em}
img.first,video{width:128px;height:128px;image-rendering:pixelated;background:#000;display:block}
.videos{display:flex;flex-wrap:wrap;gap:.6em;min-width:0}.method{margin:0;width:128px}
.method figcaption{font-size:.8em;width:128px;overflow-wrap:anywhere;word-break:break-word}
.crit{padding-left:1em;margin:.2em 0;color:#555}.crit li{overflow-wrap:anywhere;word-break:break-word}
.crit li.bad{color:#a00}
.success{color:#080}.fail{color:#a00;font-weight:bold}.why{color:#a00}.unscored{color:#666}
.error,.missing{box-sizing:border-box;width:128px;height:128px;font-size:.75em;overflow:auto;overflow-wrap:anywhere;
  word-break:break-word}
.error{color:#a00;border:1px solid #a00}.missing{color:#666;border:1px dashed #999;padding:.3em}
.gt figcaption b{color:#333}
.queries{font-size:.8em;padding-left:1.2em}
"""

_JS = """
const cards=[...document.querySelectorAll('.item')];
const sel=id=>document.getElementById(id);
function visible(card){return !card.hidden;}
function applyFilters(){
  const f=sel('f-family').value,s=sel('f-split').value,o=sel('f-outcome').value;let n=0;
  for(const c of cards){
    const show=(!f||c.dataset.family===f)&&(!s||c.dataset.split===s)&&(!o||c.dataset.outcome===o);
    c.hidden=!show;if(show)n++;
    for(const v of c.querySelectorAll('video')){if(!show)v.pause();}
  }
  sel('count').textContent=n+' of '+cards.length+' items';
  observeAll();
}
const observer=('IntersectionObserver' in window)?new IntersectionObserver(es=>{for(const e of es){
  for(const v of e.target.querySelectorAll('video')){if(e.isIntersecting){v.play().catch(()=>{});}else{v.pause();}}}}):null;
function observeAll(){for(const c of cards){if(observer){observer.unobserve(c);if(visible(c))observer.observe(c);}}}
// keep each item's videos (the ground truth first) in step with its first one
setInterval(()=>{for(const c of cards){if(!visible(c))continue;const vs=c.querySelectorAll('video');if(vs.length<2)continue;
  const t=vs[0].currentTime;for(const v of vs){if(Math.abs(v.currentTime-t)>0.15)v.currentTime=t;}}},500);
for(const id of ['f-family','f-split','f-outcome'])sel(id).addEventListener('change',applyFilters);
applyFilters();
// Where each element's contents are drawn: its text and its children's boxes, overflow included.
function drawn(el){const r=document.createRange();r.selectNodeContents(el);return r.getBoundingClientRect();}
function name(el){return (el.tagName.toLowerCase()+(el.className?'.'+el.className:'')+' '+
  (el.textContent||'').trim().replace(/\\s+/g,' ').slice(0,40));}
// Labels that run into their neighbour: any two siblings in a table row, an item's row or its videos whose drawn
// contents intersect (by more than a pixel each way).
function overlaps(){
  const out={pairs:0,rows:0,found:[],where:{}};
  for(const row of document.querySelectorAll('table tr, .item .row, .item .videos, .filters')){
    if(row.closest('[hidden]'))continue;
    const boxes=[...row.children].map(el=>({el,b:drawn(el)})).filter(x=>x.b.width>0&&x.b.height>0);
    out.rows++;
    for(let i=0;i<boxes.length;i++)for(let j=i+1;j<boxes.length;j++){
      out.pairs++;const a=boxes[i].b,b=boxes[j].b;
      const w=Math.min(a.right,b.right)-Math.max(a.left,b.left),h=Math.min(a.bottom,b.bottom)-Math.max(a.top,b.top);
      if(w<=1||h<=1)continue;
      const where=(row.closest('[id]')||{id:''}).id;out.where[where]=(out.where[where]||0)+1;
      if(out.where[where]<=3)out.found.push({a:name(boxes[i].el),b:name(boxes[j].el),w:Math.round(w),h:Math.round(h),
        row:where});
    }
  }
  return out;
}
async function selftest(){
  const out={videos:[],filters:{}};
  out.overlaps=overlaps();
  const first=cards.find(c=>c.querySelector('video'));
  const vids=first?[...first.querySelectorAll('video')]:[];
  if(first)first.scrollIntoView();
  await new Promise(r=>setTimeout(r,300));
  await Promise.all(vids.map(v=>v.play().catch(e=>{out.play_error=String(e);})));
  await new Promise(r=>setTimeout(r,1500));
  for(const v of vids){out.videos.push({src:v.getAttribute('src'),role:v.dataset.role||'method',readyState:v.readyState,
    paused:v.paused,currentTime:v.currentTime,duration:v.duration,error:v.error?v.error.code:null,width:v.videoWidth});}
  for(const [id,attr] of [['f-family','family'],['f-split','split'],['f-outcome','outcome']]){
    const s=sel(id);out.filters[id]={};
    for(const opt of [...s.options].map(o=>o.value).filter(Boolean)){
      s.value=opt;applyFilters();const shown=cards.filter(visible);
      out.filters[id][opt]={shown:shown.length,all_match:shown.every(c=>c.dataset[attr]===opt),
        expected:cards.filter(c=>c.dataset[attr]===opt).length};
    }
    s.value='';applyFilters();
  }
  out.count_text=sel('count').textContent;
  sel('selftest-result').textContent=JSON.stringify(out);
}
if(location.hash==='#selftest')selftest();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body>
<h1>{name}</h1>
<p>experiment <code>{experiment_id}</code> ({kind}, variant <code>{variant}</code>), written {created}; {n_items} items.</p>
<h2>Methods</h2>
{summary}
{extra}
<h2>By faculty and split <small>(mean score, items)</small></h2>
{groups}
<h2>Plots</h2>
<p class="colours"><small>Each method keeps its colour in every plot and table:</small> {colours}
<small>(plots of the teacher method alone draw in shades of its colour, one per item or stop reason)</small></p>
<div class="plots">{plots}</div>
<h2>Items <small>(by family, then id)</small></h2>
{items_legend}
<div class="filters">{filters} <span id="count"></span></div>
{cards}
<pre id="selftest-result" hidden></pre>
<script type="application/json" id="report-meta">{meta}</script>
<script>{js}</script>
</body></html>
"""
