"""The synth scorers: ground truth passes, every perturbation fails, noise does not matter."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from core.bench.synth.families import FAMILIES
from core.bench.synth.family import EXTRA_PERTURBATIONS, PERTURBATIONS
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


#: Perturbations that leave the goal reached and break one process rule: "solved with one glitch".
#: Under the VBVR-style sum (goal 0.7, process 0.3) such a video keeps its goal credit, so these
#: score above 0.7 by design; they must still fail strict success and beat a held first frame.
GLITCHES = ("teleport", "vanish", "static_change")
#: The degenerate videos: nothing happens, or the moving objects are gone.
DEGENERATE = ("erase", "still", "freeze")


def _perturbed_scores() -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = defaultdict(list)
    for name, family in FAMILIES.items():
        for index in range(PERTURB_SEEDS):
            inst, layout, scene, _ = make_instance(family, index)
            rng = np.random.default_rng(1000 + index)
            for kind in PERTURBATIONS + EXTRA_PERTURBATIONS:
                broken = family.perturb(kind, layout, scene, rng)
                if broken is not None:
                    out[(name, kind)].append(score_synth(inst, render(broken)))
    return out


@pytest.fixture(scope="module")
def perturbed():
    return _perturbed_scores()


def test_every_perturbation_fails_strict_success_on_every_family(perturbed):
    kinds = {kind for _, kind in perturbed}
    assert kinds == set(PERTURBATIONS + EXTRA_PERTURBATIONS), "every class applies somewhere"
    for (name, kind), results in perturbed.items():
        ok = [r.instance_id for r in results if r.success]
        assert not ok, (name, kind, ok)


def test_perturbations_that_break_the_goal_or_lose_the_object_score_below_0_6(perturbed):
    for (name, kind), results in perturbed.items():
        mean = float(np.mean([r.score for r in results]))
        if kind in DEGENERATE:
            worst = max(r.score for r in results)
            assert worst <= 0.35, (name, kind, worst)  # every single video, not only the mean
        elif kind not in GLITCHES:
            # pass_through keeps the goal where the object walks through a wall to its target (its
            # goal-keeping videos are glitches too) and breaks it where a block falls through its support
            goal_broken = [r.score for r in results if r.goal < 0.999]
            assert kind == "pass_through" or len(goal_broken) == len(results), (name, kind)
            if goal_broken:
                assert float(np.mean(goal_broken)) < 0.6, (name, kind, mean)


def test_solved_with_one_glitch_scores_above_a_held_first_frame_on_every_family(perturbed):
    for name in FAMILIES:
        still = float(np.mean([r.score for r in perturbed[(name, "still")]]))
        for kind in GLITCHES:
            if perturbed.get((name, kind)):
                glitch = float(np.mean([r.score for r in perturbed[(name, kind)]]))
                assert glitch > still + 0.3, (name, kind, glitch, still)
                # the glitch costs its rule's process weight (and no goal credit)
                assert all(r.score < 1.0 - 0.05 for r in perturbed[(name, kind)]), (name, kind)


def test_no_rule_holds_for_an_object_that_is_not_there(perturbed):
    """Erased objects: every rule about them fails; only the scene's own rule keeps its credit."""
    from core.scoring.synth import SCORERS

    for (name, kind), results in perturbed.items():
        if kind != "erase":
            continue
        kept = {SCORERS[name].names["preserved"]}
        for r in results:
            held = {c.name for c in r.criteria if c.score > 0}
            assert held <= kept, (name, {c.name: c.detail for c in r.criteria if c.score > 0})


#: Which scorer criterion (by role) each perturbation class must break.
SPRITE_ROLE = {"teleport": "continuity", "pass_through": "obstacles", "vanish": "integrity", "duplicate": "integrity",
               "wrong_end": "goal", "recolour": "integrity", "freeze": "goal", "static_change": "preserved",
               "erase": "integrity", "still": "continuity"}
PAINT_ROLE = {"teleport": "gradual", "pass_through": "inside", "vanish": "persists", "wrong_end": "goal",
              "recolour": "goal", "freeze": "goal", "static_change": "preserved", "still": "gradual"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_perturbations_break_the_rule_they_name(name):
    """Each class hits the criterion it is about. A held first frame breaks the goal and the rules
    about motion, and keeps the rules that really hold (the scene preserved, the object intact)."""
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
            if kind in ("freeze", "still"):
                honest = [scorer.names["preserved"]] + ([] if isinstance(scorer, PaintScorer) else [scorer.names["integrity"]])
                assert all(result.criterion(n).score == 1.0 for n in honest), {c.name: c.detail for c in result.criteria}
                assert result.criterion(scorer.names[role]).score == 0.0


def test_gated_score_is_kept_beside_the_headline():
    family = FAMILIES["maze_navigate"]
    inst, layout, scene, _ = make_instance(family, 2)
    result = score_synth(inst, render(family.perturb("teleport", layout, scene, np.random.default_rng(0))))
    weights = sum(c.weight for c in result.criteria)
    assert result.score == pytest.approx(sum(c.weight * c.score for c in result.criteria) / weights)
    assert result.gate == 0.0 and result.gated < 0.3 < 0.7 < result.score


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
