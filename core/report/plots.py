"""The report's plots, rendered to PNG with matplotlib's non-interactive backend.

Each function takes rows from ``ReportData``, writes one figure and returns it as a ``Plot``:
the file and a title that counts what was actually drawn (the page's caption is that title).
None needs a display.

Colours: one per method, the same in every plot and in the page's tables (``method_colour``),
so a reader who learns "teacher is vermilion" once can read every figure. Plots of the teacher
method alone (its early stops, its optimisation curves) draw in shades of the teacher's colour.
The oracles (``pass_at_n``, ``oracle_reward``) are labelled as such in every legend (``data.method_label``).
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt
from matplotlib.colors import to_hex, to_rgb

from core.io import atomic_path
from core.report.data import method_label

#: The fixed colour of each known method (Okabe-Ito, colour-blind safe, plus three distinct extras).
METHOD_COLOURS: dict[str, str] = {
    "vanilla": "#0072b2",    # blue
    "best_of_n": "#e69f00",  # orange
    "best_of_n_heldout": "#f0e442",  # yellow: best-of-N's other judge
    "pass_at_n": "#cc79a7",  # reddish purple: the oracle
    "pe": "#56b4e9",         # sky blue
    "videotpo": "#009e73",   # bluish green
    "teacher": "#d55e00",    # vermilion: the paper's method
    "shared": "#8c564b",     # brown
    "grpo": "#6a3d9a",       # purple
    "oracle_reward": "#882255",  # wine: the other oracle, beside pass_at_n's hue
    "still": "#7f7f7f",      # grey: the reference
}
#: Colours for methods the table above does not know, picked by a stable hash of the name.
_EXTRA_COLOURS = ("#17becf", "#bcbd22", "#1f77b4", "#2ca02c", "#e377c2", "#393b79", "#637939", "#843c39")


def method_colour(method: str) -> str:
    """The colour of ``method`` in every plot and table: fixed for known methods, and for any
    other name the same in every process and run (crc32, not Python's salted ``hash``)."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return _EXTRA_COLOURS[zlib.crc32(method.encode()) % len(_EXTRA_COLOURS)]


def shades(colour: str, n: int) -> list[str]:
    """``n`` shades of ``colour``, darker to lighter (``colour`` itself when n is 1): the teacher-only plots' items."""
    if n <= 1:
        return [to_hex(colour)] * max(n, 0)
    rgb = to_rgb(colour)
    out = []
    for k in range(n):
        t = -0.45 + 1.0 * k / (n - 1)  # -0.45: towards black ... +0.55: towards white
        target, w = ((0.0, 0.0, 0.0), -t) if t < 0 else ((1.0, 1.0, 1.0), t)
        out.append(to_hex(tuple(c + (g - c) * w for c, g in zip(rgb, target, strict=True))))
    return out


class Plot(NamedTuple):
    """One written figure: its file, and its title, which says how much it draws."""

    path: Path
    title: str


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return path


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def score_vs_cost(summary: list[dict], path: Path) -> Plot:
    """Mean score against seconds per item, one point per method (the matched-compute view)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn = 0
    for row in summary:
        if row["mean_score"] is None or row["seconds_per_item"] is None:
            continue
        method = row["method"]
        ax.scatter(row["seconds_per_item"], row["mean_score"], s=40, color=method_colour(method),
                   label=method_label(method), gid=method)
        ax.annotate(method_label(method), (row["seconds_per_item"], row["mean_score"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8, color=method_colour(method))
        drawn += 1
    title = f"Score versus cost ({_count(drawn, 'method')}; matched compute)"
    ax.set_xlabel("seconds per item")
    ax.set_ylabel("mean score")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return Plot(_save(fig, path), title)


def early_stop_steps(costs: list[dict], path: Path) -> Plot:
    """How many LoRA updates the teacher method ran per item, coloured by why it stopped."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for row in costs:
        if row["method"] == "teacher" and row["steps_run"] is not None:
            by_reason[row["stop_reason"] or "unknown"].append(int(row["steps_run"]))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    n = sum(len(v) for v in by_reason.values())
    if by_reason:
        top = max(max(v) for v in by_reason.values())
        bins = range(top + 2)
        ax.hist(list(by_reason.values()), bins=bins, stacked=True, label=list(by_reason),
                color=shades(method_colour("teacher"), len(by_reason)), gid="teacher")
        ax.legend(fontsize=8, title="stop reason", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no teacher-method results", ha="center", va="center", transform=ax.transAxes)
    title = f"Early-stop steps of the teacher method ({_count(n, 'item')})"
    ax.set_xlabel("optimisation steps run")
    ax.set_ylabel("items")
    ax.set_title(title, fontsize=10)
    return Plot(_save(fig, path), title)


def optimisation_curves(traces: list[dict], items: list[str], path: Path) -> Plot:
    """Loss and P(Yes) per query over the optimisation steps of the teacher method for ``items``."""
    fig, (ax_loss, ax_p) = plt.subplots(1, 2, figsize=(9, 3.2))
    by_item = {item: [t for t in traces if t["instance_id"] == item] for item in items}
    drawn = [item for item, rows in by_item.items() if rows]
    for item, colour in zip(drawn, shades(method_colour("teacher"), len(drawn)), strict=True):
        rows = by_item[item]
        steps = [t["step"] for t in rows]
        ax_loss.plot(steps, [t["loss"] for t in rows], label=item, lw=1.2, color=colour, gid="teacher")
        p_yes = [json.loads(t["p_yes_json"]) if t["p_yes_json"] else [] for t in rows]
        for q in range(max((len(p) for p in p_yes), default=0)):
            ax_p.plot(steps, [p[q] if q < len(p) else None for p in p_yes], color=colour,
                      ls="-" if q == 0 else ":", lw=1.0, gid="teacher")
    title = f"Optimisation curves of the teacher method ({_count(len(drawn), 'item')})"
    fig.suptitle(title, fontsize=10)
    ax_loss.set_title("loss", fontsize=9)
    ax_p.set_title("P(Yes) per query (solid: goal)", fontsize=9)
    for ax in (ax_loss, ax_p):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend(fontsize=6)
    return Plot(_save(fig, path), title)


def judge_vs_scorer(costs: list[dict], path: Path) -> Plot:
    """The Teacher's P(Yes) for the goal against the rule-based score, per method."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    by_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in costs:
        if row["judge_goal_p_yes"] is not None and row["score"] is not None:
            by_method[row["method"]].append((row["judge_goal_p_yes"], row["score"]))
    for method, points in by_method.items():
        ax.scatter([p for p, _ in points], [s for _, s in points], s=12, alpha=0.7, color=method_colour(method),
                   label=method_label(method), gid=method)
    n = sum(len(v) for v in by_method.values())
    title = f"Judge versus scorer ({_count(n, 'video')} of {_count(len(by_method), 'method')}; reward hacking)"
    ax.set_xlabel("Teacher P(Yes), goal query")
    ax.set_ylabel("rule-based score")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if by_method:
        ax.legend(fontsize=7)
    return Plot(_save(fig, path), title)
