"""How well a trained Teacher judges videos and writes rule sets, on held-out instances.

Split from ``core.train.teacher`` (data and training): evaluation reads a saved Teacher folder
and labels its own test videos with the rule-based scorers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field

from core.bench.layout import Benchmark
from core.bench.record import TaskInstance
from core.bench.synth.queries import RuleQueries, queries_content_ok, query_bank, rule_queries
from core.errors import InputError
from core.models.teacher import answer_logprob, generate_queries, load_teacher, video_qa_batch
from core.train.teacher_data import TeacherData, build_teacher_data


class TeacherEval(BaseModel):
    """How well a Teacher judges videos and writes rules, on held-out (test-purpose) instances.

    Judging is on each instance's reference rule set (goal + 3 process queries) for every
    video: the ground truth, every perturbation, and the Reasoner samples (or stand-ins).
    "Yes" is predicted when log P(Yes) > log P(No).
    """

    accuracy: float
    accuracy_goal: float
    accuracy_process: float
    balanced_accuracy: float
    balanced_accuracy_goal: float = Field(float("nan"), description=(
        "Mean of the Yes and the No accuracy on goal questions alone (a constant answer scores 0.5)."))
    accuracy_gt: float
    accuracy_perturbed: float
    accuracy_reasoner: float = Field(description="On Reasoner samples alone (stand-ins when none were given).")
    reasoner_source: str = Field(description="'reasoner' or 'standin'.")
    false_yes_rate: float = Field(description="P(answer Yes | rule broken) over perturbed and Reasoner videos.")
    false_pass_rate: float = Field(description="Rule-breaking videos on which every query was answered Yes.")
    false_yes_by_source: dict[str, float] = Field(default_factory=dict, description=(
        "False Yes rate per video source ('perturbation:erase', 'perturbation:still', 'reasoner', 'mined', ...): "
        "how often a broken rule is answered Yes on each kind of video."))
    mean_p_yes_true: float
    mean_p_yes_false: float
    query_valid_rate: float = Field(description="Greedy rule sets that parse as JSON with one goal and 1-3 process questions.")
    query_content_rate: float = Field(description="Valid rule sets that ask this instance's goal and distinct known process rules.")
    query_exact_rate: float
    per_family: dict[str, float]
    per_source: dict[str, float]
    per_criterion: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per rule criterion: questions, accuracy, the majority answer's rate (what a constant answer "
                    "scores) and mean P(Yes) where the truth is Yes and No; equal means: the Teacher cannot tell.")
    counts: dict[str, int]
    examples: list[dict] = Field(default_factory=list, description="A few generated rule sets, for eyeballing.")


def _per_criterion(criteria: list[str], probs: list[float], truth: list[bool]) -> dict[str, dict[str, float]]:
    out = {}
    for name in sorted(set(criteria)):
        p = np.array([x for x, c in zip(probs, criteria, strict=True) if c == name])
        t = np.array([x for x, c in zip(truth, criteria, strict=True) if c == name], dtype=bool)
        out[name] = {"n": len(t), "accuracy": _rate(list((p > 0.5) == t)),
                     "majority_rate": round(float(max(t.mean(), 1 - t.mean())), 4),
                     "p_yes_when_yes": round(float(p[t].mean()), 4) if t.any() else float("nan"),
                     "p_yes_when_no": round(float(p[~t].mean()), 4) if (~t).any() else float("nan")}
    return out


def _false_yes_by_source(pred: list[bool], truth: list[bool], sources: list[str]) -> dict[str, float]:
    """False Yes rate per video source (``perturbation:erase``) and per kind of source (``perturbation``)."""
    groups: dict[str, list[bool]] = {}
    for p, t, s in zip(pred, truth, sources, strict=True):
        if not t:
            for name in {s, s.split(":")[0]}:
                groups.setdefault(name, []).append(p)
    return {name: _rate(values) for name, values in sorted(groups.items())}


def _rate(values: list[bool]) -> float:
    return round(float(np.mean(values)), 4) if values else float("nan")


@torch.no_grad()
def evaluate_teacher(
    teacher_dir: str | Path,
    test_bench: Benchmark | Sequence[TaskInstance],
    reasoner_samples: Sequence[tuple[TaskInstance, np.ndarray]] = (),
    *,
    standins_per_instance: int = 2,
    batch: int = 16,
    seed: int = 12345,
    n_examples: int = 7,
    workers: int | None = None,
    data: TeacherData | None = None,
    mined_videos: Sequence[tuple[TaskInstance, np.ndarray]] = (),
    extra_perturbations: Sequence[str] = (),
) -> TeacherEval:
    """Judging accuracy and rule-writing validity of the Teacher at ``teacher_dir`` on ``test_bench``.

    Without Reasoner samples, ``standins_per_instance`` stand-ins per instance take their
    place (and their accuracy is reported as ``accuracy_reasoner`` with
    ``reasoner_source='standin'``). ``data`` reuses an already labelled test set.
    ``mined_videos``: the teacher method's own outputs on test items (source ``mined``);
    ``extra_perturbations``: e.g. ``("erase", "still")``, the videos a reward hack produces.
    """
    teacher = load_teacher(teacher_dir, device="cpu")
    instances = test_bench.instances if isinstance(test_bench, Benchmark) else list(test_bench)
    instances = [i for i in instances if i.benchmark == "synth"]
    use_standins = len(reasoner_samples) == 0
    if data is None:
        data = build_teacher_data(instances, reasoner_samples, standins_per_instance=standins_per_instance if use_standins else 0,
                                  seed=seed, workers=workers or torch.get_num_threads(), mined_videos=mined_videos,
                                  extra_perturbations=extra_perturbations)
    instances = data.instances
    rows = []  # (video index, query text, kind, label)
    criteria = []  # each row's criterion, as family/criterion
    for v, item in enumerate(data.items):
        inst = data.instances[item.instance]
        reference = rule_queries(inst.metadata)
        bank_criteria = [variants[0].criterion for variants in query_bank(inst.metadata)]
        for q in reference:
            rows.append((v, q.text, q.kind, item.labels[bank_criteria.index(q.criterion)]))
            criteria.append(f"{inst.task_family}/{q.criterion}")
    probs = []
    for s in range(0, len(rows), batch):
        chunk = rows[s : s + batch]
        b = video_qa_batch(teacher, [data.videos[v].float() / 255.0 for v, *_ in chunk], [q for _, q, _, _ in chunk])
        yes, no = answer_logprob(teacher, b)
        probs.extend(torch.softmax(torch.stack([yes, no], 1), 1)[:, 0].tolist())
    pred = [p > 0.5 for p in probs]
    truth = [r[3] for r in rows]
    correct = [a == b for a, b in zip(pred, truth, strict=True)]
    full_source = [data.items[r[0]].source for r in rows]
    source = [s.split(":")[0] for s in full_source]
    family = [data.instances[data.items[r[0]].instance].task_family for r in rows]
    kind = [r[2] for r in rows]
    broken_src = {"perturbation", "reasoner", "standin", "mined"}
    false_yes = [p for p, t, s in zip(pred, truth, source, strict=True) if not t and s in broken_src]
    # video-level false pass: a rule-breaking video (some query No) on which all answers were Yes
    by_video: dict[int, list[tuple[bool, bool]]] = {}
    for (v, *_), p, t in zip(rows, pred, truth, strict=True):
        by_video.setdefault(v, []).append((p, t))
    broken_videos = [v for v, pt in by_video.items() if not all(t for _, t in pt)]
    false_pass = [all(p for p, _ in by_video[v]) for v in broken_videos]
    yes_acc = [c for c, t in zip(correct, truth, strict=True) if t]
    no_acc = [c for c, t in zip(correct, truth, strict=True) if not t]
    goal_yes = [c for c, t, k in zip(correct, truth, kind, strict=True) if t and k == "goal"]
    goal_no = [c for c, t, k in zip(correct, truth, kind, strict=True) if not t and k == "goal"]
    false_yes_by_source = _false_yes_by_source(pred, truth, full_source)
    reasoner_key = "standin" if use_standins else "reasoner"

    valid, content, exact, examples = [], [], [], []
    for k, inst in enumerate(instances):
        text = generate_queries(teacher, data.first_frames[k], inst.prompt)
        try:
            parsed = RuleQueries.parse(text, where=f"{inst.id}:queries")
        except InputError:
            parsed = None
        valid.append(parsed is not None)
        content.append(parsed is not None and queries_content_ok(inst.metadata, parsed))
        exact.append(parsed is not None and parsed.to_json() == data.query_targets[k])
        if len(examples) < n_examples and inst.task_family not in {e["family"] for e in examples}:
            examples.append({"family": inst.task_family, "id": inst.id, "generated": text, "reference": data.query_targets[k]})

    families = sorted(set(family))
    sources = sorted(set(source))
    return TeacherEval(
        accuracy=_rate(correct),
        accuracy_goal=_rate([c for c, k in zip(correct, kind, strict=True) if k == "goal"]),
        accuracy_process=_rate([c for c, k in zip(correct, kind, strict=True) if k == "process"]),
        balanced_accuracy=round(0.5 * (_rate(yes_acc) + _rate(no_acc)), 4) if yes_acc and no_acc else float("nan"),
        balanced_accuracy_goal=round(0.5 * (_rate(goal_yes) + _rate(goal_no)), 4) if goal_yes and goal_no else float("nan"),
        accuracy_gt=_rate([c for c, s in zip(correct, source, strict=True) if s == "gt"]),
        accuracy_perturbed=_rate([c for c, s in zip(correct, source, strict=True) if s == "perturbation"]),
        accuracy_reasoner=_rate([c for c, s in zip(correct, source, strict=True) if s == reasoner_key]),
        reasoner_source=reasoner_key,
        false_yes_rate=_rate(false_yes),
        false_pass_rate=_rate(false_pass),
        false_yes_by_source=false_yes_by_source,
        mean_p_yes_true=round(float(np.mean([p for p, t in zip(probs, truth, strict=True) if t] or [float("nan")])), 4),
        mean_p_yes_false=round(float(np.mean([p for p, t in zip(probs, truth, strict=True) if not t] or [float("nan")])), 4),
        query_valid_rate=_rate(valid),
        query_content_rate=_rate(content),
        query_exact_rate=_rate(exact),
        per_family={f: _rate([c for c, g in zip(correct, family, strict=True) if g == f]) for f in families},
        per_source={s: _rate([c for c, g in zip(correct, source, strict=True) if g == s]) for s in sources},
        per_criterion=_per_criterion(criteria, probs, truth),
        counts={"instances": len(instances), "videos": len(data.items), "questions": len(rows),
                "questions_yes": int(sum(truth)), "questions_no": int(len(truth) - sum(truth)),
                "broken_videos": len(broken_videos), **{f"videos_{k}": v for k, v in data.counts.items() if k in broken_src | {"gt"}}},
        examples=examples,
    )

