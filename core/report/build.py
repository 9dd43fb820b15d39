"""``vlmt report``: a static HTML report of one experiment, with its videos and plots beside it.

    out/index.html            the report (inline CSS and JS; no network fetches)
    out/plots/*.png           matplotlib figures
    out/media/<item>/...      each item's first frame and every method's mp4

Media are copied only from the work directory and the benchmark's, and only when they are
the image or video their place says (``_media_source``): the folder is meant to be shared,
and a first frame's path comes from a benchmark record.

The report is built in a sibling folder and moved into place at the end, so a report that is
being rebuilt is never half written. Opening ``index.html#selftest`` runs the page's own
checks (videos load and play, filters show exactly the matching items) and writes them as
JSON into ``#selftest-result``; the browser test reads that.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from pathlib import Path

from core.bench.ruler_paths import inside, looks_like_image
from core.report import plots
from core.report.data import PAPER_VBVR, ItemView, ReportData, load_report_data
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
    curve_items = list(dict.fromkeys(t["instance_id"] for t in data.traces))[:CURVE_ITEMS]
    written = {
        "Score versus cost (matched compute)": plots.score_vs_cost(data.summary, folder / "score_vs_cost.png"),
        "Early-stop steps of the teacher method": plots.early_stop_steps(data.costs, folder / "early_stop_steps.png"),
        f"Optimisation curves ({len(curve_items)} items)": plots.optimisation_curves(data.traces, curve_items,
                                                                                     folder / "optimisation_curves.png"),
        "Judge versus scorer (reward hacking)": plots.judge_vs_scorer(data.costs, folder / "judge_vs_scorer.png"),
    }
    return {title: f"plots/{path.name}" for title, path in written.items()}


#: Video file suffixes the report copies, and how each format starts: an ISO media ``ftyp`` box, or EBML.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv"})


def _looks_like_video(path: Path) -> bool:
    """Whether ``path`` has a video suffix and starts like an MP4/MOV or a WebM/Matroska file."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
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


def _copy_media(items: list[ItemView], folder: Path, roots: list[Path]) -> dict[tuple[str, str], str]:
    """Copy first frames and videos from ``roots`` beside the report; returns (item, method|'first') -> relative path."""
    rel: dict[tuple[str, str], str] = {}
    for item in items:
        sub = folder / file_name(item.instance_id)
        sources = {"first": (item.first_frame, "image"), **{m: (o.video, "video") for m, o in item.outcomes.items()}}
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


def _summary_table(data: ReportData) -> str:
    head = ("<tr><th>method</th><th>items</th><th>errors</th><th>mean score</th><th>strict success</th>"
            "<th>s / item</th><th>NFE / item</th><th title='of the judged rules the scorer finds broken, the share the "
            "judge called Yes'>judge fooled</th><th>paper VBVR score</th><th>paper s / item</th></tr>")
    rows = []
    for r in data.summary:
        paper = PAPER_VBVR.get(r["method"], {})
        rows.append(
            f"<tr><td>{_e(r['method'])}</td><td>{r['n']}</td><td>{r['errors']}</td><td>{_num(r['mean_score'])}</td>"
            f"<td>{_num(r['success_rate'], 2)}</td><td>{_num(r['seconds_per_item'], 1)}</td><td>{_num(r['nfe_per_item'], 1)}</td>"
            f"<td>{_num(r['judge_fooled_rate'], 2)}</td><td>{_num(paper.get('score'))}</td><td>{_num(paper.get('seconds_per_item'), 0)}</td></tr>")
    return f"<table class='grid' id='summary'>{head}{''.join(rows)}</table>"


def _ruler_table(data: ReportData) -> str:
    """RULER-Bench scores by the judge (0-100), when the run was judged."""
    if not data.ruler:
        return ""
    cols = ["instruction_following", "visual_consistency", "visual_fidelity", "rule_coherence", "overall_average"]
    head = ("<tr><th>method</th><th>judge</th><th>judged</th><th>failed</th>"
            + "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in cols) + "</tr>")
    rows = "".join(f"<tr><td>{_e(r['method'])}</td><td>{_e(r['judge'])}</td><td>{r['n_judged']}</td><td>{r['n_failed']}</td>"
                   + "".join(f"<td>{_num(r[c], 1)}</td>" for c in cols) + "</tr>" for r in data.ruler)
    return (f"<h2>RULER-Bench <small>(0-100, by the judge named; not the official judge)</small></h2>"
            f"<table class='grid' id='ruler'>{head}{rows}</table>")


def _rows_table(rows: list[dict], ident: str, title: str, note: str) -> str:
    """A named query's rows as a table (columns in the query's order), with its heading; nothing without rows."""
    if not rows:
        return ""
    cols = list(rows[0])
    head = "<tr>" + "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in cols) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{_num(r[c]) if isinstance(r[c], float) else _e(r[c])}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<h2>{_e(title)}</h2><p><small>{_e(note)}</small></p><table class='grid' id='{ident}'>{head}{body}</table>"


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
    head = "<tr><th>faculty</th><th>split</th>" + "".join(f"<th>{_e(m)}</th>" for m in data.methods) + "</tr>"
    rows = []
    for fac, split in groups:
        cells = "".join(
            f"<td>{_num(cell[(fac, split, m)]['mean_score'])} <small>({cell[(fac, split, m)]['n']})</small></td>"
            if (fac, split, m) in cell else "<td>–</td>" for m in data.methods)
        rows.append(f"<tr><td>{_e(fac)}</td><td>{_e(split)}</td>{cells}</tr>")
    return f"<table class='grid' id='by-group'>{head}{''.join(rows)}</table>"


def _item_card(item: ItemView, methods: list[str], media: dict[tuple[str, str], str]) -> str:
    first = media.get((item.instance_id, "first"))
    queries = "".join(f"<li><b>{_e(q.get('kind'))}</b>: {_e(q.get('text'))}</li>" for q in item.queries) or "<li>–</li>"
    cells = []
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
        crit = "".join(f"<li>{_e(k)}: {_num(v, 2)}</li>" for k, v in sorted(o.criteria.items())) + _ruler_labels(o.ruler_labels)
        verdict = "unscored" if o.score is None and not o.error else "success" if o.success else "fail"
        cells.append(f"<figure class='method'>{body}<figcaption><b>{_e(m)}</b> {_num(o.score)} <span class='{verdict}'>"
                     f"{verdict}</span><ul class='crit'>{crit}</ul></figcaption></figure>")
    img = f"<img src='{_e(first)}' alt='first frame' class='first'>" if first else ""
    return (
        f"<section class='item' data-family='{_e(item.family)}' data-split='{_e(item.split or '')}' "
        f"data-outcome='{_e(item.outcome)}' id='item-{_e(file_name(item.instance_id))}'>"
        f"<h3>{_e(item.instance_id)} <small>{_e(item.family)} · {_e(item.split)} · {_e(item.faculty)} · "
        f"teacher vs vanilla: {_e(item.outcome)}</small></h3>"
        f"<div class='row'><div class='prompt'>{img}<p>{_e(item.prompt)}</p><ol class='queries'>{queries}</ol></div>"
        f"<div class='videos'>{''.join(cells)}</div></div></section>")


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
    return _PAGE.format(
        title=_e(f"vlmt report: {data.name}"), name=_e(data.name), experiment_id=_e(data.experiment_id), kind=_e(data.kind),
        created=_e(data.created_at), variant=_e(data.variant),
        summary=_summary_table(data) + _ruler_table(data) + _analysis_tables(data),
        groups=_group_table(data),
        plots=plots_html, filters=_select("f-family", "family", families) + _select("f-split", "split", splits)
        + _select("f-outcome", "teacher vs vanilla", outcomes), cards=cards, meta=_e(meta), css=_CSS, js=_JS,
        n_items=len(data.items))


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.grid{border-collapse:collapse;margin:.5em 0 1.5em}
table.grid td,table.grid th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
table.grid td:first-child,table.grid th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{max-width:100%}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
.filters label{margin-right:1em}
.item{border-top:1px solid #ddd;padding:.5em 0}.item h3{margin:.3em 0}.item small{color:#666;font-weight:normal}
.row{display:flex;gap:1em;align-items:flex-start}.prompt{width:16em;flex:none}.prompt p{font-size:.9em}
img.first,video{width:128px;height:128px;image-rendering:pixelated;background:#000}
.videos{display:flex;flex-wrap:wrap;gap:.6em}.method{margin:0}.method figcaption{font-size:.8em;width:128px}
.crit{padding-left:1em;margin:.2em 0;color:#555}.success{color:#080}.fail{color:#a00}
.error{width:128px;height:128px;font-size:.75em;color:#a00;overflow:auto;border:1px solid #a00}
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
// keep each item's videos in step with its first one
setInterval(()=>{for(const c of cards){if(!visible(c))continue;const vs=c.querySelectorAll('video');if(vs.length<2)continue;
  const t=vs[0].currentTime;for(const v of vs){if(Math.abs(v.currentTime-t)>0.15)v.currentTime=t;}}},500);
for(const id of ['f-family','f-split','f-outcome'])sel(id).addEventListener('change',applyFilters);
applyFilters();
async function selftest(){
  const out={videos:[],filters:{}};
  const first=cards.find(c=>c.querySelector('video'));
  const vids=first?[...first.querySelectorAll('video')]:[];
  if(first)first.scrollIntoView();
  await new Promise(r=>setTimeout(r,300));
  await Promise.all(vids.map(v=>v.play().catch(e=>{out.play_error=String(e);})));
  await new Promise(r=>setTimeout(r,1500));
  for(const v of vids){out.videos.push({src:v.getAttribute('src'),readyState:v.readyState,paused:v.paused,
    currentTime:v.currentTime,duration:v.duration,error:v.error?v.error.code:null,width:v.videoWidth});}
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
<p><small>Paper figures: distilled Wan2.2-5B Reasoner and Qwen3-VL-4B Teacher on VBVR-Bench (docs/paper.md in the repository), shown for
orientation only; ours come from the models and benchmark of this run.</small></p>
<h2>By faculty and split <small>(mean score, items)</small></h2>
{groups}
<h2>Plots</h2>
<div class="plots">{plots}</div>
<h2>Items</h2>
<div class="filters">{filters} <span id="count"></span></div>
{cards}
<pre id="selftest-result" hidden></pre>
<script type="application/json" id="report-meta">{meta}</script>
<script>{js}</script>
</body></html>
"""
