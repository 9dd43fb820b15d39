"""The Teacher: tokenizer, a tiny Qwen2.5-VL folder that loads offline, differentiable video
pixels that match the library image processor, rule queries and their labels, training."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from core.bench.record import Purpose
from core.bench.synth.family import PERTURBATIONS
from core.bench.synth.generate import make_synth_benchmark, perturbed_video
from core.bench.synth.queries import (
    RuleQueries,
    label_video,
    match_query,
    queries_content_ok,
    query_bank,
    query_truths,
    rule_queries,
)
from core.errors import InputError
from core.models.teacher import (
    YES,
    TeacherArchConfig,
    answer_logprob,
    answer_token_id,
    build_teacher,
    build_teacher_tokenizer,
    frames_to_tensor,
    image_to_pixels,
    load_teacher,
    p_yes,
    render_chat,
    video_qa_batch,
    video_to_pixels,
)
from core.models.tokenizer import build_bpe_tokenizer
from core.scoring.synth import SCORERS, score_synth
from core.train.common import ground_truth_video
from core.train.teacher import (
    TeacherTrainConfig,
    train_teacher,
)
from core.train.teacher_data import build_teacher_data
from core.train.teacher_eval import evaluate_teacher

CORPUS = [
    "Move the red agent to the green goal. Does the red agent reach the green goal cell?",
    "Do the walls stay in place? Does the cyan paint stay inside the gray walls?",
]


@pytest.fixture(scope="module")
def train_bench(tmp_path_factory):
    return make_synth_benchmark(tmp_path_factory.mktemp("teacher-train"), per_family=1, purpose=Purpose.TRAIN)


@pytest.fixture(scope="module")
def test_bench(tmp_path_factory):
    return make_synth_benchmark(tmp_path_factory.mktemp("teacher-test"), per_family=1, purpose=Purpose.TEST)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return build_teacher(tmp_path_factory.mktemp("teacher") / "teacher", CORPUS * 5, TeacherArchConfig.micro(), seed=0)


# --------------------------------------------------------------------------- tokenizer

def test_bpe_tokenizer_round_trips_any_ascii_and_is_deterministic():
    specials = ["<pad>", "</s>", "<unk>"]
    a = build_bpe_tokenizer(CORPUS * 10, 320, specials, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    b = build_bpe_tokenizer(CORPUS * 10, 320, specials, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    assert a.get_vocab() == b.get_vocab()
    assert a.convert_ids_to_tokens([0, 1, 2]) == specials
    rng = random.Random(0)
    alphabet = string.printable  # letters, digits, punctuation and whitespace (tabs, newlines)
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        assert a.decode(a(text, add_special_tokens=False)["input_ids"]) == text
    assert len(a("Does the red agent reach the goal?")["input_ids"]) < len("Does the red agent reach the goal?")
    with pytest.raises(InputError):
        build_bpe_tokenizer(CORPUS, 100, specials, pad_token="<pad>", eos_token="</s>")


def test_teacher_tokenizer_has_single_token_answers_and_chat_specials():
    tok = build_teacher_tokenizer(CORPUS, 400)
    assert tok.convert_ids_to_tokens([answer_token_id(tok, "Yes", "t")]) == ["Yes"]
    assert len(tok("No", add_special_tokens=False)["input_ids"]) == 1
    with pytest.raises(InputError, match="single token"):
        answer_token_id(tok, "Absolutely", "t")
    text = render_chat(tok, [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]}],
                       add_generation_prompt=True, n_video_tokens=5)
    assert text == "<|im_start|>user\n<|vision_start|>" + "<|video_pad|>" * 5 + "<|vision_end|>Q?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|video_pad|>")) == 5


# --------------------------------------------------------------------------- folder, pixels, answers

def test_folder_loads_offline_with_auto_classes_and_answers(teacher_dir):
    processor = AutoProcessor.from_pretrained(teacher_dir, local_files_only=True)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(teacher_dir, local_files_only=True)
    assert processor.tokenizer.image_token == "<|image_pad|>"
    assert processor.image_processor.patch_size == 8 and processor.image_processor.merge_size == 2
    assert model.config.video_token_id == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    # the library processor's own image path works with our folder
    frame = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    chat = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}], tokenize=False)
    out = processor(images=[frame], text=[chat], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert int((out["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        logits = model(**out).logits
    assert torch.isfinite(logits).all()

    teacher = load_teacher(teacher_dir)
    video = (np.random.default_rng(1).random((17, 64, 64, 3)) * 255).astype(np.uint8)
    p = p_yes(teacher, video, "Do the walls stay in place?")
    assert 0.0 < p < 1.0
    assert teacher.tokenizer.decode([teacher.yes_id]) == YES


def test_video_to_pixels_matches_the_image_processor_frame_by_frame(teacher_dir):
    teacher = load_teacher(teacher_dir)
    ip = teacher.processor.image_processor
    video = (np.random.default_rng(2).random((17, 64, 64, 3)) * 255).astype(np.uint8)
    pixels, grid = video_to_pixels(frames_to_tensor(video), teacher.vision)
    assert grid.tolist() == [[9, 8, 8]]  # 17 frames padded to 18 -> 9 temporal patches
    c, tps, p = 3, 2, 8
    per_t = pixels.reshape(9, 64, c, tps, p, p)
    worst = 0.0
    for f in range(18):
        ref = ip(images=[video[min(f, 16)]], return_tensors="pt")["pixel_values"].reshape(64, c, tps, p, p)
        worst = max(worst, float((per_t[f // 2, :, :, f % 2] - ref[:, :, 0]).abs().max()))
    assert worst < 1e-4
    # a single image (frame repeated over the temporal patch) equals the processor's output exactly
    img_px, img_grid = image_to_pixels(frames_to_tensor(video[:1])[0], teacher.vision)
    ref = ip(images=[video[0]], return_tensors="pt")
    assert img_grid.tolist() == ref["image_grid_thw"].tolist()
    assert float((img_px - ref["pixel_values"]).abs().max()) < 1e-4


def test_yes_logprob_is_differentiable_with_respect_to_the_frames(teacher_dir):
    teacher = load_teacher(teacher_dir)
    frames = torch.rand(17, 3, 64, 64, requires_grad=True)
    batch = video_qa_batch(teacher, [frames, frames.detach()], ["Do the walls stay in place?", "Is it done?"])
    assert batch.pixel_values_videos.requires_grad
    yes, no = answer_logprob(teacher, batch)
    assert yes.shape == (2,) and bool((yes < 0).all()) and bool((no < 0).all())
    (-yes[0]).backward()
    assert frames.grad is not None and torch.isfinite(frames.grad).all() and frames.grad.abs().sum() > 0


# --------------------------------------------------------------------------- rule queries

def test_rule_query_json_validation_rejects_bad_shapes():
    ok = RuleQueries(goal="Does the agent reach the goal?", process=["Do the walls stay in place?"])
    assert RuleQueries.parse(ok.to_json()) == ok
    bad = [
        "not json",
        '["Does it?"]',
        '{"process": ["Do the walls stay in place?"]}',
        '{"goal": "Does the agent reach the goal?", "process": []}',
        '{"goal": "Does the agent reach the goal?", "process": ["A one?", "B two?", "C three?", "D four?"]}',
        '{"goal": "Reach the goal.", "process": ["Do the walls stay in place?"]}',
        '{"goal": "Does the agent reach the goal?", "process": ["Do the walls stay in place?"], "extra": 1}',
        '{"goal": "Does the agent reach the goal?", "process": "Do the walls stay in place?"}',
    ]
    for text in bad:
        with pytest.raises(InputError):
            RuleQueries.parse(text)


def test_rule_queries_shape_and_determinism(train_bench):
    families = set()
    for inst in train_bench.instances:
        queries = rule_queries(inst.metadata)
        assert queries == rule_queries(inst.metadata)
        assert [q.kind for q in queries].count("goal") == 1 and 1 <= len(queries) - 1 <= 3
        parsed = RuleQueries.parse(RuleQueries.from_queries(queries).to_json())
        assert queries_content_ok(inst.metadata, parsed)
        assert all(match_query(inst.metadata, q.text) == q for q in queries)
        families.add(inst.task_family)
    assert len(families) == 7
    gravity = next(i for i in train_bench.instances if i.task_family == "gravity_fall")
    colours = [b["colour"] for b in gravity.metadata["layout"]["blocks"]]
    assert all(c in rule_queries(gravity.metadata)[0].text for c in colours)


#: perturbation -> scorer role (SpriteScorer/PaintScorer ``names`` key) it must break
EXPECTED_BREAK = {
    "sprites": {"teleport": "continuity", "pass_through": "obstacles", "vanish": "integrity", "freeze": "goal",
                "static_change": "preserved"},
    "paint": {"teleport": "gradual", "pass_through": "inside", "vanish": "persists", "freeze": "goal",
              "static_change": "preserved"},
}


def test_label_video_says_yes_on_ground_truth_and_no_where_a_rule_is_broken(train_bench):
    checked = 0
    for inst in train_bench.instances:
        bank = [variants[0] for variants in query_bank(inst.metadata)]
        assert all(label_video(inst, ground_truth_video(inst), bank)), inst.id
        names = SCORERS[inst.task_family].names
        for kind in PERTURBATIONS:
            role = EXPECTED_BREAK[inst.metadata["scoring"]["kind"]].get(kind)
            video = perturbed_video(inst.metadata, kind)
            if role is None or video is None:
                continue
            labels = label_video(inst, video, bank)
            relevant = [lab for q, lab in zip(bank, labels, strict=True) if names[role] in q.criteria]
            assert relevant == [False], (inst.id, kind)
            checked += 1
    assert checked >= 25
    inst = train_bench.instances[0]
    text = rule_queries(inst.metadata)[0].text
    assert label_video(inst, ground_truth_video(inst), [text]) == [True]
    with pytest.raises(InputError):
        label_video(inst, ground_truth_video(inst), ["Is the sky blue?"])


def test_query_truths_answer_bank_phrasings_and_leave_other_texts_open(train_bench):
    """The per-query check of a run's judge: the same answers as label_video, None off the bank."""
    for inst in train_bench.instances[::7]:
        texts = [variants[-1].text for variants in query_bank(inst.metadata)]
        for kind in ("vanish", "static_change"):
            video = perturbed_video(inst.metadata, kind)
            if video is None:
                continue
            truths = query_truths(inst, score_synth(inst, video), ["  " + texts[0].upper(), "Is the sky blue?", *texts[1:]])
            assert truths[1] is None
            assert [truths[0], *truths[2:]] == label_video(inst, video, texts)
            assert False in truths, (inst.id, kind)  # the perturbation breaks a rule some query asks about


# --------------------------------------------------------------------------- training

def test_the_erase_perturbation_is_opt_in_and_adds_only_its_own_videos(train_bench):
    """'erase' (every moving object gone after the first frame, the deletion hack): breaks the goal, the
    "intact" rule and the motion rules (no rule holds for an object that is not there); a Teacher's data gains one such video per sprite instance and
    nothing else changes; the default recipe's dump (and so the shipped zoo's keys) is untouched."""
    from pydantic import ValidationError

    from core.train.teacher import TeacherTrainConfig

    plain = build_teacher_data(train_bench, instances_per_family=1, standins_per_instance=1, seed=0)
    more = build_teacher_data(train_bench, instances_per_family=1, standins_per_instance=1, seed=0,
                              extra_perturbations=["erase"])
    erased = [(item, video) for item, video in zip(more.items, more.videos, strict=True) if item.source == "perturbation:erase"]
    sprite_families = {"maze_navigate", "color_match", "gravity_fall", "key_then_goal"}
    assert sorted(more.instances[item.instance].task_family for item, _ in erased) == sorted(sprite_families)
    kept = [(item, video) for item, video in zip(more.items, more.videos, strict=True) if item.source != "perturbation:erase"]
    assert len(kept) == len(plain.items)
    assert all(a.source == b.source and a.labels == b.labels and torch.equal(v, w)
               for (a, v), (b, w) in zip(kept, zip(plain.items, plain.videos, strict=True), strict=True))
    for item, video in erased:
        inst = more.instances[item.instance]
        names = SCORERS[inst.task_family].names
        bank = [variants[0] for variants in query_bank(inst.metadata)]
        truth = {tuple(q.criteria): ok for q, ok in zip(bank, item.labels, strict=True)}
        assert [ok for q, ok in zip(bank, item.labels, strict=True) if q.kind == "goal"] == [False], inst.id
        assert truth[(names["integrity"],)] is False and truth[(names["continuity"],)] is False, inst.id
        assert (video[1:] == video[1:2]).all()  # nothing moves after the first frame
    assert "extra_perturbations" not in TeacherTrainConfig().model_dump()
    with pytest.raises(ValidationError, match="unknown extra perturbation 'melt'"):
        TeacherTrainConfig(extra_perturbations=["melt"])
    with pytest.raises(ValueError, match="unknown perturbation 'melt'"):
        perturbed_video(train_bench.instances[0].metadata, "melt")


def test_criterion_balance_asks_every_question_yes_and_no_equally_often(train_bench):
    """balance='criterion': within each answer, every (family, criterion) group is drawn equally often, so no
    question carries a prior; balance='answer' (the shipped recipe) draws exactly as before, uniformly per answer."""
    from core.train.teacher import _answer_draw, _criterion_draw

    data = build_teacher_data(train_bench, instances_per_family=1, standins_per_instance=1, seed=0)
    pairs, labels = data.pairs()
    groups = data.criterion_groups(pairs)
    assert groups[0].startswith(data.instances[data.items[pairs[0][0]].instance].task_family + "/")
    yes_pool, no_pool = np.nonzero(labels)[0], np.nonzero(~labels)[0]
    draw = _criterion_draw(yes_pool, no_pool, groups)
    for answer, pool in ((True, yes_pool), (False, no_pool)):
        drawn = draw(answer, 40_000, torch.Generator().manual_seed(0)).numpy()
        assert set(labels[drawn]) == {answer}
        present = sorted({groups[j] for j in pool})
        share = np.array([np.mean([groups[j] == g for j in drawn]) for g in present])
        assert np.allclose(share, 1 / len(present), atol=0.01), (answer, share.min(), share.max())
    # the shipped recipe's draw: the same indices as before the option existed
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    old = torch.from_numpy(yes_pool)[torch.randint(len(yes_pool), (8,), generator=gen_a)]
    assert torch.equal(_answer_draw(yes_pool, no_pool)(True, 8, gen_b), old)


def test_micro_training_lowers_the_loss_and_evaluates(train_bench, test_bench, tmp_path):
    torch.set_num_threads(1)
    cfg = TeacherTrainConfig.micro().model_copy(update={"label_workers": 1})
    data = build_teacher_data(train_bench, instances_per_family=1, standins_per_instance=1, seed=0)
    assert data.counts["pairs_no"] > 0 and data.counts["pairs_yes"] > 0
    assert data.counts["perturbation"] >= 7 * 5
    # Reasoner samples join the judging data with scorer labels
    inst = train_bench.instances[0]
    with_samples = build_teacher_data(train_bench.instances[:1], [(inst, ground_truth_video(inst))],
                                      instances_per_family=1, standins_per_instance=0)
    assert with_samples.counts["reasoner"] == 1 and all(with_samples.items[-1].labels)

    report = train_teacher(tmp_path / "teacher", train_bench, cfg, data=data)
    assert report.loss_qa_last < report.loss_qa_first
    assert report.loss_query_last < report.loss_query_first
    assert (tmp_path / "teacher" / "model.safetensors").is_file() and not (tmp_path / "teacher.partial").exists()
    assert report.size_mib < 8

    ev = evaluate_teacher(tmp_path / "teacher", test_bench.instances[:2], standins_per_instance=1, workers=1,
                          n_examples=1)
    assert ev.reasoner_source == "standin"
    assert ev.counts["instances"] == 2 and ev.counts["questions"] == 4 * ev.counts["videos"]
    for value in (ev.accuracy, ev.accuracy_goal, ev.accuracy_process, ev.false_yes_rate, ev.query_valid_rate):
        assert 0.0 <= value <= 1.0
    # per criterion: every question counted once, and the accuracies recombine into the overall one
    per = ev.per_criterion
    assert all("/" in name for name in per) and sum(c["n"] for c in per.values()) == ev.counts["questions"]
    assert sum(c["n"] * c["accuracy"] for c in per.values()) / ev.counts["questions"] == pytest.approx(ev.accuracy, abs=1e-3)
    assert all(0.5 <= c["majority_rate"] <= 1.0 for c in per.values())
