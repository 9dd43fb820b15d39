-- Method comparison: mean score (VBVR-style weighted sum), strict success, errors, cost, and the
-- judge-fooled rate per method: of the (video, query) pairs whose criterion the scorer finds
-- broken, the share the Teacher's judge still answered Yes (P(Yes) > 0.5), i.e. reward hacking;
-- heldout_fooled_rate: the same by the held-out judge, a Teacher no method optimised or selected against.
-- mean_gated is the earlier gated score (goal credit x the lowest rule score), kept for comparison.
-- teacher_calls_per_item: Teacher forward, backward and generate calls; mean_steps and
-- early_stop_share (the loss reached tau before the step budget): the per-item optimisers only.
-- param experiment = %: experiment id (SQL LIKE pattern; % for every experiment)
-- param variant = %: variant name (SQL LIKE pattern)
SELECT
    r.experiment_id,
    r.variant,
    r.method,
    count(*)                                               AS n,
    round(avg(r.score), 3)                                 AS mean_score,
    round(avg(CAST(r.success AS DOUBLE)), 3)               AS success_rate,
    count(*) FILTER (WHERE r.error IS NOT NULL)            AS n_errors,
    round(avg(c.total_seconds), 2)                         AS seconds_per_item,
    round(avg(c.reasoner_nfe), 1)                          AS nfe_per_item,
    round(avg(c.teacher_forward + c.teacher_backward + c.teacher_generate), 1) AS teacher_calls_per_item,
    round(avg(r.steps_run), 1)                             AS mean_steps,
    round(avg(CAST(r.stop_reason = 'tau' AS DOUBLE)), 3)   AS early_stop_share,
    CAST(sum(r.judge_broken) FILTER (WHERE r.error IS NULL) AS BIGINT) AS judge_broken,
    round(CAST(sum(r.judge_fooled) FILTER (WHERE r.error IS NULL) AS DOUBLE)
          / nullif(sum(r.judge_broken) FILTER (WHERE r.error IS NULL), 0), 3) AS judge_fooled_rate,
    round(CAST(sum(r.heldout_fooled) FILTER (WHERE r.error IS NULL) AS DOUBLE)
          / nullif(sum(r.heldout_broken) FILTER (WHERE r.error IS NULL), 0), 3) AS heldout_fooled_rate,
    round(avg(r.gated_score), 3)                           AS mean_gated
FROM results r
LEFT JOIN costs c USING (experiment_id, variant, instance_id, method)
WHERE r.experiment_id LIKE $experiment AND r.variant LIKE $variant
GROUP BY ALL
ORDER BY r.experiment_id, r.variant, mean_score DESC;
