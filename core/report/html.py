"""The report's page: ``render`` turns a ``ReportData`` and the paths of its figures and media into
the HTML string of index.html. It reads and writes nothing; ``core.report.build`` does the I/O.

The page explains itself to a reader who has not seen the project: a legend under the method
table names what every column and method is (``_methods_legend``), another says what every
per-item cell means (``_items_legend``), the paper's figures sit in their own column group
headed ``PAPER_LABEL`` with the reason they are not comparable, and each method keeps one
colour in the tables and in every plot (``plots.method_colour``). It links to nothing outside
its folder: repository documents are named as plain paths (docs/paper.md, docs/results.md).

Opening ``index.html#selftest`` runs the page's own checks (videos, the ground truth's
included, load and play; no label overlaps its neighbour; filters show exactly the matching
items) and writes them as JSON into ``#selftest-result``; the browser test reads that.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from core.report import page_template, plots
from core.report.data import (
    METHOD_NOTES,
    ORACLE_METHODS,
    PAPER_LABEL,
    PAPER_VBVR,
    SCORE_DELTA,
    ItemView,
    MethodOutcome,
    ReportData,
)
from core.report.media import GROUND_TRUTH
from core.storage.results import file_name


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
    return page_template.PAGE.format(
        title=_e(f"vlmt report: {data.name}"), name=_e(data.name), experiment_id=_e(data.experiment_id), kind=_e(data.kind),
        created=_e(data.created_at), variant=_e(data.variant),
        summary=_summary_table(data) + _methods_legend(data), extra=_ruler_table(data) + _analysis_tables(data),
        groups=_group_table(data), colours=colours,
        plots=plots_html, filters=_select("f-family", "family", families) + _select("f-split", "split", splits)
        + _select("f-outcome", "teacher vs vanilla", outcomes), items_legend=_items_legend(data, media), cards=cards,
        meta=_e(meta), css=page_template.CSS, js=page_template.JS, n_items=len(data.items))
