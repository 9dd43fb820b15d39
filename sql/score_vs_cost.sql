-- Score versus cost (matched compute): each method's mean score and cost per item, and its
-- score gain over vanilla per extra second, within one experiment and variant.
-- param experiment = %: experiment id (SQL LIKE pattern)
WITH per_method AS (
    SELECT r.experiment_id, r.variant, r.method,
           avg(r.score)            AS mean_score,
           avg(c.total_seconds)    AS seconds_per_item,
           avg(c.reasoner_nfe)     AS nfe_per_item,
           avg(c.teacher_forward + c.teacher_backward + c.teacher_generate) AS teacher_calls_per_item
    FROM results r JOIN costs c USING (experiment_id, variant, instance_id, method)
    WHERE r.experiment_id LIKE $experiment AND r.error IS NULL
    GROUP BY ALL
)
SELECT m.experiment_id, m.variant, m.method,
       round(m.mean_score, 3)                      AS mean_score,
       round(m.seconds_per_item, 2)                AS seconds_per_item,
       round(m.nfe_per_item, 1)                    AS nfe_per_item,
       round(m.teacher_calls_per_item, 1)          AS teacher_calls_per_item,
       round(m.mean_score - v.mean_score, 3)       AS gain_over_vanilla,
       round((m.mean_score - v.mean_score) / nullif(m.seconds_per_item - v.seconds_per_item, 0), 4)
                                                   AS gain_per_extra_second
FROM per_method m
LEFT JOIN per_method v ON v.experiment_id = m.experiment_id AND v.variant = m.variant AND v.method = 'vanilla'
ORDER BY m.experiment_id, m.variant, m.seconds_per_item;
