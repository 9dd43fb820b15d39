"""The synthetic generator: layout, determinism, disjoint train/test, configurable rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.bench.record import Faculty, Purpose, Split
from core.bench.source import open_benchmark
from core.bench.synth.families import FAMILIES
from core.bench.synth.generate import (
    RenderConfig,
    layout_purpose,
    make_synth_benchmark,
    perturbed_video,
    sample_layout,
)
from core.media import read_image, read_video, write_video
from core.scoring import score_benchmark, summarise


def test_families_cover_all_faculties_and_hold_out_ood_families():
    assert len(FAMILIES) >= 6
    assert {f.faculty for f in FAMILIES.values()} == set(Faculty)
    assert sum(f.split == Split.OOD for f in FAMILIES.values()) >= 2
    assert len({f.task_id for f in FAMILIES.values()}) == len(FAMILIES)


def test_writes_the_vbvr_layout_and_reads_it_back(tmp_path):
    bench = make_synth_benchmark(tmp_path / "b", per_family=2, seed=3)
    assert bench.kind == "synth" and len(bench.instances) == 2 * len(FAMILIES)
    index = json.loads((tmp_path / "b" / "VBVR-Bench.json").read_text())
    assert len(index) == len(bench.instances)
    for inst in bench.instances:
        d = inst.first_frame.parent
        assert {p.name for p in d.iterdir()} >= {"first_frame.png", "final_frame.png", "ground_truth.mp4", "prompt.txt", "meta.json"}
        assert d.parent.parent.name.startswith("In-Domain" if inst.split == Split.ID else "Out-of-Domain")
        assert inst.metadata["purpose"] == "test" and inst.faculty is not None
        video = read_video(inst.ground_truth)
        assert video.shape == (17, 64, 64, 3)
        assert np.abs(video[0].astype(int) - read_image(inst.first_frame).astype(int)).mean() < 3
        assert len(inst.prompt) > 80  # states the goal and the rules


def test_generation_is_deterministic_per_seed(tmp_path):
    a = make_synth_benchmark(tmp_path / "a", per_family=2, seed=11)
    b = make_synth_benchmark(tmp_path / "b", per_family=2, seed=11)
    c = make_synth_benchmark(tmp_path / "c", per_family=2, seed=12)
    for x, y in zip(a.instances, b.instances, strict=True):
        assert x.metadata == y.metadata and x.prompt == y.prompt
        assert x.first_frame.read_bytes() == y.first_frame.read_bytes()
        assert np.array_equal(read_video(x.ground_truth), read_video(y.ground_truth))
        assert x.content_hash() == y.content_hash()
    assert [i.metadata["layout"] for i in a.instances] != [i.metadata["layout"] for i in c.instances]


def test_train_and_test_instances_never_overlap():
    for family in FAMILIES.values():
        train = {json.dumps(sample_layout(family, Purpose.TRAIN, s, i), sort_keys=True) for s in range(3) for i in range(40)}
        test = {json.dumps(sample_layout(family, Purpose.TEST, s, i), sort_keys=True) for s in range(3) for i in range(40)}
        assert not train & test, family.name
        assert all(layout_purpose(family, json.loads(x)) == Purpose.TEST for x in test)


def test_split_and_family_selection(tmp_path):
    ood = make_synth_benchmark(tmp_path / "ood", per_family=1, split=Split.OOD)
    assert {i.split for i in ood.instances} == {Split.OOD}
    one = make_synth_benchmark(tmp_path / "one", per_family=3, families=["flood_fill"])
    assert {i.task_family for i in one.instances} == {"flood_fill"} and len(one.instances) == 3


def test_resolution_and_frame_count_are_configurable_and_still_score_perfectly(tmp_path):
    cfg = RenderConfig(width=96, height=80, n_frames=25, fps=12)
    bench = make_synth_benchmark(tmp_path / "big", per_family=1, seed=5, cfg=cfg)
    assert read_video(bench.instances[0].ground_truth).shape == (25, 80, 96, 3)
    summary = summarise(score_benchmark(bench, ground_truth=True))
    assert summary.overall.mean_score == pytest.approx(1.0) and summary.overall.success_rate == 1.0


def test_odd_sizes_are_refused():
    with pytest.raises(ValueError, match="even"):
        RenderConfig(width=63)


def test_perturbed_video_helper(tmp_path):
    bench = make_synth_benchmark(tmp_path / "p", per_family=1, families=["maze_navigate"])
    meta = bench.instances[0].metadata
    video = perturbed_video(meta, "freeze")
    assert video.shape == (17, 64, 64, 3) and np.array_equal(video[0], video[-1])
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturbed_video(meta, "explode")


def test_missing_video_is_recorded_per_item_without_losing_others(tmp_path):
    bench = make_synth_benchmark(tmp_path / "m", per_family=1, families=["maze_navigate", "flood_fill"])
    videos = tmp_path / "videos"
    keep = bench.instances[0]
    out = bench.write_output(videos, keep, read_video(keep.ground_truth), fps=8)
    assert out == videos / "In-Domain_2" / keep.task_id / f"{keep.index}.mp4"
    items = score_benchmark(bench, videos)
    assert items[0].success and items[0].error is None
    assert items[1].error and "not found" in items[1].error and items[1].score == 0.0
    assert summarise(items).overall.n_errors == 1
    assert open_benchmark(tmp_path / "m").instances == bench.instances


def test_the_same_frames_always_encode_to_the_same_bytes(tmp_path):
    """Content hashes (cache keys) read the ground truth's bytes, and scores read its decoding.

    A noisy 64x64 clip: with libx264's macroblock tree on, 2000 encodings gave 48 different files
    and 26 different decodings; here 20 must all be one.
    """
    rng = np.random.default_rng(0)
    cells = (rng.random((4, 4, 3)) * 255).astype(np.uint8).repeat(16, 0).repeat(16, 1)
    clip = np.stack([np.roll(cells, 2 * t, axis=1) for t in range(17)])
    clip = np.clip(clip.astype(int) + rng.integers(-8, 8, clip.shape), 0, 255).astype(np.uint8)
    files = {write_video(tmp_path / f"{i}.mp4", clip).read_bytes() for i in range(20)}
    assert len(files) == 1
    assert np.abs(read_video(tmp_path / "0.mp4").astype(int) - clip).mean() < 6  # within the clip's +-8 noise


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to compare with one")
def test_the_encoding_does_not_depend_on_the_number_of_cores(tmp_path):
    """libx264 sizes its thread pool from the CPUs it may use; different pools wrote different files."""
    script = (
        "import os, sys\n"
        "if sys.argv[2] == 'one': os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "import numpy as np\nfrom core.media import write_video\n"
        "rng = np.random.default_rng(0)\n"
        "cells = (rng.random((16, 16, 3)) * 255).astype(np.uint8).repeat(16, 0).repeat(16, 1)\n"
        "clip = np.stack([np.roll(cells, 2 * t, axis=1) for t in range(17)])\n"
        "clip = np.clip(clip.astype(int) + rng.integers(-8, 8, clip.shape), 0, 255).astype(np.uint8)\n"
        "write_video(sys.argv[1], clip)\n"
    )
    root = Path(__file__).resolve().parents[1]
    for cores in ("one", "all"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{cores}.mp4"), cores], cwd=root, check=True)
    assert (tmp_path / "one.mp4").read_bytes() == (tmp_path / "all.mp4").read_bytes()


def test_a_scene_renders_in_another_palette_exactly_blended_edges_included():
    """``render(rgb=...)`` (a codec's palette-shuffled training data): every pixel, a sprite's
    anti-aliased edge included, is the same blend of the replacement colours as of the palette's."""
    from core.bench.synth.palette import RGB
    from core.bench.synth.scene import render

    family = FAMILIES["color_match"]
    scene = family.solve(sample_layout(family, Purpose.TRAIN, 0, 0), 17)
    assert np.array_equal(render(scene, rgb=RGB), render(scene))
    # one-hot "colours" make each channel of a render the coverage of one colour id ...
    k = len(RGB)
    one_hot = np.pad(np.eye(k), ((0, 0), (0, -k % 3))) * 255.0  # (k, 3 * ceil(k / 3))
    coverage = np.concatenate([render(scene, rgb=one_hot[:, c : c + 3]).astype(float) / 255.0
                               for c in range(0, one_hot.shape[1], 3)], axis=-1)[..., :k]
    shuffled = RGB[np.random.default_rng(0).permutation(k)]
    # ... so a render in any palette is that coverage times the palette, up to rounding
    assert np.abs(render(scene, rgb=shuffled).astype(float) - coverage @ shuffled).max() <= 1.5
    assert (render(scene, rgb=shuffled) != render(scene)).any()
