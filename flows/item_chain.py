"""One item's stage chain: the five stages as cached tasks (``tasks/stages.py``), per method.

    extract-rules -> compile-reward -> optimise-item -> generate-video (adapter) -> score-video   [teacher]
    extract-rules -> compile-reward -> optimise-item (GRPO) -> generate-video (adapter) -> score-video [grpo]
    optimise-oracle-reward (the item's ground truth) -> generate-video (adapter)  -> score-video   [oracle_reward]
    generate-video (seed)                                                        -> score-video   [vanilla]
    generate-video (seeds 0..N-1) -> select-video (judge | held-out judge | oracle) -> score-video [best_of_n,
                                                                                        best_of_n_heldout, pass_at_n]
    generate-video (instruction + rules)                                         -> score-video   [pe]
    videotpo                                                                     -> score-video   [videotpo]
    (the run's shared adapter) -> generate-video (adapter)                       -> score-video   [shared]

Each stage runs into ``<work>/items/<item>/<stage>-<key>/`` under its key from ``flows.keys``,
and is reused only where its outputs are still on disk, so rerunning the same command after a
crash reuses every finished stage. ``_submit_item`` submits one item's chains (or runs them
inline); ``_outcome`` turns a chain into its result row, recording the first stage that failed
so the other items still finish. Its own module because the flow runs these chains in several
phases (``flows.run``, ``flows.matched``, ``flows.shared``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State

from core.bench.record import TaskInstance
from core.method.compare import ItemResult, item_seed
from core.method.cost import CostRecord
from core.method.methods import CANDIDATE_METHODS, ORACLES, USES_RULES, Method
from core.storage.results import file_name, slug
from flows.keys import stage_keys
from tasks import stages
from tasks.caching import reuse_only_if

if TYPE_CHECKING:
    from flows.config import EvaluateConfig


class _Ran:
    """A stage that ran inline, in the flow's own thread, shaped like the ``PrefectFuture`` the
    flow otherwise gets from ``.submit`` (``wait``, ``state``, ``result``)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def wait(self) -> None:
        return None

    def result(self, raise_on_failure: bool = True):
        return self.state.result(raise_on_failure=raise_on_failure)


Stage = PrefectFuture | _Ran


def _resolved(value):
    return value.result() if isinstance(value, _Ran) else [_resolved(v) for v in value] if isinstance(value, list) else value


def _submit(task, target: str, work: str, inline: bool, *args, **kwargs) -> Stage:
    """Run a stage: submitted to the flow's task runner, or called inline in the flow's thread.

    Its cache (records in ``work``) is reused only where its outputs are on disk (see
    ``stages.RECORD``). Inline, a stage whose upstream failed does not run (its chain already
    records the failed stage), and a finished stage is its record, read without a task run:
    the record is what the task would return from Prefect's cache, and each cached task run
    costs ~8 ms (a 140-item claims rerun has ~9,000 stages: 70 of its 86 s, measured 2026-12-06).
    """
    if inline and (record := stages.finished_record(target)) is not None:
        return _Ran(Completed(data=record))
    stage = reuse_only_if(task, Path(target) / stages.RECORD, work)
    if not inline:
        return stage.submit(*args, **kwargs)
    values = [*args, *kwargs.values()]
    upstream = [u for v in values for u in (v if isinstance(v, list) else [v]) if isinstance(u, _Ran)]
    if any(not u.state.is_completed() for u in upstream):
        return _Ran(Failed(message="not run: an upstream stage failed"))
    return _Ran(stage(*_resolved(list(args)), return_state=True, **{k: _resolved(v) for k, v in kwargs.items()}))


class _Chain:
    """The futures of one (item, method) in stage order, to report which stage failed."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, Stage]] = []
        self.video: Stage | None = None
        self.optim: Stage | None = None
        self.rules: Stage | None = None
        self.reward: Stage | None = None
        self.score: Stage | None = None
        self.heldout: Stage | None = None  # not in ``stages``: a held-out judge's failure never loses the score

    def add(self, stage: str, future: Stage) -> Stage:
        self.stages.append((stage, future))
        return future


class _ItemStages:
    """One item's stage keys, and how to run its stages (into ``<work>/items/<item>/<stage>-<key>/``)."""

    def __init__(self, inst: TaskInstance, cfg: EvaluateConfig, ids: dict[str, str], inline: bool,
                 shared: str | None = None) -> None:
        self.cfg, self.inline = cfg, inline
        self.seed = item_seed(inst, cfg.seed)
        self.keys = stage_keys(inst.content_hash(), self.seed, cfg, ids, shared)
        self.root = Path(cfg.work) / "items" / file_name(inst.id)
        self.legacy_root = Path(cfg.work) / "items" / slug(inst.id)  # named before item folders were injective
        self.item = inst.model_dump_json()  # as text: see tasks/stages.py

    def target(self, name: str) -> str:
        """The stage's folder; one finished under the item's older, lossy folder name is reused there
        (stage folders are named by keys made from the item's content and id, so none is another item's)."""
        folder = f"{name.split('/')[0]}-{self.keys[name][:12]}"
        legacy = self.legacy_root / folder
        if not (self.root / folder / stages.RECORD).is_file() and (legacy / stages.RECORD).is_file():
            return str(legacy)
        return str(self.root / folder)

    def submit(self, task, name: str, *args, **kwargs) -> Stage:
        """Run stage ``name``: every stage task takes the item first, its target dir and key last."""
        target = self.target(name)  # once: the record check behind it must not answer twice
        return _submit(task, target, self.cfg.work, self.inline, self.item, *args, target, self.keys[name], **kwargs)

    def rules_and_reward(self) -> tuple[Stage, Stage]:
        m, mc = self.cfg.models, self.cfg.method
        rules = self.submit(stages.extract_rules, "rules", m.teacher, mc.rule_attempts, self.seed, queries=mc.queries)
        return rules, self.submit(stages.compile_reward, "reward", m.teacher, rules, mc.optim.k_frames, mc.optim.lam)


def _submit_item(inst: TaskInstance, cfg: EvaluateConfig, ids: dict[str, str], inline: bool = False,
                 only: list[Method] | None = None, shared: tuple[Stage, str] | None = None,
                 rules_and_reward: tuple[Stage, Stage] | None = None) -> dict[Method, _Chain]:
    """Submit the stages of ``only`` (default: all of ``cfg.methods``, the methods in play) for one item.

    ``shared``: the shared adapter's stage and key, which the ``shared`` method needs;
    ``rules_and_reward``: the item's rules and reward stages when already submitted.
    """
    m, o, mc = cfg.models, cfg.method.optim, cfg.method
    chains = {method: _Chain() for method in (only or cfg.methods)}
    methods = set(chains)
    if Method.SHARED in methods and shared is None:
        raise ValueError("the shared method needs its trained adapter's stage and key")
    its = _ItemStages(inst, cfg, ids, inline, shared[1] if shared else None)
    seed, submit = its.seed, its.submit

    rules = reward = None
    if USES_RULES & set(cfg.methods):  # every method in play, so the score keys' "judged" holds in each phase
        rules, reward = rules_and_reward or its.rules_and_reward()
        for method in USES_RULES & methods:
            chains[method].rules = chains[method].add("rules", rules)
            chains[method].reward = chains[method].add("reward", reward)
    judged = reward is not None
    guidance = o.guidance.model_dump(mode="json")

    def generate(j: int | str, **kwargs) -> Stage:
        return submit(stages.generate_video, f"video/{j}", m.reasoner, m.surrogate,
                      seed + (j if isinstance(j, int) else 0), o.sampler_steps, guidance=guidance, **kwargs)

    def score(method: Method, video: Stage) -> None:
        chains[method].video = video
        chains[method].score = chains[method].add("score", submit(
            stages.score_video, f"score/{method.value}", video, m.teacher if judged else None, reward))
        if judged and cfg.heldout_judge:
            chains[method].heldout = submit(stages.judge_heldout, f"heldout/{method.value}", video, cfg.heldout_judge, reward)

    n_needed = mc.n if CANDIDATE_METHODS & methods else 1
    candidates = [generate(j) for j in range(n_needed)] if ({Method.VANILLA} | CANDIDATE_METHODS) & methods else []
    if Method.VANILLA in methods:
        score(Method.VANILLA, chains[Method.VANILLA].add("generate", candidates[0]))
    # (method, selection stage, how it selects, the judge that selects)
    for method, name, by, judge in ((Method.BEST_OF_N, "select/judge", "judge", m.teacher),
                                    (Method.BEST_OF_N_HELDOUT, "select/heldout", "judge", cfg.heldout_judge),
                                    (Method.PASS_AT_N, "select/oracle", "oracle", None)):
        if method in methods:
            for fut in candidates:
                chains[method].add("generate", fut)
            sel = chains[method].add("select", submit(stages.select_video, name, candidates, by, judge,
                                                      reward if by == "judge" else None))
            score(method, sel)
    if Method.PE in methods:
        score(Method.PE, chains[Method.PE].add("generate", generate("pe", rules=rules)))
    if Method.VIDEOTPO in methods:
        tpo = submit(stages.videotpo, "videotpo", m.reasoner, m.surrogate, m.teacher, reward, seed, o.sampler_steps,
                     mc.tpo_rounds, mc.tpo_videos, guidance=guidance)
        score(Method.VIDEOTPO, chains[Method.VIDEOTPO].add("videotpo", tpo))
    # the per-item optimisers: the method's gradient, and the grpo ablation's policy gradient on the same reward
    for method, stage, extra in ((Method.TEACHER, "optimise", {}), (Method.GRPO, "grpo", {"grpo_json": mc.grpo.model_dump_json()})):
        if method in methods:
            opt = chains[method].optim = chains[method].add("optimise", submit(
                stages.optimise_item, stage, m.reasoner, m.surrogate, m.teacher, reward, o.model_dump_json(), seed, **extra))
            score(method, chains[method].add("generate", generate(method.value, adapter=opt)))
    if Method.ORACLE_REWARD in methods:  # the scorer's relaxation as the reward: no rules, no Teacher
        chain = chains[Method.ORACLE_REWARD]
        opt = chain.optim = chain.add("optimise", submit(stages.optimise_oracle_reward, "oracle_reward", m.reasoner,
                                                         m.surrogate, o.model_dump_json(), seed))
        score(Method.ORACLE_REWARD, chain.add("generate", generate(Method.ORACLE_REWARD.value, adapter=opt)))
    if Method.STILL in methods:
        score(Method.STILL, chains[Method.STILL].add("generate", submit(stages.still_video, "video/still", seed)))
    if Method.SHARED in methods:
        adapter = chains[Method.SHARED].optim = chains[Method.SHARED].add("shared", shared[0])
        score(Method.SHARED, chains[Method.SHARED].add("generate", generate("shared", adapter=adapter)))
    return chains


def _blank(inst: TaskInstance, method: Method, seed: int) -> ItemResult:
    """The result before its stages: score 0 until scored, or None where no rule-based scorer applies."""
    unscored = {} if inst.benchmark == "synth" else {"score": None, "success": None}
    return ItemResult(instance_id=inst.id, family=inst.task_family, split=inst.split.value if inst.split else None,
                      faculty=inst.faculty.value if inst.faculty else None, method=method.value, seed=seed,
                      info={"prompt": inst.prompt, "first_frame": str(inst.first_frame)}, **unscored)


def _outcome(inst: TaskInstance, method: Method, chain: _Chain, seed: int) -> ItemResult:
    """The (item, method) result from its futures; the first failed stage is recorded."""
    base = _blank(inst, method, seed)
    for stage, fut in chain.stages:
        fut.wait()
        state = fut.state
        if not state.is_completed():
            exc = fut.result(raise_on_failure=False)
            base.error = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(state.message)
            base.error_stage = stage
            return base
    score = chain.score.result()
    video = chain.video.result()
    base.score, base.success, base.criteria = score["score"], score["success"], score["criteria"]
    base.goal, base.process, base.gate, base.gated = score.get("goal"), score.get("process"), score.get("gate"), score.get("gated")
    base.judge_p_yes, base.judge_all_yes = score["judge_p_yes"], score["judge_all_yes"]
    base.judge_truth = score.get("judge_truth", [])
    # the method's own cost; scoring and the final judge are for reporting (as in vlmt compare)
    cost = CostRecord.model_validate(video["cost"])
    chosen = video.get("video", video)
    base.info.update({"video": score["mp4"], "npz": chosen["npz"], "gif": score["gif"]})
    if "judge_final" in score["cost"]["seconds"]:
        base.info["judge_seconds"] = score["cost"]["seconds"]["judge_final"]  # what one judged candidate costs (auto_n)
    if "selected" in video:
        base.info.update({"selected": video["selected"], "values": video["values"], "n": len(video["values"])})
        if video.get("rounds"):
            base.info["n_rounds"] = video["rounds"]
    if chain.rules is not None:
        rules, reward = chain.rules.result(), chain.reward.result()
        base.rules_source = rules["source"]
        base.info["rules"] = rules["rules"]
        base.info["queries"] = rules["queries"]
        # like vlmt compare: the rules' cost is added to every method that uses them
        cost = cost.merged(CostRecord.model_validate(rules["cost"])).merged(CostRecord.model_validate(reward["cost"]))
    if chain.optim is not None:
        optim = chain.optim.result()
        cost = cost.merged(CostRecord.model_validate(optim["cost"]))
        base.info["optim"] = json.loads(Path(optim["optim_json"]).read_text())
        base.info["adapter"] = optim["adapter"]
    if chain.heldout is not None:
        _add_heldout(base, chain.heldout)
    if method in ORACLES:  # it read the answer key: an upper bound, marked wherever results are shown
        base.info["oracle"] = True
    base.cost = cost
    return base


def _add_heldout(base: ItemResult, stage: Stage) -> None:
    """The held-out judge's answers into ``base``; its failure is noted (``info["heldout_error"]``), the row kept."""
    stage.wait()
    if not stage.state.is_completed():
        exc = stage.result(raise_on_failure=False)
        base.info["heldout_error"] = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(stage.state.message)
        return
    record = stage.result()
    base.heldout_p_yes, base.heldout_all_yes = record["p_yes"], record["all_yes"]
