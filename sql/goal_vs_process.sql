-- Where each method's synth score comes from: goals reached or rules kept, per method and split.
-- goal: the goal criteria's weighted mean before the gate; gate: the lowest process score, which
-- multiplies the goal credit (a goal reached by breaking a rule earns none); process: the process
-- rules' weighted mean. The synth scorers weigh goal 0.7 and process 0.3. A method that gains only
-- process credit over vanilla breaks fewer rules; one that gains gated goal credit solves more.
-- Rows without these parts (other benchmarks, results written before they were recorded) are left out.
-- param experiment = %: experiment id (SQL LIKE pattern)
-- param variant = %: variant (SQL LIKE pattern)
SELECT
    method,
    coalesce(split, '-')                               AS split,
    count(*)                                           AS n,
    round(avg(score), 3)                               AS mean_score,
    round(avg(goal_score), 3)                          AS goal,
    round(avg(gate), 3)                                AS gate,
    round(avg(goal_score * gate), 3)                   AS gated_goal,
    round(avg(process_score), 3)                       AS process,
    round(avg(CAST(gate >= 1 AS DOUBLE)), 3)           AS no_rule_broken_rate,
    round(avg(CAST(success AS DOUBLE)), 3)             AS success_rate
FROM results
WHERE experiment_id LIKE $experiment AND variant LIKE $variant AND error IS NULL AND goal_score IS NOT NULL
GROUP BY ALL
ORDER BY method, split;
