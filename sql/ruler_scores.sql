-- RULER-Bench scores per method and judge (0-100), the official aggregation over judged instances
-- (core.bench.ruler_scores.aggregate): per instance and dimension of its category (all four; "vision rule" has no
-- Instruction Following) the mean label score (Good 2, Medium 1, Poor 0), and 0 for a dimension its checklist
-- lacks, counted like any other (the official cal_acc.py); per category the mean of those x50; per dimension the
-- mean over the categories that have it; overall = mean of the dimensions.
-- Instances the judge gave no valid reply for are counted in n_failed and left out of the scores.
-- param experiment = %: experiment id (SQL LIKE pattern; % for every experiment)
-- param variant = %: variant name (SQL LIKE pattern)
WITH judged AS (
    -- category spelled as core.bench.ruler.normalise_category spells it ('Vision_Rule' -> 'vision rule')
    SELECT experiment_id, variant, method, judge, instance_id, dimension, label_score,
           lower(regexp_replace(regexp_replace(category, '^\s+|\s+$', '', 'g'), '[\s_-]+', ' ', 'g')) AS category
    FROM judgements
    WHERE label IS NOT NULL AND experiment_id LIKE $experiment AND variant LIKE $variant
),
dimensions(dimension) AS (
    VALUES ('Instruction Following'), ('Visual Consistency'), ('Visual Fidelity'), ('Rule Coherence')
),
instance_dims AS (  -- every judged instance x the dimensions of its category
    SELECT DISTINCT j.experiment_id, j.variant, j.method, j.judge, j.instance_id, j.category, d.dimension
    FROM judged j CROSS JOIN dimensions d
    WHERE NOT (j.category = 'vision rule' AND d.dimension = 'Instruction Following')
),
per_instance_dim AS (
    SELECT i.experiment_id, i.variant, i.method, i.judge, i.instance_id, i.category, i.dimension,
           coalesce(avg(j.label_score), 0) AS s
    FROM instance_dims i
    LEFT JOIN judged j USING (experiment_id, variant, method, judge, instance_id, dimension)
    GROUP BY ALL
),
per_category_dim AS (
    SELECT experiment_id, variant, method, judge, category, dimension, avg(s) * 50 AS score
    FROM per_instance_dim
    GROUP BY ALL
),
per_dim AS (
    SELECT experiment_id, variant, method, judge, dimension, avg(score) AS score
    FROM per_category_dim
    GROUP BY ALL
),
counts AS (
    SELECT experiment_id, variant, method, judge,
           count(DISTINCT instance_id) FILTER (WHERE label IS NOT NULL) AS n_judged,
           count(DISTINCT instance_id) FILTER (WHERE label IS NULL)     AS n_failed
    FROM judgements
    WHERE experiment_id LIKE $experiment AND variant LIKE $variant
    GROUP BY ALL
)
SELECT
    c.experiment_id,
    c.variant,
    c.method,
    c.judge,
    c.n_judged,
    c.n_failed,
    round(max(d.score) FILTER (WHERE d.dimension = 'Instruction Following'), 2) AS instruction_following,
    round(max(d.score) FILTER (WHERE d.dimension = 'Visual Consistency'), 2)    AS visual_consistency,
    round(max(d.score) FILTER (WHERE d.dimension = 'Visual Fidelity'), 2)       AS visual_fidelity,
    round(max(d.score) FILTER (WHERE d.dimension = 'Rule Coherence'), 2)        AS rule_coherence,
    round(avg(d.score), 2)                                                      AS overall_average
FROM counts c
LEFT JOIN per_dim d USING (experiment_id, variant, method, judge)
GROUP BY ALL
ORDER BY c.experiment_id, c.variant, overall_average DESC NULLS LAST;
