"""The synth scorers: ground truth passes, every perturbation fails, noise does not matter."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from core.bench.synth.families import FAMILIES
from core.bench.synth.family import PERTURBATIONS
from core.bench.synth.scene import render
from core.errors import InputError
from core.media import read_video, write_video
from core.scoring import score_synth
from tests.synth_helpers import add_noise, gaussian_blur, make_instance

GT_SEEDS = 50
PERTURB_SEEDS = 30
ROBUST_SEEDS = 12


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_ground_truth_scores_one_with_strict_success(name):
    family = FAMILIES[name]
    for index in range(GT_SEEDS):
        inst, _, _, video = make_instance(family, index)
        result = score_synth(inst, video)
        failed = {c.name: c.detail for c in result.criteria if c.score < 1.0}
        assert result.score == pytest.approx(1.0) and result.success, (index, failed)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_scores_are_robust_to_blur_noise_and_h264(name, tmp_path):
    family = FAMILIES[name]
    for index in range(ROBUST_SEEDS):
        inst, layout, scene, video = make_instance(family, index)
        path = write_video(tmp_path / f"{index}.mp4", video, fps=8)
        variants = {
            "blur": gaussian_blur(video, 1.0),
            "noise": add_noise(video, 5.0, seed=index),
            "h264": read_video(path),
        }
        base = score_synth(inst, video).score
        for label, frames in variants.items():
            assert abs(score_synth(inst, frames).score - base) <= 0.05, (label, index)
        # The same holds for a rule-breaking video: robustness is not only "stays at 1".
        broken = family.perturb("vanish", layout, scene, np.random.default_rng(index))
        if broken is not None:
            frames = render(broken)
            b = score_synth(inst, frames).score
            assert abs(score_synth(inst, gaussian_blur(frames, 1.0)).score - b) <= 0.05
            assert abs(score_synth(inst, add_noise(frames, 5.0, seed=index)).score - b) <= 0.05


def test_every_perturbation_breaks_strict_success_and_lowers_the_score():
    applied: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for family in FAMILIES.values():
        for index in range(PERTURB_SEEDS):
            inst, layout, scene, _ = make_instance(family, index)
            rng = np.random.default_rng(1000 + index)
            for kind in PERTURBATIONS:
                broken = family.perturb(kind, layout, scene, rng)
                if broken is None:
                    continue
                result = score_synth(inst, render(broken))
                applied[kind].append((result.score, result.success))
    assert set(applied) == set(PERTURBATIONS), "every class applies somewhere"
    for kind, outcomes in applied.items():
        assert len(outcomes) >= 30, kind
        fail_rate = np.mean([not ok for _, ok in outcomes])
        mean_score = np.mean([s for s, _ in outcomes])
        assert fail_rate >= 0.95, (kind, fail_rate)
        assert mean_score < 0.6, (kind, mean_score)


#: Which scorer criterion (by role) each perturbation class must break.
SPRITE_ROLE = {"teleport": "continuity", "pass_through": "obstacles", "vanish": "integrity", "duplicate": "integrity",
               "wrong_end": "goal", "recolour": "integrity", "freeze": "goal", "static_change": "preserved"}
PAINT_ROLE = {"teleport": "gradual", "pass_through": "inside", "vanish": "persists", "wrong_end": "goal",
              "recolour": "goal", "freeze": "goal", "static_change": "preserved"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_perturbations_break_the_rule_they_name(name):
    """Each class hits the criterion it is about; freeze breaks the goal and no process rule."""
    from core.scoring.synth import SCORERS, PaintScorer

    scorer = SCORERS[name]
    roles = PAINT_ROLE if isinstance(scorer, PaintScorer) else SPRITE_ROLE
    for index in range(8):
        inst, layout, scene, _ = make_instance(FAMILIES[name], index)
        for kind, role in roles.items():
            broken = FAMILIES[name].perturb(kind, layout, scene, np.random.default_rng(index))
            if broken is None:
                continue
            result = score_synth(inst, render(broken))
            hit = result.criterion(scorer.names[role])
            assert hit.score <= 0.5, (kind, index, hit)
            if kind == "freeze":
                assert result.process == pytest.approx(1.0), {c.name: c.detail for c in result.criteria}


def test_scorer_reads_other_resolutions_and_frame_counts():
    for family in FAMILIES.values():
        inst, _, _, video = make_instance(family, 3)
        upscaled = video.repeat(2, axis=1).repeat(2, axis=2)
        assert score_synth(inst, upscaled).success
        assert score_synth(inst, video[::2]).success  # 9 of 17 frames


def test_weights_and_sub_criteria_are_vbvr_style():
    for family in FAMILIES.values():
        inst, _, _, video = make_instance(family, 1)
        result = score_synth(inst, video)
        assert sum(c.weight for c in result.criteria) == pytest.approx(1.0)
        assert {c.kind for c in result.criteria} == {"goal", "process"}
        assert all(0.0 <= c.score <= 1.0 for c in result.criteria)
        assert len({c.name for c in result.criteria}) == len(result.criteria)


def test_too_few_frames_is_a_clear_error(tmp_path):
    inst, _, _, video = make_instance(FAMILIES["maze_navigate"], 0)
    with pytest.raises(InputError, match="at least 5"):
        score_synth(inst, video[:3])
    path = write_video(tmp_path / "short.mp4", video[:2], fps=8)
    with pytest.raises(InputError, match="short.mp4.*2 frames"):
        score_synth(inst, path)
    with pytest.raises(InputError, match="not found"):
        score_synth(inst, tmp_path / "missing.mp4")


def test_family_mismatch_is_refused():
    inst, _, _, video = make_instance(FAMILIES["maze_navigate"], 0)
    from core.scoring.synth import SCORERS

    with pytest.raises(InputError, match="meta.family"):
        SCORERS["flood_fill"].score(inst, video)
