-- Ablation summary: each variant's methods side by side, with what the knob costs as well as
-- what it buys: mean score, strict success, both judge-fooled rates, seconds per item, the
-- optimisers' mean steps and early-stop share, and seconds per optimisation step (from the
-- traces: decoding through the VAE or the surrogate shows here). One row per (variant, method).
-- param experiment = %: experiment id (SQL LIKE pattern)
WITH steps AS (
    SELECT experiment_id, variant, method, avg(seconds) AS seconds_per_step
    FROM traces WHERE experiment_id LIKE $experiment
    GROUP BY ALL
)
SELECT
    r.variant,
    r.method,
    count(*)                                                AS n,
    count(*) FILTER (WHERE r.error IS NOT NULL)             AS n_errors,
    round(avg(r.score), 3)                                  AS mean_score,
    round(avg(CAST(r.success AS DOUBLE)), 3)                AS success_rate,
    round(CAST(sum(r.judge_fooled) FILTER (WHERE r.error IS NULL) AS DOUBLE)
          / nullif(sum(r.judge_broken) FILTER (WHERE r.error IS NULL), 0), 3) AS judge_fooled_rate,
    round(CAST(sum(r.heldout_fooled) FILTER (WHERE r.error IS NULL) AS DOUBLE)
          / nullif(sum(r.heldout_broken) FILTER (WHERE r.error IS NULL), 0), 3) AS heldout_fooled_rate,
    round(avg(c.total_seconds), 2)                          AS seconds_per_item,
    round(avg(r.steps_run), 1)                              AS mean_steps,
    round(avg(CAST(r.stop_reason = 'tau' AS DOUBLE)), 3)    AS early_stop_share,
    round(any_value(s.seconds_per_step), 3)                 AS seconds_per_step
FROM results r
LEFT JOIN costs c USING (experiment_id, variant, instance_id, method)
LEFT JOIN steps s USING (experiment_id, variant, method)
WHERE r.experiment_id LIKE $experiment
GROUP BY r.experiment_id, r.variant, r.method
ORDER BY r.experiment_id, r.variant, mean_score DESC;
