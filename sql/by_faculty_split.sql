-- Mean score and strict success per method, split (ID/OOD) and faculty.
-- param experiment = %: experiment id (SQL LIKE pattern)
SELECT
    method,
    coalesce(split, '-')                      AS split,
    coalesce(faculty, '-')                    AS faculty,
    count(*)                                  AS n,
    round(avg(score), 3)                      AS mean_score,
    round(avg(CAST(success AS DOUBLE)), 3)    AS success_rate
FROM results
WHERE experiment_id LIKE $experiment AND error IS NULL
GROUP BY ALL
ORDER BY method, split, faculty;
