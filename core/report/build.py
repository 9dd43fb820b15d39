"""``vlmt report``: a static HTML report of one experiment, with its videos and plots beside it.

    out/index.html            the report (inline CSS and JS; no network fetches)
    out/plots/*.png           matplotlib figures
    out/media/<item>/...      each item's first frame, its ground-truth video and every method's mp4

The page itself is rendered by ``core.report.html`` (what it shows and how it explains itself);
which media are copied beside it, and from where, is ``core.report.media``.

The report is built in a sibling folder and moved into place at the end, so a report that is
being rebuilt is never half written.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from core.report import plots
from core.report.data import ReportData, load_report_data
from core.report.html import render
from core.report.media import copy_media
from core.storage.results import slug

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
    media = copy_media(data.items, tmp / "media", [Path(r) for r in data.media_roots])
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
