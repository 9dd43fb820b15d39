-- Ablation pivot: mean score of each method (columns) per combination of the method's knobs
-- (rows), over the variants of an ablation experiment.
-- param experiment = %: experiment id (SQL LIKE pattern)
PIVOT (
    SELECT lam, grad_mode, k_frames, max_steps, early_stop, lr, lora_rank, queries, grpo_steps, decoder, method, score
    FROM results
    WHERE experiment_id LIKE $experiment AND error IS NULL
)
ON method IN ('still', 'vanilla', 'best_of_n', 'pass_at_n', 'pe', 'videotpo', 'teacher', 'shared', 'grpo', 'oracle_reward')
USING round(avg(score), 3)
GROUP BY lam, grad_mode, k_frames, max_steps, early_stop, lr, lora_rank, queries, grpo_steps, decoder
ORDER BY ALL;
