-- Method comparison: mean score, strict success, errors, cost and reward hacking per method.
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
    round(avg(CAST(r.hacked AS DOUBLE)) FILTER (WHERE r.error IS NULL), 3) AS hacking_rate
FROM results r
LEFT JOIN costs c USING (experiment_id, variant, instance_id, method)
WHERE r.experiment_id LIKE $experiment AND r.variant LIKE $variant
GROUP BY ALL
ORDER BY r.experiment_id, r.variant, mean_score DESC;
