"""The report's plots, rendered to PNG with matplotlib's non-interactive backend.

Each function takes rows from ``ReportData`` and writes one figure; none needs a display.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt

from core.io import atomic_path


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return path


def score_vs_cost(summary: list[dict], path: Path) -> Path:
    """Mean score against seconds per item, one point per method (the matched-compute view)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for row in summary:
        if row["mean_score"] is None or row["seconds_per_item"] is None:
            continue
        ax.scatter(row["seconds_per_item"], row["mean_score"], s=40)
        ax.annotate(row["method"], (row["seconds_per_item"], row["mean_score"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xlabel("seconds per item")
    ax.set_ylabel("mean score")
    ax.set_title("Score versus cost")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def early_stop_steps(costs: list[dict], path: Path) -> Path:
    """How many LoRA updates the teacher method ran per item, coloured by why it stopped."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for row in costs:
        if row["method"] == "teacher" and row["steps_run"] is not None:
            by_reason[row["stop_reason"] or "unknown"].append(int(row["steps_run"]))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    if by_reason:
        top = max(max(v) for v in by_reason.values())
        bins = range(top + 2)
        ax.hist(list(by_reason.values()), bins=bins, stacked=True, label=list(by_reason))
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no teacher-method results", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimisation steps run")
    ax.set_ylabel("items")
    ax.set_title("Early-stop steps")
    return _save(fig, path)


def optimisation_curves(traces: list[dict], items: list[str], path: Path) -> Path:
    """Loss and P(Yes) per query over the optimisation steps for ``items``."""
    fig, (ax_loss, ax_p) = plt.subplots(1, 2, figsize=(9, 3.2))
    for item in items:
        rows = [t for t in traces if t["instance_id"] == item]
        if not rows:
            continue
        steps = [t["step"] for t in rows]
        (line,) = ax_loss.plot(steps, [t["loss"] for t in rows], label=item, lw=1.2)
        p_yes = [json.loads(t["p_yes_json"]) if t["p_yes_json"] else [] for t in rows]
        for q in range(max((len(p) for p in p_yes), default=0)):
            ax_p.plot(steps, [p[q] if q < len(p) else None for p in p_yes], color=line.get_color(),
                      ls="-" if q == 0 else ":", lw=1.0)
    ax_loss.set_title("loss")
    ax_p.set_title("P(Yes) per query (solid: goal)")
    for ax in (ax_loss, ax_p):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend(fontsize=6)
    return _save(fig, path)


def judge_vs_scorer(costs: list[dict], path: Path) -> Path:
    """The Teacher's P(Yes) for the goal against the rule-based score, per method."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    by_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in costs:
        if row["judge_goal_p_yes"] is not None and row["score"] is not None:
            by_method[row["method"]].append((row["judge_goal_p_yes"], row["score"]))
    for method, points in by_method.items():
        ax.scatter([p for p, _ in points], [s for _, s in points], s=12, alpha=0.7, label=method)
    ax.set_xlabel("Teacher P(Yes), goal query")
    ax.set_ylabel("rule-based score")
    ax.set_title("Judge versus scorer")
    ax.grid(alpha=0.3)
    if by_method:
        ax.legend(fontsize=7)
    return _save(fig, path)
