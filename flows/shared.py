"""The ``shared`` ablation: one LoRA trained for all items instead of one per item.

It runs after the other methods: every item's rules and reward (cached, so usually reused),
then one experiment-level ``train-shared-adapter`` stage on the items whose reward compiled
(``<work>/shared/shared-<key>/``, keyed by those rewards' keys, the models and the optimiser
config: ``flows.keys.shared_key``), then per item ``generate-video (shared adapter) ->
score-video``. Its own module because, unlike every other method, it has a stage that spans
all items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.method.compare import item_seed
from core.method.methods import Method
from flows.item_chain import _blank, _ItemStages, _submit
from flows.keys import shared_key
from tasks import stages

if TYPE_CHECKING:
    from flows.run import EvaluationRun


def run_shared(run: EvaluationRun) -> None:
    """The shared ablation: every item's reward (cached), one adapter trained on those that compiled, each item's video."""
    cfg, ids, inline, items, params = run.cfg, run.ids, run.inline, run.items, run.params
    per_item = [(inst, _ItemStages(inst, cfg, ids, inline)) for inst in items]
    submitted = {inst.id: its.rules_and_reward() for inst, its in per_item}
    for _, reward in submitted.values():
        reward.wait()
    ok = [(inst, its, submitted[inst.id][1]) for inst, its in per_item if submitted[inst.id][1].state.is_completed()]
    if not ok:
        for inst in items:
            res = _blank(inst, Method.SHARED, item_seed(inst, cfg.seed))
            res.error, res.error_stage = "no item's reward compiled: nothing to train the shared adapter on", "shared"
            run.keep(res, params)
        return
    key = shared_key(cfg, ids, [its.keys["reward"] for _, its, _ in ok])
    target = str(run.work / "shared" / f"shared-{key[:12]}")
    m = cfg.models
    run.logger.info("shared ablation: one adapter on %d items (%s)", len(ok), target)
    adapter = _submit(stages.train_shared_adapter, target, cfg.work, inline, [inst.model_dump_json() for inst, _, _ in ok],
                      [reward for *_, reward in ok], m.reasoner, m.surrogate, m.teacher, cfg.method.optim.model_dump_json(),
                      [its.seed for _, its, _ in ok], cfg.method.shared_steps, cfg.seed, target, key)
    run.run_phase([Method.SHARED], cfg, params, shared=(adapter, key), ready=submitted)
