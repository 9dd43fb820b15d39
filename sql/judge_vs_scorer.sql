-- Judge versus scorer (reward hacking): how often the Teacher says Yes to every rule while the
-- strict rule-based check fails, per method (vanilla = before optimisation, teacher = after).
-- param experiment = %: experiment id (SQL LIKE pattern)
SELECT
    method,
    count(*)                                                          AS n,
    count(*) FILTER (WHERE judge_all_yes AND success)                 AS judge_yes_scorer_pass,
    count(*) FILTER (WHERE judge_all_yes AND NOT success)             AS judge_yes_scorer_fail,
    count(*) FILTER (WHERE NOT judge_all_yes AND success)             AS judge_no_scorer_pass,
    count(*) FILTER (WHERE NOT judge_all_yes AND NOT success)         AS judge_no_scorer_fail,
    round(avg(CAST(hacked AS DOUBLE)), 3)                             AS hacking_rate,
    round(corr(judge_goal_p_yes, score), 3)                           AS corr_goal_p_yes_score
FROM results
WHERE experiment_id LIKE $experiment AND error IS NULL AND judge_goal_p_yes IS NOT NULL
GROUP BY method
ORDER BY method;
