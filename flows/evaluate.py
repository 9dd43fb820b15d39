"""The evaluate flow: benchmark x methods x config -> videos, scores, Parquet rows, DuckDB.

Per item, as cached tasks (``tasks/stages.py``):

    extract-rules -> compile-reward -> optimise-item -> generate-video (adapter) -> score-video   [teacher]
    extract-rules -> compile-reward -> optimise-item (GRPO) -> generate-video (adapter) -> score-video [grpo]
    generate-video (seed)                                                        -> score-video   [vanilla]
    generate-video (seeds 0..N-1) -> select-video (judge | oracle)               -> score-video   [best_of_n, pass_at_n]
    generate-video (instruction + rules)                                         -> score-video   [pe]
    videotpo                                                                     -> score-video   [videotpo]

Each key is computed here from exactly what the stage depends on, so changing the LoRA
learning rate reruns optimise -> generate -> score but not the rules, and changing the
Teacher reruns everything that the Teacher touches. Rerunning the same command after a
crash reuses every finished stage. An item whose stage fails is recorded with the error and
the stage; the other items finish; the flow raises at the end if anything failed.

With ``auto_n`` the flow runs in two phases, as ``vlmt compare --n auto`` does: vanilla, the
teacher method and the other methods first; then N is set so that best-of-N's wall time per
item matches the teacher method's (``core.method.compare.auto_n``, from the recorded stage
costs), and best_of_n / pass_at_n run with it. VideoTPO is matched the same way: its first
run (at ``method.tpo_rounds``) is a probe that measures a round's cost and writes no rows; it
runs again with the matched rounds (``auto_tpo_rounds``). A rerun reads the same recorded costs from the
cached stages, so it picks the same N and reuses every candidate.

The ``shared`` ablation (one LoRA for all items) runs last: every item's rules and reward
(cached), then one experiment-level ``train-shared-adapter`` stage on the items whose reward
compiled (``<work>/shared/shared-<key>/``, keyed by those rewards' keys, the models and the
optimiser config), then per item ``generate-video (shared adapter) -> score-video``.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import Failed, State
from pydantic import Field

from core.bench.layout import InvalidItem
from core.bench.record import Purpose, TaskInstance
from core.bench.ruler_judge import JudgeConfig
from core.bench.source import official_output_path, open_benchmark, spread_over_families
from core.bench.synth.generate import make_synth_benchmark
from core.checks import shipped
from core.config import StrictConfig, load_config
from core.errors import InputError
from core.io import write_bytes_atomic, write_json_atomic
from core.method.compare import ItemResult, auto_n, auto_tpo_rounds, item_seed, summarise_methods
from core.method.cost import CostRecord
from core.method.methods import (
    CANDIDATE_METHODS,
    DEFAULT_METHODS,
    USES_RULES,
    Method,
    MethodConfig,
)
from core.method.optimise import OptimConfig, resolve_optim
from core.method.reasoner import Guidance
from core.models.teacher import teacher_model_type
from core.models.wan import check_guidance_2
from core.pipeline.video_spec import VideoOverride, reasoner_grid, with_video_spec
from core.storage.lock import work_dir_lock
from core.storage.results import (
    ExperimentRecord,
    VariantParams,
    file_name,
    prune_results,
    slug,
    write_experiment,
    write_judgements,
    write_result,
)
from core.storage.tracking import Tracker, default_tracking_uri
from core.storage.warehouse import consolidate
from tasks import stages
from tasks.caching import digest, reuse_only_if
from tasks.models import model_identity

#: Bump when a stage's code changes what it produces.
CODE_VERSION = "evaluate-3"
#: The scorer's version, bumped when its record gains fields or its scores change (score-2: the
#: score's goal and process parts and gate; score-3: the scorer's answer to each judged query;
#: score-4: the VBVR-style ungated sum, no rule holding for an absent object, no motion rule for
#: a still video), so that only scoring reruns and no video is regenerated. Pass@N's oracle
#: selection reads the scorer too, so it re-selects from its cached candidates.
SCORE_VERSION = "score-4"
#: The gradient optimisers' own version (the teacher method's per-item LoRA and the shared
#: adapter), bumped when their result changes while every other stage's does not
#: (optimise-2: the Teacher encodes the video once for all queries; the forward pass is the
#: same, the pixels' gradient differs by float rounding, and a 40-step trajectory with it).
OPTIMISE_VERSION = "optimise-2"


class ModelPaths(StrictConfig):
    """The models' folders; by default the shipped tiny zoo, found from any working directory
    (as ``models/...`` from the repository root, so experiment ids made there stay the same)."""

    reasoner: str = Field(default_factory=lambda: shipped("models/reasoner"))
    surrogate: str | None = Field(default_factory=lambda: shipped("models/surrogate-decoder"))
    teacher: str = Field(default_factory=lambda: shipped("models/teacher"))


class EvaluateConfig(StrictConfig):
    """Everything an evaluation depends on; also readable from a YAML file (``from_yaml``)."""

    name: str = "evaluate"
    bench: str = Field("synth", description="'synth' (generated test instances) or a benchmark directory.")
    per_family: int = Field(2, ge=1, description="Synth test instances per family.")
    bench_seed: int = 0
    limit: int | None = Field(None, ge=1, description="At most this many items, spread over families.")
    methods: list[Method] = Field(default_factory=lambda: list(DEFAULT_METHODS),
                                  description="Default: every method and the still reference, not the shared ablation.")
    video: VideoOverride = Field(default_factory=VideoOverride,
                                 description="Frames, fps and size for benchmarks whose instances do not set them "
                                             "(VBVR's official layout: read from ground_truth.mp4 unless set here).")
    models: ModelPaths = Field(default_factory=ModelPaths)
    method: MethodConfig = MethodConfig()
    auto_n: bool = Field(False, description="Choose best_of_n / pass_at_n's N after vanilla and the teacher method ran, "
                                            "so that best-of-N's wall time per item matches the teacher method's "
                                            "(method.n is then ignored); VideoTPO's rounds are matched the same way "
                                            "(method.tpo_rounds is then its probe run's).")
    seed: int = Field(0, description="Base seed; per-item seeds derive from it and the item id.")
    variant: str = Field("default", description="Names this configuration within an ablation.")
    work: str = Field("runs", description="Root of stage outputs, results Parquet and the DuckDB file.")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; None: SQLite in the work dir; '' turns tracking off.")
    judge: str | None = Field(None, description="RULER-Bench: a Qwen2.5-VL/Qwen3-VL folder that judges every method's "
                                                "videos after the run (table judgements, query ruler_scores). Scoring "
                                                "only: not part of the experiment id.")
    judge_options: JudgeConfig = Field(default_factory=JudgeConfig,
                                       description="How the judge sees videos and is retried (not part of the experiment id).")

    @classmethod
    def from_yaml(cls, path: str | Path) -> EvaluateConfig:
        return load_config(cls, path)

    def resolved(self) -> EvaluateConfig:
        """This config with what it leaves to the Reasoner folder filled in (``resolve_optim``: the
        learning rate), so that ids, keys and rows carry the values the run uses. Idempotent."""
        optim = resolve_optim(self.method.optim, self.models.reasoner)
        if optim is self.method.optim:
            return self
        return self.model_copy(update={"method": self.method.model_copy(update={"optim": optim})})

    def params(self) -> VariantParams:
        o = self.method.optim
        return VariantParams(lam=o.lam, grad_mode=o.grad_mode.value, k_frames=o.k_frames, max_steps=o.max_steps,
                             early_stop=o.early_stop, lr=o.lr, lora_rank=o.lora.rank, n=self.method.n,
                             queries=self.method.queries,
                             tpo_rounds=self.method.tpo_rounds if Method.VIDEOTPO in self.methods else None,
                             grpo_steps=self.method.grpo.steps if Method.GRPO in self.methods else None)


def load_items(cfg: EvaluateConfig) -> tuple[list[TaskInstance], list[InvalidItem]]:
    """The items to run, and the entries that failed validation (recorded as failed, not skipped)."""
    if cfg.bench == "synth":
        out = Path(cfg.work) / "bench" / f"synth-seed{cfg.bench_seed}-pf{cfg.per_family}"
        if not (out / "VBVR-Bench.json").is_file():
            make_synth_benchmark(out, cfg.per_family, seed=cfg.bench_seed, purpose=Purpose.TEST)
        bench = open_benchmark(out, skip_invalid=True)
    else:
        bench = open_benchmark(cfg.bench, skip_invalid=True)
    grid = reasoner_grid(cfg.models.reasoner)
    items, invalid = [], list(bench.invalid)
    for inst in spread_over_families(bench.instances, cfg.limit):
        try:
            items.append(with_video_spec(inst, grid, cfg.video))
        except InputError as exc:  # this item cannot be generated; the others still run
            invalid.append(InvalidItem(where=inst.id, error=str(exc), instance_id=inst.id))
    return items, invalid


def _failure_ids(invalid: list[InvalidItem], items: list[TaskInstance]) -> list[tuple[InvalidItem, str]]:
    """Each unreadable entry and the id its failure rows get: its instance's id where known (so the
    rows of the entry, once fixed, replace them), else where it failed; never a readable item's id."""
    taken = {inst.id for inst in items}
    out = []
    for bad in invalid:
        ident = bad.instance_id if bad.instance_id and bad.instance_id not in taken else bad.where
        taken.add(ident)
        out.append((bad, ident))
    return out


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
    records the failed stage).
    """
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

    def add(self, stage: str, future: Stage) -> Stage:
        self.stages.append((stage, future))
        return future


def _optim_key_part(o: OptimConfig) -> dict:
    """The optimiser config as the optimise and shared stages' keys see it.

    lam and k_frames reach them through the reward key; guidance joins only when on, so keys
    made before it existed stay valid. The learning rate must be resolved (``EvaluateConfig.resolved``):
    a key made from an unset one would not say what ran.
    """
    if o.lr is None:
        raise ValueError("optim.lr is unresolved: make keys from EvaluateConfig.resolved()")
    return o.model_dump(mode="json", exclude={"lam", "k_frames"} | ({"guidance"} if o.guidance == Guidance() else set()))


def _grpo_key_part(mc: MethodConfig) -> dict:
    """What the grpo ablation's optimisation reads: the optimiser config without the teacher method's
    own budget and gradient mode (and its learning rate when grpo sets one), and the GRPO knobs."""
    unused = {"max_steps", "grad_mode"} | ({"lr"} if mc.grpo.lr is not None else set())
    return {"optim": {k: v for k, v in _optim_key_part(mc.optim).items() if k not in unused},
            "grpo": mc.grpo.model_dump(mode="json")}


def shared_key(cfg: EvaluateConfig, ids: dict[str, str], reward_keys: list[str]) -> str:
    """The shared adapter's key: the rewards it trains on (in item order), the models, the optimiser and budget."""
    return digest("shared", CODE_VERSION, OPTIMISE_VERSION, reward_keys, ids["reasoner"], ids.get("surrogate"), ids["teacher"],
                  _optim_key_part(cfg.method.optim), cfg.method.shared_steps, cfg.seed)


def stage_keys(item_hash: str, seed: int, cfg: EvaluateConfig, ids: dict[str, str],
               shared: str | None = None) -> dict[str, str]:
    """Every stage's cache key for one item: what each stage depends on, and nothing else.

    ``ids`` are the models' content identities. Keys: ``rules``, ``reward``, ``video/k``
    (candidate k from seed + k), ``video/pe``, ``select/judge``, ``select/oracle``,
    ``videotpo``, ``optimise``, ``video/teacher``, ``grpo`` (its optimisation), ``video/grpo``, ``video/still``, and
    ``score/<method>``;
    given the shared adapter's key (``shared_key``), ``video/shared`` and ``score/shared``.
    """
    o, mc = cfg.method.optim, cfg.method
    k: dict[str, str] = {}
    # the generic-queries ablation joins the key only when on, so keys made before it existed stay valid
    generic = ("generic",) if mc.queries == "generic" else ()
    k["rules"] = digest("rules", CODE_VERSION, item_hash, ids["teacher"], mc.rule_attempts, seed, *generic)
    k["reward"] = digest("reward", CODE_VERSION, k["rules"], o.k_frames, o.lam)

    # guidance joins the keys only when on, so keys made before it existed stay valid
    sampler = o.sampler_steps if o.guidance == Guidance() else [o.sampler_steps, o.guidance.model_dump(mode="json")]

    def video(j: int, adapter_key: str | None = None, rules_key: str | None = None) -> str:
        return digest("generate", CODE_VERSION, item_hash, ids["reasoner"], seed + j, sampler, adapter_key, rules_key)

    for j in range(mc.n):
        k[f"video/{j}"] = video(j)
    k["video/pe"] = video(0, rules_key=k["rules"])
    candidates = [k[f"video/{j}"] for j in range(mc.n)]
    k["select/judge"] = digest("select", CODE_VERSION, "judge", candidates, k["reward"], ids["teacher"])
    k["select/oracle"] = digest("select", CODE_VERSION, "oracle", candidates, SCORE_VERSION)
    k["videotpo"] = digest("videotpo", CODE_VERSION, k["reward"], ids["reasoner"], ids["teacher"], seed, sampler,
                           mc.tpo_rounds, mc.tpo_videos)
    k["optimise"] = digest("optimise", CODE_VERSION, OPTIMISE_VERSION, k["reward"], ids["reasoner"], ids.get("surrogate"),
                           _optim_key_part(o), seed)
    k["video/teacher"] = video(0, adapter_key=k["optimise"])
    k["grpo"] = digest("optimise-grpo", CODE_VERSION, k["reward"], ids["reasoner"], ids.get("surrogate"),
                        _grpo_key_part(mc), seed)
    k["video/grpo"] = video(0, adapter_key=k["grpo"])
    k["video/still"] = digest("still", CODE_VERSION, item_hash, seed)
    judged = USES_RULES & set(cfg.methods)
    sources = {Method.VANILLA: k["video/0"], Method.BEST_OF_N: k["select/judge"], Method.PASS_AT_N: k["select/oracle"],
               Method.PE: k["video/pe"], Method.VIDEOTPO: k["videotpo"], Method.TEACHER: k["video/teacher"],
               Method.STILL: k["video/still"], Method.GRPO: k["video/grpo"]}
    if shared is not None:
        sources[Method.SHARED] = k["video/shared"] = video(0, adapter_key=shared)
    for method, source in sources.items():
        # the final judge (the judge-fooled rate) needs the reward whenever rules are extracted at all
        k[f"score/{method.value}"] = digest("score", CODE_VERSION, SCORE_VERSION, source, k["reward"] if judged else None,
                                            ids["teacher"] if judged else None)
    return k


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
        return _submit(task, self.target(name), self.cfg.work, self.inline, self.item, *args, self.target(name),
                       self.keys[name], **kwargs)

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

    n_needed = mc.n if CANDIDATE_METHODS & methods else 1
    candidates = [generate(j) for j in range(n_needed)] if {Method.VANILLA, Method.BEST_OF_N, Method.PASS_AT_N} & methods else []
    if Method.VANILLA in methods:
        score(Method.VANILLA, chains[Method.VANILLA].add("generate", candidates[0]))
    for method, by in ((Method.BEST_OF_N, "judge"), (Method.PASS_AT_N, "oracle")):
        if method in methods:
            for fut in candidates:
                chains[method].add("generate", fut)
            sel = chains[method].add("select", submit(stages.select_video, f"select/{by}", candidates, by,
                                                      m.teacher if by == "judge" else None, reward if by == "judge" else None))
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
    base.cost = cost
    return base


def open_tracker(cfg: EvaluateConfig) -> Future[Tracker] | None:
    """Open the MLflow store in the background (None where tracking is off).

    Importing MLflow and creating its SQLite store take ~8 s on a small CPU; done beside the
    stages, that is off the critical path. ``track`` waits for it.
    """
    if cfg.mlflow_uri == "":
        return None
    work = Path(cfg.work)
    uri = cfg.mlflow_uri or default_tracking_uri(work)
    pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow-open")
    opened = pool.submit(Tracker, uri, cfg.name, work / "mlartifacts")
    pool.shutdown(wait=False)  # the one job still runs to its end
    return opened


def track(tracker: Tracker, cfg: EvaluateConfig, experiment: ExperimentRecord, results: list[ItemResult], summary: dict,
          failed: bool, judged: dict[str, dict] | None = None) -> dict:
    """Log the experiment to MLflow (after the results are safe in Parquet and DuckDB).

    ``judged`` (RULER-Bench runs with a judge): per method the judge's overall score and
    counts, logged on the parent run as ``<method>.ruler_overall_average`` etc.
    """
    parent = tracker.parent(experiment.experiment_id, cfg.model_dump(mode="json"))
    params = cfg.params().model_dump()
    for res in results:
        artifacts = {name: res.info.get(name) for name in ("video", "gif", "rules", "adapter")}
        tracker.log_result(parent, experiment.experiment_id, cfg.variant, res, params, artifacts)
    metrics = {m: {k: v for k, v in s.items() if k in ("mean_score", "success_rate", "mean_gated", "seconds_per_item",
                                                       "nfe_per_item", "judge_fooled_rate", "judge_fooled_vs_vanilla")
                   and v is not None}
               for m, s in summary.items()}
    for method, counts in (judged or {}).items():
        metrics.setdefault(method, {}).update({f"ruler_{k}": v for k, v in counts.items() if v is not None})
    tracker.finish_parent(parent, metrics, failed)
    return {"tracking_uri": tracker.tracking_uri, "parent_run_id": parent}


#: ``--runner`` values; ``inline`` is not a task runner but the flow calling its tasks directly.
RUNNERS = "inline, thread[=N], process[=N], dask[=ADDRESS] or ray[=ADDRESS]"
#: ``dask`` without an address: a local cluster whose scheduler, workers and dashboard listen on
#: 127.0.0.1 only (the dashboard on a free port, which Prefect logs). A cluster others may reach
#: is one the user starts and passes as ``dask=ADDRESS``.
LOCAL_DASK_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                      "dashboard_address": "127.0.0.1:0"}


def task_runner(spec: str = "thread"):
    """A ``--runner`` value (one of ``RUNNERS``) -> a Prefect task runner, or None for ``inline``.

    Scale-out goes through these engines: ``dask`` without an address starts a local cluster
    (2 workers, reachable from this machine only: ``LOCAL_DASK_CLUSTER``); with one it joins an
    existing cluster (one worker per GPU, see the README).
    Every worker must reach the models, the work dir and the MLflow store.
    """
    kind, _, address = spec.partition("=")
    if spec == "inline":
        return None
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=int(address) if address else None)
    if kind == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=int(address) if address else None)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs=dict(LOCAL_DASK_CLUSTER))
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise InputError("--runner ray", "needs the prefect-ray package", "pip install prefect-ray") from exc
        return RayTaskRunner(address=address) if address else RayTaskRunner()
    raise InputError("--runner", f"{spec!r} is not a task runner", RUNNERS)


def run_evaluate(cfg: EvaluateConfig, runner: str = "inline", return_state: bool = False):
    """Run the evaluate flow with the chosen runner (one of ``RUNNERS``).

    ``inline`` (the default for one machine) calls each stage task directly in the flow's
    thread, one after another: still cached, retried and tracked by Prefect, but with the
    compute in the main thread, where torch's CPU threads are fastest, and with no two stages
    competing for the same cores or the same model. The task runners run stages concurrently;
    they pay off with several workers (a Dask worker per GPU), not on a 2-core CPU
    (``scripts/bench_pipeline.py --runner`` measures each).
    """
    chosen = task_runner(runner)
    if chosen is None:
        return evaluate(config=cfg, inline=True, return_state=return_state)
    return evaluate.with_options(task_runner=chosen)(config=cfg, return_state=return_state)


def progress_file(cfg: EvaluateConfig, experiment_id: str) -> Path:
    """Where the flow counts finished (item, method) results, for progress displays."""
    return Path(cfg.work) / "progress" / f"{experiment_id}-{slug(cfg.variant)}.json"


def experiment_of(cfg: EvaluateConfig) -> ExperimentRecord:
    """The experiment a config belongs to (its id names its rows in DuckDB; where the run keeps
    its files, ``work`` and ``mlflow_uri``, is not part of it: ``results.LOCATION_FIELDS``)."""
    cfg = cfg.resolved()
    return ExperimentRecord(name=cfg.name, kind="evaluate", config=cfg.model_dump(mode="json", exclude={"judge", "judge_options"}),
                            code_version=CODE_VERSION)


def judge_exported(cfg: EvaluateConfig, items: list[TaskInstance], exported: Path, results_root: Path,
                   experiment_id: str) -> dict[str, dict]:
    """RULER-Bench: ``cfg.judge`` labels each method's exported videos; rows go to the ``judgements`` table.

    Each method's videos are judged by the cached ``ruler-judge`` flow (a rerun judges only
    new or changed videos). Returns per method the judged and failed counts and the overall score.
    The run's Reasoner and Teacher are dropped first: a large judge needs the GPU memory.
    """
    import torch

    from core.bench.ruler_judge import JudgeRun
    from flows.judge import ruler_judge
    from tasks.models import forget

    forget()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    ruler = {inst.id: inst for inst in items if inst.benchmark == "ruler"}
    out: dict[str, dict] = {}
    for method in cfg.methods:
        videos = exported / method.value
        videos.mkdir(parents=True, exist_ok=True)  # no video at all is a failed record per item, not a crash
        run = JudgeRun.model_validate(ruler_judge(
            bench=cfg.bench, videos=str(videos), judge=cfg.judge, work=str(Path(cfg.work) / "judge"),
            config_json=cfg.judge_options.model_dump_json(), skip_invalid=True, instance_ids=list(ruler)))
        for record in run.records:
            write_judgements(results_root, record, ruler[record.instance_id], experiment_id, cfg.variant, method.value,
                             cfg.judge)
        out[method.value] = {"n_judged": len(run.records) - len(run.failed), "n_failed": len(run.failed),
                             "overall_average": run.report.overall_average if run.report else None}
    return out


@flow(name="evaluate")
def evaluate(config: EvaluateConfig | None = None, config_file: str | None = None,
             experiment: ExperimentRecord | None = None, inline: bool = False) -> dict:
    """Run ``config.methods`` on the benchmark's items; write results to Parquet and DuckDB.

    Returns the per-method summary; raises at the end (after writing everything) if any
    (item, method) failed. ``experiment`` groups several configs (an ablation's variants)
    under one experiment id. ``inline`` runs the stage tasks one after another in the flow's
    own thread instead of submitting them to the task runner (see ``run_evaluate``).
    """
    cfg = (EvaluateConfig.from_yaml(config_file) if config_file else (config or EvaluateConfig())).resolved()
    # one run per work dir, taken before anything touches it (the CLI holds it already; a deployment run takes it here)
    with work_dir_lock(cfg.work, "evaluate flow"):
        return _evaluate(cfg, experiment, inline)


def _evaluate(cfg: EvaluateConfig, experiment: ExperimentRecord | None, inline: bool) -> dict:
    """The evaluate flow's body, run under the work dir's lock."""
    logger = get_run_logger()
    work = Path(cfg.work)
    items, invalid = load_items(cfg)
    unscored = sorted({inst.benchmark for inst in items if inst.benchmark != "synth"})
    if unscored and Method.PASS_AT_N in cfg.methods:
        raise InputError("methods: pass_at_n", f"selects by a rule-based scorer, which {unscored[0]} items lack here",
                         "the other methods (their videos are exported for the benchmark's official scorer)")
    # option mistakes must fail now, not after hours of generation
    check_guidance_2(cfg.models.reasoner, cfg.method.optim.guidance.scale_2)
    if cfg.judge:
        teacher_model_type(cfg.judge)
    memo = work / "model-ids.json"
    ids = {"reasoner": model_identity(cfg.models.reasoner, memo), "teacher": model_identity(cfg.models.teacher, memo)}
    if cfg.models.surrogate:
        ids["surrogate"] = model_identity(cfg.models.surrogate, memo)
    experiment = experiment or experiment_of(cfg)
    tracker = open_tracker(cfg)
    results_root = work / "results"
    exported = work / "outputs" / experiment.experiment_id  # {method}/ in the official layout (non-synth items)
    write_experiment(results_root, experiment)
    logger.info("experiment %s: %d items x %d methods", experiment.experiment_id, len(items), len(cfg.methods))

    params = cfg.params()
    no_score = {"score": None, "success": None} if unscored else {}  # unscored benchmarks: failures carry no 0 either
    results = [ItemResult(instance_id=ident, family="unknown", split=None, faculty=None, method=method.value, seed=cfg.seed,
                          error=bad.error, error_stage="load", **no_score)
               for bad, ident in _failure_ids(invalid, items) for method in cfg.methods]
    for res in results:
        write_result(results_root, res, experiment.experiment_id, cfg.variant, params)
    progress = progress_file(cfg, experiment.experiment_id)
    total = len(results) + len(items) * len(cfg.methods)
    write_json_atomic(progress, {"done": len(results), "total": total})

    def keep(res: ItemResult, row_params: VariantParams) -> None:
        write_result(results_root, res, experiment.experiment_id, cfg.variant, row_params, video_path=res.info.get("video"),
                     base=work)
        results.append(res)
        write_json_atomic(progress, {"done": len(results), "total": total})

    def run_phase(methods: list[Method], phase_cfg: EvaluateConfig, row_params: VariantParams,
                  shared: tuple[Stage, str] | None = None,
                  ready: dict[str, tuple[Stage, Stage]] | None = None,
                  probes: frozenset[Method] = frozenset()) -> list[ItemResult]:
        """Every item's ``methods``; rows are written for the requested ones (auto_n adds helpers).

        ``ready``: rules and reward stages already submitted, by item id (not submitted again);
        ``probes``: methods run only to measure their cost (auto_n's VideoTPO probe), no rows.
        """
        done: list[ItemResult] = []

        def collect(inst: TaskInstance, chains: dict[Method, _Chain]) -> None:
            for method, chain in chains.items():
                done.append(_outcome(inst, method, chain, item_seed(inst, cfg.seed)))
                if method in cfg.methods and method not in probes:
                    keep(done[-1], row_params)
                    if inst.benchmark != "synth" and done[-1].error is None:  # for the official scorer
                        write_bytes_atomic(official_output_path(exported, inst, method.value),
                                           Path(done[-1].info["video"]).read_bytes())

        # inline, an item's stages have run when _submit_item returns; submitted, they run concurrently
        pending = []
        for inst in items:
            pending.append((inst, _submit_item(inst, phase_cfg, ids, inline, only=methods, shared=shared,
                                               rules_and_reward=(ready or {}).get(inst.id))))
            if inline:
                collect(*pending.pop())
        for inst, chains in pending:
            collect(inst, chains)
        return done

    def run_shared() -> None:
        """The shared ablation: every item's reward (cached), one adapter trained on those that compiled, each item's video."""
        per_item = [(inst, _ItemStages(inst, cfg, ids, inline)) for inst in items]
        submitted = {inst.id: its.rules_and_reward() for inst, its in per_item}
        for _, reward in submitted.values():
            reward.wait()
        ok = [(inst, its, submitted[inst.id][1]) for inst, its in per_item if submitted[inst.id][1].state.is_completed()]
        if not ok:
            for inst in items:
                res = _blank(inst, Method.SHARED, item_seed(inst, cfg.seed))
                res.error, res.error_stage = "no item's reward compiled: nothing to train the shared adapter on", "shared"
                keep(res, params)
            return
        key = shared_key(cfg, ids, [its.keys["reward"] for _, its, _ in ok])
        target = str(work / "shared" / f"shared-{key[:12]}")
        m = cfg.models
        logger.info("shared ablation: one adapter on %d items (%s)", len(ok), target)
        adapter = _submit(stages.train_shared_adapter, target, cfg.work, inline, [inst.model_dump_json() for inst, _, _ in ok],
                          [reward for *_, reward in ok], m.reasoner, m.surrogate, m.teacher, cfg.method.optim.model_dump_json(),
                          [its.seed for _, its, _ in ok], cfg.method.shared_steps, cfg.seed, target, key)
        run_phase([Method.SHARED], cfg, params, shared=(adapter, key), ready=submitted)

    chosen_n = None
    ran = cfg  # the config as run: with auto_n, method.n becomes the chosen N
    main = [m for m in cfg.methods if m is not Method.SHARED]
    candidate_methods = [m for m in main if m in CANDIDATE_METHODS]
    match_tpo = cfg.auto_n and Method.VIDEOTPO in main
    if cfg.auto_n and (candidate_methods or match_tpo):
        first = list(dict.fromkeys([Method.VANILLA, Method.TEACHER, *(m for m in main if m not in CANDIDATE_METHODS)]))
        in_play = cfg.model_copy(update={"methods": first + candidate_methods})
        probes = frozenset({Method.VIDEOTPO} if match_tpo else ())
        # these methods do not depend on N; VideoTPO runs at cfg's rounds to measure a round's cost
        done = run_phase(first, in_play, params.model_copy(update={"n": None, "tpo_rounds": None}), probes=probes)

        def unmatched(methods: list[Method], why: ValueError, stage: str) -> None:
            for inst in items:
                for method in methods:
                    res = _blank(inst, method, item_seed(inst, cfg.seed))
                    res.error, res.error_stage = f"n='auto': {why}", stage
                    keep(res, params.model_copy(update={"n": None}))

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
                run_phase(candidate_methods, in_play.model_copy(update={"method": matched}), ran.params())
        if match_tpo:
            try:
                rounds = auto_tpo_rounds(done)
            except ValueError as exc:
                unmatched([Method.VIDEOTPO], exc, "auto_tpo")
            else:
                logger.info("VideoTPO matched to the teacher method's wall time per item: %d rounds", rounds)
                matched = matched.model_copy(update={"tpo_rounds": rounds})
                ran = cfg.model_copy(update={"method": matched})
                run_phase([Method.VIDEOTPO], in_play.model_copy(update={"method": matched}), ran.params())
    elif main:
        run_phase(main, cfg, params)
    if Method.SHARED in cfg.methods:
        run_shared()
    judged, judge_error = {}, None
    if cfg.judge and any(inst.benchmark == "ruler" for inst in items):
        try:
            judged = judge_exported(cfg, items, exported, results_root, experiment.experiment_id)
        except Exception as exc:  # the methods' results are kept (consolidated below) whatever the judge does
            judge_error = f"{type(exc).__name__}: {exc}"
            logger.exception("judging with %s failed", cfg.judge)
    # rows this run did not write again are stale (an entry that no longer fails to load, an item gone from the bench)
    prune_results(results_root, experiment.experiment_id, cfg.variant, {(r.instance_id, r.method) for r in results})
    counts = consolidate(results_root, work / "vlmt.duckdb")
    summary = {k: v.model_dump(mode="json") for k, v in summarise_methods(results).items()}
    failed = [r for r in results if r.error]
    out = {"experiment_id": experiment.experiment_id, "summary": summary, "rows": counts,
           "exported": str(exported) if unscored else None, "judged": judged, "judge_error": judge_error,
           "n": chosen_n if cfg.auto_n else cfg.method.n, "tpo_rounds": ran.method.tpo_rounds,
           "failed": [{"item": r.instance_id, "method": r.method, "stage": r.error_stage, "error": r.error} for r in failed]}
    if tracker is not None:
        out["mlflow"] = track(tracker.result(), ran, experiment, results, summary, bool(failed), judged)
    if failed:
        for f in out["failed"]:
            logger.error("failed: %s %s at %s: %s", f["item"], f["method"], f["stage"], f["error"])
        raise RuntimeError(f"{len(failed)} of {len(results)} (item, method) results failed; the rest are in {work / 'vlmt.duckdb'}")
    if judge_error:
        raise RuntimeError(f"judging with {cfg.judge} failed ({judge_error}); the methods' results are in {work / 'vlmt.duckdb'}")
    return out
