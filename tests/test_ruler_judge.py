"""The RULER-Bench judge: the protocol's message, retries of invalid replies, and a real Qwen-VL judge by path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.bench.record import Purpose
from core.bench.ruler import read_ruler
from core.bench.ruler_judge import (
    JUDGE_INSTRUCTION,
    OFFICIAL_INSTRUCTION,
    OFFICIAL_SYSTEM_PROMPT,
    PROTOCOLS,
    JudgeConfig,
    judge_frames,
    judge_parts,
    judge_videos,
    qwen_vl_reply_fn,
)
from core.bench.ruler_replies import parse_official_labels
from core.bench.ruler_scores import InvalidJudgeReply, aggregate
from core.bench.synth.generate import make_synth_benchmark
from core.errors import InputError
from core.media import write_image, write_video
from core.models.teacher import (
    IMAGE_PAD,
    VIDEO_PAD,
    ImagePart,
    VideoPart,
    chat_inputs,
    load_teacher,
)
from tests.method_helpers import build_micro_teacher

TWO_QUESTIONS = json.dumps([{"Rule Coherence": "Does the ball fall?"}, {"Visual Fidelity": "Is the ball sharp?"}])


def _video(n: int, size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ruler(tmp_path_factory):
    """Three records (a full I2V one, a plain I2V one, a T2V one) and a model's outputs for them."""
    root = tmp_path_factory.mktemp("ruler")
    write_image(root / "in.png", _video(1, (48, 64), 0)[0])
    write_image(root / "gt.png", _video(1, (48, 64), 1)[0])
    write_video(root / "input.mp4", _video(9, (48, 64), 2), fps=4)
    records = [
        {"prompt": "Drop the ball.", "index": 0, "task_name": "physics", "category": "science", "checklist": TWO_QUESTIONS,
         "input_image_path": "in.png", "gt_image_path": "gt.png", "implicit_explanation": "Gravity pulls it down.",
         "input_video_path": "input.mp4"},
        {"prompt": "Colour the square red.", "index": 1, "task_name": "color", "category": "vision rule",
         "checklist": json.dumps([{"Rule Coherence": "Is the square red?"}]), "input_image_path": "in.png"},
        {"prompt": "A cat walks.", "index": 2, "task_name": "sport", "category": "humanity", "checklist": TWO_QUESTIONS},
    ]
    (root / "ruler.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for task, index in (("physics", 0), ("color", 1), ("sport", 2)):
        write_video(root / "out" / "mymodel" / task / f"{index}.mp4", _video(17, (48, 64), 10 + index), fps=8)
    return root, read_ruler(root / "ruler.jsonl")


@pytest.fixture(scope="module")
def micro_teachers(tmp_path_factory):
    torch.set_num_threads(1)
    bench = make_synth_benchmark(tmp_path_factory.mktemp("bench"), per_family=1, purpose=Purpose.TEST,
                                 families=["maze_navigate"])
    out = tmp_path_factory.mktemp("teachers")
    return {f: build_micro_teacher(bench, out, family=f) for f in ("qwen2_5_vl", "qwen3_vl")}


def test_frames_are_resampled_to_two_fps_from_the_first_and_capped_at_512_pixels():
    video = np.arange(17, dtype=np.uint8)[:, None, None, None] * np.ones((1, 600, 1024, 3), dtype=np.uint8)
    frames = judge_frames(video, fps=8, cfg=JudgeConfig())
    assert frames.shape == (5, 300, 512, 3)  # 17 frames at 8 fps = 2.125 s -> t = 0, 0.5, 1, 1.5, 2
    assert [int(f[0, 0, 0]) for f in frames] == [0, 4, 8, 12, 16]
    small = judge_frames(video[:, :48, :64], fps=4, cfg=JudgeConfig())
    assert small.shape[1:3] == (48, 64) and len(small) == 9  # never upscaled; 4.25 s -> 9 frames


def test_the_message_follows_the_protocols_order_and_numbers_the_checklist(ruler):
    root, bench = ruler
    full, plain, t2v = bench.instances
    parts = judge_parts(full, root / "out" / "mymodel" / "physics" / "0.mp4", JudgeConfig(), root)
    kinds = [type(p).__name__ if not isinstance(p, str) else p.split(":")[0] for p in parts]
    assert kinds == ["Input image", "ImagePart", "Input prompt", "Ground-truth image", "ImagePart",
                     "Implicit explanation", "Input video", "VideoPart", "Generated video to evaluate", "VideoPart",
                     "Questions"]
    assert parts[2] == "Input prompt: Drop the ball." and parts[5] == "Implicit explanation: Gravity pulls it down."
    assert parts[-1] == f"Questions:\n1. Does the ball fall?\n2. Is the ball sharp?\n{JUDGE_INSTRUCTION}"
    assert parts[7].fps == 2 and len(parts[7].frames) == 5 and len(parts[9].frames) == 5  # 9 @ 4 fps, 17 @ 8 fps
    assert [type(p).__name__ for p in judge_parts(t2v, root / "out" / "mymodel" / "sport" / "2.mp4", JudgeConfig(), root)
            if not isinstance(p, str)] == ["VideoPart"]  # T2V: only the video to evaluate
    assert sum(isinstance(p, ImagePart) for p in judge_parts(plain, root / "out" / "mymodel" / "color" / "1.mp4",
                                                             JudgeConfig(), root)) == 1


def test_invalid_replies_are_retried_and_an_instance_without_a_valid_one_is_failed_not_counted(ruler):
    root, bench = ruler
    script = {  # per instance: the judge's replies in order
        "physics/0": ["Good", "1. Good\n2. Medium"],  # one label for two questions, then valid
        "color/1": ["Excellent", "maybe", "Great!"],  # never valid
        "sport/2": ["Poor, Poor"],
    }
    calls = []

    def reply_fn(parts, attempt):
        instance = next(i for i in bench.instances if parts[-1].startswith("Questions") and i.prompt in "".join(
            p for p in parts if isinstance(p, str)))
        calls.append((instance.id, attempt))
        return script[instance.id][attempt]

    run = judge_videos(bench, root / "out" / "mymodel", reply_fn, JudgeConfig(), judge="scripted")
    by_id = {r.instance_id: r for r in run.records}
    assert [a.problem is None for a in by_id["physics/0"].attempts] == [False, True]
    assert [q.label for q in by_id["physics/0"].judgement.labels] == ["Good", "Medium"]
    assert by_id["color/1"].judgement is None and len(by_id["color/1"].attempts) == 3
    assert "no valid judge reply in 3 attempt(s)" in by_id["color/1"].error
    assert calls.count(("color/1", 2)) == 1 and ("color/1", 3) not in calls
    assert [r.instance_id for r in run.failed] == ["color/1"]
    assert run.report == aggregate([by_id["physics/0"].judgement, by_id["sport/2"].judgement])
    assert set(run.report.n_instances) == {"science", "humanity"}  # the failed vision-rule instance is not counted


def test_a_thinking_judges_reasoning_is_dropped_and_half_a_thought_is_invalid(ruler):
    root, bench = ruler
    replies = iter(["<think>1. Poor? No, 1. Good; 2. Medium</think>\n1. Good\n2. Medium",  # physics: valid after thinking
                    "<think>the square is red so 1. Good", "<think>ok</think> Good",  # color: cut off, then valid
                    "<think>\nfine\n</think>Poor, Good"])
    run = judge_videos(bench, root / "out" / "mymodel", lambda parts, attempt: next(replies), JudgeConfig(), judge="t")
    labels = {r.instance_id: [q.label for q in r.judgement.labels] for r in run.records}
    assert labels == {"physics/0": ["Good", "Medium"], "color/1": ["Good"], "sport/2": ["Poor", "Good"]}
    assert run.records[1].attempts[0].problem and run.records[1].attempts[0].reply.startswith("<think>")  # kept as given


@pytest.mark.parametrize("reply", [
    '<think>The ball falls, so Good; it is blurred, so Poor.</think><answer>["Good","Poor"]</answer>',
    # reasoning that quotes labels and even an answer block is not the answer
    '<think>\nfirst guess <answer>["Poor","Poor"]</answer>, no:\n1. Good\n</think>\n<answer>\n["Good", "Poor"]\n</answer>\n',
    '<answer>["good", "POOR"]</answer>',  # no reasoning; labels in any case
    '<think>ok</think><answer>```json\n["Good", "Poor"]\n```</answer>',
    '<THINK>ok</THINK>So the labels are:\n<Answer>["Good","Poor"]</Answer>',  # words around the block
    'the template opened the block; "Poor"?</think>\n\n<answer>["Good","Poor"]</answer>',  # Thinking models
])
def test_the_official_reply_format_is_read(reply):
    assert parse_official_labels(reply, 2) == ["Good", "Poor"]
    assert PROTOCOLS["official"].parse(reply, 2) == ["Good", "Poor"]


@pytest.mark.parametrize(("reply", "problem"), [
    ('<think>x</think><answer>["Good"]</answer>', "got 1 label"),
    ('<think>x</think><answer>["Good","Poor","Good"]</answer>', "got 3 label"),
    ('<think>x</think><answer>["Good","Excellent"]</answer>', "label 2 is 'Excellent'"),
    ('<think>x</think><answer>["Good", 2]</answer>', "label 2 is 2"),
    ('<think>x</think>["Good","Poor"]', "0 <answer>"),
    ('<think>x</think><answer>["Good","Poor"]</answer><answer>["Poor","Poor"]</answer>', "2 <answer>"),
    ('<think>Good, Poor <answer>["Good","Poor"]</answer>', "unterminated <think>"),  # cut off mid-thought
    ('<think>x</think><answer>Good, Poor</answer>', "not a JSON list"),
    ('<think>x</think><answer>{"labels": ["Good", "Poor"]}</answer>', "not a JSON list"),
    ("1. Good\n2. Poor", "0 <answer>"),  # the numbered format is not the official one
])
def test_an_official_reply_with_a_wrong_count_or_unknown_label_is_invalid(reply, problem):
    with pytest.raises(InvalidJudgeReply) as info:
        parse_official_labels(reply, 2)
    assert problem in info.value.problem


def test_the_protocol_is_chosen_in_the_config_and_the_default_keeps_its_cache_keys():
    # the dump the judge's cache keys are made from is what it was before the field existed
    assert JudgeConfig().model_dump(mode="json") == {"fps": 2.0, "max_side": 512, "attempts": 3, "temperature": 0.7,
                                                     "max_new_tokens": 256, "seed": 0}
    official = JudgeConfig(protocol="official", max_new_tokens=2048)
    assert official.model_dump(mode="json")["protocol"] == "official"
    assert JudgeConfig.model_validate_json(official.model_dump_json()) == official
    assert JudgeConfig.model_validate_json(JudgeConfig().model_dump_json()).protocol == "numbered"
    with pytest.raises(ValueError, match="protocol"):
        JudgeConfig(protocol="free text")
    official_reply, numbered_reply = '<think>x</think><answer>["Good","Poor"]</answer>', "1. Good\n2. Poor"
    with pytest.raises(InvalidJudgeReply):  # each protocol reads its own format only
        JudgeConfig().judge_protocol.parse(official_reply, 2)
    with pytest.raises(InvalidJudgeReply):
        official.judge_protocol.parse(numbered_reply, 2)


def test_the_official_protocol_opens_with_its_system_prompt_and_retries_invalid_replies(ruler):
    root, bench = ruler
    cfg = JudgeConfig(protocol="official")
    full = bench.instances[0]
    parts = judge_parts(full, root / "out" / "mymodel" / "physics" / "0.mp4", cfg, root)
    assert parts[0] == OFFICIAL_SYSTEM_PROMPT and parts[1] == "Input image:"
    assert parts[-1] == f"Questions:\n1. Does the ball fall?\n2. Is the ball sharp?\n{OFFICIAL_INSTRUCTION}"
    assert "<answer>" in OFFICIAL_SYSTEM_PROMPT and "Good, Medium or Poor" in OFFICIAL_SYSTEM_PROMPT
    script = {
        "physics/0": ['<think>a</think><answer>["Good"]</answer>', '<think>b</think><answer>["Good","Medium"]</answer>'],
        "color/1": ['<answer>["Excellent"]</answer>', "1. Good", '<think>cut off'],  # never valid: failed
        "sport/2": ['<think>c</think>\n<answer>["Poor", "Good"]</answer>'],
    }

    def reply_fn(parts, attempt):
        assert parts[0] == OFFICIAL_SYSTEM_PROMPT
        instance = next(i for i in bench.instances if i.prompt in "".join(p for p in parts if isinstance(p, str)))
        return script[instance.id][attempt]

    run = judge_videos(bench, root / "out" / "mymodel", reply_fn, cfg, judge="scripted")
    by_id = {r.instance_id: r for r in run.records}
    assert [q.label for q in by_id["physics/0"].judgement.labels] == ["Good", "Medium"]
    assert "got 1 label" in by_id["physics/0"].attempts[0].problem
    assert by_id["color/1"].judgement is None and [a.problem is not None for a in by_id["color/1"].attempts] == [True] * 3
    assert [q.label for q in by_id["sport/2"].judgement.labels] == ["Poor", "Good"]
    assert run.report == aggregate([by_id["physics/0"].judgement, by_id["sport/2"].judgement])
    assert run.config.protocol == "official"


def test_a_missing_video_or_input_video_fails_alone(ruler, tmp_path):
    root, bench = ruler
    out = tmp_path / "other"
    write_video(out / "sport" / "2.mp4", _video(9, (32, 32), 3), fps=8)
    run = judge_videos(bench, out, lambda parts, attempt: "Good\nGood", JudgeConfig(), judge="scripted")
    assert [r.instance_id for r in run.failed] == ["physics/0", "color/1"]
    assert "0.mp4" in run.failed[0].error and run.report.n_instances == {"humanity": 1}
    moved = read_ruler(root / "ruler.jsonl").instances[0].model_copy(
        update={"metadata": {"input_video_path": "nowhere.mp4"}})
    with pytest.raises(InputError, match="input_video_path"):
        judge_parts(moved, root / "out" / "mymodel" / "physics" / "0.mp4", JudgeConfig(), root)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_a_qwen_vl_folder_reads_images_and_videos_in_order_and_replies(micro_teachers, family):
    # "auto" (accelerate's device map, for judges larger than one GPU) loads the same model here on the CPU
    teacher = load_teacher(micro_teachers[family], device="auto" if family == "qwen3_vl" else "cpu")
    parts = ["first", ImagePart(_video(1, (32, 32), 0)[0]), "then", VideoPart(_video(5, (32, 48), 1), fps=2.0),
             ImagePart(_video(1, (64, 32), 2)[0]), VideoPart(_video(3, (32, 32), 3), fps=4.0), "end"]
    inputs = chat_inputs(teacher, parts)
    ids = inputs.input_ids[0].tolist()
    merge = teacher.vision.merge_size ** 2
    image_pad, video_pad = (teacher.tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_PAD, VIDEO_PAD))
    assert ids.count(image_pad) == int(inputs.vision["image_grid_thw"].prod(dim=1).sum()) // merge
    assert ids.count(video_pad) == int(inputs.vision["video_grid_thw"].prod(dim=1).sum()) // merge
    # order: image tokens of the first image come before the first video's tokens, which come before the second image's
    first_video = ids.index(video_pad)
    assert ids.index(image_pad) < first_video < len(ids) - ids[::-1].index(image_pad)
    if family == "qwen2_5_vl":
        tps = teacher.vision.temporal_patch_size
        assert inputs.vision["second_per_grid_ts"].tolist() == [tps / 2.0, tps / 4.0]
    else:
        # each video's own rate: frames (0, 1), (2, 3), (4, 4) at 2 fps; (0, 1), (2, 2) at 4 fps
        stamps = [t for t in teacher.tokenizer.decode(ids).split("<") if t.endswith(" seconds>")]
        assert stamps == ["0.2 seconds>", "1.2 seconds>", "2.0 seconds>", "0.1 seconds>", "0.5 seconds>"]
    sampled = qwen_vl_reply_fn(teacher, JudgeConfig(max_new_tokens=8))(parts, 1)  # a retry: seeded sampling
    assert sampled and sampled == qwen_vl_reply_fn(teacher, JudgeConfig(max_new_tokens=8))(parts, 1)
    if family == "qwen3_vl":
        on_cpu = load_teacher(micro_teachers[family])
        assert sampled == qwen_vl_reply_fn(on_cpu, JudgeConfig(max_new_tokens=8))(parts, 1)


def test_vlmt_bench_score_judges_ruler_with_a_qwen_vl_folder_keeps_every_reply_and_resumes(
        prefect_harness, ruler, micro_teachers, tmp_path):
    """A random micro judge cannot write valid labels: every video is failed, with each attempt's reply kept.

    The judging runs as the cached ``ruler-judge`` flow: a rerun reuses every judged video, a
    changed video is judged again, and another attempt count is another judge config.
    """
    from typer.testing import CliRunner

    from cli.main import app

    root, _ = ruler
    videos = tmp_path / "out" / "mymodel"
    for task, index in (("physics", 0), ("color", 1), ("sport", 2)):
        write_video(videos / task / f"{index}.mp4", _video(9, (32, 32), 20 + index), fps=8)
    details = tmp_path / "judge.json"
    args = ["bench", "score", "--bench", str(root / "ruler.jsonl"), "--videos", str(videos), "--work", str(tmp_path / "w"),
            "--judge", str(micro_teachers["qwen2_5_vl"]), "--judge-attempts", "2", "--details", str(details), "--json"]

    def judged() -> dict:
        r = CliRunner().invoke(app, args)
        lines = [line for line in r.output.splitlines() if line.startswith('{"judge"')]  # Prefect may log after it
        assert r.exit_code == 1 and len(lines) == 1, (r.output, r.exception)
        return json.loads(lines[0])

    payload = judged()
    saved = json.loads(details.read_text())
    assert saved["judge"] == str(micro_teachers["qwen2_5_vl"]) and saved["config"]["attempts"] == 2
    for record in saved["records"]:
        assert record["judgement"] is not None or (len(record["attempts"]) == 2
                                                   and all(a["problem"] for a in record["attempts"]))
    assert payload["n_judged"] + payload["n_failed"] == 3 and payload["n_reused"] == 0
    assert payload["n_failed"] == len([r for r in saved["records"] if r["judgement"] is None])
    assert json.loads((tmp_path / "w" / "judge-mymodel.json").read_text()) == saved

    write_video(videos / "sport" / "2.mp4", _video(9, (32, 32), 99), fps=8)  # a new video for one instance
    again = judged()
    assert again["n_reused"] == 2 and json.loads(details.read_text())["records"][:2] == saved["records"][:2]
    args[args.index("--judge-attempts") + 1] = "1"
    assert judged()["n_reused"] == 0

    missing = CliRunner().invoke(app, ["bench", "score", "--bench", str(root / "ruler.jsonl"), "--videos", str(videos)])
    assert missing.exit_code != 0 and "--judge" in missing.output
