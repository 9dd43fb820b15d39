"""Per-item Parquet results, their consolidation into DuckDB, and the named queries in sql/.

The fixture database is built from ItemResult records shaped like the method's real output
(a teacher result carries its optimisation trace), written through the same functions a run
uses. Expected figures are recomputed here from the records, not typed in.
"""

from __future__ import annotations

import csv
import re

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from core.errors import InputError
from core.method.compare import ItemResult
from core.method.cost import CostRecord
from core.storage.named import load_queries, parse_query
from core.storage.results import (
    ExperimentRecord,
    VariantParams,
    write_experiment,
    write_judgements,
    write_result,
)
from core.storage.warehouse import consolidate, parquet_files, query

FAMILIES = [("maze_navigate", "ID", "Spatiality"), ("gravity_fall", "ID", "Physics"), ("flood_fill", "OOD", "Abstraction")]


def make_results(lam: float, rng: np.random.Generator) -> list[ItemResult]:
    out = []
    for k, (family, split, faculty) in enumerate(FAMILIES):
        for method in ("vanilla", "teacher"):
            score = float(rng.uniform(0, 1))
            success = score > 0.7
            p_yes = [float(x) for x in rng.uniform(0, 1, 3)]
            info = {}
            counts = {"reasoner_forward": 4}
            if method == "teacher":
                steps = int(rng.integers(1, 6))
                trace = [{"step": s, "loss": 1.0 / (s + 1), "p_yes": p_yes, "grad_norm": 0.5, "seconds": 0.1}
                         for s in range(steps + 1)]
                info = {"optim": {"steps_run": steps, "stop_reason": "tau" if steps < 4 else "max_steps",
                                  "initial_loss": 1.0, "final_loss": trace[-1]["loss"], "trace": trace}}
                counts = {"reasoner_forward": 4 + steps, "reasoner_backward": steps, "teacher_forward": steps,
                          "teacher_backward": steps}
            # a goal criterion and two process rules, reduced as the synth scorer reduces them
            goal, *rules = (float(x) for x in rng.choice([0.0, 0.5, 1.0], 3))
            criteria = {f"{family}_goal": goal, "rule_a": rules[0], "rule_b": rules[1]}
            # the scorer's answer to each judged query; the last one is not a bank phrasing on one item
            truth = [goal >= 0.5, rules[0] >= 0.5, None if k == 2 else rules[1] >= 0.5]
            out.append(ItemResult(
                instance_id=f"synth/{family}/{k:05d}", family=family, split=split, faculty=faculty, method=method,
                seed=k, score=score, success=success, judge_p_yes=p_yes, judge_all_yes=min(p_yes) > 0.2,
                criteria=criteria, goal=goal, process=float(np.mean(rules)), gate=min(rules), judge_truth=truth,
                cost=CostRecord(seconds={"generate": 1.0 + 9 * (method == "teacher")}, counts=counts), info=info))
    # one failed item, recorded with its stage
    out.append(ItemResult(instance_id="synth/flood_fill/00009", family="flood_fill", split="OOD", faculty="Abstraction",
                          method="teacher", seed=9, error="FloatingPointError: loss is nan", error_stage="optimise"))
    return out


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    experiment = ExperimentRecord(name="ablate lam", kind="ablate", config={"lam": [0.0, 0.5]}, code_version="t")
    write_experiment(root, experiment)
    written = {}
    for lam in (0.0, 0.5):
        results = make_results(lam, rng)
        written[lam] = results
        for r in results:
            write_result(root, r, experiment.experiment_id, variant=f"lam={lam}", params=VariantParams(lam=lam, max_steps=40))
    for method, instance, record in ruler_judgements():
        write_judgements(root, record, instance, experiment.experiment_id, "lam=0.0", method, "/models/judge")
    db = root / "vlmt.duckdb"
    counts = consolidate(root, db)
    return root, db, experiment.experiment_id, written, counts


RULER_RECORDS = [  # (task, category, checklist dimensions)
    ("physics", "science", ["Instruction Following", "Rule Coherence", "Rule Coherence"]),
    ("chemistry", "science", ["Visual Fidelity", "Rule Coherence"]),
    ("color", "vision rule", ["Visual Consistency", "Rule Coherence"]),
    ("sport", "humanity", ["Instruction Following", "Visual Fidelity", "Visual Consistency", "Rule Coherence"]),
]


def ruler_judgements() -> list:
    """(method, instance, judge record) for RULER instances: random labels, and one reply that is never valid."""
    from core.bench.record import TaskInstance
    from core.bench.ruler_replies import judgement_from_reply
    from core.bench.ruler_scores import InvalidJudgeReply
    from core.bench.ruler_judge import JudgeAttempt, JudgeRecord

    rng = np.random.default_rng(1)
    out = []
    for method in ("vanilla", "teacher"):
        for k, (task, category, dims) in enumerate(RULER_RECORDS):
            instance = TaskInstance(id=f"{task}/{k}", benchmark="ruler", task_family=task, task_id=task, index=str(k),
                                    category=category, prompt="p",
                                    checklist=[{"dimension": d, "question": f"q{i}?"} for i, d in enumerate(dims)])
            reply = "\n".join(str(x) for x in rng.choice(["Good", "Medium", "Poor"], len(dims)))
            if k == 1 and method == "teacher":
                reply = "Excellent"  # invalid: this instance is failed, not counted
            record = JudgeRecord(instance_id=instance.id, task_name=task, category=category, video="v.mp4",
                                 attempts=[JudgeAttempt(reply=reply)])
            try:
                record.judgement = judgement_from_reply(instance, reply)
            except InvalidJudgeReply as exc:
                record.error = str(exc)
            out.append((method, instance, record))
    return out


def test_consolidation_counts_every_row_once(warehouse):
    _, _, _, written, counts = warehouse
    results = [r for rs in written.values() for r in rs]
    assert counts["results"] == len(results) == counts["costs"]
    assert counts["items"] == len({r.instance_id for r in results})
    assert counts["traces"] == sum(len(r.info["optim"]["trace"]) for r in results if r.info.get("optim"))
    assert counts["experiments"] == 1


def test_rewriting_and_reconsolidating_never_duplicates(warehouse, tmp_path):
    root, _, exp_id, written, counts = warehouse
    again = tmp_path / "again.duckdb"
    for r in written[0.0]:  # a resumed run rewrites what it had finished
        write_result(root, r, exp_id, variant="lam=0.0", params=VariantParams(lam=0.0, max_steps=40))
    (root / "results" / exp_id / ".killed-writer.tmp.parquet").write_bytes(b"half a file")
    assert all(not p.name.startswith(".") for p in parquet_files(root, "results"))
    assert consolidate(root, again) == counts
    assert consolidate(root, again) == counts


def test_method_comparison_matches_the_records(warehouse):
    _, db, exp_id, written, _ = warehouse
    q = load_queries()["method_comparison"]
    df = query(db, q.sql, q.bind({"experiment": exp_id, "variant": "lam=0.5"}))
    by_method = {row["method"]: row for row in df.iter_rows(named=True)}
    for method in ("vanilla", "teacher"):
        rs = [r for r in written[0.5] if r.method == method]
        assert by_method[method]["n"] == len(rs)
        assert by_method[method]["mean_score"] == pytest.approx(np.mean([r.score for r in rs]), abs=1e-3)
        assert by_method[method]["n_errors"] == sum(r.error is not None for r in rs)
        ok = [r for r in rs if r.error is None]
        broken = sum(r.judge_broken for r in ok)
        assert broken > 0  # the records hold broken criteria, so the rate can fire
        assert by_method[method]["judge_broken"] == broken
        assert by_method[method]["judge_fooled_rate"] == pytest.approx(sum(r.judge_fooled for r in ok) / broken, abs=1e-3)


def test_ruler_scores_query_is_the_official_aggregation(warehouse):
    from core.bench.ruler_scores import aggregate

    _, db, _, _, _ = warehouse
    judged: dict[str, list] = {}
    for method, _, record in ruler_judgements():
        if record.judgement:
            judged.setdefault(method, []).append(record.judgement)
    q = load_queries()["ruler_scores"]
    df = query(db, q.sql, q.bind({}))
    assert sorted(df["method"].to_list()) == ["teacher", "vanilla"]
    for row in df.iter_rows(named=True):
        report = aggregate(judged[row["method"]])
        assert row["judge"] == "/models/judge" and row["n_judged"] == len(judged[row["method"]])
        assert row["n_failed"] == (1 if row["method"] == "teacher" else 0)
        assert row["overall_average"] == pytest.approx(report.overall_average, abs=0.01)
        for dim, col in (("Instruction Following", "instruction_following"), ("Rule Coherence", "rule_coherence"),
                         ("Visual Fidelity", "visual_fidelity"), ("Visual Consistency", "visual_consistency")):
            assert row[col] == pytest.approx(report.overall_per_dimension[dim], abs=0.01)
    rows = duckdb.connect(str(db), read_only=True).execute(
        "SELECT label, label_score, error FROM judgements WHERE method = 'teacher' AND instance_id = 'chemistry/1'").fetchall()
    assert len(rows) == 2 and all(r[0] is None and r[1] is None and "Excellent" in r[2] for r in rows)


def test_ruler_scores_query_scores_a_missing_dimension_0_like_the_official_script(tmp_path):
    """A dimension of its category that an instance's checklist lacks is 0 and counted (eval/cal_acc.py).

    Good = 2, Medium = 1, Poor = 0; figures worked by hand:
    science  physics/0   IF Good, RC Poor                -> IF 2, VC 0, VF 0, RC 0
    science  chemistry/1 IF Medium, VC Good, VF Good, RC Good -> 1, 2, 2, 2
    vision rule color/2 (spelled 'Vision_Rule') VC Medium -> VC 1, VF 0, RC 0 (no IF in vision rule)
    humanity sport/3     no valid reply: failed, not counted
    science x50: IF 75, VC 50, VF 50, RC 50; vision rule x50: VC 50, VF 0, RC 0
    overall: IF 75, VC 50, VF 25, RC 25; average 43.75 (leaving missing ones out would give 75)
    """
    from core.bench.record import TaskInstance
    from core.bench.ruler_replies import judgement_from_reply
    from core.bench.ruler_scores import aggregate
    from core.bench.ruler_judge import JudgeAttempt, JudgeRecord

    root = tmp_path / "results"
    experiment = ExperimentRecord(name="ruler missing", config={"bench": "ruler.jsonl"}, code_version="t")
    write_experiment(root, experiment)
    cases = [("physics", "science", ["Instruction Following", "Rule Coherence"], "Good\nPoor"),
             ("chemistry", "science", ["Instruction Following", "Visual Consistency", "Visual Fidelity", "Rule Coherence"],
              "Medium\nGood\nGood\nGood"),
             ("color", "Vision_Rule", ["Visual Consistency"], "Medium"),
             ("sport", "humanity", ["Rule Coherence"], "Excellent")]
    judged = []
    for k, (task, category, dims, reply) in enumerate(cases):
        instance = TaskInstance(id=f"{task}/{k}", benchmark="ruler", task_family=task, task_id=task, index=str(k),
                                category=category, prompt="p",
                                checklist=[{"dimension": d, "question": f"q{i}?"} for i, d in enumerate(dims)])
        record = JudgeRecord(instance_id=instance.id, task_name=task, category=category, video="v.mp4",
                             attempts=[JudgeAttempt(reply=reply)])
        if task == "sport":
            record.error = "no valid judge reply in 1 attempt(s)"
        else:
            record.judgement = judgement_from_reply(instance, reply)
            judged.append(record.judgement)
        write_judgements(root, record, instance, experiment.experiment_id, "default", "vanilla", "/models/judge")
    db = tmp_path / "vlmt.duckdb"
    consolidate(root, db)
    q = load_queries()["ruler_scores"]
    (row,) = query(db, q.sql, q.bind({})).iter_rows(named=True)
    expected = {"instruction_following": 75.0, "visual_consistency": 50.0, "visual_fidelity": 25.0, "rule_coherence": 25.0,
                "overall_average": 43.75}
    assert {k: row[k] for k in expected} == expected
    assert row["n_judged"] == 3 and row["n_failed"] == 1
    report = aggregate(judged)
    assert report.overall_per_dimension == {"Instruction Following": 75.0, "Visual Consistency": 50.0,
                                            "Visual Fidelity": 25.0, "Rule Coherence": 25.0}
    assert report.overall_average == 43.75


def test_judge_versus_scorer_counts(warehouse):
    _, db, _, written, _ = warehouse
    q = load_queries()["judge_vs_scorer"]
    df = query(db, q.sql, q.bind({}))
    assert sorted(df["variant"].unique()) == ["lam=0.0", "lam=0.5"]
    for lam, records in written.items():
        rows = {r["method"]: r for r in df.iter_rows(named=True) if r["variant"] == f"lam={lam}"}
        row = rows["vanilla"]
        rs = [r for r in records if r.method == "vanilla"]
        assert row["judge_yes_scorer_fail"] == sum(r.judge_all_yes and not r.success for r in rs)
        assert row["judge_yes_scorer_pass"] == sum(r.judge_all_yes and r.success for r in rs)
        # query by query: of the criteria the scorer finds broken, those the judge called Yes
        broken = [(p, t) for r in rs for p, t in zip(r.judge_p_yes, r.judge_truth, strict=True) if t is False]
        assert row["judge_broken"] == len(broken) and row["judge_fooled"] == sum(p > 0.5 for p, _ in broken)
        assert row["judge_fooled_rate"] == pytest.approx(row["judge_fooled"] / row["judge_broken"], abs=1e-3)
        teacher = rows["teacher"]
        assert teacher["change_from_baseline"] == pytest.approx(
            teacher["judge_fooled_rate"] - row["judge_fooled_rate"], abs=2e-3)
        assert row["change_from_baseline"] == 0


def test_early_stop_and_ablation_pivot(warehouse):
    _, db, _, written, _ = warehouse
    queries = load_queries()
    steps = query(db, queries["early_stop_steps"].sql, queries["early_stop_steps"].bind({}))
    teacher = [r for rs in written.values() for r in rs if r.method == "teacher" and r.error is None]
    assert steps["n_items"].sum() == len(teacher)
    assert query(db, queries["early_stop_steps"].sql, queries["early_stop_steps"].bind({"method": "teacher"})).equals(steps)
    vanilla = query(db, queries["early_stop_steps"].sql, queries["early_stop_steps"].bind({"method": "vanilla"}))
    assert vanilla["n_items"].sum() == sum(r.method == "vanilla" and r.error is None for rs in written.values() for r in rs)
    assert vanilla["steps_run"].null_count() == len(vanilla)  # the method parameter is applied: no optimiser, no steps
    pivot = query(db, queries["ablation_pivot"].sql, queries["ablation_pivot"].bind({}))
    assert sorted(pivot["lam"].to_list()) == [0.0, 0.5]
    row = pivot.filter(pivot["lam"] == 0.0).row(0, named=True)
    assert row["teacher"] == pytest.approx(np.mean([r.score for r in written[0.0] if r.method == "teacher" and r.error is None]),
                                           abs=1e-3)


def test_rows_written_before_a_knob_existed_still_consolidate_with_every_knob_column(warehouse, tmp_path):
    """A work dir whose Parquet rows predate a knob (queries, grpo_steps) gets the column, NULL, so the
    queries that group by every knob run instead of failing on a missing column."""
    import shutil

    import polars as pl

    root, _, _, written, _ = warehouse
    old = tmp_path / "old"
    shutil.copytree(root, old)
    for f in parquet_files(old, "results"):
        pl.read_parquet(f).drop("queries", "grpo_steps").write_parquet(f)
    assert "grpo_steps" not in pl.read_parquet(parquet_files(old, "results")[0]).columns
    db = tmp_path / "old.duckdb"
    consolidate(old, db)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), count(queries), count(grpo_steps) FROM results").fetchone() == (
            sum(len(rs) for rs in written.values()), 0, 0)
    pivot = named(db, "ablation_pivot")
    assert sorted(pivot["lam"].to_list()) == [0.0, 0.5] and pivot["grpo_steps"].null_count() == 2
    consolidate(old, db)  # idempotent: the columns are added only where missing


def named(db, name: str, **params: str):
    """The rows of named query ``name`` on ``db``."""
    q = load_queries()[name]
    return query(db, q.sql, q.bind(params))


def finished(written: dict) -> list:
    """Every written record that did not fail."""
    return [r for rs in written.values() for r in rs if r.error is None]


def test_goal_vs_process_matches_the_records(warehouse):
    _, db, _, written, _ = warehouse
    rows = {(r["method"], r["split"]): r for r in named(db, "goal_vs_process").iter_rows(named=True)}
    records = finished(written)
    assert set(rows) == {(r.method, r.split) for r in records}
    for (method, split), row in rows.items():
        rs = [r for r in records if (r.method, r.split) == (method, split)]
        assert row["n"] == len(rs)
        assert row["goal"] == pytest.approx(np.mean([r.goal for r in rs]), abs=1e-3)
        assert row["gate"] == pytest.approx(np.mean([r.gate for r in rs]), abs=1e-3)
        assert row["gated_goal"] == pytest.approx(np.mean([r.goal * r.gate for r in rs]), abs=1e-3)
        assert row["process"] == pytest.approx(np.mean([r.process for r in rs]), abs=1e-3)
        assert row["no_rule_broken_rate"] == pytest.approx(np.mean([r.gate >= 1 for r in rs]), abs=1e-3)


def test_criteria_by_method_pivots_every_criterion(warehouse):
    _, db, _, written, _ = warehouse
    df = named(db, "criteria_by_method", family="maze%")
    assert set(df["family"]) == {"maze_navigate"}
    assert sorted(df["criterion"]) == ["maze_navigate_goal", "rule_a", "rule_b"]
    records = [r for r in finished(written) if r.family == "maze_navigate"]
    for row in df.iter_rows(named=True):
        for method in ("vanilla", "teacher"):
            values = [r.criteria[row["criterion"]] for r in records if r.method == method]
            assert row[method] == pytest.approx(np.mean(values), abs=1e-3)
        assert row["still"] is None  # no still results in this experiment


def test_paired_vs_baseline_matches_the_records(warehouse):
    """The SQL's family-clustered interval is the Python summary's (core.method.compare.paired_difference)."""
    from core.method.compare import paired_difference

    _, db, _, written, _ = warehouse
    df = named(db, "paired_vs_baseline")
    assert sorted(df["variant"]) == ["lam=0.0", "lam=0.5"] and set(df["method"]) == {"teacher"}
    for row in df.iter_rows(named=True):
        rs = written[float(row["variant"].split("=")[1])]
        base = {r.instance_id: r.score for r in rs if r.method == "vanilla" and r.error is None}
        diffs = np.array([r.score - base[r.instance_id] for r in rs
                          if r.method == "teacher" and r.error is None and r.instance_id in base])
        ref = paired_difference([r for r in rs if r.method == "teacher"], [r for r in rs if r.method == "vanilla"])
        assert row["baseline"] == "vanilla" and row["n"] == len(diffs) == ref.n and row["clusters"] == ref.clusters == 3
        assert row["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-3)
        assert row["std_error"] == pytest.approx(ref.std_error, abs=1e-3)
        assert (row["ci95_low"], row["ci95_high"]) == (pytest.approx(ref.ci95_low, abs=2e-3), pytest.approx(ref.ci95_high, abs=2e-3))
        assert (row["wins"], row["ties"], row["losses"]) == ((diffs > 0).sum(), (diffs == 0).sum(), (diffs < 0).sum())
    # the other way round: vanilla against the teacher method, the same pairs with the opposite sign
    flipped = named(db, "paired_vs_baseline", baseline="teacher")
    for a, b in zip(df.sort("variant").iter_rows(named=True), flipped.sort("variant").iter_rows(named=True), strict=True):
        assert b["method"] == "vanilla" and b["mean_diff"] == pytest.approx(-a["mean_diff"], abs=1e-3)
        assert (b["wins"], b["losses"]) == (a["losses"], a["wins"])
    # strict success, item by item: the difference in success rate, on the same pairs
    success = named(db, "paired_vs_baseline", measure="success")
    for row in success.iter_rows(named=True):
        rs = written[float(row["variant"].split("=")[1])]
        base = {r.instance_id: r.success for r in rs if r.method == "vanilla" and r.error is None}
        diffs = np.array([float(r.success) - float(base[r.instance_id]) for r in rs
                          if r.method == "teacher" and r.error is None and r.instance_id in base])
        assert row["measure"] == "success" and row["n"] == len(diffs)
        assert row["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-3)
    assert len(success) == len(df)
    with pytest.raises(Exception, match="measure is scroe: expected score or success"):
        named(db, "paired_vs_baseline", measure="scroe")


def test_paired_runs_matches_the_records(warehouse):
    """One method across two runs (here the two variants) on their common items, each ordered pair once."""
    _, db, _, written, _ = warehouse
    rows = {(r["variant_a"], r["variant_b"]): r for r in named(db, "paired_runs").iter_rows(named=True)}
    assert set(rows) == {("lam=0.0", "lam=0.5"), ("lam=0.5", "lam=0.0")}  # never a run against itself
    scores = {lam: {r.instance_id: r.score for r in rs if r.method == "teacher" and r.error is None}
              for lam, rs in written.items()}
    common = sorted(set(scores[0.0]) & set(scores[0.5]))
    diffs = np.array([scores[0.0][i] - scores[0.5][i] for i in common])
    row = rows[("lam=0.0", "lam=0.5")]
    assert row["n"] == len(common) and row["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-3)
    # one item per family: the clustered error equals the i.i.d. one, and t has G - 1 = 2 degrees of freedom
    se = diffs.std(ddof=1) / np.sqrt(len(diffs))
    assert row["clusters"] == 3 and row["std_error"] == pytest.approx(se, abs=1e-3)
    assert row["ci95_high"] == pytest.approx(diffs.mean() + 4.303 * se, abs=2e-3)
    assert (row["wins"], row["ties"], row["losses"]) == ((diffs > 0).sum(), (diffs == 0).sum(), (diffs < 0).sum())
    back = rows[("lam=0.5", "lam=0.0")]
    assert back["mean_diff"] == pytest.approx(-row["mean_diff"], abs=1e-3) and back["wins"] == row["losses"]
    only = named(db, "paired_runs", method="vanilla", variant_a="lam=0.5", variant_b="lam=0.0")
    vanilla = [{r.instance_id for r in written[lam] if r.method == "vanilla" and r.error is None} for lam in (0.5, 0.0)]
    assert only.height == 1 and only["n"][0] == len(vanilla[0] & vanilla[1])


def test_judge_per_query_matches_the_records(warehouse):
    _, db, _, written, _ = warehouse
    rows = {(r["method"], r["kind"]): r for r in named(db, "judge_per_query").iter_rows(named=True)}
    records = finished(written)
    assert set(rows) == {(m, k) for m in ("vanilla", "teacher") for k in ("goal", "process")}
    for (method, kind), row in rows.items():
        pairs = [(p, t) for r in records if r.method == method
                 for i, (p, t) in enumerate(zip(r.judge_p_yes, r.judge_truth, strict=True))
                 if t is not None and (i == 0) == (kind == "goal")]
        broken = [p for p, t in pairs if not t]
        assert row["n"] == len(pairs) and row["n_broken"] == len(broken)
        if broken:
            assert row["p_yes_when_broken"] == pytest.approx(np.mean(broken), abs=1e-3)
            assert row["false_yes_rate"] == pytest.approx(np.mean([p > 0.5 for p in broken]), abs=1e-3)
        assert row["accuracy"] == pytest.approx(np.mean([(p > 0.5) == t for p, t in pairs]), abs=1e-3)


@pytest.mark.parametrize("name", [n for n in load_queries() if n != "bench_by_family"])
def test_every_named_query_runs_on_the_fixture(warehouse, name):
    _, db, _, _, _ = warehouse
    q = load_queries()[name]
    assert q.description, f"{name}.sql needs a description line"
    df = query(db, q.sql, q.bind({}))
    assert df.height > 0


def test_named_query_parameters_are_checked(tmp_path):
    path = tmp_path / "q.sql"
    path.write_text("-- Something useful.\n-- param who: required thing\n-- param k = 3: optional\nSELECT $who AS w, $k AS k;\n")
    q = parse_query(path)
    assert [(p.name, p.default) for p in q.params] == [("who", None), ("k", "3")]
    assert q.bind({"who": "x"}) == {"who": "x", "k": "3"}
    with pytest.raises(InputError, match="required"):
        q.bind({})
    with pytest.raises(InputError, match="not a parameter"):
        q.bind({"who": "x", "nope": "1"})


def test_query_on_a_missing_database_names_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.duckdb"):
        query(tmp_path / "missing.duckdb", "SELECT 1")


def test_vlmt_sql_prints_and_writes(warehouse, tmp_path):
    _, db, exp_id, written, _ = warehouse
    runner = CliRunner()
    out = tmp_path / "cmp.csv"
    r = runner.invoke(app, ["sql", "method_comparison", "--db", str(db), "--param", f"experiment={exp_id}", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert sorted((row["variant"], row["method"]) for row in rows) == [
        (v, m) for v in ("lam=0.0", "lam=0.5") for m in ("teacher", "vanilla")]
    r = runner.invoke(app, ["sql", "--db", str(db), "--query", "SELECT method, count(*) AS n FROM results GROUP BY 1 ORDER BY 1"])
    assert r.exit_code == 0, r.output
    expected = {m: sum(r.method == m for rs in written.values() for r in rs) for m in ("teacher", "vanilla")}
    for method, n in expected.items():
        assert re.search(rf"{method}\s*│\s*{n}\b", r.output), r.output
    r = runner.invoke(app, ["sql", "method_comparison", "--db", str(db), "--param", "bogus=1"])
    assert r.exit_code == 2 and "bogus" in r.output
    r = runner.invoke(app, ["sql", "--list"])
    assert r.exit_code == 0 and "ablation_pivot" in r.output
    # the database is still a valid DuckDB file that other tools can open
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM results").fetchone()[0] > 0


def test_a_run_killed_while_mlflow_creates_its_store_leaves_no_broken_store(tmp_path):
    """SIGKILL in the middle of MLflow's schema migrations: no half-made mlflow.db is left behind."""
    import signal
    import subprocess
    import sys
    import time

    from core.storage.tracking import Tracker, default_tracking_uri

    uri = default_tracking_uri(tmp_path)
    code = ("import sys, core.storage.tracking as t, mlflow.store.tracking.sqlalchemy_store as s; "
            "print('creating', flush=True); t.create_sqlite_store(sys.argv[1])")
    proc = subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "creating"
    deadline = time.time() + 30
    while not list(tmp_path.glob(".mlflow.db.*.partial")) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # inside the migrations (they take seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".mlflow.db.*.partial")), "the kill came after the store was complete"
    assert not (tmp_path / "mlflow.db").exists()
    tracker = Tracker(uri, "after-kill", tmp_path / "art")  # the next run creates a complete store
    assert tracker.client.get_experiment(tracker.mlflow_experiment_id).name == "after-kill"


def test_a_rerun_leaves_one_point_per_parent_metric_in_a_real_mlflow_store(tmp_path):
    """finish_parent on every rerun of the same experiment: each summary metric keeps one point;
    a value that changed is logged once more (the newest point is the current value)."""
    from core.storage.tracking import Tracker, default_tracking_uri

    tracker = Tracker(default_tracking_uri(tmp_path), "reruns", tmp_path / "art")
    summary = {"vanilla": {"mean_score": 0.5, "success_rate": 0.25}, "teacher": {"mean_score": 0.75, "n": 4}}
    for _ in range(3):  # the first run and two reruns
        parent = tracker.parent("exp-1", {"name": "reruns"})
        tracker.finish_parent(parent, summary, failed=False)
    client = tracker.client
    keys = ["vanilla.mean_score", "vanilla.success_rate", "teacher.mean_score", "teacher.n"]
    assert set(client.get_run(parent).data.metrics) == set(keys)
    assert {k: len(client.get_metric_history(parent, k)) for k in keys} == dict.fromkeys(keys, 1)
    changed = {**summary, "vanilla": {**summary["vanilla"], "mean_score": 0.625}}
    tracker.finish_parent(tracker.parent("exp-1", {"name": "reruns"}), changed, failed=False)
    assert len(client.get_metric_history(parent, "vanilla.mean_score")) == 2
    assert client.get_run(parent).data.metrics["vanilla.mean_score"] == 0.625
    assert len(client.get_metric_history(parent, "teacher.mean_score")) == 1
    assert client.get_run(parent).info.status == "FINISHED"
