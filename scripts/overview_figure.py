"""The README's picture: one item's ground truth beside methods' videos, from a finished run.

    .venv/bin/python scripts/overview_figure.py [--db runs/demo/vlmt.duckdb] [--family maze_navigate]
        [--methods vanilla,teacher,still] [--frames 6] [--out docs/overview.png]

Reads the run's DuckDB file for the item's videos and the benchmark's ground truth, and draws
one row per video (ground truth first) of ``--frames`` frames spread over the clip, each
labelled with its method and score. Not a test: it makes a figure from whatever the run made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=Path("runs/demo/vlmt.duckdb"))
    parser.add_argument("--family", default="maze_navigate")
    parser.add_argument("--methods", default="vanilla,teacher,still")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("docs/overview.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from core.media import read_video
    from core.storage.warehouse import query

    work = args.db.parent
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = query(args.db, "SELECT r.instance_id, r.method, r.score, r.success, r.video_path, e.config_json "
                          "FROM results r JOIN experiments e USING (experiment_id) "
                          "WHERE r.family = $f AND r.error IS NULL ORDER BY e.created_at DESC, r.instance_id",
                 {"f": args.family}).to_dicts()
    if not rows:
        raise SystemExit(f"{args.db}: no finished result of family {args.family!r}")
    item = rows[0]["instance_id"]
    by_method = {r["method"]: r for r in rows if r["instance_id"] == item}
    bench = next(work.glob("bench/*/VBVR-Bench.json")).parent
    truth = next(bench.glob(f"*/*{args.family}*/{item.split('/')[-1]}/ground_truth.mp4"))

    def resolve(path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else work / p

    videos = [("ground truth", 1.0, read_video(truth))]
    videos += [(m, by_method[m]["score"], read_video(resolve(by_method[m]["video_path"]))) for m in methods if m in by_method]
    fig, axes = plt.subplots(len(videos), args.frames, figsize=(1.3 * args.frames + 1.6, 1.35 * len(videos)), squeeze=False)
    for row, (label, score, frames) in enumerate(videos):
        picks = np.round(np.linspace(0, len(frames) - 1, args.frames)).astype(int)
        for col, f in enumerate(picks):
            ax = axes[row][col]
            ax.imshow(frames[f], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {f}", fontsize=8)
        axes[row][0].set_ylabel(f"{label}\nscore {score:.2f}", fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{item}: the first frame is given; each row is one video", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"{args.out}: {item}, rows {[v[0] for v in videos]}")


if __name__ == "__main__":
    main()
