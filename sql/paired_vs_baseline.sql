-- Each method against a baseline on the same items: the mean paired score difference, its
-- family-clustered standard error and 95% interval, and the items it wins, ties and loses.
-- Pairing cancels each item's own difficulty, so this is the figure to quote for a gain. Items
-- of one family share a scorer and a difficulty, so the interval is cluster-robust over families
-- (CR1: sqrt(G/(G-1) * sum over families of the summed residuals squared) / n, with Student's t
-- at G-1 degrees of freedom; the i.i.d. error and t at n-1 with a single family), as
-- core.method.compare.paired_difference computes it. An interval that contains 0 is no evidence
-- of a gain.
-- measure = success compares strict success (1 or 0 per item): the difference is in points of
-- success rate.
-- param experiment = %: experiment id (SQL LIKE pattern)
-- param baseline = vanilla: the method every other method is compared against
-- param measure = score: score, or success (strict success)
WITH pairs AS (
    SELECT m.variant, m.method, m.family,
           CASE $measure WHEN 'success' THEN CAST(m.success AS DOUBLE) - CAST(b.success AS DOUBLE)
                         WHEN 'score' THEN m.score - b.score
                         ELSE error('measure is ' || $measure || ': expected score or success') END AS diff
    FROM results AS m
    JOIN results AS b ON b.experiment_id = m.experiment_id AND b.variant = m.variant
                     AND b.instance_id = m.instance_id AND b.method = $baseline
    WHERE m.experiment_id LIKE $experiment AND m.method <> $baseline
      AND m.error IS NULL AND b.error IS NULL AND m.score IS NOT NULL AND b.score IS NOT NULL
),
overall AS (
    SELECT variant, method, count(*) AS n, avg(diff) AS mean_diff, stddev_samp(diff) AS sd,
           count(DISTINCT family) AS clusters,
           count(*) FILTER (WHERE diff > 1e-9) AS wins, count(*) FILTER (WHERE abs(diff) <= 1e-9) AS ties,
           count(*) FILTER (WHERE diff < -1e-9) AS losses
    FROM pairs GROUP BY variant, method
),
per_family AS (
    SELECT p.variant, p.method, sum(p.diff - o.mean_diff) AS resid_sum
    FROM pairs AS p JOIN overall AS o USING (variant, method)
    GROUP BY p.variant, p.method, p.family
),
errors AS (
    SELECT o.*,
           CASE WHEN o.clusters >= 2
                THEN sqrt(o.clusters / (o.clusters - 1) * (SELECT sum(f.resid_sum ^ 2) FROM per_family AS f
                                                         WHERE f.variant = o.variant AND f.method = o.method)) / o.n
                ELSE o.sd / sqrt(o.n) END                                  AS se,
           CASE WHEN o.clusters >= 2 THEN o.clusters - 1 ELSE o.n - 1 END AS df
    FROM overall AS o
)
SELECT
    e.variant,
    e.method,
    $baseline                                                              AS baseline,
    $measure                                                               AS measure,
    e.n,
    e.clusters,
    round(e.mean_diff, 3)                                                  AS mean_diff,
    round(e.se, 3)                                                         AS std_error,
    round(e.mean_diff - coalesce(t.t975, 1.96) * e.se, 3)                  AS ci95_low,
    round(e.mean_diff + coalesce(t.t975, 1.96) * e.se, 3)                  AS ci95_high,
    e.wins,
    e.ties,
    e.losses
FROM errors AS e
LEFT JOIN student_t975 AS t ON t.df = e.df
ORDER BY e.variant, e.mean_diff DESC;
