-- Each synth criterion's mean per family and method: which rules a method keeps or breaks and
-- which goals it reaches (the scores behind goal_vs_process, one criterion at a time).
-- param experiment = %: experiment id (SQL LIKE pattern)
-- param family = %: task family (SQL LIKE pattern)
PIVOT (
    SELECT r.family, c.criterion, r.method,
           CAST(r.criteria_json ->> c.criterion AS DOUBLE) AS value
    FROM results AS r, unnest(json_keys(r.criteria_json)) AS c(criterion)
    WHERE r.experiment_id LIKE $experiment AND r.family LIKE $family AND r.error IS NULL
      AND r.criteria_json IS NOT NULL AND r.criteria_json <> '{}'
)
ON method IN ('still', 'vanilla', 'best_of_n', 'pass_at_n', 'pe', 'videotpo', 'teacher', 'shared', 'grpo', 'oracle_reward')
USING round(avg(value), 3)
GROUP BY family, criterion
ORDER BY family, criterion;
