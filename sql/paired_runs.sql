-- One method in two runs (experiment and variant) on the items both ran: run A minus run B per
-- item, its mean, standard error, normal-approximation 95% interval, and the items A wins, ties
-- and loses. The figure for an ablation's effect: two variants of one ablate experiment, or two
-- experiments over the same items (e.g. generic queries against the Teacher's own). By default,
-- every ordered pair of runs of the method.
-- param method = teacher: the method compared
-- param experiment_a = %: run A's experiment id (SQL LIKE pattern)
-- param variant_a = %: run A's variant (SQL LIKE pattern)
-- param experiment_b = %: run B's experiment id (SQL LIKE pattern)
-- param variant_b = %: run B's variant (SQL LIKE pattern)
WITH pairs AS (
    SELECT a.experiment_id AS experiment_a, a.variant AS variant_a,
           b.experiment_id AS experiment_b, b.variant AS variant_b, a.score - b.score AS diff
    FROM results AS a
    JOIN results AS b ON b.instance_id = a.instance_id AND b.method = a.method
                     AND (b.experiment_id <> a.experiment_id OR b.variant <> a.variant)
    WHERE a.method = $method
      AND a.experiment_id LIKE $experiment_a AND a.variant LIKE $variant_a
      AND b.experiment_id LIKE $experiment_b AND b.variant LIKE $variant_b
      AND a.error IS NULL AND b.error IS NULL AND a.score IS NOT NULL AND b.score IS NOT NULL
)
SELECT
    experiment_a, variant_a, experiment_b, variant_b,
    count(*)                                                               AS n,
    round(avg(diff), 3)                                                    AS mean_diff,
    round(stddev_samp(diff) / sqrt(count(*)), 3)                           AS std_error,
    round(avg(diff) - 1.96 * stddev_samp(diff) / sqrt(count(*)), 3)        AS ci95_low,
    round(avg(diff) + 1.96 * stddev_samp(diff) / sqrt(count(*)), 3)        AS ci95_high,
    count(*) FILTER (WHERE diff > 1e-9)                                    AS wins,
    count(*) FILTER (WHERE abs(diff) <= 1e-9)                              AS ties,
    count(*) FILTER (WHERE diff < -1e-9)                                   AS losses
FROM pairs
GROUP BY experiment_a, variant_a, experiment_b, variant_b
ORDER BY experiment_a, variant_a, experiment_b, variant_b;
