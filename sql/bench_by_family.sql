-- Mean rule-based score and strict success per family and split, from the per-item
-- details that `vlmt bench score --details FILE.json` writes.
-- param details: path of that JSON file
SELECT
    split,
    family,
    count(*)                                  AS n,
    round(avg(score), 3)                      AS mean_score,
    round(avg(CAST(success AS DOUBLE)), 3)    AS success_rate,
    count(*) FILTER (WHERE error IS NOT NULL) AS n_errors
FROM read_json_auto($details)
GROUP BY split, family
ORDER BY split, family;
