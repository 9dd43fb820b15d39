"""What an evaluation depends on: ``EvaluateConfig`` and the models' folders (``ModelPaths``).

Its own module so that every part of the evaluate flow (keys, item chain, phases, tracking)
can name the config without importing the flow; ``flows.evaluate`` re-exports both names.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from core.bench.ruler_judge import JudgeConfig
from core.checks import shipped
from core.config import StrictConfig, load_config
from core.method.methods import DEFAULT_METHODS, NEEDS_HELDOUT_JUDGE, Method, MethodConfig, trains_lora
from core.method.optimise import resolve_optim
from core.pipeline.video_spec import VideoOverride
from core.storage.results import VariantParams


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
                                  description="Default: every method and the still reference, not the shared and grpo "
                                              "ablations, the oracle_reward upper bound (synth items only) nor "
                                              "best_of_n_heldout (it needs heldout_judge).")
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
    heldout_judge: str | None = Field(
        None, description="A second Qwen-VL Teacher that answers every method's queries on its returned video, never "
                          "optimised against (columns heldout_*; e.g. the zoo's models/teacher-judge). Scoring only, "
                          "not part of the experiment id, except for best_of_n_heldout, which it selects for.")

    @model_validator(mode="after")
    def _selecting_judge(self) -> EvaluateConfig:
        if (needs := NEEDS_HELDOUT_JUDGE & set(self.methods)) and not self.heldout_judge:
            raise ValueError(f"methods lists {', '.join(sorted(m.value for m in needs))}, which selects with the held-out "
                             "judge: set heldout_judge to a Teacher folder (e.g. models/teacher-judge)")
        return self

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
                             grpo_steps=self.method.grpo.steps if Method.GRPO in self.methods else None,
                             decoder=o.decoder.value if trains_lora(self.methods, self.auto_n) else None)
