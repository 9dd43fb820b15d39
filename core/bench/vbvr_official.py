"""Scoring official VBVR benchmarks with the official VBVR-Bench evaluation toolkit.

Why this module exists: official VBVR scores must come from the official evaluators, so
vlmt runs VBVR-EvalKit and reads its result rather than scoring VBVR-Bench itself; this
module holds that delegation (``score_with_official_toolkit``), the reading of the
toolkit's result (``read_official_result``) and the checks around it. Reading and
writing the benchmark layout itself is ``core.bench.vbvr``.

Scoring official VBVR benchmarks is delegated to the official toolkit (Python package
``vbvr_bench`` of VBVR-EvalKit), imported lazily; it is not vendored here. Install it
with opencv 4.x (``pip install <VBVR-EvalKit> 'opencv-python<5'``): under opencv 5.x its
dot-to-dot evaluator fails on every video, and a delegation that finds opencv >= 5 warns.
The delegation refuses split folders other than ``In-Domain_50`` / ``Out-of-Domain_50``,
the only ones EvalKit walks, and reports every video EvalKit could not evaluate (see
``score_with_official_toolkit``). Synth benchmarks are scored by vlmt's own scorers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import numbers
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.bench.layout import SPLIT_DIR_PREFIX
from core.errors import InputError, MissingDependencyError, VlmtError

log = logging.getLogger(__name__)


# VBVR-EvalKit's result, as read here. ``VBVRBench(gt_base_path, output_path).evaluate(
# videos_path, name)`` returns (and saves as ``{output_path}/{name}_eval_results.json``) a
# dict, read from the toolkit's source (``vbvr_bench/__init__.py`` and
# ``evaluators/base_evaluator.py`` of VBVR-EvalKit; not vendored):
#
#     {"overall":       {"mean_score", "num_videos", "In_Domain_score", "Out_of_Domain_score",
#                        "by_category": {category: mean}},
#      "In_Domain":     {"mean_score", "num_videos", "scores": [...],
#                        "by_task": {task: {"mean_score", "scores", "dimensions"}}},
#      "Out_of_Domain": {... as In_Domain ...},
#      "by_task":       {task: {"mean_score", "scores", "split", "dimensions"}},
#      "by_category":   {category: {"mean_score", "num_videos", "scores", "tasks", "num_tasks"}},
#      "detailed":      [{"score", "dimensions", "video_path", "task_name", "split",
#                         "video_idx", "error"?, ...}, ...]}
#
# There is no top-level ``mean_score``. A video whose evaluator raised carries ``error`` (the
# exception text) and ``score`` 0.0, and that 0.0 is counted in every mean: the official
# aggregation, kept, but each such video is reported. ``split`` of a video is EvalKit's
# logical split (``In_Domain`` / ``Out_of_Domain``, from the task-id prefix), not the folder.
# An ``error`` on a per-task entry is reported too, although the toolkit is not known to
# write one. A result without the three sections is refused rather than shown as empty.
#
# Which folders EvalKit walks: ``In-Domain_50`` and ``Out-of-Domain_50`` under both roots in
# the current toolkit (``build_evaluation_info``), exact names; an older copy walked
# ``In_Domain`` / ``Out_of_Domain`` / ``Open_60`` / ``Hidden_40``. vlmt targets the current one.

#: The only split folder names VBVR-EvalKit walks (in the benchmark and in the videos
#: directory); a video under any other folder is silently not scored.
EVALKIT_SPLIT_DIRS = ("In-Domain_50", "Out-of-Domain_50")

#: EvalKit's result sections with a mean score, in the order we print them.
EVALKIT_SECTIONS = ("In_Domain", "Out_of_Domain", "overall")

#: How to install the toolkit. EvalKit's dot-to-dot evaluator fails on every video under
#: opencv 5.x ("invalid index to scalar variable", score 0.0; 0.93 on the official ground
#: truth under opencv 4.x), so the install line pins opencv below 5.
EVALKIT_INSTALL = (
    "install it from its own repository with pip, together with opencv 4.x: "
    "`pip install <path-or-git-url of VBVR-EvalKit> 'opencv-python<5'` (under opencv 5.x its "
    "dot-to-dot evaluator fails on every video)"
)


class OfficialSplitScore(BaseModel):
    """One section of EvalKit's result: its mean score (failed videos count as 0.0) and counts."""

    mean_score: float
    n_videos: int
    n_errors: int


class OfficialError(BaseModel):
    """A video (or task) EvalKit could not evaluate; it scored 0.0 and counts in the means."""

    split: str | None = None
    task: str | None = None
    video: str | None = None
    error: str


class OfficialScores(BaseModel):
    """VBVR-EvalKit's result as vlmt reads it; ``raw`` is the toolkit's dict, unchanged."""

    sections: dict[str, OfficialSplitScore]
    by_category: dict[str, float] = Field(default_factory=dict)
    errors: list[OfficialError] = Field(default_factory=list)
    #: Instances of the benchmark with no video: EvalKit leaves them out of every mean.
    missing: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    results_file: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


def read_official_result(raw: Any) -> OfficialScores:
    """Read VBVR-EvalKit's result dict (shape: see the comment above); an unknown shape is a ``VlmtError``."""
    if not isinstance(raw, dict):
        raise VlmtError(f"VBVR-EvalKit returned a {type(raw).__name__}, not its result dict; is `vbvr_bench` the official toolkit?")
    for name in EVALKIT_SECTIONS:
        section = raw.get(name)
        mean = section.get("mean_score") if isinstance(section, dict) else None
        if not isinstance(mean, numbers.Real) or isinstance(mean, bool):
            raise VlmtError(
                f"VBVR-EvalKit's result has no numeric {name}.mean_score (top-level keys: {sorted(map(str, raw))}; "
                f"expected the sections {', '.join(EVALKIT_SECTIONS)}): is `vbvr_bench` the official toolkit?"
            )

    errors: list[OfficialError] = []
    detailed = raw.get("detailed")
    for entry in detailed if isinstance(detailed, list) else []:
        if isinstance(entry, dict) and entry.get("error"):
            video = entry.get("video_path") or entry.get("video_idx")
            errors.append(OfficialError(split=_str_or_none(entry.get("split")), task=_str_or_none(entry.get("task_name")),
                                        video=_str_or_none(video), error=str(entry["error"])))
    for name in EVALKIT_SECTIONS[:-1]:
        by_task = raw[name].get("by_task")
        for task, entry in by_task.items() if isinstance(by_task, dict) else ():
            if isinstance(entry, dict) and entry.get("error"):
                errors.append(OfficialError(split=name, task=str(task), error=str(entry["error"])))

    sections: dict[str, OfficialSplitScore] = {}
    for name in EVALKIT_SECTIONS:
        section = raw[name]
        n_videos = section.get("num_videos")
        if not isinstance(n_videos, int):
            scores = section.get("scores")
            n_videos = len(scores) if isinstance(scores, list) else 0
        n_errors = len(errors) if name == "overall" else sum(1 for e in errors if e.split == name)
        sections[name] = OfficialSplitScore(mean_score=float(section["mean_score"]), n_videos=n_videos, n_errors=n_errors)
    by_category = raw["overall"].get("by_category")
    return OfficialScores(
        sections=sections,
        by_category={str(k): float(v) for k, v in by_category.items() if isinstance(v, numbers.Real)}
        if isinstance(by_category, dict) else {},
        errors=errors,
        raw=raw,
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def evalkit_layout_problems(root: Path) -> list[InputError]:
    """Split folders under ``root`` that VBVR-EvalKit would not walk, one ``InputError`` each.

    vlmt reads any ``In-Domain*`` / ``Out-of-Domain*`` folder and writes outputs back under
    the same name, but EvalKit walks only ``In-Domain_50`` and ``Out-of-Domain_50``: every
    video under another name would be scored as no video at all, silently.
    """
    problems = []
    for entry in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if not entry.is_dir() or entry.name.startswith(".") or entry.name in EVALKIT_SPLIT_DIRS:
            continue
        if any(entry.name.startswith(p) for p in SPLIT_DIR_PREFIX.values()):
            problems.append(InputError(
                entry,
                f"split folder {entry.name!r} is not one VBVR-EvalKit scores (it walks only "
                f"{' and '.join(repr(d) for d in EVALKIT_SPLIT_DIRS)} and would score no video under this one)",
                f"exactly {' or '.join(repr(d) for d in EVALKIT_SPLIT_DIRS)}: rename the folder in the benchmark "
                "and in the videos directory",
            ))
    return problems


def _evalkit_videos(gt_root: Path, videos_root: Path) -> tuple[int, list[str]]:
    """(videos EvalKit will find, benchmark instances without a video) for the exact split folders."""
    n_videos = sum(1 for d in EVALKIT_SPLIT_DIRS for _ in (videos_root / d).glob("*/*.mp4"))
    missing = [
        f"{d}/{inst.parent.name}/{inst.name}"
        for d in EVALKIT_SPLIT_DIRS
        for inst in sorted((gt_root / d).glob("*/*"))
        if inst.is_dir() and not inst.name.startswith(".")
        and not (videos_root / d / inst.parent.name / f"{inst.name}.mp4").is_file()
    ]
    return n_videos, missing


def opencv_version() -> str | None:
    """The installed opencv's version (``cv2.__version__``), or None when ``cv2`` cannot be imported."""
    try:
        import cv2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(getattr(cv2, "__version__", "")) or None


def opencv_warning() -> str | None:
    """A warning when opencv >= 5 is installed (EvalKit's dot-to-dot evaluator then fails); logged once."""
    version = opencv_version()
    major = (version or "").split(".")[0]
    if not major.isdigit() or int(major) < 5:
        return None
    message = (
        f"opencv {version} is installed: VBVR-EvalKit's dot-to-dot evaluator fails on every video under "
        "opencv 5.x (0.0 instead of 0.93 on the official ground truth under 4.x), so its scores are not the "
        "official ones; `pip install 'opencv-python<5'` beside VBVR-EvalKit"
    )
    _log_once(message)
    return message


@functools.cache
def _log_once(message: str) -> None:
    log.warning("%s", message)


def score_with_official_toolkit(gt_root: Path, videos_root: Path, output_dir: Path, name: str = "model") -> OfficialScores:
    """Score ``videos_root`` against ``gt_root`` with the official VBVR-EvalKit toolkit.

    Official VBVR scores must come from the official evaluators, so this only delegates
    and reads the result (shape: see the comment above ``EVALKIT_SPLIT_DIRS``); the
    toolkit's dict is kept unchanged in ``OfficialScores.raw`` and in
    ``{output_dir}/{name}_eval_results.json``. The toolkit is imported lazily because it
    is an optional, separately installed dependency (with opencv < 5, see
    ``EVALKIT_INSTALL``).

    Refused before the toolkit runs, as an ``InputError``: a split folder other than
    ``In-Domain_50`` / ``Out-of-Domain_50`` in either directory (EvalKit would score it
    as zero videos, silently), and a videos directory in which EvalKit would find no
    video. Benchmark instances without a video are listed in ``missing`` (EvalKit leaves
    them out of its means); videos EvalKit could not evaluate are listed in ``errors``
    (EvalKit scores them 0.0 and counts them in its means).
    """
    try:
        from vbvr_bench import VBVRBench  # type: ignore[import-not-found]
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if missing in ("", "vbvr_bench"):
            raise MissingDependencyError(
                "scoring an official VBVR benchmark needs the official VBVR-EvalKit toolkit "
                "(Python package `vbvr_bench`), which is not installed. The official VBVR-EvalKit "
                f"is not on the package index; {EVALKIT_INSTALL}. Synth benchmarks do not "
                "need it: synth benchmarks are scored by vlmt's own scorers instead."
            ) from exc
        raise MissingDependencyError(
            f"the official VBVR toolkit (`vbvr_bench`) is installed but cannot be imported: its "
            f"dependency `{missing}` is missing ({exc}); install the toolkit's requirements with pip "
            "(with `'opencv-python<5'`)"
        ) from exc
    gt_root, videos_root, output_dir = Path(gt_root), Path(videos_root), Path(output_dir)
    if not gt_root.is_dir():
        raise InputError(gt_root, "ground-truth directory not found", "a benchmark root in the VBVR-Bench layout")
    if not videos_root.is_dir():
        raise InputError(videos_root, "videos directory not found", "{split_dir}/{task_id}/{index}.mp4 model outputs")
    problems = evalkit_layout_problems(gt_root) + evalkit_layout_problems(videos_root)
    if problems:
        raise problems[0]
    n_videos, missing_videos = _evalkit_videos(gt_root, videos_root)
    if n_videos == 0:
        raise InputError(videos_root, "no video where VBVR-EvalKit looks for them",
                         "{" + "|".join(EVALKIT_SPLIT_DIRS) + "}/{task_id}/{index}.mp4 model outputs")
    warnings = [w for w in (opencv_warning(),) if w]
    output_dir.mkdir(parents=True, exist_ok=True)
    log.info("scoring %d video(s) in %s against %s with the official VBVR toolkit", n_videos, videos_root, gt_root)
    try:
        # EvalKit prints its progress and summary: to stderr, so that stdout stays ours (tables, --json).
        with contextlib.redirect_stdout(sys.stderr):
            bench = VBVRBench(gt_base_path=str(gt_root), output_path=str(output_dir))
            raw = bench.evaluate(videos_path=str(videos_root), name=name)
    except Exception as exc:  # the toolkit is third-party code: any failure is reported as one line
        raise VlmtError(f"VBVR-EvalKit failed on {videos_root}: {type(exc).__name__}: {exc}") from exc
    result = read_official_result(raw)
    result.missing = missing_videos
    result.warnings = warnings
    results_file = output_dir / f"{name}_eval_results.json"
    result.results_file = str(results_file) if results_file.is_file() else None
    if missing_videos:
        log.info("%d benchmark instance(s) have no video in %s; VBVR-EvalKit leaves them out of its means",
                    len(missing_videos), videos_root)
    return result
