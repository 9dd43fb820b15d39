"""The experiment files shipped in configs/ parse, and describe the runs docs/claims.md reports."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLAIMS = sorted((REPO / "configs" / "claims").glob("*.yaml"))


def test_there_is_a_file_per_table():
    assert {p.stem for p in CLAIMS} == {"main", "queries", "lambda", "steps", "grad-mode", "decoder", "shared"}


@pytest.mark.parametrize("path", CLAIMS, ids=lambda p: p.stem)
def test_each_claims_file_is_a_valid_evaluation_or_ablation_on_enough_items(path):
    from cli.evaluate import is_ablation_file
    from flows.ablate import AblateConfig
    from flows.evaluate import EvaluateConfig

    if is_ablation_file(path):
        cfg = AblateConfig.from_yaml(path)
        runs = [v for _, v in cfg.variants()]
        assert len(runs) >= 2
    else:
        runs = [EvaluateConfig.from_yaml(path)]
    for run in runs:
        assert run.bench == "synth" and run.work == "runs/claims" and run.heldout_judge == "models/teacher-judge"
        assert run.per_family * 7 >= (140 if path.stem == "main" else 42)
        assert "vanilla" in run.methods
    if path.stem == "main":  # item 3 of the claims: best-of-N selected by the held-out judge as well
        assert {"best_of_n", "best_of_n_heldout", "pass_at_n", "teacher"} <= set(runs[0].methods) and runs[0].auto_n


def test_the_steps_ablation_runs_with_early_stop_off_at_the_issue_budgets():
    from flows.ablate import AblateConfig

    runs = [v for _, v in AblateConfig.from_yaml(REPO / "configs" / "claims" / "steps.yaml").variants()]
    assert sorted(r.method.optim.max_steps for r in runs) == [0, 5, 10, 16, 20, 40]
    assert not any(r.method.optim.early_stop for r in runs)
