-- Judge versus scorer, per method (vanilla = before optimisation, teacher = after): the judge-fooled
-- rate (of the judged queries whose criterion the scorer finds broken, the share the judge answered
-- Yes: reward hacking query by query) and its change from the baseline method, then the
-- every-rule view (the judge says Yes to every query; the strict check passes or fails).
-- param experiment = %: experiment id (SQL LIKE pattern)
-- param baseline = vanilla: the method the judge-fooled rate's change is measured from
WITH per_method AS (
    SELECT
        experiment_id,
        variant,
        method,
        count(*)                                                          AS n,
        CAST(sum(judge_broken) AS BIGINT)                                 AS judge_broken,
        CAST(sum(judge_fooled) AS BIGINT)                                 AS judge_fooled,
        CAST(sum(judge_fooled) AS DOUBLE) / nullif(sum(judge_broken), 0)                AS fooled_rate,
        count(*) FILTER (WHERE judge_all_yes AND success)                 AS judge_yes_scorer_pass,
        count(*) FILTER (WHERE judge_all_yes AND NOT success)             AS judge_yes_scorer_fail,
        count(*) FILTER (WHERE NOT judge_all_yes AND success)             AS judge_no_scorer_pass,
        count(*) FILTER (WHERE NOT judge_all_yes AND NOT success)         AS judge_no_scorer_fail,
        corr(judge_goal_p_yes, score)                                     AS corr_goal_p_yes_score
    FROM results
    WHERE experiment_id LIKE $experiment AND error IS NULL AND judge_goal_p_yes IS NOT NULL
    GROUP BY ALL
)
SELECT
    m.experiment_id,
    m.variant,
    m.method,
    m.n,
    m.judge_broken,
    m.judge_fooled,
    round(m.fooled_rate, 3)                                               AS judge_fooled_rate,
    round(m.fooled_rate - b.fooled_rate, 3)                               AS change_from_baseline,
    m.judge_yes_scorer_pass,
    m.judge_yes_scorer_fail,
    m.judge_no_scorer_pass,
    m.judge_no_scorer_fail,
    round(m.corr_goal_p_yes_score, 3)                                     AS corr_goal_p_yes_score
FROM per_method AS m
LEFT JOIN per_method AS b ON b.experiment_id = m.experiment_id AND b.variant = m.variant AND b.method = $baseline
ORDER BY m.experiment_id, m.variant, m.method;
