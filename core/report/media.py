"""The report's media: which first frames and videos are copied beside the page, and from where.

Media are copied only from the work directory and the benchmark's, and only when they are
the image or video their place says (``_media_source``): the folder is meant to be shared,
and a first frame's path comes from a benchmark record.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from core.bench.ruler_paths import inside, looks_like_image
from core.io import file_head
from core.report.data import ItemView
from core.storage.results import file_name

log = logging.getLogger(__name__)


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


def copy_media(items: list[ItemView], folder: Path, roots: list[Path]) -> dict[tuple[str, str], str]:
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
