"""Train and evaluate the tiny Teacher (Qwen2.5-VL) on the synthetic benchmark, all 7 families.

Two jobs, one model, trained jointly from scratch:

* **rule extraction**: first frame (image) + instruction -> the instance's reference rule
  set as compact JSON (``core.bench.synth.queries.rule_queries``), cross-entropy on the JSON
  tokens and the closing ``<|im_end|>`` only;
* **video judging**: K frames (a video input) + one rule question -> "Yes"/"No",
  cross-entropy on the answer token only.

Judging data and training-time augmentation: ``core.train.teacher_data``.

Training is budgeted in steps and seeded, so a config reproduces its weights;
``max_minutes`` is an optional safety cap that trades that away.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, field_validator, model_serializer

from core.bench.layout import Benchmark
from core.bench.record import TaskInstance
from core.bench.synth.family import EXTRA_PERTURBATIONS
from core.config import StrictConfig, drop_unset
from core.errors import InputError
from core.io import write_json_atomic
from core.models.teacher import (
    IM_END,
    Teacher,
    TeacherArchConfig,
    build_image_processor,
    build_teacher,
    frames_to_tensor,
    image_to_pixels,
    load_teacher,
    mm_token_types,
    query_prompt_ids,
    save_teacher,
    video_qa_batch,
)
from core.train.checkpoint import TrainingCheckpoint, resume
from core.train.common import seed_everything, step_progress
from core.train.teacher_data import AugmentConfig, TeacherData, augment_video, build_teacher_data

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- configs

class TeacherTrainConfig(StrictConfig):
    """Everything that decides a trained Teacher. Defaults: the shipped zoo's recipe."""

    arch: TeacherArchConfig = TeacherArchConfig()
    seed: int = 0
    instances_per_family: int | None = Field(60, description="Cap on train instances used per family (None: all).")
    standins_per_instance: int = Field(2, description="Reasoner stand-in videos per instance (blur/noise/ghost/shuffle).")
    steps: int = Field(1200, ge=1)
    max_minutes: float | None = Field(
        None, description="Optional wall-time cap on the step loop, resumed runs included (breaks reproducibility).")
    lr: float = 2e-3
    min_lr_fraction: float = 0.05
    warmup_steps: int = 60
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    batch_qa: int = Field(16, ge=1, description="(video, question) pairs per step.")
    batch_query: int = Field(4, ge=0, description="Query-writing examples per step they are trained.")
    query_every: int = Field(2, ge=1, description="Train rule extraction every n-th step.")
    label_workers: int | None = Field(None, description="Processes that score the training videos (None: torch's thread count).")
    query_weight: float = 0.5
    aux_weight: float = Field(1.0, description="Weight of the training-only cell-colour loss on the vision tokens.")
    aux_llm_weight: float = Field(1.0, description="Weight of the training-only 'colour at the first / previous patch' "
                                                   "loss on the video tokens after the first decoder layer.")
    aux_llm_layer: int = 1
    augment: AugmentConfig = AugmentConfig()
    threads: int | None = Field(None, description="torch threads for training (None: leave as is).")
    balance: Literal["answer", "criterion"] = Field("answer", description=(
        "How judging batches are drawn. 'answer': half Yes, half No pairs, each uniformly (the shipped zoo); a "
        "criterion that is usually broken (goals, 'intact') then appears mostly as No, and the Teacher learns that "
        "prior instead of looking. 'criterion': within the Yes half and the No half, every (family, criterion) "
        "equally often, so each question is Yes half the time. Measured on the zoo's recipe: goal and 'intact' P(Yes) "
        "moves to ~0.5 but still does not depend on the video, and accuracy falls 0.704 -> 0.670 (false Yes 0.21 -> "
        "0.65): off."))
    extra_perturbations: list[str] = Field(default_factory=list, description=(
        f"Rule-breaking videos beyond the benchmark's standard classes, one per instance where it applies: "
        f"{list(EXTRA_PERTURBATIONS)} ('erase': every moving object gone after the first frame). Off in the shipped zoo."))

    @field_validator("extra_perturbations")
    @classmethod
    def _known(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in EXTRA_PERTURBATIONS]
        if unknown:
            raise ValueError(f"unknown extra perturbation {unknown[0]!r}; known: {list(EXTRA_PERTURBATIONS)}")
        return kinds

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        # added after the shipped zoo's stage keys were made from this dump: unset, it leaves them as they were
        return drop_unset(handler(self), extra_perturbations=[], balance="answer")

    @classmethod
    def micro(cls) -> TeacherTrainConfig:
        """Tiny sizes and a few steps: for tests (seconds)."""
        return cls(arch=TeacherArchConfig.micro(), instances_per_family=1, standins_per_instance=1, steps=6,
                   warmup_steps=1, lr=3e-3, batch_qa=4, batch_query=2, query_every=1)


# --------------------------------------------------------------------------- training

class TeacherTrainReport(BaseModel):
    steps: int
    seconds_data: float
    seconds_train: float
    params: int
    size_mib: float
    data_counts: dict[str, int]
    loss_qa_first: float
    loss_qa_last: float
    loss_query_first: float
    loss_query_last: float
    curve: list[tuple[int, float, float, float]] = Field(
        description="(step, qa loss, query loss, vision + LLM aux losses), running means every 50 steps.")


def _query_batch(teacher: Teacher, data: TeacherData, idx: Sequence[int], cfg: TeacherTrainConfig,
                 gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs and labels (-100 outside the JSON answer) for query-writing examples."""
    tok = teacher.tokenizer
    end = tok.convert_tokens_to_ids(IM_END)
    pixels, grids, seqs, labels = [], [], [], []
    for i in idx:
        frame = frames_to_tensor(data.first_frames[i][None])
        frame = augment_video(frame, cfg.augment.model_copy(update={"blur_prob": 0.2, "shift_prob": 0.0}), gen)[0]
        px, grid = image_to_pixels(frame, teacher.vision)
        prompt_ids = query_prompt_ids(teacher, grid, data.instances[i].prompt)
        target = tok(data.query_targets[i], add_special_tokens=False)["input_ids"] + [end]
        pixels.append(px)
        grids.append(grid)
        seqs.append(prompt_ids + target)
        labels.append([-100] * len(prompt_ids) + target)
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for r, (s, y) in enumerate(zip(seqs, labels, strict=True)):
        ids[r, : len(s)] = torch.tensor(s)
        lab[r, : len(y)] = torch.tensor(y)
        mask[r, : len(s)] = 1
    inputs = {"input_ids": ids, "attention_mask": mask,
              "mm_token_type_ids": mm_token_types(ids, teacher.image_token_id, teacher.video_token_id),
              "pixel_values": torch.cat(pixels), "image_grid_thw": torch.cat(grids)}
    return inputs, lab


def cell_colour_targets(frames: torch.Tensor, grid: int, merge: int, tps: int) -> torch.Tensor:
    """Palette class of every grid cell in every frame, laid out like the merged vision tokens.

    (K, 3, H, W) in [0, 1] -> (n_tokens, tps * merge * merge) class ids: the colour nearest
    the mean of each cell's central quarter. Assumes one merged token covers merge x merge
    cells (patch size = cell size), which holds for 64x64 frames of the 8x8 synthetic grid.
    """
    from core.bench.synth.palette import RGB

    k, _, h, w = frames.shape
    ch, cw = h // grid, w // grid
    cells = frames.reshape(k, 3, grid, ch, grid, cw)[:, :, :, ch // 4 : ch - ch // 4, :, cw // 4 : cw - cw // 4].mean(dim=(3, 5))
    palette = torch.from_numpy(RGB / 255.0).to(frames)  # (P, 3)
    d = ((cells.permute(0, 2, 3, 1)[..., None, :] - palette) ** 2).sum(-1)  # (K, G, G, P)
    cls = d.argmin(-1)
    if k % tps:
        cls = torch.cat([cls, cls[-1:].expand(tps - k % tps, -1, -1)])
    gt, g = cls.shape[0] // tps, grid // merge
    cls = cls.reshape(gt, tps, g, merge, g, merge).permute(0, 2, 4, 1, 3, 5)
    return cls.reshape(gt * g * g, tps * merge * merge)


class _VisionCapture:
    """Forward hook that keeps the vision tower's merged tokens of the current forward."""

    def __init__(self, visual: torch.nn.Module) -> None:
        self.tokens: torch.Tensor | None = None
        self.active = False
        self.handle = visual.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        if self.active:
            self.tokens = output.pooler_output

    def remove(self) -> None:
        self.handle.remove()


def _lr_at(step: int, cfg: TeacherTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _tokenizer_corpus(data: TeacherData) -> list[str]:
    texts = [inst.prompt for inst in data.instances] + data.query_targets
    texts += [q for bank in data.banks for variants in bank for q in variants]
    return texts


def train_on_data(teacher: Teacher, data: TeacherData, cfg: TeacherTrainConfig,
                  checkpoint: TrainingCheckpoint | None = None) -> dict:
    """The step loop: balanced Yes/No judging batches plus query-writing batches, AdamW.

    Every draw (batch pairs, phrasings, augmentation, query examples) comes from one seeded
    generator in a fixed order over ``data``, whose order does not depend on the label workers
    (``_label_all`` keeps the jobs' order), so a run resumed from ``checkpoint`` draws what an
    uninterrupted one would. The training-only heads are checkpointed with the model.
    """
    gen = seed_everything(cfg.seed)
    model = teacher.model
    model.train()
    from core.bench.synth.palette import RGB

    # Training-only head: the vision tokens must tell each cell's colour in both frames of
    # their temporal patch. Dense supervision that teaches the vision tower in a few
    # hundred steps what the 1-bit Yes/No answers alone teach slowly; it is not saved.
    vision = teacher.vision
    per_token = vision.temporal_patch_size * vision.merge_size**2
    aux_head = torch.nn.Linear(model.config.text_config.hidden_size, per_token * len(RGB))
    # Training-only head on the video tokens inside the language model: each must tell its
    # cells' colours in the first frame and in the previous temporal patch, i.e. learn the
    # compare-across-time attention that every rule check (moved? vanished? changed?) needs.
    llm_head = torch.nn.Linear(model.config.text_config.hidden_size, 2 * vision.merge_size**2 * len(RGB))
    capture = _VisionCapture(model.model.visual)
    params = list(model.named_parameters()) + [(f"aux.{n}", p) for n, p in aux_head.named_parameters()]
    params += [(f"aux_llm.{n}", p) for n, p in llm_head.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    pairs, labels = data.pairs()
    yes_pool, no_pool = np.nonzero(labels)[0], np.nonzero(~labels)[0]
    if len(no_pool) == 0 or len(yes_pool) == 0:
        raise InputError("teacher data", "has only one answer class", "both Yes and No labels (perturbations give No)")
    targets = torch.tensor([teacher.yes_id, teacher.no_id])
    draw = _answer_draw(yes_pool, no_pool) if cfg.balance == "answer" else _criterion_draw(yes_pool, no_pool,
                                                                                           data.criterion_groups(pairs))
    ckpt = resume(checkpoint, cfg, {"model": model, "aux_head": aux_head, "llm_head": llm_head}, opt, None, gen)
    curve, run_qa, run_q, run_aux, first = ckpt.restore(curve=[], run_qa=[], run_q=[], run_aux=[], first={})
    steps_done = ckpt.step
    with step_progress("teacher", cfg.steps, ckpt.step) as advance:
        for step in range(ckpt.step, cfg.steps):
            if cfg.max_minutes is not None and ckpt.seconds > 60 * cfg.max_minutes:
                log.warning("teacher training stopped by max_minutes=%s after %d steps", cfg.max_minutes, step)
                break
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            n_yes = cfg.batch_qa // 2
            pick = torch.cat([draw(True, n_yes, gen), draw(False, cfg.batch_qa - n_yes, gen)])
            videos, questions, answers, cell_targets = [], [], [], []
            for j in pick.tolist():
                v, c = pairs[j]
                item = data.items[v]
                variants = data.banks[item.instance][c]
                questions.append(variants[int(torch.randint(len(variants), (), generator=gen))])
                clean = data.videos[v].float() / 255.0
                if cfg.aux_weight > 0:
                    cell_targets.append(cell_colour_targets(clean, data.instances[item.instance].metadata.get("grid", 8),
                                                            vision.merge_size, vision.temporal_patch_size))
                videos.append(augment_video(clean, cfg.augment, gen))
                answers.append(0 if labels[j] else 1)
            batch = video_qa_batch(teacher, videos, questions)
            capture.active = cfg.aux_weight > 0
            out = model.model(**batch.model_inputs(), use_cache=False, output_hidden_states=cfg.aux_llm_weight > 0)
            capture.active = False
            rows = torch.arange(len(pick))
            logits_qa = model.lm_head(out.last_hidden_state[rows, batch.answer_pos]).float()
            loss_qa = F.cross_entropy(logits_qa, targets[answers])
            loss = loss_qa
            if cfg.aux_llm_weight > 0:
                hid = out.hidden_states[cfg.aux_llm_layer][batch.input_ids == teacher.video_token_id]
                cells = vision.merge_size**2
                gt = int(batch.video_grid_thw[0, 0])
                cur = torch.cat(cell_targets).reshape(len(pick), gt, -1, vision.temporal_patch_size, cells)
                at_start = cur[:, :1, :, 0].expand(-1, gt, -1, -1)  # every cell's colour in frame 0
                prev = torch.cat([cur[:, :1, :, 0], cur[:, :-1, :, -1]], dim=1)  # ... in the previous patch's last frame
                tgt = torch.stack([at_start, prev], dim=-2).reshape(-1)
                pred = llm_head(hid).reshape(-1, len(RGB))
                loss_llm = F.cross_entropy(pred, tgt)
                loss = loss + cfg.aux_llm_weight * loss_llm
            loss_aux = torch.tensor(float("nan"))
            if cfg.aux_weight > 0 and capture.tokens is not None:
                pred = aux_head(capture.tokens).reshape(-1, len(RGB))
                loss_aux = F.cross_entropy(pred, torch.cat(cell_targets).reshape(-1))
                loss = loss + cfg.aux_weight * loss_aux
                capture.tokens = None
            loss_q = torch.tensor(float("nan"))
            if cfg.batch_query and step % cfg.query_every == 0:
                qidx = torch.randint(len(data.instances), (cfg.batch_query,), generator=gen).tolist()
                inputs, lab = _query_batch(teacher, data, qidx, cfg, gen)
                logits = model(**inputs, use_cache=False).logits[:, :-1].float()
                loss_q = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100)
                loss = loss + cfg.query_weight * loss_q
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            steps_done = step + 1
            run_qa.append(loss_qa.item())
            if not math.isnan(loss_q.item()):
                run_q.append(loss_q.item())
            first.setdefault("qa", loss_qa.item())
            if not math.isnan(loss_q.item()):
                first.setdefault("q", loss_q.item())
            if steps_done % 50 == 0 or steps_done == cfg.steps:
                curve.append((steps_done, round(float(np.mean(run_qa[-50:])), 4),
                              round(float(np.mean(run_q[-25:])) if run_q else float("nan"), 4),
                              round(float(np.mean(run_aux[-50:])), 4)))
                log.info("step %d qa %.4f query %.4f aux %.4f", *curve[-1])
            run_aux.append(loss_aux.item() + (loss_llm.item() if cfg.aux_llm_weight > 0 else 0.0))
            advance(qa=loss_qa.item(), query=loss_q.item(), aux=run_aux[-1])
            ckpt.tick(steps_done, curve=curve, run_qa=run_qa, run_q=run_q, run_aux=run_aux, first=first)
    capture.remove()
    model.eval()
    tail = max(1, min(20, len(run_qa) // 5))
    return {
        "steps": steps_done, "seconds": round(ckpt.seconds, 2), "curve": curve,
        "loss_qa_first": round(first.get("qa", float("nan")), 4),
        "loss_qa_last": round(float(np.mean(run_qa[-tail:])), 4),
        "loss_query_first": round(first.get("q", float("nan")), 4),
        "loss_query_last": round(float(np.mean(run_q[-tail:])) if run_q else float("nan"), 4),
    }


def _answer_draw(yes_pool: np.ndarray, no_pool: np.ndarray):
    """Pairs of one answer, uniformly over that answer's pool."""
    pools = {True: torch.from_numpy(yes_pool), False: torch.from_numpy(no_pool)}

    def draw(answer: bool, n: int, gen: torch.Generator) -> torch.Tensor:
        pool = pools[answer]
        return pool[torch.randint(len(pool), (n,), generator=gen)]

    return draw


def _criterion_draw(yes_pool: np.ndarray, no_pool: np.ndarray, groups: Sequence[str]):
    """Pairs of one answer, every criterion group of that answer's pool equally likely."""
    weights = {}
    for answer, pool in ((True, yes_pool), (False, no_pool)):
        names = [groups[j] for j in pool]
        counts = Counter(names)
        weights[answer] = (torch.from_numpy(pool), torch.tensor([1.0 / counts[g] for g in names], dtype=torch.float64))

    def draw(answer: bool, n: int, gen: torch.Generator) -> torch.Tensor:
        pool, w = weights[answer]
        return pool[torch.multinomial(w, n, replacement=True, generator=gen)]

    return draw


def _folder_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 3)


def train_teacher(
    out_dir: str | Path,
    train_bench: Benchmark | Sequence[TaskInstance],
    cfg: TeacherTrainConfig | None = None,
    reasoner_samples: Sequence[tuple[TaskInstance, np.ndarray]] = (),
    *,
    mined_videos: Sequence[tuple[TaskInstance, np.ndarray]] = (),
    data: TeacherData | None = None,
    checkpoint: TrainingCheckpoint | None = None,
) -> TeacherTrainReport:
    """Build, train and save a Teacher folder at ``out_dir`` (written beside, then moved into place).

    ``data`` skips building the training data (experiments reuse one labelled set).
    ``checkpoint``: the step loop saves there periodically and resumes from it
    (``core.train.checkpoint``); the data and the untrained model are rebuilt (both seeded).
    """
    cfg = cfg or TeacherTrainConfig()
    out = Path(out_dir)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        if data is None:
            data = build_teacher_data(train_bench, reasoner_samples, instances_per_family=cfg.instances_per_family,
                                      standins_per_instance=cfg.standins_per_instance, seed=cfg.seed,
                                      workers=cfg.label_workers or torch.get_num_threads(),
                                      extra_perturbations=cfg.extra_perturbations, mined_videos=mined_videos)
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build_teacher(partial, _tokenizer_corpus(data), cfg.arch, seed=cfg.seed)
        teacher = load_teacher(partial, device="cpu")  # the zoo's stages run on the CPU
        result = train_on_data(teacher, data, cfg, checkpoint)
        save_teacher(partial, teacher.model, teacher.tokenizer, build_image_processor(cfg.arch))
        report = TeacherTrainReport(
            steps=result["steps"], seconds_data=data.seconds, seconds_train=result["seconds"],
            params=sum(p.numel() for p in teacher.model.parameters()), size_mib=0.0, data_counts=data.counts,
            loss_qa_first=result["loss_qa_first"], loss_qa_last=result["loss_qa_last"],
            loss_query_first=result["loss_query_first"], loss_query_last=result["loss_query_last"], curve=result["curve"],
        )
        write_json_atomic(partial / "train_config.json", cfg.model_dump(mode="json"))
        report.size_mib = _folder_mib(partial)
        write_json_atomic(partial / "train_report.json", report.model_dump(mode="json"))
        report.size_mib = _folder_mib(partial)
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    finally:
        torch.set_num_threads(threads)
    log.info("trained Teacher in %s: %d steps, %.0f s data + %.0f s train, %.2f MiB", out, report.steps,
             report.seconds_data, report.seconds_train, report.size_mib)
    return report
