"""The video the Reasoner makes for an item: length, frame rate and size, agreed by every stage.

Synth instances carry it in their metadata (``n_frames``, ``fps``, ``height``, ``width``),
and their scorers depend on it. Instances of the real benchmarks do not: VBVR-Bench's official
layout has a ``ground_truth.mp4`` (1024x1024, 16 fps, about 3 s) and RULER-Bench has neither.
For those, the spec is read from the ground-truth video's header, overridden by the run's
config (``VideoOverride``), then fitted to the Reasoner's grid: a Wan VAE encodes
``1 + k * temporal`` frames, and the transformer patchifies latents, so the frame size must be
a multiple of ``spatial = VAE spatial factor * patch size`` (32 for Wan2.2-TI2V-5B). The spec
is written into the instance's metadata, so every stage (and every cache key, through the
instance's content hash) sees the same one; the first frame is resized to it where needed.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

from diffusers import AutoencoderKLWan, WanTransformer3DModel
from pydantic import BaseModel, ConfigDict, Field

from core.bench.record import TaskInstance
from core.errors import InputError
from core.media import video_header

log = logging.getLogger(__name__)

SPEC_FIELDS = ("n_frames", "fps", "height", "width")


class VideoOverride(BaseModel):
    """What the run sets for benchmarks whose instances do not define their video (not synth)."""

    model_config = ConfigDict(extra="forbid")

    n_frames: int | None = Field(None, ge=2, description="Frames per video; fitted down to 1 + k * temporal factor.")
    fps: float | None = Field(None, gt=0)
    height: int | None = Field(None, ge=1, description="Pixels; fitted down to a multiple of the Reasoner's grid.")
    width: int | None = Field(None, ge=1)


class ReasonerGrid(BaseModel):
    """The Reasoner's granularity: frames come in steps of ``temporal``, pixels of ``spatial``."""

    temporal: int = Field(ge=1)
    spatial: int = Field(ge=1)


def _config(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "does not exist", "a diffusers Wan pipeline folder (vae/ and transformer/ configs)")
    return json.loads(path.read_text())


def _default(cls: type, name: str):
    return inspect.signature(cls.__init__).parameters[name].default


def reasoner_grid(reasoner_dir: str | Path) -> ReasonerGrid:
    """The grid of a Reasoner folder, from its configs alone (no weights are read).

    A config without a field gets the class's default, as ``from_pretrained`` would.
    """
    root = Path(reasoner_dir)
    vae, transformer = _config(root / "vae" / "config.json"), _config(root / "transformer" / "config.json")
    temporal = vae.get("scale_factor_temporal", _default(AutoencoderKLWan, "scale_factor_temporal"))
    spatial = vae.get("scale_factor_spatial", _default(AutoencoderKLWan, "scale_factor_spatial"))
    patch = transformer.get("patch_size", _default(WanTransformer3DModel, "patch_size"))
    return ReasonerGrid(temporal=int(temporal), spatial=int(spatial) * int(max(patch[1], patch[2])))


def fits(spec: dict, grid: ReasonerGrid) -> bool:
    return ((spec["n_frames"] - 1) % grid.temporal == 0 and spec["height"] % grid.spatial == 0
            and spec["width"] % grid.spatial == 0)


def _fit(spec: dict, grid: ReasonerGrid, where: str) -> dict:
    n = 1 + grid.temporal * ((spec["n_frames"] - 1) // grid.temporal)
    h, w = (grid.spatial * (spec[k] // grid.spatial) for k in ("height", "width"))
    if n < 1 + grid.temporal or min(h, w) < grid.spatial:
        raise InputError(where, f"video of {spec['n_frames']} frames at {spec['width']}x{spec['height']}",
                         f"at least {1 + grid.temporal} frames and {grid.spatial}x{grid.spatial} pixels for this Reasoner")
    fitted = {**spec, "n_frames": n, "height": h, "width": w}
    if fitted != spec:
        log.info("%s: video %s fitted to the Reasoner's grid as %s", where,
                 {k: spec[k] for k in SPEC_FIELDS}, {k: fitted[k] for k in SPEC_FIELDS})
    return fitted


def video_spec(instance: TaskInstance, grid: ReasonerGrid, override: VideoOverride | None = None) -> dict:
    """``{n_frames, fps, height, width}`` of the video the Reasoner makes for ``instance``."""
    override = override or VideoOverride()
    given = override.model_dump(exclude_none=True)
    if instance.benchmark == "synth":
        spec = {k: instance.metadata[k] for k in SPEC_FIELDS}
        if given or not fits(spec, grid):
            raise InputError(f"instance {instance.id}", f"is a synth instance with its own video {spec}",
                             f"no video override and a Reasoner whose grid ({grid.temporal} frames, {grid.spatial} "
                             "pixels) fits it: the synth scorers read that video")
        return spec
    if instance.first_frame is None:
        raise InputError(f"instance {instance.id}: first_frame", "is missing",
                         "an image-to-video instance (the Reasoner starts from the first frame)")
    spec: dict = {}
    if instance.ground_truth is not None:
        n, fps, h, w = video_header(instance.ground_truth)
        spec = {"n_frames": n, "fps": fps, "height": h, "width": w}
    spec.update(given)
    missing = [k for k in SPEC_FIELDS if k not in spec]
    if missing:
        raise InputError(f"instance {instance.id}: {', '.join(missing)}",
                         "unknown (no ground-truth video to read them from)",
                         "the run's video override (vlmt evaluate --frames N --fps F --size WxH)")
    return _fit(spec, grid, f"instance {instance.id}")


def with_video_spec(instance: TaskInstance, grid: ReasonerGrid, override: VideoOverride | None = None) -> TaskInstance:
    """The instance with its video spec in its metadata (the same object when nothing changes)."""
    spec = video_spec(instance, grid, override)
    if all(instance.metadata.get(k) == v for k, v in spec.items()):
        return instance
    return instance.model_copy(update={"metadata": {**instance.metadata, **spec}})
