"""Reading and writing frames, images and videos as uint8 RGB numpy arrays.

Videos are H.264 mp4 (yuv420p, the format every player and the VBVR toolkit read),
encoded and decoded in-process by PyAV (the FFmpeg libraries with libx264 ship in its wheel):
no ffmpeg process per video, which cost ~55 ms of a 64x64 clip's ~70 ms.
Arrays are (T, H, W, 3) uint8 for videos and (H, W, 3) uint8 for images.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import InputError
from core.io import atomic_path

log = logging.getLogger(__name__)


def _av():
    """PyAV, imported where a video file is read or written: generating and scoring videos in
    memory (a GPU machine's benchmark run, say) does not need the FFmpeg libraries installed."""
    import av

    return av

#: Constant rate factor for mp4 writing: visually lossless at our tiny sizes, so that
#: the round trip changes rule-based scores by far less than their tolerance.
DEFAULT_CRF = 12

#: libx264 settings beyond the CRF. ``mbtree=0``: with the macroblock tree on, libx264 (the
#: build in PyAV's wheel, single-threaded as it is for small frames) gave different bytes for the
#: same frames from run to run, measured here: 48 distinct files and 26 distinct *decodings*
#: (up to 22 levels apart) in 2000 encodings of one noisy 64x64 clip, and a flat synth ground
#: truth that changed bytes once in ~250 runs (its content hash, a cache key, with it). Off: 1 file
#: in 2000 for both; ``asm=0`` fixed it too, at 2.5x the encoding time. At CRF 12 the tree's rate
#: savings are immaterial.
X264_PARAMS = "mbtree=0"

#: libx264's own thread count follows the CPUs the process may use, and files encoded with
#: different thread counts differ (bytes and, slightly, decodings): measured here at 256x256,
#: one CPU (1 thread) against two (2 threads). A fixed count makes the file independent of
#: the machine's cores; libx264 still lowers it for frames of few rows (1 thread at 64x64, 7 at 480 rows
#: when asked for 8). 4 costs nothing at our sizes (480x832: 1.8 s against 2.0 s with its default).
X264_THREADS = 4


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8; ``size`` = (width, height) is checked if given."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", "an RGB image (PNG)")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(path, f"unreadable image ({exc})", "an RGB image (PNG)") from exc
    if size is not None and (arr.shape[1], arr.shape[0]) != tuple(size):
        raise InputError(
            path, f"image is {arr.shape[1]}x{arr.shape[0]}", f"{size[0]}x{size[1]} as in the benchmark metadata"
        )
    return arr


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image atomically (format from the suffix, normally PNG)."""
    image = _as_uint8(image)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp)
    return Path(path)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8, crf: int = DEFAULT_CRF) -> Path:
    """Write (T, H, W, 3) uint8 frames as an H.264 mp4, atomically.

    H.264 with yuv420p needs even width and height; odd sizes are refused rather than
    silently resized. The same frames give the same bytes from run to run (``X264_PARAMS``)
    and whatever the number of cores (``X264_THREADS``).
    """
    frames = _video_frames(frames)
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
    av = _av()
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        options = {"crf": str(crf), "preset": "medium", "x264-params": X264_PARAMS, "threads": str(X264_THREADS)}
        stream = container.add_stream("libx264", rate=_rate(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    return Path(path)


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF (for reports and MLflow), atomically.

    Each frame gets its own 256-colour palette by fast octree quantisation without dithering:
    ~30x faster than PIL's default (median cut + Floyd-Steinberg) and exact for the flat
    colours of rendered tasks. The GIF is for people; what is scored is the lossless video.
    """
    frames = _video_frames(frames)
    images = [Image.fromarray(np.ascontiguousarray(f)).quantize(256, method=Image.Quantize.FASTOCTREE,
                                                                dither=Image.Dither.NONE) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return Path(path)


def read_video(path: str | Path, min_frames: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Read a video as (T, H, W, 3) uint8.

    With ``max_frames``, at most that many frames are kept, sampled evenly over the
    whole video (first and last included), as the VBVR evaluators do.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", "a video file (mp4)")
    av = _av()
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, IndexError, ValueError) as exc:  # IndexError: no video stream
        raise InputError(path, f"unreadable video ({exc})", "an mp4 that FFmpeg can decode") from exc
    if len(frames) < min_frames:
        raise InputError(path, f"video has {len(frames)} frames", f"at least {min_frames}")
    video = np.stack(frames)
    if max_frames is not None and len(video) > max_frames:
        video = video[sample_indices(len(video), max_frames)]
    return video


def video_header(path: str | Path) -> tuple[int, float, int, int]:
    """``(n_frames, fps, height, width)`` of a video, from its header where it says (else by decoding)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", "a video file (mp4)")
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            height, width = stream.codec_context.height, stream.codec_context.width
            n = stream.frames or sum(1 for _ in container.decode(video=0))
    except (av.FFmpegError, IndexError, ValueError) as exc:  # IndexError: no video stream
        raise InputError(path, f"unreadable video ({exc})", "an mp4 that FFmpeg can decode") from exc
    if n < 1 or fps <= 0:
        raise InputError(path, f"header says {n} frames at {fps} fps", "a video with frames and a frame rate")
    return int(n), fps, int(height), int(width)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, bicubic; the same array when the size already fits."""
    if image.shape[:2] == (height, width):
        return image
    return np.array(Image.fromarray(_as_uint8(image)).resize((width, height), Image.Resampling.BICUBIC))


def _rate(fps: float) -> Fraction:
    """A frame rate as the exact fraction PyAV wants (8 -> 8/1, 29.97 -> 2997/100)."""
    return Fraction(fps).limit_denominator(1001)


def sample_indices(n_frames: int, k: int) -> np.ndarray:
    """Indices of ``k`` frames spread evenly over ``n_frames`` (first and last included)."""
    if k >= n_frames:
        return np.arange(n_frames)
    return np.round(np.linspace(0, n_frames - 1, k)).astype(int)


def _video_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) frames as uint8, or a clear error."""
    frames = _as_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    return frames


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {arr.dtype}")
    return arr
