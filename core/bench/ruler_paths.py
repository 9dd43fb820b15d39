"""RULER-Bench image paths: where a record's images may lie and what they must be.

Why this module exists: a record file is downloaded data, and the paths it names are
read by the loader (``core.bench.ruler``) and copied by the report beside its HTML
(``core.report.media``). Both ask the same two questions here: is the path inside the
benchmark, and is the file an image.

Image paths are relative to ``image_root`` (default: the record file's directory), the
benchmark directory; an absolute path is accepted only inside it. A path that leads out
of it (absolute elsewhere, or through ``..``) or names a file that is not an image (by
suffix and by content) is an error naming the record and field. A path that is given
but does not exist is an error too: a silently missing first frame would turn an I2V
task into a T2V task. Containment is checked on the path as written (``..`` collapsed,
links not followed), so a benchmark whose image files are links, such as a Hugging Face
cache snapshot, still loads; the content check reads through the link.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.io import file_head

#: Image file suffixes a record may name, and the leading bytes of each format.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"})
_IMAGE_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"\x89PNG"), (0, b"\xff\xd8\xff"), (0, b"GIF87a"), (0, b"GIF89a"), (0, b"BM"), (8, b"WEBP"),
)


def looks_like_image(path: Path) -> bool:
    """Whether ``path`` has an image suffix and starts like a PNG, JPEG, GIF, BMP or WebP file.

    Both, because the suffix alone lets any file through under an image's name, and the
    content alone would accept an image saved as, say, ``notes.txt``.
    """
    head = file_head(path, 16) if path.suffix.lower() in IMAGE_SUFFIXES else None
    if head is None:
        return False
    if head[8:12] == b"WEBP" and not head.startswith(b"RIFF"):
        return False
    return any(head[at:at + len(magic)] == magic for at, magic in _IMAGE_MAGIC)


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in ``root``: as written (``..`` collapsed, links kept) or once both are resolved.

    The first lets a benchmark of linked files (a Hugging Face snapshot) load; the second a
    root that is itself reached through a link. Neither lets ``..`` or an absolute path out.
    """
    if Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)):
        return True
    return path.resolve().is_relative_to(root.resolve())


def resolve_image(value: Any, image_root: Path, where: str) -> Path | None:
    """The absolute image path (``..`` collapsed), or None where the record gives none (T2V tasks).

    Refuses a path out of ``image_root`` and a file that is not an image (module docstring);
    ``where`` names the record and field in the error.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InputError(where, f"is a {type(value).__name__}, not a path string", "a path relative to the image root, or null")
    path = Path(value.strip())
    if not path.is_absolute():
        path = image_root / path
    path = Path(os.path.abspath(path))
    if not inside(path, image_root):
        raise InputError(where, f"path {value.strip()!r} leads outside the benchmark directory {os.path.abspath(image_root)}",
                         "a path inside the benchmark directory (relative to it, or absolute within it)")
    if not path.is_file():
        raise InputError(where, f"image not found: {path}", f"an existing file (relative paths resolve against {image_root})")
    if not looks_like_image(path):
        raise InputError(where, f"{path} is not an image file",
                         f"a PNG, JPEG, GIF, BMP or WebP file with its suffix ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return path
