-- One method in two runs (experiment and variant) on the items both ran: run A minus run B per
-- item, its mean, family-clustered standard error and 95% interval (as paired_vs_baseline), and
-- the items A wins, ties and loses. The figure for an ablation's effect: two variants of one
-- ablate experiment, or two experiments over the same items (e.g. generic queries against the
-- Teacher's own). By default, every ordered pair of runs of the method.
-- param method = teacher: the method compared
-- param experiment_a = %: run A's experiment id (SQL LIKE pattern)
-- param variant_a = %: run A's variant (SQL LIKE pattern)
-- param experiment_b = %: run B's experiment id (SQL LIKE pattern)
-- param variant_b = %: run B's variant (SQL LIKE pattern)
WITH pairs AS (
    SELECT a.experiment_id AS experiment_a, a.variant AS variant_a,
           b.experiment_id AS experiment_b, b.variant AS variant_b, a.family, a.score - b.score AS diff
    FROM results AS a
    JOIN results AS b ON b.instance_id = a.instance_id AND b.method = a.method
                     AND (b.experiment_id <> a.experiment_id OR b.variant <> a.variant)
    WHERE a.method = $method
      AND a.experiment_id LIKE $experiment_a AND a.variant LIKE $variant_a
      AND b.experiment_id LIKE $experiment_b AND b.variant LIKE $variant_b
      AND a.error IS NULL AND b.error IS NULL AND a.score IS NOT NULL AND b.score IS NOT NULL
),
overall AS (
    SELECT experiment_a, variant_a, experiment_b, variant_b, count(*) AS n, avg(diff) AS mean_diff,
           stddev_samp(diff) AS sd, count(DISTINCT family) AS clusters,
           count(*) FILTER (WHERE diff > 1e-9) AS wins, count(*) FILTER (WHERE abs(diff) <= 1e-9) AS ties,
           count(*) FILTER (WHERE diff < -1e-9) AS losses
    FROM pairs GROUP BY experiment_a, variant_a, experiment_b, variant_b
),
per_family AS (
    SELECT p.experiment_a, p.variant_a, p.experiment_b, p.variant_b, sum(p.diff - o.mean_diff) AS resid_sum
    FROM pairs AS p JOIN overall AS o USING (experiment_a, variant_a, experiment_b, variant_b)
    GROUP BY p.experiment_a, p.variant_a, p.experiment_b, p.variant_b, p.family
),
errors AS (
    SELECT o.*,
           CASE WHEN o.clusters >= 2
                THEN sqrt(o.clusters / (o.clusters - 1) * (
                         SELECT sum(f.resid_sum ^ 2) FROM per_family AS f
                         WHERE f.experiment_a = o.experiment_a AND f.variant_a = o.variant_a
                           AND f.experiment_b = o.experiment_b AND f.variant_b = o.variant_b)) / o.n
                ELSE o.sd / sqrt(o.n) END                                  AS se,
           CASE WHEN o.clusters >= 2 THEN o.clusters - 1 ELSE o.n - 1 END AS df
    FROM overall AS o
)
SELECT
    e.experiment_a, e.variant_a, e.experiment_b, e.variant_b,
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
ORDER BY e.experiment_a, e.variant_a, e.experiment_b, e.variant_b;
