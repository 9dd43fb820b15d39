-- Each method against a baseline on the same items: the mean paired score difference, its
-- standard error, a normal-approximation 95% interval, and the items it wins, ties and loses.
-- Pairing cancels each item's own difficulty, so this is the figure to quote for a gain (the
-- difference of two methods' means over different or unpaired items is noisier); an interval
-- that contains 0 is no evidence of a gain.
-- param experiment = %: experiment id (SQL LIKE pattern)
-- param baseline = vanilla: the method every other method is compared against
WITH pairs AS (
    SELECT m.variant, m.method, m.score - b.score AS diff
    FROM results AS m
    JOIN results AS b ON b.experiment_id = m.experiment_id AND b.variant = m.variant
                     AND b.instance_id = m.instance_id AND b.method = $baseline
    WHERE m.experiment_id LIKE $experiment AND m.method <> $baseline
      AND m.error IS NULL AND b.error IS NULL AND m.score IS NOT NULL AND b.score IS NOT NULL
)
SELECT
    variant,
    method,
    $baseline                                                              AS baseline,
    count(*)                                                               AS n,
    round(avg(diff), 3)                                                    AS mean_diff,
    round(stddev_samp(diff) / sqrt(count(*)), 3)                           AS std_error,
    round(avg(diff) - 1.96 * stddev_samp(diff) / sqrt(count(*)), 3)        AS ci95_low,
    round(avg(diff) + 1.96 * stddev_samp(diff) / sqrt(count(*)), 3)        AS ci95_high,
    count(*) FILTER (WHERE diff > 1e-9)                                    AS wins,
    count(*) FILTER (WHERE abs(diff) <= 1e-9)                              AS ties,
    count(*) FILTER (WHERE diff < -1e-9)                                   AS losses
FROM pairs
GROUP BY variant, method
ORDER BY variant, mean_diff DESC;
