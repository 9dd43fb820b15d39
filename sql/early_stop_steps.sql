-- Early-stop step distribution of a per-item optimiser: how many LoRA updates items needed,
-- by stop reason (tau reached, max steps, non-finite loss).
-- param experiment = %: experiment id (SQL LIKE pattern)
-- param method = teacher: the optimised method (teacher, or the grpo ablation: updates of groups of rollouts)
SELECT
    variant,
    stop_reason,
    steps_run,
    count(*)                     AS n_items,
    round(avg(score), 3)         AS mean_score,
    round(avg(final_loss), 3)    AS mean_final_loss
FROM results
WHERE method = $method AND experiment_id LIKE $experiment AND error IS NULL
GROUP BY ALL
ORDER BY variant, stop_reason, steps_run;
