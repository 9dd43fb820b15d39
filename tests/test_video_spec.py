"""The video spec of instances without synth metadata (VBVR's official layout): read, overridden, fitted."""

from __future__ import annotations

import pytest

from core.bench.record import Purpose
from core.bench.source import open_benchmark
from core.bench.synth.generate import make_synth_benchmark
from core.errors import InputError
from core.media import read_image
from core.pipeline.stages import item_first_frame
from core.pipeline.video_spec import (
    ReasonerGrid,
    VideoOverride,
    reasoner_grid,
    video_spec,
    with_video_spec,
)


def official_layout(root):
    """A synth benchmark stripped to VBVR's official files (no meta.json, no index): 'vbvr' instances."""
    make_synth_benchmark(root, per_family=1, purpose=Purpose.TEST, families=["maze_navigate", "pattern_grow"])
    for meta in root.glob("*/*/*/meta.json"):
        meta.unlink()
    (root / "VBVR-Bench.json").unlink()
    return open_benchmark(root)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return official_layout(tmp_path_factory.mktemp("official"))


GRID = ReasonerGrid(temporal=4, spatial=8)


def test_the_spec_comes_from_the_ground_truth_header_and_fits_the_grid(bench):
    inst = bench.instances[0]
    assert inst.benchmark == "vbvr" and "n_frames" not in inst.metadata
    assert video_spec(inst, GRID) == {"n_frames": 17, "fps": 8.0, "height": 64, "width": 64}
    spec = video_spec(inst, GRID, VideoOverride(n_frames=20, height=60, width=100, fps=16))
    assert spec == {"n_frames": 17, "fps": 16.0, "height": 56, "width": 96}  # fitted down to the grid
    assert video_spec(inst, ReasonerGrid(temporal=4, spatial=32)) == {"n_frames": 17, "fps": 8.0, "height": 64, "width": 64}


def test_the_spec_rides_in_the_metadata_and_the_first_frame_is_resized_to_it(bench):
    inst = with_video_spec(bench.instances[0], GRID, VideoOverride(height=40, width=48))
    assert {k: inst.metadata[k] for k in ("n_frames", "height", "width")} == {"n_frames": 17, "height": 40, "width": 48}
    assert inst.content_hash() != bench.instances[0].content_hash()  # cache keys follow the spec
    assert read_image(inst.first_frame).shape == (64, 64, 3)
    assert item_first_frame(inst).shape == (40, 48, 3)
    with pytest.raises(InputError, match="video spec"):
        item_first_frame(bench.instances[0])  # a stage never guesses the spec


def test_synth_instances_keep_their_own_video_and_refuse_overrides(tmp_path):
    synth = make_synth_benchmark(tmp_path, per_family=1, purpose=Purpose.TEST, families=["maze_navigate"]).instances[0]
    assert with_video_spec(synth, GRID) is synth  # unchanged: the same content hash, the same cache keys
    with pytest.raises(InputError, match="synth instance"):
        with_video_spec(synth, GRID, VideoOverride(n_frames=9))
    with pytest.raises(InputError, match="grid"):
        with_video_spec(synth, ReasonerGrid(temporal=4, spatial=128))


def test_missing_facts_and_tiny_videos_are_clear_errors(bench):
    inst = bench.instances[0].model_copy(update={"ground_truth": None})
    with pytest.raises(InputError, match="n_frames, fps, height, width.*--frames"):
        video_spec(inst, GRID)
    assert video_spec(inst, GRID, VideoOverride(n_frames=9, fps=8, height=64, width=64))["n_frames"] == 9
    with pytest.raises(InputError, match="at least 5 frames"):
        video_spec(bench.instances[0], GRID, VideoOverride(n_frames=3))
    with pytest.raises(InputError, match="first_frame"):
        video_spec(bench.instances[0].model_copy(update={"first_frame": None}), GRID)


def test_the_grid_is_read_from_the_folders_configs():
    assert reasoner_grid("models/reasoner") == ReasonerGrid(temporal=1, spatial=16)  # no temporal compression; 4x VAE x 4x4 patch
    with pytest.raises(InputError, match="config.json"):
        reasoner_grid("models/teacher")
