"""The evaluate flow's cache keys: the stage versions, ``stage_keys`` and ``shared_key``.

Each key is built from exactly what its stage reads, so changing the LoRA learning rate reruns
optimise -> generate -> score but not the rules, and changing the Teacher reruns everything the
Teacher touches. The keys name the stage folders of every finished work dir: a change here that
is not a deliberate version bump makes old work dirs recompute. Kept apart from the flow so the
rules are in one place, and so the versions live beside the one function that reads them (a
test that bumps a version patches it here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.method.methods import USES_RULES, Method, MethodConfig
from core.method.optimise import OptimConfig
from core.method.reasoner import Guidance
from tasks.caching import digest

if TYPE_CHECKING:
    from flows.config import EvaluateConfig

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
#: The oracle_reward method's optimisation (``core.method.oracle``), bumped when it or its reward, the synth
#: scorer's relaxation (``core.scoring.soft``), changes what it produces: only that method's stages rerun.
ORACLE_REWARD_VERSION = "oracle-reward-1"
#: The held-out judge's stage (``core.pipeline.heldout``); heldout-2: its record holds the judge's answers
#: only (the scorer's are the score stage's), so no scorer version enters its key.
HELDOUT_VERSION = "heldout-2"


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
    ``videotpo``, ``optimise``, ``video/teacher``, ``grpo`` (its optimisation), ``video/grpo``, ``oracle_reward``
    (its optimisation), ``video/oracle_reward``, ``video/still``, and ``score/<method>``;
    given the shared adapter's key (``shared_key``), ``video/shared`` and ``score/shared``; given a
    held-out judge (``ids["heldout_judge"]``), ``select/heldout`` (best_of_n_heldout's pick) and
    ``heldout/<method>``.
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

    def judged_pick(judge: str) -> str:  # best-of-N's pick among the candidates by this judge's reward loss
        return digest("select", CODE_VERSION, "judge", candidates, k["reward"], judge)

    k["select/judge"] = judged_pick(ids["teacher"])
    k["select/oracle"] = digest("select", CODE_VERSION, "oracle", candidates, SCORE_VERSION)
    k["videotpo"] = digest("videotpo", CODE_VERSION, k["reward"], ids["reasoner"], ids["teacher"], seed, sampler,
                           mc.tpo_rounds, mc.tpo_videos)
    k["optimise"] = digest("optimise", CODE_VERSION, OPTIMISE_VERSION, k["reward"], ids["reasoner"], ids.get("surrogate"),
                           _optim_key_part(o), seed)
    k["video/teacher"] = video(0, adapter_key=k["optimise"])
    k["grpo"] = digest("optimise-grpo", CODE_VERSION, k["reward"], ids["reasoner"], ids.get("surrogate"),
                        _grpo_key_part(mc), seed)
    k["video/grpo"] = video(0, adapter_key=k["grpo"])
    # its reward is the item's own ground truth (in its content hash), not the Teacher's: neither the reward key
    # nor the Teacher's lam and k_frames (left out of the optimiser's part already) decide it
    k["oracle_reward"] = digest("optimise-oracle-reward", CODE_VERSION, ORACLE_REWARD_VERSION, item_hash, ids["reasoner"],
                                ids.get("surrogate"), _optim_key_part(o), seed)
    k["video/oracle_reward"] = video(0, adapter_key=k["oracle_reward"])
    k["video/still"] = digest("still", CODE_VERSION, item_hash, seed)
    judged = USES_RULES & set(cfg.methods)
    sources = {Method.VANILLA: k["video/0"], Method.BEST_OF_N: k["select/judge"], Method.PASS_AT_N: k["select/oracle"],
               Method.PE: k["video/pe"], Method.VIDEOTPO: k["videotpo"], Method.TEACHER: k["video/teacher"],
               Method.STILL: k["video/still"], Method.GRPO: k["video/grpo"],
               Method.ORACLE_REWARD: k["video/oracle_reward"]}
    if "heldout_judge" in ids:  # best_of_n_heldout: the same candidates and queries, the held-out judge picks
        sources[Method.BEST_OF_N_HELDOUT] = k["select/heldout"] = judged_pick(ids["heldout_judge"])
    if shared is not None:
        sources[Method.SHARED] = k["video/shared"] = video(0, adapter_key=shared)
    for method, source in sources.items():
        # the final judge (the judge-fooled rate) needs the reward whenever rules are extracted at all
        k[f"score/{method.value}"] = digest("score", CODE_VERSION, SCORE_VERSION, source, k["reward"] if judged else None,
                                            ids["teacher"] if judged else None)
        if "heldout_judge" in ids:  # the same queries, answered by a Teacher nothing was optimised or selected against
            k[f"heldout/{method.value}"] = digest("heldout", CODE_VERSION, HELDOUT_VERSION, source, k["reward"],
                                                  ids["heldout_judge"])
    return k
