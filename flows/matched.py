"""auto_n: best-of-N's N and VideoTPO's rounds matched to the teacher method's wall time per item.

As ``vlmt compare --n auto`` does, the flow then runs in two phases. First vanilla, the teacher
method and the other methods; then N is set so that best-of-N's wall time per item matches the
teacher method's (``core.method.compare.auto_n``, from the recorded stage costs), and
best_of_n / pass_at_n run with it. VideoTPO is matched the same way: its first run (at
``method.tpo_rounds``) is a probe that measures a round's cost and writes no rows; it runs
again with the matched rounds (``auto_tpo_rounds``). A rerun reads the same recorded costs
from the cached stages, so it picks the same N and reuses every candidate. Where a budget
cannot be matched, the methods it was for get a failed row each (stage ``auto_n`` or
``auto_tpo``); the rest of the run goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.method.compare import auto_n, auto_tpo_rounds, item_seed
from core.method.methods import CANDIDATE_METHODS, Method
from flows.item_chain import _blank

if TYPE_CHECKING:
    from flows.config import EvaluateConfig
    from flows.run import EvaluationRun


def to_match(main: list[Method]) -> bool:
    """Whether auto_n has anything to match among ``main``: best_of_n / pass_at_n, or VideoTPO."""
    return any(m in CANDIDATE_METHODS for m in main) or Method.VIDEOTPO in main


def run_matched(run: EvaluationRun, main: list[Method]) -> tuple[int | None, EvaluateConfig]:
    """Run ``main`` (the methods but the shared ablation) in auto_n's two phases.

    Returns the chosen N (None where it could not be matched) and the config as run: its
    ``method.n`` and ``method.tpo_rounds`` are the matched ones.
    """
    cfg, params, logger = run.cfg, run.params, run.logger
    chosen_n = None
    ran = cfg
    candidate_methods = [m for m in main if m in CANDIDATE_METHODS]
    match_tpo = Method.VIDEOTPO in main
    first = list(dict.fromkeys([Method.VANILLA, Method.TEACHER, *(m for m in main if m not in CANDIDATE_METHODS)]))
    in_play = cfg.model_copy(update={"methods": first + candidate_methods})
    probes = frozenset({Method.VIDEOTPO} if match_tpo else ())
    # these methods do not depend on N; VideoTPO runs at cfg's rounds to measure a round's cost
    done = run.run_phase(first, in_play, params.model_copy(update={"n": None, "tpo_rounds": None}), probes=probes)

    def unmatched(methods: list[Method], why: ValueError, stage: str) -> None:
        for inst in run.items:
            for method in methods:
                res = _blank(inst, method, item_seed(inst, cfg.seed))
                res.error, res.error_stage = f"n='auto': {why}", stage
                run.keep(res, params.model_copy(update={"n": None}))

    matched = cfg.method
    if candidate_methods:
        try:
            chosen_n = auto_n(done)
        except ValueError as exc:
            unmatched(candidate_methods, exc, "auto_n")
        else:
            logger.info("best-of-N matched to the teacher method's wall time per item: N = %d", chosen_n)
            matched = matched.model_copy(update={"n": chosen_n})
            ran = cfg.model_copy(update={"method": matched})
            run.run_phase(candidate_methods, in_play.model_copy(update={"method": matched}), ran.params())
    if match_tpo:
        try:
            rounds = auto_tpo_rounds(done)
        except ValueError as exc:
            unmatched([Method.VIDEOTPO], exc, "auto_tpo")
        else:
            logger.info("VideoTPO matched to the teacher method's wall time per item: %d rounds", rounds)
            matched = matched.model_copy(update={"tpo_rounds": rounds})
            ran = cfg.model_copy(update={"method": matched})
            run.run_phase([Method.VIDEOTPO], in_play.model_copy(update={"method": matched}), ran.params())
    return chosen_n, ran
