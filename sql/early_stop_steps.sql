-- Early-stop step distribution of the teacher method: how many LoRA updates items needed,
-- by stop reason (tau reached, max steps, non-finite loss).
-- param experiment = %: experiment id (SQL LIKE pattern)
SELECT
    variant,
    stop_reason,
    steps_run,
    count(*)                     AS n_items,
    round(avg(score), 3)         AS mean_score,
    round(avg(final_loss), 3)    AS mean_final_loss
FROM results
WHERE method = 'teacher' AND experiment_id LIKE $experiment AND error IS NULL
GROUP BY ALL
ORDER BY variant, stop_reason, steps_run;
